//! `add`: walk paths, skip files the stat cache proves unchanged, cut the
//! rest into chunks, append new chunks in frames, commit, acknowledge.
//!
//! Work is split into units processed in parallel: one big file (its blocks
//! are pipelined across both cores inside the chunker), or a batch of small
//! files (so their new chunks still share ~1 MiB compression frames).
//! Completed files are committed every [`COMMIT_EVERY`] or so; a file is
//! reported only after its commit, so what a client saw is durable.
//!
//! Floor 6 (engine): may import `store`, `delta`, `chunker`, `index`, `pack`,
//! `manifest`; no sync, no services, no tonic.

use crate::chunker::{chunk_stream, Block};
use crate::error::{Error, Result};
use crate::history::{Aligner, History};
use crate::id::Id;
use crate::index::StatEntry;
use crate::manifest::Manifest;
use crate::pack::Frame;
use crate::store::{Appended, Completed, Deps, Store};
use rayon::prelude::*;
use std::collections::HashSet;
use std::fs::{self, File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A path to add, and how to show it.
#[derive(Debug, Clone)]
pub struct AddInput {
    pub path: PathBuf,
    pub display: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDone {
    pub file: Id,
    pub path: String,
    pub size: u64,
    pub unchanged: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    pub errors: u64,
    pub logical_bytes: u64,
    pub new_chunk_bytes: u64,
    pub new_stored_bytes: u64,
    pub new_chunks: u64,
    pub reused_chunks: u64,
    /// Some file failed because the disk is full (the add's exit code says so).
    pub disk_full: bool,
}

#[derive(Debug)]
pub enum Event {
    Plan { files: u64, bytes: u64 },
    Progress { files_done: u64, bytes_done: u64 },
    Done(Vec<FileDone>),
    Error { path: String, message: String },
}

/// Commit completed files at least this often (and at the end).
pub const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// Files up to this size are batched together.
const SMALL_FILE: u64 = 1 << 20;
const SMALL_BATCH_BYTES: u64 = 8 << 20;
const SMALL_BATCH_FILES: usize = 512;

#[derive(Clone)]
struct Entry {
    path: PathBuf,
    display: String,
    size: u64,
    /// As seen by the walk; the stat cache is checked against it.
    meta: Metadata,
    /// The version the stat cache last recorded for this path (changed
    /// since): the first delta candidates for this one.
    previous: Option<Id>,
}

enum Work {
    Big(Box<Entry>),
    Small(Vec<Entry>),
}

/// Runs an add. `emit` returns false when the client has gone away, which
/// cancels the add (completed files are still committed).
pub fn add(store: &Store, inputs: Vec<AddInput>, emit: &mut dyn FnMut(Event) -> bool) -> Summary {
    let mut sum = Summary::default();
    let cancel = AtomicBool::new(false);
    let mut emit_or_cancel = |e: Event| {
        if !emit(e) {
            cancel.store(true, Ordering::SeqCst);
        }
    };

    let entries = walk(inputs, &mut |path, message| {
        sum.errors += 1;
        emit_or_cancel(Event::Error { path, message });
    });
    let total_bytes: u64 = entries.iter().map(|e| e.size).sum();
    emit_or_cancel(Event::Plan {
        files: entries.len() as u64,
        bytes: total_bytes,
    });

    let cached = answer_from_stat_cache(store, entries, &mut sum, &mut emit_or_cancel);
    if !cached.misses.is_empty() {
        emit_or_cancel(Event::Progress {
            files_done: cached.files,
            bytes_done: cached.bytes,
        });
    }
    ingest_and_commit(store, cached, &cancel, &mut sum, &mut emit_or_cancel);
    if cancel.load(Ordering::SeqCst) {
        tracing::info!("add cancelled; completed files were committed");
    }
    sum
}

/// What the stat cache answered: files and bytes done, the bytes of the
/// unchanged files, and the files that must be read.
struct Cached {
    files: u64,
    bytes: u64,
    unchanged_bytes: u64,
    misses: Vec<Entry>,
}

/// Stat cache: unchanged files are answered without reading them.
fn answer_from_stat_cache(
    store: &Store,
    entries: Vec<Entry>,
    sum: &mut Summary,
    emit_or_cancel: &mut dyn FnMut(Event),
) -> Cached {
    let mut out = Cached {
        files: 0,
        bytes: 0,
        unchanged_bytes: 0,
        misses: Vec::new(),
    };
    for batch in entries.chunks(crate::STAT_BATCH) {
        let keys: Vec<&[u8]> = batch
            .iter()
            .map(|e| e.path.as_os_str().as_bytes())
            .collect();
        let cached = match store.stat_entries(&keys) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "stat cache unavailable; reading files");
                vec![None; batch.len()]
            }
        };
        let mut hits = Vec::new();
        for (entry, cached) in batch.iter().zip(cached) {
            match cached {
                Some(c) if same_file_state(&c, &entry.meta) => {
                    out.unchanged_bytes += c.size;
                    hits.push(FileDone {
                        file: c.file,
                        path: entry.display.clone(),
                        size: c.size,
                        unchanged: true,
                    });
                }
                other => out.misses.push(Entry {
                    previous: other.map(|c| c.file),
                    ..entry.clone()
                }),
            }
        }
        if !hits.is_empty() {
            out.files += hits.len() as u64;
            out.bytes += hits.iter().map(|h| h.size).sum::<u64>();
            sum.files += hits.len() as u64;
            emit_or_cancel(Event::Done(hits));
        }
    }
    sum.logical_bytes += out.unchanged_bytes;
    out
}

