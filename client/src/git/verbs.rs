//! `hoard pull`, `checkout`, `ls-files`, `status`, and what the hooks run.

use super::fetch;
use super::materialize::{self, Pending, Skip};
use super::path::GitPath;
use super::pointer::{self, Pointer};
use super::tree::{self, Tracked};
use super::Repo;
use crate::connect::Client;
use crate::ui;
use anyhow::{bail, Context};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use hoard_proto::v1::{ReadRequest, RememberRequest, Remembered};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::os::unix::fs::MetadataExt;
use tokio::task::JoinSet;

/// Files materialized at once.
const PARALLEL: usize = 4;

/// `--include` / `--exclude` (or `hoard.fetchinclude` / `hoard.fetchexclude`).
///
/// A pattern without `/` matches a file name at any depth (`*.csv`); one
/// with `/` matches from the top of the repository, and a directory
/// matches everything under it (`data/train` = `data/train/**`).
pub struct PathFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl PathFilter {
    pub fn new(repo: &Repo, include: &[String], exclude: &[String]) -> anyhow::Result<PathFilter> {
        let from_config = |key: &str| -> Vec<String> {
            repo.config(key)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let include = if include.is_empty() {
            from_config("hoard.fetchinclude")
        } else {
            include.to_vec()
        };
        let exclude = if exclude.is_empty() {
            from_config("hoard.fetchexclude")
        } else {
            exclude.to_vec()
        };
        Ok(PathFilter {
            include: globs(&include)?,
            exclude: globs(&exclude)?,
        })
    }

    pub fn matches(&self, path: &GitPath) -> bool {
        let path = path.as_path();
        self.include.as_ref().is_none_or(|g| g.is_match(path))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(path))
    }
}

fn globs(patterns: &[String]) -> anyhow::Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim_start_matches('/').trim_end_matches('/');
        let forms = if p.contains('/') {
            vec![p.to_string(), format!("{p}/**")]
        } else {
            vec![format!("**/{p}"), format!("**/{p}/**")]
        };
        for f in forms {
            b.add(
                GlobBuilder::new(&f)
                    .literal_separator(true)
                    .build()
                    .with_context(|| format!("bad pattern {p:?}"))?,
            );
        }
    }
    Ok(Some(b.build()?))
}

/// What a pull or checkout did.
#[derive(Debug, Default)]
pub struct PullReport {
    pub selected: usize,
    pub missing: Vec<String>,
    pub materialized: usize,
    pub bytes: u64,
    /// Locally modified or already materialized: left alone.
    pub kept: usize,
    /// Gone from the work tree (deleted or not checked out).
    pub absent: usize,
    pub errors: Vec<(String, String)>,
}

/// A further choice of paths (the hook's: files that may still hold their
/// pointer).
pub type Only<'a> = &'a dyn Fn(&GitPath) -> bool;

