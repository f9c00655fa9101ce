//! `hoard cat OID` and `hoard restore OID DEST`.

use crate::cmd::{oid_string, parse_oid};
use crate::connect::Client;
use crate::ui;
use anyhow::{bail, Context};
use hoard_proto::v1::ReadRequest;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

pub async fn cat(
    mut client: Client,
    oid: &str,
    offset: u64,
    length: Option<u64>,
) -> anyhow::Result<()> {
    let id = parse_oid(oid)?;
    let mut stream = client
        .read(ReadRequest {
            oid: id,
            offset,
            length,
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while let Some(m) = stream.message().await.map_err(ui::status_error)? {
        if let Err(e) = out.write_all(&m.data) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    out.flush().or_else(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    Ok(())
}

/// Writes the content to a temporary file beside `dest`, checks it hashes to
/// the oid, fsyncs, and renames it into place: `dest` is either untouched or
/// complete.
pub async fn restore(
    mut client: Client,
    oid: &str,
    dest: &Path,
    quiet: bool,
) -> anyhow::Result<()> {
    let id = parse_oid(oid)?;
    if dest.is_dir() {
        bail!(
            "{} is a directory; give the path of the file to write",
            dest.display()
        );
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest.file_name().context("destination has no file name")?;
    let tmp = dir.join(format!(
        ".{}.hoard-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut stream = client
        .read(ReadRequest {
            oid: id.clone(),
            offset: 0,
            length: None,
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let guard = TempGuard(tmp.clone());
    let mut f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut hasher = blake3::Hasher::new();
    let bar = ui::pending_bar("restoring", quiet);
    while let Some(m) = stream.message().await.map_err(ui::status_error)? {
        if let Some(size) = m.file_size {
            ui::set_total(&bar, size);
        }
        hasher.update(&m.data);
        f.write_all(&m.data)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        bar.inc(m.data.len() as u64);
    }
    bar.finish_and_clear();
    if hasher.finalize().as_bytes()[..] != id[..] {
        bail!("the content received for {} does not hash to it; nothing was written — run `hoard verify --read-data`", oid_string(&id));
    }
    f.sync_all()
        .with_context(|| format!("cannot fsync {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, dest)
        .with_context(|| format!("cannot move the restored file to {}", dest.display()))?;
    std::mem::forget(guard);
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

struct TempGuard(PathBuf);

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
