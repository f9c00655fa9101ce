//! The Local API (`hoard.v1.Local`): the `hoard` client's calls to its own
//! user's daemon. Handlers run engine work on blocking threads and stream
//! its events back; each area has its room: [`store`] (add, read, verify,
//! reindex, status), [`clean`] (content streamed in by git's filter),
//! [`peers`] (transfers of files and tokens), [`datasets`] (datasets,
//! snapshots, clone and push), [`prune`] (prune, pins, repair). This file holds the routing table (the
//! `Local` impl) and what the areas share.
//!
//! May import everything below it: the engine, `sync`, `watch`,
//! `autosync`, `tokens`, `status`. Only `daemon` imports it.

mod backend;
mod clean;
mod datasets;
mod peers;
mod prune;
mod store;

pub use backend::S3_PROGRESS;
pub use datasets::Ctx;

use crate::id::Id;
use crate::status::status;
use crate::store::Store;
use hoard_proto::v1::{self as pb, local_server::Local};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub struct LocalApi {
    store: Arc<Store>,
    datasets: Arc<datasets::Ctx>,
    /// The Peer API's address and TLS fingerprint, when served.
    peer: (String, String),
    tokens: Arc<crate::tokens::Tokens>,
    started: Instant,
    shutdown: Arc<Notify>,
    /// The daemon's config.toml (a backend migration switches it).
    config: std::path::PathBuf,
}

impl LocalApi {
    pub fn new(
        datasets: Arc<datasets::Ctx>,
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
            config: std::path::PathBuf::new(),
        }
    }

    /// Where the daemon's config.toml is.
    pub fn with_config(mut self, path: &std::path::Path) -> Self {
        self.config = path.to_path_buf();
        self
    }
}

type Events<T> = ReceiverStream<Result<T, Status>>;

fn parse_oid(b: &[u8]) -> Result<Id, Status> {
    Id::from_slice(b).ok_or_else(|| Status::invalid_argument("object id must be 32 bytes"))
}

/// A closure that streams transfer progress (bytes moved so far) at most
/// every 200 ms.
fn progress_to(tx: mpsc::Sender<Result<pb::SyncEvent, Status>>) -> impl FnMut(u64) {
    use pb::sync_event::Event as E;
    let mut last = Instant::now();
    move |bytes: u64| {
        if last.elapsed().as_millis() >= 200 {
            last = Instant::now();
            let _ = tx.try_send(Ok(pb::SyncEvent {
                event: Some(E::Progress(pb::Progress {
                    files_done: 0,
                    bytes_done: bytes,
                })),
            }));
        }
    }
}

/// A transfer's summary on the wire.
fn summary(s: &crate::sync::Summary, snapshot: Option<Id>) -> pb::SyncSummary {
    pb::SyncSummary {
        snapshot: snapshot.map(|i| i.0.to_vec()).unwrap_or_default(),
        files: s.files,
        files_already_there: s.files_already_there,
        chunks_sent: s.chunks_sent,
        chunks_skipped: s.chunks_skipped,
        bytes: s.bytes,
        missing: s.missing.iter().map(|m| m.0.to_vec()).collect(),
    }
}

