//! The tree format (a directory) — defined here and nowhere else.
//!
//! ```text
//! tree  := "HTRE" version=1 u8 count u32 entry*          (little endian)
//! entry := kind u8 mode u16 size u64 id[32] name_len u8 name
//!   kind := 1 file | 2 directory | 3 symbolic link
//!   mode := 0o644 or 0o755 for a file (executable or not), 0o755 for a
//!           directory, 0o777 for a link — nothing else, so equal content
//!           under any umask has one id
//!   id   := file id (BLAKE3 of the content; a link's content is its target)
//!           or the tree id of the directory
//!   size := content bytes of a file or link; for a directory, the sum of
//!           its entries' sizes
//!   name := 1..=255 bytes, no '/', no NUL, not "." or ".."
//! ```
//!
//! Entries are sorted by name bytes, each name once. The id of a tree is
//! BLAKE3 of its encoding; [`Tree::decode`] accepts exactly the bytes
//! [`Tree::encode`] would write, so an id names one tree.

use super::ObjectError;
use crate::id::Id;

const MAGIC: &[u8; 4] = b"HTRE";
const VERSION: u8 = 1;
/// Most entries one directory may hold.
pub const MAX_ENTRIES: usize = 1 << 22;
const ENTRY_FIXED: usize = 1 + 2 + 8 + 32 + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
}

impl EntryKind {
    fn from_u8(b: u8) -> Option<EntryKind> {
        match b {
            1 => Some(EntryKind::File),
            2 => Some(EntryKind::Dir),
            3 => Some(EntryKind::Symlink),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u16,
    pub id: Id,
    pub size: u64,
}

impl Entry {
    pub fn file(name: Vec<u8>, id: Id, size: u64, executable: bool) -> Entry {
        let mode = if executable { 0o755 } else { 0o644 };
        Entry {
            name,
            kind: EntryKind::File,
            mode,
            id,
            size,
        }
    }
    pub fn dir(name: Vec<u8>, id: Id, size: u64) -> Entry {
        Entry {
            name,
            kind: EntryKind::Dir,
            mode: 0o755,
            id,
            size,
        }
    }
    pub fn symlink(name: Vec<u8>, id: Id, size: u64) -> Entry {
        Entry {
            name,
            kind: EntryKind::Symlink,
            mode: 0o777,
            id,
            size,
        }
    }
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

fn mode_ok(kind: EntryKind, mode: u16) -> bool {
    match kind {
        EntryKind::File => mode == 0o644 || mode == 0o755,
        EntryKind::Dir => mode == 0o755,
        EntryKind::Symlink => mode == 0o777,
    }
}

/// Checks one path component.
pub fn check_name(name: &[u8]) -> Result<(), ObjectError> {
    let why = if name.is_empty() {
        "an empty name"
    } else if name.len() > 255 {
        "a name longer than 255 bytes"
    } else if name == b"." || name == b".." {
        "the name `.` or `..`"
    } else if name.contains(&b'/') {
        "a name containing `/`"
    } else if name.contains(&0) {
        "a name containing NUL"
    } else {
        return Ok(());
    };
    Err(ObjectError(format!(
        "tree entry {:?} has {why}",
        String::from_utf8_lossy(name)
    )))
}

/// A directory: entries sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub entries: Vec<Entry>,
}

impl Tree {
    /// Builds a tree from entries in any order; refuses bad or repeated names.
    pub fn new(mut entries: Vec<Entry>) -> Result<Tree, ObjectError> {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let t = Tree { entries };
        t.check()?;
        Ok(t)
    }

    /// Sum of the entries' sizes (the size a parent records for this tree).
    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |s, e| s.saturating_add(e.size))
    }

