//! Packs: how new chunks are laid out. Chunks new to the store are grouped,
//! in file order, into frames of about `frame_target` raw bytes, and each
//! frame is one zstd frame (raw when zstd does not shrink it). Grouping
//! recovers most of the ratio that compressing 16–64 KiB chunks one by one
//! loses (FIELD-NOTES; measured in `benches/`), while any chunk stays cheap to
//! read on its own: one frame of at most ~1 MiB is read and decoded.
//!
//! Floor 2 (formats): may import `backend`, `manifest`, `sketch`, `id`,
//! `error`; never the index or the store.

pub mod copy;
pub mod format;
pub mod idx;

use crate::backend::{PackBackend, PackSink};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::manifest::Manifest;
use crate::sketch::Sketch;
use format::{Codec, Header, Kind};
use std::io::Write;
use std::path::Path;

/// A frame ready to append: chunk ids and lengths, raw bytes, and the
/// compressed bytes when compression shrank them.
pub struct Frame {
    pub chunks: Vec<(Id, u32)>,
    pub raw: bytes::Bytes,
    pub compressed: Option<Vec<u8>>,
    /// Chunks whose bytes form the dictionary `compressed` was made with
    /// (a delta); empty for a self-contained frame.
    pub bases: Vec<Id>,
    /// Delta depth: 1 + the deepest of its bases' frames (0 without bases).
    pub depth: u8,
    /// Resemblance sketches of the chunks (self-contained frames only, and
    /// only when computed): what makes them findable as future bases.
    pub sketches: Vec<Option<Sketch>>,
}

impl Frame {
    /// Compresses the concatenation of `chunks` (whose bytes are `raw`).
    pub fn build(chunks: Vec<(Id, u32)>, raw: Vec<u8>, level: i32) -> Frame {
        let mut f = Frame::uncompressed(chunks, raw);
        f.compress(level);
        f
    }

    /// A frame not yet compressed (see [`Frame::compress`] and `crate::delta`).
    pub fn uncompressed(chunks: Vec<(Id, u32)>, raw: Vec<u8>) -> Frame {
        Frame {
            chunks,
            raw: raw.into(),
            compressed: None,
            bases: Vec::new(),
            depth: 0,
            sketches: Vec::new(),
        }
    }

    /// Self-contained compression (stays raw when zstd does not shrink it).
    pub fn compress(&mut self, level: i32) {
        self.compressed = format::compress_if_smaller(&self.raw, level);
        self.bases.clear();
    }

    /// Whether zstd finds anything to squeeze, judged on a sample: cheap
    /// enough to run on every frame before deciding to sketch it.
    pub fn looks_compressible(&self, level: i32) -> bool {
        const SAMPLE: usize = 16 << 10;
        let mid = self.raw.len().saturating_sub(SAMPLE) / 2;
        let sample = &self.raw[mid..(mid + SAMPLE).min(self.raw.len())];
        format::compress_if_smaller(sample, level).is_some_and(|z| z.len() * 20 < sample.len() * 19)
    }

    pub fn codec(&self) -> Codec {
        match (&self.compressed, self.bases.is_empty()) {
            (None, _) => Codec::Raw,
            (Some(_), true) => Codec::Zstd,
            (Some(_), false) => Codec::ZstdDict,
        }
    }

    /// Each chunk's bytes within `raw`, in order.
    pub fn chunk_bytes(&self) -> impl Iterator<Item = &[u8]> {
        let mut off = 0usize;
        self.chunks.iter().map(move |&(_, len)| {
            let s = &self.raw[off..off + len as usize];
            off += len as usize;
            s
        })
    }

    /// The bytes stored in the pack.
    pub fn stored(&self) -> &[u8] {
        self.compressed.as_deref().unwrap_or(&self.raw)
    }

