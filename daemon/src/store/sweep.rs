//! Sweep: the half of a prune that changes packs. Given what stays (the
//! mark, `crate::prune`), packs with nothing live are deleted, partly live
//! packs are rewritten while unused bytes exceed the allowed share, and
//! small packs are merged.
//!
//! The order survives a crash at any point (restic's):
//! 1. the new packs are written and made durable (a crash leaves packs the
//!    index does not name: indexed at the next open, duplicates only);
//! 2. one atomic, synced index batch points every moved chunk, manifest and
//!    object at the new packs, drops the old packs and what died with them,
//!    and records the old packs as doomed;
//! 3. after a short drain (a reader holding an old location finishes or
//!    retries through the index), the doomed packs are deleted, and then
//!    forgotten. A crash before that: the next open deletes a doomed pack
//!    instead of re-indexing it.
//!
//! Step 2 runs under the exclusive gc lock and the writer lock, and first
//! re-reads the leases of everything it is about to drop: what a writer was
//! told is present since the prune began is spared, with whatever it
//! needs, and so is the old pack holding it.

use super::{Shared, Writer};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{ChunkLoc, PackInfo, RecordAt, RECORD_MANIFEST};
use crate::pack::format;
use crate::pack::{Frame, PackWriter, Placed};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What a prune keeps, and how hard to work.
pub struct SweepPlan {
    pub live_chunks: HashSet<Id>,
    pub live_files: HashSet<Id>,
    pub live_objects: HashSet<Id>,
    /// Leases at or after this (unix milliseconds) keep what they name.
    pub cutoff: u64,
    /// Unused bytes allowed to stay in partly used packs, as a share of
    /// the bytes stored after the prune.
    pub max_unused: f64,
    /// At most this many bytes of old packs are rewritten.
    pub max_repack: u64,
    pub dry_run: bool,
    /// Rewrite exactly these packs (a repair), whatever they hold.
    pub only: Option<HashSet<Id>>,
    /// Delta frames (pack, payload offset) to re-make self-contained: the
    /// mark let go of bases only they needed. Their packs are rewritten.
    pub reencode: HashSet<(Id, u64)>,
}

/// What a sweep did (or, dry, would do).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SweepReport {
    pub packs_before: u64,
    pub packs_after: u64,
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub packs_written: u64,
    pub stored_before: u64,
    pub stored_after: u64,
    /// Bytes of the old packs that were rewritten, and of the new packs.
    pub bytes_repacked: u64,
    pub bytes_written: u64,
    pub chunks_removed: u64,
    pub files_removed: u64,
    pub objects_removed: u64,
    /// Frames re-encoded because only some of their chunks stay.
    pub frames_reencoded: u64,
    /// Items leased while the prune ran, kept.
    pub spared: u64,
}

/// A sweep's phase boundaries. For the tests, `HOARD_TEST_PRUNE_ABORT=
/// <name>` in the daemon's environment aborts the process at one (as a
/// kill -9 would), and `HOARD_TEST_PRUNE_PAUSE=<name>:<ms>` waits there
/// (so a test can run writers against a prune that has decided).
pub const PHASES: [&str; 4] = ["marked", "written", "indexed", "deleting"];

