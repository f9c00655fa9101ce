//! Datasets end to end: snapshots, history, checkout, lineage, the
//! watcher, and datasets across daemons (clone, push, auto-sync), with the
//! real binaries, each test with its own store.

mod common;

use common::{data, double, Env};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn snap(env: &Env, args: &[&str]) -> Value {
    let mut a = vec!["snapshot"];
    a.extend_from_slice(args);
    env.json(&a).pop().expect("snapshot JSON")
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every file and link below `dir`: relative path → (content or link
/// target, executable?).
fn listing(dir: &Path) -> std::collections::BTreeMap<String, (Vec<u8>, bool)> {
    let mut out = std::collections::BTreeMap::new();
    for e in walk(dir) {
        let rel = e.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        let m = std::fs::symlink_metadata(&e).unwrap();
        if m.file_type().is_symlink() {
            let t = std::fs::read_link(&e).unwrap();
            out.insert(rel, (t.to_string_lossy().as_bytes().to_vec(), false));
        } else if m.is_file() {
            out.insert(
                rel,
                (
                    std::fs::read(&e).unwrap(),
                    m.permissions().mode() & 0o111 != 0,
                ),
            );
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("train/img")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("train/a.csv"), data(400_000, 1, true)).unwrap();
    std::fs::write(root.join("train/img/x.bin"), data(300_000, 2, false)).unwrap();
    std::fs::write(root.join("README"), b"survey data\n").unwrap();
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("train/a.csv", root.join("latest.csv")).unwrap();
}

#[test]
fn checkout_recreates_empty_directories_and_drops_them_when_gone() {
    let env = Env::new();
    let src = env.path("survey");
    std::fs::create_dir_all(src.join("data")).unwrap();
    std::fs::write(src.join("data/x.csv"), data(10_000, 1, true)).unwrap();
    std::fs::create_dir_all(src.join("sha1collisiondetection")).unwrap();
    std::fs::create_dir_all(src.join("a/b/c")).unwrap();
    env.ok(&["dataset", "add", "survey", src.to_str().unwrap()]);
    let s1 = snap(&env, &["survey", "-m", "with empty dirs"]);
    let out = env.path("out");
    let to = out.to_str().unwrap();
    env.ok(&["checkout", s1["id"].as_str().unwrap(), "--to", to]);
    assert!(out.join("sha1collisiondetection").is_dir());
    assert!(out.join("a/b/c").is_dir());
    assert!(out.join("data/x.csv").is_file());
    // The next version drops one empty directory and keeps the other.
    std::fs::remove_dir(src.join("sha1collisiondetection")).unwrap();
    let s2 = snap(&env, &["survey", "-m", "one fewer", "--rescan"]);
    env.ok(&["checkout", s2["id"].as_str().unwrap(), "--to", to]);
    assert!(!out.join("sha1collisiondetection").exists());
    assert!(out.join("a/b/c").is_dir());
    // A directory that holds something of the user's is left alone.
    std::fs::create_dir_all(src.join("keep")).unwrap();
    let s3 = snap(&env, &["survey", "-m", "keep", "--rescan"]);
    env.ok(&["checkout", s3["id"].as_str().unwrap(), "--to", to]);
    std::fs::write(out.join("keep/mine.txt"), b"mine").unwrap();
    env.ok(&["checkout", s2["id"].as_str().unwrap(), "--to", to]);
    assert_eq!(std::fs::read(out.join("keep/mine.txt")).unwrap(), b"mine");
}

#[test]
fn snapshot_log_diff_tag_checkout_lineage() {
    let env = Env::new();
    let src = env.path("survey");
    make_tree(&src);
    env.ok(&["dataset", "add", "survey", src.to_str().unwrap()]);
    let s1 = snap(&env, &["survey", "-m", "raw import"]);
    let id1 = s1["id"].as_str().unwrap().to_string();
    assert_eq!(s1["files"], 5, "{s1}");
    assert_eq!(s1["unchanged"], false);
    // Nothing changed: no new snapshot.
    let again = snap(&env, &["survey"]);
    assert_eq!(
        (again["id"].as_str(), &again["unchanged"]),
        (Some(&id1[..]), &Value::Bool(true))
    );

    // Edit, add, delete, rename.
    let mut a = std::fs::read(src.join("train/a.csv")).unwrap();
    a[1000..1010].copy_from_slice(b"EDITEDEDIT");
    std::fs::write(src.join("train/a.csv"), &a).unwrap();
    std::fs::write(src.join("train/b.csv"), data(50_000, 3, true)).unwrap();
    std::fs::remove_file(src.join("README")).unwrap();
    std::fs::rename(src.join("train/img/x.bin"), src.join("train/img/y.bin")).unwrap();
    let s2 = snap(&env, &["survey", "-m", "cleaned", "--meta", "cmd=clean.py"]);
    let id2 = s2["id"].as_str().unwrap().to_string();
    assert_eq!(s2["parents"][0].as_str(), Some(&id1[..]));
    assert_eq!(s2["meta"]["cmd"], "clean.py");

    let log = env.json(&["log", "survey"]).pop().unwrap();
    let ids: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&id2[..], &id1[..]]);

    let d = env.json(&["diff", "survey@~1", "survey"]).pop().unwrap();
    let mut changes: Vec<(String, String)> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().into(),
                c["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    changes.sort();
    let expect: Vec<(String, String)> = [
        ("README", "removed"),
        ("train/a.csv", "modified"),
        ("train/b.csv", "added"),
        ("train/img/x.bin", "removed"),
        ("train/img/y.bin", "added"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(changes, expect, "{d}");
    let share = d["shared_fraction"].as_f64().unwrap();
    assert!(share > 0.8 && share < 1.0, "most chunks are shared: {d}");

    // Tags and id prefixes resolve.
    env.ok(&["tag", "survey", "v1", &id1[..8]]);
    let tagged = env.json(&["log", "survey@v1", "-n", "1"]).pop().unwrap();
    assert_eq!(tagged[0]["id"].as_str(), Some(&id1[..]));
    assert_eq!(tagged[0]["tags"][0], "v1");
    let moved = env.run(&["tag", "survey", "v1", &id2]);
    assert!(!moved.status.success(), "moving a tag needs --force");
    assert!(String::from_utf8_lossy(&moved.stderr).contains("--force"));

    // Checkout v1 somewhere else: byte-exact, links and modes kept.
    let out = env.path("out");
    let v1_dir = env.path("v1-copy");
    make_tree(&v1_dir);
    env.ok(&["checkout", "survey@v1", "--to", out.to_str().unwrap()]);
    assert_eq!(listing(&out), listing(&v1_dir));

    // Then v2 over it: the removed files go, the rest is updated.
    env.ok(&["checkout", "survey", "--to", out.to_str().unwrap()]);
    assert_eq!(listing(&out), listing(&src));

    // A local change is not overwritten without --force; nothing written.
    std::fs::write(out.join("train/b.csv"), b"mine").unwrap();
    let r = env.run(&["checkout", "survey@v1", "--to", out.to_str().unwrap()]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("local changes") && err.contains("train/b.csv"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("train/b.csv")).unwrap(), b"mine");
    assert!(out.join("train/img/y.bin").exists(), "nothing was written");
    let r = env.json(&[
        "checkout",
        "survey@v1",
        "--to",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(r[0]["kept"][0], "train/b.csv", "{:?}", r);
    assert_eq!(
        std::fs::read(out.join("train/a.csv")).unwrap(),
        std::fs::read(v1_dir.join("train/a.csv")).unwrap()
    );

    // Never through a symbolic link out of DIR.
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let out2 = env.path("out2");
    std::fs::create_dir_all(&out2).unwrap();
    std::os::unix::fs::symlink(&outside, out2.join("train")).unwrap();
    let r = env.run(&["checkout", "survey", "--to", out2.to_str().unwrap()]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("symbolic link"));
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );

    // --include selects paths.
    let out3 = env.path("out3");
    env.ok(&[
        "checkout",
        "survey",
        "--to",
        out3.to_str().unwrap(),
        "--include",
        "train/img",
    ]);
    assert_eq!(
        listing(&out3).keys().collect::<Vec<_>>(),
        ["train/img/y.bin"]
    );

    // Lineage: a dataset derived from survey@v1 and survey's latest.
    let feat = env.path("features");
    std::fs::create_dir_all(&feat).unwrap();
    std::fs::write(feat.join("f.parquet"), data(10_000, 9, false)).unwrap();
    env.ok(&["dataset", "add", "features", feat.to_str().unwrap()]);
    let f1 = snap(
        &env,
        &[
            "features",
            "--from",
            "survey@v1",
            "--from",
            "survey",
            "-m",
            "feat",
        ],
    );
    let f1id = f1["id"].as_str().unwrap();
    let up = env.json(&["lineage", "features"]).pop().unwrap();
    let mut ups: Vec<&str> = up["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["to"].as_str().unwrap())
        .collect();
    ups.sort();
    let mut want = vec![&id1[..], &id2[..]];
    want.sort();
    assert_eq!(ups, want, "{up}");
    let down = env.json(&["lineage", "survey@v1", "--down"]).pop().unwrap();
    assert_eq!(down["links"][0]["to"].as_str(), Some(f1id), "{down}");
    assert_eq!(down["links"][0]["snapshot"]["dataset"], "features");

    // Bad specs say what to do.
    let r = env.run(&["log", "survey@nosuchtag"]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("hoard log survey"));
    let r = env.run(&["dataset", "add", "../evil", src.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("not a valid name"));

    // The store verifies, and a reindex from packs alone keeps the history.
    env.ok(&["verify", "--read-data"]);
    env.ok(&["reindex"]);
    let log = env.json(&["log", "survey"]).pop().unwrap();
    assert_eq!(log.as_array().unwrap().len(), 2);
}

/// Snapshots of the watched dataset `w` (the watcher's view) and the
/// unwatched `t` (a fresh scan) of one directory agree.
fn watcher_agrees(env: &Env) -> bool {
    let w = snap(env, &["w"]);
    let t = snap(env, &["t"]);
    w["tree"] == t["tree"]
}

#[test]
fn watcher_follows_every_kind_of_change() {
    let env = Env::new();
    let dir = env.path("watched");
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::write(dir.join("a/b/one.txt"), b"one").unwrap();
    let d = dir.to_str().unwrap();
    std::fs::create_dir_all(&env.home).unwrap();
    std::fs::write(env.home.join("config.toml"), "[watch]\ndebounce_ms = 200\n").unwrap();
    env.ok(&["dataset", "add", "w", d, "--watch"]);
    env.ok(&["dataset", "add", "t", d]);
    let limit = Duration::from_secs(60);
    wait_until("the initial scan", limit, || watcher_agrees(&env));

    // Create, modify, delete.
    std::fs::write(dir.join("new.csv"), data(200_000, 5, true)).unwrap();
    wait_until("a created file", limit, || watcher_agrees(&env));
    std::fs::write(dir.join("a/b/one.txt"), b"one, changed").unwrap();
    wait_until("a modified file", limit, || watcher_agrees(&env));
    std::fs::remove_file(dir.join("new.csv")).unwrap();
    wait_until("a deleted file", limit, || watcher_agrees(&env));
    // Rename a file, move a directory.
    std::fs::rename(dir.join("a/b/one.txt"), dir.join("a/uno.txt")).unwrap();
    std::fs::rename(dir.join("a/b"), dir.join("moved")).unwrap();
    wait_until("renames and a moved directory", limit, || {
        watcher_agrees(&env)
    });
    // An editor-style save: write a temporary file, rename it over.
    std::fs::write(dir.join("a/.uno.txt.swp"), b"saved by an editor").unwrap();
    std::fs::rename(dir.join("a/.uno.txt.swp"), dir.join("a/uno.txt")).unwrap();
    wait_until("an editor-style save", limit, || watcher_agrees(&env));
    let st = env.json(&["status", "w"]).pop().unwrap();
    assert_eq!(st["pending"], 0, "{st}");

    // A burst of 10k files.
    std::fs::create_dir_all(dir.join("burst")).unwrap();
    for i in 0..10_000 {
        std::fs::write(dir.join(format!("burst/f{i:05}")), format!("file {i}\n")).unwrap();
    }
    wait_until("a burst of 10k files", Duration::from_secs(180), || {
        watcher_agrees(&env)
    });
    let w = snap(&env, &["w"]);
    assert_eq!(w["files"], 10_001, "{w}"); // the burst and a/uno.txt

    // An unchanged watched dataset answers from memory: `status` shows no change.
    let st = env.json(&["status", "w"]).pop().unwrap();
    assert_eq!(st["changes"].as_array().unwrap().len(), 0, "{st}");
    let list = env.json(&["dataset", "list"]).pop().unwrap();
    let w = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "w")
        .unwrap()
        .clone();
    assert_eq!(
        (w["watch"].clone(), w["changed"].clone()),
        (Value::Bool(true), Value::Bool(false)),
        "{w}"
    );

    // Regression: reading files is not a change (inotify reports every
    // open; our own scans open every directory). Once quiet, it stays quiet.
    let scans = |env: &Env| {
        let l = env.json(&["dataset", "list"]).pop().unwrap();
        l.as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "w")
            .unwrap()["scans"]
            .as_u64()
            .unwrap()
    };
    snap(&env, &["t"]); // an unwatched snapshot walks the whole directory
    std::thread::sleep(Duration::from_secs(2));
    let before = scans(&env);
    for _ in 0..3 {
        let _ = std::fs::read(dir.join("a/uno.txt")).unwrap();
        let _ = std::fs::read_dir(dir.join("burst")).unwrap().count();
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(scans(&env), before, "reading files made the watcher scan");
}

#[test]
fn lost_events_trigger_a_rescan() {
    // A tiny inotify queue makes the kernel drop events (IN_Q_OVERFLOW); the
    // limit is read when the watcher starts, so it is restored right after.
    let knob = "/proc/sys/fs/inotify/max_queued_events";
    let old = std::fs::read_to_string(knob).expect("inotify queue limit is readable");
    let env = Env::new();
    let dir = env.path("watched");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&env.home).unwrap();
    std::fs::write(env.home.join("config.toml"), "[watch]\ndebounce_ms = 500\n").unwrap();
    let d = dir.to_str().unwrap();
    env.ok(&["daemon", "start"]);
    std::fs::write(knob, "16").expect("setting the inotify queue limit needs root");
    let added = env.run(&["dataset", "add", "w", d, "--watch"]);
    std::fs::write(knob, old.trim()).expect("restore the inotify queue limit");
    assert!(added.status.success());
    env.ok(&["dataset", "add", "t", d]);
    wait_until("the initial scan", Duration::from_secs(60), || {
        watcher_agrees(&env)
    });
    for i in 0..2_000 {
        std::fs::write(dir.join(format!("f{i:04}")), format!("{i}")).unwrap();
    }
    wait_until(
        "the rescan after lost events",
        Duration::from_secs(120),
        || watcher_agrees(&env),
    );
    let log = std::fs::read_to_string(env.home.join("hoardd.log")).unwrap_or_default();
    assert!(
        log.contains("events were lost; rescanning"),
        "{}",
        env.log_tail(30)
    );
    assert_eq!(snap(&env, &["w"])["files"], 2_000);
}

// ---- across daemons ------------------------------------------------------------

#[test]
fn clone_include_fetches_only_the_selected_files() {
    let hub = Env::new();
    let url = hub.start_hub();
    let token = hub.token(true);
    let a = Env::new();
    let src = a.path("survey");
    std::fs::create_dir_all(src.join("train")).unwrap();
    std::fs::create_dir_all(src.join("test")).unwrap();
    for i in 0..3 {
        std::fs::write(
            src.join(format!("train/t{i}.bin")),
            data(1_000_000, 10 + i, false),
        )
        .unwrap();
    }
    for i in 0..2 {
        std::fs::write(
            src.join(format!("test/s{i}.bin")),
            data(1_000_000, 20 + i, false),
        )
        .unwrap();
    }
    a.ok(&["remote", "add", "origin", &url, "--token", &token]);
    a.ok(&["dataset", "add", "survey", src.to_str().unwrap()]);
    let s1 = snap(&a, &["survey", "-m", "v1"]);
    a.ok(&["tag", "survey", "v1"]);
    let pushed = a.json(&["dataset", "push", "survey"]).pop().unwrap();
    assert_eq!(pushed["snapshot"], s1["id"], "{pushed}");
    assert_eq!(pushed["files"], 5, "{pushed}");
    // The hub holds the history and the tag.
    let hub_log = hub.json(&["log", "survey@v1"]).pop().unwrap();
    assert_eq!(hub_log[0]["id"], s1["id"]);

    // A cluster node clones v1, only train/.
    let b = Env::new();
    b.ok(&["remote", "add", "origin", &url, "--token", &token]);
    let dir = b.path("node");
    let c = b
        .json(&[
            "clone",
            "origin/survey@v1",
            dir.to_str().unwrap(),
            "--include",
            "train/**",
        ])
        .pop()
        .unwrap();
    assert_eq!(c["snapshot"], s1["id"], "{c}");
    assert_eq!(c["files"], 3, "only the three train files travel: {c}");
    let bytes = c["bytes"].as_u64().unwrap();
    assert!(
        (3_000_000..4_000_000).contains(&bytes),
        "about the train files' bytes travel, not the test files': {c}"
    );
    assert_eq!(
        listing(&dir).keys().cloned().collect::<Vec<_>>(),
        ["train/t0.bin", "train/t1.bin", "train/t2.bin"]
    );
    for i in 0..3 {
        let f = format!("train/t{i}.bin");
        assert_eq!(
            std::fs::read(dir.join(&f)).unwrap(),
            std::fs::read(src.join(&f)).unwrap()
        );
    }
    // Cloning again moves nothing.
    let again = b
        .json(&["clone", "origin/survey@v1", "--include", "train/**"])
        .pop()
        .unwrap();
    assert_eq!(
        (again["files"].as_u64(), again["bytes"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );

    // v2 changes one train file a little: the node's next clone moves
    // about the changed chunks.
    let mut t0 = std::fs::read(src.join("train/t0.bin")).unwrap();
    t0[500_000..500_100].fill(7);
    std::fs::write(src.join("train/t0.bin"), &t0).unwrap();
    let s2 = snap(&a, &["survey", "-m", "v2"]);
    a.ok(&["dataset", "push", "survey"]);
    let c2 = b
        .json(&["clone", "origin/survey", "--include", "train/**"])
        .pop()
        .unwrap();
    assert_eq!(c2["snapshot"], s2["id"]);
    assert!(c2["bytes"].as_u64().unwrap() < 300_000, "{c2}");
    b.ok(&[
        "checkout",
        "survey",
        "--to",
        dir.to_str().unwrap(),
        "--include",
        "train/**",
    ]);
    assert_eq!(std::fs::read(dir.join("train/t0.bin")).unwrap(), t0);

    // A checkout of paths whose content was not fetched says what to do.
    let r = b.run(&[
        "checkout",
        "survey",
        "--to",
        b.path("all").to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("not in this store"));

    // A diverged history is not pushed over the hub's without --force.
    let other = Env::new();
    other.ok(&["remote", "add", "origin", &url, "--token", &token]);
    let osrc = other.path("survey");
    std::fs::create_dir_all(&osrc).unwrap();
    std::fs::write(osrc.join("x"), b"another history").unwrap();
    other.ok(&["dataset", "add", "survey", osrc.to_str().unwrap()]);
    snap(&other, &["survey"]);
    let r = other.run(&["dataset", "push", "survey"]);
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("not a fast-forward"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(
        hub.json(&["log", "survey", "-n", "1"]).pop().unwrap()[0]["id"],
        s2["id"]
    );
    hub.ok(&["verify"]);
}

/// Registers `src` as dataset survey of `env`, pushed automatically to the
/// hub at `url` (remote origin).
fn auto_synced(env: &Env, src: &Path, url: &str, token: &str) {
    env.ok(&["remote", "add", "origin", url, "--token", token]);
    env.ok(&[
        "dataset",
        "add",
        "survey",
        src.to_str().unwrap(),
        "--remote",
        "origin",
    ]);
}

#[test]
fn auto_sync_pushes_new_snapshots_and_retries() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let hub = Env::new();
    std::fs::create_dir_all(&hub.home).unwrap();
    let a = Env::new();
    let src = a.path("survey");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data.csv"), data(300_000, 4, true)).unwrap();
    // The hub is not up yet: a token made on it later is written now.
    hub.start_hub_at(port);
    let token = hub.token(true);
    hub.ok(&["daemon", "stop"]);
    auto_synced(&a, &src, &url, &token);
    let s1 = snap(&a, &["survey", "-m", "first"]);
    let state = |a: &Env| a.json(&["dataset", "list"]).pop().unwrap()[0]["sync"].clone();
    wait_until(
        "the push to fail while the hub is down",
        Duration::from_secs(30),
        || state(&a)["state"] == "failing",
    );
    let s = state(&a);
    assert!(s["error"].as_str().unwrap().contains("127.0.0.1"), "{s}");
    hub.start_hub_at(port);
    wait_until("the retry to push", Duration::from_secs(90), || {
        state(&a)["state"] == "synced"
    });
    assert_eq!(
        hub.json(&["log", "survey", "-n", "1"]).pop().unwrap()[0]["id"],
        s1["id"]
    );
    // A new snapshot pushes itself.
    std::fs::write(src.join("more.csv"), data(100_000, 5, true)).unwrap();
    let s2 = snap(&a, &["survey", "-m", "second"]);
    wait_until(
        "the new snapshot on the hub",
        Duration::from_secs(60),
        || hub.json(&["log", "survey", "-n", "1"]).pop().unwrap()[0]["id"] == s2["id"],
    );
    let on_hub = hub.path("copy");
    hub.ok(&["checkout", "survey", "--to", on_hub.to_str().unwrap()]);
    assert_eq!(listing(&on_hub), listing(&src));
}

#[test]
fn auto_sync_reports_a_conflict_with_its_resolution_and_does_not_retry_it() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let hub = Env::new();
    std::fs::create_dir_all(&hub.home).unwrap();
    hub.start_hub_at(port);
    let token = hub.token(true);
    // Another store's history is on the hub first.
    let other = Env::new();
    other.ok(&["remote", "add", "origin", &url, "--token", &token]);
    let osrc = other.path("survey");
    std::fs::create_dir_all(&osrc).unwrap();
    std::fs::write(osrc.join("x.csv"), data(50_000, 7, true)).unwrap();
    other.ok(&["dataset", "add", "survey", osrc.to_str().unwrap()]);
    let theirs = snap(&other, &["survey", "-m", "theirs"]);
    other.ok(&["dataset", "push", "survey"]);
    // This store's own history of the same dataset syncs automatically.
    let a = Env::new();
    let src = a.path("survey");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data.csv"), data(80_000, 8, true)).unwrap();
    auto_synced(&a, &src, &url, &token);
    let ours = snap(&a, &["survey", "-m", "ours"]);
    let info = |a: &Env| a.json(&["dataset", "list"]).pop().unwrap()[0].clone();
    wait_until(
        "the conflict to be reported",
        Duration::from_secs(30),
        || info(&a)["sync"]["state"] == "failing",
    );
    let s = info(&a)["sync"].clone();
    assert_eq!(s["kind"], "conflict", "{s}");
    let error = s["error"].as_str().unwrap();
    assert!(error.contains("not a fast-forward"), "{s}");
    assert!(
        error.contains("hoard dataset push survey origin --force"),
        "the message names the command that resolves it: {s}"
    );
    assert_eq!(s["retry_in_secs"], 0, "a conflict is not retried: {s}");
    let attempts = s["attempts"].as_u64().unwrap();
    assert_eq!(attempts, 1, "{s}");
    // Transient failures are retried after 2, 4, 8 s: a conflict is not.
    std::thread::sleep(Duration::from_secs(7));
    let s = info(&a)["sync"].clone();
    assert_eq!(
        s["attempts"].as_u64(),
        Some(attempts),
        "retried a conflict: {s}"
    );
    assert_eq!(s["state"], "failing", "{s}");
    let line = a.ok(&["dataset", "list"]);
    assert!(line.contains("failing: conflict"), "{line}");
    // The hub still holds the other history.
    assert_eq!(
        hub.json(&["log", "survey", "-n", "1"]).pop().unwrap()[0]["id"],
        theirs["id"]
    );
    // Resolving it (keeping ours) clears the state.
    a.ok(&["dataset", "push", "survey", "--force"]);
    let s = info(&a)["sync"].clone();
    assert_eq!(s["state"], "synced", "{s}");
    assert_eq!(
        hub.json(&["log", "survey", "-n", "1"]).pop().unwrap()[0]["id"],
        ours["id"]
    );
}

/// A hub holding one 10-byte file, a hostile peer connected to it with a
/// write token, and that file's id.
fn hub_and_double() -> (Env, double::Double, hoard_daemon::Id) {
    let hub = Env::new();
    let url = hub.start_hub();
    let token = hub.token(true);
    std::fs::write(hub.path("f.bin"), b"0123456789").unwrap();
    hub.ok(&["add", hub.path("f.bin").to_str().unwrap()]);
    let f = hoard_daemon::Id(*blake3::hash(b"0123456789").as_bytes());
    let d = double::Double::connect(&url, &token);
    (hub, d, f)
}

#[test]
fn hostile_trees_and_snapshots_are_refused() {
    use double::{entry, snapshot, tree};
    use hoard_daemon::objects::EntryKind::{Dir, File, Symlink};
    use hoard_daemon::Id;
    let (hub, mut d, f) = hub_and_double();

    let bad = [
        (tree(vec![entry(b"..", File, f, 10)]), "`.` or `..`"),
        (tree(vec![entry(b"a/b", File, f, 10)]), "`/`"),
        (tree(vec![entry(b"a\0b", File, f, 10)]), "NUL"),
        (
            tree(vec![entry(b"x", File, f, 10), entry(b"x", File, f, 10)]),
            "twice",
        ),
        (tree(vec![entry(b"x", File, f, 11)]), "records 11 bytes"),
        (
            tree(vec![entry(b"self", Dir, Id([7; 32]), 0)]),
            "did not send first",
        ),
        (
            tree(vec![entry(b"link", Symlink, f, 20 << 30)]),
            "byte target",
        ),
    ];
    let mut sent = Vec::new();
    for ((id, enc), why) in bad {
        let e = d.put(vec![(1, id.clone(), enc)]).expect_err(why);
        assert!(e.contains(why) && e.contains("refused"), "{why}: {e}");
        sent.push(id);
    }
    // Content that does not match its id.
    let (_, enc) = tree(vec![entry(b"ok", File, f, 10)]);
    let e = d.put(vec![(1, vec![9; 32], enc)]).unwrap_err();
    assert!(e.contains("does not match"), "{e}");
    // A snapshot whose tree was never sent, or whose counts lie.
    let (sid, senc) = snapshot(Id([5; 32]), 10, 1);
    assert!(d
        .put(vec![(2, sid.clone(), senc)])
        .unwrap_err()
        .contains("did not send"));
    sent.push(sid);
    let (tid, tenc) = tree(vec![entry(b"ok", File, f, 10)]);
    let (lie_id, lie) = snapshot(Id::from_slice(&tid).unwrap(), 10, 5);
    let e = d
        .put(vec![
            (1, tid.clone(), tenc.clone()),
            (2, lie_id.clone(), lie),
        ])
        .unwrap_err();
    assert!(e.contains("file count"), "{e}");
    sent.push(lie_id);
    sent.push(tid.clone());
    // Nothing of it was stored, and the refusals were counted.
    assert_eq!(d.has(sent), 0);
    let st: Value = serde_json::from_str(&hub.ok(&["daemon", "status", "--json"])).unwrap();
    assert!(st["peer_refused"].as_u64().unwrap() >= 10, "{st}");

    // A good tree and snapshot are taken; the ref moves by compare-and-swap.
    let (good, genc) = snapshot(Id::from_slice(&tid).unwrap(), 10, 1);
    d.put(vec![(1, tid.clone(), tenc), (2, good.clone(), genc)])
        .unwrap();
    let r = d
        .update_ref("datasets/survey", vec![], good.clone())
        .unwrap();
    assert!(r.ok, "{}", r.reason);
    let r = d
        .update_ref("datasets/survey", vec![], good.clone())
        .unwrap();
    assert!(!r.ok && r.reason.contains("moved"), "{}", r.reason);
    let e = d
        .update_ref("datasets/../x", vec![], good.clone())
        .unwrap_err();
    assert!(e.contains("not a ref name"), "{e}");
    let r = d
        .update_ref("datasets/survey", good.clone(), vec![3; 32])
        .unwrap();
    assert!(!r.ok && r.reason.contains("not here"), "{}", r.reason);
    // Deleting a ref needs force; a ref names only its own dataset's
    // snapshots, and only complete ones.
    let r = d
        .update_ref("datasets/survey", good.clone(), vec![])
        .unwrap();
    assert!(!r.ok && r.reason.contains("needs force"), "{}", r.reason);
    let r = d
        .update_ref("datasets/other", vec![], good.clone())
        .unwrap();
    assert!(
        !r.ok && r.reason.contains("not of \"other\""),
        "{}",
        r.reason
    );
    let lacking = Id(*blake3::hash(b"content the hub never got").as_bytes());
    let (t2, t2enc) = tree(vec![entry(b"gone", File, lacking, 25)]);
    let (s2, s2enc) = snapshot(Id::from_slice(&t2).unwrap(), 25, 1);
    d.put(vec![(1, t2.clone(), t2enc), (2, s2.clone(), s2enc)])
        .unwrap();
    let r = d.update_ref("tags/survey/v9", vec![], s2).unwrap();
    assert!(
        !r.ok && r.reason.contains("content is not here"),
        "{}",
        r.reason
    );
    hub.ok(&["verify", "--read-data"]);
    assert_eq!(
        hub.json(&["log", "survey"]).pop().unwrap()[0]["id"]
            .as_str()
            .unwrap(),
        hex(&good)
    );
}

#[test]
fn hostile_dags_and_deep_chains_are_refused_and_identical_subtrees_taken() {
    use double::{entry, snapshot, tree};
    use hoard_daemon::objects::EntryKind::{Dir, File};
    use hoard_daemon::Id;
    let (hub, mut d, f) = hub_and_double();
    // T0 = {f}, T(k+1) = {a: Tk, b: Tk}: k+1 small trees, 2^k files.
    let doubling = |levels: u32| {
        let mut objs = Vec::new();
        let (mut id, enc) = tree(vec![entry(b"f", File, f, 10)]);
        objs.push((1, id.clone(), enc));
        let mut size = 10u64;
        for _ in 0..levels {
            let sub = Id::from_slice(&id).unwrap();
            let (next, enc) = tree(vec![
                entry(b"a", Dir, sub, size),
                entry(b"b", Dir, sub, size),
            ]);
            objs.push((1, next.clone(), enc));
            id = next;
            size *= 2;
        }
        let (sid, senc) = snapshot(Id::from_slice(&id).unwrap(), size, 1 << levels);
        objs.push((2, sid.clone(), senc));
        (objs, sid)
    };
    // 62 objects of a few KB that expand to 2^60 files: refused, not walked.
    let (objs, sid) = doubling(60);
    let e = d.put(objs).unwrap_err();
    assert!(
        e.contains("expands to more than") && e.contains("refused"),
        "{e}"
    );
    assert_eq!(d.has(vec![sid]), 0);
    // A chain deeper than the walks follow: refused, the hub does not fall over.
    let mut objs = Vec::new();
    let (mut id, enc) = tree(vec![entry(b"f", File, f, 10)]);
    objs.push((1, id.clone(), enc));
    for _ in 0..1100 {
        let (next, enc) = tree(vec![entry(b"d", Dir, Id::from_slice(&id).unwrap(), 10)]);
        objs.push((1, next.clone(), enc));
        id = next;
    }
    let (cid, cenc) = snapshot(Id::from_slice(&id).unwrap(), 10, 1);
    objs.push((2, cid, cenc));
    let e = d.put(objs).unwrap_err();
    assert!(e.contains("directories deep"), "{e}");
    // Identical subtrees are legal: 4096 files named through 13 trees.
    let (objs, sid) = doubling(12);
    d.put(objs).unwrap();
    let r = d
        .update_ref("datasets/survey", vec![], sid.clone())
        .unwrap();
    assert!(r.ok, "{}", r.reason);
    let log = hub.json(&["log", "survey"]).pop().unwrap();
    assert_eq!(log[0]["files"], 4096, "{log}");
    hub.ok(&["verify"]);

    // Asking for one frame (or chunk) thousands of times gets it once.
    let big = data(200_000, 3, true);
    std::fs::write(hub.path("big.csv"), &big).unwrap();
    hub.ok(&["add", hub.path("big.csv").to_str().unwrap()]);
    let chunks = d.chunks_of(blake3::hash(&big).as_bytes().to_vec());
    assert!(chunks.len() > 1, "{}", chunks.len());
    let asked: Vec<Vec<u8>> = chunks.iter().cycle().take(4096).cloned().collect();
    let (frames, sent) = d.frames_and_chunks(asked);
    assert!(
        frames <= chunks.len(),
        "{frames} frames for {} chunks",
        chunks.len()
    );
    assert_eq!(sent, chunks.len());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
