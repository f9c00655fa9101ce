//! The pack file format — defined here and nowhere else.
//!
//! ```text
//! pack    := MAGIC record* trailer
//! MAGIC   := "HOARDPK1"                                   (8 bytes)
//! record  := header meta payload
//! header  := kind[4] codec u8 0u8×3 meta_len u32 raw_len u32 stored_len u32 check u32
//!                                                          (24 bytes, little endian)
//!   check := first 4 bytes of BLAKE3(header[0..20] ‖ meta), as u32 LE
//!   codec := 0 raw | 1 zstd | 2 zstd with a dictionary of base chunks
//! kind "FRM1": a frame of chunks, compressed together as one zstd frame.
//!   meta := [codec 2: base count u32 ‖ base chunk id[32]×m] (chunk id[32] ‖ len u32)×n
//!   raw_len = Σ len; chunk i's bytes are raw[Σ len<i .. Σ len≤i], and BLAKE3
//!   of them is its id. With codec 2 the payload decodes only with the
//!   concatenated bytes of the base chunks as a raw-content zstd dictionary
//!   (a delta against similar stored chunks); base chunks are never codec 2
//!   themselves, so a read needs at most the bases' frames and this one.
//! kind "MAN1": a file manifest (see `crate::manifest`).
//!   meta := file id[32] ‖ BLAKE3(raw manifest encoding)[32]
//! kind "OBJ1": a tree or snapshot (see `crate::objects`), codec 0 or 1.
//!   meta := object kind u8 (1 tree, 2 snapshot) ‖ object id[32]
//!   the id is BLAKE3 of the raw (decompressed) payload.
//! trailer := "HOARDEND" records u32 0u32 pack_id[32]          (48 bytes)
//!   pack_id := BLAKE3 of every byte before it; the file is named by it.
//! ```
//!
//! A pack therefore verifies and re-indexes by itself: the trailer proves it
//! is whole, each header proves its own integrity, and every chunk and
//! manifest carries the hash that names it.

use crate::id::Id;
use std::io::{self, Read};

pub const MAGIC: &[u8; 8] = b"HOARDPK1";
pub const TRAILER_MAGIC: &[u8; 8] = b"HOARDEND";
pub const HEADER_LEN: usize = 24;
pub const TRAILER_LEN: usize = 48;
/// Per-chunk entry in a frame's meta.
pub const FRAME_ENTRY_LEN: usize = 36;

/// Upper bounds a reader enforces before allocating anything a header asks for.
pub const MAX_META: u32 = 64 << 20;
pub const MAX_RAW: u32 = 3 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Frame,
    Manifest,
    Object,
}

impl Kind {
    fn tag(self) -> &'static [u8; 4] {
        match self {
            Kind::Frame => b"FRM1",
            Kind::Manifest => b"MAN1",
            Kind::Object => b"OBJ1",
        }
    }
    fn from_tag(t: &[u8]) -> Option<Kind> {
        match t {
            b"FRM1" => Some(Kind::Frame),
            b"MAN1" => Some(Kind::Manifest),
            b"OBJ1" => Some(Kind::Object),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
    ZstdDict = 2,
}

/// Most base chunks one frame may name.
pub const MAX_BASES: usize = 256;

impl Codec {
    pub fn from_u8(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            2 => Some(Codec::ZstdDict),
            _ => None,
        }
    }
}

/// A record header as decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub codec: Codec,
    pub meta_len: u32,
    pub raw_len: u32,
    pub stored_len: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a hoard pack (bad magic)")]
    BadMagic,
    #[error("record header at offset {0} is damaged")]
    BadHeader(u64),
    #[error("pack is truncated at offset {0}")]
    Truncated(u64),
    #[error("pack trailer is missing or damaged")]
    BadTrailer,
    #[error("pack content hashes to {actual}, but the pack says {claimed}")]
    HashMismatch { claimed: Id, actual: Id },
    #[error("frame payload at offset {offset} cannot be decoded: {msg}")]
    Decode { offset: u64, msg: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Encodes a record header and checksum over header and meta.
pub fn encode_header(h: &Header, meta: &[u8]) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..4].copy_from_slice(h.kind.tag());
    b[4] = h.codec as u8;
    b[8..12].copy_from_slice(&h.meta_len.to_le_bytes());
    b[12..16].copy_from_slice(&h.raw_len.to_le_bytes());
    b[16..20].copy_from_slice(&h.stored_len.to_le_bytes());
    let check = header_check(&b[..20], meta);
    b[20..24].copy_from_slice(&check.to_le_bytes());
    b
}

