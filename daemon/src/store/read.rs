//! Reading: byte ranges of files, chunks and frames, every chunk checked
//! against its id; decoded frames cached.

use super::Shared;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{ChunkLoc, StatEntry};
use crate::pack::format::{self, Codec};
use std::sync::Arc;

impl Shared {
    /// Stat-cache entries for `paths` (absolute path bytes).
    pub fn stat_entries(&self, paths: &[&[u8]]) -> Result<Vec<Option<StatEntry>>> {
        self.index.stat_entries(paths)
    }

    pub fn file_size(&self, file: &Id) -> Result<Option<u64>> {
        Ok(self.index.file_head(file)?.map(|h| h.size))
    }

    /// Streams bytes `[offset, offset+len)` of `file` to `out`, verifying
    /// every chunk, touching only the chunks that overlap the range. Returns
    /// the file's size.
    pub fn read_range(
        &self,
        file: &Id,
        offset: u64,
        len: Option<u64>,
        out: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<u64> {
        let head = self.index.file_head(file)?.ok_or_else(|| {
            Error::NotFound(format!(
                "{file} is not in this store; `hoard add` it first (or fetch it from a remote)"
            ))
        })?;
        let end = match len {
            Some(l) => offset.saturating_add(l).min(head.size),
            None => head.size,
        };
        if offset >= end {
            return Ok(head.size);
        }
        let mut cache = FrameCache::default();
        let mut seg = head.segment_for(offset);
        let mut pos = head.segment_starts[seg];
        while pos < end && seg < head.segment_starts.len() {
            let entries = self.index.segment(file, seg)?;
            self.emit_range(file, &entries, &mut pos, offset, end, &mut cache, out)?;
            seg += 1;
        }
        Ok(head.size)
    }

    /// Like [`Shared::read_range`], for a file this store has not recorded:
    /// its chunks are listed by `manifest` (a peer's, for a range read on
    /// demand) and each must be here; every chunk is checked against its id.
    pub fn read_manifest_range(
        &self,
        file: &Id,
        manifest: &crate::manifest::Manifest,
        offset: u64,
        len: Option<u64>,
        out: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let end = match len {
            Some(l) => offset.saturating_add(l).min(manifest.size),
            None => manifest.size,
        };
        let mut pos = 0;
        let mut cache = FrameCache::default();
        self.emit_range(
            file,
            &manifest.chunks,
            &mut pos,
            offset,
            end,
            &mut cache,
            out,
        )
    }

    /// Emits the part of `[offset, end)` that `entries` (chunks starting
    /// at `*pos`) cover, reading only the chunks that overlap it.
    #[allow(clippy::too_many_arguments)]
    fn emit_range(
        &self,
        file: &Id,
        entries: &[(Id, u32)],
        pos: &mut u64,
        offset: u64,
        end: u64,
        cache: &mut FrameCache,
        out: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        // Only the chunks overlapping the range are looked up.
        let mut wanted = Vec::new();
        for &(id, l) in entries {
            let (s, e) = (*pos, *pos + l as u64);
            *pos = e;
            if e <= offset {
                continue;
            }
            if s >= end {
                break;
            }
            wanted.push((id, s, e));
        }
        for piece in wanted.chunks(crate::STAT_BATCH) {
            let ids: Vec<Id> = piece.iter().map(|w| w.0).collect();
            let locs = self.index.chunk_locs(&ids)?;
            for (&(id, s, e), loc) in piece.iter().zip(locs) {
                if self.is_shutting_down() {
                    return Err(Error::Cancelled);
                }
                let loc = loc.ok_or_else(|| {
                    Error::Corrupt(format!(
                        "chunk {} of {file} is missing from the index",
                        id.hex()
                    ))
                })?;
                let data = self.read_chunk(&id, &loc, cache)?;
                if data.len() as u64 != e - s {
                    return Err(Error::Corrupt(format!(
                        "chunk {} of {file} is {} bytes; its manifest says {}",
                        id.hex(),
                        data.len(),
                        e - s
                    )));
                }
                let from = offset.saturating_sub(s) as usize;
                let to = (end.min(e) - s) as usize;
                out(&data[from..to])?;
            }
        }
        Ok(())
    }

    /// One chunk's bytes, verified against its id.
    pub(crate) fn read_chunk(
        &self,
        id: &Id,
        loc: &ChunkLoc,
        cache: &mut FrameCache,
    ) -> Result<Vec<u8>> {
        self.read_chunk_checked(id, loc, cache, true)
    }

    /// Like [`Shared::read_chunk`]; without `check` the chunk is not
    /// hashed (for callers that hash what they read as a whole anyway).
    pub(crate) fn read_chunk_checked(
        &self,
        id: &Id,
        loc: &ChunkLoc,
        cache: &mut FrameCache,
        check: bool,
    ) -> Result<Vec<u8>> {
        match self.read_chunk_at(id, loc, cache, check) {
            // A prune may have moved the chunk since its caller looked it
            // up: read it where the index says it is now.
            Err(e) => match self.index.chunk_locs(&[*id])?.first() {
                Some(Some(now)) if now != loc => self.read_chunk_at(id, now, cache, check),
                _ => Err(e),
            },
            ok => ok,
        }
    }

    fn read_chunk_at(
        &self,
        id: &Id,
        loc: &ChunkLoc,
        cache: &mut FrameCache,
        check: bool,
    ) -> Result<Vec<u8>> {
        let corrupt = |what: String| {
            Error::Corrupt(format!(
                "chunk {} in pack {} (frame at offset {}) is corrupt: {what}",
                id.hex(),
                loc.pack.hex(),
                loc.payload_offset
            ))
        };
        if loc.offset_in_frame as u64 + loc.len as u64 > loc.raw_len as u64 {
            return Err(corrupt("index entry points outside its frame".into()));
        }
        let data = if loc.codec == Codec::Raw && !self.backend.is_remote() {
            // Raw frames on a local disk: read just this chunk.
            let mut b = vec![0u8; loc.len as usize];
            self.backend.read_at(
                &loc.pack,
                loc.payload_offset + loc.offset_in_frame as u64,
                &mut b,
            )?;
            b
        } else {
            let frame = self.frame(loc, cache).map_err(|e| match e {
                Error::Corrupt(m) => corrupt(m),
                e => e,
            })?;
            let s = loc.offset_in_frame as usize;
            frame[s..s + loc.len as usize].to_vec()
        };
        if check && Id::of(&data) != *id {
            cache.forget(&(loc.pack, loc.payload_offset));
            self.recent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(&(loc.pack, loc.payload_offset));
            return Err(corrupt("its content does not hash to its id".into()));
        }
        Ok(data)
    }

    /// A compressed frame's raw bytes (through the cache). A delta frame
    /// first reads its bases (a chain at most `MAX_DEPTH` deep).
    pub(super) fn frame(&self, loc: &ChunkLoc, cache: &mut FrameCache) -> Result<Arc<Vec<u8>>> {
        let key = (loc.pack, loc.payload_offset);
        if let Some(f) = cache.get(&key) {
            return Ok(f);
        }
        let shared = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key);
        if let Some(f) = shared {
            cache.put(key, f.clone());
            return Ok(f);
        }
        let stored =
            self.backend
                .read_vec(&loc.pack, loc.payload_offset, loc.stored_len as usize)?;
        let dict = if loc.codec == Codec::ZstdDict {
            let mut meta = vec![0u8; loc.meta_len as usize];
            let at = loc.payload_offset.saturating_sub(loc.meta_len as u64);
            self.backend.read_at(&loc.pack, at, &mut meta)?;
            let fm = format::decode_frame_meta(&meta, loc.raw_len, loc.codec, loc.payload_offset)
                .map_err(|e| Error::damaged(frame_at(loc), e))?;
            // Bases may be deltas themselves, at most MAX_DEPTH down: a
            // deeper chain (a damaged index or pack) is an error, never a
            // runaway recursion.
            if cache.nesting >= format::MAX_DEPTH {
                return Err(Error::Corrupt(format!(
                    "{}: its delta chain is deeper than {} frames",
                    frame_at(loc),
                    format::MAX_DEPTH
                )));
            }
            cache.nesting += 1;
            let dict = self.bases_dict(&fm.bases, cache);
            cache.nesting -= 1;
            dict?
        } else {
            Vec::new()
        };
        let raw = format::decompress(loc.codec, &stored, loc.raw_len, &dict, loc.payload_offset)
            .map_err(|e| Error::damaged(frame_at(loc), e))?;
        let raw = Arc::new(raw);
        cache.put(key, raw.clone());
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(key, raw.clone());
        Ok(raw)
    }

