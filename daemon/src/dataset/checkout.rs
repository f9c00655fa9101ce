//! Writing a snapshot (or the selected paths of it) into a directory.
//!
//! Safe by construction: every file is written under a temporary name in
//! its final directory and renamed over; no path component below DIR may be
//! a symbolic link (nothing is ever written outside DIR); a file that holds
//! neither the content being written nor the content the previous checkout
//! of DIR wrote is a local change, and checkout refuses to touch it unless
//! forced. Files the previous checkout wrote that the new version lacks
//! are removed when unmodified.

use super::scan::TEMP_PREFIX;
use super::state::Node;
use super::Datasets;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::put::{remember, Written};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Request {
    pub snapshot: Id,
    /// Absolute target directory (created if missing).
    pub dir: PathBuf,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub force: bool,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub written: u64,
    pub unchanged: u64,
    pub removed: u64,
    pub bytes: u64,
    /// Local changes left in place (with `force`: files the new version
    /// does not have).
    pub kept: Vec<String>,
}

/// What the last checkout into a directory wrote.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Record {
    snapshot: String,
    include: Vec<String>,
    exclude: Vec<String>,
}

fn record_key(dir: &Path) -> String {
    format!("checkout/{}", dir.display())
}

/// Selects relative paths by include/exclude globs (`**` crosses `/`).
pub struct Selection {
    include: Option<globset::GlobSet>,
    exclude: Option<globset::GlobSet>,
}

impl Selection {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Selection> {
        let set = |pats: &[String]| -> Result<Option<globset::GlobSet>> {
            if pats.is_empty() {
                return Ok(None);
            }
            let mut b = globset::GlobSetBuilder::new();
            for p in pats {
                // `dir` and `dir/` select everything below dir, as in git.
                let p = p.trim_end_matches('/');
                for pat in [p.to_string(), format!("{p}/**")] {
                    b.add(
                        globset::GlobBuilder::new(&pat)
                            .literal_separator(true)
                            .build()
                            .map_err(|e| Error::Invalid(format!("bad pattern {p:?}: {e}")))?,
                    );
                }
            }
            Ok(Some(b.build().map_err(|e| Error::Invalid(e.to_string()))?))
        };
        Ok(Selection {
            include: set(include)?,
            exclude: set(exclude)?,
        })
    }

    pub fn selects(&self, rel: &[u8]) -> bool {
        let p = Path::new(std::ffi::OsStr::from_bytes(rel));
        self.include.as_ref().is_none_or(|g| g.is_match(p))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(p))
    }
}

/// The files of snapshot `id` that `sel` selects, and its empty
/// directories that `sel` selects (as empty [`Node::Dir`]s): path → node.
pub fn selected_files(ds: &Datasets, id: &Id, sel: &Selection) -> Result<BTreeMap<Vec<u8>, Node>> {
    let snap = ds
        .snapshot_object(id)?
        .ok_or_else(|| Error::NotFound(format!("snapshot {id} is not in this store")))?;
    let (root, _) = ds.load_dir(&snap.tree)?;
    let mut out: BTreeMap<Vec<u8>, Node> = root
        .files()
        .into_iter()
        .filter(|(p, _)| sel.selects(p))
        .map(|(p, n)| (p, n.clone()))
        .collect();
    for d in root.empty_dirs() {
        if sel.selects(&d) {
            out.insert(d, Node::Dir(Default::default()));
        }
    }
    Ok(out)
}

fn node_id(n: &Node) -> Option<(Id, u64)> {
    match n {
        Node::File { id, size, .. } | Node::Symlink { id, size } => Some((*id, *size)),
        Node::Dir(_) => None,
    }
}

/// What is at `abs` now: the content id of a file or link, if any.
fn on_disk(ds: &Datasets, abs: &Path) -> Result<Option<Id>> {
    let m = match std::fs::symlink_metadata(abs) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot access", abs, e)),
    };
    if m.file_type().is_symlink() {
        let t = std::fs::read_link(abs).map_err(|e| Error::io("cannot read link", abs, e))?;
        return Ok(Some(Id::of(t.as_os_str().as_bytes())));
    }
    if !m.is_file() {
        // A directory (or something else) where a file goes: never equal.
        return Ok(Some(Id([0; 32])));
    }
    let key = abs.to_string_lossy().into_owned();
    if let Some(Some(p)) = crate::put::lookup(&ds.store, &[key])?.pop() {
        return Ok(Some(p.file));
    }
    let mut f = std::fs::File::open(abs).map_err(|e| Error::io("cannot read", abs, e))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("cannot read", abs, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Some(h.finalize().into()))
}

