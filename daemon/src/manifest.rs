//! A file's manifest: its size and the ordered list of (chunk id, length).
//! This encoding is the one stored in packs (kind `MAN1`); the index keeps
//! the same entries split into segments (see `crate::index`).
//!
//! ```text
//! manifest := "HMF1" size u64 count u64 (chunk id[32] ‖ len u32)×count   (little endian)
//! ```
//!
//! Floor 1 (formats): may import `id` only.

use crate::id::Id;

const MAGIC: &[u8; 4] = b"HMF1";
pub const ENTRY_LEN: usize = 36;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    pub size: u64,
    pub chunks: Vec<(Id, u32)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("manifest encoding is malformed: {0}")]
pub struct ManifestError(pub &'static str);

impl Manifest {
    /// Length of [`Manifest::encode`]'s output.
    pub fn encoded_len(&self) -> u64 {
        20 + (self.chunks.len() * ENTRY_LEN) as u64
    }

    /// The encoding in pieces of at most 64 KiB, so a 20 GB file's manifest
    /// can be hashed and written without a second copy of it in memory.
    pub fn for_each_piece<E>(&self, mut out: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let mut head = [0u8; 20];
        head[..4].copy_from_slice(MAGIC);
        head[4..12].copy_from_slice(&self.size.to_le_bytes());
        head[12..20].copy_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        out(&head)?;
        for group in self.chunks.chunks((64 << 10) / ENTRY_LEN) {
            out(&encode_entries(group))?;
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.encoded_len() as usize);
        let _ = self.for_each_piece(|p| {
            b.extend_from_slice(p);
            Ok::<(), ()>(())
        });
        b
    }

    /// Strict decode: lengths must add up to the size.
    pub fn decode(b: &[u8]) -> Result<Manifest, ManifestError> {
        if b.len() < 20 || &b[..4] != MAGIC {
            return Err(ManifestError("bad magic or too short"));
        }
        let size = u64::from_le_bytes(b[4..12].try_into().map_err(|_| ManifestError("size"))?);
        let count = u64::from_le_bytes(b[12..20].try_into().map_err(|_| ManifestError("count"))?);
        let body = &b[20..];
        if !body.len().is_multiple_of(ENTRY_LEN) || (body.len() / ENTRY_LEN) as u64 != count {
            return Err(ManifestError("entry count does not match length"));
        }
        let chunks: Vec<(Id, u32)> = decode_entries(body);
        if chunks.iter().map(|c| c.1 as u64).sum::<u64>() != size {
            return Err(ManifestError("chunk lengths do not add up to the size"));
        }
        Ok(Manifest { size, chunks })
    }
}

/// Decodes packed `(id, len)` entries; `b.len()` must be a multiple of [`ENTRY_LEN`].
pub fn decode_entries(b: &[u8]) -> Vec<(Id, u32)> {
    b.chunks_exact(ENTRY_LEN)
        .map(|e| {
            let mut id = [0u8; 32];
            id.copy_from_slice(&e[..32]);
            (Id(id), u32::from_le_bytes([e[32], e[33], e[34], e[35]]))
        })
        .collect()
}

/// Encodes `(id, len)` entries back to back.
pub fn encode_entries(entries: &[(Id, u32)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for (id, len) in entries {
        b.extend_from_slice(&id.0);
        b.extend_from_slice(&len.to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(entries in proptest::collection::vec((any::<[u8; 32]>(), any::<u16>()), 0..200)) {
            let chunks: Vec<(Id, u32)> = entries.into_iter().map(|(i, l)| (Id(i), l as u32)).collect();
            let m = Manifest { size: chunks.iter().map(|c| c.1 as u64).sum(), chunks };
            prop_assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        }

        #[test]
        fn truncation_is_refused(cut in 0usize..91) {
            let m = Manifest { size: 5, chunks: vec![(Id([1; 32]), 2), (Id([2; 32]), 3)] };
            let e = m.encode();
            prop_assert!(Manifest::decode(&e[..cut.min(e.len() - 1)]).is_err());
        }
    }

    #[test]
    fn size_mismatch_is_refused() {
        let mut m = Manifest {
            size: 5,
            chunks: vec![(Id([1; 32]), 2)],
        }
        .encode();
        m[4] = 2;
        assert!(Manifest::decode(&m).is_ok());
        m[4] = 9;
        assert!(Manifest::decode(&m).is_err());
    }
}
