//! `hoard prune`, `hoard pin`, `hoard repair`: shrinking and mending a store.

use crate::connect::Client;
use crate::git::{roots, Repo};
use crate::remote::{self, Remotes};
use crate::ui;
use anyhow::{bail, Context};
use hoard_proto::paths::Paths;
use hoard_proto::v1::{PinRequest, PruneInput, PruneRequest, RepairRequest};
use serde_json::Value;

pub use crate::cli::PruneArgs as Args;

/// Seconds in a duration like `30d`, `12h`, `1y6m`, `90min`, `0s`.
pub fn duration(s: &str) -> anyhow::Result<u64> {
    hoard_proto::parse_duration(s).map_err(anyhow::Error::msg)
}

pub fn request(a: &Args) -> anyhow::Result<PruneRequest> {
    let within = a.keep_within.as_deref().map(duration).transpose()?;
    let grace = a.grace.as_deref().map(duration).transpose()?;
    if let Some(m) = a.max_unused {
        if !(0.0..=100.0).contains(&m) {
            bail!("--max-unused is a percentage of stored bytes, 0 to 100 (got {m})");
        }
    }
    Ok(PruneRequest {
        keep_last: a.keep_last.unwrap_or(0),
        has_keep_last: a.keep_last.is_some(),
        keep_within: within.unwrap_or(0),
        has_keep_within: within.is_some(),
        keep_daily: a.keep_daily.unwrap_or(0),
        keep_weekly: a.keep_weekly.unwrap_or(0),
        keep_monthly: a.keep_monthly.unwrap_or(0),
        grace: grace.unwrap_or(0),
        has_grace: grace.is_some(),
        dry_run: a.dry_run,
        // 0 % must stay distinguishable from "the default".
        max_unused_permille: a
            .max_unused
            .map_or(0, |m| ((m * 10.0).round() as u32).max(1)),
        max_repack: a.max_repack_size.unwrap_or(0),
        remove_datasets: Vec::new(),
    })
}

pub async fn prune(mut client: Client, paths: &Paths, a: Args) -> anyhow::Result<()> {
    let req = request(&a)?;
    let mut first = PruneInput {
        request: Some(req),
        ..PruneInput::default()
    };
    let mut rest = Vec::new();
    if let Some(name) = &a.remote {
        first.remote = Some(remote_target(paths, name)?);
    } else {
        let within = a.keep_git_within.as_deref().map(duration).transpose()?;
        let (live, known) = git_roots(paths, within)?;
        for piece in live.chunks(4096) {
            rest.push(PruneInput {
                git_live: piece.to_vec(),
                ..PruneInput::default()
            });
        }
        for piece in known.chunks(4096) {
            rest.push(PruneInput {
                git_known: piece.to_vec(),
                ..PruneInput::default()
            });
        }
    }
    let msgs = std::iter::once(first).chain(rest);
    let reply = client
        .prune(tokio_stream::iter(msgs))
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let rep: Value = serde_json::from_str(&reply.report_json)
        .context("the daemon sent a malformed prune report")?;
    if a.json {
        println!("{rep}");
    } else {
        print_report(&rep, a.remote.as_deref());
    }
    Ok(())
}

fn remote_target(paths: &Paths, name: &str) -> anyhow::Result<hoard_proto::v1::PeerTarget> {
    let remotes = Remotes::load(paths).map_err(anyhow::Error::msg)?;
    let Some((_, r)) = remotes.pick(Some(name)) else {
        bail!("no remote named {name:?}; `hoard remote list` shows them");
    };
    remote::target(&r)
}

/// The git roots of every recorded repository still on disk: (live, known).
#[allow(clippy::type_complexity)]
fn git_roots(paths: &Paths, within: Option<u64>) -> anyhow::Result<(Vec<Vec<u8>>, Vec<Vec<u8>>)> {
    let (mut live, mut known) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    let has_remote = Remotes::load(paths)
        .map_err(anyhow::Error::msg)?
        .pick(None)
        .is_some();
    for dir in roots::recorded(&paths.store) {
        let Ok(repo) = Repo::discover_at(&dir) else {
            eprintln!("hoard: {} is no longer a git repository; its content is kept (as any content no git history names)", dir.display());
            continue;
        };
        let r = roots::of(&repo, within, has_remote)
            .with_context(|| format!("cannot read the history of {}", dir.display()))?;
        live.extend(r.live);
        known.extend(r.known);
    }
    Ok((
        live.into_iter().map(|o| o.to_vec()).collect(),
        known.into_iter().map(|o| o.to_vec()).collect(),
    ))
}

