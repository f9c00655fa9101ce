//! A dataset's current content as a nested directory model, kept up to date
//! by scans and the watcher. Each directory caches the tree it last encoded
//! to; a change invalidates only the directories on its path, so building
//! the trees of a 100k-file dataset after one change re-encodes a handful
//! of directories, and with no change costs nothing.

use crate::id::Id;
use crate::objects::{Entry, EntryKind, ObjectError, Tree};
use std::collections::BTreeMap;

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { id: Id, size: u64, exec: bool },
    Symlink { id: Id, size: u64 },
    Dir(Dir),
}

/// What a directory encodes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Built {
    pub id: Id,
    pub size: u64,
    pub files: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dir {
    pub entries: BTreeMap<Vec<u8>, Node>,
    cached: Option<Built>,
    /// The cached tree (and so every tree below it) is in the store.
    stored: bool,
}

/// Splits a relative path (`a/b/c`) into its components.
pub fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|c| *c == b'/').filter(|c| !c.is_empty())
}

impl Dir {
    /// Puts `node` at `path`, creating directories on the way (replacing a
    /// file that stood where a directory is needed).
    pub fn set(&mut self, path: &[u8], node: Node) {
        let parts: Vec<&[u8]> = components(path).collect();
        let Some((last, dirs)) = parts.split_last() else {
            return;
        };
        let mut d = self;
        for p in dirs {
            d.cached = None;
            d.stored = false;
            let slot = d
                .entries
                .entry(p.to_vec())
                .or_insert_with(|| Node::Dir(Dir::default()));
            if !matches!(slot, Node::Dir(_)) {
                *slot = Node::Dir(Dir::default());
            }
            let Node::Dir(next) = slot else {
                unreachable!("made a directory above")
            };
            d = next;
        }
        d.cached = None;
        d.stored = false;
        d.entries.insert(last.to_vec(), node);
    }

    /// Removes what is at `path`; returns whether anything was there.
    pub fn remove(&mut self, path: &[u8]) -> bool {
        let parts: Vec<&[u8]> = components(path).collect();
        let Some((last, dirs)) = parts.split_last() else {
            return false;
        };
        fn walk(d: &mut Dir, dirs: &[&[u8]], last: &[u8]) -> bool {
            match dirs.split_first() {
                None => {
                    let removed = d.entries.remove(last).is_some();
                    if removed {
                        d.cached = None;
                        d.stored = false;
                    }
                    removed
                }
                Some((first, rest)) => match d.entries.get_mut(*first) {
                    Some(Node::Dir(next)) => {
                        let removed = walk(next, rest, last);
                        if removed {
                            d.cached = None;
                            d.stored = false;
                        }
                        removed
                    }
                    _ => false,
                },
            }
        }
        walk(self, dirs, last)
    }

    pub fn get(&self, path: &[u8]) -> Option<&Node> {
        let mut parts = components(path).peekable();
        let mut d = self;
        while let Some(p) = parts.next() {
            let n = d.entries.get(p)?;
            if parts.peek().is_none() {
                return Some(n);
            }
            match n {
                Node::Dir(next) => d = next,
                _ => return None,
            }
        }
        None
    }

    /// The tree this directory encodes to; the encodings of trees not yet
    /// marked stored are appended to `new` (id, encoding), children first.
    pub fn build(&mut self, new: &mut Vec<(Id, Vec<u8>)>) -> Result<Built, ObjectError> {
        if let (Some(b), true) = (self.cached, self.stored) {
            return Ok(b);
        }
        let mut entries = Vec::with_capacity(self.entries.len());
        let mut files = 0u64;
        for (name, n) in self.entries.iter_mut() {
            entries.push(match n {
                Node::File { id, size, exec } => {
                    files += 1;
                    Entry::file(name.clone(), *id, *size, *exec)
                }
                Node::Symlink { id, size } => {
                    files += 1;
                    Entry::symlink(name.clone(), *id, *size)
                }
                Node::Dir(d) => {
                    let b = d.build(new)?;
                    files += b.files;
                    Entry::dir(name.clone(), b.id, b.size)
                }
            });
        }
        let tree = Tree::new(entries)?;
        let enc = tree.encode();
        let built = Built {
            id: Id::of(&enc),
            size: tree.total_size(),
            files,
        };
        new.push((built.id, enc));
        self.cached = Some(built);
        Ok(built)
    }

    /// Marks every built tree stored (this root is a stored snapshot's tree,
    /// so all below it are stored).
    pub fn mark_all_stored(&mut self) {
        if self.stored || self.cached.is_none() {
            return;
        }
        for n in self.entries.values_mut() {
            if let Node::Dir(d) = n {
                d.mark_all_stored();
            }
        }
        self.stored = true;
    }

    /// Forgets which trees are stored (after a prune, which may have
    /// dropped some): the next snapshot checks them again.
    pub fn forget_stored(&mut self) {
        for n in self.entries.values_mut() {
            if let Node::Dir(d) = n {
                d.forget_stored();
            }
        }
        self.stored = false;
    }

    /// Marks the trees among `ids` as stored (after the store took them).
    pub fn mark_stored(&mut self, ids: &std::collections::HashSet<Id>) {
        if self.stored {
            return;
        }
        for n in self.entries.values_mut() {
            if let Node::Dir(d) = n {
                d.mark_stored(ids);
            }
        }
        let children_stored = self
            .entries
            .values()
            .all(|n| !matches!(n, Node::Dir(d) if !d.stored));
        if let Some(b) = self.cached {
            self.stored = children_stored && ids.contains(&b.id);
        }
    }

