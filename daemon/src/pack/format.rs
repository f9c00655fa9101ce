//! The pack file format — defined here and nowhere else.
//!
//! ```text
//! pack    := MAGIC record* trailer
//! MAGIC   := "HOARDPK2"                                   (8 bytes)
//! record  := header meta payload
//! header  := kind[4] codec u8 depth u8 0u8×2 meta_len u32 raw_len u32 stored_len u32
//!            payload_sum u64 check u32                    (32 bytes, little endian)
//!   payload_sum := XXH3-64 of the payload
//!   check := first 4 bytes of BLAKE3(header[0..28] ‖ meta), as u32 LE
//!   codec := 0 raw | 1 zstd | 2 zstd with a dictionary of base chunks
//!   depth := 0 unless codec 2; with codec 2 the frame's delta depth,
//!     1 + the deepest of its bases' frames (1 ..= MAX_DEPTH; 0 in packs
//!     written before December 2026, whose bases are all self-contained,
//!     reads as 1)
//! kind "FRM1": a frame of chunks, compressed together as one zstd frame.
//!   meta := [codec 2: base count u32 ‖ base chunk id[32]×m] (chunk id[32] ‖ len u32)×n
//!   raw_len = Σ len; chunk i's bytes are raw[Σ len<i .. Σ len≤i], and BLAKE3
//!   of them is its id. With codec 2 the payload decodes only with the
//!   concatenated bytes of the base chunks as a raw-content zstd dictionary
//!   (a delta against similar stored chunks, or against the previous
//!   version of the same file); base chunks may be deltas themselves, so a
//!   read decodes a chain of at most MAX_DEPTH delta frames down to
//!   self-contained ones.
//! kind "MAN1": a file manifest (see `crate::manifest`).
//!   meta := file id[32] ‖ BLAKE3(raw manifest encoding)[32]
//! kind "OBJ1": a tree or snapshot (see `crate::objects`), codec 0 or 1.
//!   meta := object kind u8 (1 tree, 2 snapshot) ‖ object id[32]
//!   the id is BLAKE3 of the raw (decompressed) payload.
//! trailer := "HOARDEND" records u32 0u32 pack_id[32]          (48 bytes)
//!   pack_id := BLAKE3 of every byte before it except the payloads; the
//!   file is named by it.
//! ```
//!
//! A pack therefore verifies and re-indexes by itself: the trailer proves it
//! is whole, each header proves its own integrity and, through its
//! `payload_sum`, its payload's (so damage is found record by record), and
//! every chunk, manifest and object carries the BLAKE3 hash that names it.
//! The pack id leaves payloads out because they are already covered twice:
//! hashing them again cost a third BLAKE3 pass over every byte stored.
//!
//! Version 1 ("HOARDPK1", written until November 2026) differs in two ways:
//! headers are 24 bytes, without `payload_sum` (check covers header[0..20]),
//! and the pack id covers every byte before it, payloads included. Both are
//! read; only version 2 is written.

use crate::id::Id;
use std::io::{self, Read};

pub const MAGIC: &[u8; 8] = b"HOARDPK2";
pub const MAGIC_V1: &[u8; 8] = b"HOARDPK1";
pub const TRAILER_MAGIC: &[u8; 8] = b"HOARDEND";
/// Header length in the version written.
pub const HEADER_LEN: usize = Version::V2.header_len();
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

/// Deepest delta chain a frame may end: a read decodes at most this many
/// delta frames, one below the other, before reaching self-contained ones.
pub const MAX_DEPTH: u8 = 8;

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

