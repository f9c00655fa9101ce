//! The read-only HTTP gateway: any version of any file, by id or by its
//! path in a dataset snapshot, with byte ranges, for readers that speak
//! HTTP (fsspec, hence pandas, pyarrow, Dask and Ray; curl).
//!
//! ```text
//! GET|HEAD /v1/files/blake3:<hex>                  a file by id
//! GET|HEAD /v1/datasets/<name>[@<rev>]/<path>      a file of a snapshot; a directory
//!                                                  answers its JSON listing
//! GET      /v1/datasets                            this store's datasets (JSON)
//! GET      /v1/stats                               the gateway's counters (JSON)
//! ```
//!
//! `rev` is what the CLI takes: a tag, an id prefix, `~N`, a full id, or
//! nothing (the latest). Path segments are percent-decoded to bytes.
//! Content answers carry `Accept-Ranges: bytes`, an exact `Content-Length`,
//! `ETag: "blake3:<hex>"` (the file's id), `X-Hoard-Kind` (file, symlink,
//! dir) and no `Content-Encoding`; id-addressed answers (a file id, or a
//! snapshot named by its full id) are cacheable for ever. `Range: bytes=`
//! with one range gives `206` and `Content-Range`, a range past the end
//! `416`; `If-None-Match` with the id gives `304`. Errors are
//! `text/plain` with `X-Hoard-Error` (the error kind, see
//! [`crate::status`]) and say what to run.
//!
//! A file this store lacks is fetched on demand from the dataset's remote
//! (else `[http] remote`, else the default remote): for a range, only the
//! frames that cover it (the remote's manifest is trusted for the layout
//! and every chunk is checked against its id; the file is not recorded
//! until it is read whole, which checks it against its id).
//!
//! Callers on loopback need no token unless `[http] require_token`; others
//! need `Authorization: Bearer <token>` of read scope, and plaintext off
//! loopback is refused unless `allow_plaintext`.
//!
//! Floor 12 (a service): may import `sync` and the engine below it.

mod content;
pub mod range;
pub mod target;

use crate::config::HttpSection;
use crate::dataset::Datasets;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::sync::{PeerAddr, Want};
use crate::tokens::{Scope, Tokens};
use anyhow::{bail, Context};
use bytes::Bytes;
use content::Source;
use hoard_proto::paths::Paths;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use range::Wanted;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use target::{DatasetPath, Node, Route};
use tokio_stream::StreamExt;

/// Connections served at once; more wait in the listen backlog.
const CONNECTIONS: usize = 512;
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Response bodies read from the store at once (each holds a blocking
/// thread while it reads); more wait for a turn. Well below the runtime's
/// blocking pool, which the Local API shares.
const STREAMS: usize = 64;

type Body = BoxBody<Bytes, std::io::Error>;

/// The gateway's counters (`GET /v1/stats`).
#[derive(Default, Debug)]
pub struct Stats {
    pub requests: AtomicU64,
    pub ranges: AtomicU64,
    pub not_modified: AtomicU64,
    pub bytes_served: AtomicU64,
    pub errors: AtomicU64,
    /// Calls to a remote for content this store lacked, and their bytes.
    pub remote_fetches: AtomicU64,
    pub remote_bytes: AtomicU64,
}

impl Stats {
    fn json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "requests": g(&self.requests),
            "ranges": g(&self.ranges),
            "not_modified": g(&self.not_modified),
            "bytes_served": g(&self.bytes_served),
            "errors": g(&self.errors),
            "remote_fetches": g(&self.remote_fetches),
            "remote_bytes": g(&self.remote_bytes),
        })
    }
}

/// What `[http]` (or `hoardd run --http`) asks for, checked.
pub struct Options {
    pub addr: SocketAddr,
    pub tls: Option<crate::tls::ServerCert>,
    pub require_token: bool,
    pub remote: Option<String>,
}

