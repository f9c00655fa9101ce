//! Content streamed in by git's clean filter (`Clean`): one session per
//! filter process, files staged and made durable in batches; and the stat
//! cache entries the filter reports (`Remember`).

use super::{parse_oid, Events, LocalApi};
use crate::put;
use crate::status::status;
use hoard_proto::v1 as pb;
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

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

pub(super) async fn clean(
    api: &LocalApi,
    req: Request<Streaming<pb::CleanRequest>>,
) -> Result<Response<Events<pb::CleanReply>>, Status> {
    let mut inbound = req.into_inner();
    let (tx, rx) = mpsc::channel(16);
    let store = api.store.clone();
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
                    session.follow(&path);
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

pub(super) async fn remember(
    api: &LocalApi,
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
            known_at_ns: f.known_at_ns,
        });
    }
    let recorded =
        tokio::task::block_in_place(|| put::remember(&api.store, &files)).map_err(status)?;
    Ok(Response::new(pb::RememberReply { recorded }))
}
