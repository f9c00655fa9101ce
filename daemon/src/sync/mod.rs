//! Peer sync: the `Peer` gRPC service other daemons call, and this daemon's
//! side of a transfer (pull from / push to a peer).
//!
//! Negotiation is by ids, never by bytes: the puller learns which files it
//! lacks, gets their manifests, works out which chunks it lacks and asks for
//! only those; push mirrors it, asking the peer what it lacks. Whoever
//! receives checks every chunk against its id before it is stored, and
//! every manifest against its file id (the BLAKE3 of the reassembled
//! content, read back from the store) before the file is recorded. Chunks
//! are made durable as their packs fill (sealed in the background while the
//! transfer goes on) and when a transfer ends or fails, so an interrupted
//! transfer resumes where it stopped: a rerun asks again and is sent only
//! what is still missing.

mod files;
mod frames;

pub use files::accept_manifests;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::manifest::Manifest;
use crate::put::Session;
use crate::store::{FrameCache, Store};
use crate::tokens::{Scope, Tokens};
use hoard_proto::v1::{self as pb, peer_client::PeerClient, peer_server::Peer};
use hoard_proto::{CHUNK_BATCH_BYTES, PEER_BATCH, PEER_PROTOCOL};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

/// Where the store counts transfers refused because a peer sent wrong data.
const REFUSED_KEY: &str = "counter/peer_refused";
/// Serialises updates of that count.
static REFUSED_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Transfers this store refused because a peer sent wrong data, over its
/// whole life (shown by `hoard daemon status`).
pub fn refused(store: &Store) -> Result<u64> {
    Ok(store
        .get_local(REFUSED_KEY)?
        .and_then(|v| v.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0))
}

/// Counts a refusal on its way out (in the store, so it outlives the
/// daemon).
pub(crate) fn counted<T>(store: &Store, r: Result<T>) -> Result<T> {
    if let Err(Error::Refused(why)) = &r {
        tracing::warn!(%why, "refused data from a peer");
        let _one = REFUSED_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let n = refused(store).map(|n| n + 1);
        if let Err(e) = n.and_then(|n| store.put_local(REFUSED_KEY, Some(&n.to_le_bytes()))) {
            tracing::warn!(error = %e, "cannot count the refusal");
        }
    }
    r
}

/// Chunk streams a pull keeps open at once.
const STREAMS: usize = 4;
/// Files whose manifests a `PutManifests` checks and records together.
const MANIFEST_BATCH: usize = 256;
/// Entries a manifest may have (a 512 GiB file of 32 KiB chunks).
const MAX_MANIFEST_ENTRIES: usize = 1 << 24;

// ---- checks on what a peer sends -------------------------------------------

/// A chunk from a peer: the right size and the right hash, or refused.
fn check_chunk(store: &Store, id: &Id, data: &[u8], peer: &str) -> Result<()> {
    if data.is_empty() || data.len() > store.params().chunk.max as usize {
        return Err(Error::Refused(format!(
            "{peer} sent chunk {} of {} bytes, outside this store's chunk sizes; refused",
            id.hex(),
            data.len()
        )));
    }
    if Id::of(data) != *id {
        return Err(Error::Refused(format!(
            "{peer} sent data for chunk {} that does not hash to it; refused, nothing of it stored",
            id.hex()
        )));
    }
    Ok(())
}

/// Reassembles manifest pieces into whole manifests.
#[derive(Default)]
struct Pieces {
    open: HashMap<Id, Manifest>,
    done: Vec<(Id, Manifest)>,
}

impl Pieces {
    fn add(&mut self, p: pb::ManifestPiece, peer: &str) -> Result<()> {
        let file = Id::from_slice(&p.file).ok_or_else(|| {
            Error::Refused(format!("{peer} sent a manifest with a malformed file id"))
        })?;
        if p.chunk_ids.len() != p.chunk_lens.len() || p.chunk_ids.len() > PEER_BATCH {
            return Err(Error::Refused(format!(
                "{peer} sent a malformed manifest piece for {file}"
            )));
        }
        let m = self.open.entry(file).or_insert_with(|| Manifest {
            size: p.size,
            chunks: Vec::new(),
        });
        if m.size != p.size || m.chunks.len() + p.chunk_ids.len() > MAX_MANIFEST_ENTRIES {
            return Err(Error::Refused(format!(
                "{peer} sent inconsistent manifest pieces for {file}"
            )));
        }
        for (id, len) in p.chunk_ids.iter().zip(p.chunk_lens) {
            let id = Id::from_slice(id).ok_or_else(|| {
                Error::Refused(format!(
                    "{peer} sent a malformed chunk id in the manifest of {file}"
                ))
            })?;
            m.chunks.push((id, len));
        }
        if p.last {
            if let Some(m) = self.open.remove(&file) {
                self.done.push((file, m));
            }
        }
        Ok(())
    }
}

fn pieces_of(file: &Id, m: &Manifest) -> Vec<pb::ManifestPiece> {
    let mut out = Vec::new();
    let mut chunks = m.chunks.chunks(PEER_BATCH).peekable();
    if chunks.peek().is_none() {
        out.push(pb::ManifestPiece {
            file: file.0.to_vec(),
            size: m.size,
            last: true,
            ..Default::default()
        });
    }
    while let Some(c) = chunks.next() {
        out.push(pb::ManifestPiece {
            file: file.0.to_vec(),
            size: m.size,
            chunk_ids: c.iter().map(|x| x.0 .0.to_vec()).collect(),
            chunk_lens: c.iter().map(|x| x.1).collect(),
            last: chunks.peek().is_none(),
        });
    }
    out
}

