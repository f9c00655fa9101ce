//! The `delay` capability: a smudge git allows to delay is answered
//! `delayed` at once and its content fetched in the background — small
//! files in batches, [`PREFETCH_PARALLEL`] calls at a time, into memory
//! within [`PREFETCH_BUDGET`] — while git goes on with other files;
//! `list_available_blobs` hands back those that have arrived, and git then
//! asks for each again (answered in [`super::smudge`]).

use super::protocol::{self, Output};
use super::smudge::Source;
use super::{Core, Process};
use crate::connect::{self, Client};
use crate::git::fetch;
use crate::git::path::GitPath;
use crate::git::pointer::Pointer;
use anyhow::Context;
use gix_packetline::blocking_io::encode;
use hoard_proto::paths::Paths;
use hoard_proto::v1::ReadRequest;
use std::collections::{HashMap, VecDeque};
use std::sync::{mpsc as std_mpsc, Arc};
use tokio::sync::Semaphore;

/// Delayed files fetched at once.
const PREFETCH_PARALLEL: usize = 8;
/// Delayed files up to this size are fetched into memory ahead of git's
/// request; larger ones are streamed when git asks.
const PREFETCH_MAX_FILE: u64 = 32 << 20;
/// Memory all prefetched files may hold together.
const PREFETCH_BUDGET: usize = 256 << 20;
/// How long `list_available_blobs` waits for any delayed file.
const DELAYED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);

impl Process {
    /// Answers a smudge git allows to delay: `delayed`, and the content is
    /// fetched in the background.
    pub(super) fn smudge_delayed(
        &mut self,
        path: GitPath,
        p: Pointer,
        out: &mut Output,
    ) -> anyhow::Result<()> {
        // Content cleaned earlier in this session must be durable (and
        // readable) before it is read back.
        if let Err(e) = self.core.flush() {
            eprintln!("hoard: {e:#}");
        }
        // A background connection that failed is replaced once nothing
        // is in flight on it.
        if self.delayed.outstanding == 0 && std::mem::take(&mut self.delayed.saw_failure) {
            self.core.bg = None;
        }
        let paths = self.core.paths.clone();
        match self.core.background() {
            Ok((rt, c)) => {
                self.delayed.start(rt, c, &paths, path, p);
                protocol::write_status(out, "delayed")?;
            }
            Err(e) => {
                eprintln!("hoard: cannot smudge {path}: {e:#}");
                protocol::write_status(out, "error")?;
            }
        }
        Ok(())
    }

    /// Answers `list_available_blobs`: the delayed files that have arrived
    /// (waiting for at least one while any is outstanding).
    pub(super) fn list_available(&mut self, out: &mut Output) -> anyhow::Result<()> {
        for path in self.delayed.wait_available() {
            protocol::write_pathname(out, &path)?;
        }
        encode::flush_to_write(&mut *out)?;
        protocol::write_status(out, "success")?;
        Ok(())
    }
}

impl Core {
    /// The runtime and connection that fetch delayed files in the background.
    fn background(&mut self) -> anyhow::Result<(&tokio::runtime::Runtime, Client)> {
        if self.bg.is_none() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let c = rt.block_on(connect::connect(&self.paths))?;
            self.bg = Some((rt, c));
        }
        let (rt, c) = self.bg.as_ref().expect("set above");
        Ok((rt, c.clone()))
    }
}

/// Files answered `delayed`, fetched in the background: small ones in
/// batches of [`hoard_proto::READ_BATCH_FILES`] per call, larger ones one by
/// one, [`PREFETCH_PARALLEL`] calls at a time, within [`PREFETCH_BUDGET`].
pub(super) struct Delayed {
    /// Started and not yet finished.
    outstanding: usize,
    /// A fetch failed since the background connection was made.
    saw_failure: bool,
    /// Small files waiting to fill a batch.
    batch: Vec<(GitPath, Pointer)>,
    fetcher: Option<(tokio::runtime::Handle, Client, Paths)>,
    done_tx: std_mpsc::Sender<(GitPath, Pointer, Source)>,
    done_rx: std_mpsc::Receiver<(GitPath, Pointer, Source)>,
    /// Finished and announced to git, waiting for it to ask.
    available: HashMap<GitPath, (Pointer, Source)>,
    parallel: Arc<Semaphore>,
    memory: Arc<Semaphore>,
}

