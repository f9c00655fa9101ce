//! Checking a peer's manifests against their file ids before the files are
//! recorded: a file id is the BLAKE3 of the whole content, so the content
//! the manifest lists must hash to it.
//!
//! Two ways to get there: reading the content back from the store
//! ([`accept_manifests`], for manifests that arrive after their chunks, as
//! in a push), or hashing each pulled file in content order while its
//! chunks pass through on their way into the store ([`InOrder`]), which
//! reads back only what it could not see in order (chunks this store
//! already had, or that arrived too far ahead of their turn).

use crate::error::{Error, Result};
use crate::id::Id;
use crate::manifest::Manifest;
use crate::store::{Completed, Deps, FrameCache, Store};
use hoard_proto::PEER_BATCH;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet, VecDeque};

/// Bytes read back before they are hashed (in parallel) as one block.
const HASH_BLOCK: usize = 16 << 20;

/// Chunks that arrived ahead of their turn are kept up to this many bytes.
const PARK_LIMIT: usize = 64 << 20;

/// Checks manifests against their file ids (reading the content back from
/// the store, so every chunk must be here) and records the good ones.
/// Returns (recorded, already had).
pub fn accept_manifests(
    store: &Store,
    files: Vec<(Id, Manifest)>,
    peer: &str,
) -> Result<(u64, u64)> {
    let mut had = 0;
    let mut new = Vec::new();
    for (file, m) in files {
        if store.file_size(&file)?.is_some() {
            had += 1;
        } else {
            new.push((file, m));
        }
    }
    // Files are read back and hashed in parallel.
    new.par_iter().try_for_each(|(file, m)| {
        check_shape(store, file, m, peer)?;
        read_back(store, file, m, 0, blake3::Hasher::new(), peer)
    })?;
    let (n, had_now) = record(store, new)?;
    Ok((n, had + had_now))
}

/// Files whose manifests are recorded together.
const RECORD_BATCH: usize = 256;

/// Records checked manifests; returns (recorded, already here).
fn record(store: &Store, files: Vec<(Id, Manifest)>) -> Result<(u64, u64)> {
    let (mut n, mut had) = (0, 0);
    for batch in files.chunks(RECORD_BATCH) {
        let mut good = Vec::with_capacity(batch.len());
        for (file, manifest) in batch {
            if store.file_size(file)?.is_some() {
                had += 1;
                continue;
            }
            good.push(Completed {
                file: *file,
                manifest: manifest.clone(),
                deps: Deps::default(),
                stat: None,
            });
        }
        n += good.len() as u64;
        if !good.is_empty() {
            for r in store.commit(&mut good, 0)? {
                r?;
            }
        }
    }
    Ok((n, had))
}

fn refused(peer: &str, file: &Id, why: impl std::fmt::Display) -> Error {
    Error::Refused(format!(
        "{peer} sent a manifest for {file} that {why}; refused"
    ))
}

/// What can be checked without the content: sizes add up, chunks are of
/// sizes this store makes.
fn check_shape(store: &Store, file: &Id, m: &Manifest, peer: &str) -> Result<()> {
    let max = store.params().chunk.max;
    let total: u64 = m.chunks.iter().map(|c| c.1 as u64).sum();
    if total != m.size {
        return Err(refused(
            peer,
            file,
            format!("lists {total} bytes of chunks for a {}-byte file", m.size),
        ));
    }
    if m.chunks.iter().any(|c| c.1 == 0 || c.1 > max) {
        return Err(refused(
            peer,
            file,
            "has chunks outside this store's chunk sizes",
        ));
    }
    Ok(())
}

