//! Engine errors on the wire: the one gRPC code each [`Kind`] maps to
//! (the project design's "error kinds"), used by the Local API and the Peer API
//! alike, and a peer's status turned back into an engine error.
//!
//! | kind | gRPC code | HTTP status (gateway) | `hoard` exits |
//! | --- | --- | --- | --- |
//! | Invalid | `InvalidArgument` | 400 | 2 |
//! | NotFound | `NotFound` | 404 | 4 |
//! | Conflict | `FailedPrecondition` | 409 | 5 |
//! | Transient | `Unavailable` | 503 | 6 |
//! | Refused | `Aborted` | 502 | 7 |
//! | Corrupt | `DataLoss` | 500 | 8 |
//! | DiskFull | `ResourceExhausted` | 507 | 9 |
//! | Cancelled | `Cancelled` | 503 | 1 |
//! | Internal | `Internal` | 500 | 1 |
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

/// The HTTP status the read gateway answers an error kind with.
pub fn http_code(kind: Kind) -> u16 {
    match kind {
        Kind::Invalid => 400,
        Kind::NotFound => 404,
        Kind::Conflict => 409,
        Kind::Transient | Kind::Cancelled => 503,
        Kind::Refused => 502,
        Kind::Corrupt | Kind::Internal => 500,
        Kind::DiskFull => 507,
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
/// its code says: a refused token is for the user to fix, a missing object
/// is not found; anything else (a peer down, a broken connection, a peer
/// that refused what this store sent or whose own store is damaged) is
/// transient here. The Peer API answers a ref it will not move with
/// `ok = false`, never with a status, so no peer status is a conflict; and
/// `Refused` is kept for what this store itself refuses from a peer, which
/// it counts (older hubs also sent their refusals as `FailedPrecondition`).
pub fn from_peer(peer: &str, what: &str, e: Status) -> Error {
    let m = e.message();
    match e.code() {
        Code::Unauthenticated | Code::PermissionDenied => Error::Invalid(format!(
            "{peer} refused {what}: {m} (check the remote's token: `hoard remote list`)"
        )),
        Code::InvalidArgument => Error::Invalid(format!("{peer} refused {what}: {m}")),
        Code::NotFound => Error::NotFound(format!("{what} with {peer}: {m}")),
        Code::FailedPrecondition | Code::Aborted | Code::DataLoss | Code::OutOfRange => {
            Error::Transient(format!("{peer} refused {what}: {m}"))
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
    fn each_kind_has_its_own_code_and_a_peers_status_says_what_to_do_here() {
        // What a peer refused or could not do is transient here (not this
        // store's conflict, damage or refusal); bad input stays the user's.
        let kinds = [
            (Error::Invalid("i".into()), Kind::Invalid),
            (Error::NotFound("n".into()), Kind::NotFound),
            (Error::Conflict("c".into()), Kind::Transient),
            (Error::Transient("t".into()), Kind::Transient),
            (Error::Refused("r".into()), Kind::Transient),
            (Error::Corrupt("x".into()), Kind::Transient),
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
