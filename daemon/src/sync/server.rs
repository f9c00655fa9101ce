//! The Peer service other daemons call: every call authorized by its
//! bearer token's scope, uploads read on blocking threads and checked by
//! [`super::checks`] (and [`crate::dataset::accept`]) before anything is
//! stored, downloads streamed from the store with bounded buffers.

use super::uploads::{self, Next};
use super::wire::{ids_of, object_batches, pieces_of, read_batches, ref_id};
use super::{counted, frames};
use crate::dataset::accept::{self, RefUpdate};
use crate::error::{Error, Result};
use crate::status::status;
use crate::store::Store;
use crate::tokens::{Scope, Tokens};
use hoard_proto::v1::{self as pb, peer_server::Peer};
use hoard_proto::PEER_PROTOCOL;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Streaming calls served at once; more wait for a turn. An upload holds
/// its turn to its end (its intake holds memory); a download only while it
/// reads the store for its next message, never while its caller has not
/// read the last one (a caller reads its streams in order, so a turn held
/// by a stream it is not reading yet could wait for ever on one it is).
const STREAMING_CALLS: usize = 64;
/// A peer that neither sends nor reads for this long is dropped, so a
/// stalled caller cannot hold a turn for ever.
const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

pub struct PeerApi {
    store: Arc<Store>,
    datasets: Arc<crate::dataset::Datasets>,
    tokens: Arc<Tokens>,
    turns: Arc<tokio::sync::Semaphore>,
}

impl PeerApi {
    pub fn new(datasets: Arc<crate::dataset::Datasets>, tokens: Arc<Tokens>) -> Self {
        PeerApi {
            store: datasets.store.clone(),
            datasets,
            tokens,
            turns: Arc::new(tokio::sync::Semaphore::new(STREAMING_CALLS)),
        }
    }

    /// Waits for a turn to serve a streaming call.
    async fn turn(&self) -> std::result::Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("hoardd is stopping"))
    }

    /// Checks the call's bearer token against the scope it needs; returns
    /// how to name the caller in messages.
    fn authorize<T>(&self, req: &Request<T>, need: Scope) -> std::result::Result<String, Status> {
        let peer = req
            .remote_addr()
            .map(|a| format!("peer {a}"))
            .unwrap_or_else(|| "a peer".into());
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("no token: give one with `hoard remote add NAME URL --token TOKEN` (made on this side by `hoard token create`)"))?;
        match self.tokens.check(token) {
            None => Err(Status::unauthenticated("unknown or revoked token")),
            Some(s) if s < need => Err(Status::permission_denied(format!(
                "this token has {s} access; {need} access is needed (`hoard token create --{need}`)"
            ))),
            Some(_) => Ok(peer),
        }
    }
}

impl PeerApi {
    /// Serves an upload (write scope): `take` reads its messages on a
    /// blocking thread and says what it stored; a refusal is counted.
    async fn upload<T: Send + 'static>(
        &self,
        req: Request<Streaming<T>>,
        what: &'static str,
        take: impl FnOnce(&Store, &str, Next<T>) -> Result<pb::PutReply> + Send + 'static,
    ) -> std::result::Result<Response<pb::PutReply>, Status> {
        let peer = self.authorize(&req, Scope::Write)?;
        let turn = self.turn().await?;
        let mut inbound = req.into_inner();
        let store = self.store.clone();
        let rt = tokio::runtime::Handle::current();
        let r = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let mut next = || match rt.block_on(tokio::time::timeout(IDLE, inbound.message())) {
                Ok(m) => m.map_err(|e| Error::Transient(format!("{peer} went away: {e}"))),
                Err(_) => Err(Error::Transient(format!(
                    "{peer} sent nothing for {}s; dropped",
                    IDLE.as_secs()
                ))),
            };
            take(&store, &peer, &mut next)
        })
        .await
        .map_err(|e| Status::internal(format!("receiving {what} failed: {e}")))?;
        counted(&self.store, r).map(Response::new).map_err(status)
    }
}

type Events<T> = ReceiverStream<std::result::Result<T, Status>>;

