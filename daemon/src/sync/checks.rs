//! Checks on what a peer sends, before anything of it is stored: chunks
//! against their ids and this store's chunk sizes, manifest pieces put
//! together consistently, batches of chunks that were asked for.

use crate::error::{Error, Result};
use crate::id::Id;
use crate::manifest::Manifest;
use crate::put::Session;
use crate::store::Store;
use hoard_proto::v1 as pb;
use hoard_proto::PEER_BATCH;
use std::collections::{HashMap, HashSet};

/// Entries a manifest may have (a 512 GiB file of 32 KiB chunks).
const MAX_MANIFEST_ENTRIES: usize = 1 << 24;

/// A chunk from a peer: the right size and the right hash, or refused.
pub(super) fn check_chunk(store: &Store, id: &Id, data: &[u8], peer: &str) -> Result<()> {
    if data.is_empty() || data.len() > store.params().chunk.max as usize {
        return Err(Error::Refused(format!(
            "{peer} sent chunk {} of {} bytes, outside this store's chunk sizes; refused",
            id.hex(),
            data.len()
        )));
    }
    if Id::of(data) != *id {
        return Err(Error::Refused(format!(
            "{peer} sent data for chunk {} that does not hash to it; refused, nothing of it stored",
            id.hex()
        )));
    }
    Ok(())
}

/// Files a manifest stream may have open (begun, not yet ended) at once.
/// An honest sender ends one file before it begins the next.
const MAX_OPEN_FILES: usize = 16;

/// Reassembles manifest pieces into whole manifests, holding at most
/// [`MAX_OPEN_FILES`] files open and [`MAX_MANIFEST_ENTRIES`] entries in
/// all until they are taken.
#[derive(Default)]
pub(super) struct Pieces {
    pub(super) open: HashMap<Id, Manifest>,
    pub(super) done: Vec<(Id, Manifest)>,
    /// Sizes the files must have (from a pointer, a tree entry or a
    /// request): a manifest that says otherwise is refused at its first
    /// piece, before any of its chunks is fetched.
    pub(super) expected: HashMap<Id, u64>,
    /// Entries held, open and done.
    held: usize,
}

impl Pieces {
    pub(super) fn expecting(expected: HashMap<Id, u64>) -> Self {
        Pieces {
            expected,
            ..Pieces::default()
        }
    }

    /// The manifests completed so far.
    pub(super) fn take_done(&mut self) -> Vec<(Id, Manifest)> {
        self.held = self.open.values().map(|m| m.chunks.len()).sum();
        std::mem::take(&mut self.done)
    }

    pub(super) fn add(&mut self, p: pb::ManifestPiece, peer: &str) -> Result<()> {
        let file = Id::from_slice(&p.file).ok_or_else(|| {
            Error::Refused(format!("{peer} sent a manifest with a malformed file id"))
        })?;
        if p.chunk_ids.len() != p.chunk_lens.len() || p.chunk_ids.len() > PEER_BATCH {
            return Err(Error::Refused(format!(
                "{peer} sent a malformed manifest piece for {file}"
            )));
        }
        if !self.open.contains_key(&file) {
            if self.open.len() >= MAX_OPEN_FILES {
                return Err(Error::Refused(format!(
                    "{peer} began more than {MAX_OPEN_FILES} manifests without ending one; refused"
                )));
            }
            if let Some(&want) = self.expected.get(&file) {
                if want != p.size {
                    return Err(Error::Refused(format!(
                        "{peer} says file {file} is {} bytes, but it was asked for as {want} bytes (its pointer or tree entry); refused before fetching any of it",
                        p.size
                    )));
                }
            }
        }
        self.held += p.chunk_ids.len();
        let m = self.open.entry(file).or_insert_with(|| Manifest {
            size: p.size,
            chunks: Vec::new(),
        });
        if m.size != p.size || self.held > MAX_MANIFEST_ENTRIES {
            return Err(Error::Refused(format!(
                "{peer} sent inconsistent or oversized manifest pieces for {file}"
            )));
        }
        for (id, len) in p.chunk_ids.iter().zip(p.chunk_lens) {
            let id = Id::from_slice(id).ok_or_else(|| {
                Error::Refused(format!(
                    "{peer} sent a malformed chunk id in the manifest of {file}"
                ))
            })?;
            m.chunks.push((id, len));
        }
        if p.last {
            if let Some(m) = self.open.remove(&file) {
                self.done.push((file, m));
            }
        }
        Ok(())
    }
}

