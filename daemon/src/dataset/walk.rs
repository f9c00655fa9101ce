//! Walks over trees that may come from a hostile peer: linear in the
//! number of *distinct* trees (each is read and counted once, whatever the
//! number of entries naming it), iterative with an explicit stack (a chain
//! of thousands of single-entry trees cannot overflow a thread's stack),
//! capped in depth, with expanded counts that saturate and are refused past
//! a stated limit. Identical subtrees are legal: a tree naming one subtree
//! twice counts it twice without reading it twice.
//!
//! Floor 8 (engine), used by `dataset` and by `sync`'s clone and push; may
//! import `objects`, `id`, `error` only.

use crate::error::{Error, Result};
use crate::id::Id;
use crate::objects::{EntryKind, Tree};
use std::collections::HashMap;

/// Directories below a snapshot's root a walk follows; deeper is refused.
pub const MAX_DEPTH: usize = 1024;
/// Files, links and directories a snapshot may expand to (a checkout, a
/// diff or a clone holds its listing in memory).
pub const MAX_EXPANDED: u64 = 20_000_000;

/// What a tree holds, everything below it counted as a checkout would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Bytes of its files and links (saturating).
    pub size: u64,
    /// Files and links (saturating).
    pub files: u64,
    /// Files, links and directories (saturating).
    pub entries: u64,
    /// Directories on the longest path below it.
    pub height: usize,
}

/// Where a walk reads trees: `Ok(None)` when a tree is not there.
pub type Load<'a> = &'a mut dyn FnMut(&Id) -> Result<Option<Tree>>;

/// The totals of `root` and of every distinct tree below it, each tree
/// read once. A missing tree, a directory entry whose size is not its
/// tree's, a path deeper than [`MAX_DEPTH`] or more than [`MAX_EXPANDED`]
/// entries is an error made by `refuse` (a refusal for a peer's objects,
/// damage for the store's own).
pub fn totals(
    root: &Id,
    load: Load,
    refuse: &dyn Fn(String) -> Error,
) -> Result<(Totals, HashMap<Id, Totals>)> {
    let mut done = HashMap::new();
    let t = totals_into(root, load, refuse, &mut done)?;
    Ok((t, done))
}

/// [`totals`], adding to (and reusing) the totals in `done` (for several
/// roots that share trees).
pub fn totals_into(
    root: &Id,
    load: Load,
    refuse: &dyn Fn(String) -> Error,
    done: &mut HashMap<Id, Totals>,
) -> Result<Totals> {
    // (tree, its depth, read and waiting for its subtrees)
    let mut stack: Vec<(Id, usize, Option<Tree>)> = vec![(*root, 0, None)];
    while let Some((id, depth, tree)) = stack.pop() {
        if done.contains_key(&id) {
            continue;
        }
        let Some(tree) = tree else {
            let t = load(&id)?.ok_or_else(|| refuse(format!("tree {id} is missing")))?;
            let subs: Vec<Id> = t
                .entries
                .iter()
                .filter(|e| e.kind == EntryKind::Dir && !done.contains_key(&e.id))
                .map(|e| e.id)
                .collect();
            if !subs.is_empty() && depth >= MAX_DEPTH {
                return Err(refuse(format!(
                    "tree {id} lies {depth} directories deep; at most {MAX_DEPTH} are followed"
                )));
            }
            stack.push((id, depth, Some(t)));
            stack.extend(subs.into_iter().map(|s| (s, depth + 1, None)));
            continue;
        };
        let t = sum(&id, &tree, done, refuse)?;
        if t.height > MAX_DEPTH {
            return Err(refuse(format!(
                "tree {id} holds directories {} deep; at most {MAX_DEPTH} are followed",
                t.height
            )));
        }
        if t.entries > MAX_EXPANDED {
            return Err(refuse(format!(
                "tree {id} expands to more than {MAX_EXPANDED} files and directories"
            )));
        }
        done.insert(id, t);
    }
    done.get(root)
        .copied()
        .ok_or_else(|| refuse(format!("tree {root} is missing")))
}

/// A tree's totals from its subtrees' (all in `done`), checking that each
/// directory entry records its subtree's size.
fn sum(
    id: &Id,
    tree: &Tree,
    done: &HashMap<Id, Totals>,
    refuse: &dyn Fn(String) -> Error,
) -> Result<Totals> {
    let mut t = Totals::default();
    for e in &tree.entries {
        let below = match e.kind {
            EntryKind::Dir => {
                let sub = done
                    .get(&e.id)
                    .ok_or_else(|| refuse(format!("tree {} is missing", e.id)))?;
                if sub.size != e.size {
                    return Err(refuse(format!(
                        "tree {id} whose directory {:?} records {} bytes but holds {}",
                        e.name_lossy(),
                        e.size,
                        sub.size
                    )));
                }
                Totals {
                    size: sub.size,
                    files: sub.files,
                    entries: sub.entries.saturating_add(1),
                    height: sub.height + 1,
                }
            }
            EntryKind::File | EntryKind::Symlink => Totals {
                size: e.size,
                files: 1,
                entries: 1,
                height: 0,
            },
        };
        t.size = t.size.saturating_add(below.size);
        t.files = t.files.saturating_add(below.files);
        t.entries = t.entries.saturating_add(below.entries);
        t.height = t.height.max(below.height);
    }
    Ok(t)
}

