//! The receiver's checks of what a peer sends about datasets: trees and
//! snapshots (each against its id, well formed, and consistent with what it
//! names) and ref updates (compare-and-swap, fast-forward unless forced).
//! Network-free: a pull, a push to this daemon and an object-store hub share
//! them; the wire conversion lives in `crate::sync`. Nothing of a batch is
//! stored unless all of it passes.

use super::{walk, Datasets};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::objects::{self, EntryKind, Object, ObjectKind, Snapshot, Tree};
use crate::store::Store;
use std::collections::HashMap;

/// A stored tree or one from `overlay`.
fn tree_in(store: &Store, overlay: &HashMap<Id, Tree>, id: &Id) -> Result<Option<Tree>> {
    if let Some(t) = overlay.get(id) {
        return Ok(Some(t.clone()));
    }
    match store.object(id)? {
        Some(Object::Tree(t)) => Ok(Some(t)),
        _ => Ok(None),
    }
}

/// The total size of each subtree a batch names, each read once.
struct SubtreeSizes<'a> {
    store: &'a Store,
    overlay: &'a HashMap<Id, Tree>,
    known: HashMap<Id, Option<u64>>,
}

impl SubtreeSizes<'_> {
    fn get(&mut self, id: &Id) -> Result<Option<u64>> {
        if let Some(s) = self.known.get(id) {
            return Ok(*s);
        }
        let size = match self.overlay.get(id) {
            Some(t) => Some(t.total_size()),
            None => match self.store.object(id)? {
                Some(Object::Tree(t)) => Some(t.total_size()),
                _ => None,
            },
        };
        self.known.insert(*id, size);
        Ok(size)
    }
}

/// Checks objects received from `peer` and stores them. Each must match
/// its id and be well formed; a tree's subtrees must be stored or sent
/// alongside, with the sizes it records for them; its files' sizes must
/// match the manifests this store holds; a snapshot's tree must be there
/// and its counts must match its tree (its parents need not be: a clone
/// fetches one version, and either side may have pruned old history). Nothing of
/// a batch is stored unless all of it passes. Returns (stored, already had).
pub fn accept_objects(
    store: &Store,
    objs: Vec<(ObjectKind, Id, Vec<u8>)>,
    peer: &str,
) -> Result<(u64, u64)> {
    let refuse = |what: String| Error::Refused(format!("{peer} sent {what}; refused"));
    let mut trees: HashMap<Id, Tree> = HashMap::new();
    let mut snaps: Vec<(Id, Snapshot)> = Vec::new();
    for (kind, id, data) in &objs {
        match objects::decode_checked(*kind, id, data) {
            Ok(Object::Tree(t)) => {
                trees.insert(*id, t);
            }
            Ok(Object::Snapshot(s)) => snaps.push((*id, s)),
            Err(e) => return Err(refuse(format!("a bad {}: {e}", kind.as_str()))),
        }
    }
    let raw = objs;
    let mut sizes = SubtreeSizes {
        store,
        overlay: &trees,
        known: HashMap::new(),
    };
    for (id, t) in &trees {
        for e in &t.entries {
            match e.kind {
                EntryKind::Dir => {
                    let size = sizes.get(&e.id)?.ok_or_else(|| {
                        refuse(format!(
                            "tree {id} naming subtree {} ({:?}), which it did not send first",
                            e.id,
                            e.name_lossy()
                        ))
                    })?;
                    if size != e.size {
                        return Err(refuse(format!(
                            "tree {id} whose directory {:?} records {} bytes but holds {size}",
                            e.name_lossy(),
                            e.size,
                        )));
                    }
                }
                EntryKind::File | EntryKind::Symlink => {
                    if e.kind == EntryKind::Symlink && e.size > objects::MAX_LINK_TARGET {
                        return Err(refuse(format!(
                            "tree {id} whose link {:?} records a {}-byte target (at most {})",
                            e.name_lossy(),
                            e.size,
                            objects::MAX_LINK_TARGET
                        )));
                    }
                    if let Some(size) = store.file_size(&e.id)? {
                        if size != e.size {
                            return Err(refuse(format!(
                                "tree {id} whose file {:?} records {} bytes, but file {} has {size}",
                                e.name_lossy(),
                                e.size,
                                e.id
                            )));
                        }
                    }
                }
            }
        }
    }
    // Each distinct tree is counted once for all the batch's snapshots.
    let mut counted = HashMap::new();
    for (id, s) in &snaps {
        if sizes.get(&s.tree)?.is_none() {
            return Err(refuse(format!(
                "snapshot {id} whose tree {} it did not send",
                s.tree
            )));
        }
        let mut load = |t: &Id| tree_in(store, &trees, t);
        let not_taken =
            |why: String| refuse(format!("snapshot {id} whose tree cannot be taken: {why}"));
        let t = walk::totals_into(&s.tree, &mut load, &not_taken, &mut counted)?;
        if t.size != s.size || t.files != s.files {
            return Err(refuse(format!(
                "snapshot {id} whose size or file count disagrees with its tree"
            )));
        }
    }
    let ids: Vec<Id> = raw.iter().map(|r| r.1).collect();
    let had = store.objects_present(&ids)?.iter().filter(|p| **p).count() as u64;
    store.put_objects(&raw)?;
    for (id, s) in &snaps {
        note_lineage(store, id, s)?;
    }
    Ok((raw.len() as u64 - had, had))
}