/// What storing a batch did: (new chunks, chunks already here, bytes).
#[derive(Default, Clone, Copy)]
pub(super) struct Received {
    pub(super) stored: u64,
    pub(super) had: u64,
    pub(super) bytes: u64,
}

/// Checks and queues a batch of chunks from `peer`. With `asked`, every
/// chunk must be one of those (each once).
pub(super) fn receive_batch(
    store: &Store,
    session: &mut Session,
    batch: pb::ChunkBatch,
    peer: &str,
    mut asked: Option<&mut HashSet<Id>>,
    mut in_order: Option<&mut super::files::InOrder>,
) -> Result<Received> {
    let mut r = Received::default();
    for c in batch.chunks {
        let id = Id::from_slice(&c.id)
            .ok_or_else(|| Error::Refused(format!("{peer} sent a malformed chunk id; refused")))?;
        if let Some(a) = asked.as_deref_mut() {
            if !a.remove(&id) {
                return Err(Error::Refused(format!(
                    "{peer} sent chunk {} that was not asked for (or twice); refused",
                    id.hex()
                )));
            }
        }
        check_chunk(store, &id, &c.data, peer)?;
        if let Some(o) = in_order.as_deref_mut() {
            o.arrived(&id, &c.data);
        }
        r.bytes += c.data.len() as u64;
        if session.put_chunk(id, c.data.to_vec())? {
            r.stored += 1;
        } else {
            r.had += 1;
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::super::accept_manifests;
    use super::*;
    use crate::store::FrameCache;
    use crate::testutil::{add_paths, noise, read_all, small_store};

    #[test]
    fn chunks_that_do_not_hash_to_their_id_or_are_oversized_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let store = small_store(d.path());
        let data = noise(3000, 1);
        let id = Id::of(&data);
        assert!(check_chunk(&store, &id, &data, "p").is_ok());
        let mut bad = data.clone();
        bad[7] ^= 1;
        let e = check_chunk(&store, &id, &bad, "peer x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("peer x") && e.contains(&id.hex()), "{e}");
        let huge = noise(store.params().chunk.max as usize + 1, 2);
        assert!(check_chunk(&store, &Id::of(&huge), &huge, "p").is_err());
        assert!(check_chunk(&store, &Id::of(&[]), &[], "p").is_err());
    }

    #[test]
    fn manifests_are_checked_against_the_content_before_they_are_recorded() {
        let d = tempfile::tempdir().unwrap();
        let src = small_store(&d.path().join("src"));
        let dst = small_store(&d.path().join("dst"));
        let f = d.path().join("f");
        let content = noise(200_000, 3);
        std::fs::write(&f, &content).unwrap();
        let (done, _, _) = add_paths(&src, &[&f]);
        let file = done[0].file;
        let m = src.index.manifest(&file).unwrap().unwrap();

        // Before its chunks: refused, nothing recorded.
        let e = accept_manifests(&dst, vec![(file, m.clone())], "p").unwrap_err();
        assert!(e.to_string().contains("must arrive before"), "{e}");
        // The chunks arrive (verified), then a lying manifest is refused.
        let mut s = Session::new(&dst);
        let mut cache = FrameCache::default();
        let locs = src
            .index
            .chunk_locs(&m.chunks.iter().map(|c| c.0).collect::<Vec<_>>())
            .unwrap();
        for ((id, _), loc) in m.chunks.iter().zip(locs) {
            let data = src.read_chunk(id, &loc.unwrap(), &mut cache).unwrap();
            check_chunk(&dst, id, &data, "p").unwrap();
            s.put_chunk(*id, data).unwrap();
        }
        s.seal().unwrap();
        let mut swapped = m.clone();
        swapped.chunks.swap(0, 1);
        let e = accept_manifests(&dst, vec![(file, swapped)], "p").unwrap_err();
        assert!(e.to_string().contains("does not hash"), "{e}");
        let mut wrong_size = m.clone();
        wrong_size.size += 1;
        assert!(accept_manifests(&dst, vec![(file, wrong_size)], "p").is_err());
        assert_eq!(dst.file_size(&file).unwrap(), None);
        // The true one is recorded and reads back.
        assert_eq!(
            accept_manifests(&dst, vec![(file, m.clone())], "p").unwrap(),
            (1, 0)
        );
        assert_eq!(read_all(&dst, &file), content);
        assert_eq!(
            accept_manifests(&dst, vec![(file, m)], "p").unwrap(),
            (0, 1)
        );
    }

    #[test]
    fn manifest_pieces_must_be_consistent() {
        let f = Id::of(b"x");
        let piece = |size, n: usize, last| pb::ManifestPiece {
            file: f.0.to_vec(),
            size,
            chunk_ids: vec![Id::of(b"c").0.to_vec(); n],
            chunk_lens: vec![1; n],
            last,
        };
        let mut p = Pieces::default();
        p.add(piece(2, 1, false), "p").unwrap();
        assert!(
            p.add(piece(3, 1, true), "p").is_err(),
            "size changed between pieces"
        );
        let mut p = Pieces::default();
        let mut bad = piece(1, 1, true);
        bad.chunk_lens.push(4);
        assert!(p.add(bad, "p").is_err(), "ids and lengths differ in number");
        let mut bad = piece(1, 1, true);
        bad.file = vec![1, 2, 3];
        assert!(p.add(bad, "p").is_err(), "malformed file id");
        assert!(
            p.add(piece(1, PEER_BATCH + 1, true), "p").is_err(),
            "oversized piece"
        );
        let mut p = Pieces::default();
        p.add(piece(2, 1, false), "p").unwrap();
        p.add(piece(2, 1, true), "p").unwrap();
        assert_eq!(p.done.len(), 1);
        assert_eq!(p.done[0].1.chunks.len(), 2);
    }

    #[test]
    fn a_manifest_stream_holds_few_files_open_and_sizes_asked_for_are_kept() {
        let piece = |f: u32, size, last| pb::ManifestPiece {
            file: Id::of(&f.to_le_bytes()).0.to_vec(),
            size,
            chunk_ids: vec![Id::of(b"c").0.to_vec()],
            chunk_lens: vec![1],
            last,
        };
        // Files begun and never ended: refused past the cap, however small.
        let mut p = Pieces::default();
        for f in 0..MAX_OPEN_FILES as u32 {
            p.add(piece(f, 9, false), "p").unwrap();
        }
        let e = p.add(piece(999, 9, false), "p").unwrap_err();
        assert!(e.to_string().contains("without ending one"), "{e}");
        // Ended files do not count.
        let mut p = Pieces::default();
        for f in 0..4 * MAX_OPEN_FILES as u32 {
            p.add(piece(f, 1, true), "p").unwrap();
        }
        assert_eq!(p.take_done().len(), 4 * MAX_OPEN_FILES);
        // A size other than the one asked for is refused at the first piece.
        let want = Id::of(&7u32.to_le_bytes());
        let mut p = Pieces::expecting([(want, 1u64)].into());
        let e = p.add(piece(7, 512 << 30, false), "p").unwrap_err();
        assert!(e.to_string().contains("asked for as 1 bytes"), "{e}");
        assert!(p.open.is_empty());
        let mut p = Pieces::expecting([(want, 1u64)].into());
        p.add(piece(7, 1, true), "p").unwrap();
        assert_eq!(p.take_done().len(), 1);
    }
}
