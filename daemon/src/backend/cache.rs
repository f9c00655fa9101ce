//! A bounded read cache for a backend far away (an object store): the
//! ranges read most recently, least recently used out first. Concurrent
//! readers of one range wait for the first one's request instead of each
//! sending their own, so a hub serving one version to many pullers at once
//! reads each frame from the bucket about once.

use crate::error::Result;
use crate::id::Id;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// A range of a pack: (pack, offset, length).
pub type RangeKey = (Id, u64, usize);

pub struct ReadCache {
    max_bytes: u64,
    state: Mutex<State>,
    /// One gate per range being fetched.
    inflight: Mutex<HashMap<RangeKey, Arc<Mutex<()>>>>,
}

#[derive(Default)]
struct State {
    entries: HashMap<RangeKey, (Bytes, u64)>,
    /// Use tick → range, oldest first.
    order: BTreeMap<u64, RangeKey>,
    bytes: u64,
    tick: u64,
    hits: u64,
    misses: u64,
}

/// What the cache holds and how often it answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub bytes: u64,
}

impl ReadCache {
    /// A cache of at most `max_bytes` (0: nothing is cached).
    pub fn new(max_bytes: u64) -> ReadCache {
        ReadCache {
            max_bytes,
            state: Mutex::new(State::default()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub fn stats(&self) -> CacheStats {
        let s = self.lock();
        CacheStats {
            hits: s.hits,
            misses: s.misses,
            bytes: s.bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached bytes of `key`, or `fetch`'s (then kept). A reader that
    /// finds `key` being fetched waits for that fetch.
    pub fn get_or_fetch(
        &self,
        key: RangeKey,
        fetch: impl FnOnce() -> Result<Bytes>,
    ) -> Result<Bytes> {
        if self.max_bytes == 0 || key.2 as u64 > self.max_bytes {
            self.lock().misses += 1;
            return fetch();
        }
        if let Some(b) = self.get(&key) {
            return Ok(b);
        }
        let gate = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let held = gate.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = self.get(&key) {
            return Ok(b);
        }
        self.lock().misses += 1;
        let got = fetch();
        if let Ok(b) = &got {
            self.insert(key, b.clone());
        }
        drop(held);
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if inflight.get(&key).is_some_and(|g| Arc::ptr_eq(g, &gate)) {
            inflight.remove(&key);
        }
        got
    }

    /// The cached bytes of `key`, if held (counted as a hit), never fetching.
    pub fn peek(&self, key: &RangeKey) -> Option<Bytes> {
        if self.max_bytes == 0 {
            return None;
        }
        self.get(key)
    }

    fn get(&self, key: &RangeKey) -> Option<Bytes> {
        let mut s = self.lock();
        let tick = s.tick + 1;
        let (b, old) = s.entries.get_mut(key).map(|e| {
            let old = e.1;
            e.1 = tick;
            (e.0.clone(), old)
        })?;
        s.tick = tick;
        s.order.remove(&old);
        s.order.insert(tick, *key);
        s.hits += 1;
        Some(b)
    }

    fn insert(&self, key: RangeKey, b: Bytes) {
        let mut s = self.lock();
        if s.entries.contains_key(&key) {
            return;
        }
        let len = b.len() as u64;
        while s.bytes + len > self.max_bytes {
            let Some((_, oldest)) = s.order.pop_first() else {
                break;
            };
            if let Some((gone, _)) = s.entries.remove(&oldest) {
                s.bytes -= gone.len() as u64;
            }
        }
        s.tick += 1;
        let tick = s.tick;
        s.order.insert(tick, key);
        s.entries.insert(key, (b, tick));
        s.bytes += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(n: u64) -> RangeKey {
        (Id::of(b"pack"), n, 10)
    }

    #[test]
    fn keeps_recent_ranges_within_its_bound() {
        let c = ReadCache::new(25);
        let fetches = AtomicUsize::new(0);
        let get = |n: u64| {
            c.get_or_fetch(key(n), || {
                fetches.fetch_add(1, Ordering::Relaxed);
                Ok(Bytes::from(vec![n as u8; 10]))
            })
            .unwrap()
        };
        assert_eq!(get(1)[0], 1);
        get(2);
        get(1); // hit; 2 is now the oldest
        get(3); // evicts 2
        assert_eq!(fetches.load(Ordering::Relaxed), 3);
        get(1);
        get(3);
        assert_eq!(fetches.load(Ordering::Relaxed), 3);
        get(2);
        assert_eq!(fetches.load(Ordering::Relaxed), 4);
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.bytes), (3, 4, 20));
    }

    #[test]
    fn concurrent_readers_of_one_range_fetch_it_once() {
        let c = Arc::new(ReadCache::new(1 << 20));
        let fetches = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (c, f) = (c.clone(), fetches.clone());
                std::thread::spawn(move || {
                    c.get_or_fetch(key(7), || {
                        f.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        Ok(Bytes::from_static(b"0123456789"))
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(&t.join().unwrap()[..], b"0123456789");
        }
        assert_eq!(fetches.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_failed_fetch_is_not_kept_and_nothing_is_cached_at_zero() {
        let c = ReadCache::new(100);
        let r = c.get_or_fetch(key(1), || {
            Err(crate::error::Error::Transient("down".into()))
        });
        assert!(r.is_err());
        assert_eq!(c.stats().bytes, 0);
        let z = ReadCache::new(0);
        z.get_or_fetch(key(1), || Ok(Bytes::from_static(b"0123456789")))
            .unwrap();
        assert_eq!(
            z.stats(),
            CacheStats {
                hits: 0,
                misses: 1,
                bytes: 0
            }
        );
    }
}
