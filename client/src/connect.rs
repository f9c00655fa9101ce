//! Reaching the user's daemon over its Unix socket, starting it on demand.

use anyhow::{bail, Context};
use hoard_proto::paths::Paths;
use hoard_proto::v1::local_client::LocalClient;
use hoard_proto::v1::StatusRequest;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

pub type Client = LocalClient<Channel>;

/// How long to wait for a freshly started daemon to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Connects to a running daemon; `Ok(None)` when none is listening.
pub async fn try_connect(paths: &Paths) -> anyhow::Result<Option<Client>> {
    let sock = paths.socket.clone();
    if !sock.exists() {
        return Ok(None);
    }
    let endpoint = Endpoint::try_from("http://hoardd.local")?;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(sock).await?))
            }
        }))
        .await;
    // A socket nobody listens on is a crashed daemon's leftover; one whose
    // daemon is still dying accepts and then drops the connection. Only a
    // daemon that answers counts as running.
    let Ok(channel) = channel else {
        return Ok(None);
    };
    let mut client = LocalClient::new(channel)
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    let answered =
        tokio::time::timeout(Duration::from_secs(10), client.status(StatusRequest {})).await;
    Ok(matches!(answered, Ok(Ok(_))).then_some(client))
}

/// Connects, starting the daemon first if it is not running.
pub async fn connect(paths: &Paths) -> anyhow::Result<Client> {
    if let Some(c) = try_connect(paths).await? {
        return Ok(c);
    }
    start(paths).await
}

/// The `hoardd` binary: `HOARD_DAEMON`, else next to this `hoard`, else `PATH`.
pub fn daemon_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("HOARD_DAEMON") {
        return p.into();
    }
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("hoardd")))
        .filter(|p| p.exists())
    {
        return sibling;
    }
    "hoardd".into()
}

/// Starts `hoardd` in the background (its own session, log in the store
/// directory) and waits until it answers.
pub async fn start(paths: &Paths) -> anyhow::Result<Client> {
    std::fs::create_dir_all(&paths.store)
        .with_context(|| format!("cannot create store directory {}", paths.store.display()))?;
    let log_path = paths.log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open daemon log {}", log_path.display()))?;
    let bin = daemon_binary();
    let mut cmd = Command::new(&bin);
    // One-directory layout: say which store; XDG layout: the daemon resolves
    // the same paths from the same environment.
    if *paths == Paths::under(&paths.store) {
        cmd.arg("--store").arg(&paths.store);
    }
    cmd.arg("run")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    {
        use std::os::unix::process::CommandExt;
        // Detach from the client's session so the daemon outlives it.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "cannot start the daemon {}: install hoardd next to hoard or on PATH, or set HOARD_DAEMON",
            bin.display()
        )
    })?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(c) = try_connect(paths).await? {
            return Ok(c);
        }
        if let Some(status) = child.try_wait()? {
            // Lost a start race to another client? Then its daemon answers soon.
            if let Some(c) = wait_for_socket(paths, Duration::from_secs(5)).await? {
                return Ok(c);
            }
            bail!(
                "the daemon exited ({status}) before it was ready:\n{}\n(full log: {})",
                log_tail(&log_path),
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            // Transient (exit 6): it may just be slow to open a big store.
            return Err(crate::ui::DaemonError::lost_connection(format!(
                "the daemon did not answer within {}s; see {}",
                START_TIMEOUT.as_secs(),
                log_path.display()
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_for_socket(paths: &Paths, d: Duration) -> anyhow::Result<Option<Client>> {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if let Some(c) = try_connect(paths).await? {
            return Ok(Some(c));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(None)
}

fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}
