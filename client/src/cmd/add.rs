//! `hoard add PATH...`

use crate::cmd::oid_string;
use crate::connect::Client;
use crate::ui;
use anyhow::{bail, Context};
use hoard_proto::v1::{add_event::Event, AddPath, AddRequest, AddSummary};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

pub async fn run(mut client: Client, paths: Vec<PathBuf>, json: bool) -> anyhow::Result<()> {
    let mut req = AddRequest::default();
    for p in paths {
        let abs =
            std::path::absolute(&p).with_context(|| format!("cannot resolve {}", p.display()))?;
        req.paths.push(AddPath {
            path: abs.to_str().map(str::to_owned).with_context(|| {
                format!("{} is not valid UTF-8; rename it to add it", p.display())
            })?,
            display: p.display().to_string(),
        });
    }
    let mut stream = client
        .add(req)
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    // A spinner until the daemon has planned the add (walked the paths).
    let bar = ui::pending_bar("adding", json);
    let mut summary: Option<AddSummary> = None;
    let mut errors = 0u64;
    while let Some(ev) = stream.message().await.map_err(ui::status_error)? {
        match ev.event {
            Some(Event::Plan(p)) => ui::set_total(&bar, p.bytes),
            Some(Event::Progress(p)) => bar.set_position(p.bytes_done),
            Some(Event::Files(f)) => {
                for r in f.files {
                    if json {
                        writeln!(
                            out,
                            "{}",
                            json!({"type": "file", "oid": oid_string(&r.oid), "path": r.path, "size": r.size, "unchanged": r.unchanged})
                        )?;
                    } else {
                        writeln!(out, "{}  {}", oid_string(&r.oid), r.path)?;
                    }
                }
                bar.suspend(|| out.flush())?;
            }
            Some(Event::Error(e)) => {
                errors += 1;
                if json {
                    writeln!(
                        out,
                        "{}",
                        json!({"type": "error", "path": e.path, "error": e.message})
                    )?;
                } else {
                    out.flush()?;
                    bar.suspend(|| eprintln!("hoard: {}: {}", e.path, e.message));
                }
            }
            Some(Event::Summary(s)) => summary = Some(s),
            None => {}
        }
    }
    bar.finish_and_clear();
    let Some(s) = summary else {
        bail!("the daemon stopped before finishing the add; run `hoard add` again (files already listed are stored)");
    };
    let dedup_saved = s.logical_bytes.saturating_sub(s.new_chunk_bytes);
    let compress_saved = s.new_chunk_bytes.saturating_sub(s.new_stored_bytes);
    if json {
        writeln!(
            out,
            "{}",
            json!({"type": "summary", "files": s.files, "errors": s.errors, "logical_bytes": s.logical_bytes,
                   "new_chunk_bytes": s.new_chunk_bytes, "new_stored_bytes": s.new_stored_bytes,
                   "new_chunks": s.new_chunks, "reused_chunks": s.reused_chunks,
                   "dedup_saved_bytes": dedup_saved, "compression_saved_bytes": compress_saved})
        )?;
    } else {
        writeln!(
            out,
            "added {} files, {} ({} new chunks, {} already stored)",
            s.files,
            ui::bytes(s.logical_bytes),
            s.new_chunks,
            s.reused_chunks
        )?;
        writeln!(
            out,
            "stored {} new: dedup saved {} ({}), compression saved {} ({} of new data)",
            ui::bytes(s.new_stored_bytes),
            ui::bytes(dedup_saved),
            ui::percent(dedup_saved, s.logical_bytes),
            ui::bytes(compress_saved),
            ui::percent(compress_saved, s.new_chunk_bytes)
        )?;
    }
    out.flush()?;
    if s.disk_full {
        return Err(ui::DaemonError::disk_full(format!(
            "{} of the paths could not be added: the disk is full (see above); free some space and re-run",
            s.errors.max(errors)
        ))
        .into());
    }
    if s.errors > 0 || errors > 0 {
        bail!(
            "{} of the paths could not be added (see above)",
            s.errors.max(errors)
        );
    }
    Ok(())
}
