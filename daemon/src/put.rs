//! Content streamed in by a client rather than read from a path: git's clean
//! filter hands each file's bytes to `hoard filter-process`, which forwards
//! them here one file after another over one stream (a *session*).
//!
//! A session keeps one [`FrameBuilder`] across its files, so the new chunks
//! of many small files still share compression frames. A file is *staged*
//! once its chunks are queued: its id is answered at once (git is waiting for
//! the pointer), and it becomes durable at the next [`Session::flush`]; the
//! session flushes at least every [`COMMIT_EVERY`], when asked, and at its
//! end. A flush that fails names every staged file it could not keep.
//!
//! Floor 7 (engine): may import `ingest`, `store`, `chunker`, `index`,
//! `pack`; no sync, no services, no tonic.

use crate::chunker::{chunk_buffer, chunk_stream, Block};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::StatEntry;
use crate::ingest::{ctime_ns, mtime_ns, same_file_state, FrameBuilder, COMMIT_EVERY};
use crate::manifest::Manifest;
use crate::store::{Completed, Deps, Store};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Files up to this size are read whole and cut on the session's thread
/// (and may be sent in one message).
pub const SMALL_FILE: usize = hoard_proto::MAX_DATA_MESSAGE;
/// Queued new-chunk bytes that trigger compressing and appending them.
const FLUSH_FRAMES_AT: usize = 8 << 20;

/// What a client sends on a session, in order.
#[derive(Debug)]
pub enum Msg {
    /// A file starts; `path` is its absolute work-tree path if it has one.
    Begin {
        path: String,
        display: String,
    },
    /// A whole small file in one message.
    Whole {
        display: String,
        content: bytes::Bytes,
    },
    Data(bytes::Bytes),
    End,
    Flush,
}

/// Files a client offered that the stat cache answered (their content was
/// not sent), since the daemon started.
pub static KNOWN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A staged or stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub file: Id,
    pub size: u64,
}

/// The outcome of a flush: files made durable, and those that were lost
/// (display name, reason).
#[derive(Debug, Default)]
pub struct Flushed {
    pub files: u64,
    pub errors: Vec<(String, String)>,
}

pub struct Session<'s> {
    store: &'s Store,
    frames: FrameBuilder,
    deps: Deps,
    staged: Vec<(String, Completed)>,
    /// Staged files dropped after a failure, reported by the next flush.
    lost: Vec<(String, String)>,
    last_flush: Instant,
    /// The previous version of the next file put (see [`Session::follow`]).
    follows: Option<crate::history::History>,
}

impl<'s> Session<'s> {
    pub fn new(store: &'s Store) -> Self {
        Session {
            store,
            frames: FrameBuilder::new(store),
            deps: Deps::default(),
            staged: Vec::new(),
            lost: Vec::new(),
            last_flush: Instant::now(),
            follows: None,
        }
    }

    /// The next file put is the new version of work-tree `path`: the
    /// version the stat cache last recorded there (what a checkout wrote,
    /// or the last `hoard add`) gives its first delta candidates.
    pub fn follow(&mut self, path: &str) {
        let previous = self
            .store
            .stat_entries(&[path.as_bytes()])
            .ok()
            .and_then(|mut c| c.pop().flatten())
            .map(|c| c.file);
        self.follows = crate::ingest::history_of(self.store, previous);
    }

    /// The content the stat cache proves `path` holds right now, if any.
    pub fn known(&self, path: &str) -> Option<Put> {
        lookup(self.store, &[path.to_string()]).ok()?.pop()?
    }

