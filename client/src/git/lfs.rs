//! git-lfs's formats, for migration in and out (the one place hoard reads
//! or writes them):
//!
//! ```text
//! version https://git-lfs.github.com/spec/v1
//! oid sha256:<64 lowercase hex>
//! size <decimal bytes>
//! ```
//!
//! (keys after `version` sorted; extension lines `ext-…` may come before
//! `oid`; under 1024 bytes). Objects live at
//! `<git common dir>/lfs/objects/<oid[0:2]>/<oid[2:4]>/<oid>`.

use std::path::{Path, PathBuf};

/// Longest text that can be an LFS pointer.
pub const MAX_LEN: usize = 1024;
const VERSION_LINE: &str = "version https://git-lfs.github.com/spec/v1\n";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LfsPointer {
    /// sha256 of the content, lowercase hex.
    pub oid: String,
    pub size: u64,
}

impl LfsPointer {
    /// Parses an LFS pointer (without extensions, which need git-lfs's own
    /// smudge programs); None for anything else.
    pub fn parse(b: &[u8]) -> Option<LfsPointer> {
        if b.len() >= MAX_LEN {
            return None;
        }
        let t = std::str::from_utf8(b).ok()?;
        let rest = t.strip_prefix(VERSION_LINE)?;
        let rest = rest.strip_prefix("oid sha256:")?;
        let (oid, rest) = rest.split_once('\n')?;
        if oid.len() != 64 || !oid.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let size = rest.strip_prefix("size ")?.strip_suffix('\n')?;
        if size.is_empty()
            || !size.bytes().all(|c| c.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return None;
        }
        Some(LfsPointer {
            oid: oid.to_string(),
            size: size.parse().ok()?,
        })
    }

    /// The pointer as git-lfs writes it.
    pub fn encode(&self) -> String {
        format!(
            "{VERSION_LINE}oid sha256:{}\nsize {}\n",
            self.oid, self.size
        )
    }

    /// Where git-lfs keeps this object's content.
    pub fn object_path(&self, git_common_dir: &Path) -> PathBuf {
        git_common_dir
            .join("lfs/objects")
            .join(&self.oid[..2])
            .join(&self.oid[2..4])
            .join(&self.oid)
    }
}

/// `.gitattributes` text with every `filter|diff|merge=from` switched to
/// `=to` (so `lfs` ↔ `hoard` round-trips byte for byte); None when nothing
/// changed.
pub fn switch_attributes(text: &[u8], from: &str, to: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut changed = false;
    for line in text.split_inclusive(|&c| c == b'\n') {
        let mut words: Vec<Vec<u8>> = Vec::new();
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        let ending = &line[body.len()..];
        if body.trim_ascii_start().starts_with(b"#") {
            out.extend_from_slice(line);
            continue;
        }
        for w in body.split_inclusive(|&c| c == b' ' || c == b'\t') {
            let trimmed = w.trim_ascii_end();
            let gap = &w[trimmed.len()..];
            let mut word = trimmed.to_vec();
            for key in ["filter", "diff", "merge"] {
                if trimmed == format!("{key}={from}").as_bytes() {
                    word = format!("{key}={to}").into_bytes();
                    changed = true;
                }
            }
            word.extend_from_slice(gap);
            words.push(word);
        }
        out.extend(words.concat());
        out.extend_from_slice(ending);
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_as_git_lfs_writes_them_round_trip() {
        let t = format!("{VERSION_LINE}oid sha256:{}\nsize 12345\n", "ab".repeat(32));
        let p = LfsPointer::parse(t.as_bytes()).unwrap();
        assert_eq!(p.size, 12345);
        assert_eq!(p.encode(), t);
        for bad in [
            t.replace("size 12345", "size 012"),
            t.replace("sha256:ab", "sha256:AB"),
            t.trim_end().to_string(),
            format!("{t}extra\n"),
            t.replace("v1", "v2"),
        ] {
            assert!(LfsPointer::parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn attributes_switch_both_ways_byte_for_byte() {
        let lfs = b"# data\n*.bin filter=lfs diff=lfs merge=lfs -text\r\n*.txt text\ndata/** filter=lfs\tdiff=lfs merge=lfs -text";
        let hoard = switch_attributes(lfs, "lfs", "hoard").unwrap();
        assert_eq!(
            hoard,
            b"# data\n*.bin filter=hoard diff=hoard merge=hoard -text\r\n*.txt text\ndata/** filter=hoard\tdiff=hoard merge=hoard -text".to_vec()
        );
        assert_eq!(
            switch_attributes(&hoard, "hoard", "lfs").unwrap(),
            lfs.to_vec()
        );
        assert!(switch_attributes(b"*.txt text\n", "lfs", "hoard").is_none());
    }
}