    /// The same frame without the chunks `drop` says to leave out,
    /// recompressed as a self-contained frame (a rare path: only when a
    /// concurrent ingest stored some of its chunks first).
    pub fn without(&self, drop: impl Fn(&Id) -> bool, level: i32) -> Option<Frame> {
        let mut chunks = Vec::new();
        let mut raw = Vec::new();
        let mut sketches = Vec::new();
        for (i, (&(id, len), bytes)) in self.chunks.iter().zip(self.chunk_bytes()).enumerate() {
            if !drop(&id) {
                chunks.push((id, len));
                raw.extend_from_slice(bytes);
                sketches.push(self.sketches.get(i).copied().flatten());
            }
        }
        (!chunks.is_empty()).then(|| {
            let mut f = Frame::build(chunks, raw, level);
            if !self.sketches.is_empty() {
                f.sketches = sketches;
            }
            f
        })
    }
}

/// Where an appended record's payload landed.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    pub payload_offset: u64,
    pub meta_len: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: Codec,
    pub depth: u8,
}

impl Placed {
    /// Where the record (header first) starts in its pack.
    pub fn record_offset(&self) -> u64 {
        self.payload_offset - self.meta_len as u64 - format::HEADER_LEN as u64
    }
    /// The record's whole length: header, meta, payload.
    pub fn record_len(&self) -> u32 {
        format::HEADER_LEN as u32 + self.meta_len + self.stored_len
    }
}

/// Streams one pack into a backend sink, hashing what the pack id covers
/// (everything but payloads) as it goes.
pub struct PackWriter {
    sink: Box<dyn PackSink>,
    hasher: blake3::Hasher,
    len: u64,
    records: u32,
    /// For messages (e.g. the directory that filled up).
    place: std::path::PathBuf,
    /// The pack's skeleton, for a backend that keeps an idx object beside
    /// each pack (`idx`); `None` otherwise.
    skeleton: Option<idx::SkeletonBuilder>,
    /// Whether the record being written is a frame (its payload is left out
    /// of the skeleton).
    in_frame: bool,
}

impl PackWriter {
    pub fn new(backend: &dyn PackBackend, place: &Path) -> Result<PackWriter> {
        let mut w = PackWriter {
            sink: backend.create()?,
            hasher: blake3::Hasher::new(),
            len: 0,
            records: 0,
            place: place.to_path_buf(),
            skeleton: None,
            in_frame: false,
        };
        if backend.is_remote() {
            w.keep_skeleton();
        }
        w.put(format::MAGIC)?;
        Ok(w)
    }

    /// Builds the pack's idx object (see `idx`) as it is written; called
    /// before anything is appended.
    pub fn keep_skeleton(&mut self) {
        let mut s = idx::SkeletonBuilder::default();
        if self.len > 0 {
            s.keep(format::MAGIC);
        }
        self.skeleton = Some(s);
    }

