//! End to end: the real `hoard` client against a real `hoardd` it starts.

mod common;
use common::*;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn daemon_starts_on_demand_with_a_private_socket_and_stops() {
    let env = Env::new();
    assert!(
        !env.run(&["daemon", "status"]).status.success(),
        "no daemon yet"
    );
    let stats = env.json(&["stats"]);
    assert_eq!(stats[0]["files"], 0);
    let mode = fs::metadata(env.home.join("hoardd.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let st = env.json(&["daemon", "status"]);
    assert_eq!(st[0]["running"], true);
    assert_eq!(st[0]["chunk_avg"], 32768);
    assert!(env.ok(&["daemon", "stop"]).contains("stopped"));
    assert!(!env.home.join("hoardd.sock").exists());
    assert_eq!(env.run(&["daemon", "status"]).status.code(), Some(3));
}

#[test]
fn add_cat_restore_stats_verify_reindex() {
    let env = Env::new();
    let dir = env.path("ds");
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    let files: Vec<(String, Vec<u8>)> = vec![
        ("ds/empty".into(), vec![]),
        ("ds/one".into(), b"x".to_vec()),
        ("ds/text.csv".into(), data(3 << 20, 1, true)),
        ("ds/sub/noise.bin".into(), data(2 << 20, 2, false)),
        ("ds/sub/deeper/copy.csv".into(), data(3 << 20, 1, true)),
    ];
    for (p, d) in &files {
        fs::write(env.path(p), d).unwrap();
    }
    let out = env.ok(&["add", "ds"]);
    // One `blake3:<hex>  <path>` line per file, equal to b3sum's, then a summary.
    for (p, d) in &files {
        let line = format!("{}  {}", b3(d), p);
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
    assert!(out.contains("added 5 files"), "{out}");
    assert!(out.contains("dedup saved"), "{out}");
    if let Ok(b3sum) = std::process::Command::new("b3sum")
        .arg(env.path("ds/text.csv"))
        .output()
    {
        let hex = String::from_utf8_lossy(&b3sum.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        assert_eq!(format!("blake3:{hex}"), b3(&files[2].1));
    }

    for (_, d) in &files {
        let o = env.hoard().args(["cat", &b3(d)]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.stdout, *d);
    }
    // A range read.
    let o = env
        .hoard()
        .args([
            "cat",
            &b3(&files[3].1),
            "--offset",
            "1000000",
            "--length",
            "12345",
        ])
        .output()
        .unwrap();
    assert_eq!(o.stdout, files[3].1[1_000_000..1_012_345]);

    let dest = env.path("restored.bin");
    env.ok(&["restore", &b3(&files[3].1), dest.to_str().unwrap()]);
    assert_eq!(fs::read(&dest).unwrap(), files[3].1);
    assert!(fs::read_dir(env.dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("hoard-")));

    let s = &env.json(&["stats"])[0];
    let logical: u64 = files.iter().map(|f| f.1.len() as u64).sum();
    assert_eq!(s["logical_bytes"], logical);
    assert_eq!(s["files"], 4, "two files share content");
    let unique = s["unique_bytes"].as_u64().unwrap();
    assert!(
        unique < logical - (3 << 20) + 100_000,
        "the copy was deduplicated: {s}"
    );
    assert!(
        s["stored_bytes"].as_u64().unwrap() < unique,
        "text compressed: {s}"
    );
    assert!(s["packs"].as_u64().unwrap() >= 1);

    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v.last().unwrap()["problems"], 0);

    let r = env.json(&["reindex"]);
    assert_eq!(r[0]["files"], 4);
    let s2 = &env.json(&["stats"])[0];
    for k in ["unique_bytes", "stored_bytes", "chunks", "files", "packs"] {
        assert_eq!(s[k], s2[k], "{k} after reindex");
    }
    for (_, d) in &files {
        assert_eq!(
            env.hoard().args(["cat", &b3(d)]).output().unwrap().stdout,
            *d
        );
    }
}

#[test]
fn json_add_and_stat_cache() {
    let env = Env::new();
    let f = env.path("big.csv");
    fs::write(&f, data(5 << 20, 7, true)).unwrap();
    age(&f);
    let first = env.json(&["add", "big.csv"]);
    assert_eq!(first[0]["type"], "file");
    assert_eq!(first[0]["path"], "big.csv");
    assert_eq!(first[0]["size"], 5 << 20);
    assert_eq!(first[0]["unchanged"], false);
    let sum = first.last().unwrap();
    assert_eq!(sum["type"], "summary");
    assert!(sum["new_chunks"].as_u64().unwrap() > 0);
    let again = env.json(&["add", "big.csv"]);
    assert_eq!(
        again[0]["unchanged"], true,
        "stat cache hit expected: {again:?}"
    );
    assert_eq!(again.last().unwrap()["new_chunks"], 0);
    // Touching the content makes it a miss again.
    let mut d = fs::read(&f).unwrap();
    d[100] ^= 1;
    fs::write(&f, &d).unwrap();
    let third = env.json(&["add", "big.csv"]);
    assert_eq!(third[0]["unchanged"], false);
    assert_eq!(third[0]["oid"], b3(&d));
}

#[test]
fn bad_input_gets_clear_errors() {
    let env = Env::new();
    for bad in [
        "nope",
        "blake3:123",
        "blake3:AF1349B9F5F9A1A6A0404DEA36DCC9499BCB25C9ADC112B7CC9A93CAE41F3262",
    ] {
        let o = env.run(&["cat", bad]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("malformed object id"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let absent = "blake3:0000000000000000000000000000000000000000000000000000000000000000";
    let o = env.run(&["cat", absent]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not in this store"));
    let o = env.run(&["add", "does-not-exist"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does-not-exist: cannot access"));
    let o = env.run(&["restore", absent, env.dir.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"));
}

#[test]
fn flipped_byte_is_named_by_verify_and_fails_cat() {
    let env = Env::new();
    let d = data(3 << 20, 3, true);
    fs::write(env.path("f"), &d).unwrap();
    env.ok(&["add", "f"]);
    env.ok(&["daemon", "stop"]);
    // The data pack (the largest; manifests go in a small pack of their own).
    let pack = env
        .packs()
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();
    let pack_id = pack.file_stem().unwrap().to_string_lossy().to_string();

    let o = env.run(&["verify", "--read-data"]);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&pack_id), "verify must name the pack:\n{out}");
    assert!(
        out.lines().any(|l| l.starts_with("chunk ")),
        "verify must name the chunk:\n{out}"
    );
    assert!(
        out.contains(&format!("file {}", b3(&d))),
        "and the file it damages:\n{out}"
    );

    let o = env.run(&["cat", &b3(&d)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("corrupt") && err.contains(&pack_id) && err.contains("chunk"),
        "{err}"
    );
}

#[test]
fn second_daemon_is_refused_and_stale_socket_is_recovered() {
    let env = Env::new();
    env.ok(&["stats"]);
    let o = env.hoardd().arg("run").output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already serving"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    env.kill_daemon();
    assert!(
        env.home.join("hoardd.sock").exists(),
        "kill -9 leaves the socket behind"
    );
    // The next command notices nobody listens, starts a daemon, which removes it.
    env.ok(&["stats"]);
    assert!(env.daemon_pid().is_some());
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let env = Env::new();
    env.ok(&["stats"]);
    let pid = env.daemon_pid().unwrap();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_gone(pid);
    assert!(!env.home.join("hoardd.sock").exists());
    assert!(fs::read_to_string(env.home.join("hoardd.log"))
        .unwrap()
        .contains("hoardd stopped"));
}

/// What an add interrupted by a signal to the daemon left behind.
struct Interrupted {
    contents: std::collections::HashMap<String, Vec<u8>>,
    /// (path, oid) of every file the client saw acknowledged.
    acked: Vec<(String, String)>,
    summary: Option<serde_json::Value>,
    status: std::process::ExitStatus,
}

/// Starts `hoard add many --json` over 40 files of 16 MiB and sends `signal`
/// to the daemon once `after` files are acknowledged; waits for both to end.
fn interrupted_add(env: &Env, seed: u64, signal: i32, after: usize) -> Interrupted {
    let dir = env.path("many");
    fs::create_dir_all(&dir).unwrap();
    let mut contents = std::collections::HashMap::new();
    for i in 0..40 {
        let d = data(16 << 20, seed + i, i % 2 == 0);
        contents.insert(format!("many/f{i:02}"), d.clone());
        fs::write(dir.join(format!("f{i:02}")), d).unwrap();
    }
    env.ok(&["daemon", "start"]);
    let pid = env.daemon_pid().unwrap();
    let mut child = env
        .hoard()
        .args(["add", "many", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut summary = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["type"] == "file" {
            acked.push((
                v["path"].as_str().unwrap().to_string(),
                v["oid"].as_str().unwrap().to_string(),
            ));
            if acked.len() == after {
                unsafe { libc::kill(pid, signal) };
            }
        } else if v["type"] == "summary" {
            summary = Some(v);
        }
    }
    let status = child.wait().unwrap();
    assert!(
        wait_gone_for(pid, Duration::from_secs(30)),
        "daemon must exit after signal {signal}"
    );
    assert!(
        acked.len() >= after && acked.len() < 40,
        "the signal must land mid-add ({} acked)",
        acked.len()
    );
    Interrupted {
        contents,
        acked,
        summary,
        status,
    }
}

/// The store verifies and every acknowledged file restores byte-exact.
fn assert_acknowledged_files_intact(env: &Env, run: &Interrupted) {
    let v = env.json(&["verify", "--read-data"]);
    assert_eq!(v.last().unwrap()["problems"], 0, "{v:?}");
    for (path, oid) in &run.acked {
        let o = env.hoard().args(["cat", oid]).output().unwrap();
        assert!(
            o.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.stdout == run.contents[path],
            "{path} restored differently"
        );
    }
}

/// kill -9 the daemon in the middle of a large add; every file acknowledged
/// before the kill restores byte-exact and the store verifies.
#[test]
fn kill_9_mid_add_loses_nothing_acknowledged() {
    let env = Env::new();
    let run = interrupted_add(&env, 100, libc::SIGKILL, 3);
    assert_acknowledged_files_intact(&env, &run);
    // And the add can simply be re-run.
    let out = env.ok(&["add", "many"]);
    assert!(out.contains("added 40 files"), "{out}");
}

/// SIGTERM in the middle of an add: the daemon commits what it finished,
/// abandons the rest cleanly, and exits; the store verifies and every file
/// reported to the client restores.
#[test]
fn sigterm_mid_add_commits_finished_files_and_exits() {
    let env = Env::new();
    let run = interrupted_add(&env, 500, libc::SIGTERM, 1);
    // The add ends with a summary that counts what was stored, and fails
    // (non-zero) because not everything made it.
    let summary = run.summary.as_ref().expect("a summary even when cut short");
    assert_eq!(summary["files"].as_u64().unwrap() as usize, run.acked.len());
    assert!(!run.status.success());
    let log = fs::read_to_string(env.home.join("hoardd.log")).unwrap();
    assert!(
        log.contains("SIGTERM") && log.contains("hoardd stopped"),
        "{log}"
    );
    assert_acknowledged_files_intact(&env, &run);
}

#[test]
fn a_daemon_started_by_a_client_keeps_none_of_its_pipes() {
    // A git hook's `hoard` inherits git's filter pipes; the daemon it starts
    // must not hold them, or git waits for ever (found by tests/crash.rs).
    let env = Env::new();
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (r, w) = (fds[0], fds[1]);
    // Inheritable, like the pipes git leaves open in a hook.
    let o = env.run(&["stats"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pid = env.daemon_pid().expect("the daemon started");
    unsafe { libc::close(w) };
    let mut p = libc::pollfd {
        fd: r,
        events: libc::POLLIN,
        revents: 0,
    };
    let ready = unsafe { libc::poll(&mut p, 1, 10_000) };
    let mut b = [0u8; 1];
    let n = if ready > 0 {
        unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) }
    } else {
        -1
    };
    unsafe { libc::close(r) };
    assert_eq!(
        n, 0,
        "the pipe's write end is still open 10 s after the client exited (hoardd {pid} holds it)"
    );
}
