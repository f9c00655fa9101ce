//! The engine's errors. Each message names the file, object or pack involved
//! and, where there is one, the next step for the user.

use std::io;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("disk full while writing {}: free some space and re-run; nothing already stored was lost", path.display())]
    DiskFull { path: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} — run `hoard verify --read-data` for a full report")]
    Corrupt(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{} changed while it was being read; it was not stored — re-run `hoard add` once it is no longer being written", path.display())]
    FileChanged { path: PathBuf },
    #[error("index (RocksDB): {0}")]
    Index(#[from] rocksdb::Error),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Busy(String),
    /// A peer sent something wrong; nothing of it was stored.
    #[error("{0}")]
    Refused(String),
    #[error(
        "not added: the daemon is shutting down (or the client went away); re-run `hoard add`"
    )]
    Cancelled,
}

impl Error {
    /// Wraps an I/O error with what was being done; ENOSPC becomes [`Error::DiskFull`].
    pub fn io(context: impl Into<String>, path: &Path, source: io::Error) -> Error {
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == io::ErrorKind::StorageFull
        {
            return Error::DiskFull {
                path: path.to_path_buf(),
            };
        }
        Error::Io {
            context: format!("{} {}", context.into(), path.display()),
            source,
        }
    }
}
