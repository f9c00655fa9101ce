//! Copying packs from one backend to another (a hub moving its packs into
//! an object store), each copy verified by reading it back, resumable: the
//! packs already copied and verified are listed in a progress file.
//!
//! The progress file holds one pack id (64 hex digits) per line, each
//! appended and synced once its pack reads back whole from the destination.

use super::format::Scanner;
use super::idx::{self, Idx};
use crate::backend::PackBackend;
use crate::error::{Error, Result};
use crate::id::Id;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;

/// What [`copy_all`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Packs at the source.
    pub packs: u64,
    /// Packs copied and verified by this run.
    pub copied: u64,
    /// Packs a previous run had copied and verified.
    pub already: u64,
    /// Bytes of the packs copied by this run.
    pub bytes: u64,
}

/// Copies every pack of `src` that `progress_file` does not list to `dst`,
/// verifying each; `progress` is called after each pack.
pub fn copy_all(
    src: &dyn PackBackend,
    dst: &dyn PackBackend,
    progress_file: &Path,
    mut progress: impl FnMut(&Copied),
) -> Result<Copied> {
    let done = read_done(progress_file)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(progress_file)
        .map_err(|e| {
            Error::io(
                "cannot write the migration's progress file",
                progress_file,
                e,
            )
        })?;
    let packs = src.list()?;
    let mut c = Copied {
        packs: packs.len() as u64,
        ..Copied::default()
    };
    for (id, _) in packs {
        if done.contains(&id) {
            c.already += 1;
        } else {
            c.bytes += copy_pack(src, dst, &id)?;
            writeln!(log, "{}", id.hex())
                .and_then(|_| log.sync_data())
                .map_err(|e| {
                    Error::io(
                        "cannot write the migration's progress file",
                        progress_file,
                        e,
                    )
                })?;
            c.copied += 1;
        }
        progress(&c);
    }
    Ok(c)
}

fn read_done(path: &Path) -> Result<HashSet<Id>> {
    match std::fs::read_to_string(path) {
        // A line cut short by a crash parses as no id: its pack is copied again.
        Ok(s) => Ok(s.lines().filter_map(|l| Id::parse(l.trim()).ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(Error::io(
            "cannot read the migration's progress file",
            path,
            e,
        )),
    }
}

/// Copies pack `id` (checked on the way) with its idx object when `dst`
/// keeps them, then reads the copy back whole and checks it. Returns its
/// length.
pub fn copy_pack(src: &dyn PackBackend, dst: &dyn PackBackend, id: &Id) -> Result<u64> {
    let (mut r, len) = src.open(id)?;
    let mut bytes = Vec::with_capacity(len.min(1 << 30) as usize);
    r.read_to_end(&mut bytes).map_err(|e| {
        Error::Transient(format!(
            "cannot read pack {} ({}): {e}",
            id.hex(),
            src.describe(id)
        ))
    })?;
    let damaged = |e: &dyn std::fmt::Display| {
        Error::Corrupt(format!(
            "pack {} ({}) is damaged ({e}); run `hoard verify --read-data` and `hoard repair REMOTE` before migrating",
            id.hex(),
            src.describe(id)
        ))
    };
    let idx = match idx::of_pack(&bytes).map_err(|e| damaged(&e))? {
        Some((got, _)) if got != *id => return Err(damaged(&format!("it hashes to {got}"))),
        Some((_, idx)) => Some(idx),
        None => {
            check(&mut std::io::Cursor::new(&bytes), bytes.len() as u64, id)
                .map_err(|e| damaged(&e))?;
            None
        }
    };
    let mut sink = dst.create()?;
    sink.write_all(&bytes)
        .map_err(|e| Error::Transient(format!("cannot write pack {}: {e}", id.hex())))?;
    if let Some(i) = idx.filter(|_| dst.is_remote()) {
        sink.set_idx(i);
    }
    sink.commit(id)?;
    let bad_copy = |what: String| {
        Error::Transient(format!(
            "the copy of pack {} at {} does not read back whole ({what}); run the migration again",
            id.hex(),
            dst.describe(id)
        ))
    };
    let (mut r, got_len) = dst.open(id)?;
    if got_len != len {
        return Err(bad_copy(format!("{got_len} bytes, not {len}")));
    }
    check(&mut r, len, id).map_err(bad_copy)?;
    if dst.is_remote() && !bytes.starts_with(super::format::MAGIC_V1) {
        let b = dst
            .read_idx(id)?
            .ok_or_else(|| bad_copy("its idx object is missing".into()))?;
        let x = Idx::decode(&b).map_err(|e| bad_copy(format!("its idx object: {e}")))?;
        let mut s = x
            .scanner()
            .map_err(|e| bad_copy(format!("its idx object: {e}")))?;
        let end = (|| {
            while s.next_record()?.is_some() {}
            s.finish()
        })()
        .map_err(|e| bad_copy(format!("its idx object: {e}")))?;
        if end.pack_id != *id {
            return Err(bad_copy("its idx object names another pack".into()));
        }
    }
    Ok(len)
}

/// Scans a whole pack (headers, payload sums, trailer, id).
fn check(r: &mut dyn Read, len: u64, id: &Id) -> std::result::Result<(), String> {
    let mut s = Scanner::new(r, len, false).map_err(|e| e.to_string())?;
    while s.next_record().map_err(|e| e.to_string())?.is_some() {}
    let end = s.finish().map_err(|e| e.to_string())?;
    if end.pack_id != *id {
        return Err(format!("it hashes to {}", end.pack_id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalDir;
    use crate::pack::{Frame, PackWriter};

    fn pack(b: &LocalDir, seed: u8) -> Id {
        let mut w = PackWriter::new(b, b.root()).unwrap();
        let data = vec![seed; 3000];
        w.append_frame(&Frame::build(vec![(Id::of(&data), 3000)], data, 3))
            .unwrap();
        w.finish().unwrap().0
    }

    #[test]
    fn copies_verifies_and_resumes() {
        let d = tempfile::tempdir().unwrap();
        let src = LocalDir::open(&d.path().join("a")).unwrap();
        let dst = LocalDir::open(&d.path().join("b")).unwrap();
        let ids: Vec<Id> = (0..3).map(|i| pack(&src, i)).collect();
        let done = d.path().join("done");
        std::fs::write(&done, format!("{}\n", ids[1].hex())).unwrap();
        let c = copy_all(&src, &dst, &done, |_| {}).unwrap();
        assert_eq!((c.packs, c.copied, c.already), (3, 2, 1));
        let again = copy_all(&src, &dst, &done, |_| {}).unwrap();
        assert_eq!((again.copied, again.already), (0, 3));
        // A damaged source pack is refused, naming it.
        let p = src.path_of(&ids[0]);
        let mut b = std::fs::read(&p).unwrap();
        b[60] ^= 1;
        std::fs::write(&p, b).unwrap();
        let e = copy_pack(&src, &dst, &ids[0]).unwrap_err().to_string();
        assert!(e.contains(&ids[0].hex()) && e.contains("damaged"), "{e}");
    }
}