/// Reads `ids` from the store in batches of about [`CHUNK_BATCH_BYTES`],
/// handing each to `send` (false: stop). Ids the store lacks are skipped.
fn read_batches(
    store: &Store,
    ids: &[Id],
    send: &mut dyn FnMut(pb::ChunkBatch) -> bool,
) -> Result<()> {
    let mut cache = FrameCache::default();
    let mut batch = pb::ChunkBatch::default();
    let mut bytes = 0usize;
    for piece in ids.chunks(PEER_BATCH) {
        let locs = store.index.chunk_locs(piece)?;
        for (id, loc) in piece.iter().zip(locs) {
            let Some(loc) = loc else { continue };
            let data = store.read_chunk(id, &loc, &mut cache)?;
            bytes += data.len();
            batch.chunks.push(pb::ChunkData {
                id: id.0.to_vec(),
                data: data.into(),
            });
            if bytes >= CHUNK_BATCH_BYTES {
                if !send(std::mem::take(&mut batch)) {
                    return Ok(());
                }
                bytes = 0;
            }
        }
    }
    if !batch.chunks.is_empty() {
        send(batch);
    }
    Ok(())
}

/// What storing a batch did: (new chunks, chunks already here, bytes).
#[derive(Default, Clone, Copy)]
struct Received {
    stored: u64,
    had: u64,
    bytes: u64,
}

/// Checks and queues a batch of chunks from `peer`. With `asked`, every
/// chunk must be one of those (each once).
fn receive_batch(
    store: &Store,
    session: &mut Session,
    batch: pb::ChunkBatch,
    peer: &str,
    mut asked: Option<&mut HashSet<Id>>,
    mut in_order: Option<&mut files::InOrder>,
) -> Result<Received> {
    let mut r = Received::default();
    for c in batch.chunks {
        let id = Id::from_slice(&c.id)
            .ok_or_else(|| Error::Refused(format!("{peer} sent a malformed chunk id; refused")))?;
        if let Some(a) = asked.as_deref_mut() {
            if !a.remove(&id) {
                return Err(Error::Refused(format!(
                    "{peer} sent chunk {} that was not asked for (or twice); refused",
                    id.hex()
                )));
            }
        }
        check_chunk(store, &id, &c.data, peer)?;
        if let Some(o) = in_order.as_deref_mut() {
            o.arrived(&id, &c.data);
        }
        r.bytes += c.data.len() as u64;
        if session.put_chunk(id, c.data.to_vec())? {
            r.stored += 1;
        } else {
            r.had += 1;
        }
    }
    Ok(r)
}

fn ids_of(list: &[Vec<u8>], peer: &str) -> Result<Vec<Id>> {
    if list.len() > PEER_BATCH {
        return Err(Error::Config(format!(
            "{peer} asked about {} ids at once; at most {PEER_BATCH}",
            list.len()
        )));
    }
    list.iter()
        .map(|b| {
            Id::from_slice(b).ok_or_else(|| Error::Config(format!("{peer} sent a malformed id")))
        })
        .collect()
}

// ---- the Peer service ----------------------------------------------------------

pub struct PeerApi {
    store: Arc<Store>,
    datasets: Arc<crate::dataset::Datasets>,
    tokens: Arc<Tokens>,
}

impl PeerApi {
    pub fn new(datasets: Arc<crate::dataset::Datasets>, tokens: Arc<Tokens>) -> Self {
        PeerApi {
            store: datasets.store.clone(),
            datasets,
            tokens,
        }
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

/// The next message of an upload (None at its end).
type Next<'a, T> = &'a mut dyn FnMut() -> Result<Option<T>>;

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
        let mut inbound = req.into_inner();
        let store = self.store.clone();
        let rt = tokio::runtime::Handle::current();
        let r = tokio::task::spawn_blocking(move || {
            let mut next = || {
                rt.block_on(inbound.message())
                    .map_err(|e| Error::Busy(format!("{peer} went away: {e}")))
            };
            take(&store, &peer, &mut next)
        })
        .await
        .map_err(|e| Status::internal(format!("receiving {what} failed: {e}")))?;
        counted(&self.store, r).map(Response::new).map_err(status)
    }
}

type Events<T> = ReceiverStream<std::result::Result<T, Status>>;

/// Runs `produce` on a blocking thread, streaming what it sends (`send`
/// returns false once the caller has gone) and then its error, if any.
fn stream_from<T: Send + 'static>(
    depth: usize,
    produce: impl FnOnce(&mut dyn FnMut(T) -> bool) -> Result<()> + Send + 'static,
) -> Events<T> {
    let (tx, rx) = mpsc::channel(depth);
    tokio::task::spawn_blocking(move || {
        let r = produce(&mut |m| tx.blocking_send(Ok(m)).is_ok());
        if let Err(e) = r {
            let _ = tx.blocking_send(Err(status(e)));
        }
    });
    ReceiverStream::new(rx)
}