    /// Chunks one file's content from `content` and stages it.
    pub fn put(&mut self, display: &str, mut content: impl Read + Send) -> Result<Put> {
        let received = |e| Error::Io {
            context: format!("cannot receive the content of {display}"),
            source: e,
        };
        self.frames.begin_file(self.follows.take(), None);
        // Small files (most of a git repository) are cut on this thread:
        // the pipelined chunker's hand-offs cost more than their work.
        let mut head = Vec::new();
        (&mut content)
            .take(SMALL_FILE as u64 + 1)
            .read_to_end(&mut head)
            .map_err(received)?;
        if head.len() <= SMALL_FILE {
            // A file the store already holds (git re-cleans files often:
            // stash, rebase, renormalize) costs one hash and one lookup.
            let id = Id::of(&head);
            if self.store.file_size(&id)? == Some(head.len() as u64) {
                return Ok(Put {
                    file: id,
                    size: head.len() as u64,
                });
            }
            let block = chunk_buffer(head, self.store.params().chunk);
            let manifest = Manifest {
                size: block.data.len() as u64,
                chunks: block.chunks.iter().map(|c| (c.id, c.len as u32)).collect(),
            };
            self.queue(&block)?;
            return Ok(self.stage(display, id, manifest));
        }
        let content = io::Cursor::new(head).chain(content);
        let store = self.store;
        let mut manifest = Manifest::default();
        let mut failure = None;
        let frames = &mut self.frames;
        let deps = &mut self.deps;
        let res = chunk_stream(content, 0, store.params().chunk, |block: Block| {
            manifest
                .chunks
                .extend(block.chunks.iter().map(|c| (c.id, c.len as u32)));
            let mut step = || -> Result<()> {
                if store.is_shutting_down() {
                    return Err(Error::Cancelled);
                }
                let ids: Vec<Id> = block.chunks.iter().map(|c| c.id).collect();
                let indexed = store.indexed(&ids)?;
                frames.add(&block, &indexed);
                if frames.queued_bytes() >= FLUSH_FRAMES_AT {
                    frames.flush(store, deps)?;
                }
                Ok(())
            };
            step().map_err(|e| {
                failure = Some(e);
                io::Error::other("ingest stopped")
            })
        });
        if let Some(e) = failure {
            // Chunks this builder queued may not have been appended.
            self.reset(&format!("an earlier file failed: {e}"));
            return Err(e);
        }
        let (file, size) = res.map_err(received)?;
        manifest.size = size;
        Ok(self.stage(display, file, manifest))
    }

    fn stage(&mut self, display: &str, file: Id, manifest: Manifest) -> Put {
        let size = manifest.size;
        self.staged.push((
            display.to_string(),
            Completed {
                file,
                manifest,
                deps: Deps::default(),
                stat: None,
            },
        ));
        Put { file, size }
    }

    /// Queues one chunk received from a peer (its id already verified).
    /// Returns false when the store already had it.
    pub fn put_chunk(&mut self, id: Id, data: Vec<u8>) -> Result<bool> {
        let len = data.len();
        let block = Block {
            data,
            chunks: vec![crate::chunker::Cut { offset: 0, len, id }],
        };
        Ok(self.queue(&block)? == 0)
    }

    /// Appends a verified frame as it is (a peer's frame as stored: no
    /// re-framing, no recompression). Every chunk must be new, and a
    /// delta's depth (`frame.depth`) the one its bases give it here, at most
    /// `MAX_DEPTH`. Returns how many of its chunks
    /// were left out because the store got them meanwhile (from another
    /// writer).
    pub fn put_frame(&mut self, mut frame: crate::pack::Frame) -> Result<u64> {
        use rayon::prelude::*;
        if frame.compressed.is_some() && frame.bases.is_empty() {
            // Compressible content: sketch it so later versions can be
            // stored as deltas against it.
            frame.sketches = frame
                .chunk_bytes()
                .collect::<Vec<_>>()
                .par_iter()
                .map(|b| crate::sketch::sketch(b))
                .collect();
        }
        let r = self
            .store
            .append_frames(vec![frame], &mut self.deps)
            .map(|a| a.reused);
        if let Err(e) = &r {
            self.reset(&format!("an earlier write failed: {e}"));
        }
        r
    }