    /// The base chunks a delta frame is compressed against (none for
    /// other frames).
    pub fn frame_bases(&self, loc: &ChunkLoc) -> Result<Vec<Id>> {
        if loc.codec != Codec::ZstdDict {
            return Ok(Vec::new());
        }
        let mut meta = vec![0u8; loc.meta_len as usize];
        let at = loc.payload_offset.saturating_sub(loc.meta_len as u64);
        self.backend.read_at(&loc.pack, at, &mut meta)?;
        Ok(
            format::decode_frame_meta(&meta, loc.raw_len, loc.codec, loc.payload_offset)
                .map_err(|e| Error::damaged(frame_at(loc), e))?
                .bases,
        )
    }

    /// A frame's payload as it lies in its pack, to send to a peer as stored.
    pub fn frame_payload(&self, loc: &ChunkLoc) -> Result<bytes::Bytes> {
        self.backend
            .read_bytes(&loc.pack, loc.payload_offset, loc.stored_len as usize)
    }

    /// Decodes a frame a peer sent as stored, its bases read from this
    /// store (every base must be here). The caller verifies the chunks.
    pub fn decode_foreign_frame(
        &self,
        codec: Codec,
        raw_len: u32,
        bases: &[Id],
        payload: &[u8],
        cache: &mut FrameCache,
    ) -> Result<Vec<u8>> {
        let mut dict = Vec::new();
        for piece in bases.chunks(crate::STAT_BATCH) {
            for (b, loc) in piece.iter().zip(self.index.chunk_locs(piece)?) {
                let loc = loc.ok_or_else(|| {
                    Error::NotFound(format!("base chunk {} is not in this store", b.hex()))
                })?;
                dict.extend_from_slice(&self.read_chunk(b, &loc, cache)?);
            }
        }
        format::decompress(codec, payload, raw_len, &dict, 0)
            .map_err(|e| Error::Refused(e.to_string()))
    }

