//! Pull: bring files from a peer into this store.

use super::checks::{receive_batch, Pieces};
use super::client::{connect, each_message, from_peer, stream_jobs, uncompressed, Client, STREAMS};
use super::wire::distinct_chunks;
use super::{counted, files, frames, PeerAddr, Progress, Summary};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::manifest::Manifest;
use crate::store::Store;
use hoard_proto::v1 as pb;
use hoard_proto::PEER_BATCH;
use prost::Message as _;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Asks the peer where `ids` lie, [`PEER_BATCH`] ids per request and
/// [`STREAMS`] requests at a time; one plan per batch, in order.
fn plan_remote(
    rt: &tokio::runtime::Runtime,
    peer: &Client,
    url: &str,
    ids: &[Id],
) -> Result<Vec<pb::FramePlan>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(STREAMS));
    let calls: Vec<_> = ids
        .chunks(PEER_BATCH)
        .map(|batch| {
            let (mut peer, limit) = (peer.clone(), limit.clone());
            let req = pb::IdList {
                ids: batch.iter().map(|c| c.0.to_vec()).collect(),
            };
            rt.spawn(async move {
                let _permit = limit.acquire_owned().await;
                peer.plan_frames(req).await
            })
        })
        .collect();
    rt.block_on(async {
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            let plan = c
                .await
                .map_err(|e| Error::Internal(format!("a planning task failed: {e}")))?
                .map_err(|e| from_peer(url, "planning frames", e))?;
            out.push(plan.into_inner());
        }
        Ok(out)
    })
}

/// Frames asked for per `GetFrames` call.
const FRAMES_PER_CALL: usize = 8;
/// Chunks asked for per `GetChunks` call.
const CHUNKS_PER_CALL: usize = 128;

/// A file to bring, and the size it must have when the asker knows it
/// (from a pointer or a tree entry): a peer whose manifest says otherwise
/// is refused before any chunk is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Want {
    pub file: Id,
    pub size: Option<u64>,
}

/// Brings `files` from the peer at `url` into this store.
pub fn pull(store: &Store, addr: &PeerAddr, files: &[Want], progress: Progress) -> Result<Summary> {
    counted(store, pull_inner(store, addr, files, progress))
}

/// One pull: the connection, what was asked, and what happened so far.
struct Pull<'a> {
    store: &'a Store,
    url: &'a str,
    rt: tokio::runtime::Runtime,
    peer: Client,
    sum: Summary,
    progress: Progress<'a>,
}

fn pull_inner(
    store: &Store,
    addr: &PeerAddr,
    wants: &[Want],
    progress: Progress,
) -> Result<Summary> {
    let url = addr.url.as_str();
    let mut p = Pull::connect(store, addr, progress)?;
    let files: Vec<Id> = wants.iter().map(|w| w.file).collect();
    let expected: HashMap<Id, u64> = wants
        .iter()
        .filter_map(|w| Some((w.file, w.size?)))
        .collect();
    let present = store.files_present(&files)?;
    let want: Vec<Id> = files
        .iter()
        .zip(present)
        .filter(|(_, p)| !p)
        .map(|(f, _)| *f)
        .collect();
    p.sum.files_already_there = (files.len() - want.len()) as u64;
    let manifests = p.manifests(&want, expected)?;
    let got: HashSet<Id> = manifests.iter().map(|(f, _)| *f).collect();
    p.sum.missing = want.iter().filter(|f| !got.contains(f)).copied().collect();
    let mut missing_chunks = p.chunks_lacking(&manifests)?;
    let started = std::time::Instant::now();
    let mut intake = frames::Intake::new(store, url);
    // Files are hashed as their chunks arrive, so few are read back.
    intake.files = Some(files::InOrder::new(store, manifests, &missing_chunks, url)?);
    p.frame_rounds(&mut intake, &mut missing_chunks, started)?;
    let framed = started.elapsed();
    let one_by_one = missing_chunks.len();
    let stored = p.chunks_one_by_one(&mut intake, &missing_chunks);
    // What arrived intact is kept, so a rerun resumes from here.
    intake.keep.session.seal()?;
    stored?;
    let transferred = started.elapsed();
    if let Some(files) = intake.files.take() {
        let done = files.finish(store, url)?;
        p.sum.files += done.recorded;
        p.sum.files_already_there += done.already_here;
        tracing::debug!(
            streamed = done.streamed,
            read_back = done.read_back,
            "checked pulled files"
        );
    }
    tracing::info!(
        peer = url,
        frames_as_stored = intake.keep.as_stored,
        frames_split = intake.keep.split,
        chunks_one_by_one = one_by_one,
        delta_frame_bytes = p.sum.wire.delta_frames,
        whole_frame_bytes = p.sum.wire.whole_frames,
        chunk_bytes = p.sum.wire.chunks,
        manifest_bytes = p.sum.wire.manifests,
        ?framed,
        ?transferred,
        total = ?started.elapsed(),
        "pulled"
    );
    Ok(p.sum)
}

