//! This daemon's side of a connection to a peer: the address and how to
//! trust it, connecting (TLS, token, handshake), and the stream plumbing a
//! pull and a push share (presence checks, jobs over several streams).

use crate::error::{Error, Result};
use crate::id::Id;
use crate::store::Store;
use hoard_proto::v1::{self as pb, peer_client::PeerClient};
use hoard_proto::{PEER_BATCH, PEER_PROTOCOL};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

pub(crate) use crate::status::from_peer;

/// Chunk streams a pull keeps open at once.
pub(super) const STREAMS: usize = 4;
/// Messages of one call held while the receiver is busy with earlier calls.
const CALL_BUFFER: usize = 4;

pub(crate) type Client = PeerClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

#[derive(Clone)]
pub(crate) struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

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
pub(super) fn uncompressed<T>(m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut()
        .insert(UNCOMPRESSED, MetadataValue::from_static("1"));
    r
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

    /// How to reach remote `name` of `remotes.toml` (none: the default
    /// remote, `origin` or else the only one); returns its name too.
    pub fn from_remotes(
        paths: &hoard_proto::paths::Paths,
        name: Option<&str>,
    ) -> std::result::Result<(String, PeerAddr), String> {
        let remotes = hoard_proto::remotes::Remotes::load(paths)?;
        let (name, r) = remotes.pick(name).ok_or_else(|| match name {
            Some(n) => format!("remote {n:?} is not in remotes.toml; add it with `hoard remote add {n} URL --token TOKEN`"),
            None => "no remote is configured; add one with `hoard remote add origin URL --token TOKEN`".to_string(),
        })?;
        let ca = if r.ca.is_empty() {
            Vec::new()
        } else {
            std::fs::read(&r.ca).map_err(|e| format!("cannot read CA file {}: {e}", r.ca))?
        };
        Ok((name, PeerAddr::new(r.url, r.token, r.fingerprint, ca)))
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
                .map_err(|e| Error::Invalid(format!("bad remote URL {url:?}: {e}")))?,
        )
        .connect()
        .await
        .map_err(|e| {
            Error::Transient(format!(
                "cannot reach {url}: {e}; is its daemon running with `listen` set?"
            ))
        })?
    } else {
        return Err(Error::Invalid(format!(
            "remote URL {url:?} must start with http:// or https://"
        )));
    };
    let auth = if token.is_empty() {
        Auth(None)
    } else {
        Auth(Some(format!("Bearer {token}").parse().map_err(|_| {
            Error::Invalid("the token has characters a header cannot hold".into())
        })?))
    };
    let mut c = PeerClient::with_interceptor(channel, auth)
        .send_compressed(tonic::codec::CompressionEncoding::Zstd)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
        .max_decoding_message_size(hoard_proto::PEER_MESSAGE_LIMIT)
        .max_encoding_message_size(hoard_proto::PEER_MESSAGE_LIMIT);
    let hello = c
        .hello(pb::HelloRequest {
            protocol: PEER_PROTOCOL,
        })
        .await
        .map_err(|e| {
            let plain = url.starts_with("http://") && e.code() != tonic::Code::Unauthenticated;
            let e = from_peer(url, "the handshake", e);
            if plain {
                Error::Transient(format!(
                    "{e} (if the hub serves TLS, its URL starts with https://)"
                ))
            } else {
                e
            }
        })?
        .into_inner();
    let p = store.params().chunk;
    if hello.protocol != PEER_PROTOCOL {
        return Err(Error::Invalid(format!(
            "{url} speaks peer protocol {}, this daemon {PEER_PROTOCOL}; upgrade the older one",
            hello.protocol
        )));
    }
    if (hello.chunk_min, hello.chunk_avg, hello.chunk_max) != (p.min, p.avg, p.max) {
        return Err(Error::Invalid(format!(
            "{url} cuts chunks at {}/{}/{} bytes (min/avg/max), this store at {}/{}/{}: their chunk ids never match, so syncing would deduplicate nothing. Sync stores made with the same chunk_avg",
            hello.chunk_min, hello.chunk_avg, hello.chunk_max, p.min, p.avg, p.max
        )));
    }
    Ok(c)
}

/// A runtime on the calling thread, for one exchange with a peer.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start a runtime: {e}")))
}

/// Asks the peer which of `ids` it holds, [`PEER_BATCH`] at a time.
pub(super) fn peer_has<F, Fut>(
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
            .map_err(|e| from_peer(url, what, e))?
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

/// What arrives for the jobs of [`stream_jobs`]: one channel per job, in
/// job order, each ending after the job's last message (or its error).
pub(super) type JobStreams<T> = mpsc::Receiver<mpsc::Receiver<std::result::Result<T, Status>>>;

/// Runs `call` for each job on [`STREAMS`] concurrent streams. Messages
/// come out in job order, so the receiver sees data in the order it was
/// planned. At most [`STREAMS`] jobs wait beyond the one being read, each
/// at most [`CALL_BUFFER`] messages ahead, so memory stays bounded
/// however many jobs there are.
pub(super) fn stream_jobs<T, F, Fut>(
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
pub(super) fn each_message<T>(
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
