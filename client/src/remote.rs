//! Remotes (other daemons' Peer APIs) and moving content to and from them.
//!
//! Remotes live in `remotes.toml` (its format: `hoard_proto::remotes`).
//!
//! The transfer itself is done by the daemon (`Sync`): it talks to the peer,
//! checks everything it receives and stores it.

use crate::connect::Client;
use crate::ui;
use anyhow::{bail, Context};
use hoard_proto::v1::{sync_event::Event, SizedOid, SyncRequest, SyncSummary};

pub use hoard_proto::remotes::{Remote, Remotes};

/// Checks a remote URL: `https://HOST:PORT`, or `http://HOST:PORT` for a
/// hub serving plaintext (on loopback).
pub fn check_url(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .with_context(|| {
            format!("remote URL {url:?} must look like https://HOST:PORT (the hub's `listen` address; http:// for a plaintext hub on loopback)")
        })?;
    if rest.is_empty() || !rest.contains(':') {
        bail!("remote URL {url:?} needs a port, e.g. http://127.0.0.1:7420");
    }
    Ok(())
}

/// How the daemon reaches `remote`.
pub fn target(remote: &Remote) -> anyhow::Result<hoard_proto::v1::PeerTarget> {
    Ok(hoard_proto::v1::PeerTarget {
        url: remote.url.clone(),
        token: remote.token.clone(),
        fingerprint: remote.fingerprint.clone(),
        ca_pem: if remote.ca.is_empty() {
            Vec::new()
        } else {
            std::fs::read(&remote.ca)
                .with_context(|| format!("cannot read the CA certificate {}", remote.ca))?
        },
    })
}

/// Has the daemon pull `files` from (or push them to) `remote`: each an
/// object id and, when known (from a pointer), the size it must have.
pub async fn sync(
    client: &mut Client,
    remote: &Remote,
    push: bool,
    files: Vec<(Vec<u8>, Option<u64>)>,
    quiet: bool,
) -> anyhow::Result<SyncSummary> {
    let t = target(remote)?;
    let mut oids = Vec::new();
    let mut sized = Vec::new();
    for (oid, size) in files {
        match size {
            Some(size) => sized.push(SizedOid { oid, size }),
            None => oids.push(oid),
        }
    }
    let s = client
        .sync(SyncRequest {
            url: t.url,
            token: t.token,
            push,
            oids,
            fingerprint: t.fingerprint,
            ca_pem: t.ca_pem,
            sized,
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    follow(s, if push { "pushing" } else { "fetching" }, quiet).await
}

/// Shows a transfer's progress; returns its summary.
pub async fn follow(
    mut s: tonic::Streaming<hoard_proto::v1::SyncEvent>,
    label: &'static str,
    quiet: bool,
) -> anyhow::Result<SyncSummary> {
    // The daemon sends no total: bytes moved so far.
    let bar = ui::bytes_spinner(label, quiet);
    let mut summary = None;
    while let Some(ev) = s.message().await.map_err(ui::status_error)? {
        match ev.event {
            Some(Event::Progress(p)) => bar.set_position(p.bytes_done),
            Some(Event::Summary(sum)) => summary = Some(sum),
            None => {}
        }
    }
    bar.finish_and_clear();
    summary.context("the daemon ended the transfer without a summary")
}