fn status(e: Error) -> Status {
    crate::api::status(e)
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
            tokio::task::block_in_place(|| self.store.index.files_present(&ids)).map_err(status)?;
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
        Ok(Response::new(stream_from(8, move |send| {
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
        })))
    }

    type GetChunksStream = Events<pb::ChunkBatch>;

    async fn get_chunks(
        &self,
        req: Request<pb::IdList>,
    ) -> std::result::Result<Response<Self::GetChunksStream>, Status> {
        let peer = self.authorize(&req, Scope::Read)?;
        let ids = ids_of(&req.into_inner().ids, &peer).map_err(status)?;
        let store = self.store.clone();
        Ok(Response::new(stream_from(4, move |send| {
            read_batches(&store, &ids, send)
        })))
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
        Ok(Response::new(stream_from(4, move |send| {
            for (id, loc) in ids.iter().zip(store.index.chunk_locs(&ids)?) {
                let Some(loc) = loc else { continue };
                let msg = pb::FrameData {
                    chunk: id.0.to_vec(),
                    payload: store.frame_payload(&loc)?.into(),
                };
                if !send(msg) {
                    return Ok(());
                }
            }
            Ok(())
        })))
    }

    async fn put_chunks(
        &self,
        req: Request<Streaming<pb::ChunkBatch>>,
    ) -> std::result::Result<Response<pb::PutReply>, Status> {
        self.upload(req, "chunks", |store, peer, next| {
            let mut session = Session::new(store);
            let mut reply = pb::PutReply::default();
            let outcome = (|| -> Result<()> {
                while let Some(b) = next()? {
                    let got = receive_batch(store, &mut session, b, peer, None, None)?;
                    reply.stored += got.stored;
                    reply.already_had += got.had;
                }
                Ok(())
            })();
            // What arrived intact before any failure is kept.
            session.seal()?;
            outcome.map(|_| reply)
        })
        .await
    }

    async fn put_frames(
        &self,
        req: Request<Streaming<pb::FramePut>>,
    ) -> std::result::Result<Response<pb::PutReply>, Status> {
        self.upload(req, "frames", |store, peer, next| {
            let mut intake = frames::Intake::new(store, peer);
            let taken = intake.take_all(|take| {
                while let Some(m) = next()? {
                    let plan = m.plan.ok_or_else(|| {
                        Error::Refused(format!("{peer} sent a frame without its plan; refused"))
                    })?;
                    let f = frames::PlannedFrame::parse(&plan, peer, None)?;
                    if f.chunks.is_empty() {
                        return Err(Error::Refused(format!(
                            "{peer} sent a frame with no chunks; refused"
                        )));
                    }
                    if !store.indexed(&f.bases)?.into_iter().all(|h| h) {
                        return Err(Error::Refused(format!(
                            "{peer} sent a delta against chunks this store does not have; refused"
                        )));
                    }
                    take(f, m.payload)?;
                }
                Ok(())
            });
            // What arrived intact before any failure is kept.
            intake.keep.session.seal()?;
            let had = intake.keep.had;
            Ok(pb::PutReply {
                stored: taken? - had,
                already_had: had,
            })
        })
        .await
    }

    async fn put_manifests(
        &self,
        req: Request<Streaming<pb::ManifestPiece>>,
    ) -> std::result::Result<Response<pb::PutReply>, Status> {
        self.upload(req, "manifests", |store, peer, next| {
            let mut pieces = Pieces::default();
            let mut reply = pb::PutReply::default();
            while let Some(p) = next()? {
                pieces.add(p, peer)?;
                if pieces.done.len() >= MANIFEST_BATCH {
                    let (n, had) = accept_manifests(store, std::mem::take(&mut pieces.done), peer)?;
                    reply.stored += n;
                    reply.already_had += had;
                }
            }
            if !pieces.open.is_empty() {
                return Err(Error::Refused(format!(
                    "{peer} ended a manifest stream in the middle of a file"
                )));
            }
            let (n, had) = accept_manifests(store, pieces.done, peer)?;
            reply.stored += n;
            reply.already_had += had;
            Ok(reply)
        })
        .await
    }

    type GetObjectsStream = Events<pb::ObjectBatch>;

    async fn get_objects(
        &self,
        req: Request<pb::IdList>,
    ) -> std::result::Result<Response<Self::GetObjectsStream>, Status> {
        let peer = self.authorize(&req, Scope::Read)?;
        let ids = ids_of(&req.into_inner().ids, &peer).map_err(status)?;
        let store = self.store.clone();
        Ok(Response::new(stream_from(4, move |send| {
            crate::dataset::remote::object_batches(&store, &ids, send)
        })))
    }

    async fn put_objects(
        &self,
        req: Request<Streaming<pb::ObjectBatch>>,
    ) -> std::result::Result<Response<pb::PutReply>, Status> {
        self.upload(req, "objects", |store, peer, next| {
            let mut reply = pb::PutReply::default();
            while let Some(b) = next()? {
                let (n, had) =
                    crate::dataset::remote::accept_objects(store, b.objects, peer, true)?;
                reply.stored += n;
                reply.already_had += had;
            }
            Ok(reply)
        })
        .await
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
        tokio::task::block_in_place(|| crate::dataset::remote::update_ref(&self.datasets, &req))
            .map(Response::new)
            .map_err(status)
    }
}

// ---- this daemon's side of a transfer ---------------------------------------

/// What a transfer did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub files: u64,
    pub files_already_there: u64,
    pub chunks_sent: u64,
    pub chunks_skipped: u64,
    pub bytes: u64,
    /// Files asked for that the peer does not have.
    pub missing: Vec<Id>,
}

/// Progress: bytes moved so far.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

pub(crate) type Client = PeerClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

#[derive(Clone)]
pub struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> std::result::Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        // A call marked by `uncompressed` does not offer to take compressed
        // replies, so the peer sends them as they are.
        if req.metadata_mut().remove(UNCOMPRESSED).is_some() {
            req.metadata_mut().remove("grpc-accept-encoding");
        }
        Ok(req)
    }
}

const UNCOMPRESSED: &str = "x-hoard-uncompressed";

