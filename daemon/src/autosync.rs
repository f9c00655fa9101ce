//! Auto-sync: datasets that name a remote push their new snapshots (and
//! content) there in the background, with exponential backoff after a
//! failure (a bad token or URL too: `remotes.toml` may be mended without
//! telling the daemon). A conflict (the remote's history is not in this
//! one's) is not retried: it waits until the dataset's head moves or its
//! configuration changes, and `hoard dataset list` shows it as
//! `failing: conflict` with the commands that resolve it.
//!
//! May import: `dataset`, `sync`, `error`. Only the services and `daemon`
//! import it.

use crate::dataset::{Datasets, Live};
use crate::error::{Error, Kind};
use crate::sync::dataset::Remote;
use crate::sync::PeerAddr;
use hoard_proto::paths::Paths;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Longest wait between attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Even with nothing to do, look again this often.
const IDLE_CHECK: Duration = Duration::from_secs(30);

pub struct AutoSync {
    wake: Arc<(Mutex<bool>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AutoSync {
    pub fn start(ds: Arc<Datasets>, paths: Paths) -> std::io::Result<AutoSync> {
        let wake = Arc::new((Mutex::new(false), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (w, s) = (wake.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("hoard-autosync".into())
            .spawn(move || run(&ds, &paths, &w, &s))?;
        Ok(AutoSync {
            wake,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Asks for an attempt now (after a snapshot or a configuration change).
    pub fn poke(&self) {
        let (m, c) = &*self.wake;
        *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
        c.notify_all();
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.poke();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// How to reach remote `name` from `remotes.toml`.
pub fn peer_addr(paths: &Paths, name: &str) -> Result<PeerAddr, String> {
    PeerAddr::from_remotes(paths, Some(name)).map(|(_, a)| a)
}

/// Per dataset: consecutive failures and when to try next.
type Failing = HashMap<String, (u32, Instant)>;

fn run(ds: &Datasets, paths: &Paths, wake: &(Mutex<bool>, Condvar), stop: &AtomicBool) {
    let mut failing: Failing = HashMap::new();
    while !stop.load(Ordering::SeqCst) && !ds.store.is_shutting_down() {
        let mut next_wake = Instant::now() + IDLE_CHECK;
        for live in ds.all() {
            if let Some(at) = attempt(ds, paths, &live, &mut failing) {
                next_wake = next_wake.min(at);
            }
        }
        let (m, c) = wake;
        let mut poked = m.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = next_wake.saturating_duration_since(Instant::now());
        if !*poked {
            poked = c
                .wait_timeout(poked, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *poked = false;
    }
}

/// Pushes one dataset if it is due; returns when to look at it again
/// (None: when something changes).
fn attempt(ds: &Datasets, paths: &Paths, live: &Live, failing: &mut Failing) -> Option<Instant> {
    let remote_name = live.config.remote.clone()?;
    let head = match ds.head(&live.name) {
        Ok(Some(h)) => h,
        _ => return None,
    };
    {
        let st = live.lock();
        if st.sync.pushed == Some(head) || st.sync.conflict_at == Some(head) {
            // Synced, or a conflict at this head: only a new snapshot, a
            // forced push or a configuration change moves it on.
            return None;
        }
    }
    if let Some((_, at)) = failing.get(&live.name) {
        if *at > Instant::now() {
            let mut st = live.lock();
            st.sync.retry_in = Some(at.saturating_duration_since(Instant::now()).as_secs());
            return Some(*at);
        }
    }
    let r = peer_addr(paths, &remote_name)
        .map_err(Error::Invalid)
        .and_then(|addr| {
            let remote = Remote {
                name: remote_name.clone(),
                addr,
            };
            crate::sync::dataset::push(ds, &remote, &live.name, false, &mut |_| {})
        });
    let mut st = live.lock();
    st.sync.attempts += 1;
    match r {
        Ok(p) => {
            tracing::info!(dataset = %live.name, remote = %remote_name, snapshots = p.snapshots_sent, "pushed");
            st.sync.pushed = p.snapshot;
            st.sync.last_error = None;
            st.sync.kind = None;
            st.sync.retry_in = None;
            st.sync.conflict_at = None;
            failing.remove(&live.name);
            None
        }
        Err(e) if e.kind() == Kind::Conflict => {
            tracing::warn!(dataset = %live.name, remote = %remote_name, error = %e, "auto-sync stopped until this is resolved");
            st.sync.kind = Some(e.kind());
            st.sync.last_error = Some(e.to_string());
            st.sync.retry_in = None;
            st.sync.conflict_at = Some(head);
            failing.remove(&live.name);
            None
        }
        Err(e) => {
            let n = failing.get(&live.name).map(|f| f.0 + 1).unwrap_or(1);
            let wait = Duration::from_secs(1u64 << n.min(9)).min(MAX_BACKOFF);
            tracing::warn!(dataset = %live.name, remote = %remote_name, error = %e, retry_in = ?wait, "auto-sync failed");
            st.sync.kind = Some(e.kind());
            st.sync.last_error = Some(e.to_string());
            st.sync.retry_in = Some(wait.as_secs());
            let at = Instant::now() + wait;
            failing.insert(live.name.clone(), (n, at));
            Some(at)
        }
    }
}
