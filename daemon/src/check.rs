//! `verify` and the problems it reports. (`reindex` lives with the store,
//! which owns the index layout it rebuilds.)
//!
//! Floor 5 (engine): may import `store`, `index`, `pack`, `objects`; no sync,
//! no services.

use crate::error::Result;
use crate::id::Id;
use crate::index::ChunkLoc;
use crate::pack::format::{self, Kind, ScannedRecord, Scanner};
use crate::store::Store;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// "pack", "chunk", "file" or "index".
    pub kind: &'static str,
    pub object: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub packs: u64,
    pub chunks: u64,
    pub files: u64,
    pub bytes_read: u64,
    pub problems: u64,
}

pub enum VerifyEvent {
    /// Pack bytes that will be read (read-data only).
    Plan(u64),
    Progress {
        bytes_read: u64,
    },
    Problem(Problem),
}

struct Reporter<'a> {
    rep: Report,
    emit: &'a mut dyn FnMut(VerifyEvent) -> bool,
    /// False once the client has gone away.
    live: bool,
}

impl Reporter<'_> {
    fn problem(&mut self, kind: &'static str, object: String, message: String) {
        self.rep.problems += 1;
        self.send(VerifyEvent::Problem(Problem {
            kind,
            object,
            message,
        }));
    }
    fn send(&mut self, e: VerifyEvent) {
        if self.live && !(self.emit)(e) {
            self.live = false;
        }
    }
}

/// Checks that index and packs agree; with `read_data`, reads every pack,
/// decompresses every frame and re-hashes every chunk and manifest. Adds
/// wait while it runs, so it sees one consistent state.
pub fn verify(
    store: &Store,
    read_data: bool,
    emit: &mut dyn FnMut(VerifyEvent) -> bool,
) -> Result<Report> {
    let _quiet = store.pause_writes();
    let mut r = Reporter {
        rep: Report::default(),
        emit,
        live: true,
    };
    let on_disk: HashMap<Id, u64> = store.backend().list()?.into_iter().collect();
    let known = check_packs(store, &on_disk, &mut r)?;
    check_chunks(store, &known, &mut r)?;
    let mut bad_chunks: HashSet<Id> = HashSet::new();
    if read_data {
        read_all_packs(store, &on_disk, &mut bad_chunks, &mut r)?;
    }
    check_files(store, &bad_chunks, &mut r)?;
    Ok(r.rep)
}

/// Packs: the index's list against the backend's. Returns the indexed
/// packs and their lengths.
fn check_packs(
    store: &Store,
    on_disk: &HashMap<Id, u64>,
    r: &mut Reporter,
) -> Result<HashMap<Id, u64>> {
    let backend = store.backend();
    let indexed = store.index.packs()?;
    let known: HashMap<Id, u64> = indexed.iter().map(|(id, info)| (*id, info.len)).collect();
    for (id, info) in &indexed {
        r.rep.packs += 1;
        match on_disk.get(id) {
            None => r.problem(
                "pack",
                id.hex(),
                format!("listed in the index but missing: {}", backend.describe(id)),
            ),
            Some(&len) if len != info.len => r.problem(
                "pack",
                id.hex(),
                format!("is {len} bytes on disk, the index says {}", info.len),
            ),
            _ => {}
        }
    }
    for id in on_disk.keys() {
        if !known.contains_key(id) {
            r.problem(
                "pack",
                id.hex(),
                "is on disk but not in the index; run `hoard reindex`".into(),
            );
        }
    }
    Ok(known)
}

/// Chunks: each entry points inside a known pack.
fn check_chunks(store: &Store, known: &HashMap<Id, u64>, r: &mut Reporter) -> Result<()> {
    store.index.for_each_chunk(|id, loc: ChunkLoc| {
        r.rep.chunks += 1;
        let inside = known
            .get(&loc.pack)
            .is_some_and(|&len| loc.payload_offset + loc.stored_len as u64 <= len);
        if !inside {
            r.problem(
                "chunk",
                id.hex(),
                format!("index points outside pack {}", loc.pack.hex()),
            );
        }
        Ok(())
    })
}

/// Data: every byte of every pack; damaged chunks go to `bad_chunks`.
fn read_all_packs(
    store: &Store,
    on_disk: &HashMap<Id, u64>,
    bad_chunks: &mut HashSet<Id>,
    r: &mut Reporter,
) -> Result<()> {
    r.send(VerifyEvent::Plan(on_disk.values().sum()));
    let mut packs: Vec<(&Id, &u64)> = on_disk.iter().collect();
    packs.sort();
    for (pack, &len) in packs {
        for (kind, object, message) in read_pack(store, pack, len, bad_chunks) {
            r.problem(kind, object, message);
        }
        r.rep.bytes_read += len;
        let bytes_read = r.rep.bytes_read;
        r.send(VerifyEvent::Progress { bytes_read });
        if !r.live || store.is_shutting_down() {
            return Err(crate::error::Error::Cancelled);
        }
    }
    Ok(())
}