/// A request whose replies should not be compressed on the wire: frames as
/// stored are zstd already (or incompressible), and compressing them again
/// costs the sender a core for nothing.
fn uncompressed<T>(m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut()
        .insert(UNCOMPRESSED, MetadataValue::from_static("1"));
    r
}

pub(crate) fn net(peer: &str, what: &str, e: Status) -> Error {
    match e.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            Error::Config(format!("{peer} refused {what}: {}", e.message()))
        }
        _ => Error::Busy(format!("{what} with {peer} failed: {}", e.message())),
    }
}

/// Where a peer is and how to trust it.
#[derive(Debug, Clone)]
pub struct PeerAddr {
    /// `http://HOST:PORT` (plaintext) or `https://HOST:PORT`.
    pub url: String,
    pub token: String,
    /// For https.
    pub trust: crate::tls::Trust,
}

impl PeerAddr {
    /// Trust by pinned fingerprint if given, else by CA certificate (PEM)
    /// if given, else the system's roots.
    pub fn new(url: String, token: String, fingerprint: String, ca_pem: Vec<u8>) -> PeerAddr {
        let trust = if !fingerprint.is_empty() {
            crate::tls::Trust::Pinned(fingerprint)
        } else if !ca_pem.is_empty() {
            crate::tls::Trust::Ca(ca_pem)
        } else {
            crate::tls::Trust::System
        };
        PeerAddr { url, token, trust }
    }
}

/// Largest HTTP/2 frame a peer may send us (the default, 16 KiB, cuts each
/// ~1 MiB pack frame into 64 pieces, each handled on its own).
pub(crate) const HTTP2_FRAME: u32 = 1 << 20;

pub(crate) async fn connect(addr: &PeerAddr, store: &Store) -> Result<Client> {
    let (url, token) = (addr.url.as_str(), addr.token.as_str());
    let tune = |e: Endpoint| {
        e.connect_timeout(Duration::from_secs(10))
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .max_frame_size(HTTP2_FRAME)
            .tcp_nodelay(true)
    };
    let channel = if url.starts_with("https://") {
        crate::tls::connect(url, &addr.trust, tune).await?
    } else if url.starts_with("http://") {
        tune(
            Endpoint::from_shared(url.to_string())
                .map_err(|e| Error::Config(format!("bad remote URL {url:?}: {e}")))?,
        )
        .connect()
        .await
        .map_err(|e| {
            Error::Busy(format!(
                "cannot reach {url}: {e}; is its daemon running with `listen` set?"
            ))
        })?
    } else {
        return Err(Error::Config(format!(
            "remote URL {url:?} must start with http:// or https://"
        )));
    };
    let auth = if token.is_empty() {
        Auth(None)
    } else {
        Auth(Some(format!("Bearer {token}").parse().map_err(|_| {
            Error::Config("the token has characters a header cannot hold".into())
        })?))
    };
    let mut c = PeerClient::with_interceptor(channel, auth)
        .send_compressed(tonic::codec::CompressionEncoding::Zstd)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20);
    let hello = c
        .hello(pb::HelloRequest {
            protocol: PEER_PROTOCOL,
        })
        .await
        .map_err(|e| {
            let plain = url.starts_with("http://") && e.code() != tonic::Code::Unauthenticated;
            let e = net(url, "the handshake", e);
            if plain {
                Error::Busy(format!(
                    "{e} (if the hub serves TLS, its URL starts with https://)"
                ))
            } else {
                e
            }
        })?
        .into_inner();
    let p = store.params().chunk;
    if hello.protocol != PEER_PROTOCOL {
        return Err(Error::Config(format!(
            "{url} speaks peer protocol {}, this daemon {PEER_PROTOCOL}; upgrade the older one",
            hello.protocol
        )));
    }
    if (hello.chunk_min, hello.chunk_avg, hello.chunk_max) != (p.min, p.avg, p.max) {
        return Err(Error::Config(format!(
            "{url} cuts chunks at {}/{}/{} bytes (min/avg/max), this store at {}/{}/{}: their chunk ids never match, so syncing would deduplicate nothing. Sync stores made with the same chunk_avg",
            hello.chunk_min, hello.chunk_avg, hello.chunk_max, p.min, p.avg, p.max
        )));
    }
    Ok(c)
}

/// Every chunk of `manifests`, once, in order of first use.
fn distinct_chunks<'a>(manifests: impl Iterator<Item = &'a Manifest>) -> Vec<Id> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in manifests {
        for (c, _) in &m.chunks {
            if seen.insert(*c) {
                out.push(*c);
            }
        }
    }
    out
}

/// Asks the peer which of `ids` it holds, [`PEER_BATCH`] at a time.
fn peer_has<F, Fut>(
    rt: &tokio::runtime::Runtime,
    ids: &[Id],
    url: &str,
    what: &str,
    mut call: F,
) -> Result<Vec<bool>>
where
    F: FnMut(pb::IdList) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Response<pb::Presence>, Status>>,
{
    let mut out = Vec::with_capacity(ids.len());
    for batch in ids.chunks(PEER_BATCH) {
        let present = rt
            .block_on(call(pb::IdList {
                ids: batch.iter().map(|c| c.0.to_vec()).collect(),
            }))
            .map_err(|e| net(url, what, e))?
            .into_inner()
            .present;
        if present.len() != batch.len() {
            return Err(Error::Refused(format!(
                "{url} answered {what} for {} ids, asked about {}; refused",
                present.len(),
                batch.len()
            )));
        }
        out.extend(present);
    }
    Ok(out)
}