/// Hashes the file's chunks from number `from` on, read back from the
/// store, into `h` (the hash of the chunks before), and compares the result
/// with the file id. Large files are hashed on every core.
fn read_back(
    store: &Store,
    file: &Id,
    m: &Manifest,
    from: usize,
    mut h: blake3::Hasher,
    peer: &str,
) -> Result<()> {
    let rest: u64 = m.chunks[from..].iter().map(|c| c.1 as u64).sum();
    let mut buf: Vec<u8> = Vec::with_capacity(rest.min(HASH_BLOCK as u64) as usize);
    let mut cache = FrameCache::with_slots(24);
    for piece in m.chunks[from..].chunks(PEER_BATCH) {
        let ids: Vec<Id> = piece.iter().map(|c| c.0).collect();
        let locs = store.index.chunk_locs(&ids)?;
        for ((id, len), loc) in piece.iter().zip(locs) {
            let loc = loc.ok_or_else(|| match store.recent_write_failure() {
                // The chunk came, but the pack holding it was not stored.
                Some(why) => Error::Transient(format!(
                    "chunk {} of {file} was not stored: a pack of this hub could not be written ({why}); retry once that is fixed",
                    id.hex()
                )),
                None => Error::NotFound(format!(
                    "chunk {} of {file} is not here; the chunks must arrive before the manifest",
                    id.hex()
                )),
            })?;
            // The whole-file hash covers every chunk read back, so chunks
            // are not hashed one by one here.
            let data = store.read_chunk_checked(id, &loc, &mut cache, false)?;
            if data.len() != *len as usize {
                return Err(refused(
                    peer,
                    file,
                    format!("gives chunk {} the wrong length", id.hex()),
                ));
            }
            buf.extend_from_slice(&data);
            if buf.len() >= HASH_BLOCK {
                h.update_rayon(&buf);
                buf.clear();
            }
        }
    }
    h.update_rayon(&buf);
    if h.finalize().as_bytes() != &file.0 {
        return Err(refused(peer, file, "does not hash to it"));
    }
    Ok(())
}

/// A pulled file being hashed in content order.
struct Running {
    file: Id,
    manifest: Manifest,
    /// Its next chunk to hash.
    next: usize,
    hasher: blake3::Hasher,
    /// Its next chunk is not coming in this transfer and is not kept here:
    /// the rest is read back at the end.
    stuck: bool,
}

/// Hashes pulled files in content order as their chunks arrive (checked,
/// in any order), so their ids are checked without reading them back.
pub(crate) struct InOrder {
    files: Vec<Running>,
    /// Chunk -> files whose next chunk it is.
    waiting: HashMap<Id, Vec<usize>>,
    /// Chunks this transfer brings that have not arrived yet.
    coming: HashSet<Id>,
    /// Turns still to come of each chunk this transfer brings.
    uses: HashMap<Id, u32>,
    /// Chunks that arrived before their turn, oldest first.
    parked: HashMap<Id, bytes::Bytes>,
    park_order: VecDeque<Id>,
    parked_bytes: usize,
    parked_limit: usize,
}

impl InOrder {
    /// `files` are the manifests pulled (each checked for shape here),
    /// `coming` the chunks this transfer will bring.
    pub fn new(
        store: &Store,
        files: Vec<(Id, Manifest)>,
        coming: &[Id],
        peer: &str,
    ) -> Result<InOrder> {
        for (file, m) in &files {
            check_shape(store, file, m, peer)?;
        }
        let coming: HashSet<Id> = coming.iter().copied().collect();
        let mut uses: HashMap<Id, u32> = HashMap::new();
        for (_, m) in &files {
            for (c, _) in &m.chunks {
                if coming.contains(c) {
                    *uses.entry(*c).or_default() += 1;
                }
            }
        }
        let mut s = InOrder {
            files: files
                .into_iter()
                .map(|(file, manifest)| Running {
                    file,
                    manifest,
                    next: 0,
                    hasher: blake3::Hasher::new(),
                    stuck: false,
                })
                .collect(),
            waiting: HashMap::new(),
            coming,
            uses,
            parked: HashMap::new(),
            park_order: VecDeque::new(),
            parked_bytes: 0,
            parked_limit: PARK_LIMIT,
        };
        for f in 0..s.files.len() {
            s.advance(f, None);
        }
        Ok(s)
    }

    /// A checked chunk of this transfer has arrived: the files whose turn
    /// it is hash it and move on as far as they can.
    pub fn arrived(&mut self, id: &Id, data: &bytes::Bytes) {
        if !self.coming.remove(id) {
            return;
        }
        for f in self.waiting.remove(id).unwrap_or_default() {
            self.advance(f, Some((id, data)));
        }
        if self.uses.get(id).is_some_and(|n| *n > 0) {
            self.park(*id, data);
        }
    }

