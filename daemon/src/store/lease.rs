//! Leases: when each chunk, file or object was last written or said to be
//! present. A prune keeps whatever was leased within its grace period or
//! after it began, so a writer told "already stored" (a dedup hit, a
//! `Have*` answer to an uploader, a file found by the stat cache) never
//! loses that data to a prune running at the same time.
//!
//! The order that makes it hold: a presence answer is read and leased
//! under the shared side of the gc lock; a prune re-reads the leases of
//! what it is about to drop under the exclusive side (and the writer lock)
//! and spares what was leased since it began. Whatever a prune drops is
//! then absent for every later presence check, so it is written again.

use super::Shared;
use crate::error::Result;
use crate::id::Id;
use std::sync::{RwLockReadGuard, RwLockWriteGuard};

/// Milliseconds since the Unix epoch, now (a lease's clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Shared {
    /// Records that `ids` were just written or said present.
    pub(crate) fn lease<'a>(&self, ids: impl IntoIterator<Item = &'a Id>) -> Result<()> {
        let now = now_ms();
        let mut b = self.index.batch();
        let mut any = false;
        for id in ids {
            b.put_lease(id, now);
            any = true;
        }
        if any {
            b.write(false)?;
        }
        Ok(())
    }

    pub(super) fn gc_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.gc.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Held by a prune while it decides what to drop and drops it.
    pub(crate) fn gc_exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.gc.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Which of `ids` are already indexed (durable); those that are get a
    /// lease. In-flight chunks are resolved later, under the writer lock,
    /// by [`Shared::append_frames`].
    pub fn indexed(&self, ids: &[Id]) -> Result<Vec<bool>> {
        let _gc = self.gc_shared();
        let here: Vec<bool> = self
            .index
            .chunk_locs(ids)?
            .iter()
            .map(Option::is_some)
            .collect();
        self.lease(ids.iter().zip(&here).filter(|(_, h)| **h).map(|(i, _)| i))?;
        Ok(here)
    }

    /// Which of `files` have manifests; those that do get a lease.
    pub fn files_present(&self, files: &[Id]) -> Result<Vec<bool>> {
        let _gc = self.gc_shared();
        let here = self.index.files_present(files)?;
        self.lease(files.iter().zip(&here).filter(|(_, h)| **h).map(|(i, _)| i))?;
        Ok(here)
    }

    /// Which of `ids` (trees, snapshots) are stored; those that are get a lease.
    pub fn objects_present(&self, ids: &[Id]) -> Result<Vec<bool>> {
        let _gc = self.gc_shared();
        let here = self.index.objects_present(ids)?;
        self.lease(ids.iter().zip(&here).filter(|(_, h)| **h).map(|(i, _)| i))?;
        Ok(here)
    }
}
