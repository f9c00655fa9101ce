//! Differences between two trees: added, removed and modified files, and
//! how many of the new version's chunk bytes the old one already had.

use super::Datasets;
use crate::error::Result;
use crate::id::Id;
use crate::objects::{EntryKind, Tree};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Modified => "modified",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: Vec<u8>,
    pub kind: ChangeKind,
    /// (file id, size) before and after.
    pub old: Option<(Id, u64)>,
    pub new: Option<(Id, u64)>,
}

/// Reads trees from an overlay of freshly built encodings, then the store.
pub struct Trees<'a> {
    pub datasets: &'a Datasets,
    pub overlay: HashMap<Id, Vec<u8>>,
}

impl Trees<'_> {
    fn get(&self, id: &Id) -> Result<Tree> {
        match self.overlay.get(id) {
            Some(enc) => Tree::decode(enc).map_err(|e| crate::Error::Corrupt(e.0)),
            None => self.datasets.tree(id),
        }
    }
}

/// Changes from tree `a` to tree `b` (either may be absent: empty), sorted
/// by path. Subtrees with equal ids are skipped without being read.
pub fn diff(trees: &Trees, a: Option<&Id>, b: Option<&Id>) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    walk(trees, a, b, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn walk(
    trees: &Trees,
    a: Option<&Id>,
    b: Option<&Id>,
    prefix: &mut Vec<u8>,
    out: &mut Vec<Change>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let ta = a.map(|id| trees.get(id)).transpose()?.unwrap_or_default();
    let tb = b.map(|id| trees.get(id)).transpose()?.unwrap_or_default();
    let (mut i, mut j) = (0, 0);
    while i < ta.entries.len() || j < tb.entries.len() {
        let ea = ta.entries.get(i);
        let eb = tb.entries.get(j);
        let ord = match (ea, eb) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let (left, right) = match ord {
            std::cmp::Ordering::Less => {
                i += 1;
                (ea, None)
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                (None, eb)
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
                (ea, eb)
            }
        };
        let name = left.or(right).map(|e| e.name.clone()).unwrap_or_default();
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(&name);
        let dir = |e: Option<&crate::objects::Entry>| {
            e.filter(|e| e.kind == EntryKind::Dir).map(|e| e.id)
        };
        let leaf = |e: Option<&crate::objects::Entry>| {
            e.filter(|e| e.kind != EntryKind::Dir)
                .map(|e| (e.id, e.size))
        };
        let (da, db) = (dir(left), dir(right));
        if da.is_some() || db.is_some() {
            walk(trees, da.as_ref(), db.as_ref(), prefix, out)?;
        }
        let (fa, fb) = (leaf(left), leaf(right));
        let kind = match (fa, fb) {
            (None, None) => None,
            (None, Some(_)) => Some(ChangeKind::Added),
            (Some(_), None) => Some(ChangeKind::Removed),
            (Some(x), Some(y)) => {
                let mode_changed =
                    left.map(|e| (e.kind, e.mode)) != right.map(|e| (e.kind, e.mode));
                (x != y || mode_changed).then_some(ChangeKind::Modified)
            }
        };
        if let Some(kind) = kind {
            out.push(Change {
                path: prefix.clone(),
                kind,
                old: fa,
                new: fb,
            });
        }
        prefix.truncate(len);
    }
    Ok(())
}

/// Of the chunk bytes of `b`'s files, how many `a`'s files also hold
/// (whole-tree, distinct chunks). `None` when some manifest is not local.
pub fn shared_chunk_bytes(trees: &Trees, a: &Id, b: &Id) -> Result<Option<(u64, u64)>> {
    let mut files_a = Vec::new();
    let mut files_b = Vec::new();
    collect_files(trees, a, &mut files_a)?;
    collect_files(trees, b, &mut files_b)?;
    let store = &trees.datasets.store;
    let mut chunks_a = HashSet::new();
    for f in dedup(files_a) {
        match store.index.manifest(&f)? {
            Some(m) => chunks_a.extend(m.chunks.into_iter().map(|c| c.0)),
            None => return Ok(None),
        }
    }
    let (mut shared, mut total) = (0u64, 0u64);
    let mut seen = HashSet::new();
    for f in dedup(files_b) {
        let Some(m) = store.index.manifest(&f)? else {
            return Ok(None);
        };
        for (c, len) in m.chunks {
            if seen.insert(c) {
                total += len as u64;
                if chunks_a.contains(&c) {
                    shared += len as u64;
                }
            }
        }
    }
    Ok(Some((shared, total)))
}

fn dedup(v: Vec<Id>) -> Vec<Id> {
    let mut seen = HashSet::new();
    v.into_iter().filter(|i| seen.insert(*i)).collect()
}

/// The files and links below `tree`, each distinct subtree read once
/// (identical subtrees hold the same files).
fn collect_files(trees: &Trees, tree: &Id, out: &mut Vec<Id>) -> Result<()> {
    let mut seen = HashSet::new();
    let mut stack = vec![*tree];
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        for e in trees.get(&t)?.entries {
            match e.kind {
                EntryKind::Dir => stack.push(e.id),
                _ => out.push(e.id),
            }
        }
    }
    Ok(())
}
