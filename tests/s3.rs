//! A hub whose packs live in S3-compatible storage: real Garage servers on
//! loopback (built by scripts/garage.sh), a real hub and real clients. Push,
//! clone, verify, prune, a hub that lost its local disk rebuilt from the
//! bucket alone, a bucket that goes away, and a 3-node cluster losing a node
//! in the middle of pushes and pulls.

mod common;

use common::garage::{Garage, KEY_ID, SECRET};
use common::{data, free_port, Env};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A hub whose packs are in the bucket behind `endpoints`; `extra` goes
/// into its [store] section.
fn s3_hub(endpoints: &[String], extra: &str) -> (Env, u16) {
    let hub = Env::new();
    std::fs::create_dir_all(&hub.home).unwrap();
    let eps: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    std::fs::write(
        hub.home.join("config.toml"),
        format!(
            "[store]\nbackend = \"s3\"\ns3_endpoints = [{}]\ns3_bucket = \"hoard\"\ns3_region = \"garage\"\ns3_prefix = \"lab1/\"\n{extra}",
            eps.join(", ")
        ),
    )
    .unwrap();
    let port = free_port();
    start(&hub, port);
    (hub, port)
}

fn start(hub: &Env, port: u16) {
    hub.start_hub_with(
        port,
        &[
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
    );
}

/// The hub's pack backend as `hoard daemon status --json` shows it.
fn backend(hub: &Env) -> Value {
    hub.json(&["daemon", "status"]).pop().unwrap()["backend"].clone()
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// A client with remote `origin` on the hub at `url`, and dataset `ds`.
fn client(url: &str, token: &str) -> Env {
    let a = Env::new();
    a.ok(&["remote", "add", "origin", url, "--token", token]);
    a
}

fn files_under(dir: &Path, ext: &str) -> usize {
    walkdir(dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .count()
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_hub_on_garage_serves_pushes_and_clones_verifies_prunes_and_rebuilds_from_the_bucket() {
    let g = Garage::single();
    let (hub, port) = s3_hub(&g.endpoints(), "");
    let url = format!("http://127.0.0.1:{port}");
    let token = hub.token(true);
    let admin = hub.json(&["token", "create", "--admin"]).pop().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let a = client(&url, &token);
    a.ok(&["remote", "add", "admin", &url, "--token", &admin]);
    let src = a.path("ds");
    std::fs::create_dir_all(&src).unwrap();
    a.ok(&["dataset", "add", "ds", src.to_str().unwrap()]);
    let mut versions = Vec::new();
    let mut ids = Vec::new();
    for v in 0..3u64 {
        let big = data(4 << 20, 300 + v, false);
        std::fs::write(src.join("big.bin"), &big).unwrap();
        std::fs::write(src.join("notes.txt"), data(100_000 + v as usize, 3, true)).unwrap();
        let snap = a
            .json(&["snapshot", "ds", "-m", &format!("v{v}"), "--rescan"])
            .pop()
            .unwrap();
        let id = snap["id"].as_str().unwrap();
        ids.push(id.trim_start_matches("blake3:")[..12].to_string());
        a.ok(&["dataset", "push", "ds"]);
        versions.push(big);
    }
    // Nothing of the packs is on the hub's disk: they are in the bucket.
    assert_eq!(files_under(&hub.home.join("packs"), "pack"), 0);
    let stats = hub.json(&["stats"]).pop().unwrap();
    assert!(stats["packs"].as_u64().unwrap() > 0, "{stats}");
    let v = hub.run(&["verify", "--read-data"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let clone = |who: &Env, rev: &str, dir: &Path| {
        let spec = if rev.is_empty() {
            "origin/ds".to_string()
        } else {
            format!("origin/ds@{rev}")
        };
        who.ok(&["clone", &spec, dir.to_str().unwrap()]);
    };
    // A pull reads ranges of packs, never lists the bucket; a second pull
    // of the same version is served from the hub's read cache.
    let pushed = backend(&hub);
    assert_eq!(pushed["kind"], "s3", "{pushed}");
    assert!(n(&pushed, "bytes_written") > 12 << 20, "{pushed}");
    // Restarted: the read cache is cold (the push's read-back filled it).
    hub.kill_daemon();
    start(&hub, port);
    let before = backend(&hub);
    let b = client(&url, &token);
    clone(&b, &ids[1], &b.path("v1"));
    assert!(std::fs::read(b.path("v1/big.bin")).unwrap() == versions[1]);
    let first = backend(&hub);
    assert_eq!(
        n(&first, "lists"),
        n(&before, "lists"),
        "a pull listed the bucket: {first}"
    );
    let read1 = n(&first, "bytes_read") - n(&before, "bytes_read");
    assert!(
        read1 >= 3 << 20,
        "the first pull read {read1} bytes from the bucket"
    );
    let b2 = client(&url, &token);
    clone(&b2, &ids[1], &b2.path("v1"));
    assert!(std::fs::read(b2.path("v1/big.bin")).unwrap() == versions[1]);
    let second = backend(&hub);
    let read2 = n(&second, "bytes_read") - n(&first, "bytes_read");
    assert!(
        read2 * 20 < read1,
        "the second pull of the same version read {read2} bytes from the bucket, the first {read1}"
    );
    assert!(
        n(&second, "cache_hits") > n(&first, "cache_hits"),
        "{second}"
    );
    assert_eq!(n(&second, "lists"), n(&before, "lists"), "{second}");
    // A prune on the hub deletes pack objects only once the index no
    // longer names them; what it keeps still verifies and serves.
    a.ok(&[
        "prune",
        "--remote",
        "admin",
        "--keep-last",
        "1",
        "--grace",
        "0s",
    ]);
    let v = hub.run(&["verify", "--read-data"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    // The hub loses its disk except its config and tokens: reindex reads
    // the bucket and every kept version is served again.
    hub.kill_daemon();
    for d in ["index", "packs"] {
        let _ = std::fs::remove_dir_all(hub.home.join(d));
    }
    start(&hub, port);
    hub.ok(&["reindex"]);
    // From the idx objects: one small read per pack, no frame read.
    let rebuilt = backend(&hub);
    let stored = hub.json(&["stats"]).pop().unwrap()["stored_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        n(&rebuilt, "bytes_read") * 10 < stored,
        "reindex read {} bytes of {stored} stored: {rebuilt}",
        n(&rebuilt, "bytes_read")
    );
    let c = client(&url, &token);
    // The refs come back from their mirror in the bucket: a clone of the
    // dataset's head gets the newest version.
    clone(&c, "", &c.path("head"));
    assert!(std::fs::read(c.path("head/big.bin")).unwrap() == versions[2]);
    let v = hub.run(&["verify", "--read-data"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let oid = format!("blake3:{}", blake3::hash(&versions[2]).to_hex());
    let got = hub.run(&["cat", &oid]).stdout;
    assert!(
        got == versions[2],
        "the newest version does not read back from the bucket"
    );
    drop(g);
}

/// Writes `bytes` as `ds/big.bin`, snapshots it; the snapshot's short id.
fn version(a: &Env, bytes: &[u8], msg: &str) -> String {
    let src = a.path("ds");
    if !src.exists() {
        std::fs::create_dir_all(&src).unwrap();
        a.ok(&["dataset", "add", "ds", src.to_str().unwrap()]);
    }
    std::fs::write(src.join("big.bin"), bytes).unwrap();
    let snap = a
        .json(&["snapshot", "ds", "-m", msg, "--rescan"])
        .pop()
        .unwrap();
    snap["id"].as_str().unwrap().trim_start_matches("blake3:")[..12].to_string()
}

fn spawn(e: &Env, args: &[&str]) -> Child {
    e.hoard()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(c: Child, what: &str) -> std::process::Output {
    common::wait_output(c, Duration::from_secs(300), what)
}

#[test]
fn a_push_while_the_bucket_is_down_fails_naming_the_endpoint_and_acknowledges_nothing() {
    let mut g = Garage::single();
    let (hub, port) = s3_hub(&g.endpoints(), "");
    let url = format!("http://127.0.0.1:{port}");
    let token = hub.token(true);
    let a = client(&url, &token);
    let v0 = data(2 << 20, 40, false);
    version(&a, &v0, "v0");
    a.ok(&["dataset", "push", "ds"]);
    g.nodes[0].kill();
    let v1 = data(3 << 20, 41, false);
    version(&a, &v1, "v1");
    let t = Instant::now();
    let out = a.run(&["dataset", "push", "ds"]);
    let msg = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "a push to a hub whose bucket is down succeeded"
    );
    assert!(
        msg.contains(&g.nodes[0].s3()),
        "the error does not name the endpoint: {msg}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(240),
        "the push took {:?} to fail",
        t.elapsed()
    );
    // Nothing was acknowledged: the hub's head is still v0.
    g.nodes[0].start();
    let b = client(&url, &token);
    b.ok(&["clone", "origin/ds", b.path("head").to_str().unwrap()]);
    assert!(std::fs::read(b.path("head/big.bin")).unwrap() == v0);
    let v = hub.run(&["verify", "--read-data"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    // With the bucket back, the same push goes through.
    a.ok(&["dataset", "push", "ds"]);
    let c = client(&url, &token);
    c.ok(&["clone", "origin/ds", c.path("head").to_str().unwrap()]);
    assert!(std::fs::read(c.path("head/big.bin")).unwrap() == v1);
}

/// Waits until the hub's backend counter `key` has grown by `by` bytes
/// since `from` while `child` runs, then runs `kill`; fails the test if the
/// transfer ended first (it would prove nothing).
fn kill_mid_transfer(
    hub: &Env,
    child: &mut Child,
    key: &str,
    from: u64,
    by: u64,
    kill: impl FnOnce(),
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the transfer finished before a node could be killed in its middle"
        );
        if n(&backend(hub), key) >= from + by {
            break;
        }
        assert!(Instant::now() < deadline, "the transfer never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the transfer finished while the node was being killed"
    );
}

#[test]
fn a_three_node_cluster_losing_a_node_mid_push_and_mid_pull_loses_nothing() {
    let mut g = Garage::cluster(3);
    // Small packs: a push uploads one after another while it runs; a small
    // cache: pulls read from the bucket.
    let (hub, port) = s3_hub(
        &g.endpoints(),
        "pack_target = 8388608\ns3_cache_bytes = 4194304\n",
    );
    let url = format!("http://127.0.0.1:{port}");
    let token = hub.token(true);
    let a = client(&url, &token);
    version(&a, &data(1 << 20, 50, false), "v0");
    a.ok(&["dataset", "push", "ds"]);
    let size = 96 << 20;
    let in_use = |hub: &Env| backend(hub)["endpoint"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    let lap = |what: &str| eprintln!("{:>6.1}s {what}", t0.elapsed().as_secs_f64());

    // 1. push; the node the hub talks to dies.
    let v1 = data(size, 51, false);
    let id1 = version(&a, &v1, "v1");
    let node = g.node_at(&in_use(&hub));
    let from = n(&backend(&hub), "bytes_written");
    let mut push = spawn(&a, &["dataset", "push", "ds"]);
    kill_mid_transfer(&hub, &mut push, "bytes_written", from, 1, || {
        g.nodes[node].kill()
    });
    let out = finish(push, "push while the node in use died");
    assert!(
        out.status.success(),
        "push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = backend(&hub);
    assert_ne!(
        g.node_at(after["endpoint"].as_str().unwrap()),
        node,
        "{after}"
    );
    assert!(n(&after, "failovers") >= 1, "{after}");
    lap("push 1 done");
    g.restart(node);

    lap("2. pull of v1");
    // 2. pull of v1; a node the hub is not talking to dies.
    let b = client(&url, &token);
    let using = g.node_at(&in_use(&hub));
    let other = (using + 1) % 3;
    let from = n(&backend(&hub), "bytes_read");
    let dir = b.path("v1");
    let mut pull = spawn(
        &b,
        &["clone", &format!("origin/ds@{id1}"), dir.to_str().unwrap()],
    );
    kill_mid_transfer(&hub, &mut pull, "bytes_read", from, 1 << 20, || {
        g.nodes[other].kill()
    });
    let out = finish(pull, "pull while another node died");
    assert!(
        out.status.success(),
        "pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(dir.join("big.bin")).unwrap() == v1,
        "v1 pulled wrong"
    );
    g.restart(other);

    lap("3. push;");
    // 3. push; a node the hub is not talking to dies.
    let v2 = data(size, 52, false);
    let id2 = version(&a, &v2, "v2");
    let using = g.node_at(&in_use(&hub));
    let other = (using + 2) % 3;
    let from = n(&backend(&hub), "bytes_written");
    let mut push = spawn(&a, &["dataset", "push", "ds"]);
    kill_mid_transfer(&hub, &mut push, "bytes_written", from, 1, || {
        g.nodes[other].kill()
    });
    let out = finish(push, "push while another node died");
    assert!(
        out.status.success(),
        "push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    g.restart(other);

    lap("4. pull of v2");
    // 4. pull of v2 (never read by the hub: nothing cached); the node in
    // use dies.
    let c = client(&url, &token);
    let using = g.node_at(&in_use(&hub));
    let failovers = n(&backend(&hub), "failovers");
    let from = n(&backend(&hub), "bytes_read");
    let dir = c.path("v2");
    let mut pull = spawn(
        &c,
        &["clone", &format!("origin/ds@{id2}"), dir.to_str().unwrap()],
    );
    kill_mid_transfer(&hub, &mut pull, "bytes_read", from, 1 << 20, || {
        g.nodes[using].kill()
    });
    let out = finish(pull, "pull while the node in use died");
    assert!(
        out.status.success(),
        "pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(dir.join("big.bin")).unwrap() == v2,
        "v2 pulled wrong"
    );
    assert!(n(&backend(&hub), "failovers") > failovers);

    lap("With one node still down");
    // With one node still down, every pack reads back and verifies.
    let v = hub.run(&["verify", "--read-data"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

#[test]
fn a_local_hub_migrates_its_packs_into_garage_resumably_and_then_serves_from_there() {
    let mut g = Garage::single();
    let hub = Env::new();
    std::fs::create_dir_all(&hub.home).unwrap();
    std::fs::write(
        hub.home.join("config.toml"),
        format!(
            "# the lab hub\n[store]\npack_target = 1048576\nbackend = \"local\"\ns3_endpoints = [\"{}\"]\ns3_bucket = \"hoard\"\ns3_region = \"garage\"\ns3_prefix = \"lab2/\"\n",
            g.nodes[0].s3()
        ),
    )
    .unwrap();
    let port = free_port();
    start(&hub, port);
    let url = format!("http://127.0.0.1:{port}");
    let token = hub.token(true);
    let a = client(&url, &token);
    let mut versions = Vec::new();
    for v in 0..2u64 {
        let bytes = data(24 << 20, 60 + v, false);
        let id = version(&a, &bytes, &format!("v{v}"));
        a.ok(&["dataset", "push", "ds"]);
        versions.push((id, bytes));
    }
    let packs = files_under(&hub.home.join("packs"), "pack");
    assert!(packs > 20, "{packs} packs");

    // The bucket goes away in the middle: the migration fails, names the
    // endpoint, and the config still says local.
    let progress = hub.home.join("migrate-s3.done");
    let mut m = spawn(&hub, &["backend", "migrate", "--to", "s3", "--json"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&progress).map_or(0, |s| s.lines().count()) < 3 {
        assert!(
            m.try_wait().unwrap().is_none(),
            "the migration ended before the bucket could go away"
        );
        assert!(Instant::now() < deadline, "the migration never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    g.nodes[0].kill();
    let out = finish(m, "migration with the bucket gone");
    assert!(
        !out.status.success(),
        "the migration succeeded without its bucket"
    );
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains(&g.nodes[0].s3()), "{msg}");
    let cfg = std::fs::read_to_string(hub.home.join("config.toml")).unwrap();
    assert!(cfg.contains("backend = \"local\""), "{cfg}");

    // Again with the bucket back: it resumes, verifies, switches.
    g.nodes[0].start();
    let r = hub
        .json(&["backend", "migrate", "--to", "s3"])
        .pop()
        .unwrap();
    let (copied, already) = (n(&r, "copied"), n(&r, "already"));
    assert!(already >= 3, "{r}");
    assert_eq!(copied + already, n(&r, "packs"), "{r}");
    let cfg = std::fs::read_to_string(hub.home.join("config.toml")).unwrap();
    assert!(
        cfg.starts_with("# the lab hub\n") && cfg.contains("backend = \"s3\""),
        "{cfg}"
    );

    // Written after the migration, before the restart: uploaded at start.
    let late = data(3 << 20, 70, false);
    let late_id = version(&a, &late, "late");
    a.ok(&["dataset", "push", "ds"]);
    versions.push((late_id, late));
    hub.kill_daemon();
    start(&hub, port);
    assert_eq!(
        files_under(&hub.home.join("packs"), "pack"),
        0,
        "local packs left after the move"
    );
    assert_eq!(backend(&hub)["kind"], "s3");
    let v = hub.run(&["verify", "--read-data"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let b = client(&url, &token);
    for (id, bytes) in &versions {
        let dir = b.path(id);
        b.ok(&["clone", &format!("origin/ds@{id}"), dir.to_str().unwrap()]);
        assert!(
            std::fs::read(dir.join("big.bin")).unwrap() == *bytes,
            "{id} reads back wrong"
        );
    }
}
