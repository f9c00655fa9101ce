//! What a sweep spares: whatever was leased since its cutoff among what it
//! is about to drop, with everything that needs (see [`super::lease`]); and
//! the copy of spared items that lie in packs being rewritten.

use super::sweep::{record_live, PackUse, SweepPlan, Written};
use super::Shared;
use crate::error::Result;
use crate::id::Id;
use crate::index::ChunkLoc;
use crate::objects::{EntryKind, Object, ObjectKind};
use crate::pack::format::Codec;
use crate::pack::{Frame, PackWriter};
use std::collections::HashSet;

impl Shared {
    /// Spared chunks and records that lie in chosen packs (and were not
    /// copied as live), copied into new packs (frames of the store's frame
    /// size, packs of its pack size), made durable.
    pub(super) fn rescue(
        &self,
        plan: &SweepPlan,
        chosen: &[(Id, PackUse)],
        spared: &Spared,
    ) -> Result<Vec<Written>> {
        let mut out = Vec::new();
        let mut cur: Option<(PackWriter, Written)> = None;
        let mut cache = super::FrameCache::default();
        let (mut chunks, mut raw) = (Vec::new(), Vec::new());
        let frame_target = (self.params.frame_target as usize).max(1 << 20);
        for (_, u) in chosen {
            for f in u.frames.values() {
                for (id, off, len) in &f.chunks {
                    if !spared.chunks.contains(id) || plan.live_chunks.contains(id) {
                        continue;
                    }
                    let loc = ChunkLoc {
                        offset_in_frame: *off,
                        len: *len,
                        ..f.loc
                    };
                    raw.extend_from_slice(&self.read_chunk(id, &loc, &mut cache)?);
                    chunks.push((*id, *len));
                    if raw.len() >= frame_target {
                        let (w, wr) = self.next_writer(&mut cur, &mut out)?;
                        let frame = Frame::build(
                            std::mem::take(&mut chunks),
                            std::mem::take(&mut raw),
                            self.params.zstd_level,
                        );
                        let placed = w.append_frame(&frame)?;
                        wr.add_frame(&frame.chunks, &placed);
                    }
                }
            }
            for r in &u.records {
                if spared.records.contains(&r.id) && !record_live(plan, r) {
                    let (w, wr) = self.next_writer(&mut cur, &mut out)?;
                    self.copy_record(r, w, wr)?;
                }
            }
        }
        if !chunks.is_empty() {
            let (w, wr) = self.next_writer(&mut cur, &mut out)?;
            let frame = Frame::build(chunks, raw, self.params.zstd_level);
            let placed = w.append_frame(&frame)?;
            wr.add_frame(&frame.chunks, &placed);
        }
        if let Some((w, mut wr)) = cur.take() {
            if !w.is_empty() {
                wr.finish(w)?;
                out.push(wr);
            }
        }
        Ok(out)
    }

    /// What was leased since `plan.cutoff` among what the sweep would drop,
    /// with everything it needs: a file's chunks, a delta's bases, a
    /// snapshot's tree, a tree's files and subtrees.
    pub(super) fn spared(&self, plan: &SweepPlan, doomed_chunks: &[Id]) -> Result<Spared> {
        let mut s = Spared::default();
        let files: Vec<Id> = self
            .index
            .file_ids()?
            .into_iter()
            .filter(|f| !plan.live_files.contains(f))
            .collect();
        let objects: Vec<Id> = self
            .index
            .object_ids()?
            .into_iter()
            .map(|o| o.0)
            .filter(|o| !plan.live_objects.contains(o))
            .collect();
        let leased = |ids: &[Id]| -> Result<Vec<Id>> {
            let mut out = Vec::new();
            for batch in ids.chunks(4096) {
                for (id, t) in batch.iter().zip(self.index.leases(batch)?) {
                    if t.is_some_and(|t| t >= plan.cutoff) {
                        out.push(*id);
                    }
                }
            }
            Ok(out)
        };
        let mut chunks: Vec<Id> = leased(doomed_chunks)?;
        let mut work_objects = leased(&objects)?;
        let mut work_files = leased(&files)?;
        while let Some(o) = work_objects.pop() {
            if plan.live_objects.contains(&o) || !s.records.insert(o) {
                continue;
            }
            let Some((k, raw)) = self.index.object(&o)? else {
                continue;
            };
            match ObjectKind::from_u8(k)
                .and_then(|k| crate::objects::decode_checked(k, &o, &raw).ok())
            {
                Some(Object::Snapshot(snap)) => work_objects.push(snap.tree),
                Some(Object::Tree(t)) => {
                    for e in t.entries {
                        match e.kind {
                            EntryKind::Dir => work_objects.push(e.id),
                            _ => work_files.push(e.id),
                        }
                    }
                }
                None => {}
            }
        }
        for f in work_files {
            if plan.live_files.contains(&f) || !s.records.insert(f) {
                continue;
            }
            if let Some(m) = self.index.manifest(&f)? {
                chunks.extend(m.chunks.iter().map(|c| c.0));
            }
        }
        while let Some(c) = chunks.pop() {
            if plan.live_chunks.contains(&c) || !s.chunks.insert(c) {
                continue;
            }
            if let Some(Some(loc)) = self.index.chunk_locs(&[c])?.first() {
                if loc.codec == Codec::ZstdDict {
                    chunks.extend(self.frame_bases(loc)?);
                }
            }
        }
        Ok(s)
    }
}

/// Items a sweep spares because they were leased while it ran.
#[derive(Default)]
pub(super) struct Spared {
    pub(super) chunks: HashSet<Id>,
    /// Files and objects.
    pub(super) records: HashSet<Id>,
}

impl Spared {
    pub(super) fn count(&self) -> u64 {
        (self.chunks.len() + self.records.len()) as u64
    }
}