/// Runs `produce` on a blocking thread, each message made in a turn of
/// `turns`, streaming what it sends (`send` returns false once the caller
/// has gone, or has read nothing for [`IDLE`]) and then its error, if any.
fn stream_from<T: Send + 'static>(
    turns: Arc<tokio::sync::Semaphore>,
    depth: usize,
    produce: impl FnOnce(&mut dyn FnMut(T) -> bool) -> Result<()> + Send + 'static,
) -> Events<T> {
    let (tx, rx) = mpsc::channel(depth);
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let take = || rt.block_on(turns.clone().acquire_owned()).ok();
        let mut turn = take();
        let r = produce(&mut |m| {
            // Not held while the caller reads.
            drop(turn.take());
            let sent = rt.block_on(tx.send_timeout(Ok(m), IDLE)).is_ok();
            turn = take();
            sent
        });
        drop(turn);
        if let Err(e) = r {
            let _ = rt.block_on(tx.send_timeout(Err(status(e)), IDLE));
        }
    });
    ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl Peer for PeerApi {
    async fn hello(
        &self,
        req: Request<pb::HelloRequest>,
    ) -> std::result::Result<Response<pb::HelloReply>, Status> {
        self.authorize(&req, Scope::Read)?;
        let p = self.store.params().chunk;
        Ok(Response::new(pb::HelloReply {
            protocol: PEER_PROTOCOL,
            chunk_min: p.min,
            chunk_avg: p.avg,
            chunk_max: p.max,
        }))
    }

    async fn have_files(
        &self,
        req: Request<pb::IdList>,
    ) -> std::result::Result<Response<pb::Presence>, Status> {
        let peer = self.authorize(&req, Scope::Read)?;
        let ids = ids_of(&req.into_inner().ids, &peer).map_err(status)?;
        let present =
            tokio::task::block_in_place(|| self.store.files_present(&ids)).map_err(status)?;
        Ok(Response::new(pb::Presence { present }))
    }

    async fn have_chunks(
        &self,
        req: Request<pb::IdList>,
    ) -> std::result::Result<Response<pb::Presence>, Status> {
        let peer = self.authorize(&req, Scope::Read)?;
        let ids = ids_of(&req.into_inner().ids, &peer).map_err(status)?;
        let present = tokio::task::block_in_place(|| self.store.indexed(&ids)).map_err(status)?;
        Ok(Response::new(pb::Presence { present }))
    }

    type GetManifestsStream = Events<pb::ManifestPiece>;

    async fn get_manifests(
        &self,
        req: Request<pb::IdList>,
    ) -> std::result::Result<Response<Self::GetManifestsStream>, Status> {
        let peer = self.authorize(&req, Scope::Read)?;
        let ids = ids_of(&req.into_inner().ids, &peer).map_err(status)?;
        let store = self.store.clone();
        Ok(Response::new(stream_from(
            self.turns.clone(),
            8,
            move |send| {
                for id in ids {
                    if let Some(m) = store.index.manifest(&id)? {
                        for p in pieces_of(&id, &m) {
                            if !send(p) {
                                return Ok(());
                            }
                        }
                    }
                }
                Ok(())
            },
        )))
    }

    type GetChunksStream = Events<pb::ChunkBatch>;

    async fn get_chunks(
        &self,
        req: Request<pb::IdList>,
    ) -> std::result::Result<Response<Self::GetChunksStream>, Status> {
        let peer = self.authorize(&req, Scope::Read)?;
        let mut ids = ids_of(&req.into_inner().ids, &peer).map_err(status)?;
        // Each chunk once, however often it was asked for.
        let mut seen = HashSet::new();
        ids.retain(|id| seen.insert(*id));
        let store = self.store.clone();
        Ok(Response::new(stream_from(
            self.turns.clone(),
            4,
            move |send| read_batches(&store, &ids, send),
        )))
    }

    async fn plan_frames(
        &self,
        req: Request<pb::IdList>,
    ) -> std::result::Result<Response<pb::FramePlan>, Status> {
        let peer = self.authorize(&req, Scope::Read)?;
        let ids = ids_of(&req.into_inner().ids, &peer).map_err(status)?;
        let plan =
            tokio::task::block_in_place(|| frames::plan(&self.store, &ids)).map_err(status)?;
        Ok(Response::new(plan))
    }

    type GetFramesStream = Events<pb::FrameData>;

    async fn get_frames(
        &self,
        req: Request<pb::IdList>,
    ) -> std::result::Result<Response<Self::GetFramesStream>, Status> {
        let peer = self.authorize(&req, Scope::Read)?;
        let ids = ids_of(&req.into_inner().ids, &peer).map_err(status)?;
        let store = self.store.clone();
        Ok(Response::new(stream_from(
            self.turns.clone(),
            4,
            move |send| {
                // Each frame once, however many of the ids fall in it.
                let mut sent = HashSet::new();
                for (id, loc) in ids.iter().zip(store.index.chunk_locs(&ids)?) {
                    let Some(loc) = loc else { continue };
                    if !sent.insert((loc.pack, loc.payload_offset)) {
                        continue;
                    }
                    let msg = pb::FrameData {
                        chunk: id.0.to_vec(),
                        payload: store.frame_payload(&loc)?,
                    };
                    if !send(msg) {
                        return Ok(());
                    }
                }
                Ok(())
            },
        )))
    }

    async fn put_chunks(
        &self,
        req: Request<Streaming<pb::ChunkBatch>>,
    ) -> std::result::Result<Response<pb::PutReply>, Status> {
        self.upload(req, "chunks", uploads::chunks).await
    }

    async fn put_frames(
        &self,
        req: Request<Streaming<pb::FramePut>>,
    ) -> std::result::Result<Response<pb::PutReply>, Status> {
        self.upload(req, "frames", uploads::frames).await
    }

    async fn put_manifests(
        &self,
        req: Request<Streaming<pb::ManifestPiece>>,
    ) -> std::result::Result<Response<pb::PutReply>, Status> {
        self.upload(req, "manifests", uploads::manifests).await
    }

    type GetObjectsStream = Events<pb::ObjectBatch>;

    async fn get_objects(
        &self,
        req: Request<pb::IdList>,
    ) -> std::result::Result<Response<Self::GetObjectsStream>, Status> {
        let peer = self.authorize(&req, Scope::Read)?;
        let ids = ids_of(&req.into_inner().ids, &peer).map_err(status)?;
        let store = self.store.clone();
        Ok(Response::new(stream_from(
            self.turns.clone(),
            4,
            move |send| object_batches(&store, &ids, send),
        )))
    }

    async fn put_objects(
        &self,
        req: Request<Streaming<pb::ObjectBatch>>,
    ) -> std::result::Result<Response<pb::PutReply>, Status> {
        self.upload(req, "objects", uploads::objects).await
    }

    async fn list_refs(
        &self,
        req: Request<pb::ListRefsRequest>,
    ) -> std::result::Result<Response<pb::RefList>, Status> {
        self.authorize(&req, Scope::Read)?;
        let prefix = req.into_inner().prefix;
        let refs = tokio::task::block_in_place(|| self.store.refs(&prefix)).map_err(status)?;
        Ok(Response::new(pb::RefList {
            refs: refs
                .into_iter()
                .map(|(name, id)| pb::Ref {
                    name,
                    id: id.0.to_vec(),
                })
                .collect(),
        }))
    }

    async fn update_ref(
        &self,
        req: Request<pb::UpdateRefRequest>,
    ) -> std::result::Result<Response<pb::UpdateRefReply>, Status> {
        self.authorize(&req, Scope::Write)?;
        let req = req.into_inner();
        let update = RefUpdate {
            old: ref_id(&req.old).map_err(status)?,
            new: ref_id(&req.new).map_err(status)?,
            name: req.name,
            force: req.force,
        };
        let done = tokio::task::block_in_place(|| accept::update_ref(&self.datasets, &update))
            .map_err(status)?;
        Ok(Response::new(pb::UpdateRefReply {
            ok: done.ok,
            current: done.current.map(|c| c.0.to_vec()).unwrap_or_default(),
            reason: done.reason,
        }))
    }

    async fn prune(
        &self,
        req: Request<pb::PruneRequest>,
    ) -> std::result::Result<Response<pb::PruneReply>, Status> {
        let peer = self.authorize(&req, Scope::Admin)?;
        let opts = super::admin::prune_options(&req.into_inner());
        tracing::info!(%peer, dry_run = opts.dry_run, "prune asked by a peer");
        let ds = self.datasets.clone();
        let rep = tokio::task::spawn_blocking(move || crate::prune::prune(&ds, &opts))
            .await
            .map_err(|e| Status::internal(format!("the prune failed: {e}")))?
            .map_err(status)?;
        Ok(Response::new(pb::PruneReply {
            report_json: serde_json::to_string(&rep).unwrap_or_default(),
        }))
    }
}
