//! Frames as stored, on the wire: where a peer's chunks lie (`PlanFrames`),
//! and taking a frame a peer sent as it is stored there (`GetFrames`).
//!
//! A frame that holds exactly the chunks a receiver lacks is stored as it
//! came: no re-framing, no recompression, and a delta against chunks the
//! receiver already has travels as the small delta it is. Everything is
//! checked first: each chunk against its id after decoding, the plan
//! against what was asked.

use super::checks::check_chunk;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack::format::{Codec, MAX_BASES, MAX_DEPTH};
use crate::pack::Frame;
use crate::put::Session;
use crate::store::{FrameCache, Store};
use hoard_proto::v1 as pb;
use std::collections::{HashMap, HashSet};

/// Largest decoded frame accepted from a peer: the largest frame target a
/// store may have plus one chunk (a frame is closed once it reaches its
/// target), so a zstd bomb expands to no more than that.
pub(crate) fn max_foreign_frame(store: &Store) -> u32 {
    crate::store::MAX_FRAME_TARGET + store.params().chunk.max
}

/// Largest stored frame sent as stored, either way: its message stays
/// well under [`hoard_proto::PEER_MESSAGE_LIMIT`]. Larger ones travel as
/// chunks.
pub(crate) const MAX_WIRE_FRAME: u32 = 4 << 20;
const _: () = assert!(MAX_WIRE_FRAME as usize * 2 <= hoard_proto::PEER_MESSAGE_LIMIT);

/// Longest frame name a peer may use (a pack id and an offset).
const MAX_FRAME_NAME: usize = 64;

/// Groups `ids` by the frame that stores them (the sender's side). Each
/// entry names its frame, so a receiver can put together the pieces of one
/// frame that fell into different requests.
pub(crate) fn plan(store: &Store, ids: &[Id]) -> Result<pb::FramePlan> {
    let mut frames: Vec<pb::FramePlanEntry> = Vec::new();
    let mut at: HashMap<(Id, u64), usize> = HashMap::new();
    for (id, loc) in ids.iter().zip(store.index.chunk_locs(ids)?) {
        let Some(loc) = loc else { continue };
        let i = match at.get(&(loc.pack, loc.payload_offset)) {
            Some(&i) => i,
            None => {
                let mut name = loc.pack.0.to_vec();
                name.extend_from_slice(&loc.payload_offset.to_le_bytes());
                frames.push(pb::FramePlanEntry {
                    frame: name,
                    codec: loc.codec as u32,
                    raw_len: loc.raw_len,
                    stored_len: loc.stored_len,
                    bases: store
                        .frame_bases(&loc)?
                        .iter()
                        .map(|b| b.0.to_vec())
                        .collect(),
                    ..Default::default()
                });
                at.insert((loc.pack, loc.payload_offset), frames.len() - 1);
                frames.len() - 1
            }
        };
        let f = &mut frames[i];
        f.chunk_ids.push(id.0.to_vec());
        f.chunk_offsets.push(loc.offset_in_frame);
        f.chunk_lens.push(loc.len);
    }
    Ok(pb::FramePlan { frames })
}

/// A peer's frame as planned: its encoding and the requested chunks in it
/// (id, offset in the decoded frame, length), in frame order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlannedFrame {
    pub codec: Codec,
    pub raw_len: u32,
    pub stored_len: u32,
    pub bases: Vec<Id>,
    pub chunks: Vec<(Id, u32, u32)>,
}

