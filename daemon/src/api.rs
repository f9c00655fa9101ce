//! The local API (`hoard.v1.Local`): gRPC handlers that run engine work on
//! blocking threads and stream its events back.

use crate::check::{self, VerifyEvent};
use crate::error::Error;
use crate::id::Id;
use crate::ingest::{self, AddInput, Event};
use crate::put;
use crate::store::Store;
use hoard_proto::v1::{self as pb, local_server::Local};
use hoard_proto::MAX_DATA_MESSAGE;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub struct LocalApi {
    store: Arc<Store>,
    datasets: Arc<crate::dataset::rpc::Ctx>,
    /// The Peer API's address and TLS fingerprint, when served.
    peer: (String, String),
    tokens: Arc<crate::tokens::Tokens>,
    started: Instant,
    shutdown: Arc<Notify>,
}

impl LocalApi {
    pub fn new(
        datasets: Arc<crate::dataset::rpc::Ctx>,
        tokens: Arc<crate::tokens::Tokens>,
        peer: (String, String),
        shutdown: Arc<Notify>,
    ) -> Self {
        LocalApi {
            store: datasets.ds.store.clone(),
            datasets,
            peer,
            tokens,
            started: Instant::now(),
            shutdown,
        }
    }
}

/// Maps an engine error to a gRPC status whose message is the engine's.
pub fn status(e: Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::NotFound(_) => Status::not_found(msg),
        Error::Corrupt(_) => Status::data_loss(msg),
        Error::Config(_) => Status::invalid_argument(msg),
        Error::DiskFull { .. } => Status::resource_exhausted(msg),
        Error::Cancelled => Status::cancelled(msg),
        Error::Busy(_) => Status::unavailable(msg),
        Error::Refused(_) => Status::failed_precondition(msg),
        _ => Status::internal(msg),
    }
}

fn parse_oid(b: &[u8]) -> Result<Id, Status> {
    Id::from_slice(b).ok_or_else(|| Status::invalid_argument("object id must be 32 bytes"))
}

type Events<T> = ReceiverStream<Result<T, Status>>;

/// Runs a dataset call on a blocking thread.
async fn blocking<R: Send + 'static>(
    ctx: &Arc<crate::dataset::rpc::Ctx>,
    f: impl FnOnce(&crate::dataset::rpc::Ctx) -> crate::Result<R> + Send + 'static,
) -> Result<Response<R>, Status> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || f(&ctx))
        .await
        .map_err(|e| Status::internal(format!("the call failed: {e}")))?
        .map(Response::new)
        .map_err(status)
}

/// Runs a transfer on a blocking thread, streaming progress then its summary.
fn transfer(
    ctx: &Arc<crate::dataset::rpc::Ctx>,
    f: impl FnOnce(&crate::dataset::rpc::Ctx, crate::sync::Progress) -> crate::Result<pb::SyncSummary>
        + Send
        + 'static,
) -> Events<pb::SyncEvent> {
    use pb::sync_event::Event as E;
    let (tx, rx) = mpsc::channel(16);
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let mut last = Instant::now();
        let mut progress = |bytes: u64| {
            if last.elapsed().as_millis() >= 200 {
                last = Instant::now();
                let _ = tx.try_send(Ok(pb::SyncEvent {
                    event: Some(E::Progress(pb::Progress {
                        files_done: 0,
                        bytes_done: bytes,
                    })),
                }));
            }
        };
        let r = f(&ctx, &mut progress);
        let _ = tx.blocking_send(r.map_err(status).map(|s| pb::SyncEvent {
            event: Some(E::Summary(s)),
        }));
    });
    ReceiverStream::new(rx)
}