impl Delayed {
    pub(super) fn new() -> Self {
        let (done_tx, done_rx) = std_mpsc::channel();
        Delayed {
            outstanding: 0,
            saw_failure: false,
            batch: Vec::new(),
            fetcher: None,
            done_tx,
            done_rx,
            available: HashMap::new(),
            parallel: Arc::new(Semaphore::new(PREFETCH_PARALLEL)),
            memory: Arc::new(Semaphore::new(PREFETCH_BUDGET >> 10)),
        }
    }

    fn start(
        &mut self,
        rt: &tokio::runtime::Runtime,
        client: Client,
        paths: &Paths,
        path: GitPath,
        p: Pointer,
    ) {
        self.outstanding += 1;
        self.fetcher = Some((rt.handle().clone(), client.clone(), paths.clone()));
        if p.size <= hoard_proto::READ_BATCH_MAX_FILE {
            self.batch.push((path, p));
            if self.batch.len() >= hoard_proto::READ_BATCH_FILES {
                self.dispatch();
            }
            return;
        }
        let tx = self.done_tx.clone();
        let parallel = self.parallel.clone();
        let memory = self.memory.clone();
        let paths = paths.clone();
        rt.spawn(async move {
            let src = match parallel.acquire_owned().await {
                Ok(_permit) => prefetch(client, &paths, &p, memory).await,
                Err(_) => Source::Failed("shutting down".into()),
            };
            let _ = tx.send((path, p, src));
        });
    }

    /// Sends the waiting small files as one batch.
    fn dispatch(&mut self) {
        let Some((rt, client, paths)) = self.fetcher.clone() else {
            return;
        };
        let batch = std::mem::take(&mut self.batch);
        if batch.is_empty() {
            return;
        }
        let tx = self.done_tx.clone();
        let parallel = self.parallel.clone();
        let memory = self.memory.clone();
        rt.spawn(async move {
            let Ok(_permit) = parallel.acquire_owned().await else {
                return;
            };
            for (path, p, src) in prefetch_batch(client, &paths, batch, memory).await {
                let _ = tx.send((path, p, src));
            }
        });
    }

    /// Blocks until at least one delayed file is ready (none when nothing
    /// is outstanding) and returns the paths that are.
    fn wait_available(&mut self) -> Vec<GitPath> {
        self.dispatch();
        let mut ready = Vec::new();
        if self.outstanding > 0 {
            // Bounded, so a lost fetch cannot hang git: the files still
            // delayed then fail, and a rerun fetches them.
            if let Ok(first) = self.done_rx.recv_timeout(DELAYED_PATIENCE) {
                ready.push(first);
            }
            while let Ok(more) = self.done_rx.try_recv() {
                ready.push(more);
            }
        }
        let mut paths = Vec::with_capacity(ready.len());
        let mut queue: VecDeque<_> = ready.into();
        while let Some((path, p, src)) = queue.pop_front() {
            self.outstanding -= 1;
            self.saw_failure |= matches!(src, Source::Failed(_));
            paths.push(path.clone());
            self.available.insert(path, (p, src));
        }
        paths
    }

    pub(super) fn take_available(&mut self, path: &GitPath) -> Option<(Pointer, Source)> {
        self.available.remove(path)
    }
}

