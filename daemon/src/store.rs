//! The store: packs (through a [`PackBackend`]) indexed by RocksDB.
//!
//! Write order, as restic does it: a pack is made durable, then the index
//! entries for what it holds are written, then — for files — the stat cache
//! and counters are written with a synced WAL, and only then is the file
//! acknowledged. A crash at any point leaves a store that opens and verifies;
//! a pack that became durable but was never indexed is indexed at the next
//! open.
//!
//! Concurrent ingests share one open pack. A chunk is appended at most once:
//! the authoritative "is it stored or in flight?" check and the append happen
//! under one lock. Each pack has a generation; a file remembers the
//! generations its chunks live in, and is only acknowledged if all of them
//! were sealed successfully (a pack that failed, e.g. disk full, fails every
//! file that relied on it — nothing is acknowledged that is not durable).

use crate::backend::{LocalDir, PackBackend};
use crate::chunker::ChunkParams;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{ChunkLoc, Index, PackInfo, StatEntry, Stats};
use crate::manifest::Manifest;
use crate::objects::{Object, ObjectKind};
use crate::pack::format::{self, Codec, Kind, Scanner};
use crate::pack::{Frame, PackWriter};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};

/// A store's fixed parameters, recorded in `store.toml` at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreParams {
    pub format: u32,
    pub chunk: ChunkParams,
    pub zstd_level: i32,
    /// Raw bytes of new chunks compressed together as one frame; 0 = each chunk alone.
    pub frame_target: u32,
    /// Seal a pack once it reaches this many bytes.
    pub pack_target: u64,
}

impl Default for StoreParams {
    fn default() -> Self {
        StoreParams {
            format: 1,
            chunk: ChunkParams::with_avg(32 * 1024),
            zstd_level: 1,
            frame_target: 1 << 20,
            pack_target: 64 << 20,
        }
    }
}

impl StoreParams {
    pub fn validate(&self) -> Result<()> {
        self.chunk.validate().map_err(Error::Config)?;
        if self.format != 1 {
            return Err(Error::Config(format!(
                "store format {} is not supported by this hoardd (it knows format 1); upgrade hoard",
                self.format
            )));
        }
        if !(-7..=19).contains(&self.zstd_level) {
            return Err(Error::Config(format!(
                "zstd_level {} is outside -7..=19",
                self.zstd_level
            )));
        }
        if self.frame_target > 16 << 20 || self.pack_target < 1 << 20 || self.pack_target > 1 << 30
        {
            return Err(Error::Config(
                "frame_target must be ≤ 16 MiB and pack_target between 1 MiB and 1 GiB".into(),
            ));
        }
        Ok(())
    }
}

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

struct OpenPack {
    writer: PackWriter,
    contents: PackContents,
}

/// What a pack holds, to be indexed once it is durable.
#[derive(Default)]
struct PackContents {
    chunks: Vec<(Id, ChunkLoc)>,
    /// Sketch features of its self-contained chunks, to find them as bases.
    features: Vec<([u8; 9], Id)>,
    manifests: Vec<(Id, Manifest)>,
    /// Trees and snapshots: id, kind, encoding.
    objects: Vec<(Id, u8, Vec<u8>)>,
    unique_bytes: u64,
}

/// A pack taken out of the writer to be made durable outside the lock.
struct Sealing {
    gen: u64,
    open: OpenPack,
}

struct Writer {
    open: Option<OpenPack>,
    generation: u64,
    /// Generations whose pack failed, and why.
    aborted: HashMap<u64, String>,
    /// Chunks in the open pack (not yet indexed), by generation.
    pending: HashMap<Id, u64>,
    pending_manifests: HashMap<Id, u64>,
    /// Generations being sealed right now (outside the lock).
    sealing: BTreeSet<u64>,
    stats: Stats,
}

/// The store. Its state is shared with the sealer thread, which makes full
/// packs durable while ingest goes on; dropping the store stops the thread.
pub struct Store {
    shared: Arc<Shared>,
    sealer: Option<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for Store {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the queue ends the sealer once it has sealed what it holds.
        self.shared
            .seal_queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = self.sealer.take() {
            let _ = h.join();
        }
    }
}