fn header_check(fixed: &[u8], meta: &[u8]) -> u32 {
    let mut h = blake3::Hasher::new();
    h.update(fixed);
    h.update(meta);
    u32::from_le_bytes(h.finalize().as_bytes()[..4].try_into().unwrap_or([0; 4]))
}

/// Decodes the fixed part of a header; the check is verified by
/// [`check_header`] once the meta has been read.
pub fn decode_header(b: &[u8; HEADER_LEN], offset: u64) -> Result<Header, FormatError> {
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let bad = || FormatError::BadHeader(offset);
    let kind = Kind::from_tag(&b[0..4]).ok_or_else(bad)?;
    let codec = Codec::from_u8(b[4]).ok_or_else(bad)?;
    if b[5..8] != [0, 0, 0] {
        return Err(bad());
    }
    let h = Header {
        kind,
        codec,
        meta_len: u32_at(8),
        raw_len: u32_at(12),
        stored_len: u32_at(16),
    };
    if h.meta_len > MAX_META || h.raw_len > MAX_RAW || h.stored_len > MAX_RAW {
        return Err(bad());
    }
    if h.codec == Codec::Raw && h.raw_len != h.stored_len {
        return Err(bad());
    }
    Ok(h)
}

pub fn check_header(b: &[u8; HEADER_LEN], meta: &[u8], offset: u64) -> Result<(), FormatError> {
    let stored = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
    if header_check(&b[..20], meta) == stored {
        Ok(())
    } else {
        Err(FormatError::BadHeader(offset))
    }
}

/// Frame meta: the bases (codec 2 only), then the ids and lengths of its chunks.
pub fn encode_frame_meta(chunks: &[(Id, u32)], bases: &[Id]) -> Vec<u8> {
    let mut m = Vec::with_capacity(4 + bases.len() * 32 + chunks.len() * FRAME_ENTRY_LEN);
    if !bases.is_empty() {
        m.extend_from_slice(&(bases.len() as u32).to_le_bytes());
        for b in bases {
            m.extend_from_slice(&b.0);
        }
    }
    for (id, len) in chunks {
        m.extend_from_slice(&id.0);
        m.extend_from_slice(&len.to_le_bytes());
    }
    m
}

/// A frame's decoded meta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameMeta {
    pub chunks: Vec<(Id, u32)>,
    pub bases: Vec<Id>,
}

pub fn decode_frame_meta(
    meta: &[u8],
    raw_len: u32,
    codec: Codec,
    offset: u64,
) -> Result<FrameMeta, FormatError> {
    let bad = || FormatError::BadHeader(offset);
    let (bases, entries) = if codec == Codec::ZstdDict {
        let n = u32::from_le_bytes(
            meta.get(..4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        if n == 0 || n > MAX_BASES || meta.len() < 4 + 32 * n {
            return Err(bad());
        }
        let bases = meta[4..4 + 32 * n]
            .chunks_exact(32)
            .filter_map(Id::from_slice)
            .collect();
        (bases, &meta[4 + 32 * n..])
    } else {
        (Vec::new(), meta)
    };
    Ok(FrameMeta {
        chunks: decode_chunk_entries(entries, raw_len, offset)?,
        bases,
    })
}

fn decode_chunk_entries(
    meta: &[u8],
    raw_len: u32,
    offset: u64,
) -> Result<Vec<(Id, u32)>, FormatError> {
    if !meta.len().is_multiple_of(FRAME_ENTRY_LEN) {
        return Err(FormatError::BadHeader(offset));
    }
    let chunks: Vec<(Id, u32)> = meta
        .chunks_exact(FRAME_ENTRY_LEN)
        .map(|e| {
            let id = Id::from_slice(&e[..32]).unwrap_or(Id([0; 32]));
            let len = u32::from_le_bytes([e[32], e[33], e[34], e[35]]);
            (id, len)
        })
        .collect();
    let sum: u64 = chunks.iter().map(|c| c.1 as u64).sum();
    if sum != raw_len as u64 {
        return Err(FormatError::BadHeader(offset));
    }
    Ok(chunks)
}

/// Manifest meta: file id and the hash of the raw manifest encoding.
pub fn encode_manifest_meta(file: &Id, manifest_hash: &Id) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&file.0);
    m.extend_from_slice(&manifest_hash.0);
    m
}