/// Records the reverse lineage links of a stored snapshot.
pub fn note_lineage(store: &Store, id: &Id, snap: &Snapshot) -> Result<()> {
    for d in &snap.derived {
        store.put_local(&format!("derived/{}/{}", d.hex(), id.hex()), Some(b""))?;
    }
    Ok(())
}

/// A peer's request to move a ref on this store.
#[derive(Debug, Clone)]
pub struct RefUpdate {
    pub name: String,
    /// What the peer believes the ref holds now (None: absent).
    pub old: Option<Id>,
    /// What it should hold (None: delete it).
    pub new: Option<Id>,
    pub force: bool,
}

/// What became of a [`RefUpdate`]: `ok`, or why not; `current` is what the
/// ref holds after the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefOutcome {
    pub ok: bool,
    pub current: Option<Id>,
    pub reason: String,
}

/// Moves a ref on this store for a peer: compare-and-swap, and a
/// fast-forward unless forced.
pub fn update_ref(ds: &Datasets, req: &RefUpdate) -> Result<RefOutcome> {
    objects::check_ref_name(&req.name).map_err(|e| Error::Invalid(e.0))?;
    let (old, new) = (req.old, req.new);
    let current = ds.store.get_ref(&req.name)?;
    let reply = |ok: bool, current: Option<Id>, reason: String| RefOutcome {
        ok,
        current,
        reason,
    };
    match new {
        None if !req.force => {
            return Ok(reply(
                false,
                current,
                format!("deleting {} needs force", req.name),
            ));
        }
        None => {}
        Some(n) => {
            if let Some(why) = not_complete(ds, &req.name, &n)? {
                return Ok(reply(false, current, why));
            }
        }
    }
    if current != old {
        return Ok(reply(
            false,
            current,
            format!(
                "{} moved (it is at {}); fetch, then retry",
                req.name,
                current.map(|c| c.hex()).unwrap_or_else(|| "nothing".into())
            ),
        ));
    }
    if let (Some(o), Some(n), false) = (old, new, req.force) {
        if !ds.is_ancestor(&o, &n)? {
            return Ok(reply(
                false,
                current,
                format!(
                    "{} is at {o}, which is not in the history of {n}: not a fast-forward (use --force to replace it)",
                    req.name
                ),
            ));
        }
    }
    match ds.store.cas_ref(&req.name, old, new)? {
        Ok(()) => Ok(reply(true, new, String::new())),
        Err(now) => Ok(reply(
            false,
            now,
            format!("{} moved meanwhile; retry", req.name),
        )),
    }
}

/// Why snapshot `n` may not be named by ref `name`: it is not here, it is
/// another dataset's, or something it references (a tree, a file's
/// content) is missing. None when it is complete.
fn not_complete(ds: &Datasets, name: &str, n: &Id) -> Result<Option<String>> {
    let Some(snap) = ds.snapshot_object(n)? else {
        return Ok(Some(format!("snapshot {n} is not here; send it first")));
    };
    let dataset = name.split('/').nth(1).unwrap_or("");
    if snap.dataset != dataset {
        return Ok(Some(format!(
            "snapshot {n} is of dataset {:?}, not of {dataset:?}",
            snap.dataset
        )));
    }
    let store = &ds.store;
    // Each distinct tree is read once, its files noted as it goes.
    let mut files = Vec::new();
    let mut load = |id: &Id| match store.object(id)? {
        Some(Object::Tree(t)) => {
            let named = t.entries.iter().filter(|e| e.kind != EntryKind::Dir);
            files.extend(named.map(|e| e.id));
            Ok(Some(t))
        }
        _ => Ok(None),
    };
    if let Err(e) = walk::post_order(&[snap.tree], &|_| false, &mut load) {
        return Ok(Some(format!("snapshot {n} is incomplete here: {e}")));
    }
    files.sort();
    files.dedup();
    for batch in files.chunks(crate::STAT_BATCH) {
        let present = store.files_present(batch)?;
        if let Some((f, _)) = batch.iter().zip(present).find(|(_, p)| !p) {
            return Ok(Some(format!(
                "snapshot {n} names file {f}, whose content is not here; send it first"
            )));
        }
    }
    Ok(None)
}