impl PlannedFrame {
    /// Checks a frame plan entry from `peer`; with `asked`, every chunk it
    /// lists must be one of those. No frame over `max_raw` bytes, decoded or
    /// stored ([`max_foreign_frame`]).
    pub fn parse(
        e: &pb::FramePlanEntry,
        peer: &str,
        asked: Option<&HashSet<Id>>,
        max_raw: u32,
    ) -> Result<PlannedFrame> {
        let bad = |why: &str| {
            Error::Refused(format!(
                "{peer} sent a malformed frame plan ({why}); refused"
            ))
        };
        let codec = u8::try_from(e.codec)
            .ok()
            .and_then(Codec::from_u8)
            .ok_or_else(|| bad("unknown codec"))?;
        if e.raw_len > max_raw || e.stored_len > max_raw {
            return Err(bad("frame too large"));
        }
        if e.frame.len() > MAX_FRAME_NAME {
            return Err(bad("frame name too long"));
        }
        if e.chunk_ids.len() != e.chunk_offsets.len() || e.chunk_ids.len() != e.chunk_lens.len() {
            return Err(bad("chunk lists differ in length"));
        }
        let mut chunks = Vec::with_capacity(e.chunk_ids.len());
        for ((id, off), len) in e.chunk_ids.iter().zip(&e.chunk_offsets).zip(&e.chunk_lens) {
            let id = Id::from_slice(id).ok_or_else(|| bad("malformed chunk id"))?;
            if asked.is_some_and(|a| !a.contains(&id)) {
                return Err(bad("a chunk that was not asked about"));
            }
            if *off as u64 + *len as u64 > e.raw_len as u64 {
                return Err(bad("chunk outside its frame"));
            }
            chunks.push((id, *off, *len));
        }
        let bases: Vec<Id> = e
            .bases
            .iter()
            .map(|b| Id::from_slice(b).ok_or_else(|| bad("malformed base id")))
            .collect::<Result<_>>()?;
        if bases.len() > MAX_BASES {
            return Err(bad("too many bases"));
        }
        Ok(PlannedFrame {
            codec,
            raw_len: e.raw_len,
            stored_len: e.stored_len,
            bases,
            chunks,
        })
    }

    /// The plan entry describing it (without a frame name).
    pub fn entry(&self) -> pb::FramePlanEntry {
        pb::FramePlanEntry {
            frame: Vec::new(),
            codec: self.codec as u32,
            raw_len: self.raw_len,
            stored_len: self.stored_len,
            bases: self.bases.iter().map(|b| b.0.to_vec()).collect(),
            chunk_ids: self.chunks.iter().map(|c| c.0 .0.to_vec()).collect(),
            chunk_offsets: self.chunks.iter().map(|c| c.1).collect(),
            chunk_lens: self.chunks.iter().map(|c| c.2).collect(),
        }
    }

    /// Is taking it as stored worth it: not mostly chunks nobody asked
    /// for (a delta always is)?
    fn useful(&self) -> bool {
        self.stored_len as u64 <= self.wanted().max(1) * 2 || !self.bases.is_empty()
    }

    /// Bytes of requested chunks in it.
    fn wanted(&self) -> u64 {
        self.chunks.iter().map(|c| c.2 as u64).sum()
    }
}

/// Plan entries from a peer, checked and merged by frame, in the order
/// they first appeared.
pub(crate) struct Plans<'p> {
    peer: &'p str,
    max_raw: u32,
    frames: Vec<PlannedFrame>,
    named: HashMap<Vec<u8>, usize>,
}

impl<'p> Plans<'p> {
    pub fn new(peer: &'p str, store: &Store) -> Self {
        Plans {
            peer,
            max_raw: max_foreign_frame(store),
            frames: Vec::new(),
            named: HashMap::new(),
        }
    }

    /// Adds the plan the peer gave for the ids in `asked`; every chunk it
    /// lists must be one of those.
    pub fn add(&mut self, e: pb::FramePlanEntry, asked: &HashSet<Id>) -> Result<()> {
        let f = PlannedFrame::parse(&e, self.peer, Some(asked), self.max_raw)?;
        if e.frame.is_empty() {
            self.frames.push(f);
            return Ok(());
        }
        match self.named.get(&e.frame) {
            None => {
                self.named.insert(e.frame, self.frames.len());
                self.frames.push(f);
            }
            Some(&i) => {
                let have = &mut self.frames[i];
                if (have.codec, have.raw_len, have.stored_len, &have.bases)
                    != (f.codec, f.raw_len, f.stored_len, &f.bases)
                {
                    return Err(Error::Refused(format!(
                        "{} described one frame in two ways; refused",
                        self.peer
                    )));
                }
                have.chunks.extend(f.chunks);
            }
        }
        Ok(())
    }

    /// The frames worth asking for, in plan order: this store has all
    /// their bases, they fit a message ([`MAX_WIRE_FRAME`]), and they are
    /// not mostly made of chunks nobody asked for. Each is named in
    /// `GetFrames` by its first chunk.
    pub fn worth_taking(self, store: &Store) -> Result<Vec<PlannedFrame>> {
        let mut useful = self.useful();
        useful.retain(|f| f.stored_len <= MAX_WIRE_FRAME);
        let bases: Vec<Id> = useful
            .iter()
            .flat_map(|f| f.bases.iter().copied())
            .collect::<HashSet<Id>>()
            .into_iter()
            .collect();
        let mut here = HashSet::new();
        for batch in bases.chunks(crate::STAT_BATCH) {
            for (b, have) in batch.iter().zip(store.indexed(batch)?) {
                if have {
                    here.insert(*b);
                }
            }
        }
        Ok(useful
            .into_iter()
            .filter(|f| f.bases.iter().all(|b| here.contains(b)))
            .collect())
    }