    fn check(&self) -> Result<(), ObjectError> {
        if self.entries.len() > MAX_ENTRIES {
            return Err(ObjectError(format!(
                "a tree of {} entries exceeds the limit of {MAX_ENTRIES}",
                self.entries.len()
            )));
        }
        for (i, e) in self.entries.iter().enumerate() {
            check_name(&e.name)?;
            if !mode_ok(e.kind, e.mode) {
                return Err(ObjectError(format!(
                    "tree entry {:?}: mode {:o} is not valid for a {}",
                    e.name_lossy(),
                    e.mode,
                    e.kind.as_str()
                )));
            }
            if i > 0 && self.entries[i - 1].name >= e.name {
                return Err(ObjectError(if self.entries[i - 1].name == e.name {
                    format!("tree entry {:?} appears twice", e.name_lossy())
                } else {
                    format!("tree entries are not sorted at {:?}", e.name_lossy())
                }));
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let names: usize = self.entries.iter().map(|e| e.name.len()).sum();
        let mut b = Vec::with_capacity(9 + self.entries.len() * ENTRY_FIXED + names);
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            b.push(e.kind as u8);
            b.extend_from_slice(&e.mode.to_le_bytes());
            b.extend_from_slice(&e.size.to_le_bytes());
            b.extend_from_slice(&e.id.0);
            b.push(e.name.len() as u8);
            b.extend_from_slice(&e.name);
        }
        b
    }

    pub fn id(&self) -> Id {
        Id::of(&self.encode())
    }

    /// Decodes and validates; only canonical encodings are accepted.
    pub fn decode(b: &[u8]) -> Result<Tree, ObjectError> {
        let bad = |what: &str| ObjectError(format!("not a valid tree: {what}"));
        if b.len() < 9 || &b[..4] != MAGIC {
            return Err(bad("wrong magic"));
        }
        if b[4] != VERSION {
            return Err(bad("unknown version"));
        }
        let count = u32::from_le_bytes([b[5], b[6], b[7], b[8]]) as usize;
        if count > MAX_ENTRIES || count > (b.len() - 9) / ENTRY_FIXED {
            return Err(bad("entry count larger than the data"));
        }
        let mut entries = Vec::with_capacity(count);
        let mut at = 9;
        for _ in 0..count {
            let fixed = b
                .get(at..at + ENTRY_FIXED)
                .ok_or_else(|| bad("truncated"))?;
            let kind = EntryKind::from_u8(fixed[0]).ok_or_else(|| bad("unknown entry kind"))?;
            let mode = u16::from_le_bytes([fixed[1], fixed[2]]);
            let size = u64::from_le_bytes(fixed[3..11].try_into().map_err(|_| bad("size"))?);
            let id = Id::from_slice(&fixed[11..43]).ok_or_else(|| bad("id"))?;
            let nlen = fixed[43] as usize;
            at += ENTRY_FIXED;
            let name = b.get(at..at + nlen).ok_or_else(|| bad("truncated name"))?;
            at += nlen;
            entries.push(Entry {
                name: name.to_vec(),
                kind,
                mode,
                id,
                size,
            });
        }
        if at != b.len() {
            return Err(bad("trailing bytes"));
        }
        let t = Tree { entries };
        t.check()?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry_strategy() -> impl Strategy<Value = Entry> {
        (
            proptest::collection::vec(1u8..=255, 1..20),
            0u8..4,
            any::<[u8; 32]>(),
            any::<u64>(),
        )
            .prop_filter_map("valid name", |(name, k, id, size)| {
                if check_name(&name).is_err() {
                    return None;
                }
                let id = Id(id);
                Some(match k {
                    0 => Entry::file(name, id, size, false),
                    1 => Entry::file(name, id, size, true),
                    2 => Entry::dir(name, id, size),
                    _ => Entry::symlink(name, id, size),
                })
            })
    }

    proptest! {
        #[test]
        fn trees_round_trip(entries in proptest::collection::vec(entry_strategy(), 0..40)) {
            let mut entries = entries;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            entries.dedup_by(|a, b| a.name == b.name);
            let t = Tree::new(entries).unwrap();
            let enc = t.encode();
            prop_assert_eq!(Tree::decode(&enc).unwrap(), t);
        }

        #[test]
        fn any_change_to_an_encoding_is_another_tree_or_refused(
            entries in proptest::collection::vec(entry_strategy(), 1..10),
            at in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let mut entries = entries;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            entries.dedup_by(|a, b| a.name == b.name);
            let t = Tree::new(entries).unwrap();
            let mut enc = t.encode();
            let i = at.index(enc.len());
            enc[i] ^= xor;
            if let Ok(other) = Tree::decode(&enc) {
                prop_assert_ne!(&other, &t);
                prop_assert_eq!(other.encode(), enc);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Tree::decode(&b);
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for name in [&b""[..], b".", b"..", b"a/b", b"a\0b", &[b'x'; 256]] {
            let e = Entry::file(name.to_vec(), Id([1; 32]), 1, false);
            assert!(Tree::new(vec![e]).is_err(), "{name:?}");
        }
        let a = Entry::file(b"a".to_vec(), Id([1; 32]), 1, false);
        assert!(Tree::new(vec![a.clone(), a.clone()])
            .unwrap_err()
            .0
            .contains("twice"));
        let mut odd = a;
        odd.mode = 0o600;
        assert!(Tree::new(vec![odd]).is_err());
    }

    #[test]
    fn unsorted_encodings_are_refused() {
        let t = Tree::new(vec![
            Entry::file(b"a".to_vec(), Id([1; 32]), 1, false),
            Entry::file(b"b".to_vec(), Id([2; 32]), 2, false),
        ])
        .unwrap();
        let swapped = Tree {
            entries: vec![t.entries[1].clone(), t.entries[0].clone()],
        };
        assert!(Tree::decode(&swapped.encode()).is_err());
    }
}
