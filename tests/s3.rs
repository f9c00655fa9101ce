//! A hub whose packs live in S3-compatible storage: a real single-node
//! Garage on loopback (built by scripts/garage.sh), a real hub and real
//! clients. Push, clone, verify, prune, and a hub that lost its local disk
//! rebuilt from the bucket alone.

mod common;

use common::{data, free_port, Env};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY_ID: &str = "GK0123456789abcdef01234567";
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn garage_bin() -> PathBuf {
    let p = std::env::var_os("HOARD_GARAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/hoard-ci/garage/bin/garage"));
    assert!(
        p.exists(),
        "no Garage binary at {}: run scripts/garage.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// One Garage node serving one bucket, stopped when dropped.
struct Garage {
    child: Child,
    pub s3: String,
    _dir: tempfile::TempDir,
}

impl Garage {
    fn single() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let cfg = dir.path().join("garage.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"metadata_dir = "{m}"
data_dir = "{d}"
db_engine = "lmdb"
replication_factor = 1
compression_level = "none"
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{SECRET}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{SECRET}"
"#,
                m = dir.path().join("meta").display(),
                d = dir.path().join("data").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("garage.log")).unwrap();
        let child = Command::new(garage_bin())
            .args([
                "-c",
                cfg.to_str().unwrap(),
                "server",
                "--single-node",
                "--default-access-key",
                "--default-bucket",
            ])
            .env("GARAGE_DEFAULT_ACCESS_KEY", KEY_ID)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET)
            .env("GARAGE_DEFAULT_BUCKET", "hoard")
            .env("RUST_LOG", "garage=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start garage");
        let g = Garage {
            child,
            s3: format!("http://127.0.0.1:{s3}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", s3)).is_err() {
            assert!(
                Instant::now() < deadline,
                "garage did not start: {}",
                g.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        g
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("garage.log")).unwrap_or_default()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hub whose packs are in `g`'s bucket.
fn s3_hub(g: &Garage) -> (Env, u16) {
    let hub = Env::new();
    std::fs::create_dir_all(&hub.home).unwrap();
    std::fs::write(
        hub.home.join("config.toml"),
        format!(
            "[store]\nbackend = \"s3\"\ns3_endpoints = [\"{}\"]\ns3_bucket = \"hoard\"\ns3_region = \"garage\"\ns3_prefix = \"lab1/\"\n",
            g.s3
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
    let (hub, port) = s3_hub(&g);
    let url = format!("http://127.0.0.1:{port}");
    let token = hub.token(true);
    let admin = hub.json(&["token", "create", "--admin"]).pop().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let a = Env::new();
    a.ok(&["remote", "add", "origin", &url, "--token", &token]);
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
    let b = Env::new();
    b.ok(&["remote", "add", "origin", &url, "--token", &token]);
    clone(&b, &ids[1], &b.path("v1"));
    assert!(std::fs::read(b.path("v1/big.bin")).unwrap() == versions[1]);
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
    let c = Env::new();
    c.ok(&["remote", "add", "origin", &url, "--token", &token]);
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
