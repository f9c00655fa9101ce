//! The pack index object format — defined here and nowhere else.
//!
//! A backend far from the hub (an object store) keeps beside each pack a
//! small object that lets a hub which lost its RocksDB rebuild it with one
//! listing and one small read per pack, never reading a frame:
//!
//! ```text
//! idx      := "HOARDIX1" pack_len u64 skeleton_len u64 skeleton features sum
//! skeleton := the pack (version 2) with every frame's payload left out:
//!             MAGIC, each record's header and meta, the payloads of manifest
//!             and object records, the trailer          (skeleton_len bytes)
//! features := n u32 (key[9] chunk id[32])×n
//!   the sketch features of the pack's self-contained frames' chunks, as the
//!   index keeps them (hints for choosing delta bases; see `crate::sketch`)
//! sum      := BLAKE3 of every byte before it [32]      (little endian)
//! ```
//!
//! The skeleton proves itself as the pack does: its trailer's pack id is
//! BLAKE3 of exactly the bytes the skeleton keeps apart from payloads, and
//! each payload it keeps is covered by its header's `payload_sum`
//! ([`super::format::Scanner::skeleton`] checks both). `sum` covers the
//! features, which the pack id does not. Frame offsets stay those of the pack:
//! a scan of the skeleton advances over each left-out payload.

use super::format::{self, Codec, FormatError, Kind, Scanner};
use crate::id::Id;
use std::io::Cursor;

pub const MAGIC: &[u8; 8] = b"HOARDIX1";
const FEATURE_LEN: usize = 9 + 32;
const FIXED: usize = 8 + 8 + 8;

/// Builds a pack's skeleton while the pack is written.
#[derive(Default)]
pub struct SkeletonBuilder {
    bytes: Vec<u8>,
}

impl SkeletonBuilder {
    /// Bytes of the pack the skeleton keeps (everything but frame payloads).
    pub fn keep(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }

    /// The idx object of the finished pack of `pack_len` bytes.
    pub fn encode(self, pack_len: u64, features: &[([u8; 9], Id)]) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(FIXED + self.bytes.len() + 4 + features.len() * FEATURE_LEN + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&pack_len.to_le_bytes());
        out.extend_from_slice(&(self.bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.bytes);
        out.extend_from_slice(&(features.len() as u32).to_le_bytes());
        for (k, id) in features {
            out.extend_from_slice(k);
            out.extend_from_slice(&id.0);
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }
}

/// A decoded idx object: a scanner over the skeleton and the features.
pub struct Idx<'a> {
    pub pack_len: u64,
    skeleton: &'a [u8],
    pub features: Vec<([u8; 9], Id)>,
}