fn print_report(rep: &Value, remote: Option<&str>) {
    let u = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let s = &rep["sweep"];
    let dry = rep["dry_run"].as_bool().unwrap_or(false);
    let on = remote.map(|r| format!(" on {r}")).unwrap_or_default();
    for d in rep["datasets"].as_array().into_iter().flatten() {
        let kept = d["kept"].as_array().map_or(0, |v| v.len());
        let removed = d["removed"].as_array().map_or(0, |v| v.len());
        println!(
            "dataset {}: keeps {kept} snapshots, {} {removed}",
            d["name"].as_str().unwrap_or("?"),
            if dry { "would remove" } else { "removes" }
        );
    }
    let before = u(s, "stored_before");
    let after = u(s, "stored_after");
    println!(
        "{}{on}: {} packs deleted, {} rewritten ({} read, {} written); {} chunks, {} files, {} trees/snapshots {}",
        if dry { "prune --dry-run" } else { "pruned" },
        u(s, "packs_deleted"),
        u(s, "packs_rewritten"),
        ui::bytes(u(s, "bytes_repacked")),
        ui::bytes(u(s, "bytes_written")),
        u(s, "chunks_removed"),
        u(s, "files_removed"),
        u(s, "objects_removed"),
        if dry { "would go" } else { "removed" },
    );
    println!(
        "stored {} → {}: {} {}",
        ui::bytes(before),
        ui::bytes(after),
        ui::bytes(before.saturating_sub(after)),
        if dry {
            "would be reclaimed"
        } else {
            "reclaimed"
        }
    );
}

/// `hoard dataset remove NAME --remote R`: the hub deletes the dataset's
/// refs and tags, then prunes what only they kept.
pub async fn remove_dataset(
    mut client: Client,
    paths: &Paths,
    name: String,
    remote: String,
    grace: Option<String>,
) -> anyhow::Result<()> {
    let grace = grace.as_deref().map(duration).transpose()?;
    let req = PruneRequest {
        remove_datasets: vec![name.clone()],
        grace: grace.unwrap_or(0),
        has_grace: grace.is_some(),
        ..PruneRequest::default()
    };
    let msg = PruneInput {
        request: Some(req),
        remote: Some(remote_target(paths, &remote)?),
        ..PruneInput::default()
    };
    let reply = client
        .prune(tokio_stream::iter([msg]))
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let rep: Value = serde_json::from_str(&reply.report_json)
        .context("the hub sent a malformed prune report")?;
    println!("removed dataset {name} on {remote}");
    print_report(&rep, Some(&remote));
    Ok(())
}

pub async fn pin(mut client: Client, target: Option<String>, remove: bool) -> anyhow::Result<()> {
    let list = target.is_none();
    let r = client
        .pin(PinRequest {
            target: target.unwrap_or_default(),
            remove,
            list,
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    if list {
        for p in r.pins {
            println!("{p}");
        }
    }
    Ok(())
}

pub async fn repair(
    mut client: Client,
    paths: &Paths,
    remote: Option<String>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let remotes = Remotes::load(paths).map_err(anyhow::Error::msg)?;
    let target = match remotes.pick(remote.as_deref()) {
        Some((_, r)) => Some(remote::target(&r)?),
        None if remote.is_some() => bail!(
            "no remote named {:?}; `hoard remote list` shows them",
            remote.unwrap_or_default()
        ),
        None => None,
    };
    let reply = client
        .repair(RepairRequest {
            remote: target,
            dry_run,
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let rep: Value = serde_json::from_str(&reply.report_json)
        .context("the daemon sent a malformed repair report")?;
    if json {
        println!("{rep}");
        return Ok(());
    }
    let u = |k: &str| rep[k].as_u64().unwrap_or(0);
    let packs = rep["damaged_packs"].as_array().map_or(0, |v| v.len());
    if packs == 0 {
        println!("nothing is damaged ({} problems found)", u("problems"));
        return Ok(());
    }
    println!(
        "{packs} damaged packs, {} damaged chunks (in frames of {} stored)",
        u("damaged_chunks"),
        ui::bytes(u("damaged_frame_bytes"))
    );
    if !dry_run {
        println!(
            "fetched {} chunks ({} moved); {} packs rewritten",
            u("fetched_chunks"),
            ui::bytes(u("bytes_moved")),
            rep["sweep"]["packs_rewritten"].as_u64().unwrap_or(0)
        );
    }
    let unrepaired = rep["unrepaired"].as_array().cloned().unwrap_or_default();
    for x in &unrepaired {
        println!(
            "not repaired: chunk {} (no remote has it), needed by {}",
            x["chunk"].as_str().unwrap_or("?"),
            x["files"]
                .as_array()
                .map(|f| f
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        );
    }
    if !unrepaired.is_empty() {
        bail!("{} chunks could not be repaired: add a remote that has them and re-run `hoard repair REMOTE`", unrepaired.len());
    }
    Ok(())
}