/// Files: every manifest's chunks are indexed (and not damaged) and add up
/// to its size.
fn check_files(store: &Store, bad_chunks: &HashSet<Id>, r: &mut Reporter) -> Result<()> {
    let index = &store.index;
    for file in index.file_ids()? {
        r.rep.files += 1;
        let head = match index.file_head(&file) {
            Ok(Some(h)) => h,
            Ok(None) => continue,
            Err(e) => {
                r.problem("file", file.to_string(), e.to_string());
                continue;
            }
        };
        let (mut size, mut count, mut missing, mut damaged) = (0u64, 0u64, 0u64, 0u64);
        for s in 0..head.segment_starts.len() {
            let seg = match index.segment(&file, s) {
                Ok(seg) => seg,
                Err(e) => {
                    r.problem("file", file.to_string(), e.to_string());
                    break;
                }
            };
            let ids: Vec<Id> = seg.iter().map(|c| c.0).collect();
            for ((id, len), loc) in seg.iter().zip(index.chunk_locs(&ids)?) {
                size += *len as u64;
                count += 1;
                match loc {
                    Some(l) if l.len == *len => damaged += bad_chunks.contains(id) as u64,
                    _ => missing += 1,
                }
            }
        }
        let file = file.to_string();
        if size != head.size || count != head.chunks {
            let m = format!(
                "manifest lists {size} bytes in {count} chunks, its head says {} in {}",
                head.size, head.chunks
            );
            r.problem("file", file.clone(), m);
        }
        if missing > 0 {
            let m = format!("{missing} of its chunks are missing from the index");
            r.problem("file", file.clone(), m);
        }
        if damaged > 0 {
            let m = format!("{damaged} of its chunks are damaged; it cannot be restored intact");
            r.problem("file", file, m);
        }
    }
    Ok(())
}

/// A problem found reading a pack: (kind, object, message).
type Found = (&'static str, String, String);

/// Reads one pack fully: returns its problems and adds its bad chunks to `bad`.
fn read_pack(store: &Store, pack: &Id, len: u64, bad: &mut HashSet<Id>) -> Vec<Found> {
    let mut out = Vec::new();
    let mut cache = crate::store::FrameCache::default();
    let (r, _) = match store.backend().open(pack) {
        Ok(x) => x,
        Err(e) => return vec![("pack", pack.hex(), e.to_string())],
    };
    let mut scan = match Scanner::new(r, len, true) {
        Ok(s) => s,
        Err(e) => return vec![("pack", pack.hex(), e.to_string())],
    };
    loop {
        let rec = match scan.next_record() {
            Ok(None) => break,
            Ok(Some(rec)) => rec,
            Err(e) => {
                let m = format!("{e}; the rest of this pack cannot be checked");
                out.push(("pack", pack.hex(), m));
                return out;
            }
        };
        match rec.header.kind {
            Kind::Frame => check_frame(store, pack, &rec, &mut cache, bad, &mut out),
            Kind::Manifest => {
                if !manifest_intact(&rec) {
                    let m = format!("manifest record at offset {} is damaged", rec.offset);
                    out.push(("pack", pack.hex(), m));
                }
            }
            Kind::Object => {
                if let Err(e) = object_intact(&rec) {
                    let m = format!("object record at offset {} is damaged: {e}", rec.offset);
                    out.push(("pack", pack.hex(), m));
                }
            }
        }
    }
    if let Err(e) = scan.finish() {
        out.push(("pack", pack.hex(), e.to_string()));
    }
    out
}

/// A frame record: decoded (a delta against its bases, read and verified
/// through the index) and every chunk re-hashed.
fn check_frame(
    store: &Store,
    pack: &Id,
    rec: &ScannedRecord,
    cache: &mut crate::store::FrameCache,
    bad: &mut HashSet<Id>,
    out: &mut Vec<Found>,
) {
    let h = &rec.header;
    let fm = match format::decode_frame_meta(&rec.meta, h.raw_len, h.codec, rec.offset) {
        Ok(fm) => fm,
        Err(e) => return out.push(("pack", pack.hex(), e.to_string())),
    };
    let dict = if fm.bases.is_empty() {
        Ok(Vec::new())
    } else {
        store
            .bases_dict(&fm.bases, cache)
            .map_err(|e| e.to_string())
    };
    let payload = rec.payload.as_deref().unwrap_or(&[]);
    let raw = dict.and_then(|dict| {
        format::decompress(h.codec, payload, h.raw_len, &dict, rec.payload_offset())
            .map_err(|e| e.to_string())
    });
    let at = |what: &str| {
        format!(
            "in pack {} (frame at offset {}) {what}",
            pack.hex(),
            rec.offset
        )
    };
    match raw {
        Ok(raw) => {
            let mut off = 0usize;
            for (id, l) in fm.chunks {
                let end = off + l as usize;
                if Id::of(&raw[off..end]) != id {
                    bad.insert(id);
                    out.push(("chunk", id.hex(), at("does not hash to its id")));
                }
                off = end;
            }
        }
        Err(e) => {
            for (id, _) in fm.chunks {
                bad.insert(id);
                out.push(("chunk", id.hex(), at(&format!("cannot be decoded: {e}"))));
            }
        }
    }
}

/// Whether a manifest record decodes and matches the hash in its metadata.
fn manifest_intact(rec: &ScannedRecord) -> bool {
    let payload = rec.payload.as_deref().unwrap_or(&[]);
    let h = &rec.header;
    format::decode_manifest_meta(&rec.meta, rec.offset)
        .ok()
        .and_then(|(_, hash)| {
            format::decompress(h.codec, payload, h.raw_len, &[], rec.payload_offset())
                .ok()
                .filter(|raw| Id::of(raw) == hash)
        })
        .is_some()
}

/// Whether an object record decodes and matches its id.
fn object_intact(rec: &ScannedRecord) -> std::result::Result<(), String> {
    let payload = rec.payload.as_deref().unwrap_or(&[]);
    let h = &rec.header;
    let (kind, id) =
        format::decode_object_meta(&rec.meta, rec.offset).map_err(|e| e.to_string())?;
    let kind = crate::objects::ObjectKind::from_u8(kind)
        .ok_or_else(|| format!("unknown object kind {kind}"))?;
    let raw = format::decompress(h.codec, payload, h.raw_len, &[], rec.payload_offset())
        .map_err(|e| e.to_string())?;
    crate::objects::decode_checked(kind, &id, &raw)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
