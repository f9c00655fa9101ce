//! Prune and repair end to end, with the real binaries: retention over a
//! dataset's history, git repositories' roots, a hub's prune with an admin
//! token, kills at every phase boundary, writers running during a prune,
//! and damaged packs repaired from a hub.

mod common;

use common::{data, Env};
use serde_json::Value;
use std::path::Path;

/// Writes version `v` of the dataset in `dir`: a file new in every version
/// (3 MiB, incompressible), one that grows, one that never changes.
fn version(dir: &Path, v: u64) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("big.bin"), data(3 << 20, 100 + v, false)).unwrap();
    let mut grow = data(200_000, 7, true);
    for i in 0..v {
        grow.extend_from_slice(&data(20_000, 1_000 + i, true));
    }
    std::fs::write(dir.join("sub/grow.csv"), grow).unwrap();
    std::fs::write(dir.join("same.txt"), data(50_000, 9, true)).unwrap();
}

fn snap(env: &Env, name: &str, msg: &str) -> String {
    let v = env
        .json(&["snapshot", name, "-m", msg, "--rescan"])
        .pop()
        .expect("snapshot JSON");
    v["id"].as_str().expect("id").to_string()
}

fn stats(env: &Env) -> Value {
    env.json(&["stats"]).pop().expect("stats JSON")
}

fn prune(env: &Env, args: &[&str]) -> Value {
    let mut a = vec!["prune"];
    a.extend_from_slice(args);
    env.json(&a).pop().expect("prune JSON")
}

