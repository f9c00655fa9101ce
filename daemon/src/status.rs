//! Engine errors on the wire: the one gRPC code each [`Kind`] maps to
//! (DESIGN.md, "Error kinds"), used by the Local API and the Peer API
//! alike, and a peer's status turned back into an engine error.
//!
//! | kind | gRPC code | `hoard` exits |
//! | --- | --- | --- |
//! | Invalid | `InvalidArgument` | 2 |
//! | NotFound | `NotFound` | 4 |
//! | Conflict | `FailedPrecondition` | 5 |
//! | Transient | `Unavailable` | 6 |
//! | Refused | `Aborted` | 7 |
//! | Corrupt | `DataLoss` | 8 |
//! | DiskFull | `ResourceExhausted` | 9 |
//! | Cancelled | `Cancelled` | 1 |
//! | Internal | `Internal` | 1 |
//!
//! May import: `error`. The only room below the services that knows tonic's
//! status type besides `sync`.

use crate::error::{Error, Kind};
use tonic::{Code, Status};

/// The gRPC code of an error kind.
pub fn code(kind: Kind) -> Code {
    match kind {
        Kind::Invalid => Code::InvalidArgument,
        Kind::NotFound => Code::NotFound,
        Kind::Conflict => Code::FailedPrecondition,
        Kind::Transient => Code::Unavailable,
        Kind::Refused => Code::Aborted,
        Kind::Corrupt => Code::DataLoss,
        Kind::DiskFull => Code::ResourceExhausted,
        Kind::Cancelled => Code::Cancelled,
        Kind::Internal => Code::Internal,
    }
}

/// An engine error as a gRPC status whose message is the engine's.
pub fn status(e: Error) -> Status {
    Status::new(code(e.kind()), e.to_string())
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        status(e)
    }
}

/// A status from `peer` while doing `what`, as an engine error of the kind
/// its code says (a peer down or a broken connection is transient; a refused
/// token is for the user to fix).
pub fn from_peer(peer: &str, what: &str, e: Status) -> Error {
    let m = e.message();
    match e.code() {
        Code::Unauthenticated | Code::PermissionDenied => Error::Invalid(format!(
            "{peer} refused {what}: {m} (check the remote's token: `hoard remote list`)"
        )),
        Code::InvalidArgument => Error::Invalid(format!("{peer} refused {what}: {m}")),
        Code::NotFound => Error::NotFound(format!("{what} with {peer}: {m}")),
        Code::FailedPrecondition => Error::Conflict(format!("{what} with {peer}: {m}")),
        Code::Aborted | Code::DataLoss | Code::OutOfRange => {
            Error::Refused(format!("{what} with {peer} failed: {m}"))
        }
        Code::ResourceExhausted => Error::Transient(format!(
            "{what} with {peer} failed (the peer is full or busy): {m}"
        )),
        _ => Error::Transient(format!("{what} with {peer} failed: {m}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_code_and_comes_back_as_itself_from_a_peer() {
        // A peer's own damage is not this store's: it comes back as a
        // refusal (nothing of it is stored), not as local corruption.
        let kinds = [
            (Error::Invalid("i".into()), Kind::Invalid),
            (Error::NotFound("n".into()), Kind::NotFound),
            (Error::Conflict("c".into()), Kind::Conflict),
            (Error::Transient("t".into()), Kind::Transient),
            (Error::Refused("r".into()), Kind::Refused),
            (Error::Corrupt("x".into()), Kind::Refused),
            (Error::DiskFull { path: "/d".into() }, Kind::Transient),
            (Error::Internal("b".into()), Kind::Transient),
        ];
        let mut codes = std::collections::HashSet::new();
        for (e, k) in kinds {
            let s = status(e);
            assert!(codes.insert(s.code()), "{k:?} shares its code");
            assert_eq!(from_peer("hub", "a call", s).kind(), k);
        }
    }
}