impl Options {
    /// The gateway's options, or None when it is not to be served.
    pub fn from_config(
        http: &HttpSection,
        listen: Option<String>,
        store: &std::path::Path,
    ) -> anyhow::Result<Option<Options>> {
        let Some(l) = listen.or(http.listen.clone()) else {
            return Ok(None);
        };
        let addr: SocketAddr = l.parse().with_context(|| {
            format!("http listen address {l:?} is not IP:PORT (e.g. 127.0.0.1:7421)")
        })?;
        let tls = http.tls.unwrap_or(false) || http.tls_cert.is_some();
        if !addr.ip().is_loopback() && !tls && !http.allow_plaintext.unwrap_or(false) {
            bail!("refusing to serve the HTTP gateway without TLS on {addr}: tokens would cross the network in clear. Set `tls = true` under [http] in config.toml, or `allow_plaintext = true` there to force it");
        }
        let tls = if tls {
            Some(crate::tls::server_cert(
                store,
                http.tls_cert.as_deref(),
                http.tls_key.as_deref(),
            )?)
        } else {
            None
        };
        Ok(Some(Options {
            addr,
            tls,
            require_token: http.require_token.unwrap_or(false),
            remote: http.remote.clone(),
        }))
    }
}

/// The gateway's state, shared by its connections.
pub struct Gateway {
    ds: Arc<Datasets>,
    tokens: Arc<Tokens>,
    paths: Paths,
    require_token: bool,
    remote: Option<String>,
    stats: Arc<Stats>,
    manifests: content::Manifests,
    streams: Arc<tokio::sync::Semaphore>,
}

/// Binds `opts.addr` and serves until `stop` turns true (connections in
/// flight are closed gracefully). Returns the task and the bound address.
pub async fn serve(
    ds: Arc<Datasets>,
    tokens: Arc<Tokens>,
    paths: Paths,
    opts: Options,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", opts.addr))?;
    let tls = match &opts.tls {
        Some(c) => Some(tls_acceptor(c)?),
        None => None,
    };
    tracing::info!(addr = %opts.addr, tls = tls.is_some(), "serving the HTTP gateway");
    let gw = Arc::new(Gateway {
        ds,
        tokens,
        paths,
        require_token: opts.require_token,
        remote: opts.remote,
        stats: Arc::new(Stats::default()),
        manifests: content::Manifests::default(),
        streams: Arc::new(tokio::sync::Semaphore::new(STREAMS)),
    });
    Ok(tokio::spawn(accept_loop(gw, listener, tls, stop)))
}

fn tls_acceptor(c: &crate::tls::ServerCert) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("the HTTP gateway's certificate is not valid PEM")?;
    let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())
        .context("the HTTP gateway's key is not valid PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the HTTP gateway's certificate and key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "gateway: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        let _ = stream.set_nodelay(true);
        let (gw, tls, stop) = (gw.clone(), tls.clone(), stop.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(gw, s, peer, stop).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "gateway: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "gateway: TLS handshake timed out"),
                    }
                }
                None => connection(gw, stream, peer, stop).await,
            }
        });
    }
}