fn add_event(e: Event) -> pb::AddEvent {
    use pb::add_event::Event as E;
    let event = match e {
        Event::Plan { files, bytes } => E::Plan(pb::AddPlan { files, bytes }),
        Event::Progress {
            files_done,
            bytes_done,
        } => E::Progress(pb::Progress {
            files_done,
            bytes_done,
        }),
        Event::Done(files) => E::Files(pb::FileResults {
            files: files
                .into_iter()
                .map(|f| pb::FileResult {
                    oid: f.file.0.to_vec(),
                    path: f.path,
                    size: f.size,
                    unchanged: f.unchanged,
                })
                .collect(),
        }),
        Event::Error { path, message } => E::Error(pb::FileError { path, message }),
    };
    pb::AddEvent { event: Some(event) }
}

/// How often an idle clean session checks whether staged files are due.
fn put_tick() -> std::time::Duration {
    std::time::Duration::from_millis(250)
}

fn clean_msg(m: pb::CleanRequest) -> Option<put::Msg> {
    use pb::clean_request::Msg as M;
    Some(match m.msg? {
        M::Begin(b) => put::Msg::Begin {
            path: b.path,
            display: b.display,
        },
        M::Data(d) => put::Msg::Data(d),
        M::End(_) => put::Msg::End,
        M::Flush(_) => put::Msg::Flush,
        M::Whole(w) => put::Msg::Whole {
            display: w.display,
            content: w.content,
        },
    })
}

fn token_info(e: &crate::tokens::Entry) -> pb::TokenInfo {
    pb::TokenInfo {
        id: e.id.clone(),
        scope: e.scope.to_string(),
        created_unix: e.created_unix,
        note: e.note.clone(),
    }
}

fn problem(p: check::Problem) -> pb::Problem {
    pb::Problem {
        kind: p.kind.into(),
        object: p.object,
        message: p.message,
    }
}

#[tonic::async_trait]
impl Local for LocalApi {
    type AddStream = Events<pb::AddEvent>;

