//! Datasets: named directories whose versions are recorded as snapshots.
//!
//! A dataset's configuration is local state (`local` column family,
//! `dataset/NAME`); its history is objects (trees, snapshots) and refs
//! (`datasets/NAME`, `tags/NAME/TAG`), which sync to peers. A watched
//! dataset keeps its current content in memory ([`state::Dir`]), updated by
//! the watcher ([`crate::watch`]), so a snapshot needs no scan.
//!
//! Write order for a snapshot, as for files: file content durable, then
//! trees, then the snapshot, then the ref (compare-and-swap).
//!
//! Floor 8 (engine): may import `store`, `ingest`, `put`, `objects`; never
//! `sync` or the services (the network side of datasets is
//! `crate::sync::dataset`; the Local API calls are `crate::service`).

pub mod accept;
pub mod checkout;
pub mod diff;
pub mod scan;
pub mod state;
pub mod walk;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::objects::{self, Object, ObjectKind, Snapshot, Tree};
use crate::store::Store;
use scan::Filter;
use state::{Built, Dir, Node};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// A dataset's local configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub path: PathBuf,
    #[serde(default)]
    pub watch: bool,
    /// A remote in `remotes.toml` that new snapshots are pushed to.
    #[serde(default)]
    pub remote: Option<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn config_key(name: &str) -> String {
    format!("dataset/{name}")
}

/// The state of pushing a dataset's snapshots to its remote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    /// The latest snapshot known to be on the remote.
    pub pushed: Option<Id>,
    pub last_error: Option<String>,
    /// The kind of the last error (a conflict is not retried by itself).
    pub kind: Option<crate::error::Kind>,
    /// Seconds until the next attempt after a failure.
    pub retry_in: Option<u64>,
    /// The head at which a push met a conflict: auto-sync waits until the
    /// head moves (or the configuration changes) before it tries again.
    pub conflict_at: Option<Id>,
    /// Pushes auto-sync attempted since the daemon started.
    pub attempts: u64,
}

/// What the daemon knows about one dataset right now.
pub struct Live {
    pub name: String,
    pub config: Config,
    pub filter: Filter,
    state: Mutex<LiveState>,
}

#[derive(Default)]
pub struct LiveState {
    /// Current content, when watched and scanned (None before the first scan).
    pub root: Option<Dir>,
    /// Changed paths waiting to be ingested.
    pub pending: u64,
    /// Paths that could not be read in the last scan or update.
    pub errors: Vec<(String, String)>,
    /// Scan rounds the watcher ran (full scans and path updates).
    pub scans: u64,
    /// Whether the watcher runs, or why not.
    pub watching: Option<std::result::Result<(), String>>,
    pub sync: SyncState,
}

impl Live {
    pub fn lock(&self) -> MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The result of `snapshot`.
#[derive(Debug, Clone)]
pub struct Made {
    pub id: Id,
    pub snapshot: Snapshot,
    /// Nothing changed since the dataset's latest snapshot, which is `id`.
    pub unchanged: bool,
}

pub struct SnapshotRequest {
    pub message: String,
    pub derived: Vec<Id>,
    pub meta: BTreeMap<String, String>,
    /// Re-read the directory even when the watcher's view is current.
    pub rescan: bool,
    /// Record a snapshot even when nothing changed.
    pub allow_empty: bool,
    /// Parents after the head: snapshots of another line of history this
    /// one merges (each must be in this store).
    pub merge: Vec<Id>,
}

/// A dataset's current root, the tree encodings not yet stored, and the
/// paths that could not be read.
pub type Current = (Built, Vec<(Id, Vec<u8>)>, Vec<(String, String)>);

/// Every dataset of this store.
pub struct Datasets {
    pub store: Arc<Store>,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// Serialises snapshots of one store (they move refs).
    snapshotting: Mutex<()>,
}

impl Datasets {
    /// Loads the registered datasets (watchers are started by the daemon).
    pub fn open(store: Arc<Store>) -> Result<Arc<Datasets>> {
        let mut live = HashMap::new();
        for (name, v) in store.local_entries("dataset/")? {
            let config: Config = serde_json::from_slice(&v).map_err(|e| {
                Error::Corrupt(format!("configuration of dataset {name} is malformed: {e}"))
            })?;
            let filter = Filter::new(&config.exclude)?;
            live.insert(
                name.clone(),
                Arc::new(Live {
                    name,
                    config,
                    filter,
                    state: Mutex::new(LiveState::default()),
                }),
            );
        }
        Ok(Arc::new(Datasets {
            store,
            live: Mutex::new(live),
            snapshotting: Mutex::new(()),
        }))
    }