/// Brings from the peer the chunks of `want` that cover bytes
/// `[offset, end)` (`end` past the size: to the end), and no others: a
/// range read of a file this store does not hold. Frames travel as stored
/// where their bases are here, the rest as chunks; each chunk is checked
/// against its id and stored. The file is not recorded (its whole content
/// was not checked against its id), so the manifest the peer sent is
/// returned for the reader to use; pass it back as `known` for the next
/// range of the same file to skip asking for it again.
pub fn fetch_range(
    store: &Store,
    addr: &PeerAddr,
    want: Want,
    known: Option<Arc<Manifest>>,
    offset: u64,
    end: u64,
) -> Result<(Arc<Manifest>, Summary)> {
    counted(
        store,
        fetch_range_inner(store, addr, want, known, offset, end),
    )
}

fn fetch_range_inner(
    store: &Store,
    addr: &PeerAddr,
    want: Want,
    known: Option<Arc<Manifest>>,
    offset: u64,
    end: u64,
) -> Result<(Arc<Manifest>, Summary)> {
    let mut quiet = |_| {};
    let mut p = Pull::connect(store, addr, &mut quiet)?;
    let manifest = match known {
        Some(m) => m,
        None => {
            let expected = want.size.map(|s| (want.file, s)).into_iter().collect();
            let got = p.manifests(&[want.file], expected)?;
            let m = got
                .into_iter()
                .find(|(f, _)| *f == want.file)
                .ok_or_else(|| {
                    Error::NotFound(format!("{} does not have file {}", p.url, want.file))
                })?;
            Arc::new(m.1)
        }
    };
    let mut covering = Vec::new();
    let mut pos = 0u64;
    for &(c, len) in &manifest.chunks {
        let next = pos + len as u64;
        if next > offset && pos < end {
            covering.push(c);
        }
        if next >= end {
            break;
        }
        pos = next;
    }
    covering.sort_unstable();
    covering.dedup();
    let mut missing = Vec::new();
    for batch in covering.chunks(PEER_BATCH) {
        for (c, have) in batch.iter().zip(store.indexed(batch)?) {
            if have {
                p.sum.chunks_skipped += 1;
            } else {
                missing.push(*c);
            }
        }
    }
    if !missing.is_empty() {
        let mut intake = frames::Intake::new(store, p.url);
        p.frame_rounds(&mut intake, &mut missing, std::time::Instant::now())?;
        let stored = p.chunks_one_by_one(&mut intake, &missing);
        intake.keep.session.seal()?;
        stored?;
    }
    Ok((manifest, p.sum))
}