/// Refuses a path whose parent components below `dir` are links or files.
fn check_parents(dir: &Path, rel: &[u8]) -> Result<()> {
    let parts: Vec<&[u8]> = super::state::components(rel).collect();
    let mut at = dir.to_path_buf();
    for p in &parts[..parts.len().saturating_sub(1)] {
        at.push(std::ffi::OsStr::from_bytes(p));
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::Invalid(format!(
                    "refusing to write {}: {} is a symbolic link (checkout never writes through links); remove it and retry",
                    String::from_utf8_lossy(rel),
                    at.display()
                )))
            }
            Ok(m) if !m.is_dir() => {
                return Err(Error::Invalid(format!(
                    "refusing to write {}: {} is not a directory; move it away and retry",
                    String::from_utf8_lossy(rel),
                    at.display()
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn temp_name(dir: &Path) -> PathBuf {
    dir.join(format!(
        "{TEMP_PREFIX}{}.{}",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes one file or link at `abs` via a temporary name; verifies the
/// content against its id as it goes.
fn write_one(ds: &Datasets, abs: &Path, node: &Node) -> Result<Option<Written>> {
    let parent = abs.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
    let tmp = temp_name(parent);
    let (id, size) = node_id(node).unwrap_or((Id([0; 32]), 0));
    let mut h = blake3::Hasher::new();
    let result = (|| -> Result<Option<Written>> {
        match node {
            Node::Symlink { .. } => {
                if size > crate::objects::MAX_LINK_TARGET {
                    return Err(Error::Invalid(format!(
                        "{} would be a link to a {size}-byte target (at most {}); not written",
                        abs.display(),
                        crate::objects::MAX_LINK_TARGET
                    )));
                }
                let mut target = Vec::new();
                ds.store.read_range(&id, 0, None, &mut |b| {
                    target.extend_from_slice(b);
                    Ok(())
                })?;
                h.update(&target);
                check_hash(&h, &id, abs)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &tmp)
                    .map_err(|e| Error::io("cannot create link", &tmp, e))?;
                rename(&tmp, abs)?;
                Ok(None)
            }
            Node::File { exec, .. } => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
                    .map_err(|e| Error::io("cannot create", &tmp, e))?;
                let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
                ds.store.read_range(&id, 0, None, &mut |b| {
                    h.update(b);
                    w.write_all(b)
                        .map_err(|e| Error::io("cannot write", &tmp, e))
                })?;
                check_hash(&h, &id, abs)?;
                let f = w
                    .into_inner()
                    .map_err(|e| Error::io("cannot write", &tmp, e.into_error()))?;
                let mode = if *exec { 0o755 } else { 0o644 };
                f.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::io("cannot set permissions of", &tmp, e))?;
                // Set back, so any later write moves it and the stat cache
                // can trust this one at once (hoard_proto::RACY_NS).
                f.set_modified(hoard_proto::backdated_mtime(std::time::SystemTime::now()))
                    .map_err(|e| Error::io("cannot set the time of", &tmp, e))?;
                drop(f);
                rename(&tmp, abs)?;
                let m =
                    std::fs::symlink_metadata(abs).map_err(|e| Error::io("cannot stat", abs, e))?;
                Ok(Some(Written {
                    path: abs.to_path_buf(),
                    file: id,
                    size,
                    mtime_ns: crate::ingest::mtime_ns(&m),
                    ino: m.ino(),
                    known_at_ns: crate::ingest::now_ns(),
                }))
            }
            Node::Dir(_) => Ok(None),
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn check_hash(h: &blake3::Hasher, id: &Id, abs: &Path) -> Result<()> {
    let got: Id = h.finalize().into();
    if got != *id {
        return Err(Error::Corrupt(format!(
            "content for {} read back as {got}, not {id}",
            abs.display()
        )));
    }
    Ok(())
}

fn rename(tmp: &Path, abs: &Path) -> Result<()> {
    // A directory in the way (a local change) is refused earlier; an empty
    // one left by a removed tree is replaced.
    if std::fs::symlink_metadata(abs).is_ok_and(|m| m.is_dir()) {
        let _ = std::fs::remove_dir(abs);
    }
    std::fs::rename(tmp, abs).map_err(|e| Error::io("cannot rename into place", abs, e))
}

/// Checks out `req.snapshot` into `req.dir`.
pub fn checkout(ds: &Datasets, req: &Request) -> Result<Report> {
    let dir = &target_dir(&req.dir)?;
    let sel = Selection::new(&req.include, &req.exclude)?;
    let want = selected_files(ds, &req.snapshot, &sel)?;
    all_content_here(ds, &want, &req.snapshot)?;
    let prev = previous_checkout(ds, dir)?;
    let mut report = Report::default();
    let plan = plan(ds, dir, &want, &prev, req.force, &mut report)?;
    write_all(ds, dir, &plan.to_write, &mut report)?;
    for abs in plan.to_remove {
        let dropped_dir = std::fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir());
        let removed = if dropped_dir {
            std::fs::remove_dir(&abs).is_ok()
        } else {
            std::fs::remove_file(&abs).is_ok()
        };
        if removed {
            report.removed += u64::from(!dropped_dir);
            // Empty directories left behind go too (never DIR itself).
            let mut p = abs.parent();
            while let Some(d) = p {
                if d == dir || std::fs::remove_dir(d).is_err() {
                    break;
                }
                p = d.parent();
            }
        }
    }
    // After the removals, which take empty parents with them.
    make_empty_dirs(dir, &want)?;
    let rec = Record {
        snapshot: req.snapshot.hex(),
        include: req.include.clone(),
        exclude: req.exclude.clone(),
    };
    let json = serde_json::to_vec(&rec).map_err(|e| Error::Invalid(e.to_string()))?;
    ds.store.put_local(&record_key(dir), Some(&json))?;
    Ok(report)
}

/// Recreates the empty directories the snapshot records (never through a
/// link).
fn make_empty_dirs(dir: &Path, want: &BTreeMap<Vec<u8>, Node>) -> Result<()> {
    for (rel, node) in want {
        if let Node::Dir(_) = node {
            check_parents(dir, rel)?;
            let abs = dir.join(std::ffi::OsStr::from_bytes(rel));
            if !std::fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir()) {
                std::fs::create_dir_all(&abs).map_err(|e| Error::io("cannot create", &abs, e))?;
            }
        }
    }
    Ok(())
}

/// The checkout's directory, created if need be and resolved.
fn target_dir(dir: &Path) -> Result<PathBuf> {
    if !dir.is_absolute() {
        return Err(Error::Invalid(format!("{} is not absolute", dir.display())));
    }
    if let Ok(m) = std::fs::symlink_metadata(dir) {
        if !m.is_dir() {
            return Err(Error::Invalid(format!(
                "{} exists and is not a directory",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    std::fs::canonicalize(dir).map_err(|e| Error::io("cannot resolve", dir, e))
}

/// Refuses a checkout whose files are not all in this store.
fn all_content_here(ds: &Datasets, want: &BTreeMap<Vec<u8>, Node>, snapshot: &Id) -> Result<()> {
    let missing: Vec<String> = want
        .iter()
        .filter_map(|(p, n)| node_id(n).map(|(id, size)| (p, id, size)))
        .filter(|(_, id, size)| ds.store.file_size(id).ok().flatten() != Some(*size))
        .map(|(p, _, _)| String::from_utf8_lossy(p).into_owned())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::NotFound(format!(
        "{} file(s) of snapshot {} are not in this store (e.g. {}); fetch them first (`hoard clone REMOTE/NAME@REV DIR --include ...` or `hoard fetch`) or narrow --include",
        missing.len(),
        snapshot,
        missing.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
    )))
}

/// What the previous checkout of this directory wrote.
fn previous_checkout(ds: &Datasets, dir: &Path) -> Result<BTreeMap<Vec<u8>, Node>> {
    let Some(v) = ds.store.get_local(&record_key(dir))? else {
        return Ok(BTreeMap::new());
    };
    Ok(match serde_json::from_slice::<Record>(&v) {
        Ok(r) => match (
            Id::parse(&r.snapshot),
            Selection::new(&r.include, &r.exclude),
        ) {
            (Ok(id), Ok(s)) => selected_files(ds, &id, &s).unwrap_or_default(),
            _ => BTreeMap::new(),
        },
        Err(_) => BTreeMap::new(),
    })
}

/// What a checkout writes and removes.
struct Plan<'a> {
    to_write: Vec<(&'a Vec<u8>, &'a Node)>,
    to_remove: Vec<PathBuf>,
}

/// Compares what the snapshot wants with what is on disk and what the
/// previous checkout wrote; refuses (nothing written) when local changes
/// are in the way, unless `force`.
fn plan<'a>(
    ds: &Datasets,
    dir: &Path,
    want: &'a BTreeMap<Vec<u8>, Node>,
    prev: &BTreeMap<Vec<u8>, Node>,
    force: bool,
    report: &mut Report,
) -> Result<Plan<'a>> {
    let mut to_write: Vec<(&Vec<u8>, &Node)> = Vec::new();
    let mut conflicts = Vec::new();
    for (rel, node) in want {
        check_parents(dir, rel)?;
        let abs = dir.join(std::ffi::OsStr::from_bytes(rel));
        let Some((id, _)) = node_id(node) else {
            continue;
        };
        match on_disk(ds, &abs)? {
            None => to_write.push((rel, node)),
            Some(cur) if cur == id => {
                report.unchanged += 1;
                if let Node::File { exec, .. } = node {
                    let mode = if *exec { 0o755 } else { 0o644 };
                    let _ = std::fs::set_permissions(&abs, std::fs::Permissions::from_mode(mode));
                }
            }
            Some(cur) => {
                let ours = prev.get(rel).and_then(node_id).map(|p| p.0) == Some(cur);
                if !ours && !force {
                    conflicts.push(String::from_utf8_lossy(rel).into_owned());
                } else {
                    to_write.push((rel, node));
                }
            }
        }
    }
    let mut to_remove = Vec::new();
    for (rel, node) in prev {
        if want.contains_key(rel) {
            continue;
        }
        let abs = dir.join(std::ffi::OsStr::from_bytes(rel));
        if check_parents(dir, rel).is_err() {
            continue;
        }
        if let Node::Dir(_) = node {
            // An empty directory the previous checkout made: removed below
            // if it is still empty.
            to_remove.push(abs);
            continue;
        }
        match on_disk(ds, &abs)? {
            None => {}
            Some(cur) if Some(cur) == node_id(node).map(|n| n.0) => to_remove.push(abs),
            Some(_) if force => report.kept.push(String::from_utf8_lossy(rel).into_owned()),
            Some(_) => conflicts.push(String::from_utf8_lossy(rel).into_owned()),
        }
    }
    if !conflicts.is_empty() {
        return Err(Error::Conflict(format!(
            "{} file(s) in {} have local changes that checkout would overwrite or remove (e.g. {}); nothing was written — move them away or use --force",
            conflicts.len(),
            dir.display(),
            conflicts.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(Plan {
        to_write,
        to_remove,
    })
}

/// Writes the planned files in parallel; what was written is remembered in
/// the stat cache even when another file failed.
fn write_all(
    ds: &Datasets,
    dir: &Path,
    to_write: &[(&Vec<u8>, &Node)],
    report: &mut Report,
) -> Result<()> {
    let written: Vec<Result<(Option<Written>, u64)>> = to_write
        .par_iter()
        .with_max_len(16)
        .map(|(rel, node)| {
            let abs = dir.join(std::ffi::OsStr::from_bytes(rel));
            let w = write_one(ds, &abs, node)?;
            Ok((w, node_id(node).map(|n| n.1).unwrap_or(0)))
        })
        .collect();
    let mut remembered = Vec::new();
    let mut first_err = None;
    for r in written {
        match r {
            Ok((w, bytes)) => {
                report.written += 1;
                report.bytes += bytes;
                remembered.extend(w);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    remember(&ds.store, &remembered)?;
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
