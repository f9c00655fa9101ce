//! Recovery: packs that became durable but were never indexed (a crash
//! between seal and index write) are indexed at open; `reindex` rebuilds the
//! index from the packs alone.

use super::Shared;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{ChunkLoc, PackInfo, RecordAt, Stats, RECORD_MANIFEST};
use crate::manifest::Manifest;
use crate::objects::ObjectKind;
use crate::pack::format::{self, Codec, Kind, Scanner};
use crate::pack::idx::Idx;
use std::collections::HashSet;

impl Shared {
    /// Indexes packs that became durable but were never indexed (a crash
    /// between seal and index write).
    pub(super) fn recover(&self) -> Result<()> {
        let known: HashSet<Id> = self.index.packs()?.into_iter().map(|p| p.0).collect();
        // Packs a prune took out of the index but had not deleted yet.
        for (pack, _) in self.backend.list()? {
            if !known.contains(&pack) && self.is_doomed(&pack)? {
                tracing::info!(pack = %pack.hex(), "deleting a pack an interrupted prune left behind");
                self.backend.delete(&pack)?;
            }
        }
        self.forget_doomed(&known)?;
        for (pack, _) in self.backend.list()? {
            if !known.contains(&pack) {
                tracing::info!(pack = %pack.hex(), "indexing a pack left unindexed by an interrupted run");
                let mut w = self.lock();
                if let Err(e) = self.index_pack(&pack, &mut w.stats) {
                    tracing::error!(pack = %pack.hex(), error = %e, "cannot index pack; run `hoard verify --read-data`");
                }
            }
        }
        Ok(())
    }

    /// Reads one pack front to back and indexes what it holds; chunks and
    /// files already indexed keep their entries. Returns (chunks, files) added.
    pub(crate) fn index_pack(&self, pack: &Id, stats: &mut Stats) -> Result<(u64, u64)> {
        let scanned = self.scan_pack(pack)?;
        self.index_scanned(pack, scanned, stats)
    }

    fn bad_pack(&self, pack: &Id, e: format::FormatError) -> Error {
        Error::Corrupt(format!(
            "pack {} ({}): {e}",
            pack.hex(),
            self.backend.describe(pack)
        ))
    }

    /// Every record of a pack, checked: frames' chunk lists (and the sketch
    /// features of self-contained frames), manifests' locations, objects.
    /// From the pack's idx object when the backend keeps one (one small
    /// read), else from the whole pack.
    fn scan_pack(&self, pack: &Id) -> Result<Scanned> {
        let bad = |e| self.bad_pack(pack, e);
        if self.backend.is_remote() {
            if let Some(b) = self.backend.read_idx(pack)? {
                let scanned = Idx::decode(&b)
                    .and_then(|x| Ok((x.scanner()?, x.pack_len, x.features)))
                    .map_err(bad)
                    .and_then(|(scan, len, features)| self.scan_records(pack, scan, len, features));
                match scanned {
                    Ok(s) => return Ok(s),
                    Err(e) => {
                        tracing::warn!(pack = %pack.hex(), error = %e, "the pack's idx object is unusable; reading the whole pack")
                    }
                }
            }
        }
        let (r, len) = self.backend.open(pack)?;
        // Payloads are read so self-contained frames can be re-sketched:
        // the feature index is part of what the packs alone rebuild.
        let scan = Scanner::new(r, len, true).map_err(bad)?;
        self.scan_records(pack, scan, len, Vec::new())
    }