/// `hoard pull` (fetch, then materialize) and `hoard checkout` (materialize
/// what is already local): the selected pointers of `rev`; with `only`,
/// just those it accepts (the rest are never read).
pub async fn pull(
    client: &mut Client,
    paths: &hoard_proto::paths::Paths,
    repo: &Repo,
    rev: &str,
    filter: &PathFilter,
    fetch_first: bool,
    only: Option<Only<'_>>,
) -> anyhow::Result<PullReport> {
    let skip = tree::skip_worktree(repo)?;
    let selected: Vec<Tracked> = tree::at_rev_where(repo, rev, |path| {
        filter.matches(path) && !skip.contains(path) && only.is_none_or(|o| o(path))
    })?;
    let mut report = PullReport {
        selected: selected.len(),
        ..PullReport::default()
    };
    let pointers: Vec<Pointer> = selected.iter().map(|t| t.pointer).collect();
    let present = if fetch_first {
        fetch::fetch(client, paths, &pointers).await?.present
    } else {
        fetch::local(client, &pointers).await?.present
    };
    // The work tree shows HEAD: only a pull of HEAD's commit writes into it.
    let head = repo
        .git(["rev-parse", "--verify", "-q", "HEAD^{commit}"])
        .ok();
    let target = repo
        .git(["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")])
        .ok();
    let into_work_tree = head.is_some() && head == target;
    let mut jobs = Vec::new();
    for (t, here) in selected.into_iter().zip(present) {
        if !here {
            report.missing.push(t.path.to_string());
            continue;
        }
        if !into_work_tree {
            continue;
        }
        let abs = match materialize::safe_path(&repo.work_tree, &t.path) {
            Ok(a) => a,
            Err(e) => {
                report.errors.push((t.path.to_string(), format!("{e:#}")));
                continue;
            }
        };
        match materialize::holds_pointer(&abs, &t.pointer) {
            Ok(was) => jobs.push((t, abs, was)),
            Err(Skip::Absent) => report.absent += 1,
            Err(Skip::NotPointer) => report.kept += 1,
        }
    }
    let mut set = JoinSet::new();
    let mut remember = Vec::new();
    let mut written = Vec::new();
    let mut jobs = jobs.into_iter();
    loop {
        while set.len() < PARALLEL {
            let Some((t, abs, was)) = jobs.next() else {
                break;
            };
            let mut c = client.clone();
            set.spawn(async move {
                let r = write_one(&mut c, &t.pointer, &abs, was).await;
                (t, abs, r)
            });
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        let (t, abs, r) = done.context("a materialization task failed")?;
        match r {
            Ok(m) => {
                report.materialized += 1;
                report.bytes += t.pointer.size;
                written.push(t.path.clone());
                if let Some(path) = abs.to_str() {
                    remember.push(Remembered {
                        path: path.to_string(),
                        oid: t.pointer.oid.to_vec(),
                        size: m.len(),
                        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                        ino: m.ino(),
                        // After the stat `commit` took: what changed since
                        // moved the mtime off the one set back.
                        known_at_ns: hoard_proto::now_ns(),
                    });
                }
            }
            Err(e) => report.errors.push((t.path.to_string(), format!("{e:#}"))),
        }
    }
    if !remember.is_empty() {
        // So git's refresh below (which cleans each file again) reads
        // nothing twice: the daemon vouches for what was just written.
        let _ = client.remember(RememberRequest { files: remember }).await;
    }
    if !written.is_empty() {
        // git's index holds the pointer files' size and times; a changed size
        // reads as "modified" without a look at the content, so the entries
        // are updated (clean gives the same pointer blob).
        update_index(repo, &written)?;
    }
    Ok(report)
}

/// `git update-index` for `paths`: re-reads them through the clean filter
/// and records their current stat data.
fn update_index(repo: &Repo, paths: &[GitPath]) -> anyhow::Result<()> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("git")
        .args(["update-index", "-q", "-z", "--stdin"])
        .current_dir(&repo.work_tree)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot run git update-index")?;
    let mut stdin = child
        .stdin
        .take()
        .context("git update-index has no stdin")?;
    for p in paths {
        stdin.write_all(p.as_bytes())?;
        stdin.write_all(b"\0")?;
    }
    drop(stdin);
    let st = child.wait()?;
    if !st.success() {
        bail!("`git update-index` failed ({st}); `git status` may show the written files as modified until `git add` them");
    }
    Ok(())
}

async fn write_one(
    client: &mut Client,
    p: &Pointer,
    abs: &std::path::Path,
    was: std::fs::Metadata,
) -> anyhow::Result<std::fs::Metadata> {
    let mut stream = client
        .read(ReadRequest {
            oid: p.oid.to_vec(),
            offset: 0,
            length: None,
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let mut w = Pending::create(abs, was)?;
    while let Some(m) = stream.message().await.map_err(ui::status_error)? {
        w.write(&m.data)?;
    }
    w.commit(p)
}

pub fn print_pull(report: &PullReport, json: bool, verb: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            json!({
                "type": "summary",
                "selected": report.selected,
                "materialized": report.materialized,
                "bytes": report.bytes,
                "missing": report.missing,
                "kept": report.kept,
                "absent": report.absent,
                "errors": report.errors.iter().map(|(p, m)| json!({"path": p, "message": m})).collect::<Vec<_>>(),
            })
        )?;
    } else {
        for (p, m) in &report.errors {
            eprintln!("hoard: {p}: {m}");
        }
        for p in report.missing.iter().take(20) {
            eprintln!("hoard: {p}: {}", fetch::missing_hint(p));
        }
        if report.missing.len() > 20 {
            eprintln!("hoard: … and {} more missing", report.missing.len() - 20);
        }
        writeln!(
            out,
            "{verb}: {} of {} selected files written ({}); {} missing, {} left as they were (modified or already there), {} not in the work tree",
            report.materialized,
            report.selected,
            ui::bytes(report.bytes),
            report.missing.len(),
            report.kept,
            report.absent
        )?;
    }
    if !report.errors.is_empty() {
        bail!(
            "{} files could not be written (named above)",
            report.errors.len()
        );
    }
    Ok(())
}

