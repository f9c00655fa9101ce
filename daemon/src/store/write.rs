//! Writing: frames appended to the one open pack under the writer lock,
//! full packs sealed (made durable) by the sealer thread outside it, then
//! indexed; files committed only once every pack they depend on is sealed.

use super::Shared;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{ChunkLoc, PackInfo, RecordAt, StatEntry, Stats, RECORD_MANIFEST};
use crate::manifest::Manifest;
use crate::pack::format::{self};
use crate::pack::{Frame, PackWriter};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::mpsc;

/// The generations of packs a file's chunks were found in or written to.
#[derive(Debug, Default, Clone)]
pub struct Deps(BTreeSet<u64>);

/// What [`Store::append_frames`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Appended {
    pub new_chunks: u64,
    pub new_raw: u64,
    pub new_stored: u64,
    pub reused: u64,
}

/// A file whose chunks are all appended, waiting to be committed.
#[derive(Debug)]
pub struct Completed {
    pub file: Id,
    pub manifest: Manifest,
    pub deps: Deps,
    /// Path key and entry for the stat cache, when the file is safe to cache.
    pub stat: Option<(Vec<u8>, StatEntry)>,
}

pub(super) struct OpenPack {
    pub(super) writer: PackWriter,
    pub(super) contents: PackContents,
}

/// What a pack holds, to be indexed once it is durable.
#[derive(Default)]
pub(super) struct PackContents {
    pub(super) chunks: Vec<(Id, ChunkLoc)>,
    /// Sketch features of its self-contained chunks, to find them as bases.
    pub(super) features: Vec<([u8; 9], Id)>,
    pub(super) manifests: Vec<(Id, Manifest)>,
    /// Trees and snapshots: id, kind, encoding.
    pub(super) objects: Vec<(Id, u8, Vec<u8>)>,
    /// Where its manifest and object records lie.
    pub(super) records: Vec<RecordAt>,
    pub(super) unique_bytes: u64,
}

/// A pack taken out of the writer to be made durable outside the lock.
pub(super) struct Sealing {
    pub(super) gen: u64,
    pub(super) open: OpenPack,
}

/// How many packs back a failure counts as recent.
const RECENT_PACKS: u64 = 64;

pub(super) struct Writer {
    pub(super) open: Option<OpenPack>,
    pub(super) generation: u64,
    /// Generations whose pack failed, and why.
    pub(super) aborted: HashMap<u64, String>,
    /// Chunks in the open pack (not yet indexed), by generation.
    pub(super) pending: HashMap<Id, u64>,
    pub(super) pending_manifests: HashMap<Id, u64>,
    /// Generations being sealed right now (outside the lock).
    pub(super) sealing: BTreeSet<u64>,
    pub(super) stats: Stats,
}

/// Where each of a frame's chunks lies once the frame is placed in a pack
/// (the pack id is filled in when the pack is sealed).
pub(super) fn placed_locs(
    chunks: &[(Id, u32)],
    placed: &crate::pack::Placed,
) -> Vec<(Id, ChunkLoc)> {
    let mut off = 0u32;
    chunks
        .iter()
        .map(|&(id, len)| {
            let loc = ChunkLoc {
                pack: Id([0; 32]),
                payload_offset: placed.payload_offset,
                meta_len: placed.meta_len,
                stored_len: placed.stored_len,
                raw_len: placed.raw_len,
                codec: placed.codec,
                offset_in_frame: off,
                len,
                depth: placed.depth,
            };
            off += len;
            (id, loc)
        })
        .collect()
}

