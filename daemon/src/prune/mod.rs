//! Prune: mark what stays, then sweep (`crate::store::Store::sweep`).
//!
//! What stays (the roots, and all they need):
//! - every dataset's head and tags, and the snapshots the retention policy
//!   keeps of each dataset's history ([`retention`]); their trees and files;
//! - files of git repositories that use this store, as the client found
//!   them (`git_live`: HEAD, the index, branches, tags, stashes, worktrees,
//!   unpushed and recent commits). Files git's history knows (`git_known`)
//!   and that no root needs may go; a file neither in any dataset tree nor
//!   known to git (a `hoard add`, content pushed by git to a hub, which
//!   cannot see the git history) always stays;
//! - pins (`hoard pin`), the current content of watched datasets, and every
//!   path the stat cache knows whose file is still there unchanged;
//! - whatever was written or said present within the grace period, or
//!   since the prune began ([`crate::store`]'s leases);
//! - the base chunks of every delta frame that stays.

pub mod retention;

use crate::dataset::Datasets;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::objects::{EntryKind, Object};
use crate::pack::format::Codec;
use crate::store::{now_ms, Store, SweepPlan, SweepReport};
use retention::{Dated, Policy};
use std::collections::{HashMap, HashSet};

/// Local-state key prefix of pins: `pin/<hex id>` → `file` or `snapshot`.
pub const PIN_PREFIX: &str = "pin/";

#[derive(Debug, Clone)]
pub struct Options {
    pub policy: Policy,
    /// What was leased this long before the prune began stays.
    pub grace_secs: u64,
    pub git_live: Vec<Id>,
    pub git_known: Vec<Id>,
    /// Unused share of stored bytes a partly used pack may keep (0.05 = 5 %).
    pub max_unused: f64,
    pub max_repack: u64,
    pub dry_run: bool,
    /// Datasets whose refs and tags go first (`hoard dataset remove --remote`).
    pub remove_datasets: Vec<String>,
}