    /// Queues a block's chunks the store lacks, appending once enough are
    /// queued; returns how many it already had. A failure drops everything
    /// staged (its chunks may not have been written).
    fn queue(&mut self, block: &Block) -> Result<u64> {
        let ids: Vec<Id> = block.chunks.iter().map(|c| c.id).collect();
        let r = self.store.indexed(&ids).and_then(|indexed| {
            let reused = self.frames.add(block, &indexed);
            if self.frames.queued_bytes() >= FLUSH_FRAMES_AT {
                self.frames.flush(self.store, &mut self.deps)?;
            }
            Ok(reused)
        });
        if let Err(e) = &r {
            self.reset(&format!("an earlier write failed: {e}"));
        }
        r
    }

    /// Appends every queued chunk and waits until it is durable and
    /// indexed (no files are involved).
    pub fn seal(&mut self) -> Result<()> {
        self.frames.flush(self.store, &mut self.deps)?;
        self.deps = Deps::default();
        self.store.commit(&mut [], 0)?;
        Ok(())
    }

    /// Is a flush due (staged files older than [`COMMIT_EVERY`])?
    pub fn due(&self) -> bool {
        !self.staged.is_empty() && self.last_flush.elapsed() >= COMMIT_EVERY
    }

    /// Flushes if due; what could not be kept is reported by the next
    /// explicit flush.
    pub fn flush_if_due(&mut self) {
        if self.due() {
            let f = self.flush();
            self.lost.extend(f.errors);
        }
    }

    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty() || !self.lost.is_empty()
    }

    /// Appends queued chunks and commits every staged file.
    pub fn flush(&mut self) -> Flushed {
        self.last_flush = Instant::now();
        let mut out = Flushed {
            files: 0,
            errors: std::mem::take(&mut self.lost),
        };
        if self.staged.is_empty() {
            return out;
        }
        if let Err(e) = self.frames.flush(self.store, &mut self.deps) {
            let why = e.to_string();
            out.errors.extend(
                std::mem::take(&mut self.staged)
                    .into_iter()
                    .map(|(d, _)| (d, why.clone())),
            );
            self.frames = FrameBuilder::new(self.store);
            self.deps = Deps::default();
            return out;
        }
        let (names, mut files): (Vec<String>, Vec<Completed>) =
            std::mem::take(&mut self.staged).into_iter().unzip();
        for f in &mut files {
            f.deps = self.deps.clone();
        }
        self.deps = Deps::default();
        match self.store.commit(&mut files, 0) {
            Ok(results) => {
                for (name, r) in names.into_iter().zip(results) {
                    match r {
                        Ok(()) => out.files += 1,
                        Err(e) => out.errors.push((name, e.to_string())),
                    }
                }
            }
            Err(e) => {
                let why = e.to_string();
                out.errors
                    .extend(names.into_iter().map(|n| (n, why.clone())));
            }
        }
        out
    }

    /// Forgets everything staged after a failure that may have left queued
    /// chunks unwritten; the files are reported by the next flush.
    fn reset(&mut self, why: &str) {
        self.frames = FrameBuilder::new(self.store);
        self.deps = Deps::default();
        let lost = std::mem::take(&mut self.staged);
        self.lost
            .extend(lost.into_iter().map(|(d, _)| (d, why.to_string())));
    }
}

/// For each absolute path, the file the stat cache proves it holds now.
pub fn lookup(store: &Store, paths: &[String]) -> Result<Vec<Option<Put>>> {
    let mut out = Vec::with_capacity(paths.len());
    for batch in paths.chunks(crate::STAT_BATCH) {
        let keys: Vec<&[u8]> = batch.iter().map(|p| p.as_bytes()).collect();
        let cached = store.stat_entries(&keys)?;
        for (p, c) in batch.iter().zip(cached) {
            let now = Path::new(p)
                .is_absolute()
                .then(|| std::fs::symlink_metadata(p).ok())
                .flatten();
            out.push(match (c, now) {
                (Some(c), Some(m)) if same_file_state(&c, &m) => Some(Put {
                    file: c.file,
                    size: c.size,
                }),
                _ => None,
            });
        }
    }
    Ok(out)
}

