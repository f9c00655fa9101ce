//! Packs in an S3-compatible object store (Garage, MinIO, Ceph RGW, AWS),
//! through the `object_store` crate: `<prefix>packs/<2 hex>/<64 hex>.pack`,
//! each with its idx object `<64 hex>.idx` beside it (`crate::pack::idx`),
//! and the refs mirrored under `<prefix>refs/<name>`.
//!
//! The contract of [`PackBackend`] holds with "durable" meaning "the object
//! store confirmed it": a sink spools the pack to a local file; `commit`
//! uploads it (a HEAD first: a pack already there under its id is the same
//! pack, named by its content) in multipart parts of [`PART`] bytes with at
//! most [`PARTS_IN_FLIGHT`] in flight, and returns only once the upload
//! completed. Reads are single-range GETs of exactly the bytes asked for
//! (Garage answers a multi-range request with the whole object, so none is
//! ever sent). Endpoints are tried in order: an endpoint that cannot be
//! reached hands the request to the next one, and the one that answered is
//! tried first from then on. Ranges read are kept in a bounded cache
//! (`super::cache`), shared by every reader. A pack read through (a pull:
//! reads each near the one before: `super::runs`) is read in aligned
//! blocks of [`BLOCK`] bytes, a few blocks ahead of the reader: one
//! request per 4 MiB instead of one per frame, and the bucket's latency
//! overlaps the hub's work.
//!
//! The engine calls backends from blocking threads (some inside a tokio
//! runtime's `block_in_place`), so requests run on this backend's own
//! runtime and the caller waits on a channel, never entering a runtime.

use super::cache::ReadCache;
pub use super::runs::BLOCK;
use super::runs::{gather, Runs};
use super::{BackendStatus, PackBackend, PackSink};
use crate::error::{Error, Result};
use crate::id::Id;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Multipart part size.
pub const PART: usize = 8 << 20;
/// Packs whose reads and lengths are remembered.
const TRACKED: usize = 256;
/// A request slower than this is logged.
const SLOW: Duration = Duration::from_secs(2);
/// Parts uploaded at once per pack.
pub const PARTS_IN_FLIGHT: usize = 4;

/// Where the bucket is and how to sign requests.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Tried in order; `http://` only for a loopback or trusted network.
    pub endpoints: Vec<String>,
    pub bucket: String,
    pub region: String,
    /// Key prefix, e.g. `lab1/` (empty: the bucket's root).
    pub prefix: String,
    pub access_key: String,
    pub secret_key: String,
    /// Local directory for packs being written (spooled before upload).
    pub spool: PathBuf,
    /// Bound of the read cache (0: none).
    pub cache_bytes: u64,
}

/// Requests and bytes to and from the bucket since the daemon started.
#[derive(Debug, Default)]
pub struct S3Counters {
    /// HTTP requests sent (a multipart upload counts each of its parts).
    pub requests: AtomicU64,
    /// LIST requests among them (a pull never sends one).
    pub lists: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub failovers: AtomicU64,
}

pub struct S3Packs {
    inner: Arc<Inner>,
}

