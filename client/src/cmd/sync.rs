//! `hoard sync`: the one button. In a git work tree: stage, commit, fetch,
//! merge (or rebase), push the content and then the branch. For a dataset
//! (`hoard sync NAME`): snapshot, fetch the remote's head, fast-forward or
//! resolve, push.
//!
//! A conflict is resolved only when asked (`--ours` keeps this side,
//! `--theirs` takes the other); otherwise everything goes back to exactly
//! where it was before the sync (HEAD, index, work tree) and the
//! conflicting paths are listed with the commands that resolve them. A
//! failure after the commit (network, a refused push) leaves a commit the
//! next sync continues from; the branch is pushed only after its content.

use crate::connect::Client;
use crate::git::pointer::Pointer;
use crate::git::{self, verbs, Repo};
use crate::ui;
use anyhow::{bail, Context};
use hoard_proto::paths::Paths;
use serde_json::json;
use std::path::PathBuf;

pub struct Args {
    pub message: Option<String>,
    pub ours: bool,
    pub theirs: bool,
    pub rebase: bool,
    pub remote: Option<String>,
    pub json: bool,
}

/// What a sync did, for `--json` and the closing line.
#[derive(Default)]
struct Report {
    committed: Option<String>,
    changed: usize,
    pulled_commits: usize,
    pushed_commits: usize,
    pushed_files: u64,
    pushed_bytes: u64,
    conflicts: Vec<String>,
    resolved: Option<&'static str>,
}

fn out(repo: &Repo, args: &[&str]) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&repo.git(args)?).trim().to_string())
}

/// Runs git, returning whether it succeeded (its stderr is kept for the
/// message when it did not).
fn try_git(repo: &Repo, args: &[&str]) -> (bool, String) {
    match std::process::Command::new("git")
        .args(args)
        .current_dir(&repo.work_tree)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// The state before a sync, to go back to.
struct Before {
    /// None on a branch with no commit yet.
    head: Option<String>,
    index: PathBuf,
    saved: PathBuf,
}

impl Before {
    fn save(repo: &Repo) -> anyhow::Result<Before> {
        let head = out(repo, &["rev-parse", "--verify", "-q", "HEAD"]).ok();
        let index = PathBuf::from(out(
            repo,
            &["rev-parse", "--path-format=absolute", "--git-path", "index"],
        )?);
        let saved = index.with_file_name("hoard-sync-index");
        if index.exists() {
            std::fs::copy(&index, &saved)
                .with_context(|| format!("cannot save {}", index.display()))?;
        }
        Ok(Before { head, index, saved })
    }

    /// HEAD, the index and the work tree as they were (the work tree's
    /// files were only ever committed, never changed, by the sync).
    fn restore(&self, repo: &Repo) -> anyhow::Result<()> {
        match &self.head {
            Some(h) => repo.git(["reset", "-q", "--soft", h])?,
            None => repo.git(["update-ref", "-d", "HEAD"])?,
        };
        if self.saved.exists() {
            std::fs::copy(&self.saved, &self.index)?;
        }
        let _ = repo.git(["update-index", "-q", "--refresh"]);
        Ok(())
    }
}

impl Drop for Before {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.saved);
    }
}

/// A conflicted path, described: for pointers, both sides' ids and sizes.
fn describe_conflict(repo: &Repo, path: &str) -> String {
    let stages = repo
        .git(["ls-files", "-u", "-z", "--", path])
        .unwrap_or_default();
    let mut sides = Vec::new();
    for rec in git::nul_records(&stages) {
        // `<mode> <blob> <stage>\t<path>`
        let head = String::from_utf8_lossy(rec.split(|&c| c == b'\t').next().unwrap_or_default())
            .to_string();
        let w: Vec<&str> = head.split(' ').collect();
        let (Some(blob), Some(stage)) = (w.get(1), w.get(2)) else {
            continue;
        };
        let side = match *stage {
            "2" => "yours",
            "3" => "theirs",
            _ => continue,
        };
        let bytes = repo.git(["cat-file", "blob", blob]).unwrap_or_default();
        sides.push(match Pointer::parse(&bytes) {
            Some(p) => format!("{side}: {} ({})", p.oid_string(), ui::bytes(p.size)),
            None => format!("{side}: {} bytes of text", bytes.len()),
        });
    }
    if sides.is_empty() {
        path.to_string()
    } else {
        format!("{path} — {}", sides.join("; "))
    }
}