    fn live_map(&self) -> MutexGuard<'_, HashMap<String, Arc<Live>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Result<Arc<Live>> {
        self.live_map().get(name).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "no dataset named {name:?} here; `hoard dataset list` shows them, `hoard dataset add {name} DIR` registers one"
            ))
        })
    }

    pub fn all(&self) -> Vec<Arc<Live>> {
        let mut v: Vec<_> = self.live_map().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Registers (or reconfigures) a dataset. Returns it; the caller starts
    /// or stops its watcher.
    pub fn add(&self, name: &str, mut config: Config) -> Result<Arc<Live>> {
        objects::check_dataset_name(name).map_err(|e| Error::Invalid(e.0))?;
        let path = std::fs::canonicalize(&config.path).map_err(|e| {
            Error::io(
                "cannot use the dataset directory (create it first)",
                &config.path,
                e,
            )
        })?;
        if !path.is_dir() {
            return Err(Error::Invalid(format!(
                "{} is not a directory; a dataset is a directory",
                path.display()
            )));
        }
        if path.starts_with(self.store.dir()) || self.store.dir().starts_with(&path) {
            return Err(Error::Invalid(format!(
                "{} overlaps the store directory {}; choose a directory outside it",
                path.display(),
                self.store.dir().display()
            )));
        }
        config.path = path;
        let filter = Filter::new(&config.exclude)?;
        let json = serde_json::to_vec(&config).map_err(|e| Error::Invalid(e.to_string()))?;
        self.store.put_local(&config_key(name), Some(&json))?;
        let live = Arc::new(Live {
            name: name.to_string(),
            config,
            filter,
            state: Mutex::new(LiveState::default()),
        });
        self.live_map().insert(name.to_string(), live.clone());
        Ok(live)
    }

    /// Forgets a dataset's configuration; its snapshots and refs stay.
    pub fn remove(&self, name: &str) -> Result<Arc<Live>> {
        let live = self.get(name)?;
        self.store.put_local(&config_key(name), None)?;
        self.live_map().remove(name);
        Ok(live)
    }

    pub fn head(&self, name: &str) -> Result<Option<Id>> {
        self.store.get_ref(&objects::dataset_ref(name))
    }

    /// The current content of a dataset and the trees it needs: from the
    /// watcher's view when it has one (unless `rescan`), else by scanning.
    /// Returns the root, new tree encodings, and unreadable paths.
    pub fn current(&self, live: &Live, rescan: bool) -> Result<Current> {
        let mut new = Vec::new();
        let head_tree = match self.head(&live.name)? {
            Some(h) => self.snapshot_object(&h)?.map(|s| s.tree),
            None => None,
        };
        {
            let mut st = live.lock();
            if !rescan && st.watching == Some(Ok(())) {
                if let Some(root) = st.root.as_mut() {
                    let b = root.build(&mut new).map_err(|e| Error::Invalid(e.0))?;
                    if Some(b.id) == head_tree {
                        // The latest snapshot's trees: all stored already.
                        root.mark_all_stored();
                        new.clear();
                    }
                    let errors = st.errors.clone();
                    return Ok((b, new, errors));
                }
            }
        }
        let scanned = scan::scan(&self.store, &live.config.path, &[Vec::new()], &live.filter);
        let Some(update) = scanned.updates.into_iter().next() else {
            return Err(Error::Invalid("scan returned nothing".into()));
        };
        let Some(Node::Dir(mut root)) = update.node else {
            return Err(Error::Invalid(format!(
                "dataset directory {} is missing or not a directory",
                live.config.path.display()
            )));
        };
        let b = root.build(&mut new).map_err(|e| Error::Invalid(e.0))?;
        let mut st = live.lock();
        st.errors = scanned.errors.clone();
        if st.watching == Some(Ok(())) {
            st.root = Some(root);
        }
        Ok((b, new, scanned.errors))
    }

    /// Records a snapshot of a dataset's current content.
    pub fn snapshot(&self, name: &str, req: SnapshotRequest) -> Result<Made> {
        let live = self.get(name)?;
        let _g = self.snapshotting.lock().unwrap_or_else(|e| e.into_inner());
        let (root, trees, errors) = self.current(&live, req.rescan)?;
        if !errors.is_empty() {
            let list: Vec<String> = errors
                .iter()
                .take(10)
                .map(|(p, m)| format!("{p}: {m}"))
                .collect();
            return Err(Error::Conflict(format!(
                "{} path(s) of dataset {name} could not be read, so no snapshot was made:\n  {}\nfix them (or exclude them) and retry",
                errors.len(),
                list.join("\n  ")
            )));
        }
        for d in req.derived.iter().chain(&req.merge) {
            if self.snapshot_object(d)?.is_none() {
                return Err(Error::NotFound(format!(
                    "--from names snapshot {d}, which this store does not hold; fetch it first"
                )));
            }
        }
        let head = self.head(name)?;
        if let Some(h) = head {
            let hs = self.snapshot_object(&h)?.ok_or_else(|| {
                Error::Corrupt(format!(
                    "dataset {name} points at snapshot {h}, which is missing"
                ))
            })?;
            if hs.tree == root.id
                && !req.allow_empty
                && req.derived.is_empty()
                && req.merge.is_empty()
            {
                return Ok(Made {
                    id: h,
                    snapshot: hs,
                    unchanged: true,
                });
            }
        }
        let objs: Vec<(ObjectKind, Id, Vec<u8>)> = trees
            .into_iter()
            .map(|(id, enc)| (ObjectKind::Tree, id, enc))
            .collect();
        self.store.put_objects(&objs)?;
        let stored: HashSet<Id> = objs.iter().map(|o| o.1).collect();
        if let Some(r) = live.lock().root.as_mut() {
            r.mark_stored(&stored);
        }
        let snap = Snapshot {
            tree: root.id,
            size: root.size,
            files: root.files,
            time_ns: crate::ingest::now_ns(),
            dataset: name.to_string(),
            parents: head.into_iter().chain(req.merge.iter().copied()).collect(),
            derived: req.derived,
            message: req.message,
            meta: req.meta,
        };
        snap.check().map_err(|e| Error::Invalid(e.0))?;
        let enc = snap.encode();
        let id = Id::of(&enc);
        self.store.put_objects(&[(ObjectKind::Snapshot, id, enc)])?;
        self.note_lineage(&id, &snap)?;
        match self
            .store
            .cas_ref(&objects::dataset_ref(name), head, Some(id))?
        {
            Ok(()) => Ok(Made {
                id,
                snapshot: snap,
                unchanged: false,
            }),
            Err(now) => Err(Error::Transient(format!(
                "dataset {name} moved to {} while the snapshot was made; retry",
                now.map(|i| i.hex()).unwrap_or_else(|| "nothing".into())
            ))),
        }
    }

    /// Records the reverse lineage links of a stored snapshot (so lineage
    /// can be walked downstream).
    pub fn note_lineage(&self, id: &Id, snap: &Snapshot) -> Result<()> {
        accept::note_lineage(&self.store, id, snap)
    }

    /// Snapshots recorded as derived from `id`.
    pub fn derived_from(&self, id: &Id) -> Result<Vec<Id>> {
        Ok(self
            .store
            .local_entries(&format!("derived/{}/", id.hex()))?
            .into_iter()
            .filter_map(|(k, _)| Id::parse(&k).ok())
            .collect())
    }

    pub fn snapshot_object(&self, id: &Id) -> Result<Option<Snapshot>> {
        match self.store.object(id)? {
            Some(Object::Snapshot(s)) => Ok(Some(s)),
            Some(_) => Err(Error::NotFound(format!("{id} is a tree, not a snapshot"))),
            None => Ok(None),
        }
    }

    pub fn tree(&self, id: &Id) -> Result<Tree> {
        match self.store.object(id)? {
            Some(Object::Tree(t)) => Ok(t),
            Some(_) => Err(Error::Corrupt(format!("{id} is a snapshot, not a tree"))),
            None => Err(Error::NotFound(format!(
                "tree {id} is not in this store; fetch the snapshot that holds it"
            ))),
        }
    }

    /// The directory model of a stored tree.
    pub fn load_dir(&self, tree: &Id) -> Result<(Dir, Built)> {
        // Counted first (each distinct tree once): a tree too deep or too
        // big to expand is refused before anything is expanded.
        let mut load = |id: &Id| self.tree(id).map(Some);
        walk::totals(tree, &mut load, &|why| {
            Error::Invalid(format!("tree {tree} cannot be expanded: {why}"))
        })?;
        Dir::from_tree(tree, &mut |id| self.tree(id))
    }

    /// The files of every watched dataset's current content (what a prune
    /// must keep even before it is snapshotted).
    pub fn current_files(&self) -> Vec<Id> {
        let mut out = Vec::new();
        for live in self.all() {
            if let Some(root) = &live.lock().root {
                for (_, node) in root.files() {
                    match node {
                        state::Node::File { id, .. } | state::Node::Symlink { id, .. } => {
                            out.push(*id)
                        }
                        state::Node::Dir(_) => {}
                    }
                }
            }
        }
        out
    }

    /// After a prune: every watched dataset re-checks its trees at its next
    /// snapshot instead of trusting that they are stored.
    pub fn forget_stored(&self) {
        for live in self.all() {
            if let Some(root) = &mut live.lock().root {
                root.forget_stored();
            }
        }
    }

    /// A dataset's history from its head, newest first (first parents).
    pub fn log(&self, name: &str, from: Option<Id>, limit: usize) -> Result<Vec<(Id, Snapshot)>> {
        let mut out = Vec::new();
        let mut next = match from {
            Some(f) => Some(f),
            None => self.head(name)?,
        };
        let mut seen = HashSet::new();
        while let Some(id) = next {
            if out.len() >= limit || !seen.insert(id) {
                break;
            }
            let Some(s) = self.snapshot_object(&id)? else {
                if out.is_empty() {
                    return Err(Error::NotFound(format!(
                        "snapshot {id} (in the history of {name}) is not in this store"
                    )));
                }
                // Older history was pruned (or never cloned): it ends here.
                break;
            };
            next = s.parents.first().copied();
            out.push((id, s));
        }
        Ok(out)
    }

    /// Resolves `NAME`, `NAME@TAG`, `NAME@ID-PREFIX`, `NAME@~N` or a full
    /// snapshot id to a snapshot id.
    pub fn resolve(&self, spec: &str) -> Result<Id> {
        if spec.len() == 64 {
            if let Ok(id) = Id::parse(spec) {
                return Ok(id);
            }
        }
        let (name, rev) = match spec.split_once('@') {
            Some((n, r)) => (n, Some(r)),
            None => (spec, None),
        };
        objects::check_dataset_name(name).map_err(|e| Error::Invalid(e.0))?;
        let head = self.head(name)?.ok_or_else(|| {
            Error::NotFound(format!(
                "dataset {name} has no snapshot yet; `hoard snapshot {name}` records one"
            ))
        })?;
        let Some(rev) = rev.filter(|r| !r.is_empty()) else {
            return Ok(head);
        };
        if let Some(n) = rev.strip_prefix('~') {
            let n: usize = n
                .parse()
                .map_err(|_| Error::Invalid(format!("{spec:?}: `~N` needs a number")))?;
            let log = self.log(name, Some(head), n + 1)?;
            return log.get(n).map(|(id, _)| *id).ok_or_else(|| {
                Error::NotFound(format!("{name} has only {} snapshot(s)", log.len()))
            });
        }
        if objects::check_dataset_name(rev).is_ok() {
            if let Some(id) = self.store.get_ref(&objects::tag_ref(name, rev))? {
                return Ok(id);
            }
        }
        let hex = rev.to_ascii_lowercase();
        if hex.len() >= 4 && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            let mut hits: Vec<Id> = self
                .log(name, Some(head), usize::MAX)?
                .into_iter()
                .map(|(id, _)| id)
                .filter(|id| id.hex().starts_with(&hex))
                .collect();
            for (_, id) in self.store.refs(&format!("tags/{name}/"))? {
                if id.hex().starts_with(&hex) && !hits.contains(&id) {
                    hits.push(id);
                }
            }
            match hits.len() {
                1 => return Ok(hits[0]),
                0 => {}
                _ => {
                    return Err(Error::Invalid(format!(
                        "{spec:?} is ambiguous: give more digits of the snapshot id"
                    )))
                }
            }
        }
        Err(Error::NotFound(format!(
            "{spec:?} names no snapshot: use NAME, NAME@TAG, NAME@ID-PREFIX or NAME@~N (`hoard log {name}` lists them)"
        )))
    }

    /// Points a tag at a snapshot (moving an existing tag needs `force`).
    pub fn tag(&self, name: &str, tag: &str, target: Id, force: bool) -> Result<()> {
        objects::check_dataset_name(tag).map_err(|e| Error::Invalid(e.0))?;
        if self.snapshot_object(&target)?.is_none() {
            return Err(Error::NotFound(format!(
                "snapshot {target} is not in this store"
            )));
        }
        let r = objects::tag_ref(name, tag);
        let old = self.store.get_ref(&r)?;
        if old.is_some() && old != Some(target) && !force {
            return Err(Error::Conflict(format!(
                "tag {tag} of {name} already names {}; use --force to move it",
                old.map(|o| o.hex()).unwrap_or_default()
            )));
        }
        match self.store.cas_ref(&r, old, Some(target))? {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::Transient(format!(
                "tag {tag} moved meanwhile; retry"
            ))),
        }
    }

    /// Whether `ancestor` is `descendant` or in its history (all parents).
    pub fn is_ancestor(&self, ancestor: &Id, descendant: &Id) -> Result<bool> {
        let mut stack = vec![*descendant];
        let mut seen = HashSet::new();
        while let Some(id) = stack.pop() {
            if id == *ancestor {
                return Ok(true);
            }
            if !seen.insert(id) {
                continue;
            }
            if let Some(s) = self.snapshot_object(&id)? {
                stack.extend(s.parents);
            }
        }
        Ok(false)
    }

    /// Lineage of a snapshot: upstream (what it was derived from,
    /// recursively) or downstream (what was derived from it).
    pub fn lineage(&self, id: &Id, downstream: bool, depth: usize) -> Result<Vec<LineageLink>> {
        let mut out = Vec::new();
        let mut frontier = vec![(*id, 0usize)];
        let mut seen = HashSet::from([*id]);
        while let Some((at, d)) = frontier.pop() {
            if d >= depth {
                continue;
            }
            let next = if downstream {
                self.derived_from(&at)?
            } else {
                self.snapshot_object(&at)?
                    .map(|s| s.derived)
                    .unwrap_or_default()
            };
            for n in next {
                let snap = self.snapshot_object(&n)?;
                out.push(LineageLink {
                    from: at,
                    to: n,
                    depth: d + 1,
                    snapshot: snap,
                });
                if seen.insert(n) {
                    frontier.push((n, d + 1));
                }
            }
        }
        out.sort_by_key(|l| l.depth);
        Ok(out)
    }
}

/// One step of a lineage walk: `to` is derived from `from` (upstream walk)
/// or `to` was derived from `from` (downstream walk).
#[derive(Debug, Clone)]
pub struct LineageLink {
    pub from: Id,
    pub to: Id,
    pub depth: usize,
    /// None when the linked snapshot is not in this store.
    pub snapshot: Option<Snapshot>,
}