/// A file a client wrote from the store and verified: its state right
/// after writing.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub file: Id,
    pub size: u64,
    pub mtime_ns: i64,
    pub ino: u64,
    /// When the writer took that stat (its clock, ns since the epoch).
    pub known_at_ns: i64,
}

/// Records stat-cache entries for files a client materialized, when the
/// file is still as the client left it, its mtime had settled when the
/// client took its stat (the one racy rule, [`hoard_proto::settled`], that
/// ingest applies too), and the store holds its content at that size.
/// Returns how many were recorded.
pub fn remember(store: &Store, files: &[Written]) -> Result<u64> {
    let mut b = store.index.batch();
    let mut n = 0;
    for w in files {
        let Ok(m) = std::fs::symlink_metadata(&w.path) else {
            continue;
        };
        let same = w.path.is_absolute()
            && m.is_file()
            && m.len() == w.size
            && mtime_ns(&m) == w.mtime_ns
            && m.ino() == w.ino
            && hoard_proto::settled(w.mtime_ns, w.known_at_ns)
            && store.file_size(&w.file)? == Some(w.size);
        if !same {
            continue;
        }
        b.put_stat(
            w.path.as_os_str().as_bytes(),
            &StatEntry {
                size: m.len(),
                mtime_ns: mtime_ns(&m),
                ctime_ns: ctime_ns(&m),
                ino: m.ino(),
                dev: m.dev(),
                file: w.file,
            },
        );
        n += 1;
    }
    b.write(false)?;
    Ok(n)
}

/// Adapts the `Data` messages of one file, up to its `End`, into a reader.
pub struct MsgReader<'a> {
    next: &'a mut (dyn FnMut() -> Option<Msg> + Send),
    cur: bytes::Bytes,
    ended: bool,
}

impl<'a> MsgReader<'a> {
    pub fn new(next: &'a mut (dyn FnMut() -> Option<Msg> + Send)) -> Self {
        MsgReader {
            next,
            cur: bytes::Bytes::new(),
            ended: false,
        }
    }

    /// Consumes whatever is left of this file's content (after a failure).
    pub fn drain(&mut self) -> io::Result<()> {
        let mut sink = [0u8; 64 << 10];
        while self.read(&mut sink)? > 0 {}
        Ok(())
    }
}