/// `hoard ls-files [REV]`: pointers at REV (default HEAD; the index before
/// the first commit) and whether their content is local.
pub async fn ls_files(
    client: &mut Client,
    repo: &Repo,
    rev: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let tracked = match rev {
        Some(r) => tree::at_rev(repo, r)?,
        None if repo.git(["rev-parse", "--verify", "-q", "HEAD"]).is_ok() => {
            tree::at_rev(repo, "HEAD")?
        }
        None => tree::in_index(repo)?,
    };
    let pointers: Vec<Pointer> = tracked.iter().map(|t| t.pointer).collect();
    let present = fetch::local(client, &pointers).await?.present;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (t, here) in tracked.iter().zip(present) {
        if json {
            writeln!(
                out,
                "{}",
                json!({"path": t.path, "oid": t.pointer.oid_string(), "size": t.pointer.size, "present": here})
            )?;
        } else {
            writeln!(
                out,
                "{} {} {:>12} {}",
                t.pointer.oid_string(),
                if here { "*" } else { "-" },
                t.pointer.size,
                t.path
            )?;
        }
    }
    Ok(())
}

/// `hoard status`: tracked files staged for the next commit, modified in
/// the work tree, missing from the local store, or still pointers in the
/// work tree although their content is here.
pub async fn status(client: &mut Client, repo: &Repo, json: bool) -> anyhow::Result<()> {
    let index = tree::in_index(repo)?;
    let head: HashMap<GitPath, Pointer> =
        if repo.git(["rev-parse", "--verify", "-q", "HEAD"]).is_ok() {
            tree::at_rev(repo, "HEAD")?
                .into_iter()
                .map(|t| (t.path, t.pointer))
                .collect()
        } else {
            HashMap::new()
        };
    let staged: Vec<&Tracked> = index
        .iter()
        .filter(|t| head.get(&t.path) != Some(&t.pointer))
        .collect();
    let modified: Vec<GitPath> = {
        let out = repo.git(["diff", "--name-only", "-z"])?;
        let tracked: HashSet<&GitPath> = index.iter().map(|t| &t.path).collect();
        super::nul_records(&out)
            .map(GitPath::new)
            .filter(|p| tracked.contains(p))
            .collect()
    };
    let pointers: Vec<Pointer> = index.iter().map(|t| t.pointer).collect();
    let present = fetch::local(client, &pointers).await?.present;
    let mut missing = Vec::new();
    let mut unmaterialized = Vec::new();
    for (t, here) in index.iter().zip(present) {
        if !here {
            missing.push(t);
        } else if let Ok(abs) = materialize::safe_path(&repo.work_tree, &t.path) {
            if materialize::holds_pointer(&abs, &t.pointer).is_ok() {
                unmaterialized.push(t);
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        let list = |v: &[&Tracked]| {
            v.iter()
                .map(|t| json!({"path": t.path, "oid": t.pointer.oid_string(), "size": t.pointer.size}))
                .collect::<Vec<_>>()
        };
        writeln!(
            out,
            "{}",
            json!({
                "staged": list(&staged),
                "modified": modified,
                "missing": list(&missing),
                "pointers_in_work_tree": list(&unmaterialized),
            })
        )?;
        return Ok(());
    }
    let section = |out: &mut dyn Write, title: &str, items: Vec<String>| -> std::io::Result<()> {
        if !items.is_empty() {
            writeln!(out, "{title}")?;
            for i in items {
                writeln!(out, "  {i}")?;
            }
        }
        Ok(())
    };
    section(
        &mut out,
        "To be committed (content in the store, pointer staged):",
        staged
            .iter()
            .map(|t| format!("{}  ({})", t.path, ui::bytes(t.pointer.size)))
            .collect(),
    )?;
    section(
        &mut out,
        "Modified in the work tree, not staged:",
        modified.iter().map(|p| p.to_string()).collect(),
    )?;
    section(
        &mut out,
        "Missing from the local store (`hoard pull` fetches them):",
        missing
            .iter()
            .map(|t| format!("{}  {}", t.path, t.pointer.oid_string()))
            .collect(),
    )?;
    section(
        &mut out,
        "Still pointers in the work tree, content here (`hoard checkout` writes them):",
        unmaterialized.iter().map(|t| t.path.to_string()).collect(),
    )?;
    if staged.is_empty() && modified.is_empty() && missing.is_empty() && unmaterialized.is_empty() {
        writeln!(
            out,
            "{} tracked files, all present and up to date",
            index.len()
        )?;
    }
    Ok(())
}

// ---- hooks -----------------------------------------------------------------

const NULL_OID: &str = "0000000000000000000000000000000000000000";

/// post-checkout PREV NEW BRANCH_FLAG / post-merge SQUASH: writes the
/// content of pointers that changed and whose content is local now (smudge
/// left them as pointers when it was not).
pub async fn hook_after_update(
    client: &mut Client,
    paths: &hoard_proto::paths::Paths,
    repo: &Repo,
    prev: Option<&str>,
) -> anyhow::Result<()> {
    if repo.git(["rev-parse", "--verify", "-q", "HEAD"]).is_err() {
        return Ok(());
    }
    let changed: Option<HashSet<GitPath>> = match prev {
        Some(p) if p != NULL_OID && !p.chars().all(|c| c == '0') => {
            let out = repo.git(["diff", "--name-only", "-z", p, "HEAD", "--"])?;
            Some(super::nul_records(&out).map(GitPath::new).collect())
        }
        _ => None,
    };
    if changed.as_ref().is_some_and(|o| o.is_empty()) {
        return Ok(());
    }
    // Only a work-tree file no bigger than a pointer can still be one: the
    // files smudge wrote (all of them, normally) are ruled out by one lstat
    // each, and their blobs are never read.
    let still_pointer = |path: &GitPath| {
        changed.as_ref().is_none_or(|c| c.contains(path))
            && std::fs::symlink_metadata(repo.work_tree.join(path.as_path()))
                .is_ok_and(|m| m.is_file() && m.len() <= pointer::MAX_LEN as u64)
    };
    let filter = PathFilter::new(repo, &[], &[])?;
    let report = pull(
        client,
        paths,
        repo,
        "HEAD",
        &filter,
        false,
        Some(&still_pointer),
    )
    .await?;
    if report.materialized > 0 {
        eprintln!(
            "hoard: wrote {} files whose content is now available",
            report.materialized
        );
    }
    for (p, m) in &report.errors {
        eprintln!("hoard: {p}: {m}");
    }
    Ok(())
}

/// post-commit: every pointer the new commit changed must have its content
/// in the store; say so loudly if one does not.
pub async fn hook_post_commit(client: &mut Client, repo: &Repo) -> anyhow::Result<()> {
    let out = repo.git([
        "diff-tree",
        "-r",
        "-z",
        "--no-commit-id",
        "--root",
        "--name-only",
        "HEAD",
    ])?;
    let changed: HashSet<GitPath> = super::nul_records(&out).map(GitPath::new).collect();
    if changed.is_empty() {
        return Ok(());
    }
    // Only the changed paths' blobs are read.
    let tracked = tree::at_rev_where(repo, "HEAD", |path| changed.contains(path))?;
    let missing = not_local(client, &tracked).await?;
    for t in &missing {
        eprintln!(
            "hoard: warning: the commit references {} for {} but the store does not hold it; `hoard add {}` if you still have the file",
            t.pointer.oid_string(),
            t.path,
            t.path
        );
    }
    Ok(())
}

/// The tracked files whose content the local store lacks.
async fn not_local<'t>(
    client: &mut Client,
    tracked: &'t [Tracked],
) -> anyhow::Result<Vec<&'t Tracked>> {
    let pointers: Vec<Pointer> = tracked.iter().map(|t| t.pointer).collect();
    let present = fetch::local(client, &pointers).await?.present;
    Ok(tracked
        .iter()
        .zip(present)
        .filter(|(_, p)| !p)
        .map(|(t, _)| t)
        .collect())
}