impl Shared {
    /// Appends the frames' chunks that are neither stored nor in flight.
    pub fn append_frames(&self, frames: Vec<Frame>, deps: &mut Deps) -> Result<Appended> {
        let mut to_seal = Vec::new();
        let r = self.append_locked(frames, deps, &mut to_seal);
        // Full packs are made durable by the sealer while ingest goes on
        // (sent after the lock is released: the sealer needs it). Every
        // taken pack must be finished, or commits would wait for it forever.
        let mut first_err = None;
        for s in to_seal {
            let queue = self
                .seal_queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let sent = match queue {
                Some(q) => match q.send(s) {
                    Ok(()) => Ok(()),
                    Err(mpsc::SendError(s)) => self.finish_seal(s),
                },
                None => self.finish_seal(s),
            };
            if let Err(e) = sent {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        r
    }

    pub(super) fn append_locked(
        &self,
        frames: Vec<Frame>,
        deps: &mut Deps,
        to_seal: &mut Vec<Sealing>,
    ) -> Result<Appended> {
        let mut w = self.lock();
        let unsure: Vec<Id> = frames
            .iter()
            .flat_map(|f| f.chunks.iter().map(|c| c.0))
            .filter(|id| !w.pending.contains_key(id))
            .collect();
        let indexed: HashSet<Id> = unsure
            .iter()
            .zip(self.index.chunk_locs(&unsure)?)
            .filter_map(|(id, l)| l.map(|_| *id))
            .collect();
        // A delta's bases must still be here (a prune may have dropped one
        // since the delta was made): leased, or the frame is re-made whole.
        let bases: Vec<Id> = frames
            .iter()
            .flat_map(|f| f.bases.iter().copied())
            .filter(|id| !w.pending.contains_key(id))
            .collect();
        let based: HashSet<Id> = bases
            .iter()
            .zip(self.index.chunk_locs(&bases)?)
            .filter_map(|(id, l)| l.map(|_| *id))
            .collect();
        self.lease(indexed.iter().chain(&based))?;
        let mut out = Appended::default();
        for mut frame in frames {
            if !frame
                .bases
                .iter()
                .all(|b| based.contains(b) || w.pending.contains_key(b))
            {
                frame.compress(self.params.zstd_level);
            }
            let mut dup = false;
            for (id, _) in &frame.chunks {
                if let Some(g) = w.pending.get(id) {
                    deps.0.insert(*g);
                    dup = true;
                } else if indexed.contains(id) {
                    dup = true;
                }
            }
            let frame = if dup {
                let before = frame.chunks.len() as u64;
                let pending = &w.pending;
                match frame.without(
                    |id| pending.contains_key(id) || indexed.contains(id),
                    self.params.zstd_level,
                ) {
                    Some(f) => {
                        out.reused += before - f.chunks.len() as u64;
                        f
                    }
                    None => {
                        out.reused += before;
                        continue;
                    }
                }
            } else {
                frame
            };
            let gen = w.generation;
            let open = self.open_pack(&mut w)?;
            let placed = match open.writer.append_frame(&frame) {
                Ok(p) => p,
                Err(e) => {
                    self.abort_open(&mut w);
                    return Err(e);
                }
            };
            open.contents
                .chunks
                .extend(placed_locs(&frame.chunks, &placed));
            open.contents.unique_bytes += frame.raw.len() as u64;
            if frame.bases.is_empty() {
                for (&(id, _), sk) in frame.chunks.iter().zip(&frame.sketches) {
                    for (lane, f) in sk.iter().flatten().enumerate() {
                        open.contents
                            .features
                            .push((crate::index::feature_key(lane, *f), id));
                    }
                }
            }
            let full = open.writer.len() >= self.params.pack_target;
            for &(id, _) in &frame.chunks {
                w.pending.insert(id, gen);
            }
            deps.0.insert(gen);
            out.new_chunks += frame.chunks.len() as u64;
            out.new_raw += frame.raw.len() as u64;
            out.new_stored +=
                (format::HEADER_LEN + placed.meta_len as usize + frame.stored().len()) as u64;
            if full {
                to_seal.extend(self.take_for_seal(&mut w));
            }
        }
        Ok(out)
    }

    pub(super) fn open_pack<'w>(&self, w: &'w mut Writer) -> Result<&'w mut OpenPack> {
        if w.open.is_none() {
            w.open = Some(OpenPack {
                writer: PackWriter::new(&*self.backend, &self.dir.join("packs"))?,
                contents: PackContents::default(),
            });
        }
        Ok(w.open.as_mut().expect("opened above"))
    }