    async fn add(&self, req: Request<pb::AddRequest>) -> Result<Response<Self::AddStream>, Status> {
        let mut inputs = Vec::new();
        for p in req.into_inner().paths {
            let path = PathBuf::from(&p.path);
            if !path.is_absolute() {
                return Err(Status::invalid_argument(format!(
                    "path {:?} must be absolute",
                    p.path
                )));
            }
            inputs.push(AddInput {
                path,
                display: p.display,
            });
        }
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut emit = |e: Event| tx.blocking_send(Ok(add_event(e))).is_ok();
            let s = ingest::add(&store, inputs, &mut emit);
            let summary = pb::AddSummary {
                files: s.files,
                errors: s.errors,
                logical_bytes: s.logical_bytes,
                new_chunk_bytes: s.new_chunk_bytes,
                new_stored_bytes: s.new_stored_bytes,
                new_chunks: s.new_chunks,
                reused_chunks: s.reused_chunks,
            };
            let _ = tx.blocking_send(Ok(pb::AddEvent {
                event: Some(pb::add_event::Event::Summary(summary)),
            }));
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ReadStream = Events<pb::ReadReply>;

    async fn read(
        &self,
        req: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let req = req.into_inner();
        let file = parse_oid(&req.oid)?;
        let store = self.store.clone();
        let size = tokio::task::block_in_place(|| store.file_size(&file))
            .map_err(status)?
            .ok_or_else(|| {
                status(Error::NotFound(format!(
                    "{file} is not in this store; `hoard add` it first (or fetch it from a remote)"
                )))
            })?;
        let (tx, rx) = mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            let mut buf = Vec::with_capacity(MAX_DATA_MESSAGE);
            let mut first = Some(size);
            let send = |buf: &mut Vec<u8>, first: &mut Option<u64>| -> crate::Result<()> {
                let msg = pb::ReadReply {
                    file_size: first.take(),
                    data: std::mem::take(buf).into(),
                };
                *buf = Vec::with_capacity(MAX_DATA_MESSAGE);
                tx.blocking_send(Ok(msg)).map_err(|_| Error::Cancelled)
            };
            let r = store.read_range(&file, req.offset, req.length, &mut |mut data: &[u8]| {
                while !data.is_empty() {
                    let n = data.len().min(MAX_DATA_MESSAGE - buf.len());
                    buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if buf.len() == MAX_DATA_MESSAGE {
                        send(&mut buf, &mut first)?;
                    }
                }
                Ok(())
            });
            let r = r.and_then(|_| {
                if !buf.is_empty() || first.is_some() {
                    send(&mut buf, &mut first)?;
                }
                Ok(())
            });
            if let Err(e) = r {
                let _ = tx.blocking_send(Err(status(e)));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn stats(
        &self,
        _: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StoreStats>, Status> {
        let s = self.store.stats();
        Ok(Response::new(pb::StoreStats {
            logical_bytes: s.logical_bytes,
            unique_bytes: s.unique_bytes,
            stored_bytes: s.stored_bytes,
            chunks: s.chunks,
            files: s.files,
            packs: s.packs,
        }))
    }

    type VerifyStream = Events<pb::VerifyEvent>;

    async fn verify(
        &self,
        req: Request<pb::VerifyRequest>,
    ) -> Result<Response<Self::VerifyStream>, Status> {
        let read_data = req.into_inner().read_data;
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            use pb::verify_event::Event as E;
            let send = |e: E| {
                tx.blocking_send(Ok(pb::VerifyEvent { event: Some(e) }))
                    .is_ok()
            };
            let r = check::verify(&store, read_data, &mut |e| {
                send(match e {
                    VerifyEvent::Plan(b) => E::PlanBytes(b),
                    VerifyEvent::Progress { bytes_read } => E::Progress(pb::Progress {
                        files_done: 0,
                        bytes_done: bytes_read,
                    }),
                    VerifyEvent::Problem(p) => E::Problem(problem(p)),
                })
            });
            match r {
                Ok(rep) => {
                    send(E::Summary(pb::VerifySummary {
                        packs: rep.packs,
                        chunks: rep.chunks,
                        files: rep.files,
                        bytes_read: rep.bytes_read,
                        problems: rep.problems,
                    }));
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(status(e)));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ReindexStream = Events<pb::ReindexEvent>;

    async fn reindex(
        &self,
        _: Request<pb::ReindexRequest>,
    ) -> Result<Response<Self::ReindexStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            use pb::reindex_event::Event as E;
            let send = |e: E| {
                let _ = tx.blocking_send(Ok(pb::ReindexEvent { event: Some(e) }));
            };
            let mut done = 0u64;
            let r = store.reindex(|bytes, bad| {
                done += bytes;
                if let Some((pack, e)) = bad {
                    send(E::Problem(pb::Problem {
                        kind: "pack".into(),
                        object: pack.hex(),
                        message: format!("skipped: {e}"),
                    }));
                }
                send(E::Progress(pb::Progress {
                    files_done: 0,
                    bytes_done: done,
                }));
            });
            match r {
                Ok((packs, chunks, files, bad_packs)) => send(E::Summary(pb::ReindexSummary {
                    packs,
                    chunks,
                    files,
                    bad_packs,
                })),
                Err(e) => {
                    let _ = tx.blocking_send(Err(status(e)));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::DaemonStatus>, Status> {
        let p = self.store.params();
        Ok(Response::new(pb::DaemonStatus {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            store: self.store.dir().display().to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            chunk_min: p.chunk.min,
            chunk_avg: p.chunk.avg,
            chunk_max: p.chunk.max,
            zstd_level: p.zstd_level as u32,
            frame_target: p.frame_target,
            peer_listen: self.peer.0.clone(),
            peer_fingerprint: self.peer.1.clone(),
            peer_refused: crate::sync::refused(&self.store).unwrap_or(0),
            clean_known: put::KNOWN.load(std::sync::atomic::Ordering::Relaxed),
        }))
    }

    type CleanStream = Events<pb::CleanReply>;

    async fn clean(
        &self,
        req: Request<Streaming<pb::CleanRequest>>,
    ) -> Result<Response<Self::CleanStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let store = self.store.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            use pb::clean_reply::Reply as R;
            let send = |r: R| {
                tx.blocking_send(Ok(pb::CleanReply { reply: Some(r) }))
                    .is_ok()
            };
            let result = |p: put::Put, path: &str| pb::FileResult {
                oid: p.file.0.to_vec(),
                path: path.to_string(),
                size: p.size,
                unchanged: false,
            };
            let flushed = |f: put::Flushed| {
                R::Flushed(pb::CleanFlushed {
                    files: f.files,
                    errors: f
                        .errors
                        .into_iter()
                        .map(|(path, message)| pb::FileError { path, message })
                        .collect(),
                })
            };
            let mut session = put::Session::new(&store);
            loop {
                let waited = rt.block_on(tokio::time::timeout(put_tick(), inbound.message()));
                let msg = match waited {
                    Err(_) => {
                        session.flush_if_due();
                        continue;
                    }
                    Ok(Ok(Some(m))) => clean_msg(m),
                    Ok(Ok(None)) | Ok(Err(_)) => break,
                };
                match msg {
                    Some(put::Msg::Begin { path, display }) => {
                        if let Some(mut k) = session.known(&path).map(|p| result(p, &display)) {
                            put::KNOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            k.unchanged = true;
                            if !send(R::Known(k)) {
                                break;
                            }
                            continue;
                        }
                        if !send(R::Proceed(pb::CleanProceed {})) {
                            break;
                        }
                        let mut next = || match rt.block_on(inbound.message()) {
                            Ok(Some(m)) => clean_msg(m),
                            _ => None,
                        };
                        let mut reader = put::MsgReader::new(&mut next);
                        let r = session.put(&display, &mut reader);
                        let drained = reader.drain();
                        let reply = match r {
                            Ok(p) => R::Stored(result(p, &display)),
                            Err(e) => R::Error(pb::FileError {
                                path: display,
                                message: e.to_string(),
                            }),
                        };
                        if !send(reply) || drained.is_err() {
                            break;
                        }
                        session.flush_if_due();
                    }
                    Some(put::Msg::Whole { display, content }) => {
                        let reply = match session.put(&display, &content[..]) {
                            Ok(p) => R::Stored(result(p, &display)),
                            Err(e) => R::Error(pb::FileError {
                                path: display,
                                message: e.to_string(),
                            }),
                        };
                        if !send(reply) {
                            break;
                        }
                        session.flush_if_due();
                    }
                    Some(put::Msg::Flush) => {
                        if !send(flushed(session.flush())) {
                            break;
                        }
                    }
                    Some(put::Msg::Data(_)) | Some(put::Msg::End) | None => {
                        let _ = tx.blocking_send(Err(Status::invalid_argument(
                            "clean stream: content outside a file (expected `begin` first)",
                        )));
                        break;
                    }
                }
            }
            // The client closed its side (or went away): keep what it sent.
            let f = session.flush();
            if !f.errors.is_empty() {
                tracing::warn!(lost = f.errors.len(), first = ?f.errors.first(), "clean session: files could not be made durable");
            }
            let _ = send(flushed(f));
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ReadBatchStream = Events<pb::ReadBatchReply>;

    async fn read_batch(
        &self,
        req: Request<pb::ReadBatchRequest>,
    ) -> Result<Response<Self::ReadBatchStream>, Status> {
        let oids = req.into_inner().oids;
        if oids.len() > hoard_proto::READ_BATCH_FILES {
            return Err(Status::invalid_argument(format!(
                "at most {} files per ReadBatch",
                hoard_proto::READ_BATCH_FILES
            )));
        }
        let ids = oids
            .iter()
            .map(|b| parse_oid(b))
            .collect::<Result<Vec<Id>, Status>>()?;
        let (tx, rx) = mpsc::channel(8);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            for (i, id) in ids.iter().enumerate() {
                let index = i as u32;
                let failed = |e: Error| pb::ReadBatchReply {
                    index,
                    not_found: matches!(e, Error::NotFound(_)),
                    error: e.to_string(),
                    ..Default::default()
                };
                let reply = match store.file_size(id) {
                    Ok(Some(size)) if size <= hoard_proto::READ_BATCH_MAX_FILE => {
                        let mut buf = Vec::with_capacity(size as usize);
                        match store.read_range(id, 0, None, &mut |d: &[u8]| {
                            buf.extend_from_slice(d);
                            Ok(())
                        }) {
                            Ok(_) => pb::ReadBatchReply {
                                index,
                                data: buf.into(),
                                last: true,
                                ..Default::default()
                            },
                            Err(e) => failed(e),
                        }
                    }
                    Ok(Some(size)) => failed(Error::Config(format!(
                        "{id} is {size} bytes, too large for ReadBatch; use Read"
                    ))),
                    Ok(None) => failed(Error::NotFound(format!("{id} is not in this store"))),
                    Err(e) => failed(e),
                };
                if tx.blocking_send(Ok(reply)).is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type SyncStream = Events<pb::SyncEvent>;

    async fn sync(
        &self,
        req: Request<pb::SyncRequest>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let req = req.into_inner();
        let oids = req
            .oids
            .iter()
            .map(|b| parse_oid(b))
            .collect::<Result<Vec<Id>, Status>>()?;
        let (tx, rx) = mpsc::channel(16);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            use pb::sync_event::Event as E;
            let mut last = Instant::now();
            let mut progress = |bytes: u64| {
                if last.elapsed().as_millis() >= 200 {
                    last = Instant::now();
                    let _ = tx.try_send(Ok(pb::SyncEvent {
                        event: Some(E::Progress(pb::Progress {
                            files_done: 0,
                            bytes_done: bytes,
                        })),
                    }));
                }
            };
            let addr = crate::sync::PeerAddr::new(
                req.url.clone(),
                req.token.clone(),
                req.fingerprint.clone(),
                req.ca_pem.clone(),
            );
            let r = if req.push {
                crate::sync::push(&store, &addr, &oids, &mut progress)
            } else {
                crate::sync::pull(&store, &addr, &oids, &mut progress)
            };
            let msg = r.map_err(status).map(|s| pb::SyncEvent {
                event: Some(E::Summary(pb::SyncSummary {
                    snapshot: Vec::new(),
                    files: s.files,
                    files_already_there: s.files_already_there,
                    chunks_sent: s.chunks_sent,
                    chunks_skipped: s.chunks_skipped,
                    bytes: s.bytes,
                    missing: s.missing.iter().map(|m| m.0.to_vec()).collect(),
                })),
            });
            let _ = tx.blocking_send(msg);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn token_create(
        &self,
        req: Request<pb::TokenCreateRequest>,
    ) -> Result<Response<pb::TokenCreateReply>, Status> {
        let req = req.into_inner();
        let scope = if req.write {
            crate::tokens::Scope::Write
        } else {
            crate::tokens::Scope::Read
        };
        let (token, e) = self.tokens.create(scope, &req.note).map_err(status)?;
        Ok(Response::new(pb::TokenCreateReply {
            token,
            info: Some(token_info(&e)),
        }))
    }

    async fn token_list(
        &self,
        _: Request<pb::TokenListRequest>,
    ) -> Result<Response<pb::TokenListReply>, Status> {
        Ok(Response::new(pb::TokenListReply {
            tokens: self.tokens.list().iter().map(token_info).collect(),
        }))
    }

    async fn token_revoke(
        &self,
        req: Request<pb::TokenRevokeRequest>,
    ) -> Result<Response<pb::TokenRevokeReply>, Status> {
        let revoked = self.tokens.revoke(&req.into_inner().id).map_err(status)?;
        Ok(Response::new(pb::TokenRevokeReply { revoked }))
    }

    async fn has(&self, req: Request<pb::HasRequest>) -> Result<Response<pb::HasReply>, Status> {
        let ids = req
            .into_inner()
            .oids
            .iter()
            .map(|b| parse_oid(b))
            .collect::<Result<Vec<Id>, Status>>()?;
        let present =
            tokio::task::block_in_place(|| self.store.index.files_present(&ids)).map_err(status)?;
        Ok(Response::new(pb::HasReply { present }))
    }

    async fn remember(
        &self,
        req: Request<pb::RememberRequest>,
    ) -> Result<Response<pb::RememberReply>, Status> {
        let mut files = Vec::new();
        for f in req.into_inner().files {
            files.push(put::Written {
                path: PathBuf::from(&f.path),
                file: parse_oid(&f.oid)?,
                size: f.size,
                mtime_ns: f.mtime_ns,
                ino: f.ino,
            });
        }
        let recorded =
            tokio::task::block_in_place(|| put::remember(&self.store, &files)).map_err(status)?;
        Ok(Response::new(pb::RememberReply { recorded }))
    }

    async fn dataset_add(
        &self,
        req: Request<pb::DatasetAddRequest>,
    ) -> Result<Response<pb::DatasetInfo>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| crate::dataset::rpc::add(c, req)).await
    }

    async fn dataset_remove(
        &self,
        req: Request<pb::DatasetRemoveRequest>,
    ) -> Result<Response<pb::DatasetInfo>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| crate::dataset::rpc::remove(c, req)).await
    }

    async fn dataset_list(
        &self,
        _: Request<pb::DatasetListRequest>,
    ) -> Result<Response<pb::DatasetListReply>, Status> {
        blocking(&self.datasets, crate::dataset::rpc::list).await
    }

    async fn dataset_status(
        &self,
        req: Request<pb::DatasetStatusRequest>,
    ) -> Result<Response<pb::DiffReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| crate::dataset::rpc::status(c, req)).await
    }

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| {
            crate::dataset::rpc::snapshot(c, req)
        })
        .await
    }

    async fn log(&self, req: Request<pb::LogRequest>) -> Result<Response<pb::LogReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| crate::dataset::rpc::log(c, req)).await
    }

    async fn diff(&self, req: Request<pb::DiffRequest>) -> Result<Response<pb::DiffReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| crate::dataset::rpc::diff(c, req)).await
    }

    async fn tag(&self, req: Request<pb::TagRequest>) -> Result<Response<pb::TagReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| crate::dataset::rpc::tag(c, req)).await
    }

    async fn lineage(
        &self,
        req: Request<pb::LineageRequest>,
    ) -> Result<Response<pb::LineageReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| {
            crate::dataset::rpc::lineage(c, req)
        })
        .await
    }

    async fn checkout(
        &self,
        req: Request<pb::CheckoutRequest>,
    ) -> Result<Response<pb::CheckoutReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| {
            crate::dataset::rpc::do_checkout(c, req)
        })
        .await
    }

    type CloneDatasetStream = Events<pb::SyncEvent>;

    async fn clone_dataset(
        &self,
        req: Request<pb::CloneRequest>,
    ) -> Result<Response<Self::CloneDatasetStream>, Status> {
        let req = req.into_inner();
        Ok(Response::new(transfer(&self.datasets, move |c, p| {
            crate::dataset::rpc::clone(c, req, p)
        })))
    }

    type PushDatasetStream = Events<pb::SyncEvent>;

    async fn push_dataset(
        &self,
        req: Request<pb::PushDatasetRequest>,
    ) -> Result<Response<Self::PushDatasetStream>, Status> {
        let req = req.into_inner();
        Ok(Response::new(transfer(&self.datasets, move |c, p| {
            crate::dataset::rpc::push_dataset(c, req, p)
        })))
    }

    async fn shutdown(
        &self,
        _: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownReply>, Status> {
        tracing::info!("shutdown requested by a client");
        self.shutdown.notify_one();
        Ok(Response::new(pb::ShutdownReply {}))
    }
}