/// Every distinct tree reachable from `roots`, children before parents;
/// trees in `stop` (and what lies only below them) are left out.
pub fn post_order(roots: &[Id], stop: &dyn Fn(&Id) -> bool, load: Load) -> Result<Vec<Id>> {
    let mut out = Vec::new();
    let mut seen: std::collections::HashSet<Id> = std::collections::HashSet::new();
    for root in roots {
        // (tree, depth, children pushed already)
        let mut stack: Vec<(Id, usize, bool)> = vec![(*root, 0, false)];
        while let Some((id, depth, expanded)) = stack.pop() {
            if expanded {
                out.push(id);
                continue;
            }
            if stop(&id) || !seen.insert(id) {
                continue;
            }
            if depth > MAX_DEPTH {
                return Err(Error::Invalid(format!(
                    "tree {id} lies {depth} directories deep; at most {MAX_DEPTH} are followed"
                )));
            }
            let t = load(&id)?
                .ok_or_else(|| Error::NotFound(format!("tree {id} is not in this store")))?;
            stack.push((id, depth, true));
            // Reversed, so subtrees come out in entry order.
            for e in t.entries.iter().rev() {
                if e.kind == EntryKind::Dir {
                    stack.push((e.id, depth + 1, false));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Entry;
    use std::time::{Duration, Instant};

    fn dir(name: &[u8], t: &Tree) -> Entry {
        Entry {
            name: name.to_vec(),
            kind: EntryKind::Dir,
            mode: 0o755,
            id: t.id(),
            size: t.total_size(),
        }
    }

    fn file(name: &[u8], size: u64) -> Entry {
        Entry {
            name: name.to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            id: Id([1; 32]),
            size,
        }
    }

    /// T0 = {f}, T(k+1) = {a: Tk, b: Tk}: k+1 distinct trees, 2^k files.
    fn doubling(levels: usize) -> (Id, HashMap<Id, Tree>) {
        let mut trees = HashMap::new();
        let mut t = Tree {
            entries: vec![file(b"f", 3)],
        };
        for _ in 0..levels {
            trees.insert(t.id(), t.clone());
            t = Tree {
                entries: vec![dir(b"a", &t), dir(b"b", &t)],
            };
        }
        let root = t.id();
        trees.insert(root, t);
        (root, trees)
    }

    fn refuse(m: String) -> Error {
        Error::Refused(m)
    }

    #[test]
    fn identical_subtrees_are_counted_without_being_read_again() {
        let (root, trees) = doubling(10);
        let mut reads = 0;
        let mut load = |id: &Id| {
            reads += 1;
            Ok(trees.get(id).cloned())
        };
        let (t, all) = totals(&root, &mut load, &refuse).unwrap();
        assert_eq!(t.files, 1 << 10);
        assert_eq!(t.size, 3 << 10);
        assert_eq!(t.entries, (1 << 10) + (1 << 11) - 2);
        assert_eq!(all.len(), 11);
        assert_eq!(reads, 11, "each distinct tree read once");
    }

    #[test]
    fn a_dag_that_expands_past_the_limit_is_refused_at_once() {
        // 61 trees of a few hundred bytes expand to 2^60 files.
        let (root, trees) = doubling(60);
        let started = Instant::now();
        let mut load = |id: &Id| Ok(trees.get(id).cloned());
        let e = totals(&root, &mut load, &refuse).unwrap_err().to_string();
        assert!(e.contains("expands to more than"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_deep_chain_is_refused_not_followed_off_the_stack() {
        let mut trees = HashMap::new();
        let mut t = Tree {
            entries: vec![file(b"f", 1)],
        };
        for _ in 0..20_000 {
            trees.insert(t.id(), t.clone());
            t = Tree {
                entries: vec![dir(b"d", &t)],
            };
        }
        let root = t.id();
        trees.insert(root, t);
        let mut load = |id: &Id| Ok(trees.get(id).cloned());
        let e = totals(&root, &mut load, &refuse).unwrap_err().to_string();
        assert!(e.contains("directories deep"), "{e}");
        // Just within the cap is fine.
        let mut t = Tree {
            entries: vec![file(b"f", 1)],
        };
        let mut ok = HashMap::new();
        for _ in 0..MAX_DEPTH {
            ok.insert(t.id(), t.clone());
            t = Tree {
                entries: vec![dir(b"d", &t)],
            };
        }
        ok.insert(t.id(), t.clone());
        let mut load_ok = |id: &Id| Ok(ok.get(id).cloned());
        let (got, _) = totals(&t.id(), &mut load_ok, &refuse).unwrap();
        assert_eq!((got.height, got.files), (MAX_DEPTH, 1));
        let mut load = |id: &Id| Ok(trees.get(id).cloned());
        let e = post_order(&[root], &|_| false, &mut load).unwrap_err();
        assert!(e.to_string().contains("directories deep"), "{e}");
    }

    #[test]
    fn post_order_lists_each_distinct_tree_once_children_first() {
        let (root, trees) = doubling(40);
        let mut load = |id: &Id| Ok(trees.get(id).cloned());
        let order = post_order(&[root], &|_| false, &mut load).unwrap();
        assert_eq!(order.len(), 41);
        assert_eq!(order.last(), Some(&root));
        let pos: HashMap<Id, usize> = order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        for (id, t) in &trees {
            for e in &t.entries {
                if e.kind == EntryKind::Dir {
                    assert!(pos[&e.id] < pos[id], "a child comes before its parent");
                }
            }
        }
    }

    #[test]
    fn a_directory_whose_recorded_size_lies_is_refused() {
        let sub = Tree {
            entries: vec![file(b"f", 5)],
        };
        let mut lie = dir(b"d", &sub);
        lie.size = 4;
        let top = Tree { entries: vec![lie] };
        let trees: HashMap<Id, Tree> = [(sub.id(), sub), (top.id(), top.clone())].into();
        let mut load = |id: &Id| Ok(trees.get(id).cloned());
        let e = totals(&top.id(), &mut load, &refuse)
            .unwrap_err()
            .to_string();
        assert!(e.contains("records 4 bytes but holds 5"), "{e}");
    }
}
