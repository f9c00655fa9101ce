//! Reading a dataset directory into the directory model: walk, skip what
//! the filter excludes, ingest files (the stat cache answers for unchanged
//! ones without reading them), store link targets.

use super::state::{Dir, Node};
use crate::error::{Error, Result};
use crate::ingest::{self, AddInput, Event};
use crate::store::Store;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Prefix of the temporary names checkout writes before renaming.
pub const TEMP_PREFIX: &str = ".hoard-tmp.";

/// Which relative paths belong to a dataset: everything but `.git`
/// directories, checkout's temporary files, and the dataset's excludes.
#[derive(Clone)]
pub struct Filter {
    excludes: globset::GlobSet,
}

impl Filter {
    pub fn new(patterns: &[String]) -> Result<Filter> {
        let mut b = globset::GlobSetBuilder::new();
        for p in patterns {
            let g = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::Invalid(format!("bad exclude pattern {p:?}: {e}")))?;
            b.add(g);
        }
        Ok(Filter {
            excludes: b
                .build()
                .map_err(|e| Error::Invalid(format!("bad exclude patterns: {e}")))?,
        })
    }

    /// Whether `rel` (a relative path with `/` separators) is left out.
    pub fn excluded(&self, rel: &[u8]) -> bool {
        let name = rel.rsplit(|c| *c == b'/').next().unwrap_or(rel);
        if name == b".git" || name.starts_with(TEMP_PREFIX.as_bytes()) {
            return true;
        }
        if self.excludes.is_empty() {
            return false;
        }
        let p = Path::new(std::ffi::OsStr::from_bytes(rel));
        self.excludes.is_match(p)
    }
}

/// What a scan found at one of the paths it was asked about.
pub struct Update {
    /// Relative path; empty for the dataset root.
    pub path: Vec<u8>,
    /// `None`: nothing there (removed, excluded, or unreadable).
    pub node: Option<Node>,
}

#[derive(Default)]
pub struct Scanned {
    pub updates: Vec<Update>,
    /// (relative path, what went wrong): such paths are left out.
    pub errors: Vec<(String, String)>,
    pub summary: ingest::Summary,
    /// Files (relative paths) modified within [`RECENT`] before the scan:
    /// a watcher looks at them again once they have settled.
    pub recent: Vec<Vec<u8>>,
}

/// How recent a modification makes a file worth a second look.
pub const RECENT: std::time::Duration = std::time::Duration::from_secs(1);

fn rel_display(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

fn join_rel(base: &[u8], name: &[u8]) -> Vec<u8> {
    let mut r = base.to_vec();
    if !r.is_empty() {
        r.push(b'/');
    }
    r.extend_from_slice(name);
    r
}

enum Found {
    File {
        abs: PathBuf,
        exec: bool,
        /// Modified so shortly before the scan that it may still be
        /// written to (its stat-cache entry may also have been withheld).
        recent: bool,
    },
    Link {
        target: Vec<u8>,
    },
    Dir,
}

/// Scans `rels` (relative paths under `root`; an empty one is the root
/// itself): directories are walked whole, so their updates replace what
/// was known below them.
pub fn scan(store: &Store, root: &Path, rels: &[Vec<u8>], filter: &Filter) -> Scanned {
    let mut out = Scanned::default();
    let found = find(root, rels, filter, &mut out);
    let mut ids = ingest_files(store, &found, &mut out);
    store_links(store, &found, &mut ids, &mut out);
    assemble(found, &ids, &mut out);
    out
}

/// What was found: (update index, path inside it, what is there).
type FoundAt = (usize, Vec<u8>, Found);

/// Walks `rels`, one update each; directories whole.
fn find(root: &Path, rels: &[Vec<u8>], filter: &Filter, out: &mut Scanned) -> Vec<FoundAt> {
    let mut found: Vec<FoundAt> = Vec::new();
    for rel in rels {
        let idx = out.updates.len();
        out.updates.push(Update {
            path: rel.clone(),
            node: None,
        });
        if !rel.is_empty() && filter.excluded(rel) {
            continue;
        }
        let abs = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(rel))
        };
        let meta = match std::fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.errors
                    .push((rel_display(rel), format!("cannot access: {e}")));
                continue;
            }
        };
        if meta.is_dir() {
            out.updates[idx].node = Some(Node::Dir(Dir::default()));
            found.push((idx, Vec::new(), Found::Dir));
            walk_dir(&abs, rel, filter, idx, &mut found, &mut out.errors);
        } else if let Some(f) = classify(&abs, &meta, rel, &mut out.errors) {
            found.push((idx, Vec::new(), f));
        }
    }
    found
}