/// Brings exactly `ids` (chunks this store lacks) from the peer: frames
/// as stored where their bases are here, the rest one by one; each chunk
/// checked against its id. Returns the summary and the chunks the peer
/// did not have.
pub fn fetch_chunks(store: &Store, addr: &PeerAddr, ids: &[Id]) -> Result<(Summary, Vec<Id>)> {
    let mut quiet = |_| {};
    let mut p = Pull::connect(store, addr, &mut quiet)?;
    let mut missing = ids.to_vec();
    let mut intake = frames::Intake::new(store, p.url);
    p.frame_rounds(&mut intake, &mut missing, std::time::Instant::now())?;
    let stored = p.chunks_one_by_one(&mut intake, &missing);
    intake.keep.session.seal()?;
    if let Err(e) = stored {
        tracing::debug!(error = %e, "some chunks did not come one by one");
    }
    let mut lacking = Vec::new();
    for batch in ids.chunks(PEER_BATCH) {
        for (c, have) in batch.iter().zip(store.index.chunk_locs(batch)?) {
            if have.is_none() {
                lacking.push(*c);
            }
        }
    }
    Ok((p.sum, lacking))
}

impl<'a> Pull<'a> {
    /// A connection to the peer at `addr`, on a runtime of its own.
    fn connect(store: &'a Store, addr: &'a PeerAddr, progress: Progress<'a>) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start a runtime: {e}")))?;
        let peer = rt.block_on(connect(addr, store))?;
        Ok(Pull {
            store,
            url: addr.url.as_str(),
            rt,
            peer,
            sum: Summary::default(),
            progress,
        })
    }
}

