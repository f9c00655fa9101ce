//! Remotes (other daemons' Peer APIs) — `remotes.toml` in the store
//! directory, mode 0600 (it holds tokens). Defined here because both sides
//! read it: the client names remotes on the command line, the daemon
//! pushes datasets to the remote they name.
//!
//! ```toml
//! [remote.origin]
//! url = "https://hub:7420"
//! token = "hoard_…"
//! fingerprint = "blake3:…"   # pin the hub's certificate, or:
//! ca = "/path/ca.pem"
//! ```

use crate::paths::Paths;
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

pub fn file(paths: &Paths) -> PathBuf {
    paths.store.join("remotes.toml")
}

impl Remotes {
    pub fn load(paths: &Paths) -> Result<Remotes, String> {
        let p = file(paths);
        match std::fs::read_to_string(&p) {
            Ok(t) => toml::from_str(&t).map_err(|e| format!("{} is malformed: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Remotes::default()),
            Err(e) => Err(format!("cannot read {}: {e}", p.display())),
        }
    }

    pub fn save(&self, paths: &Paths) -> Result<(), String> {
        let p = file(paths);
        let io = |e: std::io::Error| format!("cannot write {}: {e}", p.display());
        std::fs::create_dir_all(&paths.store).map_err(io)?;
        let tmp = p.with_extension("toml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let text = toml::to_string(self).map_err(|e| e.to_string())?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &p).map_err(io)?;
        // The rename itself is durable only once the directory is synced.
        std::fs::File::open(&paths.store)
            .and_then(|d| d.sync_all())
            .map_err(io)
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