/// Files, in one ingest (parallel, batched, stat cache first). Returns
/// each stored file's (id, size) by its index in `found`.
fn ingest_files(
    store: &Store,
    found: &[FoundAt],
    out: &mut Scanned,
) -> HashMap<usize, (crate::Id, u64)> {
    let mut inputs = Vec::new();
    let mut by_display: HashMap<String, usize> = HashMap::new();
    for (i, (idx, inner, f)) in found.iter().enumerate() {
        if let Found::File { abs, recent, .. } = f {
            let full = join_rel(&out.updates[*idx].path, inner);
            if *recent {
                out.recent.push(full.clone());
            }
            let display = rel_display(&full);
            by_display.insert(display.clone(), i);
            inputs.push(AddInput {
                path: abs.clone(),
                display,
            });
        }
    }
    let mut ids: HashMap<usize, (crate::Id, u64)> = HashMap::new();
    let errors = &mut out.errors;
    out.summary = ingest::add(store, inputs, &mut |ev| {
        match ev {
            Event::Done(done) => {
                for d in done {
                    if let Some(i) = by_display.get(&d.path) {
                        ids.insert(*i, (d.file, d.size));
                    }
                }
            }
            Event::Error { path, message } => errors.push((path, message)),
            _ => {}
        }
        !store.is_shutting_down()
    });
    ids
}

/// Link targets are stored as small files.
fn store_links(
    store: &Store,
    found: &[FoundAt],
    ids: &mut HashMap<usize, (crate::Id, u64)>,
    out: &mut Scanned,
) {
    let links: Vec<usize> = (0..found.len())
        .filter(|i| matches!(found[*i].2, Found::Link { .. }))
        .collect();
    if links.is_empty() {
        return;
    }
    let mut session = crate::put::Session::new(store);
    let mut staged = Vec::new();
    for i in links {
        let Found::Link { target } = &found[i].2 else {
            continue;
        };
        let display = rel_display(&join_rel(&out.updates[found[i].0].path, &found[i].1));
        match session.put(&display, &target[..]) {
            Ok(p) => staged.push((i, p)),
            Err(e) => out.errors.push((display, e.to_string())),
        }
    }
    let flushed = session.flush();
    if flushed.errors.is_empty() {
        for (i, p) in staged {
            ids.insert(i, (p.file, p.size));
        }
    } else {
        out.errors.extend(flushed.errors);
    }
}

/// Each found entry goes into its update's node.
fn assemble(found: Vec<FoundAt>, ids: &HashMap<usize, (crate::Id, u64)>, out: &mut Scanned) {
    for (i, (idx, inner, f)) in found.into_iter().enumerate() {
        let node = match f {
            Found::Dir => {
                if inner.is_empty() {
                    continue;
                }
                Node::Dir(Dir::default())
            }
            Found::File { exec, .. } => match ids.get(&i) {
                Some((id, size)) => Node::File {
                    id: *id,
                    size: *size,
                    exec,
                },
                None => continue,
            },
            Found::Link { .. } => match ids.get(&i) {
                Some((id, size)) => Node::Symlink {
                    id: *id,
                    size: *size,
                },
                None => continue,
            },
        };
        let u = &mut out.updates[idx];
        if inner.is_empty() {
            u.node = Some(node);
        } else if let Some(Node::Dir(d)) = &mut u.node {
            d.set(&inner, node);
        }
    }
}