/// Reads, chunks and stores the stat cache's misses on the thread pool,
/// committing what is complete every [`COMMIT_EVERY`] and at the end.
fn ingest_and_commit(
    store: &Store,
    cached: Cached,
    cancel: &AtomicBool,
    sum: &mut Summary,
    emit_or_cancel: &mut dyn FnMut(Event),
) {
    let Cached {
        files: mut done_files,
        bytes: done_bytes,
        unchanged_bytes,
        misses,
    } = cached;
    let work = plan_work(misses);
    let bytes_read = AtomicU64::new(done_bytes);
    let (tx, rx) = mpsc::channel::<Vec<(Entry, Result<(Completed, Appended)>)>>();
    std::thread::scope(|s| {
        let bytes_read = &bytes_read;
        s.spawn(move || {
            work.into_par_iter()
                .with_max_len(1)
                .for_each_with(tx, |tx, w| {
                    let r = match w {
                        Work::Big(e) => {
                            let r = ingest_big(store, &e, cancel, bytes_read);
                            vec![(*e, r)]
                        }
                        Work::Small(es) => ingest_small(store, es, cancel, bytes_read),
                    };
                    let _ = tx.send(r);
                });
        });

        let mut pending: Vec<(Entry, Completed)> = Vec::new();
        let mut last_commit = Instant::now();
        let mut unchanged = unchanged_bytes;
        let mut finished = false;
        while !finished {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(results) => {
                    for (entry, r) in results {
                        match r {
                            Ok((c, a)) => {
                                sum.new_chunks += a.new_chunks;
                                sum.new_chunk_bytes += a.new_raw;
                                sum.new_stored_bytes += a.new_stored;
                                sum.reused_chunks += a.reused;
                                pending.push((entry, c));
                            }
                            Err(e) => {
                                sum.errors += 1;
                                sum.disk_full |= e.kind() == crate::error::Kind::DiskFull;
                                emit_or_cancel(Event::Error {
                                    path: entry.display,
                                    message: e.to_string(),
                                });
                            }
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => finished = true,
            }
            if store.is_shutting_down() {
                cancel.store(true, Ordering::SeqCst);
            }
            let due = last_commit.elapsed() >= COMMIT_EVERY;
            if finished || (due && !pending.is_empty()) {
                let batch = std::mem::take(&mut pending);
                done_files += batch.len() as u64;
                commit_and_report(store, batch, unchanged, sum, emit_or_cancel);
                unchanged = 0;
                last_commit = Instant::now();
            }
            if !finished {
                emit_or_cancel(Event::Progress {
                    files_done: done_files,
                    bytes_done: bytes_read.load(Ordering::Relaxed),
                });
            }
        }
    });
}

fn commit_and_report(
    store: &Store,
    batch: Vec<(Entry, Completed)>,
    unchanged_bytes: u64,
    sum: &mut Summary,
    emit: &mut dyn FnMut(Event),
) {
    // Parallel ingest completes out of order; report in path order.
    let mut batch = batch;
    batch.sort_by(|a, b| a.0.display.cmp(&b.0.display));
    let (entries, mut completed): (Vec<Entry>, Vec<Completed>) = batch.into_iter().unzip();
    match store.commit(&mut completed, unchanged_bytes) {
        Ok(results) => {
            let mut done = Vec::new();
            for ((entry, c), r) in entries.into_iter().zip(&completed).zip(results) {
                match r {
                    Ok(()) => {
                        sum.files += 1;
                        sum.logical_bytes += c.manifest.size;
                        done.push(FileDone {
                            file: c.file,
                            path: entry.display,
                            size: c.manifest.size,
                            unchanged: false,
                        });
                    }
                    Err(e) => {
                        sum.errors += 1;
                        sum.disk_full |= e.kind() == crate::error::Kind::DiskFull;
                        emit(Event::Error {
                            path: entry.display,
                            message: e.to_string(),
                        });
                    }
                }
            }
            for piece in done.chunks(hoard_proto::FILE_RESULTS_BATCH) {
                emit(Event::Done(piece.to_vec()));
            }
        }
        Err(e) => {
            sum.disk_full |= e.kind() == crate::error::Kind::DiskFull;
            for entry in entries {
                sum.errors += 1;
                emit(Event::Error {
                    path: entry.display,
                    message: e.to_string(),
                });
            }
        }
    }
}

/// Expands directories (recursively, not following symlinks) into regular files.
fn walk(inputs: Vec<AddInput>, err: &mut dyn FnMut(String, String)) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |path: PathBuf, display: String, m: &Metadata, out: &mut Vec<Entry>| {
        if seen.insert(path.clone()) {
            out.push(Entry {
                path,
                display,
                size: m.len(),
                meta: m.clone(),
                previous: None,
            });
        }
    };
    for input in inputs {
        let m = match fs::metadata(&input.path) {
            Ok(m) => m,
            Err(e) => {
                err(input.display, format!("cannot access: {e}"));
                continue;
            }
        };
        if m.is_file() {
            push(input.path, input.display, &m, &mut out);
        } else if m.is_dir() {
            for item in walkdir::WalkDir::new(&input.path).sort_by_file_name() {
                match item {
                    Ok(e) if e.file_type().is_file() => {
                        let rel = e.path().strip_prefix(&input.path).unwrap_or(e.path());
                        let display = Path::new(&input.display).join(rel).display().to_string();
                        match e.metadata() {
                            Ok(m) => push(e.path().to_path_buf(), display, &m, &mut out),
                            Err(er) => err(display, format!("cannot access: {er}")),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let p = e
                            .path()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| input.display.clone());
                        let msg = e
                            .io_error()
                            .map(|io| io.to_string())
                            .unwrap_or_else(|| e.to_string());
                        err(p, format!("cannot read: {msg}"));
                    }
                }
            }
        } else {
            err(
                input.display,
                "not a regular file or directory; skipped".into(),
            );
        }
    }
    out
}

fn plan_work(entries: Vec<Entry>) -> Vec<Work> {
    let mut work = Vec::new();
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    for e in entries {
        if e.size > SMALL_FILE {
            work.push(Work::Big(Box::new(e)));
            continue;
        }
        batch_bytes += e.size;
        batch.push(e);
        if batch_bytes >= SMALL_BATCH_BYTES || batch.len() >= SMALL_BATCH_FILES {
            work.push(Work::Small(std::mem::take(&mut batch)));
            batch_bytes = 0;
        }
    }
    if !batch.is_empty() {
        work.push(Work::Small(batch));
    }
    work
}

pub(crate) use hoard_proto::now_ns;

pub(crate) fn mtime_ns(m: &Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

pub(crate) fn ctime_ns(m: &Metadata) -> i64 {
    m.ctime() * 1_000_000_000 + m.ctime_nsec()
}

/// The mtime a stat-cache entry records for a file whose mtime had not
/// settled when it was read: the entry never proves the file unchanged (a
/// write in the same tick would go unseen), it only names the path's last
/// version, the first delta candidate for its next one.
const UNSETTLED: i64 = i64::MIN;

pub(crate) fn same_file_state(c: &StatEntry, m: &Metadata) -> bool {
    c.mtime_ns != UNSETTLED
        && m.is_file()
        && c.size == m.len()
        && c.mtime_ns == mtime_ns(m)
        && c.ctime_ns == ctime_ns(m)
        && c.ino == m.ino()
        && c.dev == m.dev()
}

fn unchanged_during_read(a: &Metadata, b: &Metadata, read: u64) -> bool {
    a.len() == b.len()
        && read == a.len()
        && mtime_ns(a) == mtime_ns(b)
        && ctime_ns(a) == ctime_ns(b)
        && a.ino() == b.ino()
}

fn stat_entry(path: &Path, m: &Metadata, file: Id, read_start: i64) -> CacheEntry {
    // Only mtime matters: a later write sets it to "now", which differs from
    // the cached value unless the cached value was itself "now".
    let settled = hoard_proto::settled(mtime_ns(m), read_start);
    Some((
        path.as_os_str().as_bytes().to_vec(),
        StatEntry {
            size: m.len(),
            mtime_ns: if settled { mtime_ns(m) } else { UNSETTLED },
            ctime_ns: ctime_ns(m),
            ino: m.ino(),
            dev: m.dev(),
            file,
        },
    ))
}

/// How often a file that keeps changing under us is re-read before giving up.
const READ_ATTEMPTS: usize = 3;

/// A frame being gathered: its chunks, their bytes, and the old chunks of
/// their files' previous versions they resemble (first delta candidates).
#[derive(Default)]
struct FrameGroup {
    chunks: Vec<(Id, u32)>,
    raw: Vec<u8>,
    history: Vec<Id>,
}

/// A stat-cache key (path bytes) and entry, when the file may be cached.
type CacheEntry = Option<(Vec<u8>, StatEntry)>;

/// A small file read into memory: id, manifest, cache entry, its blocks.
type SmallRead = (Id, Manifest, CacheEntry, Vec<Block>);

/// New chunks of consecutive blocks, grouped into frames in order.
pub(crate) struct FrameBuilder {
    target: usize,
    level: i32,
    groups: Vec<FrameGroup>,
    /// Chunks already queued by this unit of work (repeats within a file).
    queued: HashSet<Id>,
    /// The previous version of the file being added, aligned to it.
    aligner: Option<Aligner>,
}

impl FrameBuilder {
    pub(crate) fn new(store: &Store) -> Self {
        FrameBuilder {
            target: store.params().frame_target as usize,
            level: store.params().zstd_level,
            groups: Vec::new(),
            queued: HashSet::new(),
            aligner: None,
        }
    }

    /// A new file begins; `history` is its path's previous version, if
    /// known (its chunks become the first delta candidates for this one's).
    pub(crate) fn begin_file(&mut self, history: Option<History>, size: Option<u64>) {
        self.aligner = history.map(|h| Aligner::new(h, size));
    }

    /// Queues the chunks of `block` that `indexed` says are not stored;
    /// returns how many were already there (or repeats).
    pub(crate) fn add(&mut self, block: &Block, indexed: &[bool]) -> u64 {
        let mut reused = 0;
        for (c, &have) in block.chunks.iter().zip(indexed) {
            let new = !have && !self.queued.contains(&c.id);
            let like = match &mut self.aligner {
                Some(a) => a.next(&c.id, c.len as u32, new),
                None => &[],
            };
            if !new {
                reused += 1;
                continue;
            }
            self.queued.insert(c.id);
            let start_new = match self.groups.last() {
                None => true,
                Some(g) => g.raw.len() >= self.target.max(1),
            };
            if start_new {
                self.groups.push(FrameGroup {
                    raw: Vec::with_capacity(self.target.max(c.len)),
                    ..FrameGroup::default()
                });
            }
            let g = self.groups.last_mut().expect("pushed above");
            g.chunks.push((c.id, c.len as u32));
            g.raw
                .extend_from_slice(&block.data[c.offset..c.offset + c.len]);
            for (old, _) in like {
                if g.history.last() != Some(old) && !g.history.contains(old) {
                    g.history.push(*old);
                }
            }
        }
        reused
    }

    /// Compresses the queued groups in parallel (as deltas where that pays)
    /// and appends them.
    /// Raw bytes queued and not yet flushed.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.groups.iter().map(|g| g.raw.len()).sum()
    }

    pub(crate) fn flush(&mut self, store: &Store, deps: &mut Deps) -> Result<Appended> {
        let (mut frames, history): (Vec<Frame>, Vec<Vec<Id>>) = std::mem::take(&mut self.groups)
            .into_iter()
            .map(|g| (Frame::uncompressed(g.chunks, g.raw), g.history))
            .unzip();
        if frames.is_empty() {
            return Ok(Appended::default());
        }
        crate::delta::compress(store, &mut frames, &history, self.level)?;
        store.append_frames(frames, deps)
    }
}

/// The stored version `previous` (a path's last), as delta candidates for
/// its next one; none if it is gone (a prune) or unreadable.
pub(crate) fn history_of(store: &Store, previous: Option<Id>) -> Option<History> {
    match store.index.manifest(&previous?) {
        Ok(m) => m.map(History::of),
        Err(e) => {
            tracing::debug!(error = %e, "no path history for a changed file");
            None
        }
    }
}

fn check_cancel(store: &Store, cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) || store.is_shutting_down() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

/// Reads one file through the chunker, calling `on_block` per block, and
/// checks the file did not change meanwhile. Returns the file's id, size,
/// chunk list, and stat-cache entry.
fn read_file(
    store: &Store,
    path: &Path,
    on_block: &mut (dyn FnMut(Block) -> Result<()> + Send),
) -> Result<(Id, Manifest, CacheEntry)> {
    let f = File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
    let before = f
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    let read_start = now_ns();
    let mut manifest = Manifest::default();
    // About one entry per average chunk: no doubling growth for huge files.
    manifest
        .chunks
        .reserve((before.len() / store.params().chunk.avg as u64).min(1 << 26) as usize + 1);
    let mut failure = None;
    let res = chunk_stream(&f, before.len(), store.params().chunk, |block| {
        manifest
            .chunks
            .extend(block.chunks.iter().map(|c| (c.id, c.len as u32)));
        on_block(block).map_err(|e| {
            failure = Some(e);
            std::io::Error::other("ingest stopped")
        })
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let (file, size) = res.map_err(|e| Error::io("cannot read", path, e))?;
    let after = f
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    if !unchanged_during_read(&before, &after, size) {
        return Err(Error::FileChanged {
            path: path.to_path_buf(),
        });
    }
    manifest.size = size;
    Ok((file, manifest, stat_entry(path, &before, file, read_start)))
}

fn retrying<T>(path: &Path, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 0;
    loop {
        match f() {
            Err(Error::FileChanged { .. }) if attempt + 1 < READ_ATTEMPTS => {
                attempt += 1;
                tracing::info!(path = %path.display(), attempt, "file changed while read; reading again");
                std::thread::sleep(Duration::from_millis(50 * attempt as u64));
            }
            r => return r,
        }
    }
}

/// One big file: each block's new chunks are framed, compressed and appended
/// as the file streams through, so memory stays at a few blocks.
fn ingest_big(
    store: &Store,
    e: &Entry,
    cancel: &AtomicBool,
    bytes: &AtomicU64,
) -> Result<(Completed, Appended)> {
    retrying(&e.path, || {
        let mut deps = Deps::default();
        let mut total = Appended::default();
        let mut frames = FrameBuilder::new(store);
        frames.begin_file(history_of(store, e.previous), Some(e.size));
        let (file, manifest, stat) = read_file(store, &e.path, &mut |block: Block| {
            let block = &block;
            check_cancel(store, cancel)?;
            let ids: Vec<Id> = block.chunks.iter().map(|c| c.id).collect();
            let indexed = store.indexed(&ids)?;
            total.reused += frames.add(block, &indexed);
            let a = frames.flush(store, &mut deps)?;
            total.new_chunks += a.new_chunks;
            total.new_raw += a.new_raw;
            total.new_stored += a.new_stored;
            total.reused += a.reused;
            bytes.fetch_add(block.data.len() as u64, Ordering::Relaxed);
            Ok(())
        })?;
        Ok((
            Completed {
                file,
                manifest,
                deps,
                stat,
            },
            total,
        ))
    })
}

/// A batch of small files: read and chunk each, then frame the batch's new
/// chunks together.
fn ingest_small(
    store: &Store,
    entries: Vec<Entry>,
    cancel: &AtomicBool,
    bytes: &AtomicU64,
) -> Vec<(Entry, Result<(Completed, Appended)>)> {
    let mut read: Vec<(Entry, Result<SmallRead>)> = Vec::new();
    for e in entries {
        let r = check_cancel(store, cancel).and_then(|_| {
            retrying(&e.path, || {
                let mut blocks = Vec::new();
                let (file, m, stat) = read_file(store, &e.path, &mut |b| {
                    blocks.push(b);
                    Ok(())
                })?;
                Ok((file, m, stat, blocks))
            })
        });
        bytes.fetch_add(e.size, Ordering::Relaxed);
        read.push((e, r));
    }
    let ids: Vec<Id> = read
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flat_map(|(_, _, _, blocks)| blocks.iter().flat_map(|b| b.chunks.iter().map(|c| c.id)))
        .collect();
    let shared = store.indexed(&ids).and_then(|indexed| {
        let mut frames = FrameBuilder::new(store);
        let mut reused = 0;
        let mut at = 0;
        for (e, r) in &read {
            if let Ok((_, _, _, blocks)) = r {
                frames.begin_file(history_of(store, e.previous), Some(e.size));
                for b in blocks {
                    reused += frames.add(b, &indexed[at..at + b.chunks.len()]);
                    at += b.chunks.len();
                }
            }
        }
        let mut deps = Deps::default();
        let mut a = frames.flush(store, &mut deps)?;
        a.reused += reused;
        Ok((deps, a))
    });
    let mut first = true;
    read.into_iter()
        .map(|(e, r)| {
            let r = match (&shared, r) {
                (_, Err(err)) => Err(err),
                (Err(err), Ok(_)) => Err(err.same_again()),
                (Ok((deps, a)), Ok((file, manifest, stat, _))) => {
                    // The batch's totals are reported once, on its first file.
                    let a = if std::mem::take(&mut first) {
                        *a
                    } else {
                        Appended::default()
                    };
                    Ok((
                        Completed {
                            file,
                            manifest,
                            deps: deps.clone(),
                            stat,
                        },
                        a,
                    ))
                }
            };
            (e, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkParams;
    use crate::store::StoreParams;
    use crate::testutil::{add_paths, noise, read_all, small_store};
    use proptest::prelude::*;

    #[test]
    fn edge_sizes_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let store = small_store(&d.path().join("store"));
        let p = store.params().chunk;
        let sizes = [
            0usize,
            1,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            p.max as usize + 1,
            3 * p.max as usize,
            5 << 20,
        ];
        let mut files = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let f = d.path().join(format!("f{i}"));
            fs::write(&f, noise(n, i as u64 + 1)).unwrap();
            files.push(f);
        }
        let refs: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
        let (done, errs, sum) = add_paths(&store, &refs);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(done.len(), sizes.len());
        for f in &done {
            let want = fs::read(&f.path).unwrap();
            assert_eq!(f.file, Id::of(&want), "{}", f.path);
            assert_eq!(read_all(&store, &f.file), want, "{}", f.path);
        }
        assert_eq!(sum.logical_bytes, sizes.iter().sum::<usize>() as u64);
        let stats = store.stats();
        assert_eq!(stats.files, sizes.len() as u64);
        assert!(stats.stored_bytes > 0 && stats.unique_bytes <= sum.logical_bytes);
    }

    #[test]
    fn ranges_touch_only_what_they_need_and_are_exact() {
        let d = tempfile::tempdir().unwrap();
        let store = small_store(&d.path().join("store"));
        let data = noise(3 << 20, 9);
        let f = d.path().join("big");
        fs::write(&f, &data).unwrap();
        let (done, _, _) = add_paths(&store, &[&f]);
        let id = done[0].file;
        for (off, len) in [
            (0u64, 1u64),
            (4095, 2),
            (1 << 20, 100_000),
            (3 << 20, 5),
            ((3 << 20) - 7, 100),
        ] {
            let mut got = Vec::new();
            store
                .read_range(&id, off, Some(len), &mut |b| {
                    got.extend_from_slice(b);
                    Ok(())
                })
                .unwrap();
            let s = (off as usize).min(data.len());
            let e = ((off + len) as usize).min(data.len());
            assert_eq!(got, &data[s..e], "range {off}+{len}");
        }
    }

    #[test]
    fn re_adding_is_deduplicated_and_stat_cache_skips_unchanged_files() {
        let d = tempfile::tempdir().unwrap();
        let store = small_store(&d.path().join("store"));
        let f = d.path().join("a");
        fs::write(&f, noise(1 << 20, 3)).unwrap();
        // Old enough not to be racy.
        std::thread::sleep(Duration::from_millis(
            2 * hoard_proto::RACY_NS as u64 / 1_000_000,
        ));
        let (first, _, s1) = add_paths(&store, &[&f]);
        assert!(!first[0].unchanged);
        assert!(s1.new_chunks > 0);
        let stored = store.stats().stored_bytes;
        let (second, _, s2) = add_paths(&store, &[&f]);
        assert!(
            second[0].unchanged,
            "stat cache should prove the file unchanged"
        );
        assert_eq!(s2.new_chunks, 0);
        // A copy elsewhere is read but adds no chunks.
        let g = d.path().join("copy");
        fs::copy(&f, &g).unwrap();
        let (third, _, s3) = add_paths(&store, &[&g]);
        assert_eq!(third[0].file, first[0].file);
        assert_eq!(s3.new_chunks, 0);
        assert!(s3.reused_chunks > 0);
        assert_eq!(store.stats().stored_bytes, stored);
        assert_eq!(store.stats().logical_bytes, 3 * (1 << 20));
    }

    #[test]
    fn concurrent_adds_of_the_same_data_store_each_chunk_once() {
        let d = tempfile::tempdir().unwrap();
        let store = small_store(&d.path().join("store"));
        let data = noise(4 << 20, 5);
        let a = d.path().join("a");
        let b = d.path().join("b");
        fs::write(&a, &data).unwrap();
        fs::write(&b, &data).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| add_paths(&store, &[&a]));
            s.spawn(|| add_paths(&store, &[&b]));
        });
        let stats = store.stats();
        let mut ids = HashSet::new();
        store
            .index
            .for_each_chunk(|id, _| {
                ids.insert(id);
                Ok(())
            })
            .unwrap();
        assert_eq!(stats.chunks as usize, ids.len());
        let m = store.index.manifest(&Id::of(&data)).unwrap().unwrap();
        let distinct: HashSet<Id> = m.chunks.iter().map(|c| c.0).collect();
        let unique: u64 = distinct
            .iter()
            .map(|id| m.chunks.iter().find(|c| c.0 == *id).unwrap().1 as u64)
            .sum();
        assert_eq!(stats.unique_bytes, unique, "a chunk was written twice");
    }

    #[test]
    fn reindex_rebuilds_everything_from_packs() {
        let d = tempfile::tempdir().unwrap();
        let store = small_store(&d.path().join("store"));
        let mut paths = Vec::new();
        for i in 0..5 {
            let f = d.path().join(format!("f{i}"));
            fs::write(&f, noise(300_000 * (i + 1), i as u64 + 11)).unwrap();
            paths.push(f);
        }
        let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        let (done, _, _) = add_paths(&store, &refs);
        let before = store.stats();
        let (packs, _, files, bad) = store.reindex(|_, _| {}).unwrap();
        assert_eq!((packs, files, bad), (before.packs, before.files, 0));
        let after = store.stats();
        assert_eq!(
            (
                after.chunks,
                after.unique_bytes,
                after.stored_bytes,
                after.files
            ),
            (
                before.chunks,
                before.unique_bytes,
                before.stored_bytes,
                before.files
            )
        );
        for f in done {
            assert_eq!(read_all(&store, &f.file), fs::read(&f.path).unwrap());
        }
        let rep = crate::check::verify(&store, true, &mut |_| true).unwrap();
        assert_eq!(rep.problems, 0);
    }

    #[test]
    fn missing_and_special_paths_are_reported_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let store = small_store(&d.path().join("store"));
        let ok = d.path().join("ok");
        fs::write(&ok, b"fine").unwrap();
        let missing = d.path().join("missing");
        let (done, errs, sum) = add_paths(&store, &[&missing, &ok, Path::new("/dev/null")]);
        assert_eq!(done.len(), 1);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("cannot access"), "{errs:?}");
        assert!(errs[1].contains("not a regular file"), "{errs:?}");
        assert_eq!(sum.errors, 2);
    }

    #[test]
    fn a_file_that_keeps_changing_is_never_stored_torn() {
        let d = tempfile::tempdir().unwrap();
        let store = small_store(&d.path().join("store"));
        let f = d.path().join("growing");
        fs::write(&f, noise(8 << 20, 1)).unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                use std::io::Write;
                let mut h = fs::OpenOptions::new().append(true).open(&f).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    h.write_all(&[1u8; 4096]).unwrap();
                    std::thread::sleep(Duration::from_micros(200));
                }
            });
            for _ in 0..3 {
                let (done, errs, _) = add_paths(&store, &[&f]);
                // Either a consistent version was stored, or the change was reported.
                for x in &done {
                    assert_eq!(Id::of(&read_all(&store, &x.file)), x.file);
                }
                for e in &errs {
                    assert!(e.contains("changed while it was being read"), "{e}");
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }

    fn text(len: usize, seed: u64) -> Vec<u8> {
        let words: [&[u8]; 6] = [b"alpha ", b"beta ", b"gamma,", b"3.14 ", b"\n", b"delta "];
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(words[(x % 6) as usize]);
        }
        out.truncate(len);
        out
    }

    /// A store with small chunks and frames, each chunk at least
    /// sketch::MIN_LEN so every one gets a sketch.
    fn delta_store(dir: &Path) -> Store {
        let params = StoreParams {
            chunk: ChunkParams::with_avg(16384),
            pack_target: 1 << 20,
            frame_target: 256 << 10,
            ..StoreParams::default()
        };
        Store::open(&dir.join("store"), params).unwrap()
    }

    #[test]
    fn a_version_edited_everywhere_is_stored_as_a_delta_and_reads_back_exactly() {
        let d = tempfile::tempdir().unwrap();
        let store = delta_store(d.path());
        let v1 = text(2 << 20, 77);
        // Every chunk changes (like tar headers with new mtimes).
        let mut v2 = v1.clone();
        for i in (0..v2.len()).step_by(700) {
            v2[i] = b'#';
        }
        let (p1, p2) = (d.path().join("v1"), d.path().join("v2"));
        fs::write(&p1, &v1).unwrap();
        fs::write(&p2, &v2).unwrap();
        let (_, _, s1) = add_paths(&store, &[&p1]);
        let (done, errs, s2) = add_paths(&store, &[&p2]);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(s2.reused_chunks, 0, "no chunk is shared by id");
        assert!(
            s2.new_stored_bytes * 4 < s1.new_stored_bytes,
            "delta should store far less: v1 {} bytes, v2 {} bytes",
            s1.new_stored_bytes,
            s2.new_stored_bytes
        );
        assert_eq!(read_all(&store, &done[0].file), v2);
        let rep = crate::check::verify(&store, true, &mut |_| true).unwrap();
        assert_eq!(rep.problems, 0);
        store.reindex(|_, _| {}).unwrap();
        assert_eq!(read_all(&store, &done[0].file), v2);
        assert_eq!(read_all(&store, &Id::of(&v1)), v1);
        // The rebuilt index still finds bases: the next version is a delta too.
        let mut v3 = v1.clone();
        for i in (350..v3.len()).step_by(700) {
            v3[i] = b'%';
        }
        let p3 = d.path().join("v3");
        fs::write(&p3, &v3).unwrap();
        let (done3, _, s3) = add_paths(&store, &[&p3]);
        assert!(
            s3.new_stored_bytes * 4 < s1.new_stored_bytes,
            "no delta after reindex: {}",
            s3.new_stored_bytes
        );
        assert_eq!(read_all(&store, &done3[0].file), v3);
    }

    /// The deepest delta chain among the store's chunks.
    fn deepest(store: &Store) -> u8 {
        let mut d = 0;
        store
            .index
            .for_each_chunk(|_, l| {
                d = d.max(l.depth);
                Ok(())
            })
            .unwrap();
        d
    }

    #[test]
    fn each_version_of_a_path_is_a_delta_against_the_last_and_chains_stay_bounded() {
        let d = tempfile::tempdir().unwrap();
        let store = delta_store(d.path());
        // One path, versions each a small edit of the one before, with a
        // change every 700 bytes (no chunk shared by id) that the version
        // before has too but the first does not: only the last version is
        // a good base, the sketches of the first alone are not.
        let path = d.path().join("data.txt");
        let mut v = text(1 << 20, 5);
        let n = crate::pack::format::MAX_DEPTH as usize + 3;
        let (mut versions, mut stored) = (Vec::new(), Vec::new());
        for k in 0..n {
            for i in (k * 37..v.len()).step_by(700) {
                v[i] = b'a' + (k % 26) as u8;
            }
            fs::write(&path, &v).unwrap();
            let (done, errs, s) = add_paths(&store, &[&path]);
            assert!(errs.is_empty(), "{errs:?}");
            assert_eq!(s.reused_chunks, 0, "version {k} shares no chunk by id");
            versions.push((done[0].file, v.clone()));
            stored.push(s.new_stored_bytes);
        }
        // Below the bound each version is a small delta against the last;
        // at the bound chains restart (some frames of the versions there
        // are stored whole or against older chunks), and the last version,
        // on a new chain, is small again.
        let max = crate::pack::format::MAX_DEPTH as usize;
        for (k, s) in stored.iter().enumerate().skip(1) {
            assert!(
                (max..n - 1).contains(&k) || s * 5 < stored[0],
                "version {k} is not a small delta: {s} bytes, the first {}; all: {stored:?}",
                stored[0]
            );
        }
        assert_eq!(
            deepest(&store),
            crate::pack::format::MAX_DEPTH,
            "chains reach the bound, never beyond"
        );
        for (file, bytes) in &versions {
            assert_eq!(&read_all(&store, file), bytes);
        }
        let rep = crate::check::verify(&store, true, &mut |_| true).unwrap();
        assert_eq!(rep.problems, 0);
        // Rebuilt from the packs alone, depths and contents are the same.
        store.reindex(|_, _| {}).unwrap();
        assert_eq!(deepest(&store), crate::pack::format::MAX_DEPTH);
        for (file, bytes) in &versions {
            assert_eq!(&read_all(&store, file), bytes);
        }
    }

    /// A local backend with injectable faults: the disk fills up after
    /// `room` more bytes; the next `fail_commits` pack commits fail (EIO).
    #[derive(Clone, Default)]
    struct Faults {
        room: std::sync::Arc<AtomicU64>,
        fail_commits: std::sync::Arc<AtomicU64>,
    }

    struct FaultyDisk {
        inner: crate::backend::LocalDir,
        faults: Faults,
    }

    struct FaultySink {
        inner: Box<dyn crate::backend::PackSink>,
        faults: Faults,
    }

    impl std::io::Write for FaultySink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let left = self.faults.room.load(Ordering::SeqCst);
            if (b.len() as u64) > left {
                self.faults.room.store(0, Ordering::SeqCst);
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.faults.room.fetch_sub(b.len() as u64, Ordering::SeqCst);
            self.inner.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl crate::backend::PackSink for FaultySink {
        fn commit(self: Box<Self>, id: &Id) -> Result<()> {
            let fail = &self.faults.fail_commits;
            if fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(Error::io(
                    "cannot fsync pack",
                    Path::new("test"),
                    std::io::Error::other("EIO"),
                ));
            }
            self.inner.commit(id)
        }
    }

    impl crate::backend::PackBackend for FaultyDisk {
        fn create(&self) -> Result<Box<dyn crate::backend::PackSink>> {
            Ok(Box::new(FaultySink {
                inner: self.inner.create()?,
                faults: self.faults.clone(),
            }))
        }
        fn read_at(&self, id: &Id, o: u64, b: &mut [u8]) -> Result<()> {
            self.inner.read_at(id, o, b)
        }
        fn open(&self, id: &Id) -> Result<(Box<dyn std::io::Read + Send>, u64)> {
            self.inner.open(id)
        }
        fn list(&self) -> Result<Vec<(Id, u64)>> {
            self.inner.list()
        }
        fn delete(&self, id: &Id) -> crate::Result<()> {
            self.inner.delete(id)
        }
        fn describe(&self, id: &Id) -> String {
            self.inner.describe(id)
        }
    }

    /// A small-parameter store on a [`FaultyDisk`] (no faults until set).
    fn faulty_store(dir: &Path) -> (Store, Faults) {
        let faults = Faults::default();
        faults.room.store(u64::MAX, Ordering::SeqCst);
        let backend = FaultyDisk {
            inner: crate::backend::LocalDir::open(&dir.join("packs")).unwrap(),
            faults: faults.clone(),
        };
        let params = StoreParams {
            chunk: ChunkParams::with_avg(4096),
            pack_target: 1 << 20,
            frame_target: 64 << 10,
            ..StoreParams::default()
        };
        (
            Store::open_with(dir, params, Box::new(backend)).unwrap(),
            faults,
        )
    }

    /// Regression: a file's manifest must never become durable before the
    /// packs holding its chunks. When one of those packs fails to seal, the
    /// file is refused and the store still verifies (no manifest naming
    /// chunks that were never stored).
    #[test]
    fn a_failed_data_pack_never_leaves_a_manifest_behind() {
        let d = tempfile::tempdir().unwrap();
        let (store, faults) = faulty_store(&d.path().join("store"));
        faults.fail_commits.store(1, Ordering::SeqCst);
        let f = d.path().join("f");
        fs::write(&f, noise(4 << 20, 31)).unwrap();
        let (done, errs, _) = add_paths(&store, &[&f]);
        assert!(
            done.is_empty(),
            "the file's first pack failed: it must not be acknowledged"
        );
        assert!(errs.len() == 1 && errs[0].contains("EIO"), "{errs:?}");
        let rep = crate::check::verify(&store, true, &mut |_| true).unwrap();
        assert_eq!(
            rep.problems, 0,
            "a manifest names chunks that were never stored"
        );
        assert_eq!(store.stats().files, 0);
        let (done, errs, _) = add_paths(&store, &[&f]);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(read_all(&store, &done[0].file), fs::read(&f).unwrap());
    }

    #[test]
    fn disk_full_is_a_clear_error_and_the_store_still_verifies() {
        let d = tempfile::tempdir().unwrap();
        let (store, faults) = faulty_store(&d.path().join("store"));
        let room = &faults.room;
        let a = d.path().join("a");
        fs::write(&a, noise(3 << 20, 21)).unwrap();
        let (done, errs, _) = add_paths(&store, &[&a]);
        assert!(errs.is_empty() && done.len() == 1);
        room.store(1 << 20, Ordering::SeqCst);
        let b = d.path().join("b");
        fs::write(&b, noise(6 << 20, 22)).unwrap();
        let (done_b, errs, _) = add_paths(&store, &[&b]);
        assert!(done_b.is_empty());
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("disk full"), "{errs:?}");
        // Nothing acknowledged is lost, nothing half-written is indexed.
        assert_eq!(read_all(&store, &done[0].file), fs::read(&a).unwrap());
        let rep = crate::check::verify(&store, true, &mut |_| true).unwrap();
        assert_eq!(rep.problems, 0);
        // With room again, the same add succeeds.
        room.store(u64::MAX, Ordering::SeqCst);
        let (done_b, errs, _) = add_paths(&store, &[&b]);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(read_all(&store, &done_b[0].file), fs::read(&b).unwrap());
    }

    /// > 4 GiB, sparse: offsets and lengths past 32 bits round-trip.
    #[test]
    fn sparse_file_over_4_gib_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("store"), StoreParams::default()).unwrap();
        let f = d.path().join("sparse");
        let size = (4u64 << 30) + 12345;
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut h = File::create(&f).unwrap();
            h.seek(SeekFrom::Start(1 << 32)).unwrap();
            h.write_all(b"past four GiB").unwrap();
            h.set_len(size).unwrap();
        }
        let (done, errs, _) = add_paths(&store, &[&f]);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(done[0].size, size);
        let mut got = Vec::new();
        store
            .read_range(&done[0].file, 1 << 32, Some(13), &mut |b| {
                got.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
        assert_eq!(got, b"past four GiB");
        let mut total = 0u64;
        let mut hasher = blake3::Hasher::new();
        store
            .read_range(&done[0].file, 0, None, &mut |b| {
                total += b.len() as u64;
                hasher.update(b);
                Ok(())
            })
            .unwrap();
        assert_eq!(total, size);
        assert_eq!(Id::from(hasher.finalize()), done[0].file);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn restore_of_add_is_identity(files in proptest::collection::vec((0usize..200_000, any::<u64>()), 1..6)) {
            let d = tempfile::tempdir().unwrap();
            let store = small_store(&d.path().join("store"));
            let mut paths = Vec::new();
            for (i, (n, seed)) in files.iter().enumerate() {
                let f = d.path().join(format!("f{i}"));
                fs::write(&f, noise(*n, *seed)).unwrap();
                paths.push(f);
            }
            let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
            let (done, errs, _) = add_paths(&store, &refs);
            prop_assert!(errs.is_empty());
            prop_assert_eq!(done.len(), files.len());
            for x in done {
                prop_assert_eq!(read_all(&store, &x.file), fs::read(&x.path).unwrap());
            }
        }
    }
}
