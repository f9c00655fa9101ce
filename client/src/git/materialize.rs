//! Writing content into the work tree in place of pointer files — safely.
//!
//! git-lfs had a CVE (CVE-2025-26625) for writing through a symlink out of
//! the work tree. Here every component of the path is checked (a real
//! directory, not a symlink, inside the work tree), the file is replaced by
//! renaming a temporary file over it (never written through), and only a
//! file that still holds exactly its pointer is replaced, so a locally
//! modified file is never overwritten.

use super::path::GitPath;
use super::pointer::{self, Pointer};
use anyhow::{bail, Context};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a tracked file was not (or could not be) replaced by its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The work-tree file is gone (deleted, or outside a sparse checkout).
    Absent,
    /// It holds something other than its pointer: modified locally, or
    /// already materialized.
    NotPointer,
}

/// The checked absolute path of `rel` (git's `/`-separated path) under
/// `work_tree`: no `..`, no absolute paths, no `.git`, and every parent a
/// real directory rather than a symlink.
pub fn safe_path(work_tree: &Path, rel: &GitPath) -> anyhow::Result<PathBuf> {
    if rel.as_bytes().is_empty() || rel.as_bytes().contains(&0) {
        bail!("refusing to write {rel:?}: not a valid path");
    }
    let rel_path = rel.as_path();
    let comps: Vec<Component> = rel_path.components().collect();
    for c in &comps {
        match c {
            Component::Normal(n) if !n.eq_ignore_ascii_case(".git") => {}
            _ => bail!(
                "refusing to write {rel:?}: it leaves the work tree or enters .git (a hostile path in the repository?)"
            ),
        }
    }
    let mut cur = work_tree.to_path_buf();
    for c in &comps[..comps.len() - 1] {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => bail!(
                "refusing to write {rel:?}: {} is a symlink, and content is never written through one",
                cur.display()
            ),
            Ok(_) => bail!("refusing to write {rel:?}: {} is not a directory", cur.display()),
            Err(e) => bail!("cannot write {rel:?}: {}: {e}", cur.display()),
        }
    }
    cur.push(comps[comps.len() - 1]);
    Ok(cur)
}

/// What the work-tree file at `abs` is now, if it is exactly `p`'s pointer:
/// its metadata (to check again just before the rename).
pub fn holds_pointer(abs: &Path, p: &Pointer) -> Result<fs::Metadata, Skip> {
    let m = fs::symlink_metadata(abs).map_err(|_| Skip::Absent)?;
    let text = p.encode();
    if !m.is_file() || m.len() != text.len() as u64 {
        return Err(Skip::NotPointer);
    }
    let mut buf = Vec::with_capacity(pointer::MAX_LEN + 1);
    File::open(abs)
        .and_then(|f| f.take(pointer::MAX_LEN as u64 + 1).read_to_end(&mut buf))
        .map_err(|_| Skip::NotPointer)?;
    if buf != text.as_bytes() {
        return Err(Skip::NotPointer);
    }
    Ok(m)
}

/// A temporary file beside the target, renamed over it once complete.
pub struct Pending {
    tmp: PathBuf,
    dest: PathBuf,
    file: Option<File>,
    hasher: blake3::Hasher,
    written: u64,
    /// The pointer file's state when it was checked.
    was: fs::Metadata,
}