fn conflicted(repo: &Repo) -> anyhow::Result<Vec<String>> {
    // -z: names as they are (not C-quoted), so they can be given back to git.
    let raw = repo.git(["diff", "--name-only", "-z", "--diff-filter=U"])?;
    Ok(git::nul_records(&raw)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect())
}

/// Takes `side` (`--ours` / `--theirs`) of each conflicting path and
/// commits the merge; a side that deleted a path deletes it.
fn resolve(repo: &Repo, side: &str, conflicts: &[String]) -> anyhow::Result<()> {
    for p in conflicts {
        if repo.git(["checkout", side, "--", p]).is_ok() {
            repo.git(["add", "--", p])?;
        } else {
            // That side has no version of it (modify/delete).
            repo.git(["rm", "-q", "--", p])?;
        }
    }
    repo.git(["commit", "-q", "--no-edit"])?;
    Ok(())
}

/// `hoard sync` in a git work tree.
pub async fn git_sync(mut client: Client, paths: &Paths, a: Args) -> anyhow::Result<()> {
    let repo = Repo::discover()?;
    let git_dir = PathBuf::from(out(
        &repo,
        &["rev-parse", "--path-format=absolute", "--git-dir"],
    )?);
    if git_dir.join("MERGE_HEAD").exists()
        || git_dir.join("rebase-merge").exists()
        || git_dir.join("rebase-apply").exists()
    {
        bail!("a merge or rebase is in progress; finish it (or `git merge --abort` / `git rebase --abort`) before `hoard sync`");
    }
    let branch = out(&repo, &["symbolic-ref", "--short", "-q", "HEAD"])
        .context("HEAD is detached: `git switch BRANCH` before `hoard sync`")?;
    let remote = a
        .remote
        .clone()
        .or_else(|| repo.config(&format!("branch.{branch}.remote")))
        .unwrap_or_else(|| "origin".to_string());
    let upstream = repo
        .config(&format!("branch.{branch}.merge"))
        .and_then(|m| m.strip_prefix("refs/heads/").map(str::to_owned))
        .unwrap_or_else(|| branch.clone());
    let before = Before::save(&repo)?;
    let mut r = Report::default();

    // 1. Stage and commit what changed.
    repo.git(["add", "-A"])?;
    let changed = out(&repo, &["diff", "--cached", "--name-status"])?;
    r.changed = changed.lines().count();
    if r.changed > 0 {
        let message = a
            .message
            .clone()
            .unwrap_or_else(|| generated_message(&changed));
        if let Err(e) = repo.git(["commit", "-q", "-m", &message]) {
            before.restore(&repo)?;
            return Err(e.context("cannot commit; nothing was changed"));
        }
        r.committed = Some(out(&repo, &["rev-parse", "HEAD"])?);
    }

    // 2. Fetch and merge (or rebase).
    let (fetched, msg) = try_git(&repo, &["fetch", "-q", &remote]);
    if !fetched {
        bail!(
            "cannot fetch from {remote}: {}{}; run `hoard sync` again once it is reachable",
            msg.trim(),
            if r.committed.is_some() {
                " (your changes are committed locally)"
            } else {
                ""
            }
        );
    }
    let tracking = format!("refs/remotes/{remote}/{upstream}");
    let has_remote = try_git(&repo, &["rev-parse", "--verify", "-q", &tracking]).0;
    if has_remote && !try_git(&repo, &["merge-base", "--is-ancestor", &tracking, "HEAD"]).0 {
        r.pulled_commits = out(
            &repo,
            &["rev-list", "--count", &format!("HEAD..{tracking}")],
        )?
        .parse()
        .unwrap_or(0);
        integrate(&repo, &a, &tracking, &before, &mut r)?;
    }

    // 3. The content, then the branch.
    let mut revs = vec!["HEAD".to_string()];
    if has_remote {
        revs.push(format!("^{tracking}"));
        r.pushed_commits = out(
            &repo,
            &["rev-list", "--count", &format!("{tracking}..HEAD")],
        )?
        .parse()
        .unwrap_or(0);
    } else {
        r.pushed_commits = out(&repo, &["rev-list", "--count", "HEAD"])?
            .parse()
            .unwrap_or(0);
    }
    if r.pushed_commits > 0 {
        (r.pushed_files, r.pushed_bytes) =
            verbs::push_content(&mut client, paths, &repo, &remote, revs)
                .await
                .context(
                    "cannot push the content; the branch was not pushed (run `hoard sync` again)",
                )?;
        let (pushed, msg) = try_git(
            &repo,
            &[
                "push",
                "-q",
                &remote,
                &format!("HEAD:refs/heads/{upstream}"),
            ],
        );
        if !pushed {
            bail!(
                "the content is on the hub but `git push {remote}` failed: {}; run `hoard sync` again",
                msg.trim()
            );
        }
    }
    print_report(&r, a.json);
    Ok(())
}

