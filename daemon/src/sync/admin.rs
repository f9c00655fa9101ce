//! Administration over the Peer API: a hub's prune (and dataset removal),
//! asked for by a client with an admin token.

use super::client::{connect, from_peer};
use super::PeerAddr;
use crate::error::{Error, Result};
use crate::prune::{self, retention::Policy, Options};
use crate::store::Store;
use hoard_proto::v1 as pb;

/// The prune a request asks for (git roots added by the caller).
pub fn prune_options(r: &pb::PruneRequest) -> Options {
    Options {
        policy: Policy {
            keep_last: r.has_keep_last.then_some(r.keep_last),
            keep_within_secs: r.has_keep_within.then_some(r.keep_within),
            keep_daily: (r.keep_daily > 0).then_some(r.keep_daily),
            keep_weekly: (r.keep_weekly > 0).then_some(r.keep_weekly),
            keep_monthly: (r.keep_monthly > 0).then_some(r.keep_monthly),
            keep_tagged: true,
        },
        grace_secs: if r.has_grace {
            r.grace
        } else {
            prune::DEFAULT_GRACE
        },
        git_live: Vec::new(),
        git_known: Vec::new(),
        max_unused: if r.max_unused_permille == 0 {
            0.05
        } else {
            r.max_unused_permille as f64 / 1000.0
        },
        max_repack: if r.max_repack == 0 {
            u64::MAX
        } else {
            r.max_repack
        },
        dry_run: r.dry_run,
        remove_datasets: r.remove_datasets.clone(),
    }
}

/// Asks the hub at `addr` to prune its store; returns its report (JSON).
pub fn prune_remote(store: &Store, addr: &PeerAddr, req: pb::PruneRequest) -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start a runtime: {e}")))?;
    let url = addr.url.as_str();
    rt.block_on(async {
        let mut peer = connect(addr, store).await?;
        let r = peer
            .prune(req)
            .await
            .map_err(|e| from_peer(url, "pruning", e))?;
        Ok(r.into_inner().report_json)
    })
}
