//! `hoard migrate import|export`: a git-lfs repository's history into
//! hoard (LFS pointers become hoard pointers, `.gitattributes` switches
//! `filter=lfs` to `filter=hoard`) and back, through git's own
//! fast-export / fast-import streams ([`crate::git::rewrite`]).
//!
//! Order: every object the rewrite needs is checked (an LFS object's
//! sha256 and size against its pointer) and stored before any ref moves;
//! the refs it moves are saved under `refs/hoard-migrate/backup/` first.

use crate::connect::Client;
use crate::git::lfs::{switch_attributes, LfsPointer};
use crate::git::pointer::Pointer;
use crate::git::rewrite::{self, Change};
use crate::git::{self, Repo};
use crate::ui;
use anyhow::{bail, Context};
use hoard_proto::paths::Paths;
use hoard_proto::v1::{add_event::Event, AddPath, AddRequest, ReadRequest};
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What `hoard migrate` was asked to do.
pub struct Args {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub everything: bool,
    pub no_rewrite: bool,
    pub object_map: Option<PathBuf>,
    pub json: bool,
}

/// Which paths a migration converts (git-lfs's `--include`/`--exclude`:
/// a pattern without `/` matches a file name anywhere).
struct Selection {
    include: Option<globset::GlobSet>,
    exclude: Option<globset::GlobSet>,
}

impl Selection {
    fn new(include: &[String], exclude: &[String]) -> anyhow::Result<Self> {
        let set = |pats: &[String]| -> anyhow::Result<Option<globset::GlobSet>> {
            if pats.is_empty() {
                return Ok(None);
            }
            let mut b = globset::GlobSetBuilder::new();
            for p in pats {
                let p = if p.contains('/') {
                    p.trim_start_matches('/').to_string()
                } else {
                    format!("**/{p}")
                };
                b.add(
                    globset::GlobBuilder::new(&p)
                        .literal_separator(true)
                        .build()
                        .with_context(|| format!("bad pattern {p:?}"))?,
                );
            }
            Ok(Some(b.build()?))
        };
        Ok(Selection {
            include: set(include)?,
            exclude: set(exclude)?,
        })
    }

    /// Whether only some paths are converted.
    fn partial(&self) -> bool {
        self.include.is_some() || self.exclude.is_some()
    }

    fn selects(&self, path: &[u8]) -> bool {
        let p = String::from_utf8_lossy(path);
        let p = p.as_ref();
        self.include.as_ref().is_none_or(|s| s.is_match(p))
            && !self.exclude.as_ref().is_some_and(|s| s.is_match(p))
    }
}

fn is_attributes(path: &[u8]) -> bool {
    path == b".gitattributes" || path.ends_with(b"/.gitattributes")
}

/// The refs to rewrite: the current branch, or with `everything` every
/// local branch and tag.
fn refs_to_rewrite(repo: &Repo, everything: bool) -> anyhow::Result<Vec<String>> {
    if everything {
        let out = repo.git([
            "for-each-ref",
            "--format=%(refname)",
            "refs/heads",
            "refs/tags",
        ])?;
        let refs: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_owned)
            .collect();
        if refs.is_empty() {
            bail!("this repository has no branch or tag to migrate");
        }
        return Ok(refs);
    }
    let out = repo
        .git(["symbolic-ref", "-q", "HEAD"])
        .context("HEAD is detached: check out a branch, or give --everything")?;
    Ok(vec![String::from_utf8_lossy(&out).trim().to_string()])
}

fn ensure_clean(repo: &Repo) -> anyhow::Result<()> {
    let out = repo.git(["status", "--porcelain", "--untracked-files=no"])?;
    if !out.is_empty() {
        bail!("the work tree has uncommitted changes; commit or stash them first (a migration rewrites history and resets the index)");
    }
    Ok(())
}

fn common_dir(repo: &Repo) -> anyhow::Result<PathBuf> {
    let out = repo.git(["rev-parse", "--path-format=absolute", "--git-common-dir"])?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out).trim()))
}

