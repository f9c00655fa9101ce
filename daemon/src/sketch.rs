//! Resemblance sketches: which stored chunk does a new chunk look like?
//!
//! A chunk is split into [`FEATURES`] equal sub-blocks; each feature is the
//! largest gear rolling hash (a ~64-byte window) seen in its sub-block. A
//! small edit changes at most the features of the sub-blocks it touches, and
//! content that shifts by a few bytes keeps its maxima, so similar chunks
//! share most features (the "Finesse" family of sketches; Shilane et al. use
//! super-features the same way). The four lanes are hashed interleaved so the
//! sketch costs a fraction of compressing the chunk.
//!
//! Floor 1 (formats): imports nothing of the crate.

pub const FEATURES: usize = 4;

pub type Sketch = [u64; FEATURES];

const fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

const fn gear() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = splitmix(0x686f_6172_6400 + i as u64);
        i += 1;
    }
    t
}

static GEAR: [u64; 256] = gear();

/// Chunks smaller than this get no sketch: small files and tails rarely
/// gain from a delta, and each sketch adds index entries.
pub const MIN_LEN: usize = 4096;

/// The sketch of `data`, or `None` if it is too small to have one.
pub fn sketch(data: &[u8]) -> Option<Sketch> {
    if data.len() < MIN_LEN {
        return None;
    }
    let sub = data.len() / FEATURES;
    let mut h = [0u64; FEATURES];
    let mut max = [0u64; FEATURES];
    for j in 0..sub {
        for lane in 0..FEATURES {
            let b = data[lane * sub + j];
            h[lane] = (h[lane] << 1).wrapping_add(GEAR[b as usize]);
            max[lane] = max[lane].max(h[lane]);
        }
    }
    // Mix in the lane so equal maxima in different lanes are different features.
    let mut out = [0u64; FEATURES];
    for lane in 0..FEATURES {
        out[lane] = splitmix(max[lane] ^ lane as u64);
    }
    Some(out)
}

/// The index's `features` key of one sketch lane's feature.
pub fn feature_key(lane: usize, feature: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = lane as u8;
    k[1..].copy_from_slice(&feature.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        (0..n)
            .map(|i| (splitmix(seed ^ i as u64) >> 24) as u8)
            .collect()
    }

    fn shared(a: &Sketch, b: &Sketch) -> usize {
        a.iter().filter(|f| b.contains(f)).count()
    }

    #[test]
    fn small_edits_keep_most_features_unrelated_data_shares_none() {
        let a = noise(32 << 10, 1);
        let mut b = a.clone();
        b[100] ^= 0xff; // a tar header's mtime, say
        b[20_000] ^= 0x01;
        let mut c = a.clone();
        c.splice(5000..5000, *b"inserted text");
        let (sa, sb, sc) = (
            sketch(&a).unwrap(),
            sketch(&b).unwrap(),
            sketch(&c).unwrap(),
        );
        assert!(shared(&sa, &sb) >= 2, "{sa:?} {sb:?}");
        assert!(shared(&sa, &sc) >= 2, "{sa:?} {sc:?}");
        let other = sketch(&noise(32 << 10, 2)).unwrap();
        assert_eq!(shared(&sa, &other), 0);
        assert!(sketch(&a[..MIN_LEN - 1]).is_none());
    }
}
