//! The Peer service's upload handlers (daemon/src/sync/uploads.rs) fed
//! arbitrary message streams: `chunks`, `frames`, `manifests`, `objects`,
//! exactly as the Peer service runs them, against one store per process.
//!
//! Input: the first byte picks the handler (low 2 bits: 0 chunks, 1 frames,
//! 2 manifests, 3 objects); with bit 2 set the harness first puts right
//! what a fuzzer cannot forge: chunk and object ids become the BLAKE3 of
//! their data, and a raw or zstd frame's chunk ids those of its decoded
//! bytes (and its lengths the payload's). The rest is length-delimited
//! prost messages of the handler's type, handed out one per `next()`; the
//! stream ends at the end of the input, or fails (`next` returns Err, as a
//! broken transport would) at the first message that does not decode.
//!
//! The store (small chunks, as daemon/src/testutil.rs's `small_store`)
//! first receives, through the same handlers, the content the seeds in
//! corpus/peer_uploads/ refer to (fuzz/seeds.rs); what inputs store
//! accumulates for the rest of the run. It lives in $TMPDIR and is closed
//! and removed at exit.
//!
//! Checks: no panic, no hang (-timeout), every call returns Ok or Err.
//!
//! With HOARD_FUZZ_WRITE_SEEDS=<dir> set, the first input also writes the
//! seed corpora of all targets under <dir>/<target>/ (see README.md); with
//! HOARD_FUZZ_VERBOSE set, each input's outcome is printed.
#![no_main]

use hoard_daemon::chunker::ChunkParams;
use hoard_daemon::pack::format::{decompress, Codec};
use hoard_daemon::sync::uploads::{self, Next};
use hoard_daemon::{Error, Id, Result, Store, StoreParams};
use hoard_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

#[path = "../seeds.rs"]
mod seeds;

struct World {
    store: Store,
    _dir: tempfile::TempDir,
}

static WORLD: AtomicPtr<World> = AtomicPtr::new(std::ptr::null_mut());

/// The store, opened and given the seeds' content by the first input
/// (libFuzzer runs every input on its main thread).
fn world() -> &'static World {
    let p = WORLD.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: set once below, freed only by `close_world` at exit.
        return unsafe { &*p };
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        StoreParams {
            chunk: ChunkParams::with_avg(4096),
            pack_target: 1 << 20,
            frame_target: 64 << 10,
            ..StoreParams::default()
        },
    )
    .expect("open the store");
    seeds::populate(&store);
    if let Some(out) = std::env::var_os("HOARD_FUZZ_WRITE_SEEDS") {
        seeds::write_all(std::path::Path::new(&out), &store, dir.path());
    }
    // RocksDB dumps its stats on a timer thread right after opening (and
    // every 600 s), building function-local static strings that C++
    // destroys at exit: a DB still open at exit races them (ASan reports a
    // heap-use-after-free in InternalStats::DumpCFMapStatsWriteStall). So
    // the store is closed at exit, by a handler registered after that
    // first dump (handlers run in reverse order of registration).
    std::thread::sleep(std::time::Duration::from_secs(1));
    let w = Box::into_raw(Box::new(World { store, _dir: dir }));
    WORLD.store(w, Ordering::Release);
    // SAFETY: registers a plain extern "C" fn.
    unsafe { libc::atexit(close_world) };
    // SAFETY: just stored, never freed before exit.
    unsafe { &*w }
}

/// Closes the store (and removes its directory) at exit.
extern "C" fn close_world() {
    let p = WORLD.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: from Box::into_raw in `world`; no input runs any more.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// Runs `handler` over the messages in `b`, each fixed by `fix` first.
fn drive<T: Message + Default>(
    mut b: &[u8],
    fix: Option<fn(&mut T)>,
    handler: fn(&Store, &str, Next<T>) -> Result<pb::PutReply>,
) {
    let mut next = || -> Result<Option<T>> {
        if b.is_empty() {
            return Ok(None);
        }
        match T::decode_length_delimited(&mut b) {
            Ok(mut m) => {
                if let Some(f) = fix {
                    f(&mut m);
                }
                Ok(Some(m))
            }
            Err(e) => {
                b = &[];
                Err(Error::Invalid(format!("undecodable message: {e}")))
            }
        }
    };
    let r = handler(&world().store, seeds::PEER, &mut next);
    if *VERBOSE.get_or_init(|| std::env::var_os("HOARD_FUZZ_VERBOSE").is_some()) {
        eprintln!("{}: {r:?}", std::any::type_name::<T>());
    }
}

/// HOARD_FUZZ_VERBOSE set: each input's outcome goes to stderr.
static VERBOSE: OnceLock<bool> = OnceLock::new();

fn fix_chunks(m: &mut pb::ChunkBatch) {
    for c in &mut m.chunks {
        c.id = Id::of(&c.data).0.to_vec();
    }
}

fn fix_objects(m: &mut pb::ObjectBatch) {
    for o in &mut m.objects {
        o.id = Id::of(&o.data).0.to_vec();
    }
}

fn fix_frame(m: &mut pb::FramePut) {
    let Some(plan) = m.plan.as_mut() else {
        return;
    };
    plan.stored_len = m.payload.len() as u32;
    let raw: Vec<u8> = match plan.codec {
        0 => {
            plan.raw_len = plan.stored_len;
            m.payload.to_vec()
        }
        1 if plan.raw_len <= 1 << 20 => {
            match decompress(Codec::Zstd, &m.payload, plan.raw_len, &[], 0) {
                Ok(r) => r,
                Err(_) => return,
            }
        }
        _ => return,
    };
    let n = plan.chunk_offsets.len().min(plan.chunk_lens.len());
    plan.chunk_ids.resize(n, Vec::new());
    for i in 0..n {
        let (off, len) = (plan.chunk_offsets[i] as usize, plan.chunk_lens[i] as usize);
        if let Some(c) = raw.get(off..off.saturating_add(len)) {
            plan.chunk_ids[i] = Id::of(c).0.to_vec();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    world();
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let fix = sel & 4 != 0;
    match sel & 3 {
        0 => drive(rest, fix.then_some(fix_chunks as fn(&mut _)), uploads::chunks),
        1 => drive(rest, fix.then_some(fix_frame as fn(&mut _)), uploads::frames),
        2 => drive::<pb::ManifestPiece>(rest, None, uploads::manifests),
        _ => drive(rest, fix.then_some(fix_objects as fn(&mut _)), uploads::objects),
    }
});