/// Default grace period: a day.
pub const DEFAULT_GRACE: u64 = 24 * 3_600;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DatasetReport {
    pub name: String,
    /// Kept snapshots (hex id) and why.
    pub kept: Vec<(String, Vec<&'static str>)>,
    pub removed: Vec<String>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub datasets: Vec<DatasetReport>,
    pub live_files: u64,
    pub live_chunks: u64,
    pub stale_stat_entries: u64,
    pub sweep: SweepReport,
}

/// Marks and sweeps `ds.store` under `opts`.
pub fn prune(ds: &Datasets, opts: &Options) -> Result<Report> {
    let store = &*ds.store;
    let started = now_ms();
    let cutoff = started.saturating_sub(opts.grace_secs.saturating_mul(1000));
    if !opts.dry_run {
        for name in &opts.remove_datasets {
            remove_dataset(store, name)?;
        }
    }
    let mut rep = Report {
        dry_run: opts.dry_run,
        ..Report::default()
    };
    let leased: HashSet<Id> = store.index.leased_since(cutoff)?.into_iter().collect();
    let pins = pins(store)?;
    let mut snapshots = live_snapshots(store, opts, &mut rep)?;
    snapshots.extend(pins.iter().filter(|p| p.1 == "snapshot").map(|p| p.0));
    let (live_objects, mut files) = walk_objects(store, snapshots, &leased)?;
    files.extend(opts.git_live.iter().copied());
    files.extend(pins.iter().filter(|p| p.1 == "file").map(|p| p.0));
    files.extend(ds.current_files());
    let (stat_live, stale) = stat_roots(store)?;
    rep.stale_stat_entries = stale.len() as u64;
    files.extend(stat_live);
    files.extend(loose_files(store, &opts.git_known)?);
    let all_files: HashSet<Id> = store.index.file_ids()?.into_iter().collect();
    files.extend(leased.iter().filter(|f| all_files.contains(f)));
    files.retain(|f| all_files.contains(f));
    let (chunks, reencode) = live_chunks(store, &files, &leased)?;
    rep.live_files = files.len() as u64;
    rep.live_chunks = chunks.len() as u64;
    let plan = SweepPlan {
        live_chunks: chunks,
        live_files: files,
        live_objects,
        cutoff,
        max_unused: opts.max_unused,
        max_repack: opts.max_repack,
        dry_run: opts.dry_run,
        only: None,
        reencode,
    };
    rep.sweep = store.sweep(&plan)?;
    if !opts.dry_run {
        ds.forget_stored();
        let mut b = store.index.batch();
        for path in &stale {
            b.delete_stat(path);
        }
        b.write(false)?;
    }
    Ok(rep)
}

/// Deletes a dataset's ref and tags (its content goes with the sweep).
fn remove_dataset(store: &Store, name: &str) -> Result<()> {
    crate::objects::check_dataset_name(name).map_err(|e| Error::Invalid(e.to_string()))?;
    let head = store.get_ref(&format!("datasets/{name}"))?;
    let tags = store.refs(&format!("tags/{name}/"))?;
    if head.is_none() && tags.is_empty() {
        return Err(Error::NotFound(format!(
            "this store has no dataset {name}; `hoard dataset list --remote` shows what it has"
        )));
    }
    let mut b = store.index.batch();
    b.put_ref(&format!("datasets/{name}"), None);
    for (t, _) in &tags {
        b.put_ref(t, None);
    }
    b.write(true)?;
    store.mirror_ref(&format!("datasets/{name}"), None);
    for (t, _) in &tags {
        store.mirror_ref(t, None);
    }
    Ok(())
}

/// Pinned ids and what each is (`file` or `snapshot`).
fn pins(store: &Store) -> Result<Vec<(Id, String)>> {
    Ok(store
        .local_entries(PIN_PREFIX)?
        .into_iter()
        .filter_map(|(hex, v)| Some((Id::parse(&hex).ok()?, String::from_utf8(v).ok()?)))
        .collect())
}

/// Every dataset's head, tags and the snapshots its policy keeps.
fn live_snapshots(store: &Store, opts: &Options, rep: &mut Report) -> Result<Vec<Id>> {
    let mut out = Vec::new();
    let mut tags: HashMap<String, HashSet<Id>> = HashMap::new();
    for (name, id) in store.refs("tags/")? {
        let dataset = name["tags/".len()..]
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        tags.entry(dataset).or_default().insert(id);
        out.push(id);
    }
    let policy = Policy {
        keep_tagged: true,
        ..opts.policy.clone()
    };
    for (refname, head) in store.refs("datasets/")? {
        let name = refname["datasets/".len()..].to_string();
        let history = history(store, head)?;
        let tagged = tags.remove(&name).unwrap_or_default();
        let kept = retention::apply(&policy, &history, Some(head), &tagged);
        let mut d = DatasetReport {
            name,
            ..DatasetReport::default()
        };
        for h in &history {
            match kept.get(&h.id) {
                Some(why) => d.kept.push((h.id.hex(), why.clone())),
                None => d.removed.push(h.id.hex()),
            }
        }
        out.extend(kept.into_keys());
        rep.datasets.push(d);
    }
    Ok(out)
}

/// The snapshots reachable from `head` through all parents this store
/// holds, newest first.
fn history(store: &Store, head: Id) -> Result<Vec<Dated>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![head];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(Object::Snapshot(s)) = store.object(&id)? {
            out.push(Dated {
                id,
                time_ns: s.time_ns,
            });
            stack.extend(s.parents);
        }
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.time_ns));
    Ok(out)
}