/// pre-push REMOTE URL, refs on stdin: the content of every pointer in the
/// commits being pushed must be here (so it can be sent). Until a hoard
/// remote is configured, content stays in this store.
pub async fn hook_pre_push(
    client: &mut Client,
    paths: &hoard_proto::paths::Paths,
    repo: &Repo,
    remote: &str,
) -> anyhow::Result<()> {
    let mut revs = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [_, local_sha, _, remote_sha] = f[..] {
            if local_sha.chars().all(|c| c == '0') {
                continue; // a deletion pushes nothing
            }
            revs.push(local_sha.to_string());
            if !remote_sha.chars().all(|c| c == '0') {
                revs.push(format!("^{remote_sha}"));
            }
        }
    }
    push_content(client, paths, repo, remote, revs)
        .await
        .map(|_| ())
}

/// Sends to the hoard remote named like git remote `remote` (else the
/// default one) the content of every pointer in the commits `revs` names
/// (`rev-list` arguments) that `remote`'s tracking refs do not hold: what
/// must be on the hub before a ref naming those commits is pushed.
pub async fn push_content(
    client: &mut Client,
    paths: &hoard_proto::paths::Paths,
    repo: &Repo,
    remote: &str,
    revs: Vec<String>,
) -> anyhow::Result<(u64, u64)> {
    if revs.is_empty() {
        return Ok((0, 0));
    }
    let mut args = vec!["rev-list".to_string(), "--objects".to_string()];
    args.extend(revs);
    // Commits the remote already has are not pushed again.
    args.push("--not".into());
    args.push(format!("--remotes={remote}"));
    let out = repo.git(&args)?;
    // "<object> SP <path>" per line; the path is bytes.
    let objects: Vec<(String, GitPath)> = out
        .split(|&b| b == b'\n')
        .filter_map(|l| {
            let sp = l.iter().position(|&b| b == b' ')?;
            let oid = std::str::from_utf8(&l[..sp]).ok()?;
            Some((oid.to_string(), GitPath::new(&l[sp + 1..])))
        })
        .collect();
    let tracked = tree::from_objects(repo, objects)?;
    let missing = not_local(client, &tracked).await?;
    if !missing.is_empty() {
        for t in missing.iter().take(20) {
            eprintln!(
                "hoard: {}: content {} is not in the local store",
                t.path,
                t.pointer.oid_string()
            );
        }
        bail!(
            "{} files in the pushed commits have no content here, so nobody could fetch it; `hoard add` them (or push with --no-verify to push the pointers anyway)",
            missing.len()
        );
    }
    // The hoard remote named like the git remote, else the default one.
    let remotes = crate::remote::Remotes::load(paths).map_err(anyhow::Error::msg)?;
    let Some((name, r)) = remotes.pick(Some(remote)).or_else(|| remotes.pick(None)) else {
        if !tracked.is_empty() {
            eprintln!("hoard: no hoard remote is configured, so the content of {} files stays in this store; `hoard remote add origin URL --token TOKEN` to share it", tracked.len());
        }
        return Ok((0, 0));
    };
    let files = tracked
        .iter()
        .map(|t| (t.pointer.oid.to_vec(), Some(t.pointer.size)))
        .collect();
    let s = crate::remote::sync(client, &r, true, files, false).await?;
    eprintln!(
        "hoard: pushed {} files to {name} ({} chunks, {}; {} chunks it already had)",
        s.files,
        s.chunks_sent,
        ui::bytes(s.bytes),
        s.chunks_skipped
    );
    Ok((s.files, s.bytes))
}
