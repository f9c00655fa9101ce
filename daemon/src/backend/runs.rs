//! Telling readers that run through a pack (a pull, a verify) from random
//! ones, for a backend whose reads are requests to a server far away: a
//! run is worth reading in whole blocks, and ahead of the reader.
//!
//! Part of `backend`; no imports from the rest of the crate.

/// Sequential reads fetch whole aligned blocks of this size.
pub const BLOCK: u64 = 4 << 20;

/// A read this close to the one before it in the same pack counts as
/// running through the pack (a pull reads a version's frames and their
/// delta bases, mostly forward, not strictly in order).
pub(super) const NEAR: u64 = 4 * BLOCK;
/// Blocks fetched ahead of a sequential reader.
pub(super) const READ_AHEAD: u64 = 2;
/// Readers told apart per pack (several pullers, or one puller's streams
/// far apart): each keeps its own run through the pack.
const CURSORS: usize = 8;

/// One reader's run through a pack: where its last read ended, how many
/// reads in a row were near the one before, the first block not yet asked
/// for ahead of it, and when it last read.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    end: u64,
    streak: u32,
    ahead: u64,
    used: u64,
}

/// The readers running through one pack, told apart by where they are.
#[derive(Debug, Default)]
pub(super) struct Runs(Vec<Cursor>);

impl Runs {
    /// Whether a read of `len` bytes at `offset` continues a reader's run
    /// (each read within [`NEAR`] of where that reader's last one ended,
    /// twice or more): then whole blocks are worth reading, and reading
    /// ahead, and the answer is the blocks to fetch ahead, each asked for
    /// once per run. A read near no reader starts a run, replacing the
    /// reader idle longest once [`CURSORS`] are tracked.
    pub(super) fn read(
        &mut self,
        offset: u64,
        len: usize,
        tick: u64,
    ) -> Option<std::ops::Range<u64>> {
        let end = offset + len as u64;
        let near = self
            .0
            .iter_mut()
            .filter(|c| offset.abs_diff(c.end) <= NEAR)
            .min_by_key(|c| offset.abs_diff(c.end));
        let Some(c) = near else {
            let fresh = Cursor {
                end,
                streak: 0,
                ahead: 0,
                used: tick,
            };
            if self.0.len() < CURSORS {
                self.0.push(fresh);
            } else if let Some(idle) = self.0.iter_mut().min_by_key(|c| c.used) {
                *idle = fresh;
            }
            return None;
        };
        c.streak = c.streak.saturating_add(1);
        c.end = c.end.max(end);
        c.used = tick;
        if c.streak < 2 {
            return None;
        }
        let last = (end.max(1) - 1) / BLOCK;
        let from = c.ahead.max(last + 1);
        c.ahead = c.ahead.max(last + 1 + READ_AHEAD);
        Some(from..c.ahead)
    }
}

/// Bytes `[offset, offset + len)` gathered from the aligned [`BLOCK`]s
/// that hold them (`block(k)` gives block k, or `None`/an error to stop;
/// a block too short to hold its part gives `None`):
/// a slice of one block when a single block holds them all, no copy.
pub(super) fn gather<E>(
    offset: u64,
    len: usize,
    mut block: impl FnMut(u64) -> Result<Option<bytes::Bytes>, E>,
) -> Result<Option<bytes::Bytes>, E> {
    let end = offset + len as u64;
    let (first, last) = (offset / BLOCK, (end.max(1) - 1) / BLOCK);
    if first == last {
        let from = (offset - first * BLOCK) as usize;
        let b = block(first)?.filter(|b| b.len() >= from + len);
        return Ok(b.map(|b| b.slice(from..from + len)));
    }
    let mut out = Vec::with_capacity(len);
    for k in first..=last {
        let Some(b) = block(k)? else { return Ok(None) };
        let start = k * BLOCK;
        let from = offset.saturating_sub(start) as usize;
        let Some(piece) = b.get(from..((end - start) as usize).min(b.len())) else {
            return Ok(None);
        };
        out.extend_from_slice(piece);
    }
    Ok(Some(out.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads of `len` bytes from `from`, `n` of them back to back.
    fn run(
        r: &mut Runs,
        tick: &mut u64,
        from: u64,
        len: usize,
        n: usize,
    ) -> Vec<Option<std::ops::Range<u64>>> {
        (0..n)
            .map(|i| {
                *tick += 1;
                r.read(from + (i * len) as u64, len, *tick)
            })
            .collect()
    }

    #[test]
    fn a_reader_running_through_a_pack_reads_ahead_each_block_once() {
        let (mut r, mut t) = (Runs::default(), 0);
        let got = run(&mut r, &mut t, 0, 1 << 20, 12);
        assert_eq!(
            got[..2],
            [None, None],
            "two reads in a row before a run counts"
        );
        assert_eq!(got[2], Some(1..3));
        let mut asked: Vec<u64> = got.into_iter().flatten().flatten().collect();
        let n = asked.len();
        asked.dedup();
        assert_eq!(asked.len(), n, "a block is asked for ahead once");
        assert_eq!(asked, (1..=4).collect::<Vec<_>>());
    }

    #[test]
    fn readers_far_apart_in_one_pack_each_keep_their_run() {
        // Two pullers of one version, 100 MiB apart, their reads interleaved:
        // with one run per pack each would break the other's.
        let (mut r, mut t) = (Runs::default(), 0);
        let far = 100 << 20;
        let mut seq = [0, 0];
        for i in 0..10u64 {
            for (k, base) in [0u64, far].into_iter().enumerate() {
                t += 1;
                if r.read(base + i * (1 << 20), 1 << 20, t).is_some() {
                    seq[k] += 1;
                }
            }
        }
        assert_eq!(seq, [8, 8]);
    }

    #[test]
    fn a_random_reader_never_reads_ahead_and_runs_are_bounded() {
        let (mut r, mut t) = (Runs::default(), 0);
        for i in 0..100u64 {
            t += 1;
            assert_eq!(r.read(i * 3 * NEAR, 4096, t), None);
        }
        assert!(r.0.len() <= CURSORS);
    }

    #[test]
    fn a_range_is_gathered_from_the_blocks_holding_it() {
        let pack: Vec<u8> = (0..3 * BLOCK as usize).map(|i| (i % 251) as u8).collect();
        let block = |k: u64| -> Result<Option<bytes::Bytes>, ()> {
            let s = (k * BLOCK) as usize;
            Ok(Some(bytes::Bytes::copy_from_slice(
                &pack[s..s + BLOCK as usize],
            )))
        };
        for (off, len) in [(10, 100), (BLOCK - 5, 10), (BLOCK / 2, 2 * BLOCK as usize)] {
            let got = gather(off, len, block).unwrap().unwrap();
            assert_eq!(&got[..], &pack[off as usize..off as usize + len]);
        }
        // A block that is not there, or too short: nothing.
        let none = gather::<()>(BLOCK - 5, 10, |k| Ok((k == 0).then(bytes::Bytes::new)));
        assert_eq!(none, Ok(None));
    }
}