/// Serves one HTTP/1.1 connection until it closes or the gateway stops.
async fn connection<S>(
    gw: Arc<Gateway>,
    io: S,
    peer: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let gw = gw.clone();
        async move { Ok::<_, std::convert::Infallible>(gw.handle(req, peer).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    tokio::pin!(conn);
    let stopped = async {
        // The guard `wait_for` returns is not Send: dropped here.
        let _ = stop.wait_for(|s| *s).await;
    };
    let r = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = r {
        tracing::debug!(%peer, error = %e, "gateway: connection ended");
    }
}

/// A resolved request: what to answer with.
enum Answer {
    Json(serde_json::Value),
    Content {
        file: Id,
        size: u64,
        kind: &'static str,
        immutable: bool,
        source: Source,
        /// The snapshot a dataset path was found in.
        snapshot: Option<Id>,
    },
}

impl Gateway {
    async fn handle(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let r = self.clone().answer(req, peer).await;
        r.unwrap_or_else(|e| {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            error_response(&e)
        })
    }

    async fn answer(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>> {
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "the gateway is read-only: GET or HEAD\n",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Ok(r);
        }
        if let Some(r) = self.authorize(&req, peer) {
            return Ok(r);
        }
        let route = target::route(req.uri().path())?;
        let header = |name: header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (range, if_none_match) = (header(header::RANGE), header(header::IF_NONE_MATCH));
        let if_range = header(header::IF_RANGE);
        let gw = self.clone();
        let answer = blocking(move || gw.resolve(route)).await?;
        let (file, size, kind, immutable, source, snapshot) = match answer {
            Answer::Content {
                file,
                size,
                kind,
                immutable,
                source,
                snapshot,
            } => (file, size, kind, immutable, source, snapshot),
            Answer::Json(v) => return Ok(json_response(&v)),
        };
        let etag = format!("\"blake3:{}\"", file.hex());
        let mut r = content_head(&etag, kind, immutable, snapshot);
        if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        {
            self.stats.not_modified.fetch_add(1, Ordering::Relaxed);
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            return Ok(r);
        }
        // If-Range (RFC 9110 13.1.5): a range of another version is not
        // spliced onto what the client has; it gets the whole file.
        let range = range.filter(|_| if_range.as_deref().is_none_or(|v| v.trim() == etag));
        let wanted = range::parse(range.as_deref(), size).map_err(|e| Error::Invalid(e.0))?;
        let (start, end) = match wanted {
            Wanted::Whole => (0, size),
            Wanted::Part { start, end } => {
                self.stats.ranges.fetch_add(1, Ordering::Relaxed);
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    value(&format!("bytes {start}-{}/{size}", end - 1)),
                );
                (start, end)
            }
            Wanted::Unsatisfiable => {
                let mut u = text(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    &format!("the range asked for lies past the end of this {size}-byte file\n"),
                );
                u.headers_mut()
                    .insert(header::CONTENT_RANGE, value(&format!("bytes */{size}")));
                return Ok(u);
            }
        };
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, value(&(end - start).to_string()));
        if head || start == end {
            return Ok(r);
        }
        let turn = self
            .streams
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Cancelled)?;
        let gw = self.clone();
        let source =
            blocking(move || content::bring(&gw.ds, &gw.stats, &file, &source, start, end)).await?;
        let rx = content::stream(
            self.ds.clone(),
            self.stats.clone(),
            turn,
            file,
            source,
            start,
            end,
        );
        let body = StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx).map(|p| p.map(Frame::data)),
        );
        *r.body_mut() = BodyExt::boxed(body);
        Ok(r)
    }

    /// None when the caller may read; else the refusal.
    fn authorize<T>(&self, req: &Request<T>, peer: SocketAddr) -> Option<Response<Body>> {
        if peer.ip().is_loopback() && !self.require_token {
            return None;
        }
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let refuse = |msg: &str| {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            let mut r = text(StatusCode::UNAUTHORIZED, msg);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hoard\""),
            );
            Some(r)
        };
        match token.map(|t| self.tokens.check(t)) {
            None => refuse("a read token is needed: send `Authorization: Bearer TOKEN` (make one on the hub with `hoard token create --read`; fsspec takes it as storage_options token= or HOARD_TOKEN)\n"),
            Some(None) => refuse("unknown or revoked token\n"),
            Some(Some(s)) if s < Scope::Read => refuse("this token cannot read\n"),
            Some(Some(_)) => None,
        }
    }

    /// What a route names (runs on a blocking thread).
    fn resolve(&self, route: Route) -> Result<Answer> {
        match route {
            Route::Stats => Ok(Answer::Json(self.stats.json())),
            Route::Datasets => self.datasets(),
            Route::File(file) => {
                let remote = self.remote_for(None);
                let want = Want { file, size: None };
                let (size, source) =
                    content::locate(&self.ds, &self.manifests, &self.stats, want, remote)?;
                Ok(Answer::Content {
                    file,
                    size,
                    kind: "file",
                    immutable: true,
                    source,
                    snapshot: None,
                })
            }
            Route::Dataset(d) => self.dataset_path(d),
        }
    }

    fn datasets(&self) -> Result<Answer> {
        let mut list = Vec::new();
        for live in self.ds.all() {
            let head = self.ds.head(&live.name)?;
            list.push(serde_json::json!({
                "name": live.name,
                "head": head.map(|h| h.hex()),
            }));
        }
        Ok(Answer::Json(
            serde_json::json!({ "kind": "datasets", "datasets": list }),
        ))
    }

    fn dataset_path(&self, d: DatasetPath) -> Result<Answer> {
        // remotes.toml is read once per request.
        let remote = self.remote_for(Some(&d.name));
        let fetch = |rev: &str| {
            match &remote {
            Some(Ok(addr)) => crate::sync::dataset::fetch_snapshot(&self.ds, addr, &d.name, rev),
            Some(Err(e)) => Err(e.same_again()),
            None => Err(Error::NotFound(format!(
                "snapshot {}@{rev} is not in this store and no remote is configured; `hoard clone REMOTE/{}` it first",
                d.name, d.name
            ))),
        }
        };
        let snapshot = match self.ds.resolve(&d.spec()) {
            Ok(id) if self.ds.snapshot_object(&id)?.is_some() => id,
            // Resolved here (a tag, `~N`), held there: fetch it by id.
            Ok(id) => fetch(&id.hex())?,
            Err(Error::NotFound(_)) if remote.is_some() => fetch(&d.rev)?,
            Err(Error::NotFound(_)) if self.ds.head(&d.name)?.is_none() => {
                return Err(Error::NotFound(format!(
                    "this store has no dataset {name} and no remote to fetch it from: `hoard clone REMOTE/{name}` it, or `hoard remote add origin URL --token TOKEN` to read it from a hub on demand",
                    name = d.name
                )))
            }
            Err(e) => return Err(e),
        };
        match target::lookup(&self.ds, &snapshot, &d.path)? {
            Node::Dir { entries } => {
                Ok(Answer::Json(target::listing(&snapshot, &d.path, &entries)))
            }
            Node::File { entry } => {
                let want = Want {
                    file: entry.id,
                    size: Some(entry.size),
                };
                let (size, source) =
                    content::locate(&self.ds, &self.manifests, &self.stats, want, remote)?;
                Ok(Answer::Content {
                    file: entry.id,
                    size,
                    kind: target::kind_name(entry.kind),
                    immutable: d.immutable(),
                    source,
                    snapshot: Some(snapshot),
                })
            }
        }
    }

    /// The remote to fetch missing content from: the dataset's own, else
    /// `[http] remote`, else the default remote; None when there is none.
    fn remote_for(&self, dataset: Option<&str>) -> Option<Result<Arc<PeerAddr>>> {
        let own = dataset
            .and_then(|n| self.ds.get(n).ok())
            .and_then(|l| l.config.remote.clone());
        let name = own.or(self.remote.clone());
        match PeerAddr::from_remotes(&self.paths, name.as_deref()) {
            Ok((_, a)) => Some(Ok(Arc::new(a))),
            Err(_) if name.is_none() => None,
            Err(e) => Some(Err(Error::Invalid(e))),
        }
    }
}

