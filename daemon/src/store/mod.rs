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
//!
//! The store is split by phase: [`write`] appends frames to the open pack,
//! seals packs and commits files (the write order above); [`objects`] holds
//! trees, snapshots, refs and local state; [`read`] reads files and frames
//! back, verified; [`recover`] indexes packs left unindexed by a crash and
//! rebuilds the index from the packs alone. This file holds the state they
//! share and opening a store.
//!
//! May import: formats (`pack`, `manifest`, `objects`, `chunker`, `sketch`),
//! `backend`, `index`, `durable`, `error`, `id`. Never sync, services or tonic.

mod lease;
mod objects;
mod read;
mod recover;
mod spare;
mod sweep;
mod write;

pub use lease::now_ms;
pub use sweep::{Doomed, SweepPlan, SweepReport, PHASES};

pub use read::FrameCache;
use read::RECENT_FRAMES;
pub use write::{Appended, Completed, Deps};
use write::{Sealing, Writer};

use crate::backend::{LocalDir, PackBackend};
use crate::chunker::ChunkParams;
use crate::error::{Error, Result};
use crate::index::{Index, Stats};
use std::collections::{BTreeSet, HashMap};
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
        self.chunk.validate().map_err(Error::Invalid)?;
        if self.format != 1 {
            return Err(Error::Invalid(format!(
                "store format {} is not supported by this hoardd (it knows format 1); upgrade hoard",
                self.format
            )));
        }
        if !(-7..=19).contains(&self.zstd_level) {
            return Err(Error::Invalid(format!(
                "zstd_level {} is outside -7..=19",
                self.zstd_level
            )));
        }
        if self.frame_target > MAX_FRAME_TARGET
            || self.pack_target < 1 << 20
            || self.pack_target > 1 << 30
        {
            return Err(Error::Invalid(
                "frame_target must be ≤ 16 MiB and pack_target between 1 MiB and 1 GiB".into(),
            ));
        }
        Ok(())
    }
}

/// Largest `frame_target` a store may have.
pub const MAX_FRAME_TARGET: u32 = 16 << 20;

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
    /// Presence answers (shared) against a prune's drop (exclusive): see
    /// [`lease`].
    gc: std::sync::RwLock<()>,
    /// One prune at a time.
    prune_lock: Mutex<()>,
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
            gc: std::sync::RwLock::new(()),
            prune_lock: Mutex::new(()),
            recent: Mutex::new(FrameCache::with_slots(RECENT_FRAMES)),
        });
        if stats.packs == 0 {
            // A new store indexes every pack's records from the start.
            shared.put_local(sweep::RECORDS_COMPLETE, Some(b"1"))?;
        }
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

    /// Where packs live and what the backend has done (`daemon status`).
    pub fn backend_status(&self) -> crate::backend::BackendStatus {
        self.backend().status()
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
}

/// While alive, no pack is appended to, sealed or indexed.
pub struct WritesPaused<'a>(MutexGuard<'a, Writer>);

impl WritesPaused<'_> {
    /// The store's counters as the writer holds them.
    pub fn stats(&self) -> Stats {
        self.0.stats
    }
}

fn load_or_create_params(dir: &Path, create_with: StoreParams) -> Result<StoreParams> {
    let path = dir.join(PARAMS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let p: StoreParams = toml::from_str(&s).map_err(|e| {
                Error::Invalid(format!("{} is malformed ({e}); it records the store's fixed parameters — restore it from a backup", path.display()))
            })?;
            p.validate()?;
            Ok(p)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_with.validate()?;
            let text = format!(
                "# hoard store parameters: fixed at creation; changing them breaks dedup.\n{}",
                toml::to_string(&create_with).map_err(|e| Error::Invalid(e.to_string()))?
            );
            crate::durable::replace(&path, text.as_bytes(), 0o644)?;
            Ok(create_with)
        }
        Err(e) => Err(Error::io("cannot read", &path, e)),
    }
}