/// Merges (or rebases onto) `tracking`; resolves conflicts as asked, or
/// puts everything back and says how to resolve them.
fn integrate(
    repo: &Repo,
    a: &Args,
    tracking: &str,
    before: &Before,
    r: &mut Report,
) -> anyhow::Result<()> {
    let (ok, msg) = if a.rebase {
        try_git(repo, &["rebase", "-q", tracking])
    } else {
        try_git(repo, &["merge", "-q", "--no-edit", tracking])
    };
    if ok {
        return Ok(());
    }
    let conflicts = conflicted(repo)?;
    if conflicts.is_empty() {
        let _ = try_git(
            repo,
            &[if a.rebase { "rebase" } else { "merge" }, "--abort"],
        );
        before.restore(repo)?;
        bail!(
            "git could not {} {tracking}: {}; nothing was changed",
            if a.rebase { "rebase onto" } else { "merge" },
            msg.trim()
        );
    }
    let side = if a.ours {
        Some("--ours")
    } else if a.theirs {
        Some("--theirs")
    } else {
        None
    };
    match side {
        Some(side) if !a.rebase => {
            if let Err(e) = resolve(repo, side, &conflicts) {
                let _ = try_git(repo, &["merge", "--abort"]);
                before.restore(repo)?;
                return Err(e.context("cannot resolve the conflicts; nothing was changed"));
            }
            r.conflicts = conflicts;
            r.resolved = Some(if a.ours { "ours" } else { "theirs" });
            Ok(())
        }
        _ => {
            let described: Vec<String> = conflicts
                .iter()
                .map(|p| describe_conflict(repo, p))
                .collect();
            let _ = try_git(
                repo,
                &[if a.rebase { "rebase" } else { "merge" }, "--abort"],
            );
            before.restore(repo)?;
            let list = described
                .iter()
                .map(|d| format!("\n  {d}"))
                .collect::<String>();
            Err(ui::status_error(tonic::Status::failed_precondition(format!(
                "{} path(s) changed on both sides; nothing was changed here:{list}\nkeep yours: `hoard sync --ours`; take theirs: `hoard sync --theirs`{}",
                conflicts.len(),
                if a.rebase { " (without --rebase)" } else { "" }
            ))))
        }
    }
}

