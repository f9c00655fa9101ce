//! Content-defined chunking: FastCDC v2020 (normalization level 1) with the
//! store's fixed parameters, and BLAKE3 of every chunk and of the whole file
//! from one read of the data.
//!
//! Data is read in large blocks (FIELD-NOTES: `StreamCDC` memmoves per chunk);
//! the bytes after the last cut of a block are carried into the next one. The
//! cut of block n+1 runs on one core while block n's chunk and file hashes run
//! on the other, so a big file keeps both cores busy while memory stays at a
//! few blocks whatever the file's size.
//!
//! Floor 1 (formats): may import `id` only.

use crate::id::Id;
use fastcdc::v2020::FastCDC;
use std::io::{self, Read};

/// Store-wide chunking parameters, fixed when a store is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkParams {
    /// min = avg/4, max = avg×4, as DESIGN.md fixes.
    pub fn with_avg(avg: u32) -> ChunkParams {
        ChunkParams {
            min: avg / 4,
            avg,
            max: avg * 4,
        }
    }

    /// Checks the bounds FastCDC accepts (it panics outside them).
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::*;
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max
            && self.avg.is_power_of_two();
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid chunk parameters min={} avg={} max={}: avg must be a power of two in {}..={}, min ≤ avg ≤ max",
                self.min, self.avg, self.max, AVERAGE_MIN, AVERAGE_MAX
            ))
        }
    }
}

/// One chunk of a block: where it lies in [`Block::data`] and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub offset: usize,
    pub len: usize,
    pub id: Id,
}

/// A run of whole chunks read from a file.
pub struct Block {
    pub data: Vec<u8>,
    pub chunks: Vec<Cut>,
}

/// Size of one read block. Large enough to amortise the per-block work,
/// small enough that a few in flight stay well inside the daemon's memory goal.
pub const BLOCK_SIZE: usize = 8 << 20;

/// Cuts `reader` into chunks, handing each block (with chunk ids) to `sink`
/// in order, and returns the BLAKE3 of everything read and its length.
/// `size_hint` (the file's size when known, else 0) keeps buffers for small
/// files small.
pub fn chunk_stream<R: Read + Send>(
    mut reader: R,
    size_hint: u64,
    params: ChunkParams,
    mut sink: impl FnMut(Block) -> io::Result<()> + Send,
) -> io::Result<(Id, u64)> {
    let mut file_hash = blake3::Hasher::new();
    let mut total = 0u64;
    let mut carry: Vec<u8> = Vec::new();
    let mut eof = false;

    // Fill the next block: the carried tail plus fresh bytes.
    let mut read_so_far = 0u64;
    let mut fill = |carry: &mut Vec<u8>, eof: &mut bool| -> io::Result<Vec<u8>> {
        let mut buf = std::mem::take(carry);
        // One byte past the expected end, so EOF is seen without another block.
        let expected = size_hint.saturating_sub(read_so_far);
        let fresh = if expected > 0 {
            (expected as usize).saturating_add(1).min(BLOCK_SIZE)
        } else {
            BLOCK_SIZE
        };
        // Read into spare capacity: no zero-filling of the block first.
        buf.reserve(fresh);
        // (read_to_end retries interrupted reads itself.)
        let n = (&mut reader).take(fresh as u64).read_to_end(&mut buf)?;
        if n < fresh {
            *eof = true;
        }
        read_so_far += n as u64;
        Ok(buf)
    };

    let mut buf = fill(&mut carry, &mut eof)?;
    let mut cuts = cut_block(&buf, params, eof);
    // The previous block, handed to the sink while this one is hashed.
    let mut prev: Option<Block> = None;
    loop {
        let consumed: usize = cuts.iter().map(|c| c.1).sum();
        let done = eof && consumed == buf.len();
        // Next block's bytes: the tail after the last whole chunk.
        carry.extend_from_slice(&buf[consumed..]);
        buf.truncate(consumed);
        // Three things at once: this block's file hash and chunk ids; the
        // next block's read and cut; the previous block's sink.
        let (hashed, (next, sunk)) = rayon::join(
            || {
                file_hash.update(&buf);
                hash_block(&buf, &cuts)
            },
            || {
                rayon::join(
                    || -> io::Result<Option<NextBlock>> {
                        if done {
                            return Ok(None);
                        }
                        let mut e = eof;
                        let b = fill(&mut carry, &mut e)?;
                        let c = cut_block(&b, params, e);
                        Ok(Some((b, c, e)))
                    },
                    || prev.take().map_or(Ok(()), &mut sink),
                )
            },
        );
        sunk?;
        total += buf.len() as u64;
        if !hashed.is_empty() {
            prev = Some(Block {
                data: std::mem::take(&mut buf),
                chunks: hashed,
            });
        }
        match next? {
            None => break,
            Some((b, c, e)) => {
                buf = b;
                cuts = c;
                eof = e;
            }
        }
    }
    if let Some(b) = prev {
        sink(b)?;
    }
    Ok((file_hash.finalize().into(), total))
}

/// A read block, its cut points, and whether the input ended.
type NextBlock = (Vec<u8>, Vec<(usize, usize)>, bool);