    /// Writes bytes the pack id covers.
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.put_payload(b)?;
        self.hasher.update(b);
        Ok(())
    }

    /// Writes payload bytes: their header's `payload_sum` covers them.
    fn put_payload(&mut self, b: &[u8]) -> Result<()> {
        if let Some(s) = self.skeleton.as_mut().filter(|_| !self.in_frame) {
            s.keep(b);
        }
        self.sink
            .write_all(b)
            .map_err(|e| Error::io("cannot write pack in", &self.place, e))?;
        self.len += b.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    fn append(
        &mut self,
        kind: Kind,
        codec: Codec,
        meta: &[u8],
        payload: &[u8],
        raw_len: u32,
        depth: u8,
    ) -> Result<Placed> {
        let depth = if codec == Codec::ZstdDict {
            depth.max(1)
        } else {
            0
        };
        let header = Header {
            kind,
            codec,
            meta_len: meta.len() as u32,
            raw_len,
            stored_len: payload.len() as u32,
            depth,
            payload_sum: Some(format::payload_sum(payload)),
        };
        self.put(&format::encode_header(&header, meta))?;
        self.put(meta)?;
        let payload_offset = self.len;
        self.in_frame = kind == Kind::Frame;
        let put = self.put_payload(payload);
        self.in_frame = false;
        put?;
        self.records += 1;
        Ok(Placed {
            payload_offset,
            meta_len: meta.len() as u32,
            stored_len: payload.len() as u32,
            raw_len,
            codec,
            depth,
        })
    }

    pub fn append_frame(&mut self, f: &Frame) -> Result<Placed> {
        let meta = format::encode_frame_meta(&f.chunks, &f.bases);
        self.append(
            Kind::Frame,
            f.codec(),
            &meta,
            f.stored(),
            f.raw.len() as u32,
            f.depth,
        )
    }

    /// Appends a frame exactly as another pack stores it (a repack copies
    /// frames without decoding them): the same meta, codec and payload.
    pub fn append_stored_frame(
        &mut self,
        codec: Codec,
        meta: &[u8],
        payload: &[u8],
        raw_len: u32,
        depth: u8,
    ) -> Result<Placed> {
        self.append(Kind::Frame, codec, meta, payload, raw_len, depth)
    }

    /// Appends a file manifest (its encoding is `crate::manifest`), raw:
    /// it is mostly chunk ids, which do not compress, and streaming it
    /// keeps a huge file's manifest from being copied in memory.
    pub fn append_manifest(&mut self, file: &Id, m: &Manifest) -> Result<Placed> {
        let len = m.encoded_len();
        if len > format::MAX_RAW as u64 {
            return Err(Error::Invalid(format!(
                "file {file} has too many chunks for one manifest record; use a larger chunk size"
            )));
        }
        let mut h = blake3::Hasher::new();
        let mut sum = format::PayloadSummer::new();
        let _ = m.for_each_piece(|p| {
            h.update(p);
            sum.update(p);
            Ok::<(), ()>(())
        });
        let meta = format::encode_manifest_meta(file, &h.finalize().into());
        let header = Header {
            kind: Kind::Manifest,
            codec: Codec::Raw,
            meta_len: meta.len() as u32,
            raw_len: len as u32,
            stored_len: len as u32,
            depth: 0,
            payload_sum: Some(sum.digest()),
        };
        self.put(&format::encode_header(&header, &meta))?;
        self.put(&meta)?;
        let payload_offset = self.len;
        m.for_each_piece(|p| self.put_payload(p))?;
        self.records += 1;
        Ok(Placed {
            payload_offset,
            meta_len: meta.len() as u32,
            stored_len: len as u32,
            raw_len: len as u32,
            codec: Codec::Raw,
            depth: 0,
        })
    }

    /// Appends a tree or snapshot encoding, compressed when that shrinks it.
    pub fn append_object(&mut self, kind: u8, id: &Id, raw: &[u8], level: i32) -> Result<Placed> {
        if raw.len() > format::MAX_RAW as usize {
            return Err(Error::Invalid(format!(
                "object {id} is too large for one pack record"
            )));
        }
        let meta = format::encode_object_meta(kind, id);
        match format::compress_if_smaller(raw, level) {
            Some(z) => self.append(Kind::Object, Codec::Zstd, &meta, &z, raw.len() as u32, 0),
            None => self.append(Kind::Object, Codec::Raw, &meta, raw, raw.len() as u32, 0),
        }
    }

    /// Writes the trailer and makes the pack durable; returns its id and length.
    pub fn finish(self) -> Result<(Id, u64, u32)> {
        self.finish_with(&[])
            .map(|(id, len, records, _)| (id, len, records))
    }

    /// [`PackWriter::finish`], with the sketch features of the pack's
    /// chunks for its idx object; returns the idx too when one was built.
    pub fn finish_with(
        mut self,
        features: &[([u8; 9], Id)],
    ) -> Result<(Id, u64, u32, Option<Vec<u8>>)> {
        let prefix = format::encode_trailer_prefix(self.records);
        self.put(&prefix)?;
        let id: Id = self.hasher.finalize().into();
        self.put_payload(&id.0)?;
        let idx = self.skeleton.take().map(|s| s.encode(self.len, features));
        if let Some(i) = &idx {
            self.sink.set_idx(i.clone());
        }
        self.sink.commit(&id)?;
        Ok((id, self.len, self.records, idx))
    }
}
