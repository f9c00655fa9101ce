//! Peer sync: the `Peer` gRPC service other daemons call, and this daemon's
//! side of a transfer (pull from / push to a peer).
//!
//! Negotiation is by ids, never by bytes: the puller learns which files it
//! lacks, gets their manifests, works out which chunks it lacks and asks for
//! only those; push mirrors it, asking the peer what it lacks. Whoever
//! receives checks every chunk against its id before it is stored, and
//! every manifest against its file id (the BLAKE3 of the reassembled
//! content, read back from the store) before the file is recorded. Chunks
//! are made durable as their packs fill (sealed in the background while the
//! transfer goes on) and when a transfer ends or fails, so an interrupted
//! transfer resumes where it stopped: a rerun asks again and is sent only
//! what is still missing.
//!
//! Rooms: [`server`] (the Peer service), [`client`] (connecting to a peer
//! and the stream plumbing), [`pull`] and [`push`] (this daemon's side of a
//! transfer), [`dataset`] (clone and push of a dataset's snapshots),
//! [`uploads`] (the bodies of the Put calls, network-free, driven by the
//! fuzzers too), and what both sides share: [`checks`] on what a peer
//! sends, [`wire`] conversion between store contents and messages, [`frames`] and [`files`]
//! (frames as stored on the wire and their intake; manifests checked
//! against file ids).
//!
//! May import the engine (store, dataset, put, manifest, pack, tokens, tls)
//! and `status`; never the services above it (`service`, `watch`,
//! `autosync`, `daemon`).

pub mod admin;
mod checks;
mod client;
pub mod dataset;
mod files;
mod frames;
mod pull;
mod push;
mod server;
pub mod uploads;
mod wire;

pub use client::PeerAddr;
pub(crate) use client::HTTP2_FRAME;
pub use files::accept_manifests;
pub use pull::{fetch_chunks, fetch_range, pull, Want};
pub use push::push;
pub use server::PeerApi;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::store::Store;

/// Where the store counts transfers refused because a peer sent wrong data.
const REFUSED_KEY: &str = "counter/peer_refused";
/// Serialises updates of that count.
static REFUSED_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Transfers this store refused because a peer sent wrong data, over its
/// whole life (shown by `hoard daemon status`).
pub fn refused(store: &Store) -> Result<u64> {
    Ok(store
        .get_local(REFUSED_KEY)?
        .and_then(|v| v.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0))
}

/// Counts a refusal on its way out (in the store, so it outlives the
/// daemon).
pub(crate) fn counted<T>(store: &Store, r: Result<T>) -> Result<T> {
    if let Err(Error::Refused(why)) = &r {
        tracing::warn!(%why, "refused data from a peer");
        let _one = REFUSED_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let n = refused(store).map(|n| n + 1);
        if let Err(e) = n.and_then(|n| store.put_local(REFUSED_KEY, Some(&n.to_le_bytes()))) {
            tracing::warn!(error = %e, "cannot count the refusal");
        }
    }
    r
}

/// What a transfer did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub files: u64,
    pub files_already_there: u64,
    pub chunks_sent: u64,
    pub chunks_skipped: u64,
    pub bytes: u64,
    /// Files asked for that the peer does not have.
    pub missing: Vec<Id>,
    /// Where the bytes a pull received went.
    pub wire: Wire,
}

/// Payload bytes a pull received, by kind (what the wire carried beyond
/// their sum is the protocol's own: ids, plans, framing).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    /// Frames as stored that are deltas against chunks this store had.
    pub delta_frames: u64,
    /// Frames as stored that decode by themselves.
    pub whole_frames: u64,
    /// Chunks sent one by one (raw).
    pub chunks: u64,
    /// File manifests (chunk ids and lengths).
    pub manifests: u64,
}

/// Progress: bytes moved so far.
pub type Progress<'a> = &'a mut dyn FnMut(u64);