    /// The frames worth sending or taking as stored, whoever has their
    /// bases, in plan order.
    pub fn useful(self) -> Vec<PlannedFrame> {
        self.frames
            .into_iter()
            .filter_map(|mut f| {
                f.chunks.sort_by_key(|c| c.1);
                (f.useful() && !f.chunks.is_empty()).then_some(f)
            })
            .collect()
    }
}

/// Takes frames a peer sent as stored: checks every chunk, stores a frame
/// as it came when it can, else its chunks one by one. Checking (decoding,
/// chunk ids) runs on [`CHECKERS`] threads, then, in the order the frames
/// came, hashing pulled files in content order and storing (pack writes) on
/// one thread each.
pub(crate) struct Intake<'s> {
    store: &'s Store,
    peer: &'s str,
    pub keep: Keeper<'s>,
    /// Files hashed in content order as their chunks pass.
    pub files: Option<super::files::InOrder>,
}

/// Bytes of frames (as sent plus decoded) all intakes in this process may
/// hold at once, however many peers send at the same time: a frame waits
/// for room before it is decoded.
const INTAKE_BUDGET: u64 = 256 << 20;
static INTAKE: Budget = Budget::new(INTAKE_BUDGET);

/// A count of bytes shared by all intakes, taken in the order frames are
/// fed: the oldest frame of every intake already holds its share, so each
/// one can always finish and give it back.
struct Budget {
    limit: u64,
    held: std::sync::Mutex<u64>,
    freed: std::sync::Condvar,
}

/// A share of the [`Budget`], given back when dropped.
struct Hold(u64);

