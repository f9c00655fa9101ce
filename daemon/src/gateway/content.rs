//! A file's bytes for the gateway: from this store, or fetched on demand
//! from a remote (only the frames a range needs), streamed in bounded
//! pieces.

use super::Stats;
use crate::dataset::Datasets;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::manifest::Manifest;
use crate::sync::{PeerAddr, Want};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Bytes per body piece handed to the connection.
const PIECE: usize = 256 << 10;
/// Pieces buffered ahead of a slow reader, per response.
const PIECES_AHEAD: usize = 8;
/// A reader that takes nothing for this long is dropped (its turn and
/// its blocking thread freed).
const STALLED: std::time::Duration = std::time::Duration::from_secs(60);
/// Manifests of files read on demand kept for their next range, at most
/// this many, and at most [`ENTRIES_KEPT`] chunk entries in all (36 bytes
/// each: about 150 MiB; a 20 GB file's manifest alone is ~20 MB).
const MANIFESTS_KEPT: usize = 256;
const ENTRIES_KEPT: usize = 4 << 20;

/// Where a file's bytes come from.
#[derive(Clone)]
pub enum Source {
    /// This store has recorded the file.
    Local,
    /// A remote has it: its manifest, and how to reach it.
    Remote {
        manifest: Arc<Manifest>,
        addr: Arc<PeerAddr>,
    },
}

/// Manifests a remote sent for files read a range at a time (a file read
/// on demand is never recorded here, since its whole content was never
/// checked against its id).
#[derive(Default)]
pub struct Manifests {
    kept: Mutex<Kept>,
}

/// The manifests by file id, the ids in the order they came, and their
/// chunk entries in all.
type Kept = (HashMap<Id, Arc<Manifest>>, VecDeque<Id>, usize);

impl Manifests {
    fn get(&self, id: &Id) -> Option<Arc<Manifest>> {
        let k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        k.0.get(id).cloned()
    }

    fn put(&self, id: Id, m: Arc<Manifest>) {
        let mut k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.chunks.len();
        match k.0.insert(id, m) {
            None => k.1.push_back(id),
            Some(old) => k.2 -= old.chunks.len(),
        }
        k.2 += n;
        while k.1.len() > MANIFESTS_KEPT || (k.2 > ENTRIES_KEPT && k.1.len() > 1) {
            let Some(old) = k.1.pop_front() else { break };
            if let Some(m) = k.0.remove(&old) {
                k.2 -= m.chunks.len();
            }
        }
    }
}

/// The size of `file` and where its bytes come from: this store if it has
/// it, else `remote` (its manifest asked for once; `size`, when a tree
/// entry gives it, must match). Runs on a blocking thread.
pub fn locate(
    ds: &Datasets,
    manifests: &Manifests,
    stats: &Stats,
    file: Want,
    remote: Option<Result<Arc<PeerAddr>>>,
) -> Result<(u64, Source)> {
    if let Some(size) = ds.store.file_size(&file.file)? {
        return Ok((size, Source::Local));
    }
    let Some(addr) = remote else {
        return Err(Error::NotFound(format!(
            "file {} is not in this store and no remote is configured to fetch it from; `hoard remote add origin URL --token TOKEN` (or `hoard pull`/`hoard clone` it first)",
            file.file
        )));
    };
    let addr = addr?;
    if let Some(m) = manifests.get(&file.file) {
        return Ok((m.size, Source::Remote { manifest: m, addr }));
    }
    let (m, _) = crate::sync::fetch_range(&ds.store, &addr, file, None, 0, 0)?;
    stats.remote_fetches.fetch_add(1, Ordering::Relaxed);
    manifests.put(file.file, m.clone());
    Ok((m.size, Source::Remote { manifest: m, addr }))
}

