//! Load: many daemons pushing to and fetching from one hub at once while
//! a hostile client streams garbage at it. Every honest push and fetch must
//! succeed with byte-exact content; the run prints p50/p99 latency of the
//! honest commands and the hub's peak RSS (no timing is asserted).
//!
//! The CI variant uses 8 clients and 2 rounds; `benches/load.sh` runs 32
//! clients (`HOARD_LOAD_CLIENTS`, `HOARD_LOAD_ROUNDS`).

mod common;

use common::double::Double;
use common::{data, Env};
use hoard_proto::v1 as pb;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn vm(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Garbage a hostile write-token holder streams: wrong ids, bombs, lies.
fn hostile(url: &str, token: &str, stop: &AtomicBool, sent: &AtomicU64) {
    let mut d = Double::connect(url, token);
    let bomb = zstd::encode_all(std::io::Read::take(std::io::repeat(0), 64 << 20), 3).unwrap();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let junk = data(200_000, 10_000 + i, false);
        let _ = d.put_chunks(vec![pb::ChunkBatch {
            chunks: vec![pb::ChunkData {
                id: vec![(i % 251) as u8; 32],
                data: junk.clone().into(),
            }],
        }]);
        let _ = d.put_frames(vec![pb::FramePut {
            plan: Some(pb::FramePlanEntry {
                frame: Vec::new(),
                codec: 1,
                raw_len: 16 << 20,
                stored_len: bomb.len() as u32,
                bases: Vec::new(),
                chunk_ids: vec![vec![1; 32]],
                chunk_offsets: vec![0],
                chunk_lens: vec![1000],
            }),
            payload: bomb.clone().into(),
        }]);
        let _ = d.put_manifests(
            (0..20u32)
                .map(|k| pb::ManifestPiece {
                    file: blake3::hash(&k.to_le_bytes()).as_bytes().to_vec(),
                    size: 1 << 40,
                    chunk_ids: vec![vec![2; 32]; 100],
                    chunk_lens: vec![1; 100],
                    last: false,
                })
                .collect(),
        );
        let _ = d.put_raw_objects(vec![pb::Object {
            id: vec![3; 32],
            kind: 1,
            data: junk[..5000].to_vec(),
        }]);
        sent.fetch_add(4, Ordering::SeqCst);
    }
}

#[test]
fn honest_clients_are_all_served_while_a_hostile_one_streams_garbage() {
    let clients = env_or("HOARD_LOAD_CLIENTS", 8);
    let rounds = env_or("HOARD_LOAD_ROUNDS", 2);
    let hub = Env::new();
    let url = hub.start_hub();
    let token = hub.token(true);
    let hub_pid = hub.daemon_pid().expect("hub pid");

    let envs: Vec<Env> = (0..clients).map(|_| Env::new()).collect();
    for e in &envs {
        e.ok(&["remote", "add", "origin", &url, "--token", &token]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let garbage = Arc::new(AtomicU64::new(0));
    let attacker = {
        let (url, token, stop, garbage) =
            (url.clone(), token.clone(), stop.clone(), garbage.clone());
        std::thread::spawn(move || hostile(&url, &token, &stop, &garbage))
    };

    let latencies = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let barrier = Barrier::new(clients);
    // Per client, per round: the pushed file's oid and content.
    type Pushed = Mutex<Vec<(String, Vec<u8>)>>;
    let oids: Vec<Pushed> = (0..clients).map(|_| Mutex::new(Vec::new())).collect();
    let started = Instant::now();
    std::thread::scope(|s| {
        for (i, e) in envs.iter().enumerate() {
            let (latencies, errors, barrier, oids) = (&latencies, &errors, &barrier, &oids);
            s.spawn(move || {
                for r in 0..rounds {
                    // Half shared with everyone, half this client's own.
                    let mut content = data(1 << 20, 7 + r as u64, false);
                    content.extend(data(1 << 20, 1000 * (i as u64 + 1) + r as u64, false));
                    let path = e.path(&format!("f{r}.bin"));
                    std::fs::write(&path, &content).unwrap();
                    let v = e.json(&["add", path.to_str().unwrap()]);
                    let oid = v[0]["oid"].as_str().unwrap().to_string();
                    let t = Instant::now();
                    let o = e.run(&["push", &oid]);
                    latencies.lock().unwrap().push(("push", t.elapsed()));
                    if !o.status.success() {
                        errors.lock().unwrap().push(format!(
                            "client {i} push round {r}: {}",
                            String::from_utf8_lossy(&o.stderr)
                        ));
                    }
                    oids[i].lock().unwrap().push((oid, content));
                    barrier.wait();
                    // Fetch the neighbour's file of this round.
                    let j = (i + 1) % clients;
                    let (their, want) = oids[j].lock().unwrap()[r].clone();
                    let t = Instant::now();
                    let o = e.run(&["fetch", &their]);
                    latencies.lock().unwrap().push(("fetch", t.elapsed()));
                    if !o.status.success() {
                        errors.lock().unwrap().push(format!(
                            "client {i} fetch round {r}: {}",
                            String::from_utf8_lossy(&o.stderr)
                        ));
                    } else if e.run(&["cat", &their]).stdout != want {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("client {i} round {r}: fetched content differs"));
                    }
                    barrier.wait();
                }
            });
        }
    });
    let wall = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    attacker.join().unwrap();
    let peak = vm(hub_pid, "VmHWM:");
    let errors = errors.into_inner().unwrap();
    let lat = latencies.into_inner().unwrap();
    let report = |kind: &str| {
        let mut v: Vec<Duration> = lat
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, d)| *d)
            .collect();
        v.sort();
        (v.len(), percentile(&v, 0.5), percentile(&v, 0.99))
    };
    let (np, p50p, p99p) = report("push");
    let (nf, p50f, p99f) = report("fetch");
    println!(
        "load: {clients} clients x {rounds} rounds in {:.1}s; {} errors; push n={np} p50={:.2}s p99={:.2}s; fetch n={nf} p50={:.2}s p99={:.2}s; hostile messages {}; hub peak RSS {} MiB",
        wall.as_secs_f64(),
        errors.len(),
        p50p.as_secs_f64(),
        p99p.as_secs_f64(),
        p50f.as_secs_f64(),
        p99f.as_secs_f64(),
        garbage.load(Ordering::SeqCst),
        peak / 1024
    );
    assert!(
        errors.is_empty(),
        "honest clients failed:\n{}",
        errors.join("\n")
    );
    assert!(
        garbage.load(Ordering::SeqCst) > 0,
        "the hostile client sent nothing"
    );
    hub.ok(&["verify", "--read-data"]);
}
