//! What a prune must keep of a git repository's content, and what git's
//! history knows (and may go when nothing keeps it). Repositories that use
//! a store are recorded in its `git-repos` file (one work tree per line) by
//! `hoard install` and by the first clean of each filter process.
//!
//! Kept (as git-lfs's prune keeps them, and what it once forgot: the index):
//! HEAD, the index, every local branch and tag, each stash (its work tree,
//! index and base), every worktree's HEAD and index, every commit not on a
//! remote-tracking branch (unpushed), and with a window every commit newer
//! than it; with no hoard remote configured, all of the history (pushed
//! content would live nowhere else). Known: everything reachable from any
//! ref or reflog.

use super::path::GitPath;
use super::{tree, Repo};
use anyhow::Context;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

const REPOS_FILE: &str = "git-repos";

/// Records `repo` as using the store in `store_dir` (once).
pub fn record(store_dir: &Path, repo: &Repo) -> anyhow::Result<()> {
    let line = repo.work_tree.to_string_lossy().into_owned();
    if line.contains('\n') || recorded(store_dir).contains(&repo.work_tree) {
        return Ok(());
    }
    let path = store_dir.join(REPOS_FILE);
    std::fs::create_dir_all(store_dir)
        .with_context(|| format!("cannot create {}", store_dir.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // One write of one line: appends from concurrent filters do not mix.
    f.write_all(format!("{line}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The recorded repositories, each once.
pub fn recorded(store_dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(store_dir.join(REPOS_FILE)).unwrap_or_default();
    let mut seen = HashSet::new();
    text.lines()
        .filter(|l| !l.is_empty() && seen.insert(l.to_string()))
        .map(PathBuf::from)
        .collect()
}

/// The files a prune must keep and the files git knows, of one repository.
#[derive(Debug, Default)]
pub struct GitRoots {
    pub live: HashSet<[u8; 32]>,
    pub known: HashSet<[u8; 32]>,
}

/// Roots of `repo`; `within` (seconds) keeps every commit that recent.
/// Without a hoard remote, pushed commits' content lives nowhere else:
/// then all of the history stays.
pub fn of(repo: &Repo, within: Option<u64>, has_remote: bool) -> anyhow::Result<GitRoots> {
    let mut r = GitRoots::default();
    let has_head = repo.git(["rev-parse", "--verify", "-q", "HEAD"]).is_ok();
    let mut tips: Vec<String> = vec!["--branches".into(), "--tags".into()];
    if has_head {
        tips.push("HEAD".into());
    }
    for stash in lines(
        &repo
            .git(["log", "-g", "--format=%H", "refs/stash", "--"])
            .unwrap_or_default(),
    ) {
        tips.push(format!("{stash}^@"));
        tips.push(stash);
    }
    let mut worktrees = Vec::new();
    let porcelain = repo
        .git(["worktree", "list", "--porcelain"])
        .unwrap_or_default();
    for l in lines(&porcelain) {
        if let Some(p) = l.strip_prefix("worktree ") {
            worktrees.push(PathBuf::from(p));
        } else if let Some(h) = l.strip_prefix("HEAD ") {
            tips.push(h.to_string());
        }
    }
    let add = |set: &mut HashSet<[u8; 32]>, args: Vec<String>| -> anyhow::Result<()> {
        for t in tree::from_objects(repo, objects(repo, &args)?)? {
            set.insert(t.pointer.oid);
        }
        Ok(())
    };
    let mut no_walk = vec!["--no-walk".to_string()];
    no_walk.extend(tips);
    add(&mut r.live, no_walk)?;
    let mut unpushed = vec!["--branches".to_string(), "--tags".into()];
    if has_head {
        unpushed.push("HEAD".into());
    }
    unpushed.extend(["--not".into(), "--remotes".into()]);
    add(&mut r.live, unpushed)?;
    if let Some(w) = within {
        let since = hoard_proto::now_ns() / 1_000_000_000 - w as i64;
        add(
            &mut r.live,
            vec!["--all".into(), format!("--since={since}")],
        )?;
    }
    add(&mut r.known, vec!["--all".into(), "--reflog".into()])?;
    for wt in std::iter::once(repo.work_tree.clone()).chain(worktrees) {
        if let Ok(other) = Repo::discover_at(&wt) {
            for t in tree::in_index(&other)? {
                r.live.insert(t.pointer.oid);
            }
        }
    }
    r.known.extend(r.live.iter().copied());
    if !has_remote {
        r.live.extend(r.known.iter().copied());
    }
    Ok(r)
}

fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `git rev-list --objects ARGS`: (object, path) of every tree and blob.
fn objects(repo: &Repo, args: &[String]) -> anyhow::Result<Vec<(String, GitPath)>> {
    let mut a = vec!["rev-list".to_string(), "--objects".into()];
    a.extend(args.iter().cloned());
    let out = match repo.git(&a) {
        Ok(o) => o,
        // An empty repository has no revisions to list.
        Err(_) if args.iter().all(|x| x.starts_with("--")) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(out
        .split(|&b| b == b'\n')
        .filter_map(|l| {
            let sp = l.iter().position(|&b| b == b' ')?;
            let oid = std::str::from_utf8(&l[..sp]).ok()?;
            Some((oid.to_string(), GitPath::new(&l[sp + 1..])))
        })
        .collect())
}