impl Budget {
    const fn new(limit: u64) -> Self {
        Budget {
            limit,
            held: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Waits until `n` bytes (at most the whole budget) are free.
    fn take(&'static self, n: u64) -> Hold {
        let n = n.min(self.limit);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while *held + n > self.limit {
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        *held += n;
        Hold(n)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = INTAKE.held.lock().unwrap_or_else(|e| e.into_inner());
        *held -= self.0;
        INTAKE.freed.notify_all();
    }
}

/// Threads decoding and checking frames.
const CHECKERS: usize = 2;
/// Frames taken but not yet handed to storing: bounds the memory held by
/// frames checked ahead of a slow one.
const AHEAD: usize = 8;
/// Checked frames waiting to be stored (and hashed into files).
const IN_FLIGHT: usize = 4;

impl<'s> Intake<'s> {
    pub fn new(store: &'s Store, peer: &'s str) -> Self {
        Intake {
            store,
            peer,
            keep: Keeper {
                store,
                session: Session::new(store),
                covered: HashSet::new(),
                as_stored: 0,
                split: 0,
                had: 0,
            },
            files: None,
        }
    }

    /// Takes every frame `feed` hands over (through its `take` argument),
    /// checking, hashing and storing them on other threads; returns how
    /// many chunks were new in this transfer. The first error is the one
    /// reported: a frame that fails its check, else storing, else `feed`.
    pub fn take_all(
        &mut self,
        feed: impl FnOnce(&mut dyn FnMut(PlannedFrame, bytes::Bytes) -> Result<()>) -> Result<()>,
    ) -> Result<u64> {
        use std::collections::BTreeMap;
        use std::sync::mpsc::sync_channel;
        let (store, peer) = (self.store, self.peer);
        let (keep, files) = (&mut self.keep, &mut self.files);
        fn stopped<E>(_: E) -> Error {
            Error::Internal("taking frames stopped".into())
        }
        let panicked = |what: &str| Error::Internal(format!("the thread {what} panicked"));
        type Job = (usize, PlannedFrame, bytes::Bytes, Hold);
        let (to_check, check_rx) = sync_channel::<Job>(AHEAD);
        let check_rx = std::sync::Mutex::new(check_rx);
        std::thread::scope(|scope| {
            // Storing, in order.
            let (to_keep, keep_rx) = sync_channel::<Checked>(IN_FLIGHT);
            let storing = scope.spawn(move || -> Result<u64> {
                let mut n = 0;
                for c in keep_rx {
                    n += keep.keep(c)?;
                }
                Ok(n)
            });
            // Hashing files, in order.
            let (to_hash, hashing) = match files.as_mut() {
                Some(files) => {
                    let (tx, rx) = sync_channel::<Checked>(IN_FLIGHT);
                    let h = scope.spawn(move || {
                        for c in rx {
                            for (id, off, len) in &c.f.chunks {
                                files.arrived(
                                    id,
                                    &c.raw.slice(*off as usize..(*off + *len) as usize),
                                );
                            }
                        }
                    });
                    (Some(tx), Some(h))
                }
                None => (None, None),
            };
            // Checking, in any order.
            let (checked_tx, checked_rx) = sync_channel::<(usize, Result<Checked>)>(AHEAD);
            let checkers: Vec<_> = (0..CHECKERS)
                .map(|_| {
                    let (check_rx, checked_tx) = (&check_rx, checked_tx.clone());
                    scope.spawn(move || {
                        let mut checker = Checker {
                            store,
                            peer,
                            cache: FrameCache::default(),
                        };
                        loop {
                            let job = check_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            let Ok((seq, f, payload, hold)) = job else {
                                return;
                            };
                            let checked = checker.check(f, payload).map(|mut c| {
                                c.hold = Some(std::sync::Arc::new(hold));
                                c
                            });
                            if checked_tx.send((seq, checked)).is_err() {
                                return;
                            }
                        }
                    })
                })
                .collect();
            drop(checked_tx);
            // Back in order: each checked frame goes to storing and hashing;
            // each frame handed on lets `feed` take one more.
            let (permits, permit_rx) = sync_channel::<()>(AHEAD);
            let sequencing = scope.spawn(move || -> Result<()> {
                let mut waiting = BTreeMap::new();
                let mut next = 0;
                for (seq, r) in checked_rx {
                    waiting.insert(seq, r);
                    while let Some(r) = waiting.remove(&next) {
                        let c = r?;
                        if let Some(h) = &to_hash {
                            h.send(c.clone()).map_err(stopped)?;
                        }
                        to_keep.send(c).map_err(stopped)?;
                        permit_rx.recv().map_err(stopped)?;
                        next += 1;
                    }
                }
                Ok(())
            });
            let mut seq = 0;
            let fed = feed(&mut |f, payload| {
                permits.send(()).map_err(stopped)?;
                let hold = INTAKE.take(f.raw_len as u64 + payload.len() as u64);
                to_check.send((seq, f, payload, hold)).map_err(stopped)?;
                seq += 1;
                Ok(())
            });
            drop((to_check, permits));
            for c in checkers {
                c.join().map_err(|_| panicked("checking frames"))?;
            }
            let sequenced = sequencing.join().map_err(|_| panicked("ordering frames"))?;
            let stored = storing.join().map_err(|_| panicked("storing frames"))?;
            if let Some(h) = hashing {
                h.join().map_err(|_| panicked("hashing files"))?;
            }
            // A closed channel means another thread failed: its error is
            // the one reported.
            let n = match (sequenced, stored) {
                (Err(e), Ok(_)) => return Err(e),
                (_, stored) => stored?,
            };
            fed?;
            Ok(n)
        })
    }
}

/// A frame whose chunks have been checked, with its decoded bytes.
#[derive(Clone)]
pub(crate) struct Checked {
    f: PlannedFrame,
    raw: bytes::Bytes,
    payload: bytes::Bytes,
    /// Its share of the intake budget, given back once it is stored and
    /// hashed (the last clone dropped).
    hold: Option<std::sync::Arc<Hold>>,
}

/// The checking half of an [`Intake`].
pub(crate) struct Checker<'s> {
    store: &'s Store,
    peer: &'s str,
    /// Decoded base frames, shared by the deltas against them.
    cache: FrameCache,
}

impl Checker<'_> {
    /// Decodes a frame and checks its chunks against their ids.
    pub fn check(&mut self, f: PlannedFrame, payload: bytes::Bytes) -> Result<Checked> {
        let peer = self.peer;
        let first = f.chunks.first().map(|c| c.0.hex()).unwrap_or_default();
        if payload.len() != f.stored_len as usize {
            return Err(Error::Refused(format!(
                "{peer} sent the frame of chunk {first} with {} bytes, planned {}; refused",
                payload.len(),
                f.stored_len
            )));
        }
        let raw: bytes::Bytes = match f.codec {
            // Raw frames are kept as they arrived, without a copy.
            Codec::Raw if f.raw_len == f.stored_len => payload.clone(),
            _ => self
                .store
                .decode_foreign_frame(f.codec, f.raw_len, &f.bases, &payload, &mut self.cache)
                .map_err(|e| {
                    Error::Refused(format!(
                        "{peer} sent the frame of chunk {first} that does not decode ({e}); refused"
                    ))
                })?
                .into(),
        };
        for (id, off, len) in &f.chunks {
            check_chunk(
                self.store,
                id,
                &raw[*off as usize..(*off + *len) as usize],
                peer,
            )?;
        }
        Ok(Checked {
            f,
            raw,
            payload,
            hold: None,
        })
    }
}

/// The storing half of an [`Intake`].
pub(crate) struct Keeper<'s> {
    store: &'s Store,
    pub session: Session<'s>,
    /// Chunks taken in this transfer.
    pub covered: HashSet<Id>,
    /// Frames stored as they came / split into their chunks.
    pub as_stored: u64,
    pub split: u64,
    /// Chunks taken that the store turned out to have already (another
    /// writer stored them since the plan).
    pub had: u64,
}

