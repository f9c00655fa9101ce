//! Store contents as Peer API messages and back: manifests as pieces,
//! chunks and objects in batches of bounded size, id lists parsed.

use crate::error::{Error, Result};
use crate::id::Id;
use crate::manifest::Manifest;
use crate::objects::ObjectKind;
use crate::store::{FrameCache, Store};
use hoard_proto::v1 as pb;
use hoard_proto::{CHUNK_BATCH_BYTES, PEER_BATCH};
use std::collections::HashSet;

/// Objects per message stay under this many bytes (plus one object).
pub const OBJECT_BATCH_BYTES: usize = 1 << 20;

pub(super) fn pieces_of(file: &Id, m: &Manifest) -> Vec<pb::ManifestPiece> {
    let mut out = Vec::new();
    let mut chunks = m.chunks.chunks(PEER_BATCH).peekable();
    if chunks.peek().is_none() {
        out.push(pb::ManifestPiece {
            file: file.0.to_vec(),
            size: m.size,
            last: true,
            ..Default::default()
        });
    }
    while let Some(c) = chunks.next() {
        out.push(pb::ManifestPiece {
            file: file.0.to_vec(),
            size: m.size,
            chunk_ids: c.iter().map(|x| x.0 .0.to_vec()).collect(),
            chunk_lens: c.iter().map(|x| x.1).collect(),
            last: chunks.peek().is_none(),
        });
    }
    out
}

/// Reads `ids` from the store in batches of about [`CHUNK_BATCH_BYTES`],
/// handing each to `send` (false: stop). Ids the store lacks are skipped.
pub(super) fn read_batches(
    store: &Store,
    ids: &[Id],
    send: &mut dyn FnMut(pb::ChunkBatch) -> bool,
) -> Result<()> {
    let mut cache = FrameCache::default();
    let mut batch = pb::ChunkBatch::default();
    let mut bytes = 0usize;
    for piece in ids.chunks(PEER_BATCH) {
        let locs = store.index.chunk_locs(piece)?;
        for (id, loc) in piece.iter().zip(locs) {
            let Some(loc) = loc else { continue };
            let data = store.read_chunk(id, &loc, &mut cache)?;
            bytes += data.len();
            batch.chunks.push(pb::ChunkData {
                id: id.0.to_vec(),
                data: data.into(),
            });
            if bytes >= CHUNK_BATCH_BYTES {
                if !send(std::mem::take(&mut batch)) {
                    return Ok(());
                }
                bytes = 0;
            }
        }
    }
    if !batch.chunks.is_empty() {
        send(batch);
    }
    Ok(())
}

pub(super) fn ids_of(list: &[Vec<u8>], peer: &str) -> Result<Vec<Id>> {
    if list.len() > PEER_BATCH {
        return Err(Error::Invalid(format!(
            "{peer} asked about {} ids at once; at most {PEER_BATCH}",
            list.len()
        )));
    }
    list.iter()
        .map(|b| {
            Id::from_slice(b).ok_or_else(|| Error::Invalid(format!("{peer} sent a malformed id")))
        })
        .collect()
}

/// Every chunk of `manifests`, once, in order of first use.
pub(super) fn distinct_chunks<'a>(manifests: impl Iterator<Item = &'a Manifest>) -> Vec<Id> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in manifests {
        for (c, _) in &m.chunks {
            if seen.insert(*c) {
                out.push(*c);
            }
        }
    }
    out
}

/// Serves stored objects in batches of about [`OBJECT_BATCH_BYTES`].
pub(super) fn object_batches(
    store: &Store,
    ids: &[Id],
    send: &mut dyn FnMut(pb::ObjectBatch) -> bool,
) -> Result<()> {
    let mut batch = pb::ObjectBatch::default();
    let mut bytes = 0;
    for id in ids {
        if let Some((kind, data)) = store.object_bytes(id)? {
            bytes += data.len();
            batch.objects.push(pb::Object {
                id: id.0.to_vec(),
                kind: kind as u32,
                data,
            });
            if bytes >= OBJECT_BATCH_BYTES {
                if !send(std::mem::take(&mut batch)) {
                    return Ok(());
                }
                bytes = 0;
            }
        }
    }
    if !batch.objects.is_empty() {
        send(batch);
    }
    Ok(())
}

/// The kind a wire object names, if it is one.
pub(super) fn kind_of(k: u32) -> Option<ObjectKind> {
    u8::try_from(k).ok().and_then(ObjectKind::from_u8)
}

/// Objects from `peer` with well-formed ids and known kinds, for the
/// checks of [`crate::dataset::accept`].
pub(super) fn objects_from_wire(
    objs: Vec<pb::Object>,
    peer: &str,
) -> Result<Vec<(ObjectKind, Id, Vec<u8>)>> {
    objs.into_iter()
        .map(|o| {
            let id = Id::from_slice(&o.id).ok_or_else(|| {
                Error::Refused(format!(
                    "{peer} sent an object id that is not 32 bytes; refused"
                ))
            })?;
            let kind = kind_of(o.kind).ok_or_else(|| {
                Error::Refused(format!(
                    "{peer} sent object {id} of unknown kind {}; refused",
                    o.kind
                ))
            })?;
            Ok((kind, id, o.data))
        })
        .collect()
}

/// A ref id on the wire: empty for none, else 32 bytes.
pub(super) fn ref_id(b: &[u8]) -> Result<Option<Id>> {
    if b.is_empty() {
        Ok(None)
    } else {
        Id::from_slice(b)
            .map(Some)
            .ok_or_else(|| Error::Invalid("a ref id must be 32 bytes".into()))
    }
}
