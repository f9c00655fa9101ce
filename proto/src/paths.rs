//! Where things live. `HOARD_HOME` (or `--store`) puts everything — store,
//! config, socket, lock, log — in one directory, so tests and several daemons
//! can run side by side. Otherwise the XDG base directories are used.

use std::path::{Path, PathBuf};

/// Resolved locations for one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The store directory: packs, index, store parameters.
    pub store: PathBuf,
    /// The daemon's configuration file (may be absent).
    pub config: PathBuf,
    /// The local API socket.
    pub socket: PathBuf,
}

impl Paths {
    /// Everything under one directory (the `HOARD_HOME` / `--store` layout).
    pub fn under(home: &Path) -> Self {
        Paths {
            store: home.to_path_buf(),
            config: home.join("config.toml"),
            socket: home.join("hoardd.sock"),
        }
    }

    /// Resolve from an explicit store, else `HOARD_HOME`, else XDG dirs.
    pub fn resolve(store: Option<&Path>) -> Result<Self, String> {
        if let Some(s) = store {
            return Ok(Self::under(&absolute(s)?));
        }
        if let Some(h) = std::env::var_os("HOARD_HOME").filter(|h| !h.is_empty()) {
            return Ok(Self::under(&absolute(Path::new(&h))?));
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let xdg = |var: &str, fallback: &str| -> Result<PathBuf, String> {
            match std::env::var_os(var).filter(|v| !v.is_empty()) {
                Some(v) => Ok(PathBuf::from(v)),
                None => home.as_ref().map(|h| h.join(fallback)).ok_or_else(|| {
                    format!(
                        "neither {var} nor HOME is set: set HOARD_HOME to choose a store directory"
                    )
                }),
            }
        };
        let store = xdg("XDG_DATA_HOME", ".local/share")?.join("hoard");
        let config = xdg("XDG_CONFIG_HOME", ".config")?.join("hoard/config.toml");
        let socket = match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            Some(r) => PathBuf::from(r).join("hoard/hoardd.sock"),
            None => store.join("hoardd.sock"),
        };
        Ok(Paths {
            store,
            config,
            socket,
        })
    }

    /// The lock file that keeps a second daemon off this store.
    pub fn lock(&self) -> PathBuf {
        self.store.join("hoardd.lock")
    }

    /// Where a daemon started in the background writes its log.
    pub fn log(&self) -> PathBuf {
        self.store.join("hoardd.log")
    }
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    std::path::absolute(p).map_err(|e| format!("cannot resolve store path {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_layout_keeps_everything_together() {
        let p = Paths::under(Path::new("/x/h"));
        assert_eq!(p.socket, Path::new("/x/h/hoardd.sock"));
        assert_eq!(p.lock(), Path::new("/x/h/hoardd.lock"));
        assert_eq!(p.config, Path::new("/x/h/config.toml"));
    }
}