/// The content of every blob of `changes` small enough to be a pointer, or
/// that is a `.gitattributes` file (`git cat-file --batch`).
fn small_blobs(repo: &Repo, changes: &[Change]) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let mut want: Vec<&str> = changes.iter().map(|c| c.blob.as_str()).collect();
    want.sort_unstable();
    want.dedup();
    let attrs: HashSet<&str> = changes
        .iter()
        .filter(|c| is_attributes(&c.path))
        .map(|c| c.blob.as_str())
        .collect();
    let sizes = batch(repo, "--batch-check=%(objectname) %(objectsize)", &want)?;
    let mut small = Vec::new();
    for l in String::from_utf8_lossy(&sizes).lines() {
        let mut w = l.split(' ');
        if let (Some(id), Some(n)) = (w.next(), w.next().and_then(|n| n.parse::<usize>().ok())) {
            if n < crate::git::lfs::MAX_LEN || attrs.contains(id) {
                small.push(id.to_string());
            }
        }
    }
    let refs: Vec<&str> = small.iter().map(String::as_str).collect();
    let out = batch(repo, "--batch", &refs)?;
    // `<id> blob <size>\n<content>\n` each.
    let mut map = HashMap::new();
    let mut at = 0;
    while at < out.len() {
        let nl = out[at..]
            .iter()
            .position(|&c| c == b'\n')
            .context("cat-file output")?
            + at;
        let head = String::from_utf8_lossy(&out[at..nl]).to_string();
        let mut w = head.split(' ');
        let (id, _kind, n) = (
            w.next().unwrap_or(""),
            w.next(),
            w.next().and_then(|n| n.parse::<usize>().ok()),
        );
        let n = n.with_context(|| format!("git cat-file said {head:?}"))?;
        map.insert(id.to_string(), out[nl + 1..nl + 1 + n].to_vec());
        at = nl + 1 + n + 1;
    }
    Ok(map)
}