/// Fetches a batch of small files in one call; those the store lacks go
/// through [`fetch::fetch`] and are read one by one if it finds them.
async fn prefetch_batch(
    mut client: Client,
    paths: &Paths,
    batch: Vec<(GitPath, Pointer)>,
    memory: Arc<Semaphore>,
) -> Vec<(GitPath, Pointer, Source)> {
    let bytes: u64 = batch.iter().map(|(_, p)| p.size).sum();
    let permit = match memory.acquire_many_owned((bytes >> 10) as u32 + 1).await {
        Ok(p) => p,
        Err(_) => {
            return batch
                .into_iter()
                .map(|(path, p)| (path, p, Source::Failed("shutting down".into())))
                .collect();
        }
    };
    let oids = batch.iter().map(|(_, p)| p.oid.to_vec()).collect();
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); batch.len()];
    let mut outcome: Vec<Option<Result<(), (bool, String)>>> = vec![None; batch.len()];
    let read = async {
        let mut s = client
            .read_batch(hoard_proto::v1::ReadBatchRequest { oids })
            .await?
            .into_inner();
        while let Some(m) = s.message().await? {
            let i = m.index as usize;
            if i >= bufs.len() {
                continue;
            }
            if !m.error.is_empty() {
                outcome[i] = Some(Err((m.not_found, m.error)));
                continue;
            }
            bufs[i].extend_from_slice(&m.data);
            if m.last {
                outcome[i] = Some(Ok(()));
            }
        }
        Ok::<_, tonic::Status>(())
    };
    let failure = read
        .await
        .err()
        .map(|e| crate::ui::status_error(e).to_string());
    let mut out = Vec::with_capacity(batch.len());
    // The batch's memory is released once every file is handed over.
    // Those the store lacks go to the one place that can find them
    // elsewhere, all together; found ones are streamed when git asks.
    let absent: Vec<Pointer> = batch
        .iter()
        .zip(&outcome)
        .filter(|(_, o)| matches!(o, Some(Err((true, _)))))
        .map(|((_, p), _)| *p)
        .collect();
    let fetched = if absent.is_empty() {
        Ok(Vec::new())
    } else {
        fetch::fetch(&mut client, paths, &absent)
            .await
            .map(|f| f.present)
            .map_err(|e| format!("{e:#}"))
    };
    let mut fetched_iter = fetched.as_ref().ok().map(|v| v.iter());
    let permit = Arc::new(permit);
    for ((path, p), (buf, o)) in batch.into_iter().zip(bufs.into_iter().zip(outcome)) {
        let src = match (o, &failure) {
            (Some(Ok(())), _) => {
                if buf.len() as u64 == p.size && blake3::hash(&buf).as_bytes() == &p.oid {
                    Source::Shared(buf, permit.clone())
                } else {
                    Source::Failed(format!(
                        "the content read for {} does not match its pointer; run `hoard verify --read-data`",
                        p.oid_string()
                    ))
                }
            }
            (Some(Err((true, _))), _) => {
                match (&fetched, fetched_iter.as_mut().and_then(|i| i.next())) {
                    (_, Some(true)) => Source::Stream,
                    (Err(e), _) => Source::Failed(e.clone()),
                    _ => Source::Missing,
                }
            }
            (Some(Err((false, e))), _) => Source::Failed(e),
            (None, Some(e)) => Source::Failed(e.clone()),
            (None, None) => Source::Failed("the daemon did not send this file".into()),
        };
        out.push((path, p, src));
    }
    out
}

/// Fetches one delayed file: into memory when small, else only checks that
/// it is local (it is streamed when git asks).
async fn prefetch(
    mut client: Client,
    paths: &Paths,
    p: &Pointer,
    memory: Arc<Semaphore>,
) -> Source {
    match fetch::fetch(&mut client, paths, std::slice::from_ref(p)).await {
        Ok(f) if f.missing() > 0 => return Source::Missing,
        Ok(_) => {}
        Err(e) => return Source::Failed(format!("{e:#}")),
    }
    if p.size > PREFETCH_MAX_FILE {
        return Source::Stream;
    }
    let Ok(permit) = memory.acquire_many_owned((p.size >> 10) as u32 + 1).await else {
        return Source::Stream;
    };
    let read = async {
        let mut s = client
            .read(ReadRequest {
                oid: p.oid.to_vec(),
                offset: 0,
                length: None,
            })
            .await?
            .into_inner();
        let mut buf = Vec::with_capacity(p.size as usize);
        while let Some(m) = s.message().await? {
            buf.extend_from_slice(&m.data);
        }
        Ok::<_, tonic::Status>(buf)
    };
    match read.await {
        Ok(buf) if buf.len() as u64 == p.size && blake3::hash(&buf).as_bytes() == &p.oid => {
            Source::Buffer(buf, permit)
        }
        Ok(_) => Source::Failed(format!(
            "the content read for {} does not match its pointer; run `hoard verify --read-data`",
            p.oid_string()
        )),
        Err(e) if e.code() == tonic::Code::NotFound => Source::Missing,
        Err(e) => Source::Failed(crate::ui::status_error(e).to_string()),
    }
}
