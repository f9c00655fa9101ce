//! Running `hoardd`: one daemon per store (a lock file), the local API on a
//! Unix socket with mode 0600, clean shutdown on SIGTERM/SIGINT or request.
//!
//! Floor 13: composes the rooms below it (store, datasets, watchers, auto-
//! sync, the Local and Peer services); nothing imports it but `main.rs`.

use crate::config::Config;
use crate::service::LocalApi;
use crate::store::Store;
use anyhow::{bail, Context};
use hoard_proto::paths::Paths;
use hoard_proto::v1::local_server::LocalServer;
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long in-flight calls get to finish once a stop is asked for; then
/// their connections are dropped (a call cut off this way was never
/// acknowledged, and what it stored is either durable or recovered at the
/// next start).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A stop never takes longer than this: whatever is still running (a
/// blocking handler, a sync stuck on a silent hub) is abandoned and the
/// process exits, as after a crash, which the store is built to survive.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(9);

/// Exits the process [`SHUTDOWN_BOUND`] after a stop was asked for, if it
/// has not exited by then.
fn start_watchdog() {
    let spawned = std::thread::Builder::new()
        .name("hoard-stop-watchdog".into())
        .spawn(|| {
            std::thread::sleep(SHUTDOWN_BOUND);
            tracing::warn!(
                "work still running {}s after the stop was asked for; abandoning it",
                SHUTDOWN_BOUND.as_secs()
            );
            // No destructors: other threads may still be inside RocksDB.
            unsafe { libc::_exit(0) };
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the stop watchdog; stopping without a bound");
    }
}

/// Resolves [`SHUTDOWN_GRACE`] after `stop` turns true.
async fn grace_over(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
    tokio::time::sleep(SHUTDOWN_GRACE).await;
}

/// Closes every descriptor above stderr this process inherited: a daemon
/// started from a git hook is handed git's open pipes (those of its
/// long-running filter), and holding their write ends keeps git waiting
/// for ever for the filter to finish.
pub fn close_inherited_fds() {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    // The directory's own descriptor is among them; it is closed by now.
    for fd in fds {
        unsafe { libc::close(fd) };
    }
}

/// Holds the store's lock for the daemon's lifetime.
pub struct StoreLock {
    _file: File,
}

/// Takes the store's lock, or explains who holds it.
pub fn lock_store(paths: &Paths) -> anyhow::Result<StoreLock> {
    let path = paths.lock();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    // A holder that is already dead or a zombie is still exiting (its other
    // threads hold the lock until the last one is gone): wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match f.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                f.rewind()?;
                let _ = f.read_to_string(&mut pid);
                let holder: Option<i32> = pid.trim().parse().ok();
                if holder.is_some_and(exiting) && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                }
                bail!(
                    "another hoardd (pid {}) is already serving the store {}; stop it with `hoard daemon stop` or use another HOARD_HOME",
                    pid.trim(),
                    paths.store.display()
                );
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
    }
    f.set_len(0)?;
    f.rewind()?;
    writeln!(f, "{}", std::process::id())?;
    Ok(StoreLock { _file: f })
}

