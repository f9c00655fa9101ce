//! History rewriting through git's own streams: `git fast-export --no-data`
//! (commits, tags and file changes naming existing blobs by id) is read,
//! file changes whose blob a caller wants replaced become inline blobs,
//! and `git fast-import --force` writes the new history and moves the refs.
//! Nothing but the replaced blobs and the commits above them changes:
//! authors, dates, messages, merges and tags stay as they were.

use super::Repo;
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// One `M` file change of the stream: its blob and path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    pub blob: String,
    pub path: Vec<u8>,
}

/// The fast-export stream of `refs`.
pub fn export(repo: &Repo, refs: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut args: Vec<String> = [
        "fast-export",
        "--no-data",
        "--show-original-ids",
        "--signed-tags=strip",
        "--tag-of-filtered-object=rewrite",
        "--reencode=no",
        "--use-done-feature",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(refs.iter().cloned());
    repo.git(&args)
        .context("cannot export the history to rewrite")
}

/// Walks the stream: `line` sees each line (with its `\n`); a `data`
/// command's payload is passed whole to `data`.
fn walk(
    stream: &[u8],
    mut line: impl FnMut(&[u8]) -> anyhow::Result<()>,
    mut data: impl FnMut(&[u8], &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut at = 0;
    while at < stream.len() {
        let end = stream[at..]
            .iter()
            .position(|&c| c == b'\n')
            .map(|p| at + p + 1)
            .unwrap_or(stream.len());
        let l = &stream[at..end];
        at = end;
        if let Some(n) = l.strip_prefix(b"data ") {
            let n = std::str::from_utf8(n.trim_ascii_end())
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
                .context("fast-export wrote a data command this parser does not know")?;
            let payload = stream
                .get(at..at + n)
                .context("fast-export's stream ended inside a data block")?;
            at += n;
            data(l, payload)?;
        } else {
            line(l)?;
        }
    }
    Ok(())
}

/// Parses `M <mode> <blob> <path>`.
fn file_change(l: &[u8]) -> Option<(&[u8], String, Vec<u8>)> {
    let rest = l.strip_prefix(b"M ")?;
    let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
    let sp = rest.iter().position(|&c| c == b' ')?;
    let (mode, rest) = (&rest[..sp], &rest[sp + 1..]);
    let sp = rest.iter().position(|&c| c == b' ')?;
    let (blob, path) = (&rest[..sp], &rest[sp + 1..]);
    let blob = std::str::from_utf8(blob).ok()?.to_string();
    Some((mode, blob, unquote(path)?))
}

/// Every file change of the stream that names a blob by id (not a
/// submodule commit), each once.
pub fn changes(stream: &[u8]) -> anyhow::Result<Vec<Change>> {
    let mut out = std::collections::HashSet::new();
    walk(
        stream,
        |l| {
            if let Some((mode, blob, path)) = file_change(l) {
                if mode != b"160000" && blob.len() >= 40 {
                    out.insert(Change { blob, path });
                }
            }
            Ok(())
        },
        |_, _| Ok(()),
    )?;
    Ok(out.into_iter().collect())
}

/// The stream with the file changes `replace` maps replaced by inline
/// blobs of the new content.
pub fn replace(
    stream: &[u8],
    replace: &HashMap<Change, Vec<u8>>,
) -> anyhow::Result<(Vec<u8>, u64)> {
    let mut out = Vec::with_capacity(stream.len());
    let mut n = 0u64;
    let mut emit = |l: &[u8], out: &mut Vec<u8>| -> anyhow::Result<()> {
        if let Some((mode, blob, path)) = file_change(l) {
            if let Some(new) = replace.get(&Change {
                blob,
                path: path.clone(),
            }) {
                n += 1;
                out.extend_from_slice(b"M ");
                out.extend_from_slice(mode);
                out.extend_from_slice(b" inline ");
                out.extend_from_slice(&quote(&path));
                out.extend_from_slice(format!("\ndata {}\n", new.len()).as_bytes());
                out.extend_from_slice(new);
                out.push(b'\n');
                return Ok(());
            }
        }
        out.extend_from_slice(l);
        Ok(())
    };
    let out_cell = std::cell::RefCell::new(&mut out);
    walk(
        stream,
        |l| emit(l, &mut out_cell.borrow_mut()),
        |head, payload| {
            let mut o = out_cell.borrow_mut();
            o.extend_from_slice(head);
            o.extend_from_slice(payload);
            Ok(())
        },
    )?;
    Ok((out, n))
}

/// The original commit id of each mark in the stream.
pub fn original_ids(stream: &[u8]) -> anyhow::Result<HashMap<String, String>> {
    let mut map = HashMap::new();
    let mut mark: Option<String> = None;
    walk(
        stream,
        |l| {
            let l = std::str::from_utf8(l).unwrap_or("").trim_end();
            if l.starts_with("commit ") || l.starts_with("tag ") || l.starts_with("reset ") {
                mark = None;
            } else if let Some(m) = l.strip_prefix("mark ") {
                mark = Some(m.to_string());
            } else if let Some(o) = l.strip_prefix("original-oid ") {
                if let Some(m) = mark.take() {
                    map.insert(m, o.to_string());
                }
            }
            Ok(())
        },
        |_, _| Ok(()),
    )?;
    Ok(map)
}

/// Feeds `stream` to `git fast-import --force`; returns old → new commit
/// ids (from the stream's original ids and fast-import's marks).
pub fn import(repo: &Repo, stream: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
    let marks = tempfile::NamedTempFile::new().context("cannot make a temporary file")?;
    let mut child = Command::new("git")
        .args(["fast-import", "--force", "--quiet"])
        .arg(format!("--export-marks={}", marks.path().display()))
        .current_dir(&repo.work_tree)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run git fast-import")?;
    let mut stdin = child.stdin.take().context("fast-import's stdin")?;
    let written = stdin.write_all(stream);
    drop(stdin);
    let out = child.wait_with_output().context("git fast-import")?;
    if !out.status.success() || written.is_err() {
        bail!(
            "git fast-import failed (no ref was moved unless it says so): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let originals = original_ids(stream)?;
    let text = std::fs::read_to_string(marks.path()).context("fast-import's marks")?;
    let mut map = Vec::new();
    for l in text.lines() {
        if let Some((m, new)) = l.split_once(' ') {
            if let Some(old) = originals.get(m) {
                map.push((old.clone(), new.to_string()));
            }
        }
    }
    Ok(map)
}

/// A path as fast-export writes it: C-style quoted when it has to be.
fn unquote(p: &[u8]) -> Option<Vec<u8>> {
    let Some(inner) = p.strip_prefix(b"\"").and_then(|p| p.strip_suffix(b"\"")) else {
        return Some(p.to_vec());
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *inner.get(i + 1)?;
        i += 2;
        out.push(match e {
            b'n' => b'\n',
            b't' => b'\t',
            b'"' => b'"',
            b'\\' => b'\\',
            b'a' => 7,
            b'b' => 8,
            b'f' => 12,
            b'r' => b'\r',
            b'v' => 11,
            b'0'..=b'7' => {
                let oct = inner.get(i - 1..i + 2)?;
                i += 2;
                u8::from_str_radix(std::str::from_utf8(oct).ok()?, 8).ok()?
            }
            _ => return None,
        });
    }
    Some(out)
}

/// Quotes a path for fast-import when it needs it.
fn quote(p: &[u8]) -> Vec<u8> {
    if !p
        .iter()
        .any(|&c| c == b'"' || c == b'\\' || c == b'\n' || !(0x20..0x80).contains(&c))
        && !p.starts_with(b"\"")
    {
        return p.to_vec();
    }
    let mut out = vec![b'"'];
    for &c in p {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            c if !(0x20..0x80).contains(&c) => {
                out.extend_from_slice(format!("\\{c:03o}").as_bytes())
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_paths_round_trip() {
        for p in [
            &b"plain/file.bin"[..],
            b"with space",
            b"quote\"d",
            b"new\nline",
            b"\xc3\xa9t\xc3\xa9",
            b"\xff",
        ] {
            assert_eq!(unquote(&quote(p)).unwrap(), p);
        }
        assert_eq!(unquote(b"\"caf\\303\\251\"").unwrap(), "café".as_bytes());
    }

    #[test]
    fn file_changes_are_replaced_by_inline_blobs_and_data_passes_through() {
        let blob = "a".repeat(40);
        let s = format!(
            "commit refs/heads/main\nmark :1\noriginal-oid {o}\ncommitter A <a> 1 +0000\ndata 12\nM 100644 {blob} x\n\nM 100644 {blob} data/x.bin\nM 100644 {blob} other\n\ndone\n",
            o = "b".repeat(40)
        );
        let ch = changes(s.as_bytes()).unwrap();
        // The message's fake M line is data, not a change.
        assert_eq!(ch.len(), 2, "{ch:?}");
        let mut m = HashMap::new();
        m.insert(
            Change {
                blob: blob.clone(),
                path: b"data/x.bin".to_vec(),
            },
            b"NEW".to_vec(),
        );
        let (out, n) = replace(s.as_bytes(), &m).unwrap();
        assert_eq!(n, 1);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("M 100644 inline data/x.bin\ndata 3\nNEW\n"),
            "{out}"
        );
        assert!(out.contains(&format!("M 100644 {blob} other\n")));
        assert!(out.contains(&format!("data 12\nM 100644 {blob} x\n")));
        assert_eq!(original_ids(s.as_bytes()).unwrap()[":1"], "b".repeat(40));
    }
}