/// The format versions a reader accepts (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub const fn header_len(self) -> usize {
        match self {
            Version::V1 => 24,
            Version::V2 => 32,
        }
    }

    fn from_magic(m: &[u8; 8]) -> Option<Version> {
        match m {
            m if m == MAGIC => Some(Version::V2),
            m if m == MAGIC_V1 => Some(Version::V1),
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
    /// Delta depth (codec 2 only; see the grammar).
    pub depth: u8,
    /// XXH3-64 of the payload (version 2; `None` in version 1 packs).
    pub payload_sum: Option<u64>,
}

/// The checksum a header records for its payload.
pub fn payload_sum(payload: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(payload)
}

/// [`payload_sum`] of a payload written in pieces.
pub type PayloadSummer = xxhash_rust::xxh3::Xxh3;

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
    #[error("payload of the record at offset {0} is damaged (its checksum does not match)")]
    BadPayload(u64),
    #[error("pack content hashes to {actual}, but the pack says {claimed}")]
    HashMismatch { claimed: Id, actual: Id },
    #[error("frame payload at offset {offset} cannot be decoded: {msg}")]
    Decode { offset: u64, msg: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Encodes a version 2 record header with its checksum over header and meta;
/// `h.payload_sum` must be set.
pub fn encode_header(h: &Header, meta: &[u8]) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..4].copy_from_slice(h.kind.tag());
    b[4] = h.codec as u8;
    b[5] = if h.codec == Codec::ZstdDict {
        h.depth
    } else {
        0
    };
    b[8..12].copy_from_slice(&h.meta_len.to_le_bytes());
    b[12..16].copy_from_slice(&h.raw_len.to_le_bytes());
    b[16..20].copy_from_slice(&h.stored_len.to_le_bytes());
    b[20..28].copy_from_slice(&h.payload_sum.unwrap_or(0).to_le_bytes());
    let check = header_check(&b[..28], meta);
    b[28..32].copy_from_slice(&check.to_le_bytes());
    b
}

fn header_check(fixed: &[u8], meta: &[u8]) -> u32 {
    let mut h = blake3::Hasher::new();
    h.update(fixed);
    h.update(meta);
    u32::from_le_bytes(h.finalize().as_bytes()[..4].try_into().unwrap_or([0; 4]))
}

/// Decodes the fixed part of a header (`b` is `v.header_len()` bytes); the
/// check is verified by [`check_header`] once the meta has been read.
pub fn decode_header(b: &[u8], v: Version, offset: u64) -> Result<Header, FormatError> {
    let bad = || FormatError::BadHeader(offset);
    if b.len() != v.header_len() {
        return Err(bad());
    }
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let kind = Kind::from_tag(&b[0..4]).ok_or_else(bad)?;
    let codec = Codec::from_u8(b[4]).ok_or_else(bad)?;
    if b[6..8] != [0, 0] || b[5] > MAX_DEPTH || (codec != Codec::ZstdDict && b[5] != 0) {
        return Err(bad());
    }
    let depth = if codec == Codec::ZstdDict {
        b[5].max(1)
    } else {
        0
    };
    let payload_sum = match v {
        Version::V1 => None,
        Version::V2 => Some(u64::from_le_bytes(b[20..28].try_into().map_err(|_| bad())?)),
    };
    let h = Header {
        kind,
        codec,
        meta_len: u32_at(8),
        raw_len: u32_at(12),
        stored_len: u32_at(16),
        depth,
        payload_sum,
    };
    if h.meta_len > MAX_META || h.raw_len > MAX_RAW || h.stored_len > MAX_RAW {
        return Err(bad());
    }
    if h.codec == Codec::Raw && h.raw_len != h.stored_len {
        return Err(bad());
    }
    Ok(h)
}