/// What the backend and its sinks share.
struct Inner {
    stores: Vec<(String, Arc<AmazonS3>)>,
    current: Arc<AtomicUsize>,
    prefix: String,
    bucket: String,
    spool: PathBuf,
    /// Taken at drop, so the runtime never shuts down inside another.
    rt: Option<tokio::runtime::Runtime>,
    counters: Arc<S3Counters>,
    cache: ReadCache,
    /// Per pack: the readers running through it.
    seq: std::sync::Mutex<std::collections::HashMap<Id, Runs>>,
    ticks: AtomicU64,
    /// Pack lengths learnt from HEADs.
    sizes: std::sync::Mutex<std::collections::HashMap<Id, u64>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl S3Packs {
    /// The bucket's request and byte counters.
    pub fn counters(&self) -> Arc<S3Counters> {
        self.inner.counters.clone()
    }

    /// The endpoint requests go to now.
    pub fn endpoint(&self) -> &str {
        self.inner.endpoint()
    }

    pub fn open(cfg: S3Config) -> Result<S3Packs> {
        if cfg.endpoints.is_empty() {
            return Err(Error::Invalid(
                "[store] backend = \"s3\" needs s3_endpoints (e.g. [\"http://127.0.0.1:3900\"])"
                    .into(),
            ));
        }
        // https:// endpoints use rustls on ring, like the rest of hoard.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut stores = Vec::new();
        for ep in &cfg.endpoints {
            // Few quick retries per endpoint: an endpoint that is down hands
            // over to the next one instead of being retried for minutes.
            // 5xx answers and timeouts are retried with backoff; a first
            // write after a cluster node died can take several seconds
            // (FIELD-NOTES), so requests get a minute.
            let retry = RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            };
            let options = ClientOptions::new()
                .with_allow_http(ep.starts_with("http://"))
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(60));
            let s = AmazonS3Builder::new()
                .with_endpoint(ep)
                .with_bucket_name(&cfg.bucket)
                .with_region(&cfg.region)
                .with_access_key_id(&cfg.access_key)
                .with_secret_access_key(&cfg.secret_key)
                .with_virtual_hosted_style_request(false)
                .with_retry(retry)
                .with_client_options(options)
                .build()
                .map_err(|e| Error::Invalid(format!("S3 endpoint {ep}: {e}")))?;
            stores.push((ep.clone(), Arc::new(s)));
        }
        std::fs::create_dir_all(&cfg.spool)
            .map_err(|e| Error::io("cannot create the pack spool directory", &cfg.spool, e))?;
        if let Ok(rd) = std::fs::read_dir(&cfg.spool) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hoard-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the S3 runtime: {e}")))?;
        Ok(S3Packs {
            inner: Arc::new(Inner {
                stores,
                current: Arc::new(AtomicUsize::new(0)),
                prefix: cfg.prefix,
                bucket: cfg.bucket,
                spool: cfg.spool,
                rt: Some(rt),
                counters: Arc::new(S3Counters::default()),
                cache: ReadCache::new(cfg.cache_bytes),
                seq: Default::default(),
                ticks: AtomicU64::new(0),
                sizes: Default::default(),
            }),
        })
    }
}

impl Inner {
    fn key(&self, id: &Id) -> Key {
        let h = id.hex();
        Key::from(format!("{}packs/{}/{h}.pack", self.prefix, &h[..2]))
    }

    fn idx_key(&self, id: &Id) -> Key {
        let h = id.hex();
        Key::from(format!("{}packs/{}/{h}.idx", self.prefix, &h[..2]))
    }

    /// Exactly `len` bytes at `offset` of pack `id`, one range GET.
    fn exact(&self, id: &Id, offset: u64, len: usize) -> Result<bytes::Bytes> {
        let key = self.key(id);
        let range = offset..offset + len as u64;
        let got = self.call(&format!("reading pack {}", id.hex()), move |s| {
            let (k, r) = (key.clone(), range.clone());
            async move { s.get_range(&k, r).await }
        })?;
        if got.len() != len {
            return Err(Error::Corrupt(format!(
                "pack {} is shorter than the index says (reading {len} bytes at {offset})",
                id.hex()
            )));
        }
        self.counters
            .bytes_read
            .fetch_add(len as u64, Ordering::Relaxed);
        Ok(got)
    }

    /// Block `k` of pack `id` (of `size` bytes), through the cache.
    fn block(&self, id: &Id, k: u64, size: u64) -> Result<bytes::Bytes> {
        let start = k * BLOCK;
        let len = BLOCK.min(size - start) as usize;
        self.cache
            .get_or_fetch((*id, start, len), || self.exact(id, start, len))
    }