fn generated_message(name_status: &str) -> String {
    let names: Vec<&str> = name_status
        .lines()
        .filter_map(|l| l.split('\t').nth(1))
        .collect();
    let shown = names.iter().take(8).copied().collect::<Vec<_>>().join(", ");
    let more = names.len().saturating_sub(8);
    format!(
        "hoard sync: {} file(s) changed: {shown}{}",
        names.len(),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

fn print_report(r: &Report, as_json: bool) {
    if as_json {
        println!(
            "{}",
            json!({"type": "summary", "committed": r.committed, "changed": r.changed, "pulled_commits": r.pulled_commits,
                   "pushed_commits": r.pushed_commits, "pushed_files": r.pushed_files, "pushed_bytes": r.pushed_bytes,
                   "conflicts": r.conflicts, "resolved": r.resolved})
        );
        return;
    }
    let mut parts = Vec::new();
    if r.committed.is_some() {
        parts.push(format!("committed {} change(s)", r.changed));
    }
    if r.pulled_commits > 0 {
        parts.push(format!("merged {} commit(s)", r.pulled_commits));
    }
    if let Some(side) = r.resolved {
        parts.push(format!(
            "{} conflict(s) resolved with {side}",
            r.conflicts.len()
        ));
    }
    if r.pushed_commits > 0 {
        parts.push(format!("pushed {} commit(s)", r.pushed_commits));
    }
    if parts.is_empty() {
        println!("in sync: nothing to commit, pull or push");
    } else {
        println!("{}", parts.join("; "));
    }
}

/// Pushes dataset `name` to `target`; the error keeps its kind (a refused
/// fast-forward is `FailedPrecondition`).
async fn push_dataset(
    c: &mut Client,
    target: &hoard_proto::v1::PeerTarget,
    name: &str,
    remote_name: &str,
) -> Result<(), tonic::Status> {
    let req = hoard_proto::v1::PushDatasetRequest {
        peer: Some(target.clone()),
        dataset: name.to_string(),
        force: false,
        remote: remote_name.to_string(),
    };
    let s = c.push_dataset(req).await?.into_inner();
    crate::remote::follow(s, "pushing", true)
        .await
        .map(|_| ())
        .map_err(|e| {
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<ui::DaemonError>().map(|d| d.code))
                .unwrap_or(tonic::Code::Unknown);
            tonic::Status::new(code, format!("{e:#}"))
        })
}

fn snapshot_req(
    name: &str,
    message: String,
    merge: Vec<String>,
) -> hoard_proto::v1::SnapshotRequest {
    hoard_proto::v1::SnapshotRequest {
        dataset: name.to_string(),
        message,
        from: Vec::new(),
        meta: Default::default(),
        rescan: true,
        allow_empty: false,
        merge,
    }
}

/// `hoard sync NAME`: snapshot the dataset, push; when the remote moved
/// too, fetch its head and fast-forward, or with `--ours` / `--theirs`
/// record a merge snapshot (parents: this head, then the remote's) holding
/// this side's or the remote's tree, and push that.
pub async fn dataset_sync(mut c: Client, paths: &Paths, name: &str, a: Args) -> anyhow::Result<()> {
    use hoard_proto::v1 as pb;
    let list = c
        .dataset_list(pb::DatasetListRequest {})
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let info = list
        .datasets
        .into_iter()
        .find(|d| d.name == name)
        .with_context(|| format!("no dataset {name} here; `hoard dataset list` shows them (`hoard clone REMOTE/{name} DIR` brings one)"))?;
    let remote = a
        .remote
        .clone()
        .or_else(|| Some(info.remote.clone()).filter(|r| !r.is_empty()));
    let (remote_name, target) = super::dataset::pick_remote(paths, remote.as_deref())?;
    let message = a
        .message
        .clone()
        .unwrap_or_else(|| "hoard sync".to_string());
    let local = match c
        .snapshot(snapshot_req(name, message.clone(), Vec::new()))
        .await
    {
        Ok(r) => r.into_inner().snapshot.map(|s| hex::encode(s.id)),
        // A dataset with nothing recorded yet and an empty directory.
        Err(s) if s.code() == tonic::Code::NotFound => None,
        Err(s) => return Err(ui::status_error(s)),
    };
    let outcome = match push_dataset(&mut c, &target, name, &remote_name).await {
        Ok(()) => "pushed",
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            let ctx = Behind {
                name,
                dir: &info.path,
                target: &target,
                remote_name: &remote_name,
                message: &message,
                local: local.as_deref(),
            };
            ctx.catch_up(&mut c, &a).await?
        }
        Err(s) => return Err(ui::status_error(s)),
    };
    if a.json {
        println!(
            "{}",
            json!({"type": "summary", "dataset": name, "outcome": outcome, "remote": remote_name})
        );
    } else {
        println!("{name}: {outcome} ({remote_name})");
    }
    Ok(())
}

