//! Which pointers a revision or the index holds, read with git's plumbing
//! (`ls-tree`, `ls-files --format`, `cat-file --batch`): never by walking
//! the work tree.

use super::path::GitPath;
use super::pointer::{self, Pointer};
use super::{nul_records, Repo};
use anyhow::{bail, Context};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

/// A pointer file at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// Path relative to the top of the work tree, `/`-separated, as git has it.
    pub path: GitPath,
    pub pointer: Pointer,
}

/// A blob small enough to be a pointer, at a path.
struct Candidate {
    path: GitPath,
    blob: String,
}

/// Pointers in the tree of `rev` (a commit or tree-ish).
pub fn at_rev(repo: &Repo, rev: &str) -> anyhow::Result<Vec<Tracked>> {
    at_rev_where(repo, rev, |_| true)
}

/// Pointers in the tree of `rev` at the paths `keep` accepts: only the
/// tree objects are read for the rest (a caller that can rule files out by
/// a look at the work tree costs git nothing for them), then the kept
/// blobs' sizes, then those small enough to be pointers.
pub fn at_rev_where(
    repo: &Repo,
    rev: &str,
    mut keep: impl FnMut(&GitPath) -> bool,
) -> anyhow::Result<Vec<Tracked>> {
    let out = repo
        .git(["ls-tree", "-r", "-z", "--full-tree", rev, "--"])
        .with_context(|| format!("cannot list the files of revision {rev:?}"))?;
    let mut objects = Vec::new();
    for rec in nul_records(&out) {
        // "<mode> SP <type> SP <object> TAB <path>"; the path is bytes, the
        // rest ASCII.
        let Some(tab) = rec.iter().position(|&b| b == b'\t') else {
            continue;
        };
        let (Ok(meta), path) = (std::str::from_utf8(&rec[..tab]), &rec[tab + 1..]) else {
            continue;
        };
        let f: Vec<&str> = meta.split_whitespace().collect();
        if let [mode, "blob", blob] = f[..] {
            let path = GitPath::new(path);
            if is_file_mode(mode) && keep(&path) {
                objects.push((blob.to_string(), path));
            }
        }
    }
    from_objects(repo, objects)
}

/// Pointers staged in the index (stage 0 only).
pub fn in_index(repo: &Repo) -> anyhow::Result<Vec<Tracked>> {
    let out = repo.git([
        "ls-files",
        "-z",
        "--cached",
        "--format=%(objectmode) %(objectname) %(objectsize) %(stage) %(path)",
    ])?;
    let mut cands = Vec::new();
    for rec in nul_records(&out) {
        // Four ASCII fields, then the path's bytes.
        let mut f = rec.splitn(5, |&b| b == b' ');
        let (Some(mode), Some(blob), Some(size), Some(stage), Some(path)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        fn ascii(b: &[u8]) -> &str {
            std::str::from_utf8(b).unwrap_or("")
        }
        let (mode, blob, size, stage) = (ascii(mode), ascii(blob), ascii(size), ascii(stage));
        if stage == "0"
            && is_file_mode(mode)
            && size.parse::<usize>().is_ok_and(|s| s <= pointer::MAX_LEN)
        {
            cands.push(Candidate {
                path: GitPath::new(path),
                blob: blob.to_string(),
            });
        }
    }
    read_pointers(repo, cands)
}

/// Pointers among `(object, path)` pairs (from `git rev-list --objects`):
/// sizes are checked first, so large blobs are never read.
pub fn from_objects(repo: &Repo, objects: Vec<(String, GitPath)>) -> anyhow::Result<Vec<Tracked>> {
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = objects.iter().map(|(o, _)| o.clone()).collect();
    let (mut child, out, writer) = cat_file(
        repo,
        "--batch-check=%(objectname) %(objecttype) %(objectsize)",
        names,
    )?;
    let mut cands = Vec::new();
    for ((blob, path), line) in objects.into_iter().zip(out.lines()) {
        let line = line?;
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [_, "blob", size] = f[..] {
            if size.parse::<usize>().is_ok_and(|s| s <= pointer::MAX_LEN) {
                cands.push(Candidate { path, blob });
            }
        }
    }
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("git cat-file writer panicked"))??;
    let _ = child.wait();
    read_pointers(repo, cands)
}

/// Paths marked skip-worktree (outside a sparse checkout): never fetched or
/// written.
pub fn skip_worktree(repo: &Repo) -> anyhow::Result<HashSet<GitPath>> {
    let out = repo.git(["ls-files", "-z", "-t", "--cached"])?;
    Ok(nul_records(&out)
        .filter_map(|r| r.strip_prefix(b"S "))
        .map(GitPath::new)
        .collect())
}

fn is_file_mode(mode: &str) -> bool {
    mode == "100644" || mode == "100755"
}

type Writer = std::thread::JoinHandle<std::io::Result<()>>;

/// `git cat-file MODE` fed `names`, one per line, from another thread (git's
/// output must be read meanwhile): the child, its output, the feeding thread.
fn cat_file(
    repo: &Repo,
    mode: &str,
    names: Vec<String>,
) -> anyhow::Result<(Child, BufReader<ChildStdout>, Writer)> {
    let mut child = Command::new("git")
        .args(["cat-file", mode])
        .current_dir(&repo.work_tree)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run git cat-file")?;
    let mut stdin = child.stdin.take().context("git cat-file has no stdin")?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        for n in names {
            writeln!(stdin, "{n}")?;
        }
        Ok(())
    });
    let out = BufReader::new(child.stdout.take().context("git cat-file has no stdout")?);
    Ok((child, out, writer))
}

/// Reads candidate blobs through one `git cat-file --batch` and keeps those
/// that are pointers.
fn read_pointers(repo: &Repo, cands: Vec<Candidate>) -> anyhow::Result<Vec<Tracked>> {
    if cands.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = cands.iter().map(|c| c.blob.clone()).collect();
    let (mut child, mut out, writer) = cat_file(repo, "--batch", names)?;
    let mut found = Vec::new();
    let mut header = String::new();
    for c in cands {
        header.clear();
        out.read_line(&mut header)?;
        // "<oid> <type> <size>\n<content>\n", or "<name> missing\n".
        let f: Vec<&str> = header.split_whitespace().collect();
        let size = match f[..] {
            [_, "blob", size] => size.parse::<usize>().context("bad git cat-file output")?,
            _ => bail!(
                "git cannot read blob {} of {}: {}",
                c.blob,
                c.path,
                header.trim()
            ),
        };
        let mut body = vec![0u8; size + 1];
        out.read_exact(&mut body)?;
        body.pop();
        if let Some(p) = Pointer::parse(&body) {
            found.push(Tracked {
                path: c.path,
                pointer: p,
            });
        }
    }
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("git cat-file writer panicked"))??;
    drop(out);
    let _ = child.wait();
    Ok(found)
}
