//! What a peer uploads, taken message by message: the bodies of
//! `PutChunks`, `PutFrames`, `PutManifests` and `PutObjects`. Each takes
//! `next`, which yields the stream's messages (None at its end), and is
//! free of the network, so tests and the fuzzers in `fuzz/` drive exactly
//! the code the Peer service runs. Nothing is stored before it is checked;
//! what arrived intact before a failure is kept (and is durable once the
//! call returns).

use super::checks::{receive_batch, Pieces};
use super::wire::objects_from_wire;
use super::{accept_manifests, frames};
use crate::dataset::accept;
use crate::error::{Error, Result};
use crate::put::Session;
use crate::store::Store;
use hoard_proto::v1 as pb;

/// The next message of an upload (None at its end).
pub type Next<'a, T> = &'a mut dyn FnMut() -> Result<Option<T>>;

/// Files whose manifests a `PutManifests` checks and records together.
const MANIFEST_BATCH: usize = 256;

/// `PutChunks`: each chunk checked against its id and this store's sizes.
pub fn chunks(store: &Store, peer: &str, next: Next<pb::ChunkBatch>) -> Result<pb::PutReply> {
    let mut session = Session::new(store);
    let mut reply = pb::PutReply::default();
    let outcome = (|| -> Result<()> {
        while let Some(b) = next()? {
            let got = receive_batch(store, &mut session, b, peer, None, None)?;
            reply.stored += got.stored;
            reply.already_had += got.had;
        }
        Ok(())
    })();
    // What arrived intact before any failure is kept.
    session.seal()?;
    outcome.map(|_| reply)
}

/// `PutFrames`: each frame decoded and its chunks checked before it is
/// stored; a delta only against chunks this store holds.
pub fn frames(store: &Store, peer: &str, next: Next<pb::FramePut>) -> Result<pb::PutReply> {
    let mut intake = frames::Intake::new(store, peer);
    let taken = intake.take_all(|take| {
        while let Some(m) = next()? {
            let plan = m.plan.ok_or_else(|| {
                Error::Refused(format!("{peer} sent a frame without its plan; refused"))
            })?;
            let f =
                frames::PlannedFrame::parse(&plan, peer, None, frames::max_foreign_frame(store))?;
            if f.chunks.is_empty() {
                return Err(Error::Refused(format!(
                    "{peer} sent a frame with no chunks; refused"
                )));
            }
            if !store.indexed(&f.bases)?.into_iter().all(|h| h) {
                return Err(Error::Refused(format!(
                    "{peer} sent a delta against chunks this store does not have; refused"
                )));
            }
            take(f, m.payload)?;
        }
        Ok(())
    });
    // What arrived intact before any failure is kept.
    intake.keep.session.seal()?;
    let had = intake.keep.had;
    Ok(pb::PutReply {
        stored: taken? - had,
        already_had: had,
    })
}

/// `PutManifests`: pieces put together (a bounded number of files open at
/// once), each manifest checked against its file id before it is recorded.
pub fn manifests(store: &Store, peer: &str, next: Next<pb::ManifestPiece>) -> Result<pb::PutReply> {
    let mut pieces = Pieces::default();
    let mut reply = pb::PutReply::default();
    while let Some(p) = next()? {
        pieces.add(p, peer)?;
        if pieces.done.len() >= MANIFEST_BATCH {
            let (n, had) = accept_manifests(store, pieces.take_done(), peer)?;
            reply.stored += n;
            reply.already_had += had;
        }
    }
    if !pieces.open.is_empty() {
        return Err(Error::Refused(format!(
            "{peer} ended a manifest stream in the middle of a file"
        )));
    }
    let (n, had) = accept_manifests(store, pieces.take_done(), peer)?;
    reply.stored += n;
    reply.already_had += had;
    Ok(reply)
}

/// `PutObjects`: trees, snapshots and link targets, each batch checked as
/// a set (walks linear in distinct objects, depth-capped).
pub fn objects(store: &Store, peer: &str, next: Next<pb::ObjectBatch>) -> Result<pb::PutReply> {
    let mut reply = pb::PutReply::default();
    while let Some(b) = next()? {
        let objs = objects_from_wire(b.objects, peer)?;
        let (n, had) = accept::accept_objects(store, objs, peer)?;
        reply.stored += n;
        reply.already_had += had;
    }
    Ok(reply)
}
