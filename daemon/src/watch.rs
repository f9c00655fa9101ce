//! The watcher: keeps a watched dataset's in-memory view current.
//!
//! One thread per watched dataset. notify (inotify on Linux) with
//! notify-debouncer-full reports changed paths once they have been quiet
//! for the debounce time; a path whose file was modified more recently than
//! that is held back until it settles. Changed paths are scanned (the stat
//! cache skips unchanged files) and their nodes replaced. A full rescan
//! runs at start, whenever notify reports lost events (`need_rescan`, e.g.
//! an inotify queue overflow) or an error, and on a timer. When the kernel
//! refuses more watches (`fs.inotify.max_user_watches`), the dataset falls
//! back to periodic scanning and says how to fix it.
//!
//! Floor 11 (services): may import `dataset` and `config`; only `service` and
//! `daemon` import it.

use crate::dataset::scan::{self, Filter};
use crate::dataset::state::{Dir, Node};
use crate::dataset::{Datasets, Live};
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use crate::config::WatchConfig;

enum Msg {
    Events(Vec<notify_debouncer_full::DebouncedEvent>),
    Errors(Vec<notify::Error>),
}

/// A running watcher; dropping it stops the thread.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The running watchers, by dataset.
pub struct Watchers {
    cfg: WatchConfig,
    map: std::sync::Mutex<std::collections::HashMap<String, Watcher>>,
}

impl Watchers {
    pub fn new(cfg: WatchConfig) -> Watchers {
        Watchers {
            cfg,
            map: Default::default(),
        }
    }

    /// Starts or stops the watcher of `live` as its configuration says.
    pub fn apply(&self, ds: &Arc<Datasets>, live: &Arc<Live>) {
        let old = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&live.name);
        drop(old); // joins the old thread
        if !live.config.watch {
            return;
        }
        match start(ds.clone(), live.clone(), self.cfg) {
            Ok(w) => {
                self.map
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(live.name.clone(), w);
            }
            Err(e) => {
                live.lock().watching = Some(Err(format!("cannot start the watcher thread: {e}")));
            }
        }
    }

    pub fn stop(&self, name: &str) {
        let old = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        drop(old);
    }

    /// Stops every watcher (at shutdown).
    pub fn stop_all(&self) {
        let all: Vec<Watcher> = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, w)| w)
            .collect();
        drop(all);
    }
}

/// Starts watching `live` (whose config says `watch`).
pub fn start(ds: Arc<Datasets>, live: Arc<Live>, cfg: WatchConfig) -> std::io::Result<Watcher> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("hoard-watch-{}", live.name))
        .spawn(move || run(&ds, &live, cfg, &s))?;
    Ok(Watcher {
        stop,
        thread: Some(thread),
    })
}

/// The message for a refused watch, with the fix.
fn watch_error(root: &Path, e: &notify::Error) -> String {
    let limit = matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
        || matches!(&e.kind, notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC));
    if limit {
        format!(
            "cannot watch {}: the kernel's inotify watch limit is reached; raise it with `sudo sysctl fs.inotify.max_user_watches=1048576` (and persist it in /etc/sysctl.d/); until then the directory is scanned every poll interval",
            root.display()
        )
    } else {
        format!(
            "cannot watch {}: {e}; the directory is scanned every poll interval instead",
            root.display()
        )
    }
}

