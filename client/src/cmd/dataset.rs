//! Dataset verbs: `dataset add|remove|list|push`, `snapshot`, `log`,
//! `diff`, `tag`, `lineage`, `checkout --to`, `status NAME`, `clone`.
//! Every verb that prints results takes `--json`.

use super::oid_string;
use crate::connect::Client;
use crate::remote::{self, Remotes};
use crate::ui;
use anyhow::{bail, Context};
use hoard_proto::paths::Paths;
use hoard_proto::v1 as pb;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn abs(p: &Path) -> anyhow::Result<String> {
    let a = std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))?;
    Ok(a.to_string_lossy().into_owned())
}

fn short(id: &[u8]) -> String {
    hex::encode(&id[..id.len().min(6)])
}

fn time(ns: i64) -> String {
    // UTC, to the second; no time-zone database needed.
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn snapshot_json(s: &pb::SnapshotInfo) -> Value {
    json!({
        "id": hex::encode(&s.id),
        "dataset": s.dataset,
        "tree": hex::encode(&s.tree),
        "size": s.size,
        "files": s.files,
        "time_ns": s.time_ns,
        "time": time(s.time_ns),
        "message": s.message,
        "parents": s.parents.iter().map(hex::encode).collect::<Vec<_>>(),
        "derived_from": s.derived.iter().map(hex::encode).collect::<Vec<_>>(),
        "meta": s.meta,
        "tags": s.tags,
    })
}

fn info_json(d: &pb::DatasetInfo) -> Value {
    json!({
        "name": d.name,
        "path": d.path,
        "watch": d.watch,
        "watch_error": (!d.watch_error.is_empty()).then_some(&d.watch_error),
        "remote": (!d.remote.is_empty()).then_some(&d.remote),
        "exclude": d.exclude,
        "head": d.head.as_ref().map(snapshot_json),
        "pending": d.pending,
        "changed": d.changed,
        "unreadable": d.unreadable,
        "scans": d.scans,
        "sync": (!d.remote.is_empty()).then(|| json!({
            "state": d.sync_state,
            "pushed": (!d.pushed.is_empty()).then(|| hex::encode(&d.pushed)),
            "error": (!d.sync_error.is_empty()).then_some(&d.sync_error),
            "retry_in_secs": d.retry_in_secs,
            "kind": (!d.sync_kind.is_empty()).then_some(&d.sync_kind),
            "attempts": d.sync_attempts,
        })),
    })
}

pub struct AddArgs {
    pub name: String,
    pub dir: PathBuf,
    pub watch: bool,
    pub remote: Option<String>,
    pub exclude: Vec<String>,
    pub json: bool,
}

pub async fn add(mut c: Client, a: AddArgs) -> anyhow::Result<()> {
    let d = c
        .dataset_add(pb::DatasetAddRequest {
            name: a.name,
            path: abs(&a.dir)?,
            watch: a.watch,
            remote: a.remote.unwrap_or_default(),
            exclude: a.exclude,
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    if a.json {
        println!("{}", info_json(&d));
    } else {
        println!(
            "dataset {} at {}{}",
            d.name,
            d.path,
            if d.watch { " (watched)" } else { "" }
        );
        if !d.watch_error.is_empty() {
            eprintln!("hoard: {}", d.watch_error);
        }
    }
    Ok(())
}

pub async fn remove(mut c: Client, name: String) -> anyhow::Result<()> {
    let d = c
        .dataset_remove(pb::DatasetRemoveRequest { name })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    println!(
        "forgot dataset {} ({}); its snapshots stay in the store",
        d.name, d.path
    );
    Ok(())
}

pub async fn list(mut c: Client, json: bool) -> anyhow::Result<()> {
    let l = c
        .dataset_list(pb::DatasetListRequest {})
        .await
        .map_err(ui::status_error)?
        .into_inner();
    if json {
        let v: Vec<Value> = l.datasets.iter().map(info_json).collect();
        println!("{}", Value::Array(v));
        return Ok(());
    }
    if l.datasets.is_empty() {
        println!("no datasets; `hoard dataset add NAME DIR --watch` registers one");
    }
    for d in &l.datasets {
        let head = d
            .head
            .as_ref()
            .map(|h| format!("{} {}", short(&h.id), time(h.time_ns)))
            .unwrap_or_else(|| "no snapshot".into());
        let state = match d.changed {
            Some(true) => "changed since",
            Some(false) => "unchanged since",
            None => "last",
        };
        let mut line = format!(
            "{}\t{}\t{}\t{state} {head}",
            d.name,
            d.path,
            if d.watch { "watched" } else { "not watched" }
        );
        if d.pending > 0 {
            line += &format!(", {} pending", d.pending);
        }
        if d.unreadable > 0 {
            line += &format!(", {} unreadable", d.unreadable);
        }
        if !d.remote.is_empty() {
            line += &format!(", sync to {}: {}", d.remote, d.sync_state);
            if d.sync_kind == "conflict" {
                // Not retried: the message names the commands that resolve it.
                line += &format!(": conflict ({}; not retried until resolved)", d.sync_error);
            } else if !d.sync_error.is_empty() {
                line += &format!(" ({}; retry in {} s)", d.sync_error, d.retry_in_secs);
            }
        }
        println!("{line}");
        if !d.watch_error.is_empty() {
            eprintln!("hoard: {}", d.watch_error);
        }
    }
    Ok(())
}

pub struct SnapshotArgs {
    pub dataset: String,
    pub message: String,
    pub from: Vec<String>,
    pub meta: Vec<String>,
    pub rescan: bool,
    pub allow_empty: bool,
    pub json: bool,
}

pub async fn snapshot(mut c: Client, a: SnapshotArgs) -> anyhow::Result<()> {
    let mut meta = std::collections::HashMap::new();
    for kv in a.meta {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--meta {kv:?}: give KEY=VALUE"))?;
        meta.insert(k.to_string(), v.to_string());
    }
    let r = c
        .snapshot(pb::SnapshotRequest {
            dataset: a.dataset,
            message: a.message,
            from: a.from,
            meta,
            rescan: a.rescan,
            allow_empty: a.allow_empty,
            merge: Vec::new(),
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let s = r.snapshot.context("the daemon sent no snapshot")?;
    if a.json {
        let mut v = snapshot_json(&s);
        v["unchanged"] = json!(r.unchanged);
        println!("{v}");
    } else if r.unchanged {
        println!(
            "{}: nothing changed since snapshot {} (use --allow-empty to record one anyway)",
            s.dataset,
            hex::encode(&s.id)
        );
    } else {
        println!("{}", hex::encode(&s.id));
        eprintln!(
            "snapshot of {}: {} files, {}",
            s.dataset,
            s.files,
            ui::bytes(s.size)
        );
    }
    Ok(())
}

pub async fn log(mut c: Client, spec: String, limit: u32, json: bool) -> anyhow::Result<()> {
    let l = c
        .log(pb::LogRequest { spec, limit })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    if json {
        let v: Vec<Value> = l.snapshots.iter().map(snapshot_json).collect();
        println!("{}", Value::Array(v));
        return Ok(());
    }
    for s in &l.snapshots {
        let tags = if s.tags.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.tags.join(", "))
        };
        println!("snapshot {}{tags}", hex::encode(&s.id));
        println!("date:    {}", time(s.time_ns));
        println!("content: {} files, {}", s.files, ui::bytes(s.size));
        for d in &s.derived {
            println!("from:    {}", hex::encode(d));
        }
        for (k, v) in &s.meta {
            println!("{k}: {v}");
        }
        if !s.message.is_empty() {
            println!("\n    {}", s.message.replace('\n', "\n    "));
        }
        println!();
    }
    Ok(())
}

fn change_json(ch: &pb::Change) -> Value {
    json!({
        "path": String::from_utf8_lossy(&ch.path),
        "kind": ch.kind,
        "old": (!ch.old_id.is_empty()).then(|| json!({"oid": oid_string(&ch.old_id), "size": ch.old_size})),
        "new": (!ch.new_id.is_empty()).then(|| json!({"oid": oid_string(&ch.new_id), "size": ch.new_size})),
    })
}

fn print_changes(changes: &[pb::Change]) {
    for ch in changes {
        let mark = match ch.kind.as_str() {
            "added" => "A",
            "removed" => "D",
            _ => "M",
        };
        let sizes = match ch.kind.as_str() {
            "added" => ui::bytes(ch.new_size),
            "removed" => ui::bytes(ch.old_size),
            _ => format!("{} -> {}", ui::bytes(ch.old_size), ui::bytes(ch.new_size)),
        };
        println!("{mark}  {}  ({sizes})", String::from_utf8_lossy(&ch.path));
    }
}

pub async fn diff(mut c: Client, a: String, b: String, json: bool) -> anyhow::Result<()> {
    let d = c
        .diff(pb::DiffRequest { a, b })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let count = |k: &str| d.changes.iter().filter(|c| c.kind == k).count();
    if json {
        println!(
            "{}",
            json!({
                "a": hex::encode(&d.a), "b": hex::encode(&d.b),
                "changes": d.changes.iter().map(change_json).collect::<Vec<_>>(),
                "added": count("added"), "removed": count("removed"), "modified": count("modified"),
                "shared_chunk_bytes": d.share_known.then_some(d.shared_bytes),
                "chunk_bytes": d.share_known.then_some(d.total_bytes),
                "shared_fraction": (d.share_known && d.total_bytes > 0).then(|| d.shared_bytes as f64 / d.total_bytes as f64),
            })
        );
        return Ok(());
    }
    print_changes(&d.changes);
    let share = if d.share_known {
        format!(
            "; {} of {}'s chunk bytes ({}) were already in {}",
            ui::percent(d.shared_bytes, d.total_bytes),
            short(&d.b),
            ui::bytes(d.total_bytes),
            short(&d.a)
        )
    } else {
        String::new()
    };
    println!(
        "{} added, {} removed, {} modified{share}",
        count("added"),
        count("removed"),
        count("modified")
    );
    Ok(())
}

pub async fn status(
    mut c: Client,
    dataset: String,
    rescan: bool,
    json: bool,
) -> anyhow::Result<()> {
    let d = c
        .dataset_status(pb::DatasetStatusRequest {
            dataset: dataset.clone(),
            rescan,
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    if json {
        println!(
            "{}",
            json!({
                "dataset": dataset,
                "head": (!d.a.is_empty()).then(|| hex::encode(&d.a)),
                "changes": d.changes.iter().map(change_json).collect::<Vec<_>>(),
                "pending": d.pending,
                "unreadable": d.unreadable,
            })
        );
        return Ok(());
    }
    if d.changes.is_empty() {
        println!("{dataset}: no changes since its latest snapshot");
    } else {
        print_changes(&d.changes);
    }
    if d.pending > 0 {
        println!("{} change(s) still being ingested", d.pending);
    }
    for u in &d.unreadable {
        eprintln!("hoard: cannot read {u}");
    }
    Ok(())
}

pub async fn tag(
    mut c: Client,
    dataset: String,
    tag: String,
    target: Option<String>,
    force: bool,
    delete: bool,
) -> anyhow::Result<()> {
    let r = c
        .tag(pb::TagRequest {
            dataset: dataset.clone(),
            tag: tag.clone(),
            target: target.unwrap_or_default(),
            force,
            delete,
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    if delete {
        println!("deleted tag {dataset}@{tag} (was {})", hex::encode(&r.id));
    } else {
        println!("{dataset}@{tag} -> {}", hex::encode(&r.id));
    }
    Ok(())
}

pub async fn lineage(
    mut c: Client,
    spec: String,
    downstream: bool,
    depth: u32,
    json: bool,
) -> anyhow::Result<()> {
    let r = c
        .lineage(pb::LineageRequest {
            spec,
            downstream,
            depth,
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let root = r.root.context("the daemon sent no snapshot")?;
    if json {
        println!(
            "{}",
            json!({
                "snapshot": snapshot_json(&root),
                "direction": if downstream { "downstream" } else { "upstream" },
                "links": r.links.iter().map(|l| json!({
                    "from": hex::encode(&l.from), "to": hex::encode(&l.to), "depth": l.depth,
                    "snapshot": l.snapshot.as_ref().map(snapshot_json),
                })).collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    println!(
        "{}@{} {}",
        root.dataset,
        short(&root.id),
        first_line(&root.message)
    );
    for l in &r.links {
        let pad = "  ".repeat(l.depth as usize);
        let arrow = if downstream { "->" } else { "<-" };
        match &l.snapshot {
            Some(s) => println!(
                "{pad}{arrow} {}@{} {}",
                s.dataset,
                short(&s.id),
                first_line(&s.message)
            ),
            None => println!("{pad}{arrow} {} (not in this store)", hex::encode(&l.to)),
        }
    }
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

pub struct CheckoutArgs {
    pub spec: String,
    pub to: PathBuf,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub force: bool,
    pub json: bool,
}

pub async fn checkout(mut c: Client, a: CheckoutArgs) -> anyhow::Result<()> {
    let r = c
        .checkout(pb::CheckoutRequest {
            spec: a.spec,
            dir: abs(&a.to)?,
            include: a.include,
            exclude: a.exclude,
            force: a.force,
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    if a.json {
        println!(
            "{}",
            json!({
                "snapshot": hex::encode(&r.snapshot), "dir": a.to.display().to_string(),
                "written": r.written, "unchanged": r.unchanged, "removed": r.removed,
                "bytes": r.bytes, "kept": r.kept,
            })
        );
    } else {
        println!(
            "checked out {} into {}: {} files written ({}), {} already there, {} removed",
            short(&r.snapshot),
            a.to.display(),
            r.written,
            ui::bytes(r.bytes),
            r.unchanged,
            r.removed
        );
        for k in &r.kept {
            eprintln!("hoard: kept {k} (locally modified; not in this version)");
        }
    }
    Ok(())
}

pub(crate) fn pick_remote(
    paths: &Paths,
    name: Option<&str>,
) -> anyhow::Result<(String, pb::PeerTarget)> {
    let remotes = Remotes::load(paths).map_err(anyhow::Error::msg)?;
    let (n, r) = remotes.pick(name).with_context(|| match name {
        Some(n) => format!("no remote named {n:?}; `hoard remote list` shows them"),
        None => {
            "no remote to use: `hoard remote add origin https://HOST:PORT --token TOKEN`".into()
        }
    })?;
    Ok((n, remote::target(&r)?))
}

fn summary_json(kind: &str, remote: &str, s: &pb::SyncSummary) -> Value {
    json!({
        "type": "summary", "direction": kind, "remote": remote,
        "snapshot": (!s.snapshot.is_empty()).then(|| hex::encode(&s.snapshot)),
        "files": s.files, "files_already_there": s.files_already_there,
        "chunks_sent": s.chunks_sent, "chunks_skipped": s.chunks_skipped, "bytes": s.bytes,
    })
}

pub struct CloneArgs {
    /// REMOTE/NAME[@REV]
    pub source: String,
    pub dir: Option<PathBuf>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub force: bool,
    pub json: bool,
}

pub async fn clone(mut c: Client, paths: &Paths, a: CloneArgs) -> anyhow::Result<()> {
    let Some((remote_name, rest)) = a.source.split_once('/') else {
        bail!(
            "{:?}: give REMOTE/NAME[@REV], e.g. origin/survey@v3",
            a.source
        );
    };
    let (dataset, rev) = rest.split_once('@').unwrap_or((rest, ""));
    let (name, target) = pick_remote(paths, Some(remote_name))?;
    let dir = match &a.dir {
        Some(d) => abs(d)?,
        None => String::new(),
    };
    let s = c
        .clone_dataset(pb::CloneRequest {
            peer: Some(target),
            dataset: dataset.to_string(),
            rev: rev.to_string(),
            include: a.include,
            exclude: a.exclude,
            dir: dir.clone(),
            force: a.force,
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let s = remote::follow(s, "cloning", a.json).await?;
    if a.json {
        let mut v = summary_json("clone", &name, &s);
        v["dataset"] = json!(dataset);
        v["dir"] = json!((!dir.is_empty()).then_some(&dir));
        println!("{v}");
    } else {
        println!(
            "cloned {dataset}@{} from {name}{}: {} files fetched ({} already here), {} chunks, {} received; {} chunks skipped (already here)",
            short(&s.snapshot),
            if dir.is_empty() { String::new() } else { format!(" into {dir}") },
            s.files,
            s.files_already_there,
            s.chunks_sent,
            ui::bytes(s.bytes),
            s.chunks_skipped
        );
    }
    Ok(())
}

pub async fn push(
    mut c: Client,
    paths: &Paths,
    dataset: String,
    remote_name: Option<String>,
    force: bool,
    json: bool,
) -> anyhow::Result<()> {
    let (name, target) = pick_remote(paths, remote_name.as_deref())?;
    let s = c
        .push_dataset(pb::PushDatasetRequest {
            peer: Some(target),
            dataset: dataset.clone(),
            force,
            remote: name.clone(),
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let s = remote::follow(s, "pushing", json).await?;
    if json {
        let mut v = summary_json("push", &name, &s);
        v["dataset"] = json!(dataset);
        println!("{v}");
    } else {
        println!(
            "pushed {dataset}@{} to {name}: {} files ({} already there), {} chunks, {} sent; {} chunks skipped (the receiver had them)",
            short(&s.snapshot),
            s.files,
            s.files_already_there,
            s.chunks_sent,
            ui::bytes(s.bytes),
            s.chunks_skipped
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            time(1_700_000_000 * 1_000_000_000),
            "2023-11-14 22:13:20 UTC"
        );
        assert_eq!(time(951_782_400 * 1_000_000_000), "2000-02-29 00:00:00 UTC");
    }
}