/// Full packs waiting for the sealer; the bound keeps memory and unsynced
/// data bounded when the disk is slower than ingest.
const SEAL_QUEUE: usize = 2;

pub struct Shared {
    dir: PathBuf,
    params: StoreParams,
    backend: Box<dyn PackBackend>,
    pub(crate) index: Index,
    writer: Mutex<Writer>,
    /// Signalled whenever a seal completes.
    sealed: Condvar,
    seal_queue: Mutex<Option<mpsc::SyncSender<Sealing>>>,
    shutdown: AtomicBool,
    /// Serialises ref compare-and-swap.
    refs_lock: Mutex<()>,
    /// Frames decoded recently by any reader: many small files share a frame
    /// (a checkout reads them one call each), so each frame is decoded once.
    recent: Mutex<FrameCache>,
}

const PARAMS_FILE: &str = "store.toml";

impl Store {
    /// Opens the store in `dir`, creating it with `create_with` if it does not exist.
    pub fn open(dir: &Path, create_with: StoreParams) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("cannot create store directory", dir, e))?;
        let backend = LocalDir::open(&dir.join("packs"))?;
        Store::open_with(dir, create_with, Box::new(backend))
    }

    /// Opens the store in `dir` with its packs in `backend`.
    pub fn open_with(
        dir: &Path,
        create_with: StoreParams,
        backend: Box<dyn PackBackend>,
    ) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("cannot create store directory", dir, e))?;
        let params = load_or_create_params(dir, create_with)?;
        let index = Index::open(&dir.join("index"))?;
        let stats = index.stats()?;
        let (tx, rx) = mpsc::sync_channel::<Sealing>(SEAL_QUEUE);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            params,
            backend,
            index,
            writer: Mutex::new(Writer {
                open: None,
                generation: 0,
                aborted: HashMap::new(),
                pending: HashMap::new(),
                pending_manifests: HashMap::new(),
                sealing: BTreeSet::new(),
                stats,
            }),
            sealed: Condvar::new(),
            seal_queue: Mutex::new(Some(tx)),
            shutdown: AtomicBool::new(false),
            refs_lock: Mutex::new(()),
            recent: Mutex::new(FrameCache::with_slots(RECENT_FRAMES)),
        });
        shared.recover()?;
        let s = shared.clone();
        let sealer = std::thread::Builder::new()
            .name("hoard-sealer".into())
            .spawn(move || {
                for pack in rx {
                    // A failure is recorded against the pack's generation and
                    // reported to every file that depends on it.
                    let _ = s.finish_seal(pack);
                }
            })
            .map_err(|e| Error::io("cannot start the sealer thread for", dir, e))?;
        Ok(Store {
            shared,
            sealer: Some(sealer),
        })
    }
}

impl Shared {
    pub fn params(&self) -> &StoreParams {
        &self.params
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn backend(&self) -> &dyn PackBackend {
        &*self.backend
    }

    /// Asks in-flight work to stop at its next safe point.
    pub fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds off appends and commits until the guard is dropped, so a
    /// checker sees one consistent state.
    pub fn pause_writes(&self) -> WritesPaused<'_> {
        let mut w = self.lock();
        // No seal may be half done (pack renamed, not yet indexed).
        while !w.sealing.is_empty() {
            w = self.sealed.wait(w).unwrap_or_else(|e| e.into_inner());
        }
        WritesPaused(w)
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats
    }

    /// Which of `ids` are already indexed (durable). In-flight chunks are
    /// resolved later, under the writer lock, by [`Store::append_frames`].
    pub fn indexed(&self, ids: &[Id]) -> Result<Vec<bool>> {
        Ok(self
            .index
            .chunk_locs(ids)?
            .iter()
            .map(Option::is_some)
            .collect())
    }

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

