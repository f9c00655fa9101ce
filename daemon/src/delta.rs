//! Delta compression after deduplication: a new frame whose chunks resemble
//! chunks already stored is compressed with those chunks' bytes as a zstd
//! dictionary. Chunk-id dedup alone misses data that changes a little
//! everywhere (a tar whose headers carry new mtimes, a table with an edited
//! column); against the previous version such a frame shrinks many times.
//!
//! Bases come first from the previous version of the same path, aligned
//! to the new one (`crate::history`), then from resemblance sketches
//! (only self-contained chunks are indexed by feature).
//!
//! Bounds that keep reads cheap: a frame names at most [`MAX_BASES`] bases
//! and at most twice its own size in base bytes, and its delta depth (1 +
//! its bases' deepest) is at most [`MAX_DEPTH`], so a read decodes at most
//! [`MAX_DEPTH`] delta frames, one below the other. A base already at that
//! depth is not taken (as git's `--depth` does): the version after it is
//! compressed against the sketches' self-contained chunks, or alone, and
//! starts a new chain.
//!
//! Floor 5 (engine): may import `store`, `index`, `pack`, `sketch`; no sync,
//! no services.

use crate::error::Result;
use crate::id::Id;
use crate::index::feature_key;
use crate::pack::format::{self, MAX_BASES, MAX_DEPTH};
use crate::pack::Frame;
use crate::sketch::{sketch, FEATURES};
use crate::store::{FrameCache, Shared};
use rayon::prelude::*;
use std::collections::HashMap;

/// A delta is kept only when it beats self-contained compression by this factor.
const MIN_GAIN: f64 = 0.8;
/// A delta this small is taken without trying self-contained compression.
const CLEARLY_GOOD: usize = 4;
/// Features a stored chunk must share with a new one to serve as its base.
const MIN_VOTES: usize = 1;

/// Compresses `frames` (uncompressed on entry): as deltas against the
/// previous version's chunks (`history`, per frame: candidates in order)
/// or similar stored chunks where that is clearly smaller, self-contained
/// otherwise. Incompressible frames are neither sketched nor tried as
/// deltas.
pub fn compress(
    store: &Shared,
    frames: &mut [Frame],
    history: &[Vec<Id>],
    level: i32,
) -> Result<()> {
    frames.par_iter_mut().for_each(|f| {
        if f.looks_compressible(level) {
            f.sketches = f.chunk_bytes().map(sketch).collect();
        }
    });
    let plans = plan_bases(store, frames, history)?;
    frames
        .par_iter_mut()
        .zip(plans.into_par_iter())
        .for_each_init(FrameCache::default, |cache, (f, (bases, depth))| {
            if !bases.is_empty() && try_delta(store, f, bases, depth, level, cache) {
                return;
            }
            f.compress(level);
        });
    Ok(())
}

/// Compresses `f` against `bases`; true if the delta was kept.
fn try_delta(
    store: &Shared,
    f: &mut Frame,
    bases: Vec<Id>,
    depth: u8,
    level: i32,
    cache: &mut FrameCache,
) -> bool {
    let dict = match store.bases_dict(&bases, cache) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "a delta base could not be read; storing the frame self-contained");
            return false;
        }
    };
    let Some(z) = format::compress_with_dict(&f.raw, level, &dict) else {
        return false;
    };
    if z.len() * CLEARLY_GOOD > f.raw.len() {
        f.compress(level);
        if z.len() as f64 >= f.stored().len() as f64 * MIN_GAIN {
            return true; // self-contained it is (already compressed)
        }
    }
    f.compressed = Some(z);
    f.bases = bases;
    f.depth = depth;
    true
}

/// For each frame, the stored chunks to compress it against, and the
/// depth that makes it: its history candidates first (skipping any of the
/// frame's own chunks), then the self-contained chunks its chunks resemble,
/// within the byte budget and [`MAX_DEPTH`].
fn plan_bases(store: &Shared, frames: &[Frame], history: &[Vec<Id>]) -> Result<Vec<(Vec<Id>, u8)>> {
    let similar = similar_chunks(store, frames)?;
    let none = Vec::new();
    let mut plans: Vec<Vec<Id>> = Vec::with_capacity(frames.len());
    for (i, (f, sim)) in frames.iter().zip(similar).enumerate() {
        let own: std::collections::HashSet<Id> = f.chunks.iter().map(|c| c.0).collect();
        let mut bases: Vec<Id> = Vec::new();
        for b in history.get(i).unwrap_or(&none).iter().chain(&sim) {
            if !own.contains(b) && !bases.contains(b) {
                bases.push(*b);
            }
        }
        plans.push(bases);
    }
    let all: Vec<Id> = plans
        .iter()
        .flatten()
        .copied()
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    let mut locs: HashMap<Id, crate::index::ChunkLoc> = HashMap::with_capacity(all.len());
    for piece in all.chunks(crate::STAT_BATCH) {
        for (id, l) in piece.iter().zip(store.index.chunk_locs(piece)?) {
            if let Some(l) = l {
                locs.insert(*id, l);
            }
        }
    }
    let mut out = Vec::with_capacity(plans.len());
    for (f, bases) in frames.iter().zip(plans) {
        let budget = 2 * f.raw.len() as u64;
        let (mut used, mut depth) = (0u64, 0u8);
        let mut kept: Vec<Id> = Vec::new();
        for b in bases {
            // A base at the deepest a chain may go would make one deeper.
            let Some(l) = locs.get(&b).filter(|l| l.depth < MAX_DEPTH) else {
                continue;
            };
            if kept.len() >= MAX_BASES || used + l.len as u64 > budget {
                continue;
            }
            used += l.len as u64;
            depth = depth.max(l.depth + 1);
            kept.push(b);
        }
        out.push((kept, depth));
    }
    Ok(out)
}

/// For each frame, the stored self-contained chunks its chunks resemble
/// (by sketch votes), at most [`MAX_BASES`].
fn similar_chunks(store: &Shared, frames: &[Frame]) -> Result<Vec<Vec<Id>>> {
    let keys: Vec<[u8; 9]> = frames
        .iter()
        .flat_map(|f| f.sketches.iter().flatten())
        .flat_map(|sk| sk.iter().enumerate().map(|(lane, v)| feature_key(lane, *v)))
        .collect();
    if keys.is_empty() {
        return Ok(vec![Vec::new(); frames.len()]);
    }
    let mut hits = store.index.feature_hits(&keys)?.into_iter();
    let mut plans: Vec<Vec<Id>> = Vec::with_capacity(frames.len());
    for f in frames {
        let mut bases: Vec<Id> = Vec::new();
        for sk in f.sketches.iter().flatten() {
            let mut votes: HashMap<Id, usize> = HashMap::new();
            for _ in 0..sk.len().min(FEATURES) {
                if let Some(Some(id)) = hits.next() {
                    *votes.entry(id).or_default() += 1;
                }
            }
            let best = votes
                .into_iter()
                .filter(|(_, n)| *n >= MIN_VOTES)
                .max_by_key(|(id, n)| (*n, *id));
            if let Some((best, _)) = best {
                if !bases.contains(&best) && bases.len() < MAX_BASES {
                    bases.push(best);
                }
            }
        }
        plans.push(bases);
    }
    Ok(plans)
}
