//! Remotes (other daemons' Peer APIs) and moving content to and from them.
//!
//! Remotes live in `remotes.toml` (mode 0600: it holds tokens) in the store
//! directory:
//!
//! ```toml
//! [remote.origin]
//! url = "http://127.0.0.1:7420"
//! token = "hoard_…"
//! ```
//!
//! The transfer itself is done by the daemon (`Sync`): it talks to the peer,
//! checks everything it receives and stores it.

use crate::connect::Client;
use crate::ui;
use anyhow::{bail, Context};
use hoard_proto::paths::Paths;
use hoard_proto::v1::{sync_event::Event, SyncRequest, SyncSummary};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Remote {
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// https: the hub certificate's fingerprint (`blake3:<hex>`) to pin.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    /// https: a CA certificate file (PEM) the hub's certificate chains to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca: String,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Remotes {
    #[serde(default)]
    pub remote: BTreeMap<String, Remote>,
}

fn file(paths: &Paths) -> PathBuf {
    paths.store.join("remotes.toml")
}

impl Remotes {
    pub fn load(paths: &Paths) -> anyhow::Result<Remotes> {
        let p = file(paths);
        match std::fs::read_to_string(&p) {
            Ok(t) => toml::from_str(&t).with_context(|| format!("{} is malformed", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Remotes::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    pub fn save(&self, paths: &Paths) -> anyhow::Result<()> {
        std::fs::create_dir_all(&paths.store)?;
        let p = file(paths);
        let tmp = p.with_extension("toml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(toml::to_string(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p).with_context(|| format!("cannot update {}", p.display()))
    }

    /// The remote called `name`, or the default one: `origin`, else the only
    /// one there is.
    pub fn pick(&self, name: Option<&str>) -> Option<(String, Remote)> {
        match name {
            Some(n) => self.remote.get(n).map(|r| (n.to_string(), r.clone())),
            None => self
                .remote
                .get("origin")
                .map(|r| ("origin".to_string(), r.clone()))
                .or_else(|| {
                    (self.remote.len() == 1)
                        .then(|| self.remote.iter().next())
                        .flatten()
                        .map(|(n, r)| (n.clone(), r.clone()))
                }),
        }
    }
}

/// Checks a remote URL: `https://HOST:PORT`, or `http://HOST:PORT` for a
/// hub serving plaintext (on loopback).
pub fn check_url(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .with_context(|| {
            format!("remote URL {url:?} must look like https://HOST:PORT (the hub's `listen` address; http:// for a plaintext hub on loopback)")
        })?;
    if rest.is_empty() || !rest.contains(':') {
        bail!("remote URL {url:?} needs a port, e.g. http://127.0.0.1:7420");
    }
    Ok(())
}

/// Has the daemon pull `oids` from (or push them to) `remote`.
pub async fn sync(
    client: &mut Client,
    remote: &Remote,
    push: bool,
    oids: Vec<Vec<u8>>,
    quiet: bool,
) -> anyhow::Result<SyncSummary> {
    let mut s = client
        .sync(SyncRequest {
            url: remote.url.clone(),
            token: remote.token.clone(),
            push,
            oids,
            fingerprint: remote.fingerprint.clone(),
            ca_pem: if remote.ca.is_empty() {
                Vec::new()
            } else {
                std::fs::read(&remote.ca)
                    .with_context(|| format!("cannot read the CA certificate {}", remote.ca))?
            },
        })
        .await
        .map_err(ui::status_error)?
        .into_inner();
    let bar = ui::bytes_bar(0, if push { "pushing" } else { "fetching" }, quiet);
    let mut summary = None;
    while let Some(ev) = s.message().await.map_err(ui::status_error)? {
        match ev.event {
            Some(Event::Progress(p)) => bar.set_position(p.bytes_done),
            Some(Event::Summary(sum)) => summary = Some(sum),
            None => {}
        }
    }
    bar.finish_and_clear();
    summary.context("the daemon ended the transfer without a summary")
}