    /// The records `scan` finds (frames without payloads in a skeleton),
    /// with `features` known beforehand.
    fn scan_records<R: std::io::Read>(
        &self,
        pack: &Id,
        mut scan: Scanner<R>,
        len: u64,
        features: Vec<([u8; 9], Id)>,
    ) -> Result<Scanned> {
        let bad = |e| self.bad_pack(pack, e);
        let mut out = Scanned {
            len,
            features,
            ..Scanned::default()
        };
        while let Some(rec) = scan.next_record().map_err(bad)? {
            match rec.header.kind {
                Kind::Frame => scanned_frame(pack, &rec, &mut out).map_err(bad)?,
                Kind::Manifest => {
                    let (file, mhash) =
                        format::decode_manifest_meta(&rec.meta, rec.offset).map_err(bad)?;
                    out.record_list.push(record_at(&rec, RECORD_MANIFEST, file));
                    out.manifests.push(ManifestAt {
                        file,
                        payload_offset: rec.payload_offset(),
                        stored_len: rec.header.stored_len,
                        codec: rec.header.codec,
                        raw_len: rec.header.raw_len,
                        hash: mhash,
                        payload: rec.payload,
                    });
                }
                Kind::Object => {
                    let o = scanned_object(pack, &rec).map_err(|e| match e {
                        Scan::Format(f) => bad(f),
                        Scan::Engine(e) => e,
                    })?;
                    out.record_list.push(record_at(&rec, o.1, o.0));
                    out.objects.push(o);
                }
            }
        }
        let end = scan.finish().map_err(bad)?;
        if end.pack_id != *pack {
            return Err(bad(format::FormatError::HashMismatch {
                claimed: *pack,
                actual: end.pack_id,
            }));
        }
        out.records = end.records;
        Ok(out)
    }

    /// Writes what [`Shared::scan_pack`] found to the index in one batch;
    /// chunks and files already indexed keep their entries.
    fn index_scanned(&self, pack: &Id, s: Scanned, stats: &mut Stats) -> Result<(u64, u64)> {
        let mut b = self.index.batch();
        let ids: Vec<Id> = s.chunks.iter().map(|c| c.0).collect();
        let (mut added, mut unique) = (0u64, 0u64);
        let mut seen = HashSet::new();
        for ((id, loc), existing) in s.chunks.iter().zip(self.index.chunk_locs(&ids)?) {
            if existing.is_none() && seen.insert(*id) {
                b.put_chunk(id, loc);
                added += 1;
                unique += loc.len as u64;
            }
        }
        let mut files = 0u64;
        for at in s.manifests {
            let m = self.read_manifest_at(pack, &at)?;
            if self.index.file_head(&at.file)?.is_none() {
                b.put_manifest(&at.file, &m);
                files += 1;
                stats.logical_bytes += m.size;
            }
        }
        for (key, id) in &s.features {
            b.put_feature(key, id);
        }
        for (id, kind, raw) in &s.objects {
            b.put_object(id, *kind, raw);
        }
        for r in &s.record_list {
            b.put_record(pack, r);
        }
        b.put_pack(
            pack,
            &PackInfo {
                len: s.len,
                records: s.records,
            },
        );
        stats.chunks += added;
        stats.unique_bytes += unique;
        stats.stored_bytes += s.len;
        stats.packs += 1;
        stats.files += files;
        b.put_stats(stats);
        b.write(true)?;
        Ok((added, files))
    }

    /// A manifest record's payload, checked against the hash in its metadata.
    fn read_manifest_at(&self, pack: &Id, at: &ManifestAt) -> Result<Manifest> {
        let fetched;
        let p: &[u8] = match &at.payload {
            Some(p) => p,
            None => {
                fetched = self
                    .backend
                    .read_vec(pack, at.payload_offset, at.stored_len as usize)?;
                &fetched
            }
        };
        let enc = format::decompress(at.codec, p, at.raw_len, &[], at.payload_offset)
            .map_err(|e| self.bad_pack(pack, e))?;
        if Id::of(&enc) != at.hash {
            return Err(Error::Corrupt(format!(
                "manifest of {} in pack {} is damaged",
                at.file,
                pack.hex()
            )));
        }
        Manifest::decode(&enc).map_err(|e| {
            Error::Corrupt(format!(
                "manifest of {} in pack {}: {e}",
                at.file,
                pack.hex()
            ))
        })
    }