/// Makes bytes `[start, end)` of `file` readable from this store: for a
/// remote source, fetches the frames that cover them (or, for the whole
/// file, the file itself, checked against its id and recorded).
pub fn bring(
    ds: &Datasets,
    stats: &Stats,
    file: &Id,
    source: &Source,
    start: u64,
    end: u64,
) -> Result<Source> {
    let Source::Remote { manifest, addr } = source else {
        return Ok(Source::Local);
    };
    stats.remote_fetches.fetch_add(1, Ordering::Relaxed);
    let want = Want {
        file: *file,
        size: Some(manifest.size),
    };
    if start == 0 && end >= manifest.size {
        let sum = crate::sync::pull(&ds.store, addr, &[want], &mut |_| {})?;
        stats.remote_bytes.fetch_add(sum.bytes, Ordering::Relaxed);
        if !sum.missing.is_empty() {
            return Err(Error::NotFound(format!(
                "{} no longer has file {file}",
                addr.url
            )));
        }
        return Ok(Source::Local);
    }
    let (_, sum) =
        crate::sync::fetch_range(&ds.store, addr, want, Some(manifest.clone()), start, end)?;
    stats.remote_bytes.fetch_add(sum.bytes, Ordering::Relaxed);
    Ok(source.clone())
}

/// The body of a response: bytes `[start, end)` of `file` read on a
/// blocking thread in [`PIECE`]s, at most [`PIECES_AHEAD`] ahead of the
/// connection, in one of the gateway's stream turns. A failure midway ends
/// the body with an error, so the client sees a short body (its length was
/// announced), never wrong bytes; a client that reads nothing for
/// [`STALLED`] is dropped.
pub fn stream(
    ds: Arc<Datasets>,
    stats: Arc<Stats>,
    turn: tokio::sync::OwnedSemaphorePermit,
    file: Id,
    source: Source,
    start: u64,
    end: u64,
) -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(PIECES_AHEAD);
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let mut buf = Vec::with_capacity(PIECE);
        let send = |buf: &mut Vec<u8>| -> Result<()> {
            let piece = Bytes::from(std::mem::replace(buf, Vec::with_capacity(PIECE)));
            stats
                .bytes_served
                .fetch_add(piece.len() as u64, Ordering::Relaxed);
            rt.block_on(tx.send_timeout(Ok(piece), STALLED))
                .map_err(|_| Error::Cancelled)
        };
        let mut out = |mut data: &[u8]| -> Result<()> {
            while !data.is_empty() {
                let n = data.len().min(PIECE - buf.len());
                buf.extend_from_slice(&data[..n]);
                data = &data[n..];
                if buf.len() == PIECE {
                    send(&mut buf)?;
                }
            }
            Ok(())
        };
        let len = Some(end - start);
        let r = match &source {
            Source::Local => ds.store.read_range(&file, start, len, &mut out).map(|_| ()),
            Source::Remote { manifest, .. } => ds
                .store
                .read_manifest_range(&file, manifest, start, len, &mut out),
        };
        let r = r.and_then(|()| {
            if buf.is_empty() {
                Ok(())
            } else {
                send(&mut buf)
            }
        });
        match r {
            Ok(()) | Err(Error::Cancelled) => {}
            Err(e) => {
                tracing::warn!(%file, error = %e, "gateway: a read failed midway");
                stats.errors.fetch_add(1, Ordering::Relaxed);
                let _ = rt
                    .block_on(tx.send_timeout(Err(std::io::Error::other(e.to_string())), STALLED));
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(n: usize) -> Arc<Manifest> {
        Arc::new(Manifest {
            size: n as u64,
            chunks: vec![(Id::of(b"c"), 1); n],
        })
    }

    #[test]
    fn kept_manifests_are_bounded_by_count_and_by_entries() {
        let m = Manifests::default();
        for i in 0..MANIFESTS_KEPT + 10 {
            m.put(Id::of(&i.to_le_bytes()), manifest(1));
        }
        assert!(
            m.get(&Id::of(&0usize.to_le_bytes())).is_none(),
            "the oldest went"
        );
        assert!(m
            .get(&Id::of(&(MANIFESTS_KEPT + 9).to_le_bytes()))
            .is_some());
        // Two big ones do not fit together; the newest stays.
        let (a, b) = (Id::of(b"a"), Id::of(b"b"));
        m.put(a, manifest(ENTRIES_KEPT / 2 + 1));
        m.put(b, manifest(ENTRIES_KEPT / 2 + 1));
        assert!(m.get(&a).is_none() && m.get(&b).is_some());
        let k = m.kept.lock().unwrap();
        assert_eq!(k.2, k.0.values().map(|m| m.chunks.len()).sum::<usize>());
    }
}