    /// Every file and link below this directory: (relative path, node).
    pub fn files(&self) -> Vec<(Vec<u8>, &Node)> {
        let mut out = Vec::new();
        fn walk<'a>(d: &'a Dir, prefix: &mut Vec<u8>, out: &mut Vec<(Vec<u8>, &'a Node)>) {
            for (name, n) in &d.entries {
                let len = prefix.len();
                if !prefix.is_empty() {
                    prefix.push(b'/');
                }
                prefix.extend_from_slice(name);
                match n {
                    Node::Dir(sub) => walk(sub, prefix, out),
                    _ => out.push((prefix.clone(), n)),
                }
                prefix.truncate(len);
            }
        }
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// Every directory below this one that holds nothing (a snapshot
    /// records them; a checkout recreates them), by path.
    pub fn empty_dirs(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut stack: Vec<(Vec<u8>, &Dir)> = vec![(Vec::new(), self)];
        while let Some((prefix, d)) = stack.pop() {
            for (name, n) in &d.entries {
                if let Node::Dir(sub) = n {
                    let mut p = prefix.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(name);
                    if sub.entries.is_empty() {
                        out.push(p);
                    } else {
                        stack.push((p, sub));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// The directory model of a stored tree and everything below it, read
    /// through `load` (which checks each tree against its id). Sizes are
    /// checked: a directory entry's size must be its tree's total.
    pub fn from_tree(
        id: &Id,
        load: &mut dyn FnMut(&Id) -> crate::Result<Tree>,
    ) -> crate::Result<(Dir, Built)> {
        let tree = load(id)?;
        let mut d = Dir::default();
        let mut files = 0u64;
        for e in &tree.entries {
            let node = match e.kind {
                EntryKind::File => {
                    files += 1;
                    Node::File {
                        id: e.id,
                        size: e.size,
                        exec: e.mode == 0o755,
                    }
                }
                EntryKind::Symlink => {
                    files += 1;
                    Node::Symlink {
                        id: e.id,
                        size: e.size,
                    }
                }
                EntryKind::Dir => {
                    let (sub, b) = Dir::from_tree(&e.id, load)?;
                    if b.size != e.size {
                        return Err(crate::Error::Refused(format!(
                            "tree {id}: directory {:?} records size {} but its tree {} holds {}",
                            e.name_lossy(),
                            e.size,
                            e.id,
                            b.size
                        )));
                    }
                    files += b.files;
                    Node::Dir(sub)
                }
            };
            d.entries.insert(e.name.clone(), node);
        }
        let built = Built {
            id: *id,
            size: tree.total_size(),
            files,
        };
        d.cached = Some(built);
        d.stored = true;
        Ok((d, built))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(b: u8) -> Node {
        Node::File {
            id: Id([b; 32]),
            size: b as u64,
            exec: false,
        }
    }

    #[test]
    fn build_is_incremental_and_deterministic() {
        let mut d = Dir::default();
        d.set(b"a/b/c.txt", file(1));
        d.set(b"a/x", file(2));
        d.set(b"top", file(3));
        let mut new = Vec::new();
        let first = d.build(&mut new).unwrap();
        assert_eq!(new.len(), 3);
        assert_eq!(first.files, 3);
        assert_eq!(first.size, 6);
        new.clear();
        assert_eq!(d.build(&mut new).unwrap(), first);
        assert_eq!(new.len(), 3, "not stored yet: encoded again");
        d.mark_stored(&new.iter().map(|n| n.0).collect());
        new.clear();
        assert_eq!(d.build(&mut new).unwrap(), first);
        assert!(new.is_empty(), "nothing changed, nothing encoded");
        d.set(b"a/x", file(4));
        let second = d.build(&mut new).unwrap();
        assert_ne!(second.id, first.id);
        assert_eq!(new.len(), 2, "only a/ and the root change");
        d.set(b"a/x", file(2));
        new.clear();
        assert_eq!(d.build(&mut new).unwrap(), first);
        // The same content in another order is the same tree.
        let mut e = Dir::default();
        e.set(b"top", file(3));
        e.set(b"a/x", file(2));
        e.set(b"a/b/c.txt", file(1));
        assert_eq!(e.build(&mut Vec::new()).unwrap(), first);
    }

    #[test]
    fn remove_and_reload() {
        let mut d = Dir::default();
        d.set(b"a/b", file(1));
        d.set(b"c", file(2));
        let mut new = Vec::new();
        let b = d.build(&mut new).unwrap();
        let trees: std::collections::HashMap<Id, Vec<u8>> = new.into_iter().collect();
        let (mut back, bb) =
            Dir::from_tree(&b.id, &mut |id| Ok(Tree::decode(&trees[id]).unwrap())).unwrap();
        assert_eq!(bb, b);
        assert_eq!(back.files().len(), 2);
        assert!(back.remove(b"a/b"));
        assert!(!back.remove(b"a/b"));
        assert!(back.get(b"c").is_some());
        assert_ne!(back.build(&mut Vec::new()).unwrap().id, b.id);
    }
}
