//! Packs: how new chunks are laid out. Chunks new to the store are grouped,
//! in file order, into frames of about `frame_target` raw bytes, and each
//! frame is one zstd frame (raw when zstd does not shrink it). Grouping
//! recovers most of the ratio that compressing 16–64 KiB chunks one by one
//! loses (FIELD-NOTES; measured in `benches/`), while any chunk stays cheap to
//! read on its own: one frame of at most ~1 MiB is read and decoded.

pub mod format;

use crate::backend::{PackBackend, PackSink};
use crate::error::{Error, Result};
use crate::id::Id;
use format::{Codec, Header, Kind};
use std::io::Write;
use std::path::Path;

/// A frame ready to append: chunk ids and lengths, raw bytes, and the
/// compressed bytes when compression shrank them.
pub struct Frame {
    pub chunks: Vec<(Id, u32)>,
    pub raw: Vec<u8>,
    pub compressed: Option<Vec<u8>>,
}

impl Frame {
    /// Compresses the concatenation of `chunks` (whose bytes are `raw`).
    pub fn build(chunks: Vec<(Id, u32)>, raw: Vec<u8>, level: i32) -> Frame {
        let compressed = format::compress_if_smaller(&raw, level);
        Frame {
            chunks,
            raw,
            compressed,
        }
    }

    pub fn codec(&self) -> Codec {
        if self.compressed.is_some() {
            Codec::Zstd
        } else {
            Codec::Raw
        }
    }

    /// The bytes stored in the pack.
    pub fn stored(&self) -> &[u8] {
        self.compressed.as_deref().unwrap_or(&self.raw)
    }

    /// The same frame without the chunks `drop` says to leave out.
    pub fn without(&self, drop: impl Fn(&Id) -> bool, level: i32) -> Option<Frame> {
        let mut chunks = Vec::new();
        let mut raw = Vec::new();
        let mut off = 0usize;
        for &(id, len) in &self.chunks {
            let end = off + len as usize;
            if !drop(&id) {
                chunks.push((id, len));
                raw.extend_from_slice(&self.raw[off..end]);
            }
            off = end;
        }
        (!chunks.is_empty()).then(|| Frame::build(chunks, raw, level))
    }
}

/// Where an appended record's payload landed.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    pub payload_offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: Codec,
}

/// Streams one pack into a backend sink, hashing as it goes.
pub struct PackWriter {
    sink: Box<dyn PackSink>,
    hasher: blake3::Hasher,
    len: u64,
    records: u32,
    /// For messages (e.g. the directory that filled up).
    place: std::path::PathBuf,
}

impl PackWriter {
    pub fn new(backend: &dyn PackBackend, place: &Path) -> Result<PackWriter> {
        let mut w = PackWriter {
            sink: backend.create()?,
            hasher: blake3::Hasher::new(),
            len: 0,
            records: 0,
            place: place.to_path_buf(),
        };
        w.put(format::MAGIC)?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.sink
            .write_all(b)
            .map_err(|e| Error::io("cannot write pack in", &self.place, e))?;
        self.hasher.update(b);
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
    ) -> Result<Placed> {
        let header = Header {
            kind,
            codec,
            meta_len: meta.len() as u32,
            raw_len,
            stored_len: payload.len() as u32,
        };
        self.put(&format::encode_header(&header, meta))?;
        self.put(meta)?;
        let payload_offset = self.len;
        self.put(payload)?;
        self.records += 1;
        Ok(Placed {
            payload_offset,
            stored_len: payload.len() as u32,
            raw_len,
            codec,
        })
    }

    pub fn append_frame(&mut self, f: &Frame) -> Result<Placed> {
        let meta = format::encode_frame_meta(&f.chunks);
        self.append(
            Kind::Frame,
            f.codec(),
            &meta,
            f.stored(),
            f.raw.len() as u32,
        )
    }

    /// Appends a file manifest (its encoding is `crate::manifest`).
    pub fn append_manifest(&mut self, file: &Id, encoded: &[u8], level: i32) -> Result<Placed> {
        if encoded.len() as u64 > format::MAX_RAW as u64 {
            return Err(Error::Config(format!(
                "file {file} has too many chunks for one manifest record; use a larger chunk size"
            )));
        }
        let meta = format::encode_manifest_meta(file, &Id::of(encoded));
        match format::compress_if_smaller(encoded, level) {
            Some(z) => self.append(Kind::Manifest, Codec::Zstd, &meta, &z, encoded.len() as u32),
            None => self.append(
                Kind::Manifest,
                Codec::Raw,
                &meta,
                encoded,
                encoded.len() as u32,
            ),
        }
    }

    /// Writes the trailer and makes the pack durable; returns its id and length.
    pub fn finish(mut self) -> Result<(Id, u64, u32)> {
        let prefix = format::encode_trailer_prefix(self.records);
        self.put(&prefix)?;
        let id: Id = self.hasher.finalize().into();
        self.sink
            .write_all(&id.0)
            .map_err(|e| Error::io("cannot write pack in", &self.place, e))?;
        self.len += 32;
        self.sink.commit(&id)?;
        Ok((id, self.len, self.records))
    }
}