/// True if `pid` no longer exists or is a zombie.
fn exiting(pid: i32) -> bool {
    if unsafe { libc::kill(pid, 0) } != 0 {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Runs the daemon in the foreground until SIGTERM/SIGINT or a shutdown request.
pub fn run(
    paths: Paths,
    listen: Option<String>,
    tls: bool,
    http: Option<String>,
) -> anyhow::Result<()> {
    private_dir(&paths.store)?;
    let config = Config::load(&paths.config)?;
    let p = &config.peer;
    let tls = tls || p.tls.unwrap_or(false) || p.tls_cert.is_some();
    let peer = match peer_listen(
        listen.or(p.listen.clone()),
        tls,
        p.allow_plaintext.unwrap_or(false),
    )? {
        Some(addr) => {
            let cert = if tls {
                Some(crate::tls::server_cert(
                    &paths.store,
                    p.tls_cert.as_deref(),
                    p.tls_key.as_deref(),
                )?)
            } else {
                None
            };
            Some((addr, cert))
        }
        None => None,
    };
    let gateway = crate::gateway::Options::from_config(&config.http, http, &paths.store)?;
    let _lock = lock_store(&paths)?;
    let store = match config.s3(&paths.store)? {
        None => Store::open(&paths.store, config.new_store_params()),
        Some(s3) => {
            let backend = crate::backend::s3::S3Packs::open(s3)?;
            tracing::info!(endpoint = backend.endpoint(), "packs are in an S3 bucket");
            let uploaded = upload_local_packs(&paths.store, &backend)?;
            Store::open_with(&paths.store, config.new_store_params(), Box::new(backend)).inspect(
                |s| {
                    if uploaded > 0 {
                        if let Err(e) = s.mirror_refs_to(s.backend()) {
                            tracing::warn!(error = %e, "cannot mirror the refs to the pack store");
                        }
                    }
                },
            )
        }
    };
    let store = Arc::new(
        store.with_context(|| format!("cannot open the store at {}", paths.store.display()))?,
    );
    tracing::info!(store = %paths.store.display(), socket = %paths.socket.display(), pid = std::process::id(), "hoardd starting");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tokens = Arc::new(crate::tokens::Tokens::open(&paths.store)?);
    let datasets = crate::dataset::Datasets::open(store.clone())
        .context("cannot load the registered datasets")?;
    let watchers = Arc::new(crate::watch::Watchers::new(config.watch.config()));
    for live in datasets.all() {
        watchers.apply(&datasets, &live);
    }
    let autosync = Arc::new(
        crate::autosync::AutoSync::start(datasets.clone(), paths.clone())
            .context("cannot start the auto-sync thread")?,
    );
    let ctx = Arc::new(crate::service::Ctx {
        ds: datasets,
        watchers: watchers.clone(),
        autosync: autosync.clone(),
        paths: paths.clone(),
    });
    let served = rt.block_on(serve(ctx.clone(), tokens, &paths, peer, gateway));
    store.begin_shutdown();
    watchers.stop_all();
    autosync.stop();
    drop(ctx);
    served?;
    rt.shutdown_timeout(Duration::from_secs(1));
    // In-flight blocking work was cancelled and has committed what it
    // finished; the watchdog bounds the wait.
    let deadline = std::time::Instant::now() + SHUTDOWN_BOUND;
    while Arc::strong_count(&store) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(store);
    tracing::info!("hoardd stopped");
    Ok(())
}

/// The Peer API's address, if it is to be served: plaintext only on
/// loopback unless explicitly allowed.
fn peer_listen(
    listen: Option<String>,
    tls: bool,
    allow_plaintext: bool,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(l) = listen else { return Ok(None) };
    let addr: SocketAddr = l.parse().with_context(|| {
        format!("peer listen address {l:?} is not IP:PORT (e.g. 127.0.0.1:7420)")
    })?;
    if !addr.ip().is_loopback() && !tls && !allow_plaintext {
        bail!("refusing to serve the Peer API without TLS on {addr}: tokens would cross the network in clear. Add `--tls` (or `tls = true` under [peer] in config.toml), or set `allow_plaintext = true` there to force it");
    }
    Ok(Some(addr))
}

async fn serve(
    ctx: Arc<crate::service::Ctx>,
    tokens: Arc<crate::tokens::Tokens>,
    paths: &Paths,
    peer: Option<(SocketAddr, Option<crate::tls::ServerCert>)>,
    gateway: Option<crate::gateway::Options>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = local_socket(paths)?;

    let shutdown = Arc::new(Notify::new());
    let peer_info = peer
        .as_ref()
        .map(|(a, c)| {
            (
                a.to_string(),
                c.as_ref()
                    .map(|c| c.fingerprint.clone())
                    .unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    let store = ctx.ds.store.clone();
    let api = LocalApi::new(ctx.clone(), tokens.clone(), peer_info, shutdown.clone())
        .with_config(&paths.config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http = match gateway {
        Some(opts) => Some(
            crate::gateway::serve(
                ctx.ds.clone(),
                tokens.clone(),
                paths.clone(),
                opts,
                stop_rx.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let peer_server = match peer {
        Some((addr, cert)) => Some(serve_peers(ctx, tokens, addr, cert, stop_rx.clone()).await?),
        None => None,
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop_store = store.clone();
    let stopping = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight work"),
            _ = int.recv() => tracing::info!("SIGINT: finishing in-flight work"),
            _ = shutdown.notified() => {}
        }
        start_watchdog();
        stop_store.begin_shutdown();
        let _ = stop_tx.send(true);
    };
    let svc = LocalServer::new(api)
        .max_decoding_message_size(hoard_proto::LOCAL_MESSAGE_LIMIT)
        .max_encoding_message_size(hoard_proto::LOCAL_MESSAGE_LIMIT);
    let server = tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            stopping,
        );
    let result = tokio::select! {
        r = server => r,
        _ = grace_over(stop_rx.clone()) => {
            tracing::warn!("local calls still running after {}s; dropping them", SHUTDOWN_GRACE.as_secs());
            Ok(())
        }
    };
    let _ = fs::remove_file(&paths.socket);
    if let Some(h) = http {
        // Its connections closed gracefully with the stop; a read still
        // streaming after the grace period is dropped.
        let abort = h.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), h)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    if let Some(p) = peer_server {
        // It had the same grace period, begun with the stop.
        let abort = p.abort_handle();
        match tokio::time::timeout(Duration::from_secs(1), p).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "the Peer API server failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "the Peer API server panicked"),
            Ok(Ok(Ok(()))) => {}
            Err(_) => {
                tracing::warn!(
                    "peer calls still running at the end of the grace period; dropping them"
                );
                abort.abort();
            }
        }
    }
    result.context("local API server failed")
}

/// The local API's Unix socket, created private (mode 0600, in a private
/// directory); a socket left by a dead daemon is removed first.
fn local_socket(paths: &Paths) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = paths.socket.parent() {
        private_dir(dir)?;
    }
    // We hold the store lock, so a socket left here belongs to a dead daemon.
    match fs::remove_file(&paths.socket) {
        Ok(()) => tracing::info!("removed a stale socket from a previous daemon"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot remove stale socket {}", paths.socket.display()))
        }
    }
    if paths.socket.as_os_str().len() >= 108 {
        bail!(
            "socket path {} is too long for a Unix socket (108 bytes); use a shorter HOARD_HOME",
            paths.socket.display()
        );
    }
    let listener = {
        // Created private: no window in which another user could connect.
        let old = unsafe { libc::umask(0o177) };
        let l = tokio::net::UnixListener::bind(&paths.socket);
        unsafe { libc::umask(old) };
        l.with_context(|| format!("cannot listen on {}", paths.socket.display()))?
    };
    fs::set_permissions(&paths.socket, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the Peer API on `addr` (over TLS with `cert`) until `stop` says so.
async fn serve_peers(
    ctx: Arc<crate::service::Ctx>,
    tokens: Arc<crate::tokens::Tokens>,
    addr: SocketAddr,
    cert: Option<crate::tls::ServerCert>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for peers on {addr}"))?;
    let mut builder = tonic::transport::Server::builder();
    match &cert {
        Some(c) => {
            tracing::info!(%addr, fingerprint = %c.fingerprint, "serving the Peer API over TLS");
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                    tonic::transport::Identity::from_pem(&c.cert_pem, &c.key_pem),
                ))
                .context("cannot set up TLS for the Peer API")?;
        }
        None => tracing::info!(%addr, "serving the Peer API (plaintext)"),
    }
    let svc = hoard_proto::v1::peer_server::PeerServer::new(crate::sync::PeerApi::new(
        ctx.ds.clone(),
        tokens,
    ))
    .send_compressed(tonic::codec::CompressionEncoding::Zstd)
    .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
    .max_decoding_message_size(hoard_proto::PEER_MESSAGE_LIMIT)
    .max_encoding_message_size(hoard_proto::PEER_MESSAGE_LIMIT);
    Ok(tokio::spawn(
        builder
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .max_frame_size(crate::sync::HTTP2_FRAME)
            .tcp_nodelay(true)
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(l),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ),
    ))
}

/// Packs still on the local disk of a daemon whose packs are now in S3 (a
/// migration, and whatever was written before the restart): each is
/// uploaded and verified (`pack::copy`), then its local copy deleted.
fn upload_local_packs(store: &Path, s3: &crate::backend::s3::S3Packs) -> anyhow::Result<usize> {
    use crate::backend::PackBackend;
    let dir = store.join("packs");
    if !dir.exists() {
        return Ok(0);
    }
    let local = crate::backend::LocalDir::open(&dir)?;
    let packs = local.list()?;
    if packs.is_empty() {
        return Ok(0);
    }
    tracing::info!(
        packs = packs.len(),
        "uploading the packs still on local disk to the bucket before serving"
    );
    let progress = store.join(crate::service::S3_PROGRESS);
    let c = crate::pack::copy::copy_all(&local, s3, &progress, |_| {}).with_context(|| {
        format!(
            "cannot move the local packs in {} to the bucket; fix the cause and start hoardd again (it resumes)",
            dir.display()
        )
    })?;
    for (id, _) in &packs {
        local.delete(id)?;
    }
    let _ = std::fs::remove_file(&progress);
    tracing::info!(
        copied = c.copied,
        already = c.already,
        bytes = c.bytes,
        "the local packs are in the bucket"
    );
    Ok(packs.len())
}

/// Logs to stderr; `HOARD_LOG` (or `RUST_LOG`), else the config, else info.
pub fn init_logging(config_filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("HOARD_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .or_else(|| config_filter.map(str::to_owned))
        .unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
