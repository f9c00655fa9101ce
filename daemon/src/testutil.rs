//! Test fixtures shared by the engine's and sync's unit tests: a store with
//! small chunks and packs, adding paths, reading a file back, test data.

use crate::chunker::ChunkParams;
use crate::id::Id;
use crate::ingest::{add, AddInput, Event, FileDone, Summary};
use crate::store::{Store, StoreParams};
use std::path::Path;

pub(crate) fn small_store(dir: &Path) -> Store {
    Store::open(
        dir,
        StoreParams {
            chunk: ChunkParams::with_avg(4096),
            pack_target: 1 << 20,
            frame_target: 64 << 10,
            ..StoreParams::default()
        },
    )
    .unwrap()
}

pub(crate) fn add_paths(store: &Store, paths: &[&Path]) -> (Vec<FileDone>, Vec<String>, Summary) {
    let inputs = paths
        .iter()
        .map(|p| AddInput {
            path: p.to_path_buf(),
            display: p.display().to_string(),
        })
        .collect();
    let mut done = Vec::new();
    let mut errs = Vec::new();
    let sum = add(store, inputs, &mut |e| {
        match e {
            Event::Done(d) => done.extend(d),
            Event::Error { path, message } => errs.push(format!("{path}: {message}")),
            _ => {}
        }
        true
    });
    (done, errs, sum)
}

pub(crate) fn read_all(store: &Store, id: &Id) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .read_range(id, 0, None, &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
    out
}

pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half compressible text-like bytes, half noise.
            if (i / 5000) % 2 == 0 {
                b"abcdefgh"[(x % 8) as usize]
            } else {
                x as u8
            }
        })
        .collect()
}
