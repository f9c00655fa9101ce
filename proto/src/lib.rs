//! hoard's wire protocol and the one definition of where a user's daemon,
//! store and socket live (both `hoard` and `hoardd` resolve paths here).
//!
//! Two APIs, one package (`hoard.v1`): the Local API (`proto/local.proto`,
//! `hoard` to its own user's `hoardd` over a Unix socket, free to change
//! between versions) and the Peer API (`proto/peer.proto`, the network
//! contract between daemons, documented there for other implementations).

pub mod paths;
pub mod remotes;

/// Generated from `proto/local.proto` and `proto/peer.proto`. The protos'
/// comments are written for readers of the `.proto` files (lists wrapped as
/// prose), not as rustdoc.
#[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items)]
pub mod v1 {
    tonic::include_proto!("hoard.v1");
}

// ---- Local API limits ------------------------------------------------------

/// Largest data payload put in one message (well under tonic's 4 MiB limit).
pub const MAX_DATA_MESSAGE: usize = 1 << 20;

/// Number of file results batched into one `FileResults` message.
pub const FILE_RESULTS_BATCH: usize = 1024;

/// Files per `ReadBatch` call, and the largest file it carries.
pub const READ_BATCH_FILES: usize = 64;
pub const READ_BATCH_MAX_FILE: u64 = MAX_DATA_MESSAGE as u64;

// ---- The stat cache's one rule ---------------------------------------------

/// A stat-cache entry is trusted only when the file's mtime is at least
/// this much older than the moment its content was known (read, or
/// written and stat'ed): a change within the file system's timestamp
/// granularity after that moment would otherwise leave the stat as it
/// was. Writers that want their files trusted at once (checkout, `hoard
/// pull`) set the mtime this far back ([`backdated_mtime`]) before the file
/// is renamed into place; any later write then moves it.
pub const RACY_NS: i64 = 50_000_000;

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Whether a stat whose mtime is `mtime_ns` may be cached, the content
/// having been known at `known_at_ns`.
pub fn settled(mtime_ns: i64, known_at_ns: i64) -> bool {
    mtime_ns.saturating_add(RACY_NS) <= known_at_ns
}

/// The mtime a writer gives a file it wrote, before renaming it into
/// place: twice [`RACY_NS`] before `now`.
pub fn backdated_mtime(now: std::time::SystemTime) -> std::time::SystemTime {
    now.checked_sub(std::time::Duration::from_nanos(2 * RACY_NS as u64))
        .unwrap_or(now)
}

// ---- Peer API limits (and version) -----------------------------------------

/// Version of the Peer protocol this build speaks.
pub const PEER_PROTOCOL: u32 = 1;
/// Ids per `IdList` a peer accepts, and manifest entries per piece.
pub const PEER_BATCH: usize = 4096;
/// Largest message either side of the Peer API sends or accepts.
pub const PEER_MESSAGE_LIMIT: usize = 8 << 20;
/// Largest message on the Local API.
pub const LOCAL_MESSAGE_LIMIT: usize = 16 << 20;
/// Raw bytes of chunks carried per `ChunkBatch` message.
pub const CHUNK_BATCH_BYTES: usize = 1 << 20;

/// Parses a duration such as `30d`, `12h`, `1y6m`, `2w`, `90min`, `0s`
/// (y = 365 days, m = 30 days).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration; write it like 30d, 12h, 2w, 1y6m, 90min or 0s");
    let mut total: u64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let per = match &rest[..unit_len] {
            "y" => 365 * 86_400,
            "m" => 30 * 86_400,
            "w" => 7 * 86_400,
            "d" => 86_400,
            "h" => 3_600,
            "min" => 60,
            "s" => 1,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(per)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}