    /// Moves file `f` along its chunks while they are at hand (`now`, or
    /// kept); stops at one still coming (and waits for it) or one that is
    /// not at hand (the rest is read back at the end).
    fn advance(&mut self, f: usize, mut now: Option<(&Id, &bytes::Bytes)>) {
        loop {
            let r = &mut self.files[f];
            let Some(&(c, len)) = r.manifest.chunks.get(r.next) else {
                return;
            };
            let data = match now {
                Some((id, d)) if *id == c => Some(d.clone()),
                _ => self.parked.get(&c).cloned(),
            };
            match data {
                Some(d) if d.len() == len as usize => {
                    r.hasher.update(&d);
                    r.next += 1;
                    if let Some(n) = self.uses.get_mut(&c) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            self.uses.remove(&c);
                            if let Some(b) = self.parked.remove(&c) {
                                self.parked_bytes -= b.len();
                            }
                            if now.is_some_and(|(id, _)| *id == c) {
                                now = None;
                            }
                        }
                    }
                }
                // A length the manifest does not give it: left to the read
                // back, which names the fault.
                Some(_) => {
                    self.give_up(f);
                    return;
                }
                None if self.coming.contains(&c) => {
                    self.waiting.entry(c).or_default().push(f);
                    return;
                }
                None => {
                    self.give_up(f);
                    return;
                }
            }
        }
    }

    /// File `f` is left to the read back from its next chunk on: its later
    /// turns no longer hold chunks here.
    fn give_up(&mut self, f: usize) {
        let r = &mut self.files[f];
        r.stuck = true;
        for (c, _) in &r.manifest.chunks[r.next..] {
            if let Some(n) = self.uses.get_mut(c) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.uses.remove(c);
                    if let Some(b) = self.parked.remove(c) {
                        self.parked_bytes -= b.len();
                    }
                }
            }
        }
    }

    /// Keeps a chunk that arrived before its turn (a copy, so it does not
    /// hold on to the frame it came in); the oldest go past the limit.
    fn park(&mut self, id: Id, data: &bytes::Bytes) {
        if self.parked.contains_key(&id) {
            return;
        }
        self.parked_bytes += data.len();
        self.parked.insert(id, bytes::Bytes::copy_from_slice(data));
        self.park_order.push_back(id);
        while self.parked_bytes > self.parked_limit {
            let Some(old) = self.park_order.pop_front() else {
                break;
            };
            if let Some(b) = self.parked.remove(&old) {
                self.parked_bytes -= b.len();
            }
        }
    }

    /// Checks every file (reading back, on every core, what was not seen
    /// in order) and records the good ones; returns how many.
    pub fn finish(self, store: &Store, peer: &str) -> Result<FinishStats> {
        let mut stats = FinishStats::default();
        for r in &self.files {
            if r.next == r.manifest.chunks.len() && !r.stuck {
                stats.streamed += 1;
            } else {
                stats.read_back += 1;
            }
        }
        let files: Vec<(Id, Manifest)> = self
            .files
            .into_par_iter()
            .map(|r| {
                if r.next == r.manifest.chunks.len() && !r.stuck {
                    if r.hasher.finalize().as_bytes() != &r.file.0 {
                        return Err(refused(peer, &r.file, "does not hash to it"));
                    }
                } else {
                    read_back(store, &r.file, &r.manifest, r.next, r.hasher, peer)?;
                }
                Ok((r.file, r.manifest))
            })
            .collect::<Result<_>>()?;
        (stats.recorded, stats.already_here) = record(store, files)?;
        Ok(stats)
    }
}