    /// Rebuilds the index from the packs alone. The stat cache is dropped
    /// (the next add re-reads files once); `logical_bytes` restarts as the
    /// sum of distinct file sizes. Packs that fail to scan are reported and
    /// skipped.
    pub fn reindex(
        &self,
        mut progress: impl FnMut(u64, Option<(Id, Error)>),
    ) -> Result<(u64, u64, u64, u64)> {
        let mut paused = self.pause_writes();
        let w = &mut paused.0;
        self.seal_now(w)?;
        self.index.clear_rebuildable()?;
        let mut stats = Stats::default();
        let (mut packs, mut chunks, mut files, mut bad) = (0, 0, 0, 0);
        for (pack, len) in self.backend.list()? {
            match self.index_pack(&pack, &mut stats) {
                Ok((c, f)) => {
                    packs += 1;
                    chunks += c;
                    files += f;
                    progress(len, None);
                }
                Err(e) => {
                    bad += 1;
                    progress(len, Some((pack, e)));
                }
            }
        }
        self.drop_undecodable_deltas(&mut stats)?;
        files = files.saturating_sub(self.drop_incomplete_files(&mut stats)?);
        let refs = self.restore_mirrored_refs()?;
        if refs > 0 {
            tracing::info!(refs, "restored refs mirrored beside the packs");
        }
        let mut b = self.index.batch();
        b.put_stats(&stats);
        b.put_local(super::sweep::RECORDS_COMPLETE, Some(b"1"));
        b.write(true)?;
        w.stats = stats;
        Ok((packs, chunks, files, bad))
    }

    /// Forgets chunks of delta frames a base of which no pack holds (a
    /// frame a prune left behind in a pack it kept, its base pruned): the
    /// index names only chunks that read back. Bases may be deltas, so
    /// this repeats until a pass forgets nothing (at most one pass per
    /// level of a chain, `MAX_DEPTH`, plus one).
    fn drop_undecodable_deltas(&self, stats: &mut Stats) -> Result<()> {
        let mut deltas: std::collections::HashMap<(Id, u64), (ChunkLoc, Vec<Id>)> =
            std::collections::HashMap::new();
        self.index.for_each_chunk(|id, loc| {
            if loc.codec == Codec::ZstdDict {
                deltas
                    .entry((loc.pack, loc.payload_offset))
                    .or_insert((loc, Vec::new()))
                    .1
                    .push(id);
            }
            Ok(())
        })?;
        let mut deltas: Vec<(ChunkLoc, Vec<Id>, Vec<Id>)> = deltas
            .into_values()
            .map(|(loc, ids)| Ok((loc, ids, self.frame_bases(&loc)?)))
            .collect::<Result<_>>()?;
        loop {
            let mut b = self.index.batch();
            let mut dropped = false;
            let mut kept = Vec::with_capacity(deltas.len());
            for (loc, ids, bases) in deltas {
                if self.index.chunk_locs(&bases)?.iter().all(Option::is_some) {
                    kept.push((loc, ids, bases));
                    continue;
                }
                tracing::warn!(pack = %loc.pack.hex(), offset = loc.payload_offset, "a delta frame's base is in no pack; its chunks are left out of the index");
                dropped = true;
                for id in ids {
                    b.delete_chunk(&id);
                    stats.chunks = stats.chunks.saturating_sub(1);
                }
            }
            b.write(false)?;
            if !dropped {
                return Ok(());
            }
            deltas = kept;
        }
    }

    /// Forgets files some of whose chunks no pack holds: a manifest a prune
    /// left behind in a pack it kept (the file was pruned, its chunks went),
    /// or one whose chunks lay in a pack too damaged to index. Returns how many.
    fn drop_incomplete_files(&self, stats: &mut Stats) -> Result<u64> {
        let mut dropped = 0;
        for file in self.index.file_ids()? {
            let Some(m) = self.index.manifest(&file)? else {
                continue;
            };
            let ids: Vec<Id> = m.chunks.iter().map(|c| c.0).collect();
            let mut whole = true;
            for batch in ids.chunks(4096) {
                whole &= self.index.chunk_locs(batch)?.iter().all(Option::is_some);
            }
            if !whole {
                tracing::warn!(%file, "a manifest names chunks no pack holds; the file is left out of the index");
                let mut b = self.index.batch();
                b.delete_file(&file);
                b.write(false)?;
                dropped += 1;
                stats.files = stats.files.saturating_sub(1);
                stats.logical_bytes = stats.logical_bytes.saturating_sub(m.size);
            }
        }
        Ok(dropped)
    }
}

/// What one pack holds, as read back by [`Shared::scan_pack`].
#[derive(Default)]
struct Scanned {
    len: u64,
    records: u32,
    chunks: Vec<(Id, ChunkLoc)>,
    features: Vec<([u8; 9], Id)>,
    manifests: Vec<ManifestAt>,
    objects: Vec<(Id, u8, Vec<u8>)>,
    record_list: Vec<RecordAt>,
}