fn run(ds: &Datasets, live: &Live, cfg: WatchConfig, stop: &AtomicBool) {
    let root = live.config.path.clone();
    let (tx, rx) = mpsc::channel::<Msg>();
    // Watch first, then scan, so nothing changed during the scan is missed.
    let debouncer = start_watching(live, &root, cfg, tx);
    let watching = debouncer.is_some();
    // Paths waiting to settle, with when to look again.
    let mut deferred: BTreeMap<Vec<u8>, Instant> = BTreeMap::new();
    let settle = cfg.debounce.max(crate::dataset::scan::RECENT);
    for p in full_scan(ds, live) {
        deferred.insert(p, Instant::now() + settle);
    }
    let period = if watching { cfg.rescan } else { cfg.poll };
    let mut next_full = Instant::now() + period;
    while !stop.load(Ordering::SeqCst) && !ds.store.is_shutting_down() {
        let wake = deferred
            .values()
            .min()
            .copied()
            .unwrap_or(next_full)
            .min(next_full)
            .min(Instant::now() + Duration::from_millis(250));
        let timeout = wake.saturating_duration_since(Instant::now());
        let mut changed = Changed::default();
        match rx.recv_timeout(timeout) {
            Ok(m) => {
                changed.take(m, live, &root);
                while let Ok(m) = rx.try_recv() {
                    changed.take(m, live, &root);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if watching {
                    break;
                }
            }
        }
        let now = Instant::now();
        if changed.full || now >= next_full {
            deferred.clear();
            for p in full_scan(ds, live) {
                deferred.insert(p, Instant::now() + settle);
            }
            live.lock().pending = deferred.len() as u64;
            next_full = Instant::now() + period;
            continue;
        }
        ingest_settled(ds, live, &root, changed.paths, &mut deferred, settle);
    }
    drop(debouncer);
}

type Debouncer = notify_debouncer_full::Debouncer<
    notify_debouncer_full::notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Starts notify on `root`, recording in `live` whether it watches (or why
/// not: then the directory is polled).
fn start_watching(
    live: &Live,
    root: &Path,
    cfg: WatchConfig,
    tx: mpsc::Sender<Msg>,
) -> Option<Debouncer> {
    let handler = move |r: DebounceEventResult| {
        let _ = tx.send(match r {
            Ok(ev) => Msg::Events(ev),
            Err(er) => Msg::Errors(er),
        });
    };
    let mut debouncer = match new_debouncer(cfg.debounce, None, handler) {
        Ok(d) => d,
        Err(e) => {
            live.lock().watching = Some(Err(watch_error(root, &e)));
            return None;
        }
    };
    match debouncer.watch(root, RecursiveMode::Recursive) {
        Ok(()) => {
            live.lock().watching = Some(Ok(()));
            Some(debouncer)
        }
        Err(e) => {
            let msg = watch_error(root, &e);
            tracing::warn!(dataset = %live.name, "{msg}");
            live.lock().watching = Some(Err(msg));
            None
        }
    }
}

/// What one round of events says changed.
#[derive(Default)]
struct Changed {
    paths: BTreeSet<Vec<u8>>,
    /// Events were lost, or the root itself changed: rescan everything.
    full: bool,
}

impl Changed {
    fn take(&mut self, m: Msg, live: &Live, root: &Path) {
        match m {
            Msg::Events(evs) => {
                for ev in evs {
                    // Opening and reading (ours included: scans open every
                    // directory) changes nothing.
                    if matches!(ev.kind, notify::EventKind::Access(_)) {
                        continue;
                    }
                    if ev.need_rescan() {
                        tracing::info!(dataset = %live.name, "events were lost; rescanning");
                        self.full = true;
                    }
                    for p in &ev.paths {
                        match p.strip_prefix(root) {
                            Ok(rel) if rel.as_os_str().is_empty() => self.full = true,
                            Ok(rel) => {
                                self.paths.insert(rel.as_os_str().as_bytes().to_vec());
                            }
                            Err(_) => {}
                        }
                    }
                }
            }
            Msg::Errors(errs) => {
                for e in errs {
                    tracing::warn!(dataset = %live.name, error = %e, "watch error; rescanning");
                }
                self.full = true;
            }
        }
    }
}

/// Ingests the changed paths (and the deferred ones whose time has come)
/// that have settled; files written more recently than the debounce time
/// wait in `deferred`.
fn ingest_settled(
    ds: &Datasets,
    live: &Live,
    root: &Path,
    mut paths: BTreeSet<Vec<u8>>,
    deferred: &mut BTreeMap<Vec<u8>, Instant>,
    settle: Duration,
) {
    let now = Instant::now();
    let due: Vec<Vec<u8>> = deferred
        .iter()
        .filter(|(_, t)| **t <= now)
        .map(|(p, _)| p.clone())
        .collect();
    for p in due {
        deferred.remove(&p);
        paths.insert(p);
    }
    if paths.is_empty() {
        return;
    }
    let mut ready = Vec::new();
    for p in paths {
        if live.filter.excluded(&p) {
            continue;
        }
        match modified_ago(&root.join(std::ffi::OsStr::from_bytes(&p))) {
            Some(ago) if ago < settle => {
                deferred.insert(p, now + (settle - ago));
            }
            _ => ready.push(p),
        }
    }
    live.lock().pending = (ready.len() + deferred.len()) as u64;
    for p in update(ds, live, root, &live.filter, reduce(ready)) {
        deferred.entry(p).or_insert_with(|| Instant::now() + settle);
    }
    live.lock().pending = deferred.len() as u64;
}

/// How long ago the file at `p` was last modified (None if absent or a
/// directory: directories are rescanned at once).
fn modified_ago(p: &Path) -> Option<Duration> {
    let m = std::fs::symlink_metadata(p).ok()?;
    if m.is_dir() {
        return None;
    }
    SystemTime::now().duration_since(m.modified().ok()?).ok()
}

/// Drops paths whose ancestor is also listed (scanning the ancestor covers
/// them). Linear in the number of paths times their depth: a burst of 100k
/// events must not cost 100k² comparisons (it once did).
fn reduce(paths: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let all: std::collections::HashSet<&[u8]> = paths.iter().map(|p| p.as_slice()).collect();
    let mut out: Vec<Vec<u8>> = paths
        .iter()
        .filter(|p| {
            !p.iter()
                .enumerate()
                .any(|(i, c)| *c == b'/' && all.contains(&p[..i]))
        })
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Scans the whole dataset; returns the files to look at again once they
/// settle (modified just before the scan).
fn full_scan(ds: &Datasets, live: &Live) -> Vec<Vec<u8>> {
    let root = &live.config.path;
    let scanned = scan::scan(&ds.store, root, &[Vec::new()], &live.filter);
    // A full scan may have filled the index's memtables (new content, stat
    // cache entries); an idle watcher should not keep them in memory.
    if let Err(e) = ds.store.index.flush_memtables() {
        tracing::warn!(error = %e, "cannot flush the index");
    }
    let mut st = live.lock();
    st.errors = scanned.errors;
    st.scans += 1;
    match scanned.updates.into_iter().next().and_then(|u| u.node) {
        Some(Node::Dir(d)) => st.root = Some(d),
        _ => {
            st.root = Some(Dir::default());
            st.errors.push((
                root.display().to_string(),
                "the dataset directory is missing".into(),
            ));
        }
    }
    st.pending = 0;
    drop(st);
    release_memory();
    tracing::debug!(dataset = %live.name, "full scan done");
    scanned.recent
}

/// Hands memory freed after a scan back to the system (glibc keeps freed
/// heap in its arenas otherwise, and an idle watcher should be small).
fn release_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Rescans changed paths; returns the files to look at again once they
/// settle.
fn update(
    ds: &Datasets,
    live: &Live,
    root: &Path,
    filter: &Filter,
    paths: Vec<Vec<u8>>,
) -> Vec<Vec<u8>> {
    if paths.is_empty() {
        return Vec::new();
    }
    let scanned = scan::scan(&ds.store, root, &paths, filter);
    let failed: BTreeSet<&str> = scanned.errors.iter().map(|(p, _)| p.as_str()).collect();
    let mut st = live.lock();
    st.scans += 1;
    // Errors of paths scanned now replace earlier ones for those paths.
    st.errors
        .retain(|(p, _)| !paths.iter().any(|q| p.as_bytes().starts_with(q)));
    let Some(dir) = st.root.as_mut() else {
        return Vec::new();
    };
    for u in scanned.updates {
        match u.node {
            Some(n) => dir.set(&u.path, n),
            None => {
                // An unreadable file keeps its previous version until it
                // can be read; a vanished one goes.
                let display = String::from_utf8_lossy(&u.path);
                if !failed.contains(display.as_ref()) {
                    dir.remove(&u.path);
                }
            }
        }
    }
    st.errors.extend(scanned.errors);
    drop(st);
    release_memory();
    scanned.recent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_limit_error_names_the_sysctl_that_fixes_it() {
        let root = Path::new("/data/survey");
        let limit = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        let m = watch_error(root, &limit);
        assert!(
            m.contains("fs.inotify.max_user_watches") && m.contains("/data/survey"),
            "{m}"
        );
        let enospc = notify::Error::io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(watch_error(root, &enospc).contains("max_user_watches"));
        let other = notify::Error::path_not_found();
        let m = watch_error(root, &other);
        assert!(
            !m.contains("max_user_watches") && m.contains("scanned every poll interval"),
            "{m}"
        );
    }

    #[test]
    fn reduce_keeps_only_outermost_paths() {
        let r = reduce(vec![
            b"a/b".to_vec(),
            b"a".to_vec(),
            b"ab".to_vec(),
            b"c/d/e".to_vec(),
            b"c/d".to_vec(),
        ]);
        assert_eq!(r, vec![b"a".to_vec(), b"ab".to_vec(), b"c/d".to_vec()]);
        // A large flat burst stays as it is (and is reduced quickly).
        let burst: Vec<Vec<u8>> = (0..100_000)
            .map(|i| format!("d/f{i}").into_bytes())
            .collect();
        assert_eq!(reduce(burst).len(), 100_000);
        let with_parent: Vec<Vec<u8>> = std::iter::once(b"d".to_vec())
            .chain((0..100_000).map(|i| format!("d/f{i}").into_bytes()))
            .collect();
        assert_eq!(reduce(with_parent), vec![b"d".to_vec()]);
    }
}
