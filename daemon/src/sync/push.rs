//! Push: send files (manifests, and the chunks and frames the peer lacks)
//! to a peer.

use super::client::{connect, from_peer, peer_has, runtime, Client};
use super::wire::{distinct_chunks, pieces_of, read_batches};
use super::{counted, frames, PeerAddr, Progress, Summary};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::store::Store;
use hoard_proto::v1 as pb;
use hoard_proto::PEER_BATCH;
use std::collections::HashSet;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Sends `files` (and the chunks of them the peer lacks) to the peer at `url`.
pub fn push(store: &Store, addr: &PeerAddr, files: &[Id], progress: Progress) -> Result<Summary> {
    counted(store, push_inner(store, addr, files, progress))
}

fn push_inner(store: &Store, addr: &PeerAddr, files: &[Id], progress: Progress) -> Result<Summary> {
    let rt = runtime()?;
    let mut peer = rt.block_on(connect(addr, store))?;
    push_over(store, &rt, &mut peer, &addr.url, files, progress)
}

/// [`push`] over a connection the caller holds (and keeps using after).
pub(crate) fn push_over(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    peer: &mut Client,
    url: &str,
    files: &[Id],
    progress: Progress,
) -> Result<Summary> {
    let mut sum = Summary::default();
    let mut send = Vec::new();
    let present = peer_has(rt, files, url, "the file check", |ids| {
        let mut p = peer.clone();
        async move { p.have_files(ids).await }
    })?;
    for (f, p) in files.iter().zip(present) {
        if p {
            sum.files_already_there += 1;
        } else {
            send.push(*f);
        }
    }
    let mut manifests = Vec::new();
    for f in &send {
        let m = store.index.manifest(f)?.ok_or_else(|| {
            Error::NotFound(format!("{f} is not in this store, so it cannot be pushed"))
        })?;
        manifests.push((*f, m));
    }
    let needed = distinct_chunks(manifests.iter().map(|(_, m)| m));
    let mut to_send = Vec::new();
    let present = peer_has(rt, &needed, url, "the chunk check", |ids| {
        let mut p = peer.clone();
        async move { p.have_chunks(ids).await }
    })?;
    for (c, p) in needed.iter().zip(present) {
        if p {
            sum.chunks_skipped += 1;
        } else {
            to_send.push(*c);
        }
    }
    // Frames as stored where the peer holds their bases (a new version
    // travels as deltas against the one it has); the rest as chunks.
    let (framed, framed_bytes) = push_frames(rt, peer, store, url, &to_send)?;
    if !framed.is_empty() {
        to_send.retain(|c| !framed.contains(c));
        sum.chunks_sent += framed.len() as u64;
        sum.bytes += framed_bytes;
        progress(sum.bytes);
    }
    // Chunks, read here on one thread while the runtime sends them.
    let (tx, rx) = mpsc::channel::<pb::ChunkBatch>(4);
    let r = std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<(u64, u64)> {
            let (mut n, mut bytes) = (0u64, 0u64);
            read_batches(store, &to_send, &mut |b| {
                n += b.chunks.len() as u64;
                bytes += b.chunks.iter().map(|c| c.data.len() as u64).sum::<u64>();
                tx.blocking_send(b).is_ok()
            })?;
            Ok((n, bytes))
        });
        let sent = rt.block_on(peer.put_chunks(ReceiverStream::new(rx)));
        let read = reader
            .join()
            .map_err(|_| Error::Internal("the chunk reader panicked".into()))?;
        let reply = sent
            .map_err(|e| from_peer(url, "receiving chunks", e))?
            .into_inner();
        let (n, bytes) = read?;
        Ok::<_, Error>((reply, n, bytes))
    });
    let (reply, n, bytes) = r?;
    sum.chunks_sent += n;
    sum.chunks_skipped += reply.already_had;
    sum.bytes += bytes;
    progress(sum.bytes);
    let pieces: Vec<pb::ManifestPiece> = manifests
        .iter()
        .flat_map(|(f, m)| pieces_of(f, m))
        .collect();
    let reply = rt
        .block_on(peer.put_manifests(tokio_stream::iter(pieces)))
        .map_err(|e| from_peer(url, "receiving manifests", e))?
        .into_inner();
    sum.files = reply.stored;
    sum.files_already_there += reply.already_had;
    Ok(sum)
}

/// Sends the frames of `to_send` whose bases the peer holds, as stored;
/// returns the chunks they carried and the bytes sent. A peer that does
/// not take frames gets everything as chunks.
fn push_frames(
    rt: &tokio::runtime::Runtime,
    peer: &Client,
    store: &Store,
    url: &str,
    to_send: &[Id],
) -> Result<(HashSet<Id>, u64)> {
    let mut plans = frames::Plans::new("this store", store);
    for batch in to_send.chunks(PEER_BATCH) {
        let asked: HashSet<Id> = batch.iter().copied().collect();
        for e in frames::plan(store, batch)?.frames {
            plans.add(e, &asked)?;
        }
    }
    let candidates: Vec<frames::PlannedFrame> = plans
        .useful()
        .into_iter()
        .filter(|f| f.stored_len <= frames::MAX_WIRE_FRAME)
        .collect();
    let mut bases: Vec<Id> = candidates.iter().flat_map(|f| f.bases.clone()).collect();
    bases.sort();
    bases.dedup();
    let present = peer_has(rt, &bases, url, "the base check", |ids| {
        let mut p = peer.clone();
        async move { p.have_chunks(ids).await }
    })?;
    let held: HashSet<Id> = bases
        .into_iter()
        .zip(present)
        .filter_map(|(b, p)| p.then_some(b))
        .collect();
    let sendable: Vec<frames::PlannedFrame> = candidates
        .into_iter()
        .filter(|f| f.bases.iter().all(|b| held.contains(b)))
        .collect();
    if sendable.is_empty() {
        return Ok((HashSet::new(), 0));
    }
    // Read here on one thread while the runtime sends them.
    let (tx, rx) = mpsc::channel::<pb::FramePut>(4);
    let r = std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<(HashSet<Id>, u64)> {
            let (mut carried, mut bytes) = (HashSet::new(), 0u64);
            for piece in sendable.chunks(PEER_BATCH) {
                let firsts: Vec<Id> = piece.iter().map(|f| f.chunks[0].0).collect();
                for (f, loc) in piece.iter().zip(store.index.chunk_locs(&firsts)?) {
                    let loc = loc.ok_or_else(|| {
                        Error::Corrupt(format!("chunk {} left the index", f.chunks[0].0.hex()))
                    })?;
                    let payload = store.frame_payload(&loc)?;
                    bytes += payload.len() as u64;
                    let m = pb::FramePut {
                        plan: Some(f.entry()),
                        payload,
                    };
                    if tx.blocking_send(m).is_err() {
                        return Ok((carried, bytes));
                    }
                    carried.extend(f.chunks.iter().map(|c| c.0));
                }
            }
            Ok((carried, bytes))
        });
        let sent = rt.block_on({
            let mut p = peer.clone();
            async move { p.put_frames(ReceiverStream::new(rx)).await }
        });
        let read = reader
            .join()
            .map_err(|_| Error::Internal("the frame reader panicked".into()))?;
        match sent {
            Ok(_) => read,
            Err(e) if e.code() == tonic::Code::Unimplemented => Ok((HashSet::new(), 0)),
            Err(e) => Err(from_peer(url, "receiving frames", e)),
        }
    });
    r
}