fn batch(repo: &Repo, mode: &str, ids: &[&str]) -> anyhow::Result<Vec<u8>> {
    let mut child = std::process::Command::new("git")
        .args(["cat-file", mode])
        .current_dir(&repo.work_tree)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run git cat-file")?;
    let mut stdin = child.stdin.take().context("cat-file stdin")?;
    let input: String = ids.iter().map(|i| format!("{i}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("cat-file writer panicked"))??;
    if !out.status.success() {
        bail!("git cat-file failed");
    }
    Ok(out.stdout)
}

/// sha256 and length of a file, streamed.
fn sha256_file(p: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(p)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Moves the refs `map` names (old → new commit) is done by fast-import;
/// this saves each ref's old value first, so `git update-ref` can put it back.
fn backup_refs(repo: &Repo, refs: &[String], kind: &str) -> anyhow::Result<()> {
    for r in refs {
        let old = repo.git(["rev-parse", "--verify", "-q", r])?;
        let old = String::from_utf8_lossy(&old).trim().to_string();
        repo.git([
            "update-ref",
            &format!("refs/hoard-migrate/{kind}/{r}"),
            &old,
        ])?;
    }
    Ok(())
}

fn write_object_map(path: &Path, map: &[(String, String)]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
    );
    for (old, new) in map {
        writeln!(f, "{old},{new}")?;
    }
    f.flush()?;
    Ok(())
}

/// The commit an LFS pointer blob first appears in, for an error message.
fn commit_of(repo: &Repo, blob: &str) -> String {
    repo.git([
        "log",
        "--all",
        "-1",
        "--format=%H",
        &format!("--find-object={blob}"),
    ])
    .map(|o| String::from_utf8_lossy(&o).trim().to_string())
    .unwrap_or_default()
}

/// Stores every LFS object `pointers` name (after checking its sha256 and
/// size); returns each LFS oid's hoard pointer.
async fn store_lfs_objects(
    client: &mut Client,
    repo: &Repo,
    pointers: &HashMap<String, (LfsPointer, Change)>,
) -> anyhow::Result<HashMap<String, Pointer>> {
    let dir = common_dir(repo)?;
    let missing = |p: &LfsPointer| !p.object_path(&dir).exists();
    if pointers.values().any(|(p, _)| missing(p)) {
        // The whole history is rewritten, so every ref's objects are needed
        // (a plain `git lfs fetch` brings only the checked-out ones).
        eprintln!("hoard: fetching missing LFS objects with `git lfs fetch --all`");
        if let Err(e) = repo.git(["lfs", "fetch", "--all"]) {
            eprintln!("hoard: {e:#}");
        }
    }
    let mut req = AddRequest::default();
    for (p, change) in pointers.values() {
        let path = p.object_path(&dir);
        if !path.exists() {
            bail!(
                "the LFS object of {} (sha256 {}, in commit {}) is neither in .git/lfs/objects nor on the LFS server; nothing was rewritten",
                String::from_utf8_lossy(&change.path),
                p.oid,
                commit_of(repo, &change.blob)
            );
        }
        let (sha, len) =
            sha256_file(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if sha != p.oid || len != p.size {
            bail!(
                "the LFS object {} of {} has sha256 {sha} and {len} bytes, not what its pointer says ({} bytes): the LFS store is damaged; nothing was rewritten",
                path.display(),
                String::from_utf8_lossy(&change.path),
                p.size
            );
        }
        req.paths.push(AddPath {
            path: path.to_string_lossy().into_owned(),
            display: p.oid.clone(),
        });
    }
    let mut out = HashMap::new();
    if req.paths.is_empty() {
        return Ok(out);
    }
    let mut stream = client
        .add(req)
        .await
        .map_err(ui::status_error)?
        .into_inner();
    while let Some(ev) = stream.message().await.map_err(ui::status_error)? {
        match ev.event {
            Some(Event::Files(f)) => {
                for r in f.files {
                    let oid: [u8; 32] = r
                        .oid
                        .as_slice()
                        .try_into()
                        .context("the daemon sent a bad id")?;
                    out.insert(r.path, Pointer { oid, size: r.size });
                }
            }
            Some(Event::Error(e)) => bail!(
                "cannot store LFS object {}: {}; nothing was rewritten",
                e.path,
                e.message
            ),
            _ => {}
        }
    }
    if out.len() != pointers.len() {
        bail!(
            "the daemon stored {} of {} LFS objects; nothing was rewritten",
            out.len(),
            pointers.len()
        );
    }
    Ok(out)
}

/// What a migration reads before it changes anything: the repository, the
/// selection, the refs to rewrite and their history's file changes (or,
/// with `--no-rewrite`, HEAD's files), and the blobs small enough to be
/// pointers (and every `.gitattributes`).
struct Plan {
    repo: Repo,
    sel: Selection,
    refs: Vec<String>,
    stream: Vec<u8>,
    changes: Vec<Change>,
    blobs: HashMap<String, Vec<u8>>,
}

impl Plan {
    fn make(a: &Args) -> anyhow::Result<Plan> {
        let repo = Repo::discover()?;
        ensure_clean(&repo)?;
        let sel = Selection::new(&a.include, &a.exclude)?;
        let (refs, stream, changes) = if a.no_rewrite {
            (vec!["HEAD".to_string()], Vec::new(), head_files(&repo)?)
        } else {
            let refs = refs_to_rewrite(&repo, a.everything)?;
            let stream = rewrite::export(&repo, &refs)?;
            let changes = rewrite::changes(&stream)?;
            (refs, stream, changes)
        };
        let blobs = small_blobs(&repo, &changes)?;
        Ok(Plan {
            repo,
            sel,
            refs,
            stream,
            changes,
            blobs,
        })
    }
}

impl Plan {
    /// The `.gitattributes` changes switched from `from` to `to` (none when
    /// only some paths are converted: the attributes are the user's to
    /// split then, `hoard track`).
    fn attributes(&self, from: &str, to: &str) -> HashMap<Change, Vec<u8>> {
        if self.sel.partial() {
            return HashMap::new();
        }
        self.changes
            .iter()
            .filter(|c| is_attributes(&c.path))
            .filter_map(|c| {
                Some((
                    c.clone(),
                    switch_attributes(self.blobs.get(&c.blob)?, from, to)?,
                ))
            })
            .collect()
    }

    /// The selected file changes whose blob `parse` reads as a pointer.
    fn pointers<P>(&self, parse: impl Fn(&[u8]) -> Option<P>) -> Vec<(&Change, P)> {
        self.changes
            .iter()
            .filter(|c| !is_attributes(&c.path) && self.sel.selects(&c.path))
            .filter_map(|c| Some((c, parse(self.blobs.get(&c.blob)?)?)))
            .collect()
    }

    /// Writes `replace` into history (saving the refs first under
    /// `refs/hoard-migrate/<backup>/`), or with `--no-rewrite` as one new
    /// commit; returns old → new commit ids.
    fn apply(
        &self,
        a: &Args,
        replace: &HashMap<Change, Vec<u8>>,
        message: &str,
        backup: &str,
    ) -> anyhow::Result<Vec<(String, String)>> {
        if a.no_rewrite {
            return commit_tree_change(&self.repo, replace, message);
        }
        backup_refs(&self.repo, &self.refs, backup)?;
        let (new_stream, _) = rewrite::replace(&self.stream, replace)?;
        rewrite::import(&self.repo, &new_stream)
    }
}

/// `hoard migrate import`.
pub async fn import(mut client: Client, a: Args) -> anyhow::Result<()> {
    let plan = Plan::make(&a)?;
    let mut replace = plan.attributes("lfs", "hoard");
    let attrs = replace.len();
    let pointers = plan.pointers(LfsPointer::parse);
    let mut lfs: HashMap<String, (LfsPointer, Change)> = HashMap::new();
    for (c, p) in &pointers {
        lfs.entry(p.oid.clone())
            .or_insert_with(|| (p.clone(), (*c).clone()));
    }
    let stored = store_lfs_objects(&mut client, &plan.repo, &lfs).await?;
    for (c, p) in &pointers {
        let hp = stored.get(&p.oid).context("an LFS object was not stored")?;
        replace.insert((*c).clone(), hp.encode().into_bytes());
    }
    let stored_bytes: u64 = lfs.values().map(|(p, _)| p.size).sum();
    let map = plan.apply(
        &a,
        &replace,
        "hoard migrate import: git-lfs pointers to hoard pointers",
        "backup",
    )?;
    finish(
        &a,
        &map,
        pointers.len(),
        attrs,
        lfs.len(),
        stored_bytes,
        "import",
    )?;
    let repo = &plan.repo;
    crate::git::setup::install(crate::git::setup::Scope::Local)?;
    refresh_work_tree(repo)?;
    if !a.json {
        println!("next: `hoard push` (the content) and `git push --force --all && git push --force --tags` (the rewritten history; old refs are kept under refs/hoard-migrate/backup/). Collaborators: `hoard install`, then re-clone (or `git fetch && git reset --hard origin/BRANCH`).");
    }
    Ok(())
}

/// After the refs moved: the index is HEAD's, the `.gitattributes` files
/// are the new ones, and every other file (content, unchanged) is re-stated
/// through the new filter.
fn refresh_work_tree(repo: &Repo) -> anyhow::Result<()> {
    repo.git(["reset", "-q"])?;
    let attrs = repo.git([
        "ls-files",
        "-z",
        "--",
        ".gitattributes",
        ":(glob)**/.gitattributes",
    ])?;
    let attrs: Vec<String> = git::nul_records(&attrs)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    if !attrs.is_empty() {
        let mut args = vec!["checkout".to_string(), "HEAD".into(), "--".into()];
        args.extend(attrs);
        repo.git(&args)?;
    }
    // Exit 1 only says some entries needed an update.
    let _ = repo.git(["update-index", "-q", "--refresh"]);
    Ok(())
}

/// The files of HEAD's tree as changes (for `--no-rewrite`).
fn head_files(repo: &Repo) -> anyhow::Result<Vec<Change>> {
    let out = repo.git(["ls-tree", "-r", "-z", "HEAD"])?;
    let mut v = Vec::new();
    for rec in git::nul_records(&out) {
        // `<mode> blob <id>\t<path>`
        let Some(tab) = rec.iter().position(|&c| c == b'\t') else {
            continue;
        };
        let head = String::from_utf8_lossy(&rec[..tab]);
        let mut w = head.split(' ');
        if let (Some(_), Some("blob"), Some(id)) = (w.next(), w.next(), w.next()) {
            v.push(Change {
                blob: id.to_string(),
                path: rec[tab + 1..].to_vec(),
            });
        }
    }
    Ok(v)
}

/// One new commit on HEAD with the `replace`d files' new content.
fn commit_tree_change(
    repo: &Repo,
    replace: &HashMap<Change, Vec<u8>>,
    message: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let old = String::from_utf8_lossy(&repo.git(["rev-parse", "HEAD"])?)
        .trim()
        .to_string();
    for (c, content) in replace {
        let id = hash_object(repo, content)?;
        let path = String::from_utf8(c.path.clone())
            .context("a non-UTF-8 path: use the history rewrite (without --no-rewrite)")?;
        // The mode the index has for it (an executable stays one).
        let staged = repo.git(["ls-files", "-s", "--", &path])?;
        let staged = String::from_utf8_lossy(&staged);
        let mode = staged
            .split(' ')
            .next()
            .filter(|m| m.len() == 6)
            .unwrap_or("100644");
        repo.git([
            "update-index",
            "--cacheinfo",
            &format!("{mode},{id},{path}"),
        ])?;
        // The work tree keeps the content; .gitattributes is text.
        if is_attributes(&c.path) {
            std::fs::write(repo.work_tree.join(&path), content)?;
        }
    }
    repo.git(["commit", "-q", "--no-verify", "-m", message])?;
    let new = String::from_utf8_lossy(&repo.git(["rev-parse", "HEAD"])?)
        .trim()
        .to_string();
    Ok(vec![(old, new)])
}

fn hash_object(repo: &Repo, content: &[u8]) -> anyhow::Result<String> {
    let mut child = std::process::Command::new("git")
        .args(["hash-object", "-w", "--stdin", "--no-filters"])
        .current_dir(&repo.work_tree)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(content)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("git hash-object failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[allow(clippy::too_many_arguments)]
fn finish(
    a: &Args,
    map: &[(String, String)],
    files: usize,
    attrs: usize,
    objects: usize,
    bytes: u64,
    verb: &str,
) -> anyhow::Result<()> {
    if let Some(p) = &a.object_map {
        write_object_map(p, map)?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({"type": "summary", "verb": verb, "commits": map.len(), "pointers": files, "attributes": attrs, "objects": objects, "bytes": bytes})
        );
    } else {
        println!("migrated {files} pointer(s) of {objects} object(s) ({bytes} bytes) and {attrs} .gitattributes file(s) in {} commit(s)", map.len());
    }
    Ok(())
}

/// `hoard migrate export`: hoard pointers back to git-lfs pointers (their
/// content written into `.git/lfs/objects`, so `git lfs push` can send it).
pub async fn export(mut client: Client, paths: &Paths, a: Args) -> anyhow::Result<()> {
    let plan = Plan::make(&a)?;
    let dir = common_dir(&plan.repo)?;
    let mut replace = plan.attributes("hoard", "lfs");
    let attrs = replace.len();
    let pointers = plan.pointers(Pointer::parse);
    let wanted: Vec<Pointer> = pointers.iter().map(|(_, p)| *p).collect();
    let got = crate::git::fetch::fetch(&mut client, paths, &wanted).await?;
    if got.missing() > 0 {
        bail!("{} hoard object(s) are neither in this store nor on a remote; `hoard fetch` them first; nothing was rewritten", got.missing());
    }
    let mut done: HashMap<[u8; 32], LfsPointer> = HashMap::new();
    let mut bytes = 0u64;
    for (c, p) in &pointers {
        let lp = match done.get(&p.oid) {
            Some(lp) => lp.clone(),
            None => {
                let lp = write_lfs_object(&mut client, &dir, p).await?;
                bytes += lp.size;
                done.insert(p.oid, lp.clone());
                lp
            }
        };
        replace.insert((*c).clone(), lp.encode().into_bytes());
    }
    let map = plan.apply(
        &a,
        &replace,
        "hoard migrate export: hoard pointers to git-lfs pointers",
        "export-backup",
    )?;
    finish(&a, &map, pointers.len(), attrs, done.len(), bytes, "export")?;
    let repo = &plan.repo;
    if repo.git(["lfs", "install", "--local"]).is_err() {
        eprintln!("hoard: note: git-lfs is not installed here; install it and run `git lfs install` to check the files out");
    }
    refresh_work_tree(repo)?;
    if !a.json {
        println!("next: `git lfs push --all origin` (the content) and `git push --force --all && git push --force --tags`; old refs are kept under refs/hoard-migrate/export-backup/");
    }
    Ok(())
}

/// Writes `p`'s content into the LFS object store; returns its LFS pointer.
async fn write_lfs_object(
    client: &mut Client,
    dir: &Path,
    p: &Pointer,
) -> anyhow::Result<LfsPointer> {
    let tmp_dir = dir.join("lfs/tmp");
    std::fs::create_dir_all(&tmp_dir)
        .with_context(|| format!("cannot create {}", tmp_dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)?;
    let mut h = sha2::Sha256::new();
    let mut b3 = blake3::Hasher::new();
    let mut n = 0u64;
    let mut s = client
        .read(ReadRequest {
            oid: p.oid.to_vec(),
            offset: 0,
            length: None,
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    while let Some(m) = s.message().await.map_err(ui::status_error)? {
        h.update(&m.data);
        b3.update(&m.data);
        n += m.data.len() as u64;
        tmp.write_all(&m.data)?;
    }
    if n != p.size || b3.finalize().as_bytes() != &p.oid {
        bail!(
            "{} read back wrong from the store; run `hoard verify --read-data`",
            p.oid_string()
        );
    }
    let lp = LfsPointer {
        oid: hex::encode(h.finalize()),
        size: n,
    };
    let dest = lp.object_path(dir);
    if !dest.exists() {
        std::fs::create_dir_all(dest.parent().context("object dir")?)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&dest).map_err(|e| e.error)?;
    }
    Ok(lp)
}
