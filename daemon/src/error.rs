//! The engine's errors. Each message names the file, object, pack or peer
//! involved and, where there is one, the next step for the user.
//!
//! Every error has a [`Kind`] that tells a caller what to do about it:
//! resolve it (`Conflict`, `Invalid`), retry it (`Transient`), repair the
//! store (`Corrupt`), free space (`DiskFull`). The kinds, and the one gRPC
//! code each maps to, are fixed by the project design (and listed in the
//! README's exit-code table); the mapping itself lives in
//! [`crate::status`], next to the wire.
//!
//! May import: `id` only (and std, rocksdb's error type). No tonic here.

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
    /// Local damage found by a check.
    #[error("{0} — run `hoard verify --read-data` for a full report")]
    Corrupt(String),
    /// Stored bytes that fail their format's checks: local damage, with the
    /// check that failed as its source.
    #[error("{what}: {source} — run `hoard verify --read-data` for a full report")]
    Damaged {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{} changed while it was being read; it was not stored — re-run `hoard add` once it is no longer being written", path.display())]
    FileChanged { path: PathBuf },
    #[error("index (RocksDB): {0}")]
    Index(#[from] rocksdb::Error),
    /// Bad input from the user (a name, a path, a flag, a config file).
    #[error("{0}")]
    Invalid(String),
    /// The state is in the way (a non-fast-forward, local changes, a tag
    /// that names something else): resolve it, never retried by itself.
    #[error("{0}")]
    Conflict(String),
    /// A peer or the network failed, or a race was lost: retrying may work.
    #[error("{0}")]
    Transient(String),
    /// A peer sent something wrong; nothing of it was stored.
    #[error("{0}")]
    Refused(String),
    /// A bug or a failure of the daemon itself (a worker thread panicked).
    #[error("{0}")]
    Internal(String),
    #[error(
        "not added: the daemon is shutting down (or the client went away); re-run `hoard add`"
    )]
    Cancelled,
}

/// What a caller can do about an error (the project design's "error kinds").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad user input: fix the command or the configuration.
    Invalid,
    NotFound,
    /// Resolve it (the message names the command); never retried by itself.
    Conflict,
    /// Retry, with backoff.
    Transient,
    /// A peer sent bad data; nothing of it was stored.
    Refused,
    /// Local damage: `hoard verify --read-data`, then repair.
    Corrupt,
    DiskFull,
    Cancelled,
    Internal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Invalid => "invalid",
            Kind::NotFound => "not found",
            Kind::Conflict => "conflict",
            Kind::Transient => "transient",
            Kind::Refused => "refused",
            Kind::Corrupt => "corrupt",
            Kind::DiskFull => "disk full",
            Kind::Cancelled => "cancelled",
            Kind::Internal => "internal",
        }
    }
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

    /// Stored bytes (`what`) failed a format check (`source`).
    pub fn damaged(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Damaged {
            what: what.into(),
            source: Box::new(source),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Error::DiskFull { .. } => Kind::DiskFull,
            Error::Io { .. } | Error::Index(_) | Error::Internal(_) => Kind::Internal,
            Error::Corrupt(_) | Error::Damaged { .. } => Kind::Corrupt,
            Error::NotFound(_) => Kind::NotFound,
            Error::FileChanged { .. } | Error::Transient(_) => Kind::Transient,
            Error::Invalid(_) => Kind::Invalid,
            Error::Conflict(_) => Kind::Conflict,
            Error::Refused(_) => Kind::Refused,
            Error::Cancelled => Kind::Cancelled,
        }
    }

    /// An error of the same kind and message, for reporting one failure to
    /// each of several waiters (the source chain stays with the original).
    pub fn same_again(&self) -> Error {
        match self {
            Error::DiskFull { path } => Error::DiskFull { path: path.clone() },
            Error::Corrupt(m) => Error::Corrupt(m.clone()),
            Error::Damaged { what, source } => Error::Corrupt(format!("{what}: {source}")),
            Error::FileChanged { path } => Error::FileChanged { path: path.clone() },
            Error::Cancelled => Error::Cancelled,
            e => {
                let m = e.to_string();
                match e.kind() {
                    Kind::Invalid => Error::Invalid(m),
                    Kind::NotFound => Error::NotFound(m),
                    Kind::Conflict => Error::Conflict(m),
                    Kind::Transient => Error::Transient(m),
                    Kind::Refused => Error::Refused(m),
                    _ => Error::Internal(m),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_error_again_keeps_kind_and_message() {
        let errors = [
            Error::Conflict("x moved".into()),
            Error::Transient("peer down".into()),
            Error::damaged("pack p", io::Error::other("bad header")),
            Error::DiskFull { path: "/d".into() },
            Error::io("cannot read", Path::new("/f"), io::Error::other("boom")),
        ];
        for e in errors {
            let again = e.same_again();
            assert_eq!(again.kind(), e.kind(), "{e}");
            assert_eq!(again.to_string(), e.to_string());
        }
    }

    #[test]
    fn damage_keeps_its_source() {
        let e = Error::damaged("chunk c in pack p", io::Error::other("bad zstd frame"));
        assert_eq!(e.kind(), Kind::Corrupt);
        let src = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(src.as_deref(), Some("bad zstd frame"));
    }
}