    /// Drops the open pack after a failed write: nothing in it is durable.
    pub(super) fn abort_open(&self, w: &mut Writer) {
        if w.open.take().is_some() {
            let gen = w.generation;
            w.generation += 1;
            w.aborted.insert(gen, "a write to its pack failed".into());
            w.pending.retain(|_, g| *g != gen);
            w.pending_manifests.retain(|_, g| *g != gen);
            tracing::warn!(generation = gen, "abandoned a pack after a write failure");
        }
    }

    /// Takes the open pack out of the writer for sealing (under the lock).
    pub(super) fn take_for_seal(&self, w: &mut Writer) -> Option<Sealing> {
        let open = w.open.take()?;
        let gen = w.generation;
        w.generation += 1;
        w.sealing.insert(gen);
        Some(Sealing { gen, open })
    }

    /// Makes a taken pack durable (without the lock), then indexes it.
    pub(super) fn finish_seal(&self, s: Sealing) -> Result<()> {
        let finished = s
            .open
            .writer
            .finish_with(&s.open.contents.features)
            .map(|(id, len, records, _)| (id, len, records));
        let mut w = self.lock();
        let r = self.index_sealed(&mut w, s.gen, &s.open.contents, finished);
        w.sealing.remove(&s.gen);
        drop(w);
        self.sealed.notify_all();
        r
    }

    /// Seals the open pack while holding the lock (for maintenance).
    pub(super) fn seal_now(&self, w: &mut Writer) -> Result<()> {
        let Some(s) = self.take_for_seal(w) else {
            return Ok(());
        };
        let finished = s
            .open
            .writer
            .finish_with(&s.open.contents.features)
            .map(|(id, len, records, _)| (id, len, records));
        let r = self.index_sealed(w, s.gen, &s.open.contents, finished);
        w.sealing.remove(&s.gen);
        r
    }

    /// Records a sealed pack's contents in the index; a failed seal marks
    /// its generation aborted. Either way its chunks stop being pending.
    pub(super) fn index_sealed(
        &self,
        w: &mut Writer,
        gen: u64,
        contents: &PackContents,
        finished: Result<(Id, u64, u32)>,
    ) -> Result<()> {
        let result = finished.and_then(|(pack, len, records)| {
            // Manifest segments first, in batches of bounded size (a 20 GB
            // file's list is tens of MB); a file becomes visible with its
            // head, in the final batch below.
            let mut segs = self.index.batch();
            let mut batched = 0usize;
            for (file, m) in &contents.manifests {
                segs.put_manifest_segments(file, m);
                batched += m.chunks.len() * crate::manifest::ENTRY_LEN;
                if batched >= 4 << 20 {
                    std::mem::replace(&mut segs, self.index.batch()).write(false)?;
                    batched = 0;
                }
            }
            segs.write(false)?;
            let mut b = self.index.batch();
            let now = super::now_ms();
            for (id, mut loc) in contents.chunks.iter().copied() {
                loc.pack = pack;
                b.put_chunk(&id, &loc);
                b.put_lease(&id, now);
            }
            for r in &contents.records {
                b.put_record(&pack, r);
                b.put_lease(&r.id, now);
            }
            for (file, m) in &contents.manifests {
                b.put_file_head(file, m);
            }
            for (key, id) in &contents.features {
                b.put_feature(key, id);
            }
            for (id, kind, raw) in &contents.objects {
                b.put_object(id, *kind, raw);
            }
            b.put_pack(&pack, &PackInfo { len, records });
            let mut stats = w.stats;
            stats.chunks += contents.chunks.len() as u64;
            stats.unique_bytes += contents.unique_bytes;
            stats.stored_bytes += len;
            stats.packs += 1;
            stats.files += contents.manifests.len() as u64;
            b.put_stats(&stats);
            b.write(false)?;
            w.stats = stats;
            tracing::debug!(pack = %pack.hex(), len, records, "sealed pack");
            Ok(())
        });
        if let Err(e) = &result {
            tracing::error!(generation = gen, error = %e, "sealing a pack failed");
            w.aborted.insert(gen, e.to_string());
        }
        w.pending.retain(|_, g| *g != gen);
        w.pending_manifests.retain(|_, g| *g != gen);
        result
    }