/// Runs `f` on a blocking thread (the store is RocksDB and files).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a gateway task failed: {e}")))?
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

fn empty() -> Body {
    full(Bytes::new())
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from(msg.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The headers every content answer carries.
fn content_head(
    etag: &str,
    kind: &'static str,
    immutable: bool,
    snapshot: Option<Id>,
) -> Response<Body> {
    let mut r = Response::new(empty());
    let h = r.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, value(etag));
    h.insert("x-hoard-kind", HeaderValue::from_static(kind));
    if let Some(snap) = snapshot {
        // Lets a reader pin the version it opened (NAME@<this>/PATH).
        h.insert("x-hoard-snapshot", value(&snap.hex()));
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    r
}

fn json_response(v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from(v.to_string() + "\n")));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // A listing (of a directory, or of the datasets) is a directory.
    let dir = matches!(v["kind"].as_str(), Some("dir" | "datasets"));
    h.insert(
        "x-hoard-kind",
        HeaderValue::from_static(if dir { "dir" } else { "stats" }),
    );
    r
}

fn error_response(e: &Error) -> Response<Body> {
    let kind = e.kind();
    let status = StatusCode::from_u16(crate::status::http_code(kind))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = text(status, &format!("{e}\n"));
    r.headers_mut()
        .insert("x-hoard-error", HeaderValue::from_static(kind.as_str()));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    r
}