pub fn decode_manifest_meta(meta: &[u8], offset: u64) -> Result<(Id, Id), FormatError> {
    if meta.len() != 64 {
        return Err(FormatError::BadHeader(offset));
    }
    Ok((
        Id::from_slice(&meta[..32]).ok_or(FormatError::BadHeader(offset))?,
        Id::from_slice(&meta[32..]).ok_or(FormatError::BadHeader(offset))?,
    ))
}

/// Object meta: kind and id.
pub fn encode_object_meta(kind: u8, id: &Id) -> Vec<u8> {
    let mut m = Vec::with_capacity(33);
    m.push(kind);
    m.extend_from_slice(&id.0);
    m
}

pub fn decode_object_meta(meta: &[u8], offset: u64) -> Result<(u8, Id), FormatError> {
    if meta.len() != 33 {
        return Err(FormatError::BadHeader(offset));
    }
    Ok((
        meta[0],
        Id::from_slice(&meta[1..]).ok_or(FormatError::BadHeader(offset))?,
    ))
}

/// Trailer bytes before the pack id (which is the hash of all that precedes it).
pub fn encode_trailer_prefix(records: u32) -> [u8; TRAILER_LEN - 32] {
    let mut t = [0u8; TRAILER_LEN - 32];
    t[..8].copy_from_slice(TRAILER_MAGIC);
    t[8..12].copy_from_slice(&records.to_le_bytes());
    t
}

/// Compresses `raw` with zstd at `level`; `None` when that does not shrink
/// it (the record is then stored raw).
pub fn compress_if_smaller(raw: &[u8], level: i32) -> Option<Vec<u8>> {
    use std::cell::RefCell;
    thread_local! {
        // One compression context per thread and level, reused frame after frame.
        static CCTX: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    }
    if raw.len() < 2 {
        return None;
    }
    CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, cctx) = c.as_mut()?;
        // Room for anything smaller than the input: a larger result is useless.
        let mut out = Vec::with_capacity(raw.len() - 1);
        match cctx.compress_to_buffer(raw, &mut out) {
            Ok(n) if n < raw.len() => Some(out),
            _ => None,
        }
    })
}

/// Restores a payload's raw bytes; `raw_len` bounds the allocation. Codec 2
/// needs `dict`, the concatenated bytes of the frame's bases.
pub fn decompress(
    codec: Codec,
    payload: &[u8],
    raw_len: u32,
    dict: &[u8],
    offset: u64,
) -> Result<Vec<u8>, FormatError> {
    let check = |out: Vec<u8>| {
        if out.len() != raw_len as usize {
            return Err(FormatError::Decode {
                offset,
                msg: format!("decoded {} bytes, header says {}", out.len(), raw_len),
            });
        }
        Ok(out)
    };
    let zerr = |e: std::io::Error| FormatError::Decode {
        offset,
        msg: e.to_string(),
    };
    match codec {
        Codec::Raw if payload.len() == raw_len as usize => Ok(payload.to_vec()),
        Codec::Raw => Err(FormatError::Decode {
            offset,
            msg: "raw payload has the wrong length".into(),
        }),
        Codec::Zstd => check(zstd::bulk::decompress(payload, raw_len as usize).map_err(zerr)?),
        Codec::ZstdDict => {
            let derr = |c: usize| FormatError::Decode {
                offset,
                msg: zstd::zstd_safe::get_error_name(c).to_string(),
            };
            let mut d = zstd::zstd_safe::DCtx::try_create().ok_or_else(|| derr(0))?;
            d.ref_prefix(dict).map_err(derr)?;
            let mut out = Vec::with_capacity(raw_len as usize);
            d.decompress(&mut out, payload).map_err(derr)?;
            check(out)
        }
    }
}

/// Compresses `raw` against `dict` (the bases' bytes) referenced as a zstd
/// prefix — a delta, like `zstd --patch-from`; `None` when that does not
/// shrink it.
pub fn compress_with_dict(raw: &[u8], level: i32, dict: &[u8]) -> Option<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let mut c = CCtx::try_create()?;
    c.set_parameter(CParameter::CompressionLevel(level)).ok()?;
    // Matches must reach back across the whole prefix (as `zstd
    // --patch-from` does); decoders accept windows up to 2^27 by default.
    let span = (dict.len() + raw.len()).max(1 << 20);
    let window_log = (usize::BITS - (span - 1).leading_zeros()).min(27);
    c.set_parameter(CParameter::WindowLog(window_log)).ok()?;
    c.set_parameter(CParameter::EnableLongDistanceMatching(true))
        .ok()?;
    c.ref_prefix(dict).ok()?;
    let mut out = Vec::with_capacity(raw.len().saturating_sub(1));
    match c.compress2(&mut out, raw) {
        Ok(n) if n < raw.len() => Some(out),
        _ => None,
    }
}