    /// The bytes asked for, when cached blocks hold them all (read earlier
    /// by a reader running through the pack).
    fn cached_in_blocks(&self, id: &Id, offset: u64, len: usize) -> Option<bytes::Bytes> {
        let size = *self
            .sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)?;
        if offset + len as u64 > size {
            return None;
        }
        gather::<()>(offset, len, |k| {
            let start = k * BLOCK;
            Ok(self
                .cache
                .peek(&(*id, start, BLOCK.min(size - start) as usize)))
        })
        .ok()
        .flatten()
    }

    /// Pack `id`'s length (one HEAD, then remembered).
    fn size(&self, id: &Id) -> Result<u64> {
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = sizes.get(id) {
            return Ok(*n);
        }
        drop(sizes);
        let key = self.key(id);
        let n = self.call(&format!("checking pack {}", id.hex()), move |s| {
            let k = key.clone();
            async move { s.head(&k).await.map(|m| m.size) }
        })?;
        sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        if sizes.len() >= TRACKED {
            sizes.clear();
        }
        sizes.insert(*id, n);
        Ok(n)
    }

    /// Whether this read of pack `id` continues a reader's run through it;
    /// then the blocks to fetch ahead (see [`Runs::read`]).
    fn sequential(&self, id: &Id, offset: u64, len: usize) -> Option<std::ops::Range<u64>> {
        let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        if seq.len() >= TRACKED && !seq.contains_key(id) {
            seq.clear();
        }
        let tick = self.ticks.fetch_add(1, Ordering::Relaxed);
        seq.entry(*id).or_default().read(offset, len, tick)
    }

    /// Counts `n` requests (a multipart upload is several).
    fn count(&self, n: u64) {
        self.counters.requests.fetch_add(n, Ordering::Relaxed);
    }

    fn endpoint(&self) -> &str {
        &self.stores[self.current.load(Ordering::Relaxed) % self.stores.len()].0
    }

    /// Runs `op` against the current endpoint, then each other one in turn
    /// while the error is not an answer (not found, bad request...).
    fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(Arc<AmazonS3>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = object_store::Result<T>> + Send + 'static,
    {
        let stores = self.stores.clone();
        let op_name = what.to_string();
        let current = self.current.clone();
        let counters = self.counters.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let Some(rt) = &self.rt else {
            return Err(Error::Internal("the S3 backend is shut down".into()));
        };
        rt.spawn(async move {
            let n = stores.len();
            let first = current.load(Ordering::Relaxed) % n;
            let mut last = None;
            for k in 0..n {
                let i = (first + k) % n;
                counters.requests.fetch_add(1, Ordering::Relaxed);
                let t = std::time::Instant::now();
                let r = op(stores[i].1.clone()).await;
                if t.elapsed() > SLOW {
                    tracing::info!(endpoint = %stores[i].0, what = %op_name, secs = t.elapsed().as_secs_f64(), ok = r.is_ok(), "slow S3 request");
                }
                match r {
                    Ok(v) => {
                        if i != first {
                            current.store(i, Ordering::Relaxed);
                            counters.failovers.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = tx.send(Ok(v));
                        return;
                    }
                    Err(e) if is_answer(&e) => {
                        let _ = tx.send(Err((stores[i].0.clone(), e)));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(endpoint = %stores[i].0, error = %e, "S3 endpoint failed; trying the next");
                        last = Some((stores[i].0.clone(), e));
                    }
                }
            }
            if let Some(l) = last {
                let _ = tx.send(Err(l));
            }
        });
        let r = rx
            .recv()
            .map_err(|_| Error::Internal(format!("the S3 task for {what} went away")))?;
        r.map_err(|(ep, e)| match e {
            object_store::Error::NotFound { .. } => {
                Error::Corrupt(format!("{what}: not in bucket {} at {ep}", self.bucket))
            }
            e => Error::Transient(format!(
                "{what}: the object store at {ep} failed ({e}); check that it is up and that s3_endpoints, s3_bucket and the credentials are right"
            )),
        })
    }

    /// Uploads a spooled pack, then its idx: both are durable when this
    /// returns `Ok`.
    fn upload(
        &self,
        id: &Id,
        file: &std::path::Path,
        len: u64,
        idx: Option<Vec<u8>>,
    ) -> Result<()> {
        self.upload_pack(id, file, len)?;
        let Some(idx) = idx else { return Ok(()) };
        let key = self.idx_key(id);
        let body = bytes::Bytes::from(idx);
        let n = body.len() as u64;
        self.call(
            &format!("uploading the idx of pack {}", id.hex()),
            move |s| {
                let (k, b) = (key.clone(), body.clone());
                async move { s.put(&k, b.into()).await.map(|_| ()) }
            },
        )?;
        self.counters.bytes_written.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    fn upload_pack(&self, id: &Id, file: &std::path::Path, len: u64) -> Result<()> {
        let key = self.key(id);
        let k = key.clone();
        let there = self.call(&format!("checking pack {}", id.hex()), move |s| {
            let k = k.clone();
            async move {
                match s.head(&k).await {
                    Ok(m) => Ok(Some(m.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })?;
        if there == Some(len) {
            return Ok(());
        }
        let path = file.to_path_buf();
        let counters = self.counters.clone();
        // Create and complete, besides the parts counted as they go.
        self.count(1);
        self.call(&format!("uploading pack {}", id.hex()), move |s| {
            let (k, path, counters) = (key.clone(), path.clone(), counters.clone());
            async move {
                let up = s.put_multipart(&k).await?;
                let mut w = WriteMultipart::new_with_chunk_size(up, PART);
                let mut f = File::open(&path).map_err(|e| object_store::Error::Generic {
                    store: "spool",
                    source: Box::new(e),
                })?;
                let mut buf = vec![0u8; PART];
                loop {
                    let n =
                        read_full(&mut f, &mut buf).map_err(|e| object_store::Error::Generic {
                            store: "spool",
                            source: Box::new(e),
                        })?;
                    if n == 0 {
                        break;
                    }
                    w.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                    w.write(&buf[..n]);
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                    counters
                        .bytes_written
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                w.finish().await.map(|_| ())
            }
        })
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Whether an error is the store's answer (no other endpoint would answer
/// differently), not a failure to reach it.
fn is_answer(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
    )
}

impl PackBackend for S3Packs {
    fn create(&self) -> Result<Box<dyn PackSink>> {
        let (file, path) = super::tempfile_in(&self.inner.spool)?;
        Ok(Box::new(S3Sink {
            file: Some(file),
            path,
            len: 0,
            idx: None,
            backend: self.inner.clone(),
        }))
    }

    fn read_at(&self, id: &Id, offset: u64, buf: &mut [u8]) -> Result<()> {
        let b = self.read_bytes(id, offset, buf.len())?;
        buf.copy_from_slice(&b);
        Ok(())
    }

    fn read_vec(&self, id: &Id, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.read_bytes(id, offset, len).map(|b| b.to_vec())
    }

    fn read_bytes(&self, id: &Id, offset: u64, len: usize) -> Result<bytes::Bytes> {
        let inner = &self.inner;
        let Some(ahead) = inner.sequential(id, offset, len) else {
            if let Some(b) = inner.cached_in_blocks(id, offset, len) {
                return Ok(b);
            }
            let key = (*id, offset, len);
            return inner
                .cache
                .get_or_fetch(key, || inner.exact(id, offset, len));
        };
        // Sequential: whole blocks through the cache, the next ones fetched
        // ahead while the caller works on this one.
        let size = inner.size(id)?;
        let end = offset + len as u64;
        if end > size {
            return Err(Error::Corrupt(format!(
                "pack {} is shorter than the index says (reading {len} bytes at {offset})",
                id.hex()
            )));
        }
        for k in ahead {
            if k * BLOCK < size {
                let (inner, id) = (self.inner.clone(), *id);
                if let Some(rt) = &self.inner.rt {
                    rt.spawn_blocking(move || inner.block(&id, k, size));
                }
            }
        }
        // A block shorter than the pack's length said (the object changed
        // under us) leaves the range incomplete.
        gather(offset, len, |k| inner.block(id, k, size).map(Some))?.ok_or_else(|| {
            Error::Corrupt(format!(
                "pack {} in the bucket is shorter than its length said (reading {len} bytes at {offset}); run `hoard verify`",
                id.hex()
            ))
        })
    }

    fn open(&self, id: &Id) -> Result<(Box<dyn Read + Send>, u64)> {
        let key = self.inner.key(id);
        let got = self
            .inner
            .call(&format!("reading pack {}", id.hex()), move |s| {
                let k = key.clone();
                async move { s.get(&k).await?.bytes().await }
            })?;
        self.inner
            .counters
            .bytes_read
            .fetch_add(got.len() as u64, Ordering::Relaxed);
        let len = got.len() as u64;
        Ok((Box::new(io::Cursor::new(got)), len))
    }

    fn list(&self) -> Result<Vec<(Id, u64)>> {
        use futures_util::TryStreamExt;
        let prefix = Key::from(format!("{}packs", self.inner.prefix));
        self.inner.counters.lists.fetch_add(1, Ordering::Relaxed);
        let metas: Vec<object_store::ObjectMeta> = self.inner.call("listing packs", move |s| {
            let p = prefix.clone();
            async move { s.list(Some(&p)).try_collect().await }
        })?;
        let mut out: Vec<(Id, u64)> = metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?;
                let id = Id::parse(name.strip_suffix(".pack")?).ok()?;
                Some((id, m.size))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn describe(&self, id: &Id) -> String {
        format!(
            "s3://{}/{} (at {})",
            self.inner.bucket,
            self.inner.key(id),
            self.inner.endpoint()
        )
    }

    fn mirror_ref(&self, name: &str, id: Option<&Id>) -> Result<()> {
        let key = Key::from(format!("{}refs/{name}", self.inner.prefix));
        let body = id.map(|i| i.hex());
        self.inner.call(&format!("mirroring ref {name}"), move |s| {
            let (k, body) = (key.clone(), body.clone());
            async move {
                match body {
                    Some(b) => s.put(&k, b.into_bytes().into()).await.map(|_| ()),
                    None => match s.delete(&k).await {
                        Err(object_store::Error::NotFound { .. }) => Ok(()),
                        r => r,
                    },
                }
            }
        })
    }

    fn mirrored_refs(&self) -> Result<Vec<(String, Id)>> {
        use futures_util::TryStreamExt;
        let root = format!("{}refs/", self.inner.prefix);
        let prefix = Key::from(root.trim_end_matches('/'));
        let root2 = root.clone();
        self.inner.counters.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.call("reading mirrored refs", move |s| {
            let (p, root) = (prefix.clone(), root2.clone());
            async move {
                let metas: Vec<object_store::ObjectMeta> = s.list(Some(&p)).try_collect().await?;
                let mut out = Vec::new();
                for m in metas {
                    let body = s.get(&m.location).await?.bytes().await?;
                    let name = m.location.as_ref().strip_prefix(&root).map(str::to_string);
                    let id = std::str::from_utf8(&body)
                        .ok()
                        .and_then(|h| Id::parse(h.trim()).ok());
                    if let (Some(name), Some(id)) = (name, id) {
                        out.push((name, id));
                    }
                }
                Ok(out)
            }
        })
    }

    fn delete(&self, id: &Id) -> Result<()> {
        // The pack first: an idx left by a crash between the two names a
        // pack no listing shows, and is never read.
        for key in [self.inner.key(id), self.inner.idx_key(id)] {
            self.inner
                .call(&format!("deleting pack {}", id.hex()), move |s| {
                    let k = key.clone();
                    async move {
                        match s.delete(&k).await {
                            Err(object_store::Error::NotFound { .. }) => Ok(()),
                            r => r,
                        }
                    }
                })?;
        }
        Ok(())
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn read_idx(&self, id: &Id) -> Result<Option<Vec<u8>>> {
        let key = self.inner.idx_key(id);
        let got = self
            .inner
            .call(&format!("reading the idx of pack {}", id.hex()), move |s| {
                let k = key.clone();
                async move {
                    match s.get(&k).await {
                        Ok(r) => r.bytes().await.map(Some),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })?;
        if let Some(b) = &got {
            self.inner
                .counters
                .bytes_read
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        Ok(got.map(|b| b.to_vec()))
    }

    fn status(&self) -> BackendStatus {
        let c = &self.inner.counters;
        let cache = self.inner.cache.stats();
        BackendStatus {
            kind: "s3".into(),
            location: format!("s3://{}/{}", self.inner.bucket, self.inner.prefix),
            endpoint: self.inner.endpoint().to_string(),
            requests: c.requests.load(Ordering::Relaxed),
            lists: c.lists.load(Ordering::Relaxed),
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            cache_bytes: cache.bytes,
            failovers: c.failovers.load(Ordering::Relaxed),
        }
    }
}

/// A pack spooled to a local file until `commit` uploads it.
struct S3Sink {
    file: Option<File>,
    path: PathBuf,
    len: u64,
    idx: Option<Vec<u8>>,
    backend: Arc<Inner>,
}

impl Write for S3Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("pack already committed"))?;
        let n = f.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PackSink for S3Sink {
    fn set_idx(&mut self, idx: Vec<u8>) {
        self.idx = Some(idx);
    }

    fn commit(mut self: Box<Self>, id: &Id) -> Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::Corrupt("pack committed twice".into()))?;
        drop(file);
        let r = self
            .backend
            .upload(id, &self.path, self.len, self.idx.take());
        let _ = std::fs::remove_file(&self.path);
        r
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
