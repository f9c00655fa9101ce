//! hoard's engine: content-defined chunking, packs, the RocksDB index,
//! ingest, verification, and the local gRPC API served by `hoardd`.
//!
//! Data flows one way: file → chunks ([`chunker`]) → frames in packs
//! ([`pack`], through a [`backend`]) → index ([`index`]) → manifest
//! ([`manifest`]) → acknowledgement ([`ingest`]). [`store`] owns the write
//! order that makes that crash-safe.

pub mod api;
pub mod autosync;
pub mod backend;
pub mod check;
pub mod chunker;
pub mod config;
pub mod daemon;
pub mod dataset;
pub mod delta;
pub mod error;
pub mod id;
pub mod index;
pub mod ingest;
pub mod manifest;
pub mod objects;
pub mod pack;
pub mod put;
pub mod sketch;
pub mod store;
pub mod sync;
pub mod tls;
pub mod tokens;
pub mod watch;

pub use error::{Error, Result};
pub use id::Id;
pub use store::{Store, StoreParams};

/// Paths looked up in the stat cache per batch.
pub const STAT_BATCH: usize = 1024;