/// Verifies a header's check (its last 4 bytes) over the rest and the meta.
pub fn check_header(b: &[u8], meta: &[u8], offset: u64) -> Result<(), FormatError> {
    let (fixed, check) = b
        .split_last_chunk::<4>()
        .ok_or(FormatError::BadHeader(offset))?;
    if header_check(fixed, meta) == u32::from_le_bytes(*check) {
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
    /// Whether the payload matches its header's checksum (`None` in a
    /// version 1 pack, whose payloads only the pack id covers).
    pub payload_intact: Option<bool>,
    header_len: usize,
}

impl ScannedRecord {
    pub fn payload_offset(&self) -> u64 {
        self.offset + self.header_len as u64 + self.header.meta_len as u64
    }
}

/// Reads a whole pack front to back, checking headers, payload checksums,
/// the trailer and the pack id. With `read_payloads` false, payloads are
/// still read and checked but not kept. A damaged payload does not stop the
/// scan (its record says so, for a caller that wants to look closer at it);
/// [`Scanner::finish`] then fails.
pub struct Scanner<R: Read> {
    r: R,
    version: Version,
    hasher: blake3::Hasher,
    pos: u64,
    len: u64,
    read_payloads: bool,
    records: u32,
    done: bool,
    /// Offset of the first record whose payload is damaged.
    damaged: Option<u64>,
    /// Reading a skeleton (`super::idx`): frame payloads are left out.
    skeleton: bool,
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
        let version = Version::from_magic(&m).ok_or(FormatError::BadMagic)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&m);
        Ok(Scanner {
            r,
            version,
            hasher,
            pos: 8,
            len,
            read_payloads,
            records: 0,
            done: false,
            damaged: None,
            skeleton: false,
        })
    }

    /// Reads a pack's skeleton (see `super::idx`): the pack of `len` bytes
    /// with its frames' payloads left out, checked the same way. Version 2
    /// only (a version 1 pack id covers the payloads).
    pub fn skeleton(r: R, len: u64) -> Result<Self, FormatError> {
        let mut s = Scanner::new(r, len, true)?;
        if s.version != Version::V2 {
            return Err(FormatError::BadMagic);
        }
        s.skeleton = true;
        Ok(s)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => FormatError::Truncated(self.pos),
            _ => FormatError::Io(e),
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Reads bytes the pack id covers.
    fn read_hashed(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        self.read(buf)?;
        self.hasher.update(buf);
        Ok(())
    }

    /// Reads a record's payload, checks it against the header (see
    /// [`ScannedRecord::payload_intact`]) and keeps it when the scan reads
    /// data.
    #[allow(clippy::type_complexity)]
    fn read_payload(
        &mut self,
        h: &Header,
        offset: u64,
    ) -> Result<(Option<Vec<u8>>, Option<bool>), FormatError> {
        if self.skeleton && h.kind == Kind::Frame {
            self.pos += h.stored_len as u64;
            return Ok((None, None));
        }
        let mut sum = PayloadSummer::new();
        let mut left = h.stored_len as usize;
        let mut buf = vec![
            0u8;
            if self.read_payloads {
                left
            } else {
                (64 << 10).min(left)
            }
        ];
        while left > 0 {
            let n = left.min(buf.len());
            self.read(&mut buf[..n])?;
            match self.version {
                Version::V1 => {
                    self.hasher.update(&buf[..n]);
                }
                Version::V2 => sum.update(&buf[..n]),
            }
            left -= n;
        }
        let intact = h.payload_sum.map(|want| sum.digest() == want);
        if intact == Some(false) {
            self.damaged.get_or_insert(offset);
        }
        Ok((self.read_payloads.then_some(buf), intact))
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
        let header_len = self.version.header_len();
        if self.pos + header_len as u64 > trailer_at {
            return Err(FormatError::Truncated(self.pos));
        }
        let offset = self.pos;
        let mut hb = [0u8; HEADER_LEN];
        let hb = &mut hb[..header_len];
        self.read_hashed(hb)?;
        let header = decode_header(hb, self.version, offset)?;
        let body = header.meta_len as u64 + header.stored_len as u64;
        if self.pos + body > trailer_at {
            return Err(FormatError::BadHeader(offset));
        }
        let mut meta = vec![0u8; header.meta_len as usize];
        self.read_hashed(&mut meta)?;
        check_header(hb, &meta, offset)?;
        let (payload, payload_intact) = self.read_payload(&header, offset)?;
        self.records += 1;
        Ok(Some(ScannedRecord {
            offset,
            header,
            meta,
            payload,
            payload_intact,
            header_len,
        }))
    }

    /// Reads and checks the trailer; the pack id is proven by re-hashing.
    /// Fails if any payload was damaged.
    pub fn finish(mut self) -> Result<ScanEnd, FormatError> {
        while self.next_record()?.is_some() {}
        if let Some(at) = self.damaged {
            return Err(FormatError::BadPayload(at));
        }
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

/// A version 1 pack of `payloads` as raw frames, one chunk each, as written
/// before version 2: 24-byte headers, the pack id over every byte.
#[cfg(test)]
pub(crate) fn v1_pack(payloads: &[&[u8]]) -> (Id, Vec<u8>) {
    let mut b = MAGIC_V1.to_vec();
    for p in payloads {
        let meta = encode_frame_meta(&[(Id::of(p), p.len() as u32)], &[]);
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(b"FRM1");
        h[8..12].copy_from_slice(&(meta.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(p.len() as u32).to_le_bytes());
        h[16..20].copy_from_slice(&(p.len() as u32).to_le_bytes());
        let check = header_check(&h[..20], &meta);
        h[20..24].copy_from_slice(&check.to_le_bytes());
        b.extend_from_slice(&h);
        b.extend_from_slice(&meta);
        b.extend_from_slice(p);
    }
    b.extend_from_slice(&encode_trailer_prefix(payloads.len() as u32));
    let id = Id::of(&b);
    b.extend_from_slice(&id.0);
    (id, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header_strategy() -> impl Strategy<Value = Header> {
        (
            any::<bool>(),
            0u8..3,
            1..=MAX_DEPTH,
            0u32..1000,
            0u32..1 << 20,
            0u32..1 << 20,
        )
            .prop_map(|(f, c, depth, meta_len, raw_len, stored)| {
                let codec = Codec::from_u8(c).unwrap_or(Codec::Raw);
                Header {
                    kind: if f { Kind::Frame } else { Kind::Manifest },
                    codec,
                    meta_len,
                    raw_len,
                    stored_len: if codec == Codec::Raw { raw_len } else { stored },
                    depth: if codec == Codec::ZstdDict { depth } else { 0 },
                    payload_sum: Some(raw_len as u64 * 0x9e37_79b9_7f4a_7c15),
                }
            })
    }

    #[test]
    fn delta_depth_is_bounded_and_only_on_deltas() {
        let h = |codec, depth| Header {
            kind: Kind::Frame,
            codec,
            meta_len: 0,
            raw_len: 10,
            stored_len: 10,
            depth,
            payload_sum: Some(1),
        };
        let enc = |codec, depth| encode_header(&h(codec, depth), &[]);
        let dec = |b: &[u8]| decode_header(&b[..HEADER_LEN], Version::V2, 0);
        // Written before depths were recorded: a delta at depth 0 reads as 1.
        let mut legacy = enc(Codec::ZstdDict, 1);
        legacy[5] = 0;
        assert_eq!(dec(&legacy).map(|h| h.depth).ok(), Some(1));
        assert_eq!(
            dec(&enc(Codec::ZstdDict, MAX_DEPTH)).map(|h| h.depth).ok(),
            Some(MAX_DEPTH)
        );
        let mut deep = enc(Codec::ZstdDict, MAX_DEPTH);
        deep[5] = MAX_DEPTH + 1;
        assert!(
            dec(&deep).is_err(),
            "a chain deeper than MAX_DEPTH is refused"
        );
        let mut raw = enc(Codec::Raw, 0);
        raw[5] = 1;
        assert!(dec(&raw).is_err(), "only a delta has a depth");
    }

    proptest! {
        #[test]
        fn header_round_trips(h in header_strategy(), meta in proptest::collection::vec(any::<u8>(), 0..100)) {
            let b = encode_header(&h, &meta);
            prop_assert_eq!(decode_header(&b, Version::V2, 0).unwrap(), h);
            prop_assert!(check_header(&b, &meta, 0).is_ok());
        }

        #[test]
        fn any_flipped_header_bit_is_caught(h in header_strategy(), bit in 0usize..HEADER_LEN * 8) {
            let meta = b"meta".to_vec();
            let mut b = encode_header(&h, &meta);
            b[bit / 8] ^= 1 << (bit % 8);
            let caught = decode_header(&b, Version::V2, 0).is_err() || check_header(&b, &meta, 0).is_err();
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

    /// A version 2 pack of `payloads` as raw frames, one chunk each, written
    /// by [`crate::pack::PackWriter`]; returns its id and bytes.
    fn v2_pack(payloads: &[&[u8]]) -> (Id, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::backend::LocalDir::open(dir.path()).unwrap();
        let mut w = crate::pack::PackWriter::new(&backend, dir.path()).unwrap();
        for p in payloads {
            let f = crate::pack::Frame::uncompressed(vec![(Id::of(p), p.len() as u32)], p.to_vec());
            w.append_frame(&f).unwrap();
        }
        let (id, _, _) = w.finish().unwrap();
        (id, std::fs::read(backend.path_of(&id)).unwrap())
    }

    /// Scans a whole pack; returns its records' (chunk id, payload) and its id.
    #[allow(clippy::type_complexity)]
    fn scan(b: &[u8]) -> Result<(Vec<(Id, Vec<u8>)>, Id), FormatError> {
        let mut s = Scanner::new(b, b.len() as u64, true)?;
        let mut out = Vec::new();
        while let Some(r) = s.next_record()? {
            let fm = decode_frame_meta(&r.meta, r.header.raw_len, r.header.codec, r.offset)?;
            out.push((fm.chunks[0].0, r.payload.unwrap()));
        }
        Ok((out, s.finish()?.pack_id))
    }

    #[test]
    fn both_versions_scan_and_prove_their_id() {
        let payloads: [&[u8]; 3] = [b"first chunk", &[7u8; 100_000], b""];
        for (want, b) in [v2_pack(&payloads), v1_pack(&payloads)] {
            let (got, id) = scan(&b).unwrap();
            assert_eq!(id, want);
            let got: Vec<Vec<u8>> = got
                .into_iter()
                .map(|(chunk, p)| {
                    assert_eq!(chunk, Id::of(&p));
                    p
                })
                .collect();
            assert_eq!(got, payloads.map(|p| p.to_vec()).to_vec());
        }
        assert_eq!(&v2_pack(&payloads).1[..8], MAGIC);
    }

    #[test]
    fn a_damaged_payload_is_named_by_its_record() {
        let (_, mut b) = v2_pack(&[b"first", b"second chunk, damaged below"]);
        let second = 8 + HEADER_LEN + FRAME_ENTRY_LEN + 5;
        b[second + HEADER_LEN + FRAME_ENTRY_LEN + 3] ^= 0x10;
        // The scan goes on past it (a verifier can still say which chunks
        // it damages), then fails naming it.
        let mut s = Scanner::new(&b[..], b.len() as u64, true).unwrap();
        let mut seen = Vec::new();
        while let Some(r) = s.next_record().unwrap() {
            seen.push((r.offset, r.payload_intact));
        }
        assert_eq!(seen, [(8, Some(true)), (second as u64, Some(false))]);
        match s.finish() {
            Err(FormatError::BadPayload(at)) => assert_eq!(at, second as u64),
            other => panic!("{other:?}"),
        }
        // Version 1 finds it only at the end, for the whole pack.
        let (_, mut b) = v1_pack(&[b"first", b"second"]);
        let second = 8 + 24 + FRAME_ENTRY_LEN + 5;
        b[second + 24 + FRAME_ENTRY_LEN + 1] ^= 0x10;
        assert!(matches!(scan(&b), Err(FormatError::HashMismatch { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_flipped_bit_of_a_pack_is_caught(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..4),
            at in any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            let (_, mut b) = v2_pack(&refs);
            let i = at.index(b.len());
            b[i] ^= 1 << bit;
            prop_assert!(scan(&b).is_err(), "flip at {} of {} not caught", i, b.len());
        }
    }
}