pub(crate) fn phase(name: &str) {
    if std::env::var("HOARD_TEST_PRUNE_ABORT").is_ok_and(|v| v == name) {
        tracing::warn!(phase = name, "aborting at a prune phase boundary, as asked");
        std::process::abort();
    }
    if let Ok(v) = std::env::var("HOARD_TEST_PRUNE_PAUSE") {
        if let Some(ms) = v.strip_prefix(name).and_then(|r| r.strip_prefix(':')) {
            let ms = ms.parse().unwrap_or(0);
            tracing::warn!(
                phase = name,
                ms,
                "pausing at a prune phase boundary, as asked"
            );
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}

/// Local-state key prefix of packs out of the index, not yet deleted.
const DOOMED: &str = "prune/doomed/";
/// Set once every indexed pack's records are in the `records` family.
pub(super) const RECORDS_COMPLETE: &str = "prune/records-complete";
/// How long readers holding an old location get before its pack goes.
const DRAIN: std::time::Duration = std::time::Duration::from_millis(300);

/// One frame of an old pack, as the index knows it.
pub(super) struct FrameAt {
    pub(super) loc: ChunkLoc,
    pub(super) chunks: Vec<(Id, u32, u32)>,
}

impl FrameAt {
    fn bytes(&self) -> u64 {
        (format::HEADER_LEN + self.loc.meta_len as usize + self.loc.stored_len as usize) as u64
    }
}

/// An old pack's contents by frame offset, and its records.
#[derive(Default)]
pub(super) struct PackUse {
    pub(super) len: u64,
    pub(super) frames: BTreeMap<u64, FrameAt>,
    pub(super) records: Vec<RecordAt>,
    pub(super) live: u64,
}

/// A pack a prune takes out of the index.
pub struct Doomed(pub Id);

impl Shared {
    /// Runs the sweep of a prune (see the module documentation).
    pub fn sweep(&self, plan: &SweepPlan) -> Result<SweepReport> {
        let _one = self
            .prune_lock
            .try_lock()
            .map_err(|_| Error::Conflict("a prune is already running on this store".into()))?;
        self.complete_records()?;
        let mut uses = self.pack_uses(plan)?;
        let mut rep = SweepReport {
            packs_before: uses.len() as u64,
            stored_before: uses.values().map(|u| u.len).sum(),
            ..SweepReport::default()
        };
        let chosen = self.choose(plan, &uses);
        for id in &chosen {
            let u = &uses[id];
            if u.live == 0 {
                rep.packs_deleted += 1;
            } else {
                rep.packs_rewritten += 1;
                rep.bytes_repacked += u.len;
            }
        }
        rep.files_removed =
            (self.index.file_ids()?.len() as u64).saturating_sub(plan.live_files.len() as u64);
        let objects = self.index.object_ids()?;
        rep.objects_removed = objects
            .iter()
            .filter(|(o, _)| !plan.live_objects.contains(o))
            .count() as u64;
        phase("marked");
        if plan.dry_run {
            let live: u64 = chosen.iter().map(|p| uses[p].live).sum();
            let gone: u64 = chosen.iter().map(|p| uses[p].len).sum();
            rep.stored_after = rep.stored_before - gone + live;
            rep.packs_after = rep.packs_before - chosen.len() as u64
                + live.div_ceil(self.params.pack_target.max(1));
            let mut dead = 0u64;
            self.index.for_each_chunk(|id, _| {
                dead += !plan.live_chunks.contains(&id) as u64;
                Ok(())
            })?;
            rep.chunks_removed = dead;
            return Ok(rep);
        }
        let chosen_uses: Vec<(Id, PackUse)> =
            chosen.iter().filter_map(|p| uses.remove_entry(p)).collect();
        let written = self.rewrite(plan, &chosen_uses, &mut rep)?;
        phase("written");
        let doomed = self.switch(plan, &chosen_uses, written, &mut rep)?;
        phase("indexed");
        std::thread::sleep(DRAIN);
        for (i, p) in doomed.iter().enumerate() {
            self.backend.delete(&p.0)?;
            if i == 0 {
                phase("deleting");
            }
        }
        let mut b = self.index.batch();
        for p in &doomed {
            b.put_local(&format!("{DOOMED}{}", p.0.hex()), None);
        }
        b.write(true)?;
        let after = self.index.packs()?;
        rep.packs_after = after.len() as u64;
        rep.stored_after = after.iter().map(|p| p.1.len).sum();
        Ok(rep)
    }

    /// Whether a prune took `pack` out of the index without deleting it.
    pub(super) fn is_doomed(&self, pack: &Id) -> Result<bool> {
        Ok(self
            .index
            .get_local(&format!("{DOOMED}{}", pack.hex()))?
            .is_some())
    }

    /// Forgets doomed marks of packs that are gone (or back in the index).
    pub(super) fn forget_doomed(&self, indexed: &HashSet<Id>) -> Result<()> {
        let on_disk: HashSet<Id> = self.backend.list()?.into_iter().map(|p| p.0).collect();
        let mut b = self.index.batch();
        for (hex, _) in self.index.local_entries(DOOMED)? {
            let gone = Id::parse(&hex).is_ok_and(|p| !on_disk.contains(&p) || indexed.contains(&p));
            if gone {
                b.put_local(&format!("{DOOMED}{hex}"), None);
            }
        }
        b.write(true)
    }

    /// Stores made before packs' records were indexed get them once.
    fn complete_records(&self) -> Result<()> {
        if self.index.get_local(RECORDS_COMPLETE)?.is_some() {
            return Ok(());
        }
        for (pack, info) in self.index.packs()? {
            if !self.index.records(&pack)?.is_empty() {
                continue;
            }
            let (r, _) = self.backend.open(&pack)?;
            let bad = |e| Error::Corrupt(format!("pack {}: {e}", pack.hex()));
            let mut scan = format::Scanner::new(r, info.len, false).map_err(bad)?;
            let mut b = self.index.batch();
            while let Some(rec) = scan.next_record().map_err(bad)? {
                let len = (rec.payload_offset() - rec.offset) as u32 + rec.header.stored_len;
                let (kind, id) = match rec.header.kind {
                    format::Kind::Frame => continue,
                    format::Kind::Manifest => (
                        RECORD_MANIFEST,
                        format::decode_manifest_meta(&rec.meta, rec.offset)
                            .map_err(bad)?
                            .0,
                    ),
                    format::Kind::Object => {
                        format::decode_object_meta(&rec.meta, rec.offset).map_err(bad)?
                    }
                };
                b.put_record(
                    &pack,
                    &RecordAt {
                        offset: rec.offset,
                        kind,
                        id,
                        len,
                    },
                );
            }
            b.write(false)?;
        }
        let mut b = self.index.batch();
        b.put_local(RECORDS_COMPLETE, Some(b"1"));
        b.write(true)
    }

    /// Every indexed pack's frames and records, and how many of its bytes
    /// stay live under `plan`.
    fn pack_uses(&self, plan: &SweepPlan) -> Result<HashMap<Id, PackUse>> {
        let mut uses: HashMap<Id, PackUse> = HashMap::new();
        for (id, info) in self.index.packs()? {
            let records = self.index.records(&id)?;
            uses.insert(
                id,
                PackUse {
                    len: info.len,
                    records,
                    ..PackUse::default()
                },
            );
        }
        self.index.for_each_chunk(|id, loc| {
            if let Some(u) = uses.get_mut(&loc.pack) {
                let f = u.frames.entry(loc.payload_offset).or_insert(FrameAt {
                    loc,
                    chunks: Vec::new(),
                });
                f.chunks.push((id, loc.offset_in_frame, loc.len));
            }
            Ok(())
        })?;
        for u in uses.values_mut() {
            // A partly live frame counts in proportion to its live chunks:
            // a rewrite keeps only those.
            let frames: u64 = u
                .frames
                .values()
                .map(|f| {
                    let live: u64 = f
                        .chunks
                        .iter()
                        .filter(|c| plan.live_chunks.contains(&c.0))
                        .map(|c| c.2 as u64)
                        .sum();
                    if live == 0 {
                        0
                    } else {
                        (f.bytes() as u128 * live as u128 / f.loc.raw_len.max(1) as u128) as u64
                    }
                    .max(live.min(1))
                })
                .sum();
            let records: u64 = u
                .records
                .iter()
                .filter(|r| record_live(plan, r))
                .map(|r| r.len as u64)
                .sum();
            u.live = frames + records;
        }
        Ok(uses)
    }

    /// The packs to delete or rewrite: every pack with nothing live; then
    /// the emptiest partly used packs while the unused bytes left exceed
    /// `max_unused`; then small packs, merged; all within `max_repack`.
    fn choose(&self, plan: &SweepPlan, uses: &HashMap<Id, PackUse>) -> Vec<Id> {
        if let Some(only) = &plan.only {
            let mut chosen: Vec<Id> = uses.keys().filter(|p| only.contains(p)).copied().collect();
            chosen.sort();
            return chosen;
        }
        let mut chosen: Vec<Id> = uses
            .iter()
            .filter(|(_, u)| u.live == 0)
            .map(|(id, _)| *id)
            .collect();
        let mut partly: Vec<(&Id, &PackUse)> = uses
            .iter()
            .filter(|(_, u)| u.live > 0 && u.live < u.len)
            .collect();
        partly.sort_by_key(|(id, u)| (std::cmp::Reverse(u.len - u.live), **id));
        let stored_after: u64 = uses.values().map(|u| u.live).sum();
        let mut unused: u64 = partly.iter().map(|(_, u)| u.len - u.live).sum();
        let allowed = (stored_after as f64 * plan.max_unused) as u64;
        let mut budget = plan.max_repack;
        for (id, u) in partly {
            if unused <= allowed || u.len > budget {
                continue;
            }
            unused -= u.len - u.live;
            budget -= u.len;
            chosen.push(*id);
        }
        // Small packs (each commit seals one with its manifests) are merged.
        let small_limit = self.params.pack_target / 8;
        let small: Vec<&Id> = uses
            .iter()
            .filter(|(id, u)| u.live > 0 && u.len < small_limit && !chosen.contains(id))
            .map(|(id, _)| id)
            .collect();
        if small.len() >= 2 {
            for id in small {
                let len = uses[id].len;
                if len <= budget {
                    budget -= len;
                    chosen.push(*id);
                }
            }
        }
        // Packs holding deltas the mark re-makes whole must be rewritten,
        // whatever the budget: their old bases are no longer kept.
        for (p, _) in &plan.reencode {
            if uses.contains_key(p) && !chosen.contains(p) {
                chosen.push(*p);
            }
        }
        chosen.sort();
        chosen
    }

    /// Step 1: what stays in the chosen packs, copied into new packs, made
    /// durable. Frames whose chunks all stay are copied as stored; the
    /// others are re-made from their live chunks.
    fn rewrite(
        &self,
        plan: &SweepPlan,
        chosen: &[(Id, PackUse)],
        rep: &mut SweepReport,
    ) -> Result<Vec<Written>> {
        let mut out = Vec::new();
        let mut cur: Option<(PackWriter, Written)> = None;
        let mut cache = super::FrameCache::default();
        for (pack, u) in chosen {
            if self.is_shutting_down() {
                return Err(Error::Cancelled);
            }
            for f in u.frames.values() {
                let live: Vec<&(Id, u32, u32)> = f
                    .chunks
                    .iter()
                    .filter(|c| plan.live_chunks.contains(&c.0))
                    .collect();
                if live.is_empty() {
                    continue;
                }
                let (w, wr) = self.next_writer(&mut cur, &mut out)?;
                // A repair re-makes every frame from chunks it re-reads.
                let whole = live.len() == f.chunks.len()
                    && plan.only.is_none()
                    && !plan.reencode.contains(&(*pack, f.loc.payload_offset));
                if !(whole && copy_frame(self, pack, f, w, wr)?) {
                    rep.frames_reencoded += 1;
                    let mut chunks = Vec::new();
                    let mut raw = Vec::new();
                    for (id, _, _) in live {
                        let loc = ChunkLoc {
                            offset_in_frame: f
                                .chunks
                                .iter()
                                .find(|c| c.0 == *id)
                                .map_or(0, |c| c.1),
                            len: f.chunks.iter().find(|c| c.0 == *id).map_or(0, |c| c.2),
                            ..f.loc
                        };
                        let bytes = self.read_chunk(id, &loc, &mut cache)?;
                        chunks.push((*id, bytes.len() as u32));
                        raw.extend_from_slice(&bytes);
                    }
                    let frame = Frame::build(chunks, raw, self.params.zstd_level);
                    let placed = w.append_frame(&frame)?;
                    wr.add_frame(&frame.chunks, &placed);
                }
            }
            for r in u.records.iter().filter(|r| record_live(plan, r)) {
                let (w, wr) = self.next_writer(&mut cur, &mut out)?;
                self.copy_record(r, w, wr)?;
            }
        }
        if let Some((w, mut wr)) = cur.take() {
            if !w.is_empty() {
                wr.finish(w)?;
                out.push(wr);
            }
        }
        Ok(out)
    }

    /// The pack being written, sealing it first when it is full.
    pub(super) fn next_writer<'c>(
        &self,
        cur: &'c mut Option<(PackWriter, Written)>,
        out: &mut Vec<Written>,
    ) -> Result<(&'c mut PackWriter, &'c mut Written)> {
        if cur
            .as_ref()
            .is_some_and(|(w, _)| w.len() >= self.params.pack_target)
        {
            if let Some((w, mut wr)) = cur.take() {
                wr.finish(w)?;
                out.push(wr);
            }
        }
        if cur.is_none() {
            let w = PackWriter::new(&*self.backend, &self.dir.join("packs"))?;
            *cur = Some((w, Written::new()));
        }
        let (w, wr) = cur.as_mut().expect("set above");
        Ok((w, wr))
    }

    /// A live manifest or object, re-appended from the index's copy.
    pub(super) fn copy_record(
        &self,
        r: &RecordAt,
        w: &mut PackWriter,
        wr: &mut Written,
    ) -> Result<()> {
        let placed = if r.kind == RECORD_MANIFEST {
            let m = self.index.manifest(&r.id)?.ok_or_else(|| {
                Error::Corrupt(format!("manifest of {} vanished during a prune", r.id))
            })?;
            w.append_manifest(&r.id, &m)?
        } else {
            let (kind, raw) = self.index.object(&r.id)?.ok_or_else(|| {
                Error::Corrupt(format!("object {} vanished during a prune", r.id))
            })?;
            w.append_object(kind, &r.id, &raw, self.params.zstd_level)?
        };
        wr.records.push(RecordAt {
            offset: placed.record_offset(),
            kind: r.kind,
            id: r.id,
            len: placed.record_len(),
        });
        Ok(())
    }

    /// Step 2: one synced batch moves what was copied, drops the chosen
    /// packs and what died with them. Returns the packs to delete.
    ///
    /// Every dead chunk's entry goes, wherever it lies (what the index
    /// names must always read back: a dropped base takes every delta on
    /// it); what was leased meanwhile is spared, and if it lies in a chosen
    /// pack it is copied into one more new pack first.
    fn switch(
        &self,
        plan: &SweepPlan,
        chosen: &[(Id, PackUse)],
        written: Vec<Written>,
        rep: &mut SweepReport,
    ) -> Result<Vec<Doomed>> {
        let _gc = self.gc_exclusive();
        let mut paused = self.pause_writes();
        let w: &mut Writer = &mut paused.0;
        let mut dead: Vec<(Id, ChunkLoc)> = Vec::new();
        self.index.for_each_chunk(|id, loc| {
            if !plan.live_chunks.contains(&id) {
                dead.push((id, loc));
            }
            Ok(())
        })?;
        let dead_ids: Vec<Id> = dead.iter().map(|d| d.0).collect();
        let spared = self.spared(plan, &dead_ids)?;
        rep.spared = spared.count();
        let mut written = written;
        written.extend(self.rescue(plan, chosen, &spared)?);
        let mut b = self.index.batch();
        let mut stats = w.stats;
        for wr in &written {
            for (id, loc) in &wr.chunks {
                b.put_chunk(id, loc);
            }
            for r in &wr.records {
                b.put_record(&wr.pack, r);
            }
            b.put_pack(
                &wr.pack,
                &PackInfo {
                    len: wr.len,
                    records: wr.count,
                },
            );
            stats.stored_bytes += wr.len;
            stats.packs += 1;
        }
        for (id, loc) in &dead {
            if !spared.chunks.contains(id) {
                b.delete_chunk(id);
                b.delete_lease(id);
                rep.chunks_removed += 1;
                stats.chunks = stats.chunks.saturating_sub(1);
                stats.unique_bytes = stats.unique_bytes.saturating_sub(loc.len as u64);
            }
        }
        let mut doomed = Vec::new();
        // A pack is named by its content: a rewrite may reproduce an old
        // pack exactly, and that one stays.
        let rewritten: HashSet<Id> = written.iter().map(|w| w.pack).collect();
        for (pack, u) in chosen {
            if rewritten.contains(pack) {
                stats.stored_bytes = stats.stored_bytes.saturating_sub(u.len);
                stats.packs = stats.packs.saturating_sub(1);
                continue;
            }
            b.delete_pack(pack);
            b.put_local(&format!("{DOOMED}{}", pack.hex()), Some(b"1"));
            stats.stored_bytes = stats.stored_bytes.saturating_sub(u.len);
            stats.packs = stats.packs.saturating_sub(1);
            doomed.push(Doomed(*pack));
        }
        rep.files_removed = 0;
        for file in self.index.file_ids()? {
            if !plan.live_files.contains(&file) && !spared.records.contains(&file) {
                let size = self.index.file_head(&file)?.map_or(0, |h| h.size);
                b.delete_file(&file);
                b.delete_lease(&file);
                rep.files_removed += 1;
                stats.files = stats.files.saturating_sub(1);
                stats.logical_bytes = stats.logical_bytes.saturating_sub(size);
            }
        }
        rep.objects_removed = 0;
        for (id, _) in self.index.object_ids()? {
            if !plan.live_objects.contains(&id) && !spared.records.contains(&id) {
                b.delete_object(&id);
                b.delete_lease(&id);
                rep.objects_removed += 1;
            }
        }
        b.put_stats(&stats);
        b.write(true)?;
        w.stats = stats;
        rep.packs_written = written.len() as u64;
        rep.bytes_written = written.iter().map(|w| w.len).sum();
        Ok(doomed)
    }
}

pub(super) fn record_live(plan: &SweepPlan, r: &RecordAt) -> bool {
    if r.kind == RECORD_MANIFEST {
        plan.live_files.contains(&r.id)
    } else {
        plan.live_objects.contains(&r.id)
    }
}

/// A pack a sweep wrote, and where what it holds now lies.
pub(super) struct Written {
    pack: Id,
    len: u64,
    count: u32,
    chunks: Vec<(Id, ChunkLoc)>,
    records: Vec<RecordAt>,
}

impl Written {
    pub(super) fn new() -> Written {
        Written {
            pack: Id([0; 32]),
            len: 0,
            count: 0,
            chunks: Vec::new(),
            records: Vec::new(),
        }
    }

    pub(super) fn add_frame(&mut self, chunks: &[(Id, u32)], placed: &Placed) {
        self.chunks
            .extend(super::write::placed_locs(chunks, placed));
    }

    /// Makes the pack durable and names it in what it holds.
    pub(super) fn finish(&mut self, w: PackWriter) -> Result<()> {
        let (pack, len, records) = w.finish()?;
        self.pack = pack;
        self.len = len;
        self.count = records;
        for (_, loc) in &mut self.chunks {
            loc.pack = pack;
        }
        Ok(())
    }
}

/// A frame copied byte for byte (meta and payload) from its old pack;
/// false (nothing written) when the index knows only some of its chunks.
fn copy_frame(
    store: &Shared,
    pack: &Id,
    f: &FrameAt,
    w: &mut PackWriter,
    wr: &mut Written,
) -> Result<bool> {
    let l = &f.loc;
    let at = l.payload_offset - l.meta_len as u64;
    let bytes = store
        .backend
        .read_vec(pack, at, l.meta_len as usize + l.stored_len as usize)?;
    let (meta, payload) = bytes.split_at(l.meta_len as usize);
    let fm =
        format::decode_frame_meta(meta, l.raw_len, l.codec, l.payload_offset).map_err(|e| {
            Error::damaged(
                format!("frame at {} in pack {}", l.payload_offset, pack.hex()),
                e,
            )
        })?;
    if fm.chunks.len() != f.chunks.len() {
        return Ok(false);
    }
    // What is copied is what the old frame holds, each chunk re-hashed:
    // damage must not move into a pack whose checksums would bless it.
    let mut cache = super::FrameCache::default();
    for (id, off, len) in &f.chunks {
        let loc = ChunkLoc {
            offset_in_frame: *off,
            len: *len,
            ..*l
        };
        store.read_chunk(id, &loc, &mut cache)?;
    }
    let placed = w.append_stored_frame(l.codec, meta, payload, l.raw_len, l.depth)?;
    wr.add_frame(&fm.chunks, &placed);
    Ok(true)
}
