//! The store's own calls: add, read (whole or a range), read in batches,
//! stats, verify, reindex, presence, the daemon's status and shutdown.

use super::{parse_oid, Events, LocalApi};
use crate::check::{self, VerifyEvent};
use crate::error::Error;
use crate::id::Id;
use crate::ingest::{self, AddInput, Event};
use crate::put;
use crate::status::status;
use hoard_proto::v1 as pb;
use hoard_proto::MAX_DATA_MESSAGE;
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

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

fn problem(p: check::Problem) -> pb::Problem {
    pb::Problem {
        kind: p.kind.into(),
        object: p.object,
        message: p.message,
    }
}

pub(super) async fn add(
    api: &LocalApi,
    req: Request<pb::AddRequest>,
) -> Result<Response<Events<pb::AddEvent>>, Status> {
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
    let store = api.store.clone();
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
            disk_full: s.disk_full,
        };
        let _ = tx.blocking_send(Ok(pb::AddEvent {
            event: Some(pb::add_event::Event::Summary(summary)),
        }));
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

pub(super) async fn read(
    api: &LocalApi,
    req: Request<pb::ReadRequest>,
) -> Result<Response<Events<pb::ReadReply>>, Status> {
    let req = req.into_inner();
    let file = parse_oid(&req.oid)?;
    let store = api.store.clone();
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

pub(super) async fn stats(
    api: &LocalApi,
    _req: Request<pb::StatsRequest>,
) -> Result<Response<pb::StoreStats>, Status> {
    let s = api.store.stats();
    Ok(Response::new(pb::StoreStats {
        logical_bytes: s.logical_bytes,
        unique_bytes: s.unique_bytes,
        stored_bytes: s.stored_bytes,
        chunks: s.chunks,
        files: s.files,
        packs: s.packs,
    }))
}

pub(super) async fn verify(
    api: &LocalApi,
    req: Request<pb::VerifyRequest>,
) -> Result<Response<Events<pb::VerifyEvent>>, Status> {
    let read_data = req.into_inner().read_data;
    let (tx, rx) = mpsc::channel(64);
    let store = api.store.clone();
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

pub(super) async fn reindex(
    api: &LocalApi,
    _req: Request<pb::ReindexRequest>,
) -> Result<Response<Events<pb::ReindexEvent>>, Status> {
    let (tx, rx) = mpsc::channel(64);
    let store = api.store.clone();
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

pub(super) async fn daemon_status(
    api: &LocalApi,
    _req: Request<pb::StatusRequest>,
) -> Result<Response<pb::DaemonStatus>, Status> {
    let p = api.store.params();
    let b = api.store.backend_status();
    Ok(Response::new(pb::DaemonStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        store: api.store.dir().display().to_string(),
        uptime_secs: api.started.elapsed().as_secs(),
        chunk_min: p.chunk.min,
        chunk_avg: p.chunk.avg,
        chunk_max: p.chunk.max,
        zstd_level: p.zstd_level as u32,
        frame_target: p.frame_target,
        peer_listen: api.peer.0.clone(),
        peer_fingerprint: api.peer.1.clone(),
        peer_refused: crate::sync::refused(&api.store).unwrap_or(0),
        clean_known: put::KNOWN.load(std::sync::atomic::Ordering::Relaxed),
        backend: Some(pb::PackBackendStatus {
            kind: b.kind,
            location: b.location,
            endpoint: b.endpoint,
            requests: b.requests,
            lists: b.lists,
            bytes_read: b.bytes_read,
            bytes_written: b.bytes_written,
            cache_hits: b.cache_hits,
            cache_misses: b.cache_misses,
            cache_bytes: b.cache_bytes,
            failovers: b.failovers,
        }),
    }))
}

pub(super) async fn read_batch(
    api: &LocalApi,
    req: Request<pb::ReadBatchRequest>,
) -> Result<Response<Events<pb::ReadBatchReply>>, Status> {
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
    let store = api.store.clone();
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
                Ok(Some(size)) => failed(Error::Invalid(format!(
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

pub(super) async fn has(
    api: &LocalApi,
    req: Request<pb::HasRequest>,
) -> Result<Response<pb::HasReply>, Status> {
    let ids = req
        .into_inner()
        .oids
        .iter()
        .map(|b| parse_oid(b))
        .collect::<Result<Vec<Id>, Status>>()?;
    let present = tokio::task::block_in_place(|| api.store.files_present(&ids)).map_err(status)?;
    Ok(Response::new(pb::HasReply { present }))
}

pub(super) async fn shutdown(
    api: &LocalApi,
    _req: Request<pb::ShutdownRequest>,
) -> Result<Response<pb::ShutdownReply>, Status> {
    tracing::info!("shutdown requested by a client");
    api.shutdown.notify_one();
    Ok(Response::new(pb::ShutdownReply {}))
}