/// Asks the peer where `ids` lie, [`PEER_BATCH`] ids per request and
/// [`STREAMS`] requests at a time; one plan per batch, in order.
fn plan_remote(
    rt: &tokio::runtime::Runtime,
    peer: &Client,
    url: &str,
    ids: &[Id],
) -> Result<Vec<pb::FramePlan>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(STREAMS));
    let calls: Vec<_> = ids
        .chunks(PEER_BATCH)
        .map(|batch| {
            let (mut peer, limit) = (peer.clone(), limit.clone());
            let req = pb::IdList {
                ids: batch.iter().map(|c| c.0.to_vec()).collect(),
            };
            rt.spawn(async move {
                let _permit = limit.acquire_owned().await;
                peer.plan_frames(req).await
            })
        })
        .collect();
    rt.block_on(async {
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            let plan = c
                .await
                .map_err(|e| Error::Busy(format!("a planning task failed: {e}")))?
                .map_err(|e| net(url, "planning frames", e))?;
            out.push(plan.into_inner());
        }
        Ok(out)
    })
}

/// Frames asked for per `GetFrames` call.
const FRAMES_PER_CALL: usize = 8;
/// Chunks asked for per `GetChunks` call.
const CHUNKS_PER_CALL: usize = 128;
/// Messages of one call held while the receiver is busy with earlier calls.
const CALL_BUFFER: usize = 4;

/// What arrives for the jobs of [`stream_jobs`]: one channel per job, in
/// job order, each ending after the job's last message (or its error).
type JobStreams<T> = mpsc::Receiver<mpsc::Receiver<std::result::Result<T, Status>>>;