/// Cut points of `buf`; unless `eof`, the final piece (cut only because the
/// data ended) is left out so it can be cut again with the following bytes.
/// Cuts a whole file that is already in memory, on the calling thread
/// only: for small files, where handing blocks between threads costs more
/// than the work. Same chunks and ids as [`chunk_stream`]; the file's own
/// id is the caller's (`Id::of(&data)`).
pub fn chunk_buffer(data: Vec<u8>, params: ChunkParams) -> Block {
    let chunks = cut_block(&data, params, true)
        .into_iter()
        .map(|(offset, len)| Cut {
            offset,
            len,
            id: Id::of(&data[offset..offset + len]),
        })
        .collect();
    Block { data, chunks }
}

fn cut_block(buf: &[u8], p: ChunkParams, eof: bool) -> Vec<(usize, usize)> {
    if buf.is_empty() {
        return Vec::new();
    }
    let mut cuts: Vec<(usize, usize)> = FastCDC::new(buf, p.min, p.avg, p.max)
        .map(|c| (c.offset, c.length))
        .collect();
    if !eof {
        cuts.pop();
    }
    cuts
}

fn hash_block(buf: &[u8], cuts: &[(usize, usize)]) -> Vec<Cut> {
    use rayon::prelude::*;
    cuts.par_iter()
        .with_min_len(16)
        .map(|&(offset, len)| Cut {
            offset,
            len,
            id: Id::of(&buf[offset..offset + len]),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: ChunkParams = ChunkParams {
        min: 1024,
        avg: 4096,
        max: 16384,
    };

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks_of(data: &[u8], p: ChunkParams) -> (Vec<(Id, usize)>, Id, u64) {
        let mut out = Vec::new();
        let (id, n) = chunk_stream(data, data.len() as u64, p, |b| {
            for c in &b.chunks {
                assert_eq!(Id::of(&b.data[c.offset..c.offset + c.len]), c.id);
                out.push((c.id, c.len));
            }
            Ok(())
        })
        .unwrap();
        (out, id, n)
    }

    #[test]
    fn streaming_matches_one_shot_fastcdc_across_blocks() {
        // Larger than several blocks so carries are exercised.
        let data = pseudo_random(3 * BLOCK_SIZE + 12345, 7);
        let p = ChunkParams::with_avg(16384);
        let (streamed, file, n) = chunks_of(&data, p);
        let direct: Vec<(Id, usize)> = FastCDC::new(&data, p.min, p.avg, p.max)
            .map(|c| (Id::of(&data[c.offset..c.offset + c.length]), c.length))
            .collect();
        assert_eq!(streamed, direct);
        assert_eq!(file, Id::of(&data));
        assert_eq!(n, data.len() as u64);
    }

    #[test]
    fn in_memory_chunking_matches_streaming() {
        let p = ChunkParams::with_avg(4096);
        for (len, seed) in [(0, 1), (1, 2), (1000, 3), (70_000, 4), (1 << 20, 5)] {
            let data = pseudo_random(len, seed);
            let (streamed, file, _) = chunks_of(&data, p);
            let block = chunk_buffer(data.clone(), p);
            let id = Id::of(&data);
            let direct: Vec<(Id, usize)> = block.chunks.iter().map(|c| (c.id, c.len)).collect();
            assert_eq!(direct, streamed, "len {len}");
            assert_eq!(id, file);
            assert_eq!(block.data, data);
        }
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let (c, id, n) = chunks_of(&[], P);
        assert!(c.is_empty());
        assert_eq!(n, 0);
        assert_eq!(id, Id::of(b""));
    }

    #[test]
    fn params_validation() {
        assert!(ChunkParams::with_avg(32768).validate().is_ok());
        assert!(ChunkParams::with_avg(3000).validate().is_err());
        assert!(ChunkParams {
            min: 10,
            avg: 4096,
            max: 1 << 20
        }
        .validate()
        .is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// An insertion only disturbs the chunks around it: boundaries
        /// re-synchronise, so most chunks are shared before and after.
        #[test]
        fn boundaries_resynchronise_after_insertion(
            seed in any::<u64>(),
            at in 0usize..200_000,
            ins in proptest::collection::vec(any::<u8>(), 1..5000),
        ) {
            let base = pseudo_random(256 * 1024, seed);
            let at = at.min(base.len());
            let mut edited = base[..at].to_vec();
            edited.extend_from_slice(&ins);
            edited.extend_from_slice(&base[at..]);
            let (a, _, _) = chunks_of(&base, P);
            let (b, _, _) = chunks_of(&edited, P);
            let a_ids: std::collections::HashSet<Id> = a.iter().map(|c| c.0).collect();
            // Re-synchronisation is about distance: the changed chunks cover
            // the insertion plus at most a few maximum-size chunks around it.
            let changed: usize = b.iter().filter(|c| !a_ids.contains(&c.0)).map(|c| c.1).sum();
            prop_assert!(changed <= ins.len() + 3 * P.max as usize,
                "{} changed bytes for a {}-byte insertion", changed, ins.len());
            let total: usize = b.iter().map(|c| c.1).sum();
            prop_assert_eq!(total, edited.len());
        }

        #[test]
        fn chunk_sizes_respect_params(seed in any::<u64>(), len in 0usize..300_000) {
            let data = pseudo_random(len, seed);
            let (c, _, n) = chunks_of(&data, P);
            prop_assert_eq!(n as usize, len);
            for (i, (_, l)) in c.iter().enumerate() {
                prop_assert!(*l <= P.max as usize);
                if i + 1 < c.len() { prop_assert!(*l >= P.min as usize); }
            }
        }
    }
}
