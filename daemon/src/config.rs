//! The daemon's configuration file (`config.toml`). Every key is optional.
//!
//! ```toml
//! # Parameters for a store created by this daemon (an existing store keeps
//! # the ones recorded in its store.toml).
//! [store]
//! chunk_avg = 32768      # bytes; min = avg/4, max = avg*4
//! zstd_level = 1
//! frame_target = 1048576 # new chunks compressed together; 0 = one by one
//! pack_target = 67108864
//! backend = "local"      # or "s3": packs in an S3-compatible bucket
//! s3_endpoints = ["http://127.0.0.1:3900", "http://127.0.0.1:3910"] # tried in order
//! s3_bucket = "hoard"
//! s3_region = "garage"
//! s3_prefix = "lab1/"    # optional
//! s3_cache_bytes = 268435456 # read cache of recently read frames (default 256 MiB)
//! # credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in hoardd's
//! # environment, or s3_key_file = "/etc/hoard/s3.env" holding those two as
//! # KEY=value lines (the file wins)
//!
//! [daemon]
//! log = "info"           # tracing filter, e.g. "hoard_daemon=debug"
//!
//! [peer]
//! listen = "0.0.0.0:7420"   # serve the Peer API (or `hoardd run --listen`)
//! tls = true                 # (or `hoardd run --tls`); self-signed unless:
//! tls_cert = "/path/cert.pem"
//! tls_key = "/path/key.pem"
//! allow_plaintext = false    # plaintext beyond loopback only if true
//!
//! [http]
//! listen = "127.0.0.1:7421"  # the read-only HTTP gateway (or `hoardd run --http`)
//! tls = false                # HTTPS with the Peer API's certificate (or tls_cert/tls_key)
//! allow_plaintext = false    # plaintext beyond loopback only if true
//! require_token = false      # ask loopback callers for a read token too
//! remote = "origin"          # where content this store lacks is fetched from on demand
//!
//! [watch]
//! debounce_ms = 1000     # quiet time before a change is ingested
//! rescan_secs = 3600     # full rescan of watched datasets this often
//! poll_secs = 60         # scan interval when a directory cannot be watched
//! ```
//!
//! Floor 5: owns its types (including the watcher's [`WatchConfig`]); may
//! import `store` and `chunker` for their parameters, never the rooms it
//! configures.

use crate::chunker::ChunkParams;
use crate::error::{Error, Result};
use crate::store::StoreParams;
use std::path::Path;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub daemon: DaemonSection,
    #[serde(default)]
    pub peer: PeerSection,
    #[serde(default)]
    pub watch: WatchSection,
    #[serde(default)]
    pub http: HttpSection,
}

/// The read-only HTTP gateway (`crate::gateway`).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// TCP address to serve it on, e.g. "127.0.0.1:7421"; off when absent.
    pub listen: Option<String>,
    /// Serve HTTPS, with `[peer]`'s certificate unless these two are given.
    pub tls: Option<bool>,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Serve plaintext on an address other than loopback.
    pub allow_plaintext: Option<bool>,
    /// Ask callers on loopback for a read token as well.
    pub require_token: Option<bool>,
    /// The remote (in remotes.toml) content is fetched from on demand when
    /// a dataset names none; default: `origin`, else the only one.
    pub remote: Option<String>,
}

/// Watched datasets.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSection {
    pub debounce_ms: Option<u64>,
    pub rescan_secs: Option<u64>,
    pub poll_secs: Option<u64>,
}

impl WatchSection {
    pub fn config(&self) -> WatchConfig {
        let d = WatchConfig::default();
        let ms = std::time::Duration::from_millis;
        let secs = std::time::Duration::from_secs;
        WatchConfig {
            debounce: self.debounce_ms.map(ms).unwrap_or(d.debounce),
            rescan: self.rescan_secs.map(secs).unwrap_or(d.rescan).max(secs(1)),
            poll: self.poll_secs.map(secs).unwrap_or(d.poll).max(secs(1)),
        }
    }
}

/// Watcher settings (`[watch]` in the daemon's config).
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// Quiet time before a change is ingested.
    pub debounce: std::time::Duration,
    /// Full rescan this often (catches anything notify cannot see, such as
    /// changes made over a network filesystem).
    pub rescan: std::time::Duration,
    /// Scan interval when watching is impossible (watch limit reached).
    pub poll: std::time::Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            debounce: std::time::Duration::from_secs(1),
            rescan: std::time::Duration::from_secs(3600),
            poll: std::time::Duration::from_secs(60),
        }
    }
}

/// The Peer API (other daemons syncing with this one).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// TCP address to serve it on, e.g. "127.0.0.1:7420"; off when absent.
    pub listen: Option<String>,
    /// Serve it over TLS (on by itself when a certificate is given).
    pub tls: Option<bool>,
    /// The certificate and key (PEM) to serve; neither: a self-signed
    /// certificate kept in the store (`peer-tls/`).
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Serve it without TLS on an address other than loopback.
    pub allow_plaintext: Option<bool>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub chunk_avg: Option<u32>,
    pub zstd_level: Option<i32>,
    pub frame_target: Option<u32>,
    pub pack_target: Option<u64>,
    pub backend: Option<String>,
    pub s3_endpoints: Option<Vec<String>>,
    pub s3_bucket: Option<String>,
    pub s3_region: Option<String>,
    pub s3_prefix: Option<String>,
    pub s3_cache_bytes: Option<u64>,
    pub s3_key_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    pub log: Option<String>,
}