/// Runs `call` for each job on [`STREAMS`] concurrent streams. Messages
/// come out in job order, so the receiver sees data in the order it was
/// planned. At most [`STREAMS`] jobs wait beyond the one being read, each
/// at most [`CALL_BUFFER`] messages ahead, so memory stays bounded
/// however many jobs there are.
fn stream_jobs<T, F, Fut>(
    rt: &tokio::runtime::Runtime,
    peer: &Client,
    jobs: Vec<Vec<Id>>,
    call: F,
) -> JobStreams<T>
where
    T: Send + 'static,
    F: Fn(Client, pb::IdList) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = std::result::Result<Response<Streaming<T>>, Status>> + Send,
{
    let (slots, out) = mpsc::channel(STREAMS);
    let queue = Arc::new(tokio::sync::Mutex::new(jobs.into_iter()));
    for _ in 0..STREAMS {
        let (slots, queue, peer, call) = (slots.clone(), queue.clone(), peer.clone(), call.clone());
        rt.spawn(async move {
            loop {
                // A job's channel is queued for the receiver while the job
                // is taken, so channels queue in job order.
                let (job, tx) = {
                    let mut q = queue.lock().await;
                    let Some(job) = q.next() else { return };
                    let (tx, rx) = mpsc::channel(CALL_BUFFER);
                    if slots.send(rx).await.is_err() {
                        return;
                    }
                    (job, tx)
                };
                let ids = pb::IdList {
                    ids: job.iter().map(|c| c.0.to_vec()).collect(),
                };
                let mut s = match call(peer.clone(), ids).await {
                    Ok(s) => s.into_inner(),
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                loop {
                    match s.message().await {
                        Ok(Some(m)) => {
                            if tx.send(Ok(m)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
            }
        });
    }
    out
}

/// Hands every message of `streams`, in order, to `each`.
fn each_message<T>(
    rt: &tokio::runtime::Runtime,
    mut streams: JobStreams<T>,
    mut each: impl FnMut(std::result::Result<T, Status>) -> Result<()>,
) -> Result<()> {
    while let Some(mut rx) = rt.block_on(streams.recv()) {
        while let Some(m) = rt.block_on(rx.recv()) {
            each(m)?;
        }
    }
    Ok(())
}

/// Brings `files` from the peer at `url` into this store.
pub fn pull(store: &Store, addr: &PeerAddr, files: &[Id], progress: Progress) -> Result<Summary> {
    counted(store, pull_inner(store, addr, files, progress))
}

fn pull_inner(store: &Store, addr: &PeerAddr, files: &[Id], progress: Progress) -> Result<Summary> {
    let url = addr.url.as_str();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Busy(format!("cannot start a runtime: {e}")))?;
    let mut peer = rt.block_on(connect(addr, store))?;
    let mut sum = Summary::default();
    let present = store.index.files_present(files)?;
    let want: Vec<Id> = files
        .iter()
        .zip(present)
        .filter(|(_, p)| !p)
        .map(|(f, _)| *f)
        .collect();
    sum.files_already_there = (files.len() - want.len()) as u64;
    // Manifests.
    let mut pieces = Pieces::default();
    for batch in want.chunks(PEER_BATCH) {
        let mut s = rt
            .block_on(peer.get_manifests(pb::IdList {
                ids: batch.iter().map(|f| f.0.to_vec()).collect(),
            }))
            .map_err(|e| net(url, "sending manifests", e))?
            .into_inner();
        let asked: HashSet<Id> = batch.iter().copied().collect();
        while let Some(p) = rt
            .block_on(s.message())
            .map_err(|e| net(url, "sending manifests", e))?
        {
            if Id::from_slice(&p.file).is_none_or(|f| !asked.contains(&f)) {
                return Err(Error::Refused(format!(
                    "{url} sent a manifest that was not asked for; refused"
                )));
            }
            pieces.add(p, url)?;
        }
    }
    if !pieces.open.is_empty() {
        return Err(Error::Refused(format!(
            "{url} sent an incomplete manifest; refused"
        )));
    }
    let got: HashSet<Id> = pieces.done.iter().map(|(f, _)| *f).collect();
    sum.missing = want.iter().filter(|f| !got.contains(f)).copied().collect();
    // Chunks this store lacks.
    let needed = distinct_chunks(pieces.done.iter().map(|(_, m)| m));
    let mut missing_chunks = Vec::new();
    for batch in needed.chunks(PEER_BATCH) {
        for (c, have) in batch.iter().zip(store.indexed(batch)?) {
            if have {
                sum.chunks_skipped += 1;
            } else {
                missing_chunks.push(*c);
            }
        }
    }
    let started = std::time::Instant::now();
    let mut intake = frames::Intake::new(store, url);
    // Files are hashed as their chunks arrive, so few are read back.
    intake.files = Some(files::InOrder::new(
        store,
        pieces.done,
        &missing_chunks,
        url,
    )?);
    // Frames the peer stores as deltas against chunks this store has travel
    // as stored; the rest as chunks.
    // Two rounds: the second takes as stored the delta frames whose bases
    // arrived in the first (a fresh pull of several versions).
    for round in 0..2 {
        if missing_chunks.is_empty() {
            break;
        }
        if round == 1 {
            // The first round's frames must be indexed to serve as bases.
            intake.keep.session.seal()?;
        }
        let mut plans = frames::Plans::new(url);
        for (batch, plan) in
            missing_chunks
                .chunks(PEER_BATCH)
                .zip(plan_remote(&rt, &peer, url, &missing_chunks)?)
        {
            let asked: HashSet<Id> = batch.iter().copied().collect();
            for e in plan.frames {
                plans.add(e, &asked)?;
            }
        }
        let planned = plans.worth_taking(store)?;
        // Fetched over several streams and handed on in plan order, while
        // other threads check, hash and store.
        let keys: Vec<Id> = planned.iter().map(|f| f.chunks[0].0).collect();
        let keys_len = keys.len();
        tracing::debug!(round, frames = keys_len, at = ?started.elapsed(), "planned a round of frames");
        let jobs = keys.chunks(FRAMES_PER_CALL).map(|k| k.to_vec()).collect();
        let mut planned: HashMap<Id, frames::PlannedFrame> =
            keys.into_iter().zip(planned).collect();
        let streams = stream_jobs(&rt, &peer, jobs, |mut p, ids| async move {
            p.get_frames(uncompressed(ids)).await
        });
        let taken = intake.take_all(|take| {
            each_message(&rt, streams, |fd| {
                let fd = fd.map_err(|e| net(url, "sending frames", e))?;
                let f = Id::from_slice(&fd.chunk)
                    .and_then(|key| planned.remove(&key))
                    .ok_or_else(|| {
                        Error::Refused(format!(
                            "{url} sent a frame that was not asked for; refused"
                        ))
                    })?;
                sum.bytes += fd.payload.len() as u64;
                progress(sum.bytes);
                take(f, fd.payload)
            })
        });
        let taken = taken.map(|n| sum.chunks_sent += n);
        if let Err(e) = taken {
            // What arrived intact is kept, so a rerun resumes from here.
            intake.keep.session.seal()?;
            return Err(e);
        }
        tracing::debug!(
            round,
            frames = keys_len,
            at = ?started.elapsed(),
            "took a round of frames"
        );
        let before = missing_chunks.len();
        missing_chunks.retain(|c| !intake.keep.covered.contains(c));
        if missing_chunks.len() == before {
            break;
        }
    }
    let framed = started.elapsed();
    let one_by_one = missing_chunks.len();
    // The rest as chunks, over several streams at once; this thread checks
    // and stores what arrives.
    let mut asked: HashSet<Id> = missing_chunks.iter().copied().collect();
    let jobs: Vec<Vec<Id>> = missing_chunks
        .chunks(CHUNKS_PER_CALL)
        .map(|c| c.to_vec())
        .collect();
    let streams = stream_jobs(&rt, &peer, jobs, |mut p, ids| async move {
        p.get_chunks(ids).await
    });
    let stored = each_message(&rt, streams, |b| {
        let b = b.map_err(|e| net(url, "sending chunks", e))?;
        let got = receive_batch(
            store,
            &mut intake.keep.session,
            b,
            url,
            Some(&mut asked),
            intake.files.as_mut(),
        )?;
        sum.chunks_sent += got.stored + got.had;
        sum.bytes += got.bytes;
        progress(sum.bytes);
        Ok(())
    });
    // What arrived intact is kept, so a rerun resumes from here.
    intake.keep.session.seal()?;
    stored?;
    if !asked.is_empty() {
        return Err(Error::NotFound(format!(
            "{url} lacks {} chunks of the files asked for (its store is damaged? run `hoard verify` there)",
            asked.len()
        )));
    }
    let transferred = started.elapsed();
    if let Some(files) = intake.files.take() {
        let done = files.finish(store, url)?;
        sum.files += done.recorded;
        sum.files_already_there += done.already_here;
        tracing::debug!(
            streamed = done.streamed,
            read_back = done.read_back,
            "checked pulled files"
        );
    }
    tracing::info!(
        peer = url,
        frames_as_stored = intake.keep.as_stored,
        frames_split = intake.keep.split,
        chunks_one_by_one = one_by_one,
        ?framed,
        ?transferred,
        total = ?started.elapsed(),
        "pulled"
    );
    Ok(sum)
}

/// Sends `files` (and the chunks of them the peer lacks) to the peer at `url`.
pub fn push(store: &Store, addr: &PeerAddr, files: &[Id], progress: Progress) -> Result<Summary> {
    counted(store, push_inner(store, addr, files, progress))
}

/// A runtime on the calling thread, for one exchange with a peer.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Busy(format!("cannot start a runtime: {e}")))
}

fn push_inner(store: &Store, addr: &PeerAddr, files: &[Id], progress: Progress) -> Result<Summary> {
    let rt = runtime()?;
    let mut peer = rt.block_on(connect(addr, store))?;
    push_over(store, &rt, &mut peer, &addr.url, files, progress)
}

/// [`push`] over a connection the caller holds (and keeps using after).
pub(crate) fn push_over(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    peer: &mut Client,
    url: &str,
    files: &[Id],
    progress: Progress,
) -> Result<Summary> {
    let mut sum = Summary::default();
    let mut send = Vec::new();
    let present = peer_has(rt, files, url, "the file check", |ids| {
        let mut p = peer.clone();
        async move { p.have_files(ids).await }
    })?;
    for (f, p) in files.iter().zip(present) {
        if p {
            sum.files_already_there += 1;
        } else {
            send.push(*f);
        }
    }
    let mut manifests = Vec::new();
    for f in &send {
        let m = store.index.manifest(f)?.ok_or_else(|| {
            Error::NotFound(format!("{f} is not in this store, so it cannot be pushed"))
        })?;
        manifests.push((*f, m));
    }
    let needed = distinct_chunks(manifests.iter().map(|(_, m)| m));
    let mut to_send = Vec::new();
    let present = peer_has(rt, &needed, url, "the chunk check", |ids| {
        let mut p = peer.clone();
        async move { p.have_chunks(ids).await }
    })?;
    for (c, p) in needed.iter().zip(present) {
        if p {
            sum.chunks_skipped += 1;
        } else {
            to_send.push(*c);
        }
    }
    // Frames as stored where the peer holds their bases (a new version
    // travels as deltas against the one it has); the rest as chunks.
    let (framed, framed_bytes) = push_frames(rt, peer, store, url, &to_send)?;
    if !framed.is_empty() {
        to_send.retain(|c| !framed.contains(c));
        sum.chunks_sent += framed.len() as u64;
        sum.bytes += framed_bytes;
        progress(sum.bytes);
    }
    // Chunks, read here on one thread while the runtime sends them.
    let (tx, rx) = mpsc::channel::<pb::ChunkBatch>(4);
    let r = std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<(u64, u64)> {
            let (mut n, mut bytes) = (0u64, 0u64);
            read_batches(store, &to_send, &mut |b| {
                n += b.chunks.len() as u64;
                bytes += b.chunks.iter().map(|c| c.data.len() as u64).sum::<u64>();
                tx.blocking_send(b).is_ok()
            })?;
            Ok((n, bytes))
        });
        let sent = rt.block_on(peer.put_chunks(ReceiverStream::new(rx)));
        let read = reader
            .join()
            .map_err(|_| Error::Busy("the chunk reader panicked".into()))?;
        let reply = sent
            .map_err(|e| net(url, "receiving chunks", e))?
            .into_inner();
        let (n, bytes) = read?;
        Ok::<_, Error>((reply, n, bytes))
    });
    let (reply, n, bytes) = r?;
    sum.chunks_sent += n;
    sum.chunks_skipped += reply.already_had;
    sum.bytes += bytes;
    progress(sum.bytes);
    let pieces: Vec<pb::ManifestPiece> = manifests
        .iter()
        .flat_map(|(f, m)| pieces_of(f, m))
        .collect();
    let reply = rt
        .block_on(peer.put_manifests(tokio_stream::iter(pieces)))
        .map_err(|e| net(url, "receiving manifests", e))?
        .into_inner();
    sum.files = reply.stored;
    sum.files_already_there += reply.already_had;
    Ok(sum)
}