    /// Why the newest of the last few packs that failed to be stored
    /// failed (for a message about data that is missing because of it).
    pub fn recent_write_failure(&self) -> Option<String> {
        let w = self.lock();
        let (gen, why) = w.aborted.iter().max_by_key(|(g, _)| **g)?;
        (gen + RECENT_PACKS >= w.generation).then(|| why.clone())
    }

    /// Makes files durable and acknowledgeable, in the order that keeps a
    /// crash at any point verifiable: (1) every pack holding their chunks is
    /// sealed; (2) files whose packs failed are refused, the others' manifests
    /// are appended and (3) sealed in turn; (4) stat-cache entries and
    /// counters are written with a synced WAL. One result per file, in order.
    pub fn commit(&self, files: &mut [Completed], unchanged_bytes: u64) -> Result<Vec<Result<()>>> {
        self.seal_and_wait();
        let failed = |w: &Writer, f: &Completed| {
            f.deps.0.iter().find_map(|g| w.aborted.get(g)).map(|why| {
                Error::Transient(format!(
                    "a pack holding some of its data could not be written ({why}); re-run `hoard add`"
                ))
            })
        };
        let mut w = self.lock();
        let mut results: Vec<Result<()>> = files
            .iter()
            .map(|f| failed(&w, f).map_or(Ok(()), Err))
            .collect();
        let ids: Vec<Id> = files.iter().map(|f| f.file).collect();
        let present = self.index.files_present(&ids)?;
        self.lease(
            ids.iter()
                .zip(&present)
                .filter(|(_, p)| **p)
                .map(|(i, _)| i),
        )?;
        for ((f, present), r) in files.iter_mut().zip(present).zip(&results) {
            if present || r.is_err() {
                continue;
            }
            if let Some(g) = w.pending_manifests.get(&f.file) {
                f.deps.0.insert(*g);
                continue;
            }
            let gen = w.generation;
            let open = self.open_pack(&mut w)?;
            let placed = match open.writer.append_manifest(&f.file, &f.manifest) {
                Ok(p) => p,
                Err(e) => {
                    self.abort_open(&mut w);
                    return Err(e);
                }
            };
            open.contents.records.push(RecordAt {
                offset: placed.record_offset(),
                kind: RECORD_MANIFEST,
                id: f.file,
                len: placed.record_len(),
            });
            // Moved, not copied: a 20 GB file's list is tens of MB. The size stays.
            let m = Manifest {
                size: f.manifest.size,
                chunks: std::mem::take(&mut f.manifest.chunks),
            };
            open.contents.manifests.push((f.file, m));
            w.pending_manifests.insert(f.file, gen);
            f.deps.0.insert(gen);
        }
        drop(w);
        self.seal_and_wait();
        let mut w = self.lock();
        let mut b = self.index.batch();
        let mut stats = w.stats;
        stats.logical_bytes += unchanged_bytes;
        for (f, r) in files.iter().zip(results.iter_mut()) {
            if r.is_ok() {
                if let Some(e) = failed(&w, f) {
                    *r = Err(e);
                    continue;
                }
                stats.logical_bytes += f.manifest.size;
                if let Some((path, entry)) = &f.stat {
                    b.put_stat(path, entry);
                }
            }
        }
        b.put_stats(&stats);
        b.write(true)?;
        w.stats = stats;
        Ok(results)
    }

    /// Seals the open pack and waits until every pack taken so far is sealed
    /// or aborted. A failure is recorded against its generation, where
    /// [`Shared::commit`] finds it for each file concerned.
    pub(super) fn seal_and_wait(&self) {
        let mut w = self.lock();
        let to_seal = self.take_for_seal(&mut w);
        let limit = w.generation;
        drop(w);
        if let Some(s) = to_seal {
            let _ = self.finish_seal(s);
        }
        let mut w = self.lock();
        while w.sealing.range(..limit).next().is_some() {
            w = self.sealed.wait(w).unwrap_or_else(|e| e.into_inner());
        }
    }
}