fn classify(
    abs: &Path,
    meta: &std::fs::Metadata,
    rel: &[u8],
    errors: &mut Vec<(String, String)>,
) -> Option<Found> {
    let ft = meta.file_type();
    if ft.is_file() {
        let recent = meta
            .modified()
            .ok()
            .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
            .is_none_or(|ago| ago < RECENT);
        Some(Found::File {
            abs: abs.to_path_buf(),
            exec: meta.permissions().mode() & 0o111 != 0,
            recent,
        })
    } else if ft.is_symlink() {
        match std::fs::read_link(abs) {
            Ok(t) => Some(Found::Link {
                target: t.as_os_str().as_bytes().to_vec(),
            }),
            Err(e) => {
                errors.push((rel_display(rel), format!("cannot read link: {e}")));
                None
            }
        }
    } else {
        // Sockets, fifos, devices: not data; left out without complaint.
        None
    }
}

fn walk_dir(
    abs: &Path,
    rel: &[u8],
    filter: &Filter,
    idx: usize,
    found: &mut Vec<(usize, Vec<u8>, Found)>,
    errors: &mut Vec<(String, String)>,
) {
    let mut it = walkdir::WalkDir::new(abs)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(item) = it.next() {
        let e = match item {
            Ok(e) => e,
            Err(e) => {
                let p = e
                    .path()
                    .and_then(|p| p.strip_prefix(abs).ok())
                    .map(|p| rel_display(&join_rel(rel, p.as_os_str().as_bytes())))
                    .unwrap_or_else(|| rel_display(rel));
                errors.push((p, format!("cannot read: {e}")));
                continue;
            }
        };
        let inner = e
            .path()
            .strip_prefix(abs)
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .unwrap_or_default();
        let full = join_rel(rel, &inner);
        if filter.excluded(&full) {
            if e.file_type().is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        if e.file_type().is_dir() {
            found.push((idx, inner, Found::Dir));
            continue;
        }
        let meta = match e.metadata() {
            Ok(m) => m,
            Err(er) => {
                errors.push((rel_display(&full), format!("cannot access: {er}")));
                continue;
            }
        };
        if let Some(f) = classify(e.path(), &meta, &full, errors) {
            found.push((idx, inner, f));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_excludes_git_temp_and_patterns() {
        let f = Filter::new(&["*.tmp".into(), "cache/**".into()]).unwrap();
        assert!(f.excluded(b".git"));
        assert!(f.excluded(b"sub/.git"));
        assert!(f.excluded(b"a/.hoard-tmp.123"));
        assert!(f.excluded(b"x.tmp"));
        assert!(
            !f.excluded(b"sub/x.tmp"),
            "literal separator: *.tmp is top-level only"
        );
        assert!(f.excluded(b"cache/a/b"));
        assert!(!f.excluded(b"data/a.csv"));
        assert!(Filter::new(&["[".into()]).is_err());
    }

    #[test]
    fn scan_builds_the_directory_with_links_and_modes() {
        let t = tempfile::tempdir().unwrap();
        let store = crate::testutil::small_store(t.path());
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("a/empty")).unwrap();
        std::fs::write(root.join("a/x.bin"), b"hello").unwrap();
        std::fs::write(root.join("run.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::os::unix::fs::symlink("a/x.bin", root.join("link")).unwrap();
        std::fs::create_dir(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/HEAD"), b"ref").unwrap();
        let s = scan(&store, root, &[Vec::new()], &Filter::new(&[]).unwrap());
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let Some(Node::Dir(mut dir)) = s.updates.into_iter().next().unwrap().node else {
            panic!("root is a directory")
        };
        assert!(dir.get(b".git").is_none());
        assert!(matches!(dir.get(b"a/empty"), Some(Node::Dir(_))));
        assert_eq!(
            dir.get(b"a/x.bin"),
            Some(&Node::File {
                id: crate::Id::of(b"hello"),
                size: 5,
                exec: false
            })
        );
        assert!(matches!(
            dir.get(b"run.sh"),
            Some(Node::File { exec: true, .. })
        ));
        assert_eq!(
            dir.get(b"link"),
            Some(&Node::Symlink {
                id: crate::Id::of(b"a/x.bin"),
                size: 7
            })
        );
        let b = dir.build(&mut Vec::new()).unwrap();
        assert_eq!(b.files, 3);
        assert_eq!(
            store.file_size(&crate::Id::of(b"a/x.bin")).unwrap(),
            Some(7)
        );
    }
}