/// Largest frame pushed as stored (messages stay under the peer's limit).
const MAX_PUT_FRAME: u32 = 4 << 20;

/// Sends the frames of `to_send` whose bases the peer holds, as stored;
/// returns the chunks they carried and the bytes sent. A peer that does
/// not take frames gets everything as chunks.
fn push_frames(
    rt: &tokio::runtime::Runtime,
    peer: &Client,
    store: &Store,
    url: &str,
    to_send: &[Id],
) -> Result<(HashSet<Id>, u64)> {
    let mut plans = frames::Plans::new("this store");
    for batch in to_send.chunks(PEER_BATCH) {
        let asked: HashSet<Id> = batch.iter().copied().collect();
        for e in frames::plan(store, batch)?.frames {
            plans.add(e, &asked)?;
        }
    }
    let candidates: Vec<frames::PlannedFrame> = plans
        .useful()
        .into_iter()
        .filter(|f| f.stored_len <= MAX_PUT_FRAME)
        .collect();
    let mut bases: Vec<Id> = candidates.iter().flat_map(|f| f.bases.clone()).collect();
    bases.sort();
    bases.dedup();
    let present = peer_has(rt, &bases, url, "the base check", |ids| {
        let mut p = peer.clone();
        async move { p.have_chunks(ids).await }
    })?;
    let held: HashSet<Id> = bases
        .into_iter()
        .zip(present)
        .filter_map(|(b, p)| p.then_some(b))
        .collect();
    let sendable: Vec<frames::PlannedFrame> = candidates
        .into_iter()
        .filter(|f| f.bases.iter().all(|b| held.contains(b)))
        .collect();
    if sendable.is_empty() {
        return Ok((HashSet::new(), 0));
    }
    // Read here on one thread while the runtime sends them.
    let (tx, rx) = mpsc::channel::<pb::FramePut>(4);
    let r = std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<(HashSet<Id>, u64)> {
            let (mut carried, mut bytes) = (HashSet::new(), 0u64);
            for piece in sendable.chunks(PEER_BATCH) {
                let firsts: Vec<Id> = piece.iter().map(|f| f.chunks[0].0).collect();
                for (f, loc) in piece.iter().zip(store.index.chunk_locs(&firsts)?) {
                    let loc = loc.ok_or_else(|| {
                        Error::Corrupt(format!("chunk {} left the index", f.chunks[0].0.hex()))
                    })?;
                    let payload = store.frame_payload(&loc)?;
                    bytes += payload.len() as u64;
                    let m = pb::FramePut {
                        plan: Some(f.entry()),
                        payload: payload.into(),
                    };
                    if tx.blocking_send(m).is_err() {
                        return Ok((carried, bytes));
                    }
                    carried.extend(f.chunks.iter().map(|c| c.0));
                }
            }
            Ok((carried, bytes))
        });
        let sent = rt.block_on({
            let mut p = peer.clone();
            async move { p.put_frames(ReceiverStream::new(rx)).await }
        });
        let read = reader
            .join()
            .map_err(|_| Error::Busy("the frame reader panicked".into()))?;
        match sent {
            Ok(_) => read,
            Err(e) if e.code() == tonic::Code::Unimplemented => Ok((HashSet::new(), 0)),
            Err(e) => Err(net(url, "receiving frames", e)),
        }
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::tests::{add_paths, noise, read_all, small_store};

    #[test]
    fn chunks_that_do_not_hash_to_their_id_or_are_oversized_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let store = small_store(d.path());
        let data = noise(3000, 1);
        let id = Id::of(&data);
        assert!(check_chunk(&store, &id, &data, "p").is_ok());
        let mut bad = data.clone();
        bad[7] ^= 1;
        let e = check_chunk(&store, &id, &bad, "peer x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("peer x") && e.contains(&id.hex()), "{e}");
        let huge = noise(store.params().chunk.max as usize + 1, 2);
        assert!(check_chunk(&store, &Id::of(&huge), &huge, "p").is_err());
        assert!(check_chunk(&store, &Id::of(&[]), &[], "p").is_err());
    }

    #[test]
    fn manifests_are_checked_against_the_content_before_they_are_recorded() {
        let d = tempfile::tempdir().unwrap();
        let src = small_store(&d.path().join("src"));
        let dst = small_store(&d.path().join("dst"));
        let f = d.path().join("f");
        let content = noise(200_000, 3);
        std::fs::write(&f, &content).unwrap();
        let (done, _, _) = add_paths(&src, &[&f]);
        let file = done[0].file;
        let m = src.index.manifest(&file).unwrap().unwrap();

        // Before its chunks: refused, nothing recorded.
        let e = accept_manifests(&dst, vec![(file, m.clone())], "p").unwrap_err();
        assert!(e.to_string().contains("must arrive before"), "{e}");
        // The chunks arrive (verified), then a lying manifest is refused.
        let mut s = Session::new(&dst);
        let mut cache = FrameCache::default();
        let locs = src
            .index
            .chunk_locs(&m.chunks.iter().map(|c| c.0).collect::<Vec<_>>())
            .unwrap();
        for ((id, _), loc) in m.chunks.iter().zip(locs) {
            let data = src.read_chunk(id, &loc.unwrap(), &mut cache).unwrap();
            check_chunk(&dst, id, &data, "p").unwrap();
            s.put_chunk(*id, data).unwrap();
        }
        s.seal().unwrap();
        let mut swapped = m.clone();
        swapped.chunks.swap(0, 1);
        let e = accept_manifests(&dst, vec![(file, swapped)], "p").unwrap_err();
        assert!(e.to_string().contains("does not hash"), "{e}");
        let mut wrong_size = m.clone();
        wrong_size.size += 1;
        assert!(accept_manifests(&dst, vec![(file, wrong_size)], "p").is_err());
        assert_eq!(dst.file_size(&file).unwrap(), None);
        // The true one is recorded and reads back.
        assert_eq!(
            accept_manifests(&dst, vec![(file, m.clone())], "p").unwrap(),
            (1, 0)
        );
        assert_eq!(read_all(&dst, &file), content);
        assert_eq!(
            accept_manifests(&dst, vec![(file, m)], "p").unwrap(),
            (0, 1)
        );
    }

    #[test]
    fn manifest_pieces_must_be_consistent() {
        let f = Id::of(b"x");
        let piece = |size, n: usize, last| pb::ManifestPiece {
            file: f.0.to_vec(),
            size,
            chunk_ids: vec![Id::of(b"c").0.to_vec(); n],
            chunk_lens: vec![1; n],
            last,
        };
        let mut p = Pieces::default();
        p.add(piece(2, 1, false), "p").unwrap();
        assert!(
            p.add(piece(3, 1, true), "p").is_err(),
            "size changed between pieces"
        );
        let mut p = Pieces::default();
        let mut bad = piece(1, 1, true);
        bad.chunk_lens.push(4);
        assert!(p.add(bad, "p").is_err(), "ids and lengths differ in number");
        let mut bad = piece(1, 1, true);
        bad.file = vec![1, 2, 3];
        assert!(p.add(bad, "p").is_err(), "malformed file id");
        assert!(
            p.add(piece(1, PEER_BATCH + 1, true), "p").is_err(),
            "oversized piece"
        );
        let mut p = Pieces::default();
        p.add(piece(2, 1, false), "p").unwrap();
        p.add(piece(2, 1, true), "p").unwrap();
        assert_eq!(p.done.len(), 1);
        assert_eq!(p.done[0].1.chunks.len(), 2);
    }
}
