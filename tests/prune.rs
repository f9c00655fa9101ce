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