/// One record as found by [`Scanner`].
#[derive(Debug)]
pub struct ScannedRecord {
    /// Offset of the record header in the pack.
    pub offset: u64,
    pub header: Header,
    pub meta: Vec<u8>,
    /// The stored payload, when the scan reads data.
    pub payload: Option<Vec<u8>>,
}

impl ScannedRecord {
    pub fn payload_offset(&self) -> u64 {
        self.offset + HEADER_LEN as u64 + self.header.meta_len as u64
    }
}

/// Reads a whole pack front to back, checking headers, the trailer and the
/// pack id. With `read_payloads` false, payloads are still hashed (the pack id
/// covers them) but not kept.
pub struct Scanner<R: Read> {
    r: R,
    hasher: blake3::Hasher,
    pos: u64,
    len: u64,
    read_payloads: bool,
    records: u32,
    done: bool,
}

/// What the trailer says once a scan completed.
#[derive(Debug, Clone, Copy)]
pub struct ScanEnd {
    pub pack_id: Id,
    pub records: u32,
}

impl<R: Read> Scanner<R> {
    /// `len` is the pack file's length.
    pub fn new(mut r: R, len: u64, read_payloads: bool) -> Result<Self, FormatError> {
        if len < (MAGIC.len() + TRAILER_LEN) as u64 {
            return Err(FormatError::Truncated(0));
        }
        let mut m = [0u8; 8];
        r.read_exact(&mut m)?;
        if &m != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&m);
        Ok(Scanner {
            r,
            hasher,
            pos: 8,
            len,
            read_payloads,
            records: 0,
            done: false,
        })
    }

    fn read_hashed(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => FormatError::Truncated(self.pos),
            _ => FormatError::Io(e),
        })?;
        self.hasher.update(buf);
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// The next record, or `None` at the trailer (then call [`Scanner::finish`]).
    pub fn next_record(&mut self) -> Result<Option<ScannedRecord>, FormatError> {
        if self.done {
            return Ok(None);
        }
        let trailer_at = self.len - TRAILER_LEN as u64;
        if self.pos == trailer_at {
            self.done = true;
            return Ok(None);
        }
        if self.pos + HEADER_LEN as u64 > trailer_at {
            return Err(FormatError::Truncated(self.pos));
        }
        let offset = self.pos;
        let mut hb = [0u8; HEADER_LEN];
        self.read_hashed(&mut hb)?;
        let header = decode_header(&hb, offset)?;
        let body = header.meta_len as u64 + header.stored_len as u64;
        if self.pos + body > trailer_at {
            return Err(FormatError::BadHeader(offset));
        }
        let mut meta = vec![0u8; header.meta_len as usize];
        self.read_hashed(&mut meta)?;
        check_header(&hb, &meta, offset)?;
        let payload = if self.read_payloads {
            let mut p = vec![0u8; header.stored_len as usize];
            self.read_hashed(&mut p)?;
            Some(p)
        } else {
            let mut left = header.stored_len as u64;
            let mut buf = vec![0u8; (64 << 10).min(left as usize)];
            while left > 0 {
                let n = (left as usize).min(buf.len());
                self.read_hashed(&mut buf[..n])?;
                left -= n as u64;
            }
            None
        };
        self.records += 1;
        Ok(Some(ScannedRecord {
            offset,
            header,
            meta,
            payload,
        }))
    }

    /// Reads and checks the trailer; the pack id is proven by re-hashing.
    pub fn finish(mut self) -> Result<ScanEnd, FormatError> {
        while self.next_record()?.is_some() {}
        let mut t = [0u8; TRAILER_LEN];
        self.r
            .read_exact(&mut t)
            .map_err(|_| FormatError::BadTrailer)?;
        if &t[..8] != TRAILER_MAGIC {
            return Err(FormatError::BadTrailer);
        }
        let records = u32::from_le_bytes([t[8], t[9], t[10], t[11]]);
        if records != self.records {
            return Err(FormatError::BadTrailer);
        }
        self.hasher.update(&t[..TRAILER_LEN - 32]);
        let actual: Id = self.hasher.finalize().into();
        let claimed = Id::from_slice(&t[TRAILER_LEN - 32..]).ok_or(FormatError::BadTrailer)?;
        if actual != claimed {
            return Err(FormatError::HashMismatch { claimed, actual });
        }
        Ok(ScanEnd {
            pack_id: actual,
            records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header_strategy() -> impl Strategy<Value = Header> {
        (
            any::<bool>(),
            any::<bool>(),
            0u32..1000,
            0u32..1 << 20,
            0u32..1 << 20,
        )
            .prop_map(|(f, z, meta_len, raw_len, stored)| Header {
                kind: if f { Kind::Frame } else { Kind::Manifest },
                codec: if z { Codec::Zstd } else { Codec::Raw },
                meta_len,
                raw_len,
                stored_len: if z { stored } else { raw_len },
            })
    }

    proptest! {
        #[test]
        fn header_round_trips(h in header_strategy(), meta in proptest::collection::vec(any::<u8>(), 0..100)) {
            let b = encode_header(&h, &meta);
            prop_assert_eq!(decode_header(&b, 0).unwrap(), h);
            prop_assert!(check_header(&b, &meta, 0).is_ok());
        }

        #[test]
        fn any_flipped_header_bit_is_caught(h in header_strategy(), bit in 0usize..HEADER_LEN * 8) {
            let meta = b"meta".to_vec();
            let mut b = encode_header(&h, &meta);
            b[bit / 8] ^= 1 << (bit % 8);
            let caught = decode_header(&b, 0).is_err() || check_header(&b, &meta, 0).is_err();
            prop_assert!(caught);
        }

        #[test]
        fn frame_meta_round_trips(chunks in proptest::collection::vec((any::<[u8; 32]>(), 0u32..100_000), 0..50)) {
            let chunks: Vec<(Id, u32)> = chunks.into_iter().map(|(i, l)| (Id(i), l)).collect();
            let raw: u32 = chunks.iter().map(|c| c.1).sum();
            let m = encode_frame_meta(&chunks, &[]);
            prop_assert_eq!(decode_frame_meta(&m, raw, Codec::Zstd, 0).unwrap().chunks, chunks.clone());
            let bases = vec![Id([7; 32]), Id([9; 32])];
            let m = encode_frame_meta(&chunks, &bases);
            let d = decode_frame_meta(&m, raw, Codec::ZstdDict, 0).unwrap();
            prop_assert_eq!(d, FrameMeta { chunks, bases });
        }

        #[test]
        fn compress_round_trips(data in proptest::collection::vec(any::<u8>(), 0..5000), rep in 1usize..4) {
            let raw = data.repeat(rep);
            match compress_if_smaller(&raw, 1) {
                Some(z) => {
                    prop_assert!(z.len() < raw.len());
                    prop_assert_eq!(decompress(Codec::Zstd, &z, raw.len() as u32, &[], 0).unwrap(), raw);
                }
                None => prop_assert_eq!(decompress(Codec::Raw, &raw, raw.len() as u32, &[], 0).unwrap(), raw.clone()),
            }
        }
    }

    #[test]
    fn dictionary_frames_need_their_bases() {
        let base: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i.wrapping_mul(2654435761)).to_le_bytes())
            .collect();
        let mut new = base.clone();
        new[1000] ^= 1;
        new[300_000] ^= 1;
        let plain = compress_if_smaller(&new, 1)
            .map(|z| z.len())
            .unwrap_or(new.len());
        let z = compress_with_dict(&new, 1, &base).unwrap();
        assert!(z.len() * 20 < plain, "delta {} vs plain {plain}", z.len());
        assert_eq!(
            decompress(Codec::ZstdDict, &z, new.len() as u32, &base, 0).unwrap(),
            new
        );
        let mut wrong = base.clone();
        wrong[5] ^= 1;
        let r = decompress(Codec::ZstdDict, &z, new.len() as u32, &wrong, 0);
        assert!(r.map(|d| d != new).unwrap_or(true));
    }

    #[test]
    fn decompress_refuses_lies_about_length() {
        let raw = vec![7u8; 10_000];
        let z = compress_if_smaller(&raw, 1).unwrap();
        assert!(decompress(Codec::Zstd, &z, 9_999, &[], 0).is_err());
        assert!(decompress(Codec::Raw, &raw, 5, &[], 0).is_err());
    }
}