fn verify_clean(env: &Env) {
    let out = env.run(&["verify", "--read-data"]);
    assert!(
        out.status.success(),
        "verify failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks snapshot `id` out into a fresh directory and compares it with
/// version `v` written afresh.
fn reads_back(env: &Env, id: &str, v: u64) {
    let out = env.path(&format!("check-{v}-{}", &id[7..15]));
    let want = env.path(&format!("want-{v}"));
    version(&want, v);
    env.ok(&["checkout", id, "--to", out.to_str().unwrap()]);
    for f in ["big.bin", "sub/grow.csv", "same.txt"] {
        assert!(
            std::fs::read(out.join(f)).unwrap() == std::fs::read(want.join(f)).unwrap(),
            "{f} of version {v} differs"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn prune_keeps_the_last_three_versions_byte_exact_and_reclaims_the_rest() {
    let env = Env::new();
    let src = env.path("ds");
    version(&src, 0);
    env.ok(&["dataset", "add", "ds", src.to_str().unwrap()]);
    let mut ids = Vec::new();
    for v in 0..10 {
        version(&src, v);
        ids.push(snap(&env, "ds", &format!("v{v}")));
    }
    let before = stats(&env)["stored_bytes"].as_u64().unwrap();
    // Within the grace period nothing goes.
    let dry = prune(&env, &["--keep-last", "3", "--dry-run"]);
    assert_eq!(dry["sweep"]["packs_deleted"], 0, "{dry}");
    let d = &dry["datasets"][0];
    assert_eq!(d["kept"].as_array().unwrap().len(), 3, "{dry}");
    assert_eq!(d["removed"].as_array().unwrap().len(), 7, "{dry}");
    let rep = prune(&env, &["--keep-last", "3", "--grace", "0s"]);
    let after = stats(&env)["stored_bytes"].as_u64().unwrap();
    assert_eq!(rep["sweep"]["stored_after"].as_u64(), Some(after), "{rep}");
    verify_clean(&env);
    for v in 7..10 {
        reads_back(&env, &ids[v as usize], v);
    }
    for id in &ids[..7] {
        let o = env.run(&["checkout", id, "--to", env.path("gone").to_str().unwrap()]);
        assert!(!o.status.success(), "a pruned snapshot still checks out");
    }
    let log = env.json(&["log", "ds"]).pop().unwrap();
    assert_eq!(log.as_array().unwrap().len(), 3, "{log}");
    // A store that only ever held those three versions.
    let fresh = Env::new();
    let fsrc = fresh.path("ds");
    version(&fsrc, 7);
    fresh.ok(&["dataset", "add", "ds", fsrc.to_str().unwrap()]);
    for v in 7..10 {
        version(&fsrc, v);
        snap(&fresh, "ds", &format!("v{v}"));
    }
    let fresh_bytes = stats(&fresh)["stored_bytes"].as_u64().unwrap();
    eprintln!(
        "10 versions {before} B; pruned to 3: {after} B; a store of only those 3: {fresh_bytes} B ({:.3}x)",
        after as f64 / fresh_bytes as f64
    );
    assert!(
        after as f64 <= 1.3 * fresh_bytes as f64,
        "pruned store {after} bytes vs fresh {fresh_bytes} (before {before})"
    );
    // A second prune finds nothing more to do, and the store still grows.
    let again = prune(&env, &["--keep-last", "3", "--grace", "0s"]);
    assert_eq!(again["sweep"]["chunks_removed"], 0, "{again}");
    version(&src, 10);
    let id10 = snap(&env, "ds", "v10");
    reads_back(&env, &id10, 10);
    verify_clean(&env);
}

/// A dataset `ds` of versions 0..n in `env`; returns the snapshot ids.
fn history(env: &Env, n: u64) -> Vec<String> {
    let src = env.path("ds");
    version(&src, 0);
    env.ok(&["dataset", "add", "ds", src.to_str().unwrap()]);
    (0..n)
        .map(|v| {
            version(&src, v);
            snap(env, "ds", &format!("v{v}"))
        })
        .collect()
}

/// Runs `hoard ARGS` with extra environment (reaching a daemon it starts).
fn run_with(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut c = env.hoard();
    c.args(args)
        .envs(vars.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    common::wait_output(
        c.spawn().expect("spawn hoard"),
        std::time::Duration::from_secs(300),
        &format!("hoard {args:?}"),
    )
}

#[test]
fn a_kill_at_every_phase_boundary_leaves_a_store_that_verifies_and_keeps_every_kept_version() {
    for (i, phase) in ["marked", "written", "indexed", "deleting"]
        .iter()
        .enumerate()
    {
        let env = Env::new();
        let ids = history(&env, 6);
        env.kill_daemon();
        let o = run_with(
            &env,
            &[("HOARD_TEST_PRUNE_ABORT", phase)],
            &["prune", "--keep-last", "2", "--grace", "0s"],
        );
        assert!(!o.status.success(), "the prune was not killed at {phase}");
        if i == 2 {
            // A rebuild of the index after a crash mid-prune also verifies.
            env.ok(&["reindex"]);
        }
        verify_clean(&env);
        for (v, id) in ids.iter().enumerate().skip(4) {
            reads_back(&env, id, v as u64);
        }
        // The interrupted prune finishes on a second run.
        let rep = prune(&env, &["--keep-last", "2", "--grace", "0s"]);
        verify_clean(&env);
        for (v, id) in ids.iter().enumerate().skip(4) {
            reads_back(&env, id, v as u64);
        }
        let o = env.run(&[
            "checkout",
            &ids[0],
            "--to",
            env.path("gone").to_str().unwrap(),
        ]);
        assert!(!o.status.success(), "after {phase}: {rep}");
        let packs_on_disk = env.packs().len() as u64;
        assert_eq!(
            stats(&env)["packs"].as_u64(),
            Some(packs_on_disk),
            "after {phase}: a pack on disk is not in the index, or the reverse"
        );
    }
}

/// A file with the content of version `v`'s big file, written at `path`.
fn old_content(path: &Path, v: u64) -> Vec<u8> {
    let c = data(3 << 20, 100 + v, false);
    std::fs::write(path, &c).unwrap();
    c
}

#[test]
fn an_add_and_a_push_during_a_prune_lose_nothing_they_were_told_is_stored() {
    // The hub holds ten versions; its prune keeps one. While the prune has
    // decided (paused after writing its new packs), a client adds the big
    // file of version 2 (every chunk already on the hub: HaveChunks says
    // so) and pushes it, and the hub itself adds version 3's big file.
    let hub = Env::new();
    let url = hub.start_hub();
    let ids = history(&hub, 10);
    let admin = hub.json(&["token", "create", "--admin"]).pop().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let writer = hub.token(true);
    hub.kill_daemon();
    let port = url.rsplit(':').next().unwrap().parse().unwrap();
    hub.start_hub_with(port, &[("HOARD_TEST_PRUNE_PAUSE", "written:4000")]);
    let client = Env::new();
    client.ok(&["remote", "add", "origin", &url, "--token", &writer]);
    client.ok(&["remote", "add", "hubadmin", &url, "--token", &admin]);
    let pruner = {
        let mut c = client.hoard();
        c.args([
            "prune",
            "--remote",
            "hubadmin",
            "--keep-last",
            "1",
            "--grace",
            "0s",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let c2 = old_content(&client.path("v2.bin"), 2);
    let added = client.json(&["add", client.path("v2.bin").to_str().unwrap()]);
    let oid2 = added[0]["oid"].as_str().unwrap().to_string();
    let pushed = client.json(&["push", &oid2]).pop().unwrap();
    assert_eq!(
        pushed["chunks_sent"], 0,
        "the hub should have had every chunk: {pushed}"
    );
    let c3 = old_content(&hub.path("v3.bin"), 3);
    let oid3 = hub.json(&["add", hub.path("v3.bin").to_str().unwrap()])[0]["oid"]
        .as_str()
        .unwrap()
        .to_string();
    let out = common::wait_output(pruner, std::time::Duration::from_secs(120), "prune");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got2 = hub.run(&["cat", &oid2]).stdout;
    assert!(
        got2 == c2,
        "the pushed file does not read back from the hub: {rep}"
    );
    let got3 = hub.run(&["cat", &oid3]).stdout;
    assert!(got3 == c3, "the added file does not read back: {rep}");
    verify_clean(&hub);
    assert!(rep["sweep"]["spared"].as_u64().unwrap() > 0, "{rep}");
    assert!(
        rep["sweep"]["chunks_removed"].as_u64().unwrap() > 0,
        "{rep}"
    );
    reads_back(&hub, &ids[9], 9);
}

#[test]
fn a_hub_prune_needs_an_admin_token_and_dataset_removal_frees_its_content() {
    let hub = Env::new();
    let url = hub.start_hub();
    let admin = hub.json(&["token", "create", "--admin"]).pop().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let writer = hub.token(true);
    let a = Env::new();
    a.ok(&["remote", "add", "origin", &url, "--token", &writer]);
    a.ok(&["remote", "add", "admin", &url, "--token", &admin]);
    let ids = history(&a, 4);
    a.ok(&["dataset", "push", "ds"]);
    // Loose content (as git's pre-push sends it) is never pruned on a hub.
    let loose = old_content(&a.path("loose.bin"), 77);
    let oid = a.json(&["add", a.path("loose.bin").to_str().unwrap()])[0]["oid"]
        .as_str()
        .unwrap()
        .to_string();
    a.ok(&["push", &oid]);
    let o = a.run(&[
        "prune",
        "--remote",
        "origin",
        "--keep-last",
        "1",
        "--grace",
        "0s",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("admin"), "{err}");
    assert_eq!(
        hub.json(&["log", "ds"])
            .pop()
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let before = stats(&hub)["stored_bytes"].as_u64().unwrap();
    let rep = prune(
        &a,
        &["--remote", "admin", "--keep-last", "1", "--grace", "0s"],
    );
    let after = stats(&hub)["stored_bytes"].as_u64().unwrap();
    assert!(after < before, "{rep}");
    assert_eq!(
        hub.json(&["log", "ds"])
            .pop()
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    verify_clean(&hub);
    reads_back(&hub, &ids[3], 3);
    assert!(hub.run(&["cat", &oid]).stdout == loose);
    // Removing the dataset on the hub needs admin too, then frees it.
    let o = a.run(&["dataset", "remove", "ds", "--remote", "origin"]);
    assert!(!o.status.success());
    a.ok(&[
        "dataset", "remove", "ds", "--remote", "admin", "--grace", "0s",
    ]);
    assert!(hub
        .json(&["dataset", "list"])
        .pop()
        .is_none_or(|v| !v.to_string().contains("\"ds\"")));
    let o = hub.run(&["log", "ds"]);
    assert!(!o.status.success());
    verify_clean(&hub);
    assert!(stats(&hub)["stored_bytes"].as_u64().unwrap() < after);
    assert!(hub.run(&["cat", &oid]).stdout == loose);
}

/// The store's id of content (as `hoard add` would name it).
fn oid_of(env: &Env, bytes: &[u8]) -> String {
    let p = env.path("probe.bin");
    std::fs::write(&p, bytes).unwrap();
    let oid = blake3::hash(bytes).to_hex().to_string();
    std::fs::remove_file(p).unwrap();
    format!("blake3:{oid}")
}

fn in_store(env: &Env, oid: &str) -> bool {
    env.run(&["cat", oid, "--length", "1"]).status.success()
}

#[test]
fn git_roots_keep_head_staged_stashed_worktree_and_unpushed_content() {
    use common::git::{write, User};
    let u = User::new();
    let hub = Env::new();
    let url = hub.start_hub();
    let token = hub.token(true);
    u.hoard_in(
        &u.home,
        &["remote", "add", "origin", &url, "--token", &token],
    );
    let repo = u.repo("r", &["*.bin"]);
    let bare = u.path("r.git");
    u.git_ok(&u.home, &["init", "-q", "--bare", bare.to_str().unwrap()]);
    u.git_ok(&repo, &["remote", "add", "origin", bare.to_str().unwrap()]);
    let v: Vec<Vec<u8>> = (0..7).map(|i| data(400_000, 500 + i, false)).collect();
    let commit = |i: usize| {
        write(&repo, "model.bin", &v[i]);
        u.git_ok(&repo, &["add", "model.bin", ".gitattributes"]);
        u.git_ok(&repo, &["commit", "-q", "-m", &format!("v{i}")]);
    };
    commit(0);
    commit(1);
    u.git_ok(&repo, &["push", "-q", "origin", "main"]);
    commit(2); // unpushed, and HEAD
    write(&repo, "model.bin", &v[3]);
    u.git_ok(&repo, &["stash", "-q"]); // stashed, never committed
    let wt = u.path("wt");
    u.git_ok(
        &repo,
        &["worktree", "add", "-q", "-b", "side", wt.to_str().unwrap()],
    );
    write(&wt, "model.bin", &v[4]);
    u.git_ok(&wt, &["add", "model.bin"]); // staged in the other worktree only
    write(&repo, "model.bin", &v[5]);
    u.git_ok(&repo, &["add", "model.bin"]); // staged, not committed
    let env = &u.env;
    let oids: Vec<String> = v.iter().map(|b| oid_of(env, b)).collect();
    for (i, o) in oids.iter().enumerate().take(6) {
        assert!(in_store(env, o), "v{i} ({o}) was never stored");
    }
    u.hoard_in(&repo, &["prune", "--dry-run"]);
    let rep = u
        .hoard_json(&repo, &["prune", "--grace", "0s"])
        .pop()
        .unwrap();
    verify_clean(env);
    for (i, o) in oids.iter().enumerate().take(6) {
        let kept = in_store(env, o);
        // v0 and v1 were pushed and are no branch's tip: they may go.
        assert_eq!(kept, i >= 2, "v{i}: kept={kept}; {rep}");
    }
    // The pruned versions come back from the hub when checked out.
    u.git_ok(&repo, &["stash", "-q"]);
    u.git_ok(&repo, &["checkout", "-q", "HEAD~2"]);
    assert!(common::git::read(&repo, "model.bin") == v[0]);
    // Without a hoard remote nothing pushed is pruned: it lives nowhere else.
    u.git_ok(&repo, &["checkout", "-q", "main"]);
    u.hoard_in(&u.home, &["remote", "remove", "origin"]);
    u.hoard_json(&repo, &["prune", "--grace", "0s"]);
    assert!(
        in_store(env, &oids[0]),
        "v0, fetched back, was pruned without a remote"
    );
}

/// Flips one byte in the middle of `pack`.
fn flip(pack: &Path) {
    let mut b = std::fs::read(pack).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x5a;
    std::fs::write(pack, b).unwrap();
}

#[test]
fn repair_fetches_exactly_the_damaged_frames_from_the_hub() {
    let hub = Env::new();
    let url = hub.start_hub();
    let token = hub.token(true);
    let a = Env::new();
    a.ok(&["remote", "add", "origin", &url, "--token", &token]);
    let ids = history(&a, 8);
    a.ok(&["dataset", "push", "ds"]);
    a.kill_daemon();
    let mut packs: Vec<(u64, std::path::PathBuf)> = a
        .packs()
        .into_iter()
        .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
        .filter(|(len, _)| *len > 1 << 20)
        .collect();
    packs.sort();
    assert!(packs.len() >= 6, "{packs:?}");
    for (_, p) in &packs[..5] {
        flip(p);
    }
    let (len, cut) = &packs[5];
    let f = std::fs::OpenOptions::new().write(true).open(cut).unwrap();
    f.set_len(len - 300_000).unwrap();
    let o = a.run(&["verify", "--read-data"]);
    assert!(!o.status.success());
    let report = String::from_utf8_lossy(&o.stdout).into_owned();
    for (_, p) in &packs[..6] {
        let name = p.file_stem().unwrap().to_str().unwrap();
        assert!(
            report.contains(name),
            "verify does not name {name}:\n{report}"
        );
    }
    let rep = a.json(&["repair", "origin"]).pop().unwrap();
    assert_eq!(rep["damaged_packs"].as_array().unwrap().len(), 6, "{rep}");
    assert_eq!(rep["unrepaired"].as_array().unwrap().len(), 0, "{rep}");
    let moved = rep["bytes_moved"].as_u64().unwrap() as f64;
    let damaged = rep["damaged_frame_bytes"].as_u64().unwrap() as f64;
    eprintln!("repair: {rep}");
    assert!(
        moved <= 1.5 * damaged,
        "moved {moved} for {damaged} damaged"
    );
    verify_clean(&a);
    for (v, id) in ids.iter().enumerate() {
        reads_back(&a, id, v as u64);
    }
    // The manifests and snapshots the damaged packs held were written anew:
    // the packs alone rebuild an index that serves every version.
    a.ok(&["reindex"]);
    verify_clean(&a);
    for (v, id) in ids.iter().enumerate() {
        reads_back(&a, id, v as u64);
    }
    // Without a remote that has them, damaged chunks are named with their files.
    a.kill_daemon();
    let (_, p) = a
        .packs()
        .into_iter()
        .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
        .max()
        .unwrap();
    flip(&p);
    a.ok(&["remote", "remove", "origin"]);
    let rep = a.json(&["repair"]).pop().unwrap();
    let un = rep["unrepaired"].as_array().unwrap();
    assert!(
        !un.is_empty() && !un[0]["files"].as_array().unwrap().is_empty(),
        "{rep}"
    );
}

/// Kills the daemon at random points of a prune, again and again (3 times
/// here; `HOARD_PRUNE_KILLS=30 cargo test --release --test prune random`
/// in benches/prune-crash.sh for the full count); after each kill the store
/// verifies, the versions the prune would keep read back, and the next
/// prune completes.
#[test]
fn random_kills_during_prunes_lose_no_kept_version() {
    let kills: u64 = std::env::var("HOARD_PRUNE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    eprintln!("seed={seed} kills={kills}");
    let env = Env::new();
    let src = env.path("ds");
    version(&src, 0);
    env.ok(&["dataset", "add", "ds", src.to_str().unwrap()]);
    let mut ids: Vec<String> = Vec::new();
    let mut rng = seed;
    let mut killed_mid = 0;
    for round in 0..kills {
        for _ in 0..3 {
            let v = ids.len() as u64;
            version(&src, v);
            ids.push(snap(&env, "ds", &format!("v{v}")));
        }
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = 20 + (rng >> 33) % 330;
        let mut c = env.hoard();
        c.args(["prune", "--keep-last", "2", "--grace", "0s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let finished = child.try_wait().unwrap().is_some();
        env.kill_daemon();
        let _ = child.wait();
        if !finished {
            killed_mid += 1;
        }
        verify_clean(&env);
        let n = ids.len();
        for (v, id) in ids.iter().enumerate().skip(n - 2) {
            reads_back(&env, id, v as u64);
        }
        prune(&env, &["--keep-last", "2", "--grace", "0s"]);
        verify_clean(&env);
        eprintln!("round {round}: killed after {delay} ms (prune finished first: {finished})");
    }
    eprintln!("kills={kills} mid-prune={killed_mid}");
    assert_eq!(
        stats(&env)["packs"].as_u64(),
        Some(env.packs().len() as u64)
    );
}

/// Regression: a rewrite can reproduce a pack exactly (packs are named by
/// their content), and that pack was then deleted with everything in it.
#[test]
fn a_pack_rewritten_into_itself_is_kept() {
    let env = Env::new();
    let f = env.path("f.bin");
    let content = data(20_000, 42, false);
    std::fs::write(&f, &content).unwrap();
    let oid = env.json(&["add", f.to_str().unwrap()])[0]["oid"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..3 {
        // The first merges the frame pack and the manifest pack into one;
        // the next ones choose that pack (its header and trailer are
        // unused bytes above a 0.1 % allowance) and rewrite it as itself.
        prune(&env, &["--grace", "0s", "--max-unused", "0"]);
        verify_clean(&env);
        assert!(env.run(&["cat", &oid]).stdout == content);
    }
}
