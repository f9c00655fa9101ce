//! `hoard daemon start|stop|status|run`.

use crate::connect;
use crate::ui;
use anyhow::{bail, Context};
use hoard_proto::paths::Paths;
use hoard_proto::v1::{ShutdownRequest, StatusRequest};
use std::time::{Duration, Instant};

pub async fn start(paths: &Paths) -> anyhow::Result<()> {
    if let Some(mut c) = connect::try_connect(paths).await? {
        let s = c
            .status(StatusRequest {})
            .await
            .map_err(ui::status_error)?
            .into_inner();
        println!(
            "hoardd is already running (pid {}, store {})",
            s.pid, s.store
        );
        return Ok(());
    }
    let mut c = connect::start(paths).await?;
    let s = c
        .status(StatusRequest {})
        .await
        .map_err(ui::status_error)?
        .into_inner();
    println!("hoardd started (pid {}, store {})", s.pid, s.store);
    Ok(())
}

pub async fn stop(paths: &Paths) -> anyhow::Result<()> {
    let Some(mut c) = connect::try_connect(paths).await? else {
        println!("hoardd is not running");
        return Ok(());
    };
    let pid = c
        .status(StatusRequest {})
        .await
        .map_err(ui::status_error)?
        .into_inner()
        .pid;
    c.shutdown(ShutdownRequest {})
        .await
        .map_err(ui::status_error)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while process_alive(pid) {
        if Instant::now() > deadline {
            bail!("hoardd (pid {pid}) is still finishing its work after 60s; check `hoard daemon status` later");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("hoardd stopped");
    Ok(())
}

fn process_alive(pid: u32) -> bool {
    // Signal 0 checks existence; a zombie (not yet reaped) counts as gone.
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
}

pub async fn status(paths: &Paths, json: bool) -> anyhow::Result<()> {
    let Some(mut c) = connect::try_connect(paths).await? else {
        if json {
            println!(
                "{}",
                serde_json::json!({"running": false, "socket": paths.socket})
            );
        } else {
            println!("hoardd is not running (socket {})", paths.socket.display());
        }
        std::process::exit(3);
    };
    let s = c
        .status(StatusRequest {})
        .await
        .map_err(ui::status_error)?
        .into_inner();
    if json {
        println!(
            "{}",
            serde_json::json!({"running": true, "pid": s.pid, "version": s.version, "store": s.store,
                "uptime_secs": s.uptime_secs, "chunk_min": s.chunk_min, "chunk_avg": s.chunk_avg,
                "chunk_max": s.chunk_max, "zstd_level": s.zstd_level, "frame_target": s.frame_target,
                "peer_listen": s.peer_listen, "peer_fingerprint": s.peer_fingerprint,
                "peer_refused": s.peer_refused, "clean_known": s.clean_known,
                "backend": s.backend.as_ref().map(|b| serde_json::json!({"kind": b.kind,
                    "location": b.location, "endpoint": b.endpoint, "requests": b.requests,
                    "lists": b.lists, "bytes_read": b.bytes_read, "bytes_written": b.bytes_written,
                    "cache_hits": b.cache_hits, "cache_misses": b.cache_misses,
                    "cache_bytes": b.cache_bytes, "failovers": b.failovers}))})
        );
    } else {
        println!(
            "hoardd {} running (pid {}, up {}s)",
            s.version, s.pid, s.uptime_secs
        );
        println!("store   {}", s.store);
        if let Some(b) = s.backend.as_ref().filter(|b| b.kind == "s3") {
            println!("packs   {} via {}", b.location, b.endpoint);
            println!(
                "bucket  {} requests, {} read, {} written; cache {} hits / {} misses ({} held); {} failovers",
                b.requests,
                ui::bytes(b.bytes_read),
                ui::bytes(b.bytes_written),
                b.cache_hits,
                b.cache_misses,
                ui::bytes(b.cache_bytes),
                b.failovers
            );
        }
        println!("socket  {}", paths.socket.display());
        println!(
            "chunks  FastCDC min {} / avg {} / max {} bytes; zstd level {}, frames of {}",
            s.chunk_min,
            s.chunk_avg,
            s.chunk_max,
            s.zstd_level,
            ui::bytes(s.frame_target as u64)
        );
        if !s.peer_listen.is_empty() {
            if s.peer_fingerprint.is_empty() {
                println!("peers   http://{} (plaintext)", s.peer_listen);
            } else {
                println!(
                    "peers   https://{} (TLS certificate {})",
                    s.peer_listen, s.peer_fingerprint
                );
            }
        }
        if s.peer_refused > 0 {
            println!(
                "refused {} transfers so far: a peer sent wrong data (see {})",
                s.peer_refused,
                paths.log().display()
            );
        }
    }
    Ok(())
}

/// Replaces this process with the daemon in the foreground (for systemd).
pub fn run(paths: &Paths) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let bin = connect::daemon_binary();
    let mut cmd = std::process::Command::new(&bin);
    if *paths == Paths::under(&paths.store) {
        cmd.arg("--store").arg(&paths.store);
    }
    let err = cmd.arg("run").exec();
    Err(err).with_context(|| format!("cannot run {}", bin.display()))
}