impl Pending {
    pub fn create(dest: &Path, was: fs::Metadata) -> anyhow::Result<Pending> {
        let dir = dest.parent().context("a work-tree file has a parent")?;
        let name = dest.file_name().context("a work-tree file has a name")?;
        let tmp = dir.join(format!(
            ".{}.hoard-{}-{:x}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            rand_suffix()
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(was.mode() & 0o777)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(Pending {
            tmp,
            dest: dest.to_path_buf(),
            file: Some(file),
            hasher: blake3::Hasher::new(),
            written: 0,
            was,
        })
    }

    pub fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.hasher.update(data);
        self.written += data.len() as u64;
        self.file
            .as_mut()
            .context("already finished")?
            .write_all(data)
            .with_context(|| format!("cannot write {}", self.tmp.display()))
    }

    /// Checks the content against the pointer and that the pointer file is
    /// still untouched, then renames into place. Returns the new file's
    /// metadata.
    pub fn commit(mut self, p: &Pointer) -> anyhow::Result<fs::Metadata> {
        if let Some(f) = self.file.take() {
            // Set back, so any later write moves it and the daemon's stat
            // cache can trust this one at once (hoard_proto::RACY_NS).
            f.set_modified(hoard_proto::backdated_mtime(std::time::SystemTime::now()))
                .with_context(|| format!("cannot set the time of {}", self.tmp.display()))?;
        }
        if self.written != p.size || self.hasher.finalize().as_bytes() != &p.oid {
            bail!(
                "the content received for {} does not match its pointer; nothing was written — run `hoard verify --read-data`",
                p.oid_string()
            );
        }
        let now = fs::symlink_metadata(&self.dest).ok();
        let untouched = now.is_some_and(|m| {
            m.is_file()
                && m.ino() == self.was.ino()
                && m.len() == self.was.len()
                && m.mtime() == self.was.mtime()
                && m.mtime_nsec() == self.was.mtime_nsec()
        });
        if !untouched {
            bail!(
                "{} changed while its content was being fetched; left as it is",
                self.dest.display()
            );
        }
        fs::rename(&self.tmp, &self.dest)
            .with_context(|| format!("cannot replace {}", self.dest.display()))?;
        fs::symlink_metadata(&self.dest)
            .with_context(|| format!("cannot stat {}", self.dest.display()))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Not committed: the temporary file goes (a no-op after the rename).
        let _ = fs::remove_file(&self.tmp);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let wt = d.path().join("wt");
        fs::create_dir_all(wt.join("data")).unwrap();
        fs::create_dir_all(d.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), wt.join("link")).unwrap();
        fs::write(wt.join("file"), b"x").unwrap();
        assert!(safe_path(&wt, &"data/a.bin".into()).is_ok());
        assert!(
            safe_path(&wt, &"new/a.bin".into()).is_err(),
            "missing parent"
        );
        // Any byte but NUL is a name: kept as bytes, not refused.
        let latin1 = safe_path(&wt, &GitPath::new(b"data/caf\xe9.bin")).unwrap();
        assert_eq!(
            std::os::unix::ffi::OsStrExt::as_bytes(latin1.file_name().unwrap()),
            b"caf\xe9.bin"
        );
        for bad in [
            "../x",
            "data/../../x",
            "/etc/passwd",
            ".git/config",
            "data/.GIT/x",
            "link/a.bin",
            "file/a.bin",
            "",
            "./x",
        ] {
            assert!(safe_path(&wt, &bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_exact_pointer_is_replaced_and_a_symlink_is_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let content = b"the content".to_vec();
        let p = Pointer {
            oid: *blake3::hash(&content).as_bytes(),
            size: content.len() as u64,
        };
        let f = d.path().join("f");
        fs::write(&f, p.encode()).unwrap();
        let was = holds_pointer(&f, &p).unwrap();
        let mut w = Pending::create(&f, was).unwrap();
        w.write(&content).unwrap();
        w.commit(&p).unwrap();
        assert_eq!(fs::read(&f).unwrap(), content);
        // Now it holds content, not the pointer.
        assert_eq!(holds_pointer(&f, &p).unwrap_err(), Skip::NotPointer);

        // A symlink to a file holding the pointer is not a pointer file.
        let target = d.path().join("target");
        fs::write(&target, p.encode()).unwrap();
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&target, &l).unwrap();
        assert_eq!(holds_pointer(&l, &p).unwrap_err(), Skip::NotPointer);
        assert_eq!(
            holds_pointer(&d.path().join("none"), &p).unwrap_err(),
            Skip::Absent
        );

        // Wrong content is refused and leaves the pointer file alone.
        let g = d.path().join("g");
        fs::write(&g, p.encode()).unwrap();
        let mut w = Pending::create(&g, holds_pointer(&g, &p).unwrap()).unwrap();
        w.write(b"something else").unwrap();
        assert!(w.commit(&p).is_err());
        assert_eq!(fs::read_to_string(&g).unwrap(), p.encode());
        // No temporary files are left behind.
        let left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