/// How [`InOrder::finish`] checked the files.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FinishStats {
    pub recorded: u64,
    /// Files recorded meanwhile by something else.
    pub already_here: u64,
    /// Files hashed entirely as their chunks arrived.
    pub streamed: u64,
    /// Files read back, from where their chunks stopped arriving in order.
    pub read_back: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::put::Session;
    use crate::testutil::{add_paths, noise, read_all, small_store};

    /// A file in a source store: its id, manifest and chunks' bytes.
    fn source(dir: &std::path::Path, content: &[u8]) -> (Id, Manifest, Vec<(Id, bytes::Bytes)>) {
        let src = small_store(&dir.join("src"));
        let f = dir.join("f");
        std::fs::write(&f, content).unwrap();
        let (done, _, _) = add_paths(&src, &[&f]);
        let file = done[0].file;
        let m = src.index.manifest(&file).unwrap().unwrap();
        let mut cache = FrameCache::default();
        let ids: Vec<Id> = m.chunks.iter().map(|c| c.0).collect();
        let chunks = ids
            .iter()
            .zip(src.index.chunk_locs(&ids).unwrap())
            .map(|(id, loc)| {
                (
                    *id,
                    src.read_chunk(id, &loc.unwrap(), &mut cache)
                        .unwrap()
                        .into(),
                )
            })
            .collect();
        (file, m, chunks)
    }

    /// Stores `chunks` in `dst` as a pull would, telling `o` in that order.
    fn arrive(dst: &Store, o: &mut InOrder, chunks: &[(Id, bytes::Bytes)]) {
        let mut s = Session::new(dst);
        for (id, data) in chunks {
            o.arrived(id, data);
            s.put_chunk(*id, data.to_vec()).unwrap();
        }
        s.seal().unwrap();
    }

    #[test]
    fn files_are_checked_as_their_chunks_pass_in_any_order() {
        let d = tempfile::tempdir().unwrap();
        let content = noise(400_000, 5);
        let (file, m, chunks) = source(d.path(), &content);
        assert!(chunks.len() >= 4, "need several chunks");
        let ids: Vec<Id> = chunks.iter().map(|c| c.0).collect();
        for (name, order) in [
            ("in order", chunks.clone()),
            ("reversed", chunks.iter().rev().cloned().collect::<Vec<_>>()),
        ] {
            let dst = small_store(&d.path().join(name));
            let mut o = InOrder::new(&dst, vec![(file, m.clone())], &ids, "p").unwrap();
            arrive(&dst, &mut o, &order);
            let done = o.finish(&dst, "p").unwrap();
            assert_eq!(
                (done.recorded, done.streamed, done.read_back),
                (1, 1, 0),
                "{name}"
            );
            assert_eq!(read_all(&dst, &file), content, "{name}");
        }
    }

    #[test]
    fn a_manifest_that_does_not_hash_to_its_file_is_refused_without_reading_back() {
        let d = tempfile::tempdir().unwrap();
        let (file, m, chunks) = source(d.path(), &noise(400_000, 6));
        let ids: Vec<Id> = chunks.iter().map(|c| c.0).collect();
        let dst = small_store(&d.path().join("dst"));
        let mut swapped = m.clone();
        swapped.chunks.swap(0, 1);
        let mut o = InOrder::new(&dst, vec![(file, swapped)], &ids, "p").unwrap();
        arrive(&dst, &mut o, &chunks);
        let e = o.finish(&dst, "p").expect_err("refused");
        assert!(e.to_string().contains("does not hash"), "{e}");
        assert_eq!(dst.file_size(&file).unwrap(), None);
        // A shape that cannot be right is refused before anything arrives.
        let mut wrong_size = m;
        wrong_size.size += 1;
        assert!(InOrder::new(&dst, vec![(file, wrong_size)], &ids, "p").is_err());
    }

    #[test]
    fn chunks_already_here_or_too_far_ahead_are_read_back() {
        let d = tempfile::tempdir().unwrap();
        let content = noise(400_000, 7);
        let (file, m, chunks) = source(d.path(), &content);
        let dst = small_store(&d.path().join("dst"));
        // The first chunk is here before the pull: only the rest comes.
        arrive(
            &dst,
            &mut InOrder::new(&dst, Vec::new(), &[], "p").unwrap(),
            &chunks[..1],
        );
        let rest: Vec<Id> = chunks[1..].iter().map(|c| c.0).collect();
        let mut o = InOrder::new(&dst, vec![(file, m.clone())], &rest, "p").unwrap();
        arrive(&dst, &mut o, &chunks[1..]);
        let done = o.finish(&dst, "p").unwrap();
        assert_eq!((done.recorded, done.streamed, done.read_back), (1, 0, 1));
        assert_eq!(read_all(&dst, &file), content);
        // Nothing kept ahead of its turn: everything after the first chunk
        // to arrive out of order is read back, and still checked.
        let dst = small_store(&d.path().join("dst2"));
        let ids: Vec<Id> = chunks.iter().map(|c| c.0).collect();
        let mut o = InOrder::new(&dst, vec![(file, m)], &ids, "p").unwrap();
        o.parked_limit = 0;
        let mut order = chunks.clone();
        order.swap(0, 2);
        arrive(&dst, &mut o, &order);
        let done = o.finish(&dst, "p").unwrap();
        assert_eq!((done.recorded, done.streamed, done.read_back), (1, 0, 1));
        assert_eq!(read_all(&dst, &file), content);
    }
}