impl Pull<'_> {
    /// The manifests of `want`, each one asked for and complete.
    fn manifests(
        &mut self,
        want: &[Id],
        expected: HashMap<Id, u64>,
    ) -> Result<Vec<(Id, crate::manifest::Manifest)>> {
        let url = self.url;
        let mut pieces = Pieces::expecting(expected);
        for batch in want.chunks(PEER_BATCH) {
            let mut s = self
                .rt
                .block_on(self.peer.get_manifests(pb::IdList {
                    ids: batch.iter().map(|f| f.0.to_vec()).collect(),
                }))
                .map_err(|e| from_peer(url, "sending manifests", e))?
                .into_inner();
            let asked: HashSet<Id> = batch.iter().copied().collect();
            while let Some(p) = self
                .rt
                .block_on(s.message())
                .map_err(|e| from_peer(url, "sending manifests", e))?
            {
                if Id::from_slice(&p.file).is_none_or(|f| !asked.contains(&f)) {
                    return Err(Error::Refused(format!(
                        "{url} sent a manifest that was not asked for; refused"
                    )));
                }
                self.sum.wire.manifests += p.encoded_len() as u64;
                pieces.add(p, url)?;
            }
        }
        if !pieces.open.is_empty() {
            return Err(Error::Refused(format!(
                "{url} sent an incomplete manifest; refused"
            )));
        }
        Ok(pieces.take_done())
    }

    /// The chunks of `manifests` this store lacks, each once.
    fn chunks_lacking(&mut self, manifests: &[(Id, crate::manifest::Manifest)]) -> Result<Vec<Id>> {
        let needed = distinct_chunks(manifests.iter().map(|(_, m)| m));
        let mut missing = Vec::new();
        for batch in needed.chunks(PEER_BATCH) {
            for (c, have) in batch.iter().zip(self.store.indexed(batch)?) {
                if have {
                    self.sum.chunks_skipped += 1;
                } else {
                    missing.push(*c);
                }
            }
        }
        Ok(missing)
    }

    /// Frames the peer stores as deltas against chunks this store has
    /// travel as stored; the rest as chunks. Two rounds: the second takes as
    /// stored the delta frames whose bases arrived in the first (a fresh
    /// pull of several versions). Leaves in `missing` what no frame brought.
    fn frame_rounds(
        &mut self,
        intake: &mut frames::Intake,
        missing: &mut Vec<Id>,
        started: std::time::Instant,
    ) -> Result<()> {
        for round in 0..2 {
            if missing.is_empty() {
                break;
            }
            if round == 1 {
                // The first round's frames must be indexed to serve as bases.
                intake.keep.session.seal()?;
            }
            let planned = self.plan_round(missing)?;
            let n = planned.len();
            tracing::debug!(round, frames = n, at = ?started.elapsed(), "planned a round of frames");
            if let Err(e) = self.take_frames(intake, planned) {
                // What arrived intact is kept, so a rerun resumes from here.
                intake.keep.session.seal()?;
                return Err(e);
            }
            tracing::debug!(round, frames = n, at = ?started.elapsed(), "took a round of frames");
            let before = missing.len();
            missing.retain(|c| !intake.keep.covered.contains(c));
            if missing.len() == before {
                break;
            }
        }
        Ok(())
    }

    /// The frames worth taking as stored for `missing`, in plan order.
    fn plan_round(&self, missing: &[Id]) -> Result<Vec<frames::PlannedFrame>> {
        let mut plans = frames::Plans::new(self.url, self.store);
        let remote = plan_remote(&self.rt, &self.peer, self.url, missing)?;
        for (batch, plan) in missing.chunks(PEER_BATCH).zip(remote) {
            let asked: HashSet<Id> = batch.iter().copied().collect();
            for e in plan.frames {
                plans.add(e, &asked)?;
            }
        }
        plans.worth_taking(self.store)
    }

    /// Fetches `planned` over several streams and hands them on in plan
    /// order, while other threads check, hash and store them.
    fn take_frames(
        &mut self,
        intake: &mut frames::Intake,
        planned: Vec<frames::PlannedFrame>,
    ) -> Result<()> {
        let url = self.url;
        let keys: Vec<Id> = planned.iter().map(|f| f.chunks[0].0).collect();
        let jobs = keys.chunks(FRAMES_PER_CALL).map(|k| k.to_vec()).collect();
        let mut planned: HashMap<Id, frames::PlannedFrame> =
            keys.into_iter().zip(planned).collect();
        let streams = stream_jobs(&self.rt, &self.peer, jobs, |mut p, ids| async move {
            p.get_frames(uncompressed(ids)).await
        });
        let (rt, sum, progress) = (&self.rt, &mut self.sum, &mut self.progress);
        let taken = intake.take_all(|take| {
            each_message(rt, streams, |fd| {
                let fd = fd.map_err(|e| from_peer(url, "sending frames", e))?;
                let f = Id::from_slice(&fd.chunk)
                    .and_then(|key| planned.remove(&key))
                    .ok_or_else(|| {
                        Error::Refused(format!(
                            "{url} sent a frame that was not asked for; refused"
                        ))
                    })?;
                sum.bytes += fd.payload.len() as u64;
                if f.bases.is_empty() {
                    sum.wire.whole_frames += fd.payload.len() as u64;
                } else {
                    sum.wire.delta_frames += fd.payload.len() as u64;
                }
                progress(sum.bytes);
                take(f, fd.payload)
            })
        })?;
        self.sum.chunks_sent += taken;
        Ok(())
    }

    /// The chunks no frame brought, over several streams at once; this
    /// thread checks and stores what arrives.
    fn chunks_one_by_one(&mut self, intake: &mut frames::Intake, missing: &[Id]) -> Result<()> {
        let url = self.url;
        let mut asked: HashSet<Id> = missing.iter().copied().collect();
        let jobs: Vec<Vec<Id>> = missing
            .chunks(CHUNKS_PER_CALL)
            .map(|c| c.to_vec())
            .collect();
        let streams = stream_jobs(&self.rt, &self.peer, jobs, |mut p, ids| async move {
            p.get_chunks(ids).await
        });
        let (store, sum, progress) = (self.store, &mut self.sum, &mut self.progress);
        each_message(&self.rt, streams, |b| {
            let b = b.map_err(|e| from_peer(url, "sending chunks", e))?;
            let got = receive_batch(
                store,
                &mut intake.keep.session,
                b,
                url,
                Some(&mut asked),
                intake.files.as_mut(),
            )?;
            sum.chunks_sent += got.stored + got.had;
            sum.bytes += got.bytes;
            sum.wire.chunks += got.bytes;
            progress(sum.bytes);
            Ok(())
        })?;
        if !asked.is_empty() {
            return Err(Error::NotFound(format!(
                "{url} lacks {} chunks of the files asked for (its store is damaged? run `hoard verify` there)",
                asked.len()
            )));
        }
        Ok(())
    }
}