    /// The concatenated bytes of `bases`: a delta frame's dictionary.
    pub(crate) fn bases_dict(&self, bases: &[Id], cache: &mut FrameCache) -> Result<Vec<u8>> {
        let locs = self.index.chunk_locs(bases)?;
        let mut dict = Vec::new();
        for (b, loc) in bases.iter().zip(locs) {
            let loc = loc.ok_or_else(|| {
                Error::Corrupt(format!(
                    "its base chunk {} is missing from the index",
                    b.hex()
                ))
            })?;
            dict.extend_from_slice(&self.read_chunk(b, &loc, cache)?);
        }
        Ok(dict)
    }
}

/// Names a stored frame in an error.
fn frame_at(loc: &ChunkLoc) -> String {
    format!("frame at {} in pack {}", loc.payload_offset, loc.pack.hex())
}

/// Recently decoded frames: sequential reads decode each frame once, and a
/// delta frame's bases stay at hand.
pub struct FrameCache {
    frames: Vec<(FrameKey, Arc<Vec<u8>>)>,
    slots: usize,
    /// Delta frames being decoded, one inside the other.
    nesting: u8,
}

impl Default for FrameCache {
    fn default() -> Self {
        // A chain's frames one above the other stay at hand as a read moves on.
        Self::with_slots(24)
    }
}

/// Frames (about 1 MiB each) the store-wide cache keeps.
pub(super) const RECENT_FRAMES: usize = 64;

/// A frame is named by its pack and payload offset.
type FrameKey = (Id, u64);

impl FrameCache {
    pub(crate) fn with_slots(slots: usize) -> Self {
        FrameCache {
            frames: Vec::with_capacity(slots),
            slots,
            nesting: 0,
        }
    }

    fn get(&mut self, key: &(Id, u64)) -> Option<Arc<Vec<u8>>> {
        let i = self.frames.iter().position(|(k, _)| k == key)?;
        let hit = self.frames.remove(i);
        let f = hit.1.clone();
        self.frames.push(hit);
        Some(f)
    }

    fn put(&mut self, key: (Id, u64), frame: Arc<Vec<u8>>) {
        if self.frames.len() >= self.slots {
            self.frames.remove(0);
        }
        self.frames.push((key, frame));
    }

    fn forget(&mut self, key: &(Id, u64)) {
        self.frames.retain(|(k, _)| k != key);
    }
}