fn record_at(rec: &format::ScannedRecord, kind: u8, id: Id) -> RecordAt {
    RecordAt {
        offset: rec.offset,
        kind,
        id,
        len: (rec.payload_offset() - rec.offset) as u32 + rec.header.stored_len,
    }
}

/// Where a manifest record's payload lies, and the hash it must have.
struct ManifestAt {
    file: Id,
    payload_offset: u64,
    stored_len: u32,
    codec: Codec,
    raw_len: u32,
    hash: Id,
    /// The payload, when the scan read it.
    payload: Option<Vec<u8>>,
}

enum Scan {
    Format(format::FormatError),
    Engine(Error),
}

/// A frame record: its chunks' locations, and the sketch features of a
/// self-contained (zstd) frame's chunks.
fn scanned_frame(
    pack: &Id,
    rec: &format::ScannedRecord,
    out: &mut Scanned,
) -> std::result::Result<(), format::FormatError> {
    let po = rec.payload_offset();
    let fm =
        format::decode_frame_meta(&rec.meta, rec.header.raw_len, rec.header.codec, rec.offset)?;
    // A skeleton's frames come without payloads: their features come
    // from the idx object.
    if let (Codec::Zstd, Some(payload)) = (rec.header.codec, rec.payload.as_deref()) {
        let raw = format::decompress(Codec::Zstd, payload, rec.header.raw_len, &[], po)?;
        let mut at = 0usize;
        for (id, l) in &fm.chunks {
            let bytes = &raw[at..at + *l as usize];
            at += *l as usize;
            for (lane, f) in crate::sketch::sketch(bytes).iter().flatten().enumerate() {
                out.features
                    .push((crate::index::feature_key(lane, *f), *id));
            }
        }
    }
    let mut off = 0u32;
    for (id, l) in fm.chunks {
        out.chunks.push((
            id,
            ChunkLoc {
                pack: *pack,
                payload_offset: po,
                meta_len: rec.header.meta_len,
                stored_len: rec.header.stored_len,
                raw_len: rec.header.raw_len,
                codec: rec.header.codec,
                offset_in_frame: off,
                len: l,
                depth: rec.header.depth,
            },
        ));
        off += l;
    }
    Ok(())
}

/// An object record, decoded and checked against its id.
fn scanned_object(
    pack: &Id,
    rec: &format::ScannedRecord,
) -> std::result::Result<(Id, u8, Vec<u8>), Scan> {
    let (kind, id) = format::decode_object_meta(&rec.meta, rec.offset).map_err(Scan::Format)?;
    let payload = rec.payload.as_deref().unwrap_or(&[]);
    let raw = format::decompress(
        rec.header.codec,
        payload,
        rec.header.raw_len,
        &[],
        rec.payload_offset(),
    )
    .map_err(Scan::Format)?;
    let k = ObjectKind::from_u8(kind).ok_or_else(|| {
        Scan::Engine(Error::Corrupt(format!(
            "pack {}: object {id} has unknown kind {kind}",
            pack.hex()
        )))
    })?;
    crate::objects::decode_checked(k, &id, &raw)
        .map_err(|e| Scan::Engine(Error::Corrupt(format!("pack {}: {e}", pack.hex()))))?;
    Ok((id, kind, raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FrameCache, Store, StoreParams};

    #[test]
    fn packs_of_format_1_are_still_reindexed_verified_and_read() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("store");
        let store = Store::open(&dir, StoreParams::default()).unwrap();
        let chunks: [&[u8]; 2] = [b"a chunk written by an older hoard", &[9u8; 70_000]];
        let (pack, bytes) = format::v1_pack(&chunks);
        let h = pack.hex();
        let path = dir.join("packs").join(&h[..2]).join(format!("{h}.pack"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let (packs, n, _, bad) = store.reindex(|_, _| {}).unwrap();
        assert_eq!((packs, n, bad), (1, 2, 0));
        let report = crate::check::verify(&store, true, &mut |_| true).unwrap();
        assert_eq!((report.packs, report.chunks, report.problems), (1, 2, 0));
        let mut cache = FrameCache::default();
        for c in chunks {
            let id = Id::of(c);
            let loc = store.index.chunk_locs(&[id]).unwrap()[0].unwrap();
            assert_eq!(store.read_chunk(&id, &loc, &mut cache).unwrap(), c);
        }
    }
}
