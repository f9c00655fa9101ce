//! A path inside the work tree as git has it: `/`-separated bytes, any
//! byte but NUL, not necessarily UTF-8 (`caf\xe9.bin` written on a Latin-1
//! system). Kept as bytes from git's `-z` output to the file system and
//! back to git, so one such name never fails a whole repository; shown as
//! text where it is valid UTF-8, else with `\xNN` escapes.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GitPath(Vec<u8>);

impl GitPath {
    pub fn new(bytes: &[u8]) -> GitPath {
        GitPath(bytes.to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The same bytes, as a relative file-system path.
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// The text, if the name is valid UTF-8 (globs match only those).
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl From<&str> for GitPath {
    fn from(s: &str) -> GitPath {
        GitPath(s.as_bytes().to_vec())
    }
}

impl fmt::Display for GitPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => f.write_str(s),
            None => write!(f, "{}", self.0.escape_ascii()),
        }
    }
}

impl fmt::Debug for GitPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl serde::Serialize for GitPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_utf8_keep_their_bytes_and_show_escaped() {
        let p = GitPath::new(b"data/caf\xe9.bin");
        assert_eq!(p.to_string(), "data/caf\\xe9.bin");
        assert_eq!(p.as_path().as_os_str().as_bytes(), b"data/caf\xe9.bin");
        assert_eq!(p.as_str(), None);
        let q = GitPath::from("data/café.bin");
        assert_eq!(q.to_string(), "data/café.bin");
    }
}