impl<'a> Idx<'a> {
    /// Checks the object's sum and counts before allocating anything.
    pub fn decode(b: &'a [u8]) -> Result<Idx<'a>, FormatError> {
        let bad = || FormatError::BadTrailer;
        if b.len() < FIXED + 4 + 32 || &b[..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let (body, sum) = b.split_at(b.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(bad());
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let pack_len = u64_at(8);
        let skel_len = usize::try_from(u64_at(16)).map_err(|_| bad())?;
        let rest = body.len() - FIXED;
        if skel_len > rest - 4 {
            return Err(bad());
        }
        let skeleton = &body[FIXED..FIXED + skel_len];
        let f = &body[FIXED + skel_len..];
        let n = u32::from_le_bytes(f[..4].try_into().unwrap_or([0; 4])) as usize;
        if f.len() - 4 != n.checked_mul(FEATURE_LEN).ok_or_else(bad)? {
            return Err(bad());
        }
        let features = f[4..]
            .chunks_exact(FEATURE_LEN)
            .filter_map(|e| Some((e[..9].try_into().ok()?, Id::from_slice(&e[9..])?)))
            .collect();
        Ok(Idx {
            pack_len,
            skeleton,
            features,
        })
    }

    /// A scanner over the skeleton: frames come without payloads.
    pub fn scanner(&self) -> Result<Scanner<Cursor<&'a [u8]>>, FormatError> {
        Scanner::skeleton(Cursor::new(self.skeleton), self.pack_len)
    }
}

/// The idx object of a whole pack held in memory (a pack written before
/// its backend kept idx objects), checking the pack on the way: its id,
/// or `None` for a version 1 pack (its id covers the payloads, so it has
/// no skeleton).
pub fn of_pack(pack: &[u8]) -> Result<Option<(Id, Vec<u8>)>, FormatError> {
    if pack.starts_with(format::MAGIC_V1) {
        return Ok(None);
    }
    let mut scan = Scanner::new(Cursor::new(pack), pack.len() as u64, true)?;
    let mut skel = SkeletonBuilder::default();
    skel.keep(format::MAGIC);
    let mut features = Vec::new();
    while let Some(rec) = scan.next_record()? {
        skel.keep(&format::encode_header(&rec.header, &rec.meta));
        skel.keep(&rec.meta);
        let payload = rec.payload.as_deref().unwrap_or(&[]);
        if rec.header.kind != Kind::Frame {
            skel.keep(payload);
            continue;
        }
        if rec.header.codec != Codec::Zstd {
            continue;
        }
        let fm =
            format::decode_frame_meta(&rec.meta, rec.header.raw_len, rec.header.codec, rec.offset)?;
        let raw = format::decompress(
            Codec::Zstd,
            payload,
            rec.header.raw_len,
            &[],
            rec.payload_offset(),
        )?;
        let mut at = 0usize;
        for (id, l) in &fm.chunks {
            let bytes = &raw[at..at + *l as usize];
            at += *l as usize;
            for (lane, f) in crate::sketch::sketch(bytes).iter().flatten().enumerate() {
                features.push((crate::sketch::feature_key(lane, *f), *id));
            }
        }
    }
    let end = scan.finish()?;
    let trailer_at = pack.len() - format::TRAILER_LEN;
    skel.keep(&pack[trailer_at..]);
    Ok(Some((
        end.pack_id,
        skel.encode(pack.len() as u64, &features),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalDir;
    use crate::pack::format::Kind;
    use crate::pack::{Frame, PackWriter};

    /// A pack with a self-contained frame, a raw frame and an object, its idx.
    fn pack_and_idx(dir: &std::path::Path) -> (Id, Vec<u8>, Vec<u8>) {
        let b = LocalDir::open(dir).unwrap();
        let mut w = PackWriter::new(&b, dir).unwrap();
        w.keep_skeleton();
        let a = b"compressible ".repeat(500);
        w.append_frame(&Frame::build(vec![(Id::of(&a), a.len() as u32)], a, 3))
            .unwrap();
        let r: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        w.append_frame(&Frame::build(vec![(Id::of(&r), r.len() as u32)], r, 3))
            .unwrap();
        w.append_object(1, &Id::of(b"tree"), b"tree bytes", 3)
            .unwrap();
        let (id, _, _, idx) = w.finish_with(&[([7u8; 9], Id::of(b"c"))]).unwrap();
        let pack = std::fs::read(b.path_of(&id)).unwrap();
        (id, pack, idx.unwrap())
    }

    #[test]
    fn skeleton_scans_like_the_pack_without_frame_payloads() {
        let d = tempfile::tempdir().unwrap();
        let (id, pack, idx) = pack_and_idx(d.path());
        assert!(idx.len() < pack.len());
        let x = Idx::decode(&idx).unwrap();
        assert_eq!(x.pack_len, pack.len() as u64);
        assert_eq!(x.features, vec![([7u8; 9], Id::of(b"c"))]);
        let mut full = Scanner::new(Cursor::new(&pack[..]), pack.len() as u64, true).unwrap();
        let mut skel = x.scanner().unwrap();
        while let Some(f) = full.next_record().unwrap() {
            let s = skel.next_record().unwrap().unwrap();
            assert_eq!((s.offset, s.header, &s.meta), (f.offset, f.header, &f.meta));
            assert_eq!(s.payload.is_some(), f.header.kind != Kind::Frame);
        }
        assert!(skel.next_record().unwrap().is_none());
        assert_eq!(skel.finish().unwrap().pack_id, id);
    }

    #[test]
    fn a_pack_read_whole_gives_the_idx_its_writer_made() {
        let d = tempfile::tempdir().unwrap();
        let (id, pack, idx) = pack_and_idx(d.path());
        let (got_id, got) = of_pack(&pack).unwrap().unwrap();
        assert_eq!(got_id, id);
        let (a, b) = (Idx::decode(&got).unwrap(), Idx::decode(&idx).unwrap());
        assert_eq!((a.pack_len, a.skeleton), (b.pack_len, b.skeleton));
        // The writer was given one made-up feature; the whole-pack scan
        // sketches the compressible frame itself.
        assert!(!a.features.is_empty());
        let (_, v1) = crate::pack::format::v1_pack(&[b"old"]);
        assert!(of_pack(&v1).unwrap().is_none());
    }

    #[test]
    fn any_damage_is_caught() {
        let d = tempfile::tempdir().unwrap();
        let (id, _, idx) = pack_and_idx(d.path());
        for i in (0..idx.len()).step_by(7) {
            let mut b = idx.clone();
            b[i] ^= 0x20;
            let ok = Idx::decode(&b).and_then(|x| {
                let mut s = x.scanner()?;
                while s.next_record()?.is_some() {}
                s.finish()
            });
            assert!(
                !matches!(ok, Ok(e) if e.pack_id == id),
                "flip at {i} not caught"
            );
        }
        assert!(Idx::decode(&idx[..idx.len() - 1]).is_err());
        assert!(Idx::decode(&idx[..10]).is_err());
    }
}