impl Keeper<'_> {
    /// Stores a checked frame; returns how many of its chunks were new in
    /// this transfer (some of which the store may have had: [`Keeper::had`]).
    pub fn keep(&mut self, c: Checked) -> Result<u64> {
        let Checked {
            f, raw, payload, ..
        } = c;
        if let Some(depth) = self.whole(&f)? {
            let n = f.chunks.len() as u64;
            self.covered.extend(f.chunks.iter().map(|c| c.0));
            self.as_stored += 1;
            let compressed = (f.codec != Codec::Raw).then(|| payload.to_vec());
            self.had += self.session.put_frame(Frame {
                chunks: f.chunks.iter().map(|(id, _, len)| (*id, *len)).collect(),
                raw,
                compressed,
                bases: f.bases,
                depth,
                sketches: Vec::new(),
            })?;
            return Ok(n);
        }
        self.split += 1;
        let mut n = 0;
        for (id, off, len) in f.chunks {
            if self.covered.insert(id) {
                let new = self
                    .session
                    .put_chunk(id, raw[off as usize..(off + len) as usize].to_vec())?;
                self.had += u64::from(!new);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Can the frame be stored as it came, and at which delta depth here?
    /// Only when it holds exactly the chunks asked for, contiguously, none
    /// taken before in this transfer, and a delta's chain stays within
    /// [`MAX_DEPTH`] in this store (its bases' depths here decide, not the
    /// sender's).
    fn whole(&self, f: &PlannedFrame) -> Result<Option<u8>> {
        if f.bases.is_empty() != (f.codec != Codec::ZstdDict) {
            return Ok(None);
        }
        let mut depth = 0u8;
        if !f.bases.is_empty() {
            for loc in self.store.index.chunk_locs(&f.bases)? {
                match loc {
                    Some(l) if l.depth < MAX_DEPTH => depth = depth.max(l.depth + 1),
                    _ => return Ok(None),
                }
            }
        }
        let mut at = 0u32;
        for (id, off, len) in &f.chunks {
            if *off != at || self.covered.contains(id) {
                return Ok(None);
            }
            at += len;
        }
        // Chunks someone else stored since the plan are left out by
        // `append_frames`, which looks them up anyway.
        Ok((at == f.raw_len).then_some(depth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8], ids: &[(Id, u32, u32)]) -> pb::FramePlanEntry {
        pb::FramePlanEntry {
            frame: name.to_vec(),
            codec: Codec::Zstd as u32,
            raw_len: 300,
            stored_len: 100,
            bases: Vec::new(),
            chunk_ids: ids.iter().map(|c| c.0 .0.to_vec()).collect(),
            chunk_offsets: ids.iter().map(|c| c.1).collect(),
            chunk_lens: ids.iter().map(|c| c.2).collect(),
        }
    }

    #[test]
    fn pieces_of_one_frame_from_different_requests_are_put_together() {
        let (a, b, c) = (Id::of(b"a"), Id::of(b"b"), Id::of(b"c"));
        let asked: HashSet<Id> = [a, b, c].into_iter().collect();
        let d = tempfile::tempdir().unwrap();
        let store = crate::testutil::small_store(d.path());
        let mut p = Plans::new("peer", &store);
        p.add(entry(b"f1", &[(c, 200, 100)]), &asked).unwrap();
        p.add(entry(b"f1", &[(a, 0, 100), (b, 100, 100)]), &asked)
            .unwrap();
        assert_eq!(p.frames.len(), 1);
        assert_eq!(p.frames[0].chunks.len(), 3);
    }

    #[test]
    fn plans_that_lie_are_refused() {
        let (a, b) = (Id::of(b"a"), Id::of(b"b"));
        let asked: HashSet<Id> = [a].into_iter().collect();
        let d = tempfile::tempdir().unwrap();
        let store = crate::testutil::small_store(d.path());
        let mut p = Plans::new("peer", &store);
        // A chunk nobody asked about.
        assert!(p.add(entry(b"f", &[(b, 0, 100)]), &asked).is_err());
        // Outside its frame.
        assert!(p.add(entry(b"f", &[(a, 250, 100)]), &asked).is_err());
        // One frame described two ways.
        p.add(entry(b"g", &[(a, 0, 100)]), &asked).unwrap();
        let mut other = entry(b"g", &[(a, 0, 100)]);
        other.raw_len = 400;
        assert!(p.add(other, &asked).is_err());
        // Oversized, unknown codec, overlong name.
        let mut big = entry(b"h", &[(a, 0, 100)]);
        // A zstd bomb is capped at the largest frame target plus a chunk.
        big.raw_len = crate::store::MAX_FRAME_TARGET + store.params().chunk.max + 1;
        assert!(p.add(big, &asked).is_err());
        let mut fits = entry(b"i", &[(a, 0, 100)]);
        fits.raw_len = crate::store::MAX_FRAME_TARGET + store.params().chunk.max;
        p.add(fits, &asked).unwrap();
        let mut codec = entry(b"h", &[(a, 0, 100)]);
        codec.codec = 99;
        assert!(p.add(codec, &asked).is_err());
        assert!(p.add(entry(&[7; 65], &[(a, 0, 100)]), &asked).is_err());
    }

    /// Raw frames of two chunks each, with their payloads.
    fn raw_frames(n: usize) -> Vec<(PlannedFrame, bytes::Bytes)> {
        (0..n)
            .map(|i| {
                let (a, b) = (vec![i as u8; 5000], vec![i as u8 ^ 0xff; 7000]);
                let payload: Vec<u8> = [a.as_slice(), b.as_slice()].concat();
                let f = PlannedFrame {
                    codec: Codec::Raw,
                    raw_len: 12_000,
                    stored_len: 12_000,
                    bases: Vec::new(),
                    chunks: vec![(Id::of(&a), 0, 5000), (Id::of(&b), 5000, 7000)],
                };
                (f, payload.into())
            })
            .collect()
    }

    #[test]
    fn frames_are_stored_in_order_until_one_fails_its_check() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path(), crate::store::StoreParams::default()).unwrap();
        let frames = raw_frames(40);
        let mut bad = frames.clone();
        let mut damaged = bad[25].1.to_vec();
        damaged[6000] ^= 1;
        bad[25].1 = damaged.into();
        let mut intake = Intake::new(&store, "peer");
        let r = intake.take_all(|take| {
            for (f, p) in bad {
                take(f, p)?;
            }
            Ok(())
        });
        let e = r.unwrap_err().to_string();
        assert!(e.contains("does not hash") && e.contains("refused"), "{e}");
        intake.keep.session.seal().unwrap();
        // Every frame before the bad one is stored, nothing of it or after.
        let ids: Vec<Id> = frames
            .iter()
            .flat_map(|(f, _)| f.chunks.iter().map(|c| c.0))
            .collect();
        let here = store.indexed(&ids).unwrap();
        assert!(here[..50].iter().all(|h| *h));
        assert!(!here[50..].iter().any(|h| *h));

        // All good: everything is taken, the rest of it now.
        let mut intake = Intake::new(&store, "peer");
        let n = intake
            .take_all(|take| {
                for (f, p) in frames {
                    take(f, p)?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 80);
        assert_eq!(intake.keep.had, 50);
        intake.keep.session.seal().unwrap();
        assert!(store.indexed(&ids).unwrap().iter().all(|h| *h));
    }
}
