//! Small files replaced atomically and durably: written under a temporary
//! name beside the target, fsynced, renamed over it, and the directory
//! fsynced, so after a crash or a power loss the file holds the old content
//! or the new, never a mix, and a rename that returned is not undone.
//!
//! Floor 1: may import `error` only.

use crate::error::{Error, Result};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Replaces `path` with `bytes` (file mode `mode`), durably.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{} names no file", path.display())))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io("cannot write", &tmp, e))?;
    // `mode` applies only to a file it creates: a temporary left by an
    // interrupted write keeps its own unless set here.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("cannot set the mode of", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("cannot write", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot update", path, e))?;
    sync_dir(path)
}

/// Makes the entries of `path`'s directory (a rename into it) durable.
pub fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_with_its_mode_and_no_temporary_left() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tokens.json");
        replace(&p, b"first", 0o600).unwrap();
        // A temporary left by an interrupted earlier write is overwritten.
        std::fs::write(d.path().join("tokens.json.tmp"), b"half of someth").unwrap();
        replace(&p, b"second", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
