//! hoard's engine: content-defined chunking, packs, the RocksDB index,
//! ingest, verification, and the local gRPC API served by `hoardd`.
//!
//! Data flows one way: file → chunks ([`chunker`]) → frames in packs
//! ([`pack`], through a [`backend`]) → index ([`index`]) → manifest
//! ([`manifest`]) → acknowledgement ([`ingest`]). [`store`] owns the write
//! order that makes that crash-safe.
//!
//! The house, from the bottom up; a room imports only rooms on lower floors
//! (the floors are numbered in `scripts/layers.py`, which checks it, and
//! that no import circle exists; each room's header names its floor):
//!
//! - formats and the engine, no tonic: [`id`], [`error`]; [`chunker`],
//!   [`sketch`], [`manifest`], [`objects`], [`pack`] (one file per byte
//!   format); [`backend`], [`index`], [`store`] (split by phase: write,
//!   read, objects and refs, recover, leases, sweep); [`delta`], [`check`], [`config`],
//!   [`ingest`], [`put`]; [`dataset`] (snapshots, checkout, and the
//!   receiver's checks of objects and refs in [`dataset::accept`]);
//!   [`prune`] (retention and the mark; the sweep is the store's). Beside
//!   the formats, with no engine below them: [`status`] (each error kind's
//!   gRPC code), [`durable`] (small files replaced atomically),
//!   [`tokens`], [`tls`];
//! - [`sync`]: the Peer service and this daemon's side of a transfer;
//! - services: [`watch`], [`autosync`], [`service`] (the Local API, one
//!   module per area), [`gateway`] (the read-only HTTP gateway);
//! - [`daemon`]: composition, run by `hoardd`.

pub mod autosync;
pub mod backend;
pub mod check;
pub mod chunker;
pub mod config;
pub mod daemon;
pub mod dataset;
pub mod delta;
pub mod durable;
pub mod error;
pub mod gateway;
pub mod history;
pub mod id;
pub mod index;
pub mod ingest;
pub mod manifest;
pub mod objects;
pub mod pack;
pub mod prune;
pub mod put;
pub mod repair;
pub mod service;
pub mod sketch;
pub mod status;
pub mod store;
pub mod sync;
#[cfg(test)]
mod testutil;
pub mod tls;
pub mod tokens;
pub mod watch;

pub use error::{Error, Result};
pub use id::Id;
pub use store::{Store, StoreParams};

/// Paths looked up in the stat cache per batch.
pub const STAT_BATCH: usize = 1024;
