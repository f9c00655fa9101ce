//! Path history: the previous version of the file being ingested (the same
//! path's last `hoard add`, the same work-tree path's last clean through
//! git's filter, the same path in a dataset's last snapshot — all found
//! through the stat cache), used as the first delta bases for the new
//! version's chunks. Git's `pack-objects` does the same when it picks delta
//! bases by path and size.
//!
//! Content-defined chunking aligns the two versions: chunks they share
//! (found by id) are anchors that say how far the old file's bytes have
//! moved; a new chunk between anchors resembles the old bytes at the same
//! place, shifted by the last anchor's displacement (or, before the first
//! anchor, scaled by the two sizes). The old chunks over that region, plus
//! [`MARGIN`] either side, are the new chunk's candidate bases; `delta`
//! compresses a frame against them with zstd's long-distance matching, as
//! `zstd --patch-from` does for whole files.
//!
//! Floor 2 (formats): may import `manifest`, `id`; no store, no sync.

use crate::id::Id;
use crate::manifest::Manifest;
use std::collections::HashMap;

/// Old bytes taken as candidates on each side of the aligned region: room
/// for insertions and deletions the anchors have not seen yet.
pub const MARGIN: u64 = 256 << 10;

/// The previous version of a file, by offset.
#[derive(Debug)]
pub struct History {
    chunks: Vec<(Id, u32)>,
    /// Offset of each chunk in the old file.
    starts: Vec<u64>,
    /// Where each old chunk id first occurs.
    at: HashMap<Id, u64>,
    size: u64,
}

impl History {
    pub fn of(m: Manifest) -> History {
        let mut starts = Vec::with_capacity(m.chunks.len());
        let mut at = HashMap::with_capacity(m.chunks.len());
        let mut off = 0u64;
        for (id, len) in &m.chunks {
            starts.push(off);
            at.entry(*id).or_insert(off);
            off += *len as u64;
        }
        History {
            chunks: m.chunks,
            starts,
            at,
            size: off,
        }
    }

    /// The old chunks overlapping `[from, to)` of the old file, in order.
    fn overlapping(&self, from: u64, to: u64) -> &[(Id, u32)] {
        if self.chunks.is_empty() || from >= to {
            return &[];
        }
        // The chunk holding `from`, then every one starting before `to`.
        let first = self
            .starts
            .partition_point(|&s| s <= from)
            .saturating_sub(1);
        let last = self.starts.partition_point(|&s| s < to);
        &self.chunks[first..last.max(first)]
    }
}

/// Follows one new version through its chunks, aligned to its history.
#[derive(Debug)]
pub struct Aligner {
    history: History,
    /// The new file's size, when known before it is read.
    new_size: Option<u64>,
    /// Bytes of the new file seen so far.
    pos: u64,
    /// Old offset minus new offset at the last anchor, once there is one.
    shift: Option<i64>,
}

impl Aligner {
    pub fn new(history: History, new_size: Option<u64>) -> Self {
        Aligner {
            history,
            new_size,
            pos: 0,
            shift: None,
        }
    }

    /// Takes the next chunk of the new file; returns, for a chunk the
    /// store lacks (`new`), the old chunks it most likely resembles.
    pub fn next(&mut self, id: &Id, len: u32, new: bool) -> &[(Id, u32)] {
        let at = self.pos;
        self.pos += len as u64;
        if let Some(&old) = self.history.at.get(id) {
            self.shift = Some(old as i64 - at as i64);
            return &[];
        }
        if !new {
            return &[];
        }
        let old_at = match (self.shift, self.new_size) {
            (Some(s), _) => at as i64 + s,
            (None, Some(n)) if n > 0 => (at as u128 * self.history.size as u128 / n as u128) as i64,
            _ => at as i64,
        };
        let from = (old_at - MARGIN as i64).max(0) as u64;
        let to = (old_at + len as i64 + MARGIN as i64).max(0) as u64;
        self.history.overlapping(from, to.min(self.history.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    fn history(lens: &[u32]) -> History {
        History::of(Manifest {
            size: lens.iter().map(|l| *l as u64).sum(),
            chunks: lens
                .iter()
                .enumerate()
                .map(|(i, l)| (id(i as u8), *l))
                .collect(),
        })
    }

    #[test]
    fn a_new_chunk_is_matched_to_the_old_bytes_at_the_same_place() {
        // 40 old chunks of 64 KiB; the new file replaces chunk 20.
        let h = history(&[64 << 10; 40]);
        let mut a = Aligner::new(h, Some(40 * (64 << 10)));
        for i in 0..20 {
            assert!(a.next(&id(i), 64 << 10, false).is_empty());
        }
        let got: Vec<Id> = a
            .next(&id(200), 64 << 10, true)
            .iter()
            .map(|c| c.0)
            .collect();
        // 256 KiB each side: old chunks 16..=24.
        assert_eq!(got, (16..=24).map(id).collect::<Vec<_>>());
    }

    #[test]
    fn anchors_follow_an_insertion() {
        // The new file starts with 1 MiB inserted, then the old chunks.
        let h = history(&[64 << 10; 40]);
        let mut a = Aligner::new(h, None);
        for k in 0..16 {
            a.next(&id(100 + k), 64 << 10, true);
        }
        a.next(&id(0), 64 << 10, false); // anchor: old 0 is new 1 MiB
        let got: Vec<Id> = a
            .next(&id(150), 64 << 10, true)
            .iter()
            .map(|c| c.0)
            .collect();
        // Aligned to old chunk 1, ± 256 KiB: chunks 0..=5.
        assert_eq!(got, (0..=5).map(id).collect::<Vec<_>>());
    }

    #[test]
    fn without_anchors_the_sizes_scale_the_offset() {
        let h = history(&[64 << 10; 40]);
        // The new file is twice as long: new 2 MiB is old 1 MiB (chunk 16).
        let mut a = Aligner::new(h, Some(80 * (64 << 10)));
        for k in 0..32 {
            a.next(&id(100 + k), 64 << 10, true);
        }
        let got: Vec<Id> = a
            .next(&id(150), 64 << 10, true)
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(got, (12..=20).map(id).collect::<Vec<_>>());
    }

    #[test]
    fn past_the_old_end_and_empty_histories_give_nothing() {
        let h = history(&[64 << 10; 4]);
        let mut a = Aligner::new(h, None);
        for k in 0..20 {
            a.next(&id(100 + k), 64 << 10, true);
        }
        assert!(a.next(&id(150), 64 << 10, true).is_empty());
        let empty = history(&[]);
        assert!(Aligner::new(empty, None).next(&id(1), 10, true).is_empty());
    }
}
