//! Where packs live. The engine only talks to [`PackBackend`]; the local
//! directory is the first implementation, an object store the next.
//!
//! Contract (the durability barrier): bytes written to a [`PackSink`] are not
//! durable and not visible until [`PackSink::commit`] returns `Ok`; from then
//! on the pack survives a crash or power loss under its id, and it is never
//! changed again. A sink dropped without commit leaves nothing behind.
//! [`PackBackend::delete`] is the one way a pack goes away: when it returns
//! `Ok` the pack is gone for good (and deleting an absent pack is no error);
//! a caller deletes a pack only once nothing in the index names it.
//!
//! Floor 1: may import `id` and `error`; knows nothing of what packs hold.

pub mod cache;
mod runs;
pub mod s3;

use crate::error::{Error, Result};
use crate::id::Id;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub trait PackBackend: Send + Sync {
    /// Begins a new pack.
    fn create(&self) -> Result<Box<dyn PackSink>>;
    /// Reads exactly `buf.len()` bytes at `offset` of pack `id`.
    fn read_at(&self, id: &Id, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Reads exactly `len` bytes at `offset` of pack `id` into a new buffer
    /// (a backend may skip zeroing it first).
    fn read_vec(&self, id: &Id, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_at(id, offset, &mut buf)?;
        Ok(buf)
    }
    /// Like [`PackBackend::read_vec`], as shared bytes: a backend holding
    /// the range in a cached block hands out a slice of it, never a copy.
    fn read_bytes(&self, id: &Id, offset: u64, len: usize) -> Result<bytes::Bytes> {
        self.read_vec(id, offset, len).map(bytes::Bytes::from)
    }
    /// The whole pack, front to back, and its length.
    fn open(&self, id: &Id) -> Result<(Box<dyn Read + Send>, u64)>;
    /// Every committed pack and its length.
    fn list(&self) -> Result<Vec<(Id, u64)>>;
    /// Where a pack is, for messages.
    fn describe(&self, id: &Id) -> String;
    /// Removes pack `id` durably.
    fn delete(&self, id: &Id) -> Result<()>;
    /// Keeps a copy of ref `name` (`None`: deleted) beside the packs, where
    /// that is somewhere else than the store's own disk (an object store):
    /// a hub that lost its index gets its refs back from there. The index
    /// stays the authority (compare-and-swap lives there).
    fn mirror_ref(&self, _name: &str, _id: Option<&Id>) -> Result<()> {
        Ok(())
    }
    /// The refs mirrored by [`PackBackend::mirror_ref`].
    fn mirrored_refs(&self) -> Result<Vec<(String, Id)>> {
        Ok(Vec::new())
    }
    /// Whether each read is a request to a server far away (an object
    /// store): then the store reads whole frames (one request each, kept in
    /// the backend's cache) rather than single chunks, and a pack is
    /// written with its idx object (`pack::idx`: one small read rebuilds
    /// the pack's index entries).
    fn is_remote(&self) -> bool {
        false
    }
    /// Pack `id`'s idx object, `None` when it has none.
    fn read_idx(&self, _id: &Id) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    /// What the backend is and what it has done, for `hoard daemon status`.
    fn status(&self) -> BackendStatus {
        BackendStatus::default()
    }
}

/// A backend's state and counters since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendStatus {
    /// "local" or "s3".
    pub kind: String,
    /// Where packs are: a directory, or `s3://bucket/prefix`.
    pub location: String,
    /// The endpoint requests go to now (object stores).
    pub endpoint: String,
    pub requests: u64,
    pub lists: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bytes: u64,
    pub failovers: u64,
}

pub trait PackSink: Write + Send {
    /// The pack's idx object (when [`PackBackend::is_remote`]), given
    /// before [`PackSink::commit`]; kept durable with the pack.
    fn set_idx(&mut self, _idx: Vec<u8>) {}
    /// Makes the pack durable under `id` (and its idx, when given). Only
    /// after this returns `Ok` may anything that refers to the pack be
    /// recorded.
    fn commit(self: Box<Self>, id: &Id) -> Result<()>;
}

/// Packs as files `packs/<2 hex>/<64 hex>.pack` under a directory.
pub struct LocalDir {
    root: PathBuf,
    open_files: Mutex<HashMap<Id, Arc<File>>>,
}

const OPEN_FILE_CACHE: usize = 64;
/// Start writeback every this many bytes, so the final fsync is short and
/// the disk works while the CPU compresses the next data.
const WRITEBACK_EVERY: u64 = 8 << 20;

impl LocalDir {
    pub fn open(root: &Path) -> Result<LocalDir> {
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).map_err(|e| Error::io("cannot create pack directory", &tmp, e))?;
        // Leftovers of a crashed daemon: never committed, never referenced.
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(LocalDir {
            root: root.to_path_buf(),
            open_files: Mutex::new(HashMap::new()),
        })
    }

    /// The directory packs are in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path_of(&self, id: &Id) -> PathBuf {
        let h = id.hex();
        self.root.join(&h[..2]).join(format!("{h}.pack"))
    }

    fn file(&self, id: &Id) -> Result<Arc<File>> {
        let mut cache = self.open_files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = cache.get(id) {
            return Ok(f.clone());
        }
        let path = self.path_of(id);
        let f = Arc::new(File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                Error::Corrupt(format!("pack {} is missing ({})", id.hex(), path.display()))
            }
            _ => Error::io("cannot open pack", &path, e),
        })?);
        if cache.len() >= OPEN_FILE_CACHE {
            cache.clear();
        }
        cache.insert(*id, f.clone());
        Ok(f)
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot fsync directory", dir, e))
}