    fn append_locked(
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
        let mut out = Appended::default();
        for frame in frames {
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
            let mut off = 0u32;
            for &(id, len) in &frame.chunks {
                open.contents.chunks.push((
                    id,
                    ChunkLoc {
                        pack: Id([0; 32]),
                        payload_offset: placed.payload_offset,
                        meta_len: placed.meta_len,
                        stored_len: placed.stored_len,
                        raw_len: placed.raw_len,
                        codec: placed.codec,
                        offset_in_frame: off,
                        len,
                    },
                ));
                off += len;
            }
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

    fn open_pack<'w>(&self, w: &'w mut Writer) -> Result<&'w mut OpenPack> {
        if w.open.is_none() {
            w.open = Some(OpenPack {
                writer: PackWriter::new(&*self.backend, &self.dir.join("packs"))?,
                contents: PackContents::default(),
            });
        }
        Ok(w.open.as_mut().expect("opened above"))
    }

    /// Drops the open pack after a failed write: nothing in it is durable.
    fn abort_open(&self, w: &mut Writer) {
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
    fn take_for_seal(&self, w: &mut Writer) -> Option<Sealing> {
        let open = w.open.take()?;
        let gen = w.generation;
        w.generation += 1;
        w.sealing.insert(gen);
        Some(Sealing { gen, open })
    }

    /// Makes a taken pack durable (without the lock), then indexes it.
    fn finish_seal(&self, s: Sealing) -> Result<()> {
        let finished = s.open.writer.finish();
        let mut w = self.lock();
        let r = self.index_sealed(&mut w, s.gen, &s.open.contents, finished);
        w.sealing.remove(&s.gen);
        drop(w);
        self.sealed.notify_all();
        r
    }

    /// Seals the open pack while holding the lock (for maintenance).
    fn seal_now(&self, w: &mut Writer) -> Result<()> {
        let Some(s) = self.take_for_seal(w) else {
            return Ok(());
        };
        let finished = s.open.writer.finish();
        let r = self.index_sealed(w, s.gen, &s.open.contents, finished);
        w.sealing.remove(&s.gen);
        r
    }

    /// Records a sealed pack's contents in the index; a failed seal marks
    /// its generation aborted. Either way its chunks stop being pending.
    fn index_sealed(
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
            for (id, mut loc) in contents.chunks.iter().copied() {
                loc.pack = pack;
                b.put_chunk(&id, &loc);
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

    /// Makes files durable and acknowledgeable, in the order that keeps a
    /// crash at any point verifiable: (1) every pack holding their chunks is
    /// sealed; (2) files whose packs failed are refused, the others' manifests
    /// are appended and (3) sealed in turn; (4) stat-cache entries and
    /// counters are written with a synced WAL. One result per file, in order.
    pub fn commit(&self, files: &mut [Completed], unchanged_bytes: u64) -> Result<Vec<Result<()>>> {
        self.seal_and_wait();
        let failed = |w: &Writer, f: &Completed| {
            f.deps.0.iter().find_map(|g| w.aborted.get(g)).map(|why| {
                Error::Busy(format!(
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
            if let Err(e) = open.writer.append_manifest(&f.file, &f.manifest) {
                self.abort_open(&mut w);
                return Err(e);
            }
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

    /// Stores trees and snapshots durably (pack, then index); those already
    /// stored are skipped. Callers check each object (and that what it
    /// names is stored) first: see `crate::dataset`.
    pub fn put_objects(&self, objs: &[(ObjectKind, Id, Vec<u8>)]) -> Result<()> {
        let ids: Vec<Id> = objs.iter().map(|o| o.1).collect();
        let present = self.index.objects_present(&ids)?;
        if present.iter().all(|p| *p) {
            return Ok(());
        }
        let mut w = self.lock();
        let gen = w.generation;
        let level = self.params.zstd_level;
        let open = self.open_pack(&mut w)?;
        for (o, present) in objs.iter().zip(present) {
            if present {
                continue;
            }
            let (kind, id, raw) = o;
            if let Err(e) = open.writer.append_object(*kind as u8, id, raw, level) {
                self.abort_open(&mut w);
                return Err(e);
            }
            open.contents.objects.push((*id, *kind as u8, raw.clone()));
        }
        drop(w);
        self.seal_and_wait();
        let w = self.lock();
        match w.aborted.get(&gen) {
            Some(why) => Err(Error::Busy(format!(
                "the pack holding new trees and snapshots could not be written ({why}); retry"
            ))),
            None => Ok(()),
        }
    }

    /// A stored tree or snapshot, checked against its id.
    pub fn object(&self, id: &Id) -> Result<Option<Object>> {
        let Some((kind, raw)) = self.index.object(id)? else {
            return Ok(None);
        };
        let kind = ObjectKind::from_u8(kind).ok_or_else(|| {
            Error::Corrupt(format!("object {id} has an unknown kind in the index"))
        })?;
        crate::objects::decode_checked(kind, id, &raw)
            .map(Some)
            .map_err(|e| Error::Corrupt(e.to_string()))
    }

    /// The raw encoding of a stored object (for sending to a peer).
    pub fn object_bytes(&self, id: &Id) -> Result<Option<(ObjectKind, Vec<u8>)>> {
        let Some((kind, raw)) = self.index.object(id)? else {
            return Ok(None);
        };
        let kind = ObjectKind::from_u8(kind).ok_or_else(|| {
            Error::Corrupt(format!("object {id} has an unknown kind in the index"))
        })?;
        if Id::of(&raw) != *id {
            return Err(Error::Corrupt(format!("object {id} does not match its id")));
        }
        Ok(Some((kind, raw)))
    }

    pub fn objects_present(&self, ids: &[Id]) -> Result<Vec<bool>> {
        self.index.objects_present(ids)
    }

    pub fn get_ref(&self, name: &str) -> Result<Option<Id>> {
        self.index.get_ref(name)
    }

    pub fn refs(&self, prefix: &str) -> Result<Vec<(String, Id)>> {
        self.index.refs(prefix)
    }

    /// Sets ref `name` to `new` (or deletes it) only if it holds `expected`
    /// now; otherwise returns what it holds. Durable when it returns.
    pub fn cas_ref(
        &self,
        name: &str,
        expected: Option<Id>,
        new: Option<Id>,
    ) -> Result<std::result::Result<(), Option<Id>>> {
        let _g = self.refs_lock.lock().unwrap_or_else(|e| e.into_inner());
        let actual = self.index.get_ref(name)?;
        if actual != expected {
            return Ok(Err(actual));
        }
        let mut b = self.index.batch();
        b.put_ref(name, new.as_ref());
        b.write(true)?;
        Ok(Ok(()))
    }

    pub fn get_local(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.index.get_local(key)
    }

    pub fn local_entries(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.index.local_entries(prefix)
    }

    pub fn put_local(&self, key: &str, value: Option<&[u8]>) -> Result<()> {
        let mut b = self.index.batch();
        b.put_local(key, value);
        b.write(true)
    }

    /// Seals the open pack and waits until every pack taken so far is sealed
    /// or aborted. A failure is recorded against its generation, where
    /// [`Shared::commit`] finds it for each file concerned.
    fn seal_and_wait(&self) {
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
            // Only the chunks overlapping the range are looked up.
            let mut wanted = Vec::new();
            for &(id, l) in &entries {
                let (s, e) = (pos, pos + l as u64);
                pos = e;
                if e <= offset {
                    continue;
                }
                if s >= end {
                    break;
                }
                wanted.push((id, s, e));
            }
            let ids: Vec<Id> = wanted.iter().map(|w| w.0).collect();
            let locs = self.index.chunk_locs(&ids)?;
            for ((id, s, e), loc) in wanted.into_iter().zip(locs) {
                if self.is_shutting_down() {
                    return Err(Error::Cancelled);
                }
                let loc = loc.ok_or_else(|| {
                    Error::Corrupt(format!(
                        "chunk {} of {file} is missing from the index",
                        id.hex()
                    ))
                })?;
                let data = self.read_chunk(&id, &loc, &mut cache)?;
                let from = offset.saturating_sub(s) as usize;
                let to = (end.min(e) - s) as usize;
                out(&data[from..to])?;
            }
            seg += 1;
        }
        Ok(head.size)
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
        let data = if loc.codec == Codec::Raw {
            // Raw frames: read just this chunk.
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
    /// first reads its bases, which are self-contained by construction.
    fn frame(&self, loc: &ChunkLoc, cache: &mut FrameCache) -> Result<Arc<Vec<u8>>> {
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
                .map_err(|e| Error::Corrupt(e.to_string()))?;
            self.bases_dict(&fm.bases, cache)?
        } else {
            Vec::new()
        };
        let raw = format::decompress(loc.codec, &stored, loc.raw_len, &dict, loc.payload_offset)
            .map_err(|e| Error::Corrupt(e.to_string()))?;
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
                .map_err(|e| Error::Corrupt(e.to_string()))?
                .bases,
        )
    }

    /// A frame's payload as it lies in its pack, to send to a peer as stored.
    pub fn frame_payload(&self, loc: &ChunkLoc) -> Result<Vec<u8>> {
        self.backend
            .read_vec(&loc.pack, loc.payload_offset, loc.stored_len as usize)
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
            .map_err(|e| Error::Corrupt(e.to_string()))
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
            if loc.codec == Codec::ZstdDict {
                return Err(Error::Corrupt(format!(
                    "its base chunk {} is itself a delta",
                    b.hex()
                )));
            }
            dict.extend_from_slice(&self.read_chunk(b, &loc, cache)?);
        }
        Ok(dict)
    }

    /// Indexes packs that became durable but were never indexed (a crash
    /// between seal and index write).
    fn recover(&self) -> Result<()> {
        let known: HashSet<Id> = self.index.packs()?.into_iter().map(|p| p.0).collect();
        for (pack, _) in self.backend.list()? {
            if !known.contains(&pack) {
                tracing::info!(pack = %pack.hex(), "indexing a pack left unindexed by an interrupted run");
                let mut w = self.lock();
                if let Err(e) = self.index_pack(&pack, &mut w.stats) {
                    tracing::error!(pack = %pack.hex(), error = %e, "cannot index pack; run `hoard verify --read-data`");
                }
            }
        }
        Ok(())
    }

    /// Reads one pack front to back and indexes what it holds; chunks and
    /// files already indexed keep their entries. Returns (chunks, files) added.
    pub(crate) fn index_pack(&self, pack: &Id, stats: &mut Stats) -> Result<(u64, u64)> {
        let (r, len) = self.backend.open(pack)?;
        let bad = |e: format::FormatError| {
            Error::Corrupt(format!(
                "pack {} ({}): {e}",
                pack.hex(),
                self.backend.describe(pack)
            ))
        };
        // Payloads are read so self-contained frames can be re-sketched:
        // the feature index is part of what the packs alone rebuild.
        let mut scan = Scanner::new(r, len, true).map_err(bad)?;
        let mut features: Vec<([u8; 9], Id)> = Vec::new();
        let mut chunks: Vec<(Id, ChunkLoc)> = Vec::new();
        let mut manifests: Vec<(Id, u64, u64, u32, Codec, u32, Id)> = Vec::new();
        let mut objects: Vec<(Id, u8, Vec<u8>)> = Vec::new();
        let mut unique = 0u64;
        while let Some(rec) = scan.next_record().map_err(bad)? {
            let po = rec.payload_offset();
            match rec.header.kind {
                Kind::Frame => {
                    let mut off = 0u32;
                    let fm = format::decode_frame_meta(
                        &rec.meta,
                        rec.header.raw_len,
                        rec.header.codec,
                        rec.offset,
                    )
                    .map_err(bad)?;
                    if rec.header.codec == Codec::Zstd {
                        let payload = rec.payload.as_deref().unwrap_or(&[]);
                        let raw =
                            format::decompress(Codec::Zstd, payload, rec.header.raw_len, &[], po)
                                .map_err(bad)?;
                        let mut at = 0usize;
                        for (id, l) in &fm.chunks {
                            let bytes = &raw[at..at + *l as usize];
                            at += *l as usize;
                            for (lane, f) in
                                crate::sketch::sketch(bytes).iter().flatten().enumerate()
                            {
                                features.push((crate::index::feature_key(lane, *f), *id));
                            }
                        }
                    }
                    for (id, l) in fm.chunks {
                        chunks.push((
                            id,
                            ChunkLoc {
                                pack: *pack,
                                payload_offset: po,
                                meta_len: rec.header.meta_len,
                                stored_len: rec.header.stored_len,
                                raw_len: rec.header.raw_len,
                                codec: rec.header.codec,
                                offset_in_frame: off,
                                len: l,
                            },
                        ));
                        off += l;
                    }
                }
                Kind::Manifest => {
                    let (file, mhash) =
                        format::decode_manifest_meta(&rec.meta, rec.offset).map_err(bad)?;
                    manifests.push((
                        file,
                        rec.offset,
                        po,
                        rec.header.stored_len,
                        rec.header.codec,
                        rec.header.raw_len,
                        mhash,
                    ));
                }
                Kind::Object => {
                    let (kind, id) =
                        format::decode_object_meta(&rec.meta, rec.offset).map_err(bad)?;
                    let payload = rec.payload.as_deref().unwrap_or(&[]);
                    let raw =
                        format::decompress(rec.header.codec, payload, rec.header.raw_len, &[], po)
                            .map_err(bad)?;
                    let k = ObjectKind::from_u8(kind).ok_or_else(|| {
                        Error::Corrupt(format!(
                            "pack {}: object {id} has unknown kind {kind}",
                            pack.hex()
                        ))
                    })?;
                    crate::objects::decode_checked(k, &id, &raw)
                        .map_err(|e| Error::Corrupt(format!("pack {}: {e}", pack.hex())))?;
                    objects.push((id, kind, raw));
                }
            }
        }
        let end = scan.finish().map_err(bad)?;
        if end.pack_id != *pack {
            return Err(bad(format::FormatError::HashMismatch {
                claimed: *pack,
                actual: end.pack_id,
            }));
        }
        let mut b = self.index.batch();
        let ids: Vec<Id> = chunks.iter().map(|c| c.0).collect();
        let mut added = 0u64;
        let mut seen = HashSet::new();
        for ((id, loc), existing) in chunks.iter().zip(self.index.chunk_locs(&ids)?) {
            if existing.is_none() && seen.insert(*id) {
                b.put_chunk(id, loc);
                added += 1;
                unique += loc.len as u64;
            }
        }
        let mut files = 0u64;
        for (file, _, po, stored, codec, raw, mhash) in manifests {
            let mut p = vec![0u8; stored as usize];
            self.backend.read_at(pack, po, &mut p)?;
            let enc = format::decompress(codec, &p, raw, &[], po).map_err(bad)?;
            if Id::of(&enc) != mhash {
                return Err(Error::Corrupt(format!(
                    "manifest of {file} in pack {} is damaged",
                    pack.hex()
                )));
            }
            let m = Manifest::decode(&enc).map_err(|e| {
                Error::Corrupt(format!("manifest of {file} in pack {}: {e}", pack.hex()))
            })?;
            if self.index.file_head(&file)?.is_none() {
                b.put_manifest(&file, &m);
                files += 1;
                stats.logical_bytes += m.size;
            }
        }
        for (key, id) in &features {
            b.put_feature(key, id);
        }
        for (id, kind, raw) in &objects {
            b.put_object(id, *kind, raw);
        }
        b.put_pack(
            pack,
            &PackInfo {
                len,
                records: end.records,
            },
        );
        stats.chunks += added;
        stats.unique_bytes += unique;
        stats.stored_bytes += len;
        stats.packs += 1;
        stats.files += files;
        b.put_stats(stats);
        b.write(true)?;
        Ok((added, files))
    }

    /// Rebuilds the index from the packs alone. The stat cache is dropped
    /// (the next add re-reads files once); `logical_bytes` restarts as the
    /// sum of distinct file sizes. Packs that fail to scan are reported and
    /// skipped.
    pub fn reindex(
        &self,
        mut progress: impl FnMut(u64, Option<(Id, Error)>),
    ) -> Result<(u64, u64, u64, u64)> {
        let mut paused = self.pause_writes();
        let w = &mut paused.0;
        self.seal_now(w)?;
        self.index.clear_rebuildable()?;
        let mut stats = Stats::default();
        let (mut packs, mut chunks, mut files, mut bad) = (0, 0, 0, 0);
        for (pack, len) in self.backend.list()? {
            match self.index_pack(&pack, &mut stats) {
                Ok((c, f)) => {
                    packs += 1;
                    chunks += c;
                    files += f;
                    progress(len, None);
                }
                Err(e) => {
                    bad += 1;
                    progress(len, Some((pack, e)));
                }
            }
        }
        let mut b = self.index.batch();
        b.put_stats(&stats);
        b.write(true)?;
        w.stats = stats;
        Ok((packs, chunks, files, bad))
    }
}

/// While alive, no pack is appended to, sealed or indexed.
pub struct WritesPaused<'a>(MutexGuard<'a, Writer>);

/// Recently decoded frames: sequential reads decode each frame once, and a
/// delta frame's bases stay at hand.
pub struct FrameCache {
    frames: Vec<(FrameKey, Arc<Vec<u8>>)>,
    slots: usize,
}

impl Default for FrameCache {
    fn default() -> Self {
        Self::with_slots(8)
    }
}

/// Frames (about 1 MiB each) the store-wide cache keeps.
const RECENT_FRAMES: usize = 32;

/// A frame is named by its pack and payload offset.
type FrameKey = (Id, u64);

impl FrameCache {
    pub(crate) fn with_slots(slots: usize) -> Self {
        FrameCache {
            frames: Vec::with_capacity(slots),
            slots,
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

fn load_or_create_params(dir: &Path, create_with: StoreParams) -> Result<StoreParams> {
    let path = dir.join(PARAMS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let p: StoreParams = toml::from_str(&s).map_err(|e| {
                Error::Config(format!("{} is malformed ({e}); it records the store's fixed parameters — restore it from a backup", path.display()))
            })?;
            p.validate()?;
            Ok(p)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_with.validate()?;
            let text = format!(
                "# hoard store parameters: fixed at creation; changing them breaks dedup.\n{}",
                toml::to_string(&create_with).map_err(|e| Error::Config(e.to_string()))?
            );
            let tmp = dir.join(format!("{PARAMS_FILE}.tmp"));
            std::fs::write(&tmp, text).map_err(|e| Error::io("cannot write", &tmp, e))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io("cannot fsync", &tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::io("cannot create", &path, e))?;
            Ok(create_with)
        }
        Err(e) => Err(Error::io("cannot read", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_of_format_1_are_still_reindexed_verified_and_read() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("store");
        let store = Store::open(&dir, StoreParams::default()).unwrap();
        let chunks: [&[u8]; 2] = [b"a chunk written by an older hoard", &[9u8; 70_000]];
        let (pack, bytes) = format::v1_pack(&chunks);
        let h = pack.hex();
        let path = dir.join("packs").join(&h[..2]).join(format!("{h}.pack"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let (packs, n, _, bad) = store.reindex(|_, _| {}).unwrap();
        assert_eq!((packs, n, bad), (1, 2, 0));
        let report = crate::check::verify(&store, true, &mut |_| true).unwrap();
        assert_eq!((report.packs, report.chunks, report.problems), (1, 2, 0));
        let mut cache = FrameCache::default();
        for c in chunks {
            let id = Id::of(c);
            let loc = store.index.chunk_locs(&[id]).unwrap()[0].unwrap();
            assert_eq!(store.read_chunk(&id, &loc, &mut cache).unwrap(), c);
        }
    }
}
