//! `hoard stats`, `hoard verify`, `hoard reindex`.

use crate::connect::Client;
use crate::ui;
use anyhow::bail;
use hoard_proto::v1::{reindex_event, verify_event, ReindexRequest, StatsRequest, VerifyRequest};
use serde_json::json;

pub async fn stats(mut client: Client, as_json: bool) -> anyhow::Result<()> {
    let s = client
        .stats(StatsRequest {})
        .await
        .map_err(ui::status_error)?
        .into_inner();
    if as_json {
        println!(
            "{}",
            json!({"logical_bytes": s.logical_bytes, "unique_bytes": s.unique_bytes, "stored_bytes": s.stored_bytes,
                   "chunks": s.chunks, "files": s.files, "packs": s.packs})
        );
        return Ok(());
    }
    println!("files          {}", s.files);
    println!(
        "logical bytes  {} (everything added, duplicates counted)",
        ui::bytes(s.logical_bytes)
    );
    println!(
        "unique bytes   {} in {} chunks (dedup saved {})",
        ui::bytes(s.unique_bytes),
        s.chunks,
        ui::percent(
            s.logical_bytes.saturating_sub(s.unique_bytes),
            s.logical_bytes
        )
    );
    println!(
        "stored bytes   {} in {} packs (compression saved {})",
        ui::bytes(s.stored_bytes),
        s.packs,
        ui::percent(
            s.unique_bytes.saturating_sub(s.stored_bytes),
            s.unique_bytes
        )
    );
    Ok(())
}

pub async fn verify(mut client: Client, read_data: bool, as_json: bool) -> anyhow::Result<()> {
    let mut stream = client
        .verify(VerifyRequest { read_data })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    // Only --read-data has a size to show, once the daemon has planned it.
    let bar = ui::pending_bar("verifying", as_json || !read_data);
    let mut summary = None;
    let mut problems = 0u64;
    while let Some(ev) = stream.message().await.map_err(ui::status_error)? {
        match ev.event {
            Some(verify_event::Event::PlanBytes(b)) => ui::set_total(&bar, b),
            Some(verify_event::Event::Progress(p)) => bar.set_position(p.bytes_done),
            Some(verify_event::Event::Problem(p)) => {
                problems += 1;
                if as_json {
                    println!(
                        "{}",
                        json!({"type": "problem", "kind": p.kind, "object": p.object, "message": p.message})
                    );
                } else {
                    bar.suspend(|| println!("{} {}: {}", p.kind, p.object, p.message));
                }
            }
            Some(verify_event::Event::Summary(s)) => summary = Some(s),
            None => {}
        }
    }
    bar.finish_and_clear();
    let Some(s) = summary else {
        bail!("the daemon stopped before verification finished; run it again");
    };
    if as_json {
        println!(
            "{}",
            json!({"type": "summary", "packs": s.packs, "chunks": s.chunks, "files": s.files, "bytes_read": s.bytes_read, "problems": s.problems})
        );
    } else {
        println!(
            "checked {} packs, {} chunks, {} files{}: {} problems",
            s.packs,
            s.chunks,
            s.files,
            if read_data {
                format!(", read {}", ui::bytes(s.bytes_read))
            } else {
                String::new()
            },
            s.problems
        );
    }
    if s.problems > 0 || problems > 0 {
        bail!("the store has problems (listed above); `hoard reindex` rebuilds a damaged index, damaged packs need the data re-added");
    }
    Ok(())
}

pub async fn reindex(mut client: Client, as_json: bool) -> anyhow::Result<()> {
    let mut stream = client
        .reindex(ReindexRequest {})
        .await
        .map_err(ui::status_error)?
        .into_inner();
    // The daemon sends no total: bytes read so far.
    let bar = ui::bytes_spinner("reindexing", as_json);
    let mut summary = None;
    while let Some(ev) = stream.message().await.map_err(ui::status_error)? {
        match ev.event {
            Some(reindex_event::Event::Progress(p)) => bar.set_position(p.bytes_done),
            Some(reindex_event::Event::Problem(p)) => {
                bar.suspend(|| eprintln!("hoard: {} {}: {}", p.kind, p.object, p.message))
            }
            Some(reindex_event::Event::Summary(s)) => summary = Some(s),
            None => {}
        }
    }
    bar.finish_and_clear();
    let Some(s) = summary else {
        bail!("the daemon stopped before the reindex finished; run it again");
    };
    if as_json {
        println!(
            "{}",
            json!({"packs": s.packs, "chunks": s.chunks, "files": s.files, "bad_packs": s.bad_packs})
        );
    } else {
        println!(
            "reindexed {} packs: {} chunks, {} files",
            s.packs, s.chunks, s.files
        );
    }
    if s.bad_packs > 0 {
        bail!(
            "{} packs could not be read and were skipped (listed above)",
            s.bad_packs
        );
    }
    Ok(())
}

/// `hoard backend migrate --to s3`.
pub async fn migrate_backend(mut client: Client, to: &str, as_json: bool) -> anyhow::Result<()> {
    let mut stream = client
        .migrate_backend(hoard_proto::v1::MigrateBackendRequest { to: to.into() })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let bar = ui::bytes_spinner("copying packs", as_json);
    let mut last = None;
    while let Some(ev) = stream.message().await.map_err(ui::status_error)? {
        bar.set_position(ev.bytes);
        bar.set_message(format!("{} of {} packs", ev.copied + ev.already, ev.packs));
        last = Some(ev);
    }
    bar.finish_and_clear();
    let Some(s) = last.filter(|e| e.done) else {
        bail!("the daemon stopped before the migration finished; run it again (packs already copied are kept)");
    };
    if as_json {
        println!(
            "{}",
            json!({"packs": s.packs, "copied": s.copied, "already": s.already, "bytes": s.bytes,
                "refs": s.refs, "location": s.location, "config": s.config})
        );
    } else {
        println!(
            "copied {} packs ({}) to {}, each read back and verified; {} were there from an earlier run; {} refs mirrored",
            s.copied,
            ui::bytes(s.bytes),
            s.location,
            s.already,
            s.refs
        );
        println!(
            "{} now says backend = \"{to}\": restart hoardd to serve from there (it uploads anything written in between first, then deletes the local packs)",
            s.config
        );
    }
    Ok(())
}
