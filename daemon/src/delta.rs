//! Delta compression after deduplication: a new frame whose chunks resemble
//! chunks already stored is compressed with those chunks' bytes as a zstd
//! dictionary. Chunk-id dedup alone misses data that changes a little
//! everywhere (a tar whose headers carry new mtimes, a table with an edited
//! column); against the previous version such a frame shrinks many times.
//!
//! Bounds that keep reads cheap: bases are always self-contained chunks
//! (only they are indexed by feature), so decoding any chunk needs at most
//! its bases' frames and its own; a frame names at most [`MAX_BASES`] bases
//! and at most twice its own size in base bytes.
//!
//! Floor 5 (engine): may import `store`, `index`, `pack`, `sketch`; no sync,
//! no services.

use crate::error::Result;
use crate::id::Id;
use crate::index::feature_key;
use crate::pack::format::{self, Codec, MAX_BASES};
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

/// Compresses `frames` (uncompressed on entry): as deltas against similar
/// stored chunks where that is clearly smaller, self-contained otherwise.
/// Incompressible frames are neither sketched nor tried as deltas.
pub fn compress(store: &Shared, frames: &mut [Frame], level: i32) -> Result<()> {
    frames.par_iter_mut().for_each(|f| {
        if f.looks_compressible(level) {
            f.sketches = f.chunk_bytes().map(sketch).collect();
        }
    });
    let plans = plan_bases(store, frames)?;
    frames
        .par_iter_mut()
        .zip(plans.into_par_iter())
        .for_each_init(FrameCache::default, |cache, (f, bases)| {
            if !bases.is_empty() && try_delta(store, f, bases, level, cache) {
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
    true
}

/// For each frame, the stored self-contained chunks its chunks resemble.
fn plan_bases(store: &Shared, frames: &[Frame]) -> Result<Vec<Vec<Id>>> {
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

    // Keep bases that are indexed, self-contained, and within the byte budget.
    let all: Vec<Id> = plans.iter().flatten().copied().collect();
    let locs: HashMap<Id, (Codec, u32)> = all
        .iter()
        .zip(store.index.chunk_locs(&all)?)
        .filter_map(|(id, l)| l.map(|l| (*id, (l.codec, l.len))))
        .collect();
    for (f, bases) in frames.iter().zip(plans.iter_mut()) {
        let budget = 2 * f.raw.len() as u64;
        let mut used = 0u64;
        bases.retain(|b| match locs.get(b) {
            Some((c, len)) if *c != Codec::ZstdDict && used + *len as u64 <= budget => {
                used += *len as u64;
                true
            }
            _ => false,
        });
    }
    Ok(plans)
}
