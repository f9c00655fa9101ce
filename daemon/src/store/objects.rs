//! Trees, snapshots, refs (compare-and-swap) and local state: small
//! objects kept in packs and in the index.

use super::Shared;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::objects::{Object, ObjectKind};

impl Shared {
    /// Stores trees and snapshots durably (pack, then index); those already
    /// stored are skipped. Callers check each object (and that what it
    /// names is stored) first: see `crate::dataset`.
    pub fn put_objects(&self, objs: &[(ObjectKind, Id, Vec<u8>)]) -> Result<()> {
        let ids: Vec<Id> = objs.iter().map(|o| o.1).collect();
        let present = self.objects_present(&ids)?;
        if present.iter().all(|p| *p) {
            return Ok(());
        }
        let mut w = self.lock();
        let gen = w.generation;
        let level = self.params.zstd_level;
        let open = self.open_pack(&mut w)?;
        for (o, present) in objs.iter().zip(present) {
            if present {
                continue;
            }
            let (kind, id, raw) = o;
            let placed = match open.writer.append_object(*kind as u8, id, raw, level) {
                Ok(p) => p,
                Err(e) => {
                    self.abort_open(&mut w);
                    return Err(e);
                }
            };
            open.contents.records.push(crate::index::RecordAt {
                offset: placed.record_offset(),
                kind: *kind as u8,
                id: *id,
                len: placed.record_len(),
            });
            open.contents.objects.push((*id, *kind as u8, raw.clone()));
        }
        drop(w);
        self.seal_and_wait();
        let w = self.lock();
        match w.aborted.get(&gen) {
            Some(why) => Err(Error::Transient(format!(
                "the pack holding new trees and snapshots could not be written ({why}); retry"
            ))),
            None => Ok(()),
        }
    }

    /// A stored tree or snapshot, checked against its id.
    pub fn object(&self, id: &Id) -> Result<Option<Object>> {
        let Some((kind, raw)) = self.index.object(id)? else {
            return Ok(None);
        };
        let kind = ObjectKind::from_u8(kind).ok_or_else(|| {
            Error::Corrupt(format!("object {id} has an unknown kind in the index"))
        })?;
        crate::objects::decode_checked(kind, id, &raw)
            .map(Some)
            .map_err(|e| Error::damaged(format!("object {id} in the index"), e))
    }

    /// The raw encoding of a stored object (for sending to a peer).
    pub fn object_bytes(&self, id: &Id) -> Result<Option<(ObjectKind, Vec<u8>)>> {
        let Some((kind, raw)) = self.index.object(id)? else {
            return Ok(None);
        };
        let kind = ObjectKind::from_u8(kind).ok_or_else(|| {
            Error::Corrupt(format!("object {id} has an unknown kind in the index"))
        })?;
        if Id::of(&raw) != *id {
            return Err(Error::Corrupt(format!("object {id} does not match its id")));
        }
        Ok(Some((kind, raw)))
    }

    pub fn get_ref(&self, name: &str) -> Result<Option<Id>> {
        self.index.get_ref(name)
    }

    pub fn refs(&self, prefix: &str) -> Result<Vec<(String, Id)>> {
        self.index.refs(prefix)
    }

    /// Sets ref `name` to `new` (or deletes it) only if it holds `expected`
    /// now; otherwise returns what it holds. Durable when it returns.
    pub fn cas_ref(
        &self,
        name: &str,
        expected: Option<Id>,
        new: Option<Id>,
    ) -> Result<std::result::Result<(), Option<Id>>> {
        let _g = self.refs_lock.lock().unwrap_or_else(|e| e.into_inner());
        let actual = self.index.get_ref(name)?;
        if actual != expected {
            return Ok(Err(actual));
        }
        let mut b = self.index.batch();
        b.put_ref(name, new.as_ref());
        b.write(true)?;
        self.mirror_ref(name, new.as_ref());
        Ok(Ok(()))
    }

    /// Copies a ref's new value to the backend's mirror; a failure is
    /// logged (the index holds the ref; the mirror only helps a hub that
    /// lost its disk).
    pub(crate) fn mirror_ref(&self, name: &str, id: Option<&Id>) {
        if let Err(e) = self.backend.mirror_ref(name, id) {
            tracing::warn!(r#ref = name, error = %e, "cannot mirror a ref to the pack store");
        }
    }

    /// Mirrors every ref into `to` (this store's backend, or the one its
    /// packs are moving to); returns how many.
    pub fn mirror_refs_to(&self, to: &dyn crate::backend::PackBackend) -> Result<u64> {
        let refs = self.index.refs("")?;
        for (name, id) in &refs {
            to.mirror_ref(name, Some(id))?;
        }
        Ok(refs.len() as u64)
    }

    /// Puts back the refs the backend mirrored, for a store whose index has
    /// none (a hub rebuilt from its bucket); only refs to snapshots it holds.
    pub(crate) fn restore_mirrored_refs(&self) -> Result<u64> {
        if !self.index.refs("")?.is_empty() {
            return Ok(0);
        }
        let mut b = self.index.batch();
        let mut n = 0;
        for (name, id) in self.backend.mirrored_refs()? {
            if self.index.object(&id)?.is_some() {
                b.put_ref(&name, Some(&id));
                n += 1;
            }
        }
        b.write(true)?;
        Ok(n)
    }

    pub fn get_local(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.index.get_local(key)
    }

    pub fn local_entries(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.index.local_entries(prefix)
    }

    pub fn put_local(&self, key: &str, value: Option<&[u8]>) -> Result<()> {
        let mut b = self.index.batch();
        b.put_local(key, value);
        b.write(true)
    }
}