/// The objects reachable from `roots` and leased objects (snapshot → tree
/// → subtrees), and the files their trees name.
fn walk_objects(
    store: &Store,
    roots: Vec<Id>,
    leased: &HashSet<Id>,
) -> Result<(HashSet<Id>, HashSet<Id>)> {
    let mut objects = HashSet::new();
    let mut files = HashSet::new();
    let mut stack = roots;
    stack.extend(
        store
            .index
            .object_ids()?
            .into_iter()
            .map(|o| o.0)
            .filter(|o| leased.contains(o)),
    );
    while let Some(id) = stack.pop() {
        if !objects.insert(id) {
            continue;
        }
        match store.object(&id)? {
            Some(Object::Snapshot(s)) => stack.push(s.tree),
            Some(Object::Tree(t)) => {
                for e in t.entries {
                    match e.kind {
                        EntryKind::Dir => stack.push(e.id),
                        EntryKind::File | EntryKind::Symlink => {
                            files.insert(e.id);
                        }
                    }
                }
            }
            // History pruned before, or never fetched (a clone).
            None => {
                objects.remove(&id);
            }
        }
    }
    Ok((objects, files))
}

/// Files no tree of this store names and git does not know: kept always.
fn loose_files(store: &Store, git_known: &[Id]) -> Result<Vec<Id>> {
    let mut in_trees: HashSet<Id> = git_known.iter().copied().collect();
    for (id, kind) in store.index.object_ids()? {
        if kind != crate::objects::ObjectKind::Tree as u8 {
            continue;
        }
        if let Some(Object::Tree(t)) = store.object(&id)? {
            in_trees.extend(
                t.entries
                    .iter()
                    .filter(|e| e.kind != EntryKind::Dir)
                    .map(|e| e.id),
            );
        }
    }
    Ok(store
        .index
        .file_ids()?
        .into_iter()
        .filter(|f| !in_trees.contains(f))
        .collect())
}

/// Files the stat cache maps a still-unchanged path to, and the paths of
/// stale entries (gone or changed), which a prune drops.
fn stat_roots(store: &Store) -> Result<(Vec<Id>, Vec<Vec<u8>>)> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let (mut live, mut stale) = (Vec::new(), Vec::new());
    for (path, e) in store.index.stat_all()? {
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(&path));
        let same = std::fs::symlink_metadata(p).is_ok_and(|m| {
            m.len() == e.size
                && m.ino() == e.ino
                && m.mtime() * 1_000_000_000 + m.mtime_nsec() == e.mtime_ns
        });
        if same {
            live.push(e.file);
        } else {
            stale.push(path);
        }
    }
    Ok((live, stale))
}

/// Delta frames to re-make whole, by (pack, payload offset).
type Reencode = HashSet<(Id, u64)>;

/// The chunks of `files`, leased chunks, and the bases of the delta frames
/// among them that stay deltas. A delta frame with a base nothing else
/// needs (typically a version being pruned) is re-made self-contained
/// instead, so that base can go: a pruned store then holds about what a
/// store that only ever held the kept versions would.
fn live_chunks(
    store: &Store,
    files: &HashSet<Id>,
    leased: &HashSet<Id>,
) -> Result<(HashSet<Id>, Reencode)> {
    let mut direct: HashSet<Id> = HashSet::new();
    for f in files {
        if let Some(m) = store.index.manifest(f)? {
            direct.extend(m.chunks.iter().map(|c| c.0));
        }
    }
    direct.extend(leased.iter().copied());
    let ids: Vec<Id> = direct.iter().copied().collect();
    let mut frames_seen = HashSet::new();
    let mut bases = Vec::new();
    let mut reencode = HashSet::new();
    for batch in ids.chunks(4096) {
        for loc in store.index.chunk_locs(batch)?.into_iter().flatten() {
            let key = (loc.pack, loc.payload_offset);
            if loc.codec == Codec::ZstdDict && frames_seen.insert(key) {
                let b = store.frame_bases(&loc)?;
                if b.iter().all(|c| direct.contains(c)) {
                    bases.extend(b);
                } else {
                    reencode.insert(key);
                }
            }
        }
    }
    direct.extend(bases);
    Ok((direct, reencode))
}
