//! The snapshot format (one recorded version of a dataset) — defined here
//! and nowhere else.
//!
//! ```text
//! snapshot := "HSNP" version=1 u8
//!             tree id[32] size u64 files u64 time_ns i64
//!             dataset str8 parents ids derived ids message str32 meta
//!   str8  := len u8 bytes (UTF-8)        str32 := len u32 bytes (UTF-8)
//!   ids   := count u16 id[32]*           (distinct, in the order given)
//!   meta  := count u16 (key str8, value str32)*   keys sorted, each once
//! ```
//!
//! `parents` are the dataset's previous snapshots (its history); `derived`
//! are snapshots, of any dataset, this one was made from (its lineage).
//! The id is BLAKE3 of the encoding; only canonical encodings decode.

use super::{check_dataset_name, ObjectError};
use crate::id::Id;
use std::collections::BTreeMap;

const MAGIC: &[u8; 4] = b"HSNP";
const VERSION: u8 = 1;
pub const MAX_MESSAGE: usize = 64 << 10;
pub const MAX_LINKS: usize = 256;
pub const MAX_META: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub tree: Id,
    /// Bytes and files under the tree.
    pub size: u64,
    pub files: u64,
    pub time_ns: i64,
    pub dataset: String,
    pub parents: Vec<Id>,
    pub derived: Vec<Id>,
    pub message: String,
    pub meta: BTreeMap<String, String>,
}

impl Snapshot {
    pub fn check(&self) -> Result<(), ObjectError> {
        check_dataset_name(&self.dataset)?;
        if self.message.len() > MAX_MESSAGE {
            return Err(ObjectError(format!(
                "snapshot message of {} bytes exceeds {MAX_MESSAGE}",
                self.message.len()
            )));
        }
        for (what, ids) in [("parents", &self.parents), ("derived-from", &self.derived)] {
            if ids.len() > MAX_LINKS {
                return Err(ObjectError(format!(
                    "snapshot has {} {what} links; at most {MAX_LINKS}",
                    ids.len()
                )));
            }
            let mut seen = std::collections::HashSet::new();
            if !ids.iter().all(|i| seen.insert(*i)) {
                return Err(ObjectError(format!(
                    "snapshot names a {what} snapshot twice"
                )));
            }
        }
        if self.meta.len() > MAX_META {
            return Err(ObjectError(format!(
                "snapshot has {} metadata keys; at most {MAX_META}",
                self.meta.len()
            )));
        }
        for (k, v) in &self.meta {
            if k.is_empty() || k.len() > 255 || v.len() > MAX_MESSAGE {
                return Err(ObjectError(format!(
                    "snapshot metadata key {k:?}: keys are 1..=255 bytes, values at most {MAX_MESSAGE}"
                )));
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(128 + self.message.len());
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.extend_from_slice(&self.tree.0);
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&self.files.to_le_bytes());
        b.extend_from_slice(&self.time_ns.to_le_bytes());
        b.push(self.dataset.len() as u8);
        b.extend_from_slice(self.dataset.as_bytes());
        for ids in [&self.parents, &self.derived] {
            b.extend_from_slice(&(ids.len() as u16).to_le_bytes());
            for id in ids {
                b.extend_from_slice(&id.0);
            }
        }
        b.extend_from_slice(&(self.message.len() as u32).to_le_bytes());
        b.extend_from_slice(self.message.as_bytes());
        b.extend_from_slice(&(self.meta.len() as u16).to_le_bytes());
        for (k, v) in &self.meta {
            b.push(k.len() as u8);
            b.extend_from_slice(k.as_bytes());
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(v.as_bytes());
        }
        b
    }

    pub fn id(&self) -> Id {
        Id::of(&self.encode())
    }

    pub fn decode(b: &[u8]) -> Result<Snapshot, ObjectError> {
        let mut r = Reader { b, at: 0 };
        if r.take(4)? != MAGIC {
            return Err(ObjectError("not a valid snapshot: wrong magic".into()));
        }
        if r.take(1)?[0] != VERSION {
            return Err(ObjectError("not a valid snapshot: unknown version".into()));
        }
        let tree = r.id()?;
        let size = r.u64()?;
        let files = r.u64()?;
        let time_ns = r.u64()? as i64;
        let n = r.take(1)?[0] as usize;
        let dataset = r.string(n)?;
        let mut links = [Vec::new(), Vec::new()];
        for l in &mut links {
            let n = r.u16()? as usize;
            for _ in 0..n {
                l.push(r.id()?);
            }
        }
        let [parents, derived] = links;
        let n = r.u32()? as usize;
        let message = r.string(n)?;
        let count = r.u16()? as usize;
        let mut meta = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..count {
            let n = r.take(1)?[0] as usize;
            let k = r.string(n)?;
            let n = r.u32()? as usize;
            let v = r.string(n)?;
            if last.as_ref().is_some_and(|l| *l >= k) {
                return Err(ObjectError(
                    "not a valid snapshot: metadata keys out of order or repeated".into(),
                ));
            }
            last = Some(k.clone());
            meta.insert(k, v);
        }
        if r.at != b.len() {
            return Err(ObjectError("not a valid snapshot: trailing bytes".into()));
        }
        let s = Snapshot {
            tree,
            size,
            files,
            time_ns,
            dataset,
            parents,
            derived,
            message,
            meta,
        };
        s.check()?;
        Ok(s)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ObjectError> {
        let s = self
            .b
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| ObjectError("not a valid snapshot: truncated".into()))?;
        self.at += n;
        Ok(s)
    }
    fn id(&mut self) -> Result<Id, ObjectError> {
        Id::from_slice(self.take(32)?).ok_or_else(|| ObjectError("bad id".into()))
    }
    fn u16(&mut self) -> Result<u16, ObjectError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, ObjectError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, ObjectError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self, n: usize) -> Result<String, ObjectError> {
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| ObjectError("not a valid snapshot: text is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn snapshots_round_trip(
            tree in any::<[u8; 32]>(), size in any::<u64>(), files in any::<u64>(), t in any::<i64>(),
            parents in proptest::collection::hash_set(any::<[u8; 32]>(), 0..3),
            derived in proptest::collection::hash_set(any::<[u8; 32]>(), 0..3),
            message in ".{0,40}",
            meta in proptest::collection::btree_map("[a-z]{1,8}", ".{0,20}", 0..4),
        ) {
            let s = Snapshot {
                tree: Id(tree), size, files, time_ns: t, dataset: "survey".into(),
                parents: parents.into_iter().map(Id).collect(),
                derived: derived.into_iter().map(Id).collect(),
                message, meta,
            };
            let enc = s.encode();
            prop_assert_eq!(Snapshot::decode(&enc).unwrap(), s);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Snapshot::decode(&b);
        }
    }

    #[test]
    fn bad_dataset_names_and_repeats_are_refused() {
        let mut s = Snapshot {
            tree: Id([1; 32]),
            size: 0,
            files: 0,
            time_ns: 0,
            dataset: "../x".into(),
            parents: vec![],
            derived: vec![],
            message: String::new(),
            meta: BTreeMap::new(),
        };
        assert!(Snapshot::decode(&s.encode()).is_err());
        s.dataset = "ok".into();
        s.parents = vec![Id([2; 32]), Id([2; 32])];
        assert!(Snapshot::decode(&s.encode()).is_err());
    }
}