impl Read for MsgReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match (self.next)() {
                Some(Msg::Data(b)) => self.cur = b,
                Some(Msg::End) => self.ended = true,
                Some(other) => {
                    self.ended = true;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("protocol error: {other:?} before the file's end"),
                    ));
                }
                None => {
                    self.ended = true;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client went away before the file's end",
                    ));
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{add_paths, noise, read_all, small_store};

    fn msgs(content: &[u8]) -> impl FnMut() -> Option<Msg> + Send {
        let mut pieces: Vec<Msg> = content
            .chunks(100_000)
            .map(|c| Msg::Data(bytes::Bytes::copy_from_slice(c)))
            .collect();
        pieces.push(Msg::End);
        pieces.reverse();
        move || pieces.pop()
    }

    #[test]
    fn streamed_files_are_staged_then_durable_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let mut s = Session::new(&store);
        let files: Vec<Vec<u8>> = (0..20u64)
            .map(|i| noise((i as usize * 7919) % 300_000, i))
            .chain([Vec::new(), noise(3 << 20, 99)])
            .collect();
        let mut puts = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let mut next = msgs(f);
            let mut r = MsgReader::new(&mut next);
            let p = s.put(&format!("f{i}"), &mut r).unwrap();
            assert_eq!(p.file.0, *blake3::hash(f).as_bytes());
            assert_eq!(p.size, f.len() as u64);
            puts.push(p);
        }
        // Staged is not yet visible as stored.
        assert!(s.has_staged());
        let f = s.flush();
        assert_eq!(f.files, files.len() as u64);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        for (p, f) in puts.iter().zip(&files) {
            assert_eq!(&read_all(&store, &p.file), f);
        }
        // Sent again: a small stored file is answered without staging.
        let mut next = msgs(&files[3]);
        let mut r = MsgReader::new(&mut next);
        assert_eq!(s.put("again", &mut r).unwrap(), puts[3]);
        assert!(!s.has_staged());
    }

    #[test]
    fn a_stream_that_stops_early_is_an_error_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let mut s = Session::new(&store);
        let data = noise(500_000, 1);
        let mut pieces = vec![Msg::Data(bytes::Bytes::copy_from_slice(&data))];
        let mut next = move || pieces.pop();
        let mut r = MsgReader::new(&mut next);
        let err = s.put("cut", &mut r).unwrap_err();
        assert!(err.to_string().contains("cut"), "{err}");
        assert_eq!(s.flush().files, 0);
        assert_eq!(
            store
                .file_size(&Id(*blake3::hash(&data).as_bytes()))
                .unwrap(),
            None
        );
    }

    #[test]
    fn known_and_lookup_use_the_stat_cache_and_remember_fills_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(&dir.path().join("store"));
        let a = dir.path().join("a.bin");
        std::fs::write(&a, noise(200_000, 5)).unwrap();
        // Old enough not to be racy.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let (done, errs, _) = add_paths(&store, &[&a]);
        assert!(errs.is_empty(), "{errs:?}");
        let s = Session::new(&store);
        let a_str = a.to_str().unwrap().to_string();
        assert_eq!(s.known(&a_str).map(|p| p.file), Some(done[0].file));
        assert_eq!(
            lookup(&store, std::slice::from_ref(&a_str)).unwrap()[0]
                .as_ref()
                .map(|p| p.file),
            Some(done[0].file)
        );
        // Modified: no longer vouched for.
        std::fs::write(&a, b"changed").unwrap();
        assert_eq!(s.known(&a_str), None);
        assert_eq!(
            lookup(&store, std::slice::from_ref(&a_str)).unwrap(),
            vec![None]
        );

        // A file written from the store is remembered only as written.
        let b = dir.path().join("b.bin");
        let content = read_all(&store, &done[0].file);
        std::fs::write(&b, &content).unwrap();
        let stat = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            Written {
                path: p.to_path_buf(),
                file: done[0].file,
                size: m.len(),
                mtime_ns: mtime_ns(&m),
                ino: m.ino(),
                known_at_ns: crate::ingest::now_ns(),
            }
        };
        let b_str = b.to_str().unwrap().to_string();
        // Just written, mtime "now": a same-size rewrite within the same
        // clock tick would leave the stat as it is, so it is not trusted.
        let racy = stat(&b);
        let mut other = content.clone();
        other[0] ^= 1;
        std::fs::write(&b, &other).unwrap();
        let same_tick =
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(racy.mtime_ns as u64);
        std::fs::File::options()
            .write(true)
            .open(&b)
            .unwrap()
            .set_modified(same_tick)
            .unwrap();
        assert_eq!(
            remember(&store, &[racy]).unwrap(),
            0,
            "a racy stat was trusted"
        );
        assert_eq!(
            lookup(&store, std::slice::from_ref(&b_str)).unwrap(),
            vec![None]
        );
        // Written with its mtime set back, as checkout does: trusted.
        std::fs::write(&b, &content).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&b)
            .unwrap()
            .set_modified(hoard_proto::backdated_mtime(std::time::SystemTime::now()))
            .unwrap();
        let w = stat(&b);
        let wrong_size = Written {
            size: 1,
            ..w.clone()
        };
        assert_eq!(remember(&store, &[wrong_size]).unwrap(), 0);
        assert_eq!(remember(&store, &[w]).unwrap(), 1);
        assert_eq!(
            lookup(&store, &[b_str]).unwrap()[0]
                .as_ref()
                .map(|p| p.file),
            Some(done[0].file)
        );
    }
}