impl PackBackend for LocalDir {
    fn create(&self) -> Result<Box<dyn PackSink>> {
        let tmp = tempfile_in(&self.root.join("tmp"))?;
        Ok(Box::new(LocalSink {
            file: Some(tmp.0),
            path: tmp.1,
            root: self.root.clone(),
            written: 0,
            flushed_to: 0,
        }))
    }

    fn read_at(&self, id: &Id, offset: u64, buf: &mut [u8]) -> Result<()> {
        let f = self.file(id)?;
        f.read_exact_at(buf, offset).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::Corrupt(format!(
                "pack {} is shorter than the index says (reading {} bytes at {offset})",
                id.hex(),
                buf.len()
            )),
            _ => Error::io("cannot read pack", &self.path_of(id), e),
        })
    }

    fn read_vec(&self, id: &Id, offset: u64, len: usize) -> Result<Vec<u8>> {
        // Large reads (frames, ~1 MiB) go straight into fresh memory: a
        // file of its own (so seeking races no one) and `read_to_end`,
        // which does not zero the buffer first.
        if len < 64 << 10 {
            let mut buf = vec![0u8; len];
            self.read_at(id, offset, &mut buf)?;
            return Ok(buf);
        }
        let path = self.path_of(id);
        let mut buf = Vec::with_capacity(len);
        File::open(&path)
            .and_then(|mut f| {
                f.seek(io::SeekFrom::Start(offset))?;
                f.take(len as u64).read_to_end(&mut buf)
            })
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    Error::Corrupt(format!("pack {} is missing ({})", id.hex(), path.display()))
                }
                _ => Error::io("cannot read pack", &path, e),
            })?;
        if buf.len() != len {
            return Err(Error::Corrupt(format!(
                "pack {} is shorter than the index says (reading {len} bytes at {offset})",
                id.hex()
            )));
        }
        Ok(buf)
    }

    fn open(&self, id: &Id) -> Result<(Box<dyn Read + Send>, u64)> {
        let path = self.path_of(id);
        let f = File::open(&path).map_err(|e| Error::io("cannot open pack", &path, e))?;
        let len = f
            .metadata()
            .map_err(|e| Error::io("cannot stat pack", &path, e))?
            .len();
        Ok((Box::new(io::BufReader::with_capacity(1 << 20, f)), len))
    }

    fn list(&self) -> Result<Vec<(Id, u64)>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.root)
            .map_err(|e| Error::io("cannot list packs in", &self.root, e))?;
        for sub in rd.flatten() {
            let name = sub.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 2 || !sub.path().is_dir() {
                continue;
            }
            let inner = fs::read_dir(sub.path())
                .map_err(|e| Error::io("cannot list packs in", &sub.path(), e))?;
            for e in inner.flatten() {
                let n = e.file_name();
                let Some(stem) = n.to_str().and_then(|n| n.strip_suffix(".pack")) else {
                    continue;
                };
                if let Ok(id) = Id::parse(stem) {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    out.push((id, len));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn describe(&self, id: &Id) -> String {
        self.path_of(id).display().to_string()
    }

    fn status(&self) -> BackendStatus {
        BackendStatus {
            kind: "local".into(),
            location: self.root.display().to_string(),
            ..BackendStatus::default()
        }
    }

    fn delete(&self, id: &Id) -> Result<()> {
        self.open_files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => fsync_dir(path.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("cannot delete pack", &path, e)),
        }
    }
}

/// A new temporary pack file in `dir` (also the S3 backend's spool).
fn tempfile_in(dir: &Path) -> Result<(File, PathBuf)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}.tmp", std::process::id()));
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io("cannot create temporary pack", &path, e))?;
    Ok((f, path))
}

struct LocalSink {
    file: Option<File>,
    path: PathBuf,
    root: PathBuf,
    written: u64,
    flushed_to: u64,
}

impl Write for LocalSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("pack already committed"))?;
        let n = f.write(buf)?;
        self.written += n as u64;
        if self.written - self.flushed_to >= WRITEBACK_EVERY {
            start_writeback(f, self.flushed_to, self.written - self.flushed_to);
            self.flushed_to = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn start_writeback(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // Advisory: failure only means the final fsync does more of the work.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

impl PackSink for LocalSink {
    fn commit(mut self: Box<Self>, id: &Id) -> Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::Corrupt("pack committed twice".into()))?;
        file.sync_all()
            .map_err(|e| Error::io("cannot fsync pack", &self.path, e))?;
        drop(file);
        let h = id.hex();
        let dir = self.root.join(&h[..2]);
        fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create pack directory", &dir, e))?;
        let dest = dir.join(format!("{h}.pack"));
        fs::rename(&self.path, &dest)
            .map_err(|e| Error::io("cannot move pack into place at", &dest, e))?;
        fsync_dir(&dir)?;
        fsync_dir(&self.root)?;
        Ok(())
    }
}

impl Drop for LocalSink {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_pack_is_listed_and_readable_abandoned_is_gone() {
        let d = tempfile::tempdir().unwrap();
        let b = LocalDir::open(d.path()).unwrap();
        let mut s = b.create().unwrap();
        s.write_all(b"hello pack").unwrap();
        let id = Id::of(b"x");
        s.commit(&id).unwrap();
        let mut abandoned = b.create().unwrap();
        abandoned.write_all(b"never").unwrap();
        drop(abandoned);
        assert_eq!(b.list().unwrap(), vec![(id, 10)]);
        let mut buf = [0u8; 4];
        b.read_at(&id, 6, &mut buf).unwrap();
        assert_eq!(&buf, b"pack");
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        assert!(matches!(
            b.read_at(&id, 8, &mut buf),
            Err(Error::Corrupt(_))
        ));
    }
}