/// A dataset whose remote moved: what catching up needs.
struct Behind<'a> {
    name: &'a str,
    dir: &'a str,
    target: &'a hoard_proto::v1::PeerTarget,
    remote_name: &'a str,
    message: &'a str,
    local: Option<&'a str>,
}

impl Behind<'_> {
    /// Makes the dataset's directory hold exactly snapshot `target`: its
    /// files checked out over what this side's head recorded (the directory
    /// was snapshotted just before, so nothing unrecorded is lost), and the
    /// files that head has and `target` has not removed.
    async fn make_dir(&self, c: &mut Client, target: &str) -> anyhow::Result<()> {
        use hoard_proto::v1 as pb;
        use std::os::unix::ffi::OsStrExt;
        let fail = |e: anyhow::Error| {
            e.context(format!(
                "cannot write snapshot {} into {}; run `hoard checkout {target} --to {} --force` before the next sync",
                &target[..12],
                self.dir,
                self.dir
            ))
        };
        c.checkout(pb::CheckoutRequest {
            spec: target.to_string(),
            dir: self.dir.to_string(),
            include: Vec::new(),
            exclude: Vec::new(),
            force: true,
        })
        .await
        .map_err(|s| fail(ui::status_error(s)))?;
        let Some(local) = self.local else {
            return Ok(());
        };
        let diff = c
            .diff(pb::DiffRequest {
                a: local.to_string(),
                b: target.to_string(),
            })
            .await
            .map_err(|s| fail(ui::status_error(s)))?
            .into_inner();
        for ch in diff.changes.iter().filter(|ch| ch.kind == "removed") {
            let p = std::path::Path::new(self.dir).join(std::ffi::OsStr::from_bytes(&ch.path));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(fail(
                        anyhow::Error::from(e).context(format!("cannot remove {}", p.display())),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Brings the remote's head; fast-forwards to it, or resolves as asked.
    async fn catch_up(&self, c: &mut Client, a: &Args) -> anyhow::Result<&'static str> {
        use hoard_proto::v1 as pb;
        let name = self.name;
        let fetched = c
            .clone_dataset(pb::CloneRequest {
                peer: Some(self.target.clone()),
                dataset: name.to_string(),
                rev: String::new(),
                include: Vec::new(),
                exclude: Vec::new(),
                dir: String::new(),
                force: false,
            })
            .await
            .map_err(ui::status_error)?
            .into_inner();
        let fetched = crate::remote::follow(fetched, "fetching", true).await?;
        let theirs = hex::encode(&fetched.snapshot);
        let head = c
            .log(pb::LogRequest {
                spec: name.to_string(),
                limit: 1,
            })
            .await
            .map_err(ui::status_error)?
            .into_inner()
            .snapshots
            .first()
            .map(|s| hex::encode(&s.id));
        if head.as_deref() == Some(theirs.as_str()) {
            // This side had not moved: a fast-forward (the directory is
            // what this side's head records, so nothing unrecorded is lost).
            self.make_dir(c, &theirs).await?;
            return Ok("fast-forwarded");
        }
        if !(a.ours || a.theirs) {
            return Err(ui::status_error(tonic::Status::failed_precondition(format!(
                "dataset {name} changed here (snapshot {}) and on {} (snapshot {}); nothing was changed here\nkeep yours: `hoard sync {name} --ours`; take theirs: `hoard sync {name} --theirs`",
                self.local.map(|l| &l[..12]).unwrap_or("none"),
                self.remote_name,
                &theirs[..12]
            ))));
        }
        if a.theirs {
            self.make_dir(c, &theirs).await?;
        }
        let m = format!(
            "{}: merge {}'s {}",
            self.message,
            self.remote_name,
            &theirs[..12]
        );
        c.snapshot(snapshot_req(name, m, vec![theirs.clone()]))
            .await
            .map_err(ui::status_error)?;
        push_dataset(c, self.target, name, self.remote_name)
            .await
            .map_err(ui::status_error)?;
        Ok(if a.ours {
            "merged keeping ours"
        } else {
            "merged taking theirs"
        })
    }
}