/// Runs a dataset call on a blocking thread.
async fn blocking<R: Send + 'static>(
    ctx: &Arc<datasets::Ctx>,
    f: impl FnOnce(&datasets::Ctx) -> crate::Result<R> + Send + 'static,
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
    ctx: &Arc<datasets::Ctx>,
    f: impl FnOnce(&datasets::Ctx, crate::sync::Progress) -> crate::Result<pb::SyncSummary>
        + Send
        + 'static,
) -> Events<pb::SyncEvent> {
    use pb::sync_event::Event as E;
    let (tx, rx) = mpsc::channel(16);
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let mut progress = progress_to(tx.clone());
        let r = f(&ctx, &mut progress);
        let _ = tx.blocking_send(r.map_err(status).map(|s| pb::SyncEvent {
            event: Some(E::Summary(s)),
        }));
    });
    ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl Local for LocalApi {
    type AddStream = Events<pb::AddEvent>;

    async fn add(&self, req: Request<pb::AddRequest>) -> Result<Response<Self::AddStream>, Status> {
        store::add(self, req).await
    }

    type ReadStream = Events<pb::ReadReply>;

    async fn read(
        &self,
        req: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        store::read(self, req).await
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StoreStats>, Status> {
        store::stats(self, req).await
    }

    type VerifyStream = Events<pb::VerifyEvent>;

    async fn verify(
        &self,
        req: Request<pb::VerifyRequest>,
    ) -> Result<Response<Self::VerifyStream>, Status> {
        store::verify(self, req).await
    }

    type ReindexStream = Events<pb::ReindexEvent>;

    async fn reindex(
        &self,
        req: Request<pb::ReindexRequest>,
    ) -> Result<Response<Self::ReindexStream>, Status> {
        store::reindex(self, req).await
    }

    type MigrateBackendStream = Events<pb::MigrateBackendEvent>;

    async fn migrate_backend(
        &self,
        req: Request<pb::MigrateBackendRequest>,
    ) -> Result<Response<Self::MigrateBackendStream>, Status> {
        backend::migrate(self, req).await
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::DaemonStatus>, Status> {
        store::daemon_status(self, req).await
    }

    type CleanStream = Events<pb::CleanReply>;

    async fn clean(
        &self,
        req: Request<Streaming<pb::CleanRequest>>,
    ) -> Result<Response<Self::CleanStream>, Status> {
        clean::clean(self, req).await
    }

    type ReadBatchStream = Events<pb::ReadBatchReply>;

    async fn read_batch(
        &self,
        req: Request<pb::ReadBatchRequest>,
    ) -> Result<Response<Self::ReadBatchStream>, Status> {
        store::read_batch(self, req).await
    }

    type SyncStream = Events<pb::SyncEvent>;

    async fn sync(
        &self,
        req: Request<pb::SyncRequest>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        peers::sync(self, req).await
    }

    async fn token_create(
        &self,
        req: Request<pb::TokenCreateRequest>,
    ) -> Result<Response<pb::TokenCreateReply>, Status> {
        peers::token_create(self, req).await
    }

    async fn token_list(
        &self,
        req: Request<pb::TokenListRequest>,
    ) -> Result<Response<pb::TokenListReply>, Status> {
        peers::token_list(self, req).await
    }

    async fn token_revoke(
        &self,
        req: Request<pb::TokenRevokeRequest>,
    ) -> Result<Response<pb::TokenRevokeReply>, Status> {
        peers::token_revoke(self, req).await
    }

    async fn has(&self, req: Request<pb::HasRequest>) -> Result<Response<pb::HasReply>, Status> {
        store::has(self, req).await
    }

    async fn remember(
        &self,
        req: Request<pb::RememberRequest>,
    ) -> Result<Response<pb::RememberReply>, Status> {
        clean::remember(self, req).await
    }

    async fn dataset_add(
        &self,
        req: Request<pb::DatasetAddRequest>,
    ) -> Result<Response<pb::DatasetInfo>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| datasets::add(c, req)).await
    }

    async fn dataset_remove(
        &self,
        req: Request<pb::DatasetRemoveRequest>,
    ) -> Result<Response<pb::DatasetInfo>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| datasets::remove(c, req)).await
    }

    async fn dataset_list(
        &self,
        _: Request<pb::DatasetListRequest>,
    ) -> Result<Response<pb::DatasetListReply>, Status> {
        blocking(&self.datasets, datasets::list).await
    }

    async fn dataset_status(
        &self,
        req: Request<pb::DatasetStatusRequest>,
    ) -> Result<Response<pb::DiffReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| datasets::status(c, req)).await
    }

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| datasets::snapshot(c, req)).await
    }

    async fn log(&self, req: Request<pb::LogRequest>) -> Result<Response<pb::LogReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| datasets::log(c, req)).await
    }

    async fn diff(&self, req: Request<pb::DiffRequest>) -> Result<Response<pb::DiffReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| datasets::diff(c, req)).await
    }

    async fn tag(&self, req: Request<pb::TagRequest>) -> Result<Response<pb::TagReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| datasets::tag(c, req)).await
    }

    async fn lineage(
        &self,
        req: Request<pb::LineageRequest>,
    ) -> Result<Response<pb::LineageReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| datasets::lineage(c, req)).await
    }

    async fn checkout(
        &self,
        req: Request<pb::CheckoutRequest>,
    ) -> Result<Response<pb::CheckoutReply>, Status> {
        let req = req.into_inner();
        blocking(&self.datasets, move |c| datasets::checkout(c, req)).await
    }

    type CloneDatasetStream = Events<pb::SyncEvent>;

    async fn clone_dataset(
        &self,
        req: Request<pb::CloneRequest>,
    ) -> Result<Response<Self::CloneDatasetStream>, Status> {
        let req = req.into_inner();
        Ok(Response::new(transfer(&self.datasets, move |c, p| {
            datasets::clone(c, req, p)
        })))
    }

    type PushDatasetStream = Events<pb::SyncEvent>;

    async fn push_dataset(
        &self,
        req: Request<pb::PushDatasetRequest>,
    ) -> Result<Response<Self::PushDatasetStream>, Status> {
        let req = req.into_inner();
        Ok(Response::new(transfer(&self.datasets, move |c, p| {
            datasets::push_dataset(c, req, p)
        })))
    }

    async fn shutdown(
        &self,
        req: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownReply>, Status> {
        store::shutdown(self, req).await
    }

    async fn prune(
        &self,
        req: Request<Streaming<pb::PruneInput>>,
    ) -> Result<Response<pb::PruneReply>, Status> {
        prune::prune(self, req).await
    }

    async fn pin(&self, req: Request<pb::PinRequest>) -> Result<Response<pb::PinReply>, Status> {
        prune::pin(self, req).await
    }

    async fn repair(
        &self,
        req: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::RepairReply>, Status> {
        prune::repair(self, req).await
    }
}
