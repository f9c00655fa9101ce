//! Repair: what `verify --read-data` finds damaged is fetched, exactly,
//! from a remote that has it, then the damaged packs are rewritten.
//!
//! 1. `verify --read-data` names the damaged packs (a bad payload, a
//!    truncated or missing pack, a frame that does not decode);
//! 2. every chunk the index places in them is read back and checked: those
//!    that fail are the damaged chunks;
//! 3. their index entries are dropped and they are fetched from the
//!    remotes in turn (frames as stored where this store has their bases),
//!    each checked against its id, into new packs;
//! 4. the damaged packs are rewritten without them (their good chunks
//!    re-read and checked, their manifests and objects re-written from the
//!    index's copies) through the prune's sweep, whose order survives a
//!    crash, and deleted. A pack with a chunk no remote had stays, that
//!    chunk's entry restored; the report names it and the files it breaks.
//!
//! Floor 11: imports `check`, `store`, `sync`.

use crate::check::{self, VerifyEvent};
use crate::error::Result;
use crate::id::Id;
use crate::index::ChunkLoc;
use crate::store::{FrameCache, Store, SweepPlan, SweepReport};
use crate::sync::PeerAddr;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Unrepaired {
    pub chunk: String,
    pub files: Vec<String>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub problems: u64,
    pub damaged_packs: Vec<String>,
    pub damaged_chunks: u64,
    /// Stored bytes of the frames holding damaged chunks.
    pub damaged_frame_bytes: u64,
    pub fetched_chunks: u64,
    /// Bytes that came from remotes (frames as stored, chunks).
    pub bytes_moved: u64,
    pub unrepaired: Vec<Unrepaired>,
    pub sweep: SweepReport,
}

/// Repairs `store` from `remotes` (tried in order).
pub fn repair(store: &Store, remotes: &[(String, PeerAddr)], dry_run: bool) -> Result<Report> {
    let mut rep = Report {
        dry_run,
        ..Report::default()
    };
    let mut damaged: HashSet<Id> = HashSet::new();
    let mut bad_chunks_seen: Vec<Id> = Vec::new();
    let mut emit = |e: VerifyEvent| {
        if let VerifyEvent::Problem(p) = e {
            rep.problems += 1;
            match p.kind {
                "pack" => damaged.extend(Id::parse(&p.object).ok()),
                "chunk" => bad_chunks_seen.extend(Id::parse(&p.object).ok()),
                _ => {}
            }
        }
        true
    };
    check::verify(store, true, &mut emit)?;
    for batch in bad_chunks_seen.chunks(4096) {
        damaged.extend(
            store
                .index
                .chunk_locs(batch)?
                .into_iter()
                .flatten()
                .map(|l| l.pack),
        );
    }
    // Packs on disk the index does not name are `hoard reindex`'s business.
    let indexed: HashSet<Id> = store.index.packs()?.into_iter().map(|p| p.0).collect();
    damaged.retain(|p| indexed.contains(p));
    let mut packs: Vec<Id> = damaged.iter().copied().collect();
    packs.sort();
    rep.damaged_packs = packs.iter().map(Id::hex).collect();
    let bad = damaged_chunks(store, &damaged, &mut rep)?;
    rep.damaged_chunks = bad.len() as u64;
    if dry_run || damaged.is_empty() {
        return Ok(rep);
    }
    let mut b = store.index.batch();
    for id in bad.keys() {
        b.delete_chunk(id);
    }
    b.write(true)?;
    let mut lacking: Vec<Id> = bad.keys().copied().collect();
    for (name, addr) in remotes {
        if lacking.is_empty() {
            break;
        }
        match crate::sync::fetch_chunks(store, addr, &lacking) {
            Ok((sum, still)) => {
                rep.fetched_chunks += (lacking.len() - still.len()) as u64;
                rep.bytes_moved += sum.bytes;
                lacking = still;
            }
            Err(e) => tracing::warn!(remote = %name, error = %e, "cannot fetch damaged chunks"),
        }
    }
    // What no remote had keeps its old entry, so verify still names it.
    let mut b = store.index.batch();
    let mut keep_packs = HashSet::new();
    for id in &lacking {
        let loc = bad[id];
        b.put_chunk(id, &loc);
        keep_packs.insert(loc.pack);
    }
    b.write(true)?;
    rep.unrepaired = unrepaired(store, &lacking)?;
    // Writes go on during a repair: what is indexed from here on was
    // leased when it was sealed, and the sweep spares it.
    let cutoff = crate::store::now_ms();
    let mut live_chunks = HashSet::new();
    store.index.for_each_chunk(|id, _| {
        live_chunks.insert(id);
        Ok(())
    })?;
    let plan = SweepPlan {
        live_chunks,
        live_files: store.index.file_ids()?.into_iter().collect(),
        live_objects: store.index.object_ids()?.into_iter().map(|o| o.0).collect(),
        cutoff,
        max_unused: 0.0,
        max_repack: u64::MAX,
        dry_run: false,
        only: Some(damaged.difference(&keep_packs).copied().collect()),
        reencode: HashSet::new(),
    };
    rep.sweep = store.sweep(&plan)?;
    Ok(rep)
}

/// The chunks placed in `packs` that do not read back intact, with their
/// entries; counts the stored bytes of their frames.
fn damaged_chunks(
    store: &Store,
    packs: &HashSet<Id>,
    rep: &mut Report,
) -> Result<HashMap<Id, ChunkLoc>> {
    let mut placed: Vec<(Id, ChunkLoc)> = Vec::new();
    store.index.for_each_chunk(|id, loc| {
        if packs.contains(&loc.pack) {
            placed.push((id, loc));
        }
        Ok(())
    })?;
    placed.sort_by_key(|(_, l)| (l.pack, l.payload_offset, l.offset_in_frame));
    let mut bad = HashMap::new();
    let mut frames = HashSet::new();
    let mut cache = FrameCache::default();
    for (id, loc) in placed {
        if store.read_chunk(&id, &loc, &mut cache).is_err() {
            bad.insert(id, loc);
            if frames.insert((loc.pack, loc.payload_offset)) {
                rep.damaged_frame_bytes += loc.stored_len as u64;
            }
        }
    }
    Ok(bad)
}

/// For each chunk no remote had, the files that need it.
fn unrepaired(store: &Store, lacking: &[Id]) -> Result<Vec<Unrepaired>> {
    if lacking.is_empty() {
        return Ok(Vec::new());
    }
    let want: HashSet<Id> = lacking.iter().copied().collect();
    let mut by_chunk: HashMap<Id, Vec<String>> = HashMap::new();
    for file in store.index.file_ids()? {
        if let Some(m) = store.index.manifest(&file)? {
            for (c, _) in &m.chunks {
                if want.contains(c) {
                    let v = by_chunk.entry(*c).or_default();
                    if v.last() != Some(&file.to_string()) {
                        v.push(file.to_string());
                    }
                }
            }
        }
    }
    Ok(lacking
        .iter()
        .map(|c| Unrepaired {
            chunk: c.hex(),
            files: by_chunk.remove(c).unwrap_or_default(),
        })
        .collect())
}