impl Config {
    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(s) => toml::from_str(&s)
                .map_err(|e| Error::Invalid(format!("{} is not valid: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(Error::io("cannot read configuration", path, e)),
        }
    }

    /// Parameters for a new store.
    /// Where packs live: `None` for the store directory, or the bucket.
    pub fn s3(&self, store_dir: &Path) -> Result<Option<crate::backend::s3::S3Config>> {
        match self.store.backend.as_deref() {
            None | Some("local") => Ok(None),
            Some("s3") => self.s3_settings(store_dir).map(Some),
            Some(other) => Err(Error::Invalid(format!(
                "[store] backend = {other:?} is not known; use \"local\" or \"s3\""
            ))),
        }
    }

    /// The bucket the `s3_*` keys name, whichever backend is in use (a
    /// migration reads them before switching).
    pub fn s3_settings(&self, store_dir: &Path) -> Result<crate::backend::s3::S3Config> {
        let s = &self.store;
        let need = |v: &Option<String>, k: &str| {
            v.clone().ok_or_else(|| {
                Error::Invalid(format!(
                    "packs in S3 need {k} in the [store] section of config.toml"
                ))
            })
        };
        let (access_key, secret_key) = credentials(s.s3_key_file.as_deref())?;
        Ok(crate::backend::s3::S3Config {
            endpoints: s.s3_endpoints.clone().unwrap_or_default(),
            bucket: need(&s.s3_bucket, "s3_bucket")?,
            region: s.s3_region.clone().unwrap_or_else(|| "us-east-1".into()),
            prefix: s.s3_prefix.clone().unwrap_or_default(),
            access_key,
            secret_key,
            spool: store_dir.join("packs").join("spool"),
            cache_bytes: s.s3_cache_bytes.unwrap_or(256 << 20),
        })
    }

    pub fn new_store_params(&self) -> StoreParams {
        let d = StoreParams::default();
        StoreParams {
            chunk: self
                .store
                .chunk_avg
                .map(ChunkParams::with_avg)
                .unwrap_or(d.chunk),
            zstd_level: self.store.zstd_level.unwrap_or(d.zstd_level),
            frame_target: self.store.frame_target.unwrap_or(d.frame_target),
            pack_target: self.store.pack_target.unwrap_or(d.pack_target),
            ..d
        }
    }
}

/// Sets `backend = "<to>"` in the [store] section of the config file at
/// `path`, keeping everything else as written (comments too); the file is
/// replaced atomically and must still parse.
pub fn set_store_backend(path: &Path, to: &str) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("cannot read configuration", path, e)),
    };
    let line = format!("backend = {to:?}");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let is_header = |l: &str| l.trim_start().starts_with('[');
    match lines.iter().position(|l| l.trim() == "[store]") {
        Some(h) => {
            let end = lines[h + 1..]
                .iter()
                .position(|l| is_header(l))
                .map_or(lines.len(), |k| h + 1 + k);
            let key = |l: &str| l.split('=').next().map(str::trim) == Some("backend");
            match lines[h + 1..end].iter().position(|l| key(l)) {
                Some(k) => lines[h + 1 + k] = line,
                None => lines.insert(h + 1, line),
            }
        }
        None => {
            lines.push(String::new());
            lines.push("[store]".into());
            lines.push(line);
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    toml::from_str::<Config>(&out).map_err(|e| {
        Error::Invalid(format!(
            "cannot switch {} to backend = {to:?}: the result would not parse ({e}); set it by hand",
            path.display()
        ))
    })?;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o777);
    crate::durable::replace(path, out.as_bytes(), mode)
}

/// The S3 key id and secret: from `key_file` (`KEY=value` lines) when set,
/// else from hoardd's environment.
fn credentials(key_file: Option<&Path>) -> Result<(String, String)> {
    const ID: &str = "AWS_ACCESS_KEY_ID";
    const SECRET: &str = "AWS_SECRET_ACCESS_KEY";
    let Some(path) = key_file else {
        let env = |k: &str| {
            std::env::var(k).map_err(|_| {
                Error::Invalid(format!(
                    "packs in S3 need {k} in hoardd's environment (or s3_key_file in [store])"
                ))
            })
        };
        return Ok((env(ID)?, env(SECRET)?));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io("cannot read the S3 key file (s3_key_file)", path, e))?;
    let get = |k: &str| {
        text.lines()
            .filter_map(|l| l.trim().split_once('='))
            .find(|(key, _)| key.trim() == k)
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{} has no {k}=… line (s3_key_file holds {ID}=… and {SECRET}=…)",
                    path.display()
                ))
            })
    };
    Ok((get(ID)?, get(SECRET)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn switching_the_backend_keeps_the_rest_of_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.toml");
        let text = "# my hub\n[store]\nzstd_level = 3 # keep\nbackend = \"local\"\ns3_bucket = \"b\"\n\n[peer]\nlisten = \"127.0.0.1:1\"\n";
        std::fs::write(&p, text).unwrap();
        super::set_store_backend(&p, "s3").unwrap();
        let got = std::fs::read_to_string(&p).unwrap();
        assert_eq!(got, text.replace("backend = \"local\"", "backend = \"s3\""));
        std::fs::write(
            &p,
            "[peer]\nlisten = \"127.0.0.1:1\"\n[store]\nzstd_level = 3\n",
        )
        .unwrap();
        super::set_store_backend(&p, "s3").unwrap();
        let c = super::Config::load(&p).unwrap();
        assert_eq!(c.store.backend.as_deref(), Some("s3"));
        assert_eq!(c.store.zstd_level, Some(3));
    }

    use super::*;

    #[test]
    fn unknown_keys_are_refused_with_the_file_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.toml");
        std::fs::write(&p, "[store]\nchunk_avgg = 3\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("config.toml"), "{e}");
        std::fs::write(&p, "[store]\nchunk_avg = 65536\n").unwrap();
        assert_eq!(
            Config::load(&p).unwrap().new_store_params().chunk.avg,
            65536
        );
    }
}
