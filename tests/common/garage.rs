//! Real Garage servers on loopback for the S3 backend's tests: one node
//! (`--single-node`), or a cluster of three (`replication_factor = 3`, one
//! config each, nodes connected and the layout applied) whose nodes can be
//! killed and restarted. Built once per machine by scripts/garage.sh.

#![allow(dead_code)]

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

pub fn garage_bin() -> PathBuf {
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

/// One Garage process, its ports and directories.
pub struct Node {
    child: Option<Child>,
    dir: PathBuf,
    cfg: PathBuf,
    pub s3_port: u16,
    single: bool,
}

impl Node {
    pub fn s3(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    fn new(root: &Path, i: usize, replication: usize) -> Node {
        let dir = root.join(format!("node{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let cfg = dir.join("garage.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"metadata_dir = "{m}"
data_dir = "{d}"
db_engine = "lmdb"
replication_factor = {replication}
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
                m = dir.join("meta").display(),
                d = dir.join("data").display(),
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        Node {
            child: None,
            dir,
            cfg,
            s3_port: s3,
            single: replication == 1,
        }
    }

    /// Starts the server and waits for its S3 port.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("garage.log"))
            .unwrap();
        let mut cmd = Command::new(garage_bin());
        cmd.arg("-c").arg(&self.cfg).arg("server");
        if self.single {
            cmd.args(["--single-node", "--default-access-key", "--default-bucket"])
                .env("GARAGE_DEFAULT_ACCESS_KEY", KEY_ID)
                .env("GARAGE_DEFAULT_SECRET_KEY", SECRET)
                .env("GARAGE_DEFAULT_BUCKET", "hoard");
        }
        let child = cmd
            .env("RUST_LOG", "garage=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start garage");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "garage did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9: its connections reset, its endpoint refuses new ones.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("garage.log")).unwrap_or_default()
    }

    /// Runs the `garage` CLI against this node; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.cfg)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "garage {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Garage serving bucket `hoard` to key [`KEY_ID`].
pub struct Garage {
    pub nodes: Vec<Node>,
    /// `id@addr` of each node (a cluster).
    ids: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Garage {
    /// One node, `replication_factor = 1`.
    pub fn single() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let mut n = Node::new(dir.path(), 0, 1);
        n.start();
        Garage {
            nodes: vec![n],
            ids: Vec::new(),
            _dir: dir,
        }
    }

    /// `n` nodes holding every object `n` times.
    pub fn cluster(n: usize) -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes: Vec<Node> = (0..n).map(|i| Node::new(dir.path(), i, n)).collect();
        for node in &mut nodes {
            node.start();
        }
        let ids: Vec<String> = nodes
            .iter()
            .map(|node| {
                node.cli(&["node", "id"])
                    .lines()
                    .find(|l| l.contains('@'))
                    .expect("garage node id prints id@addr")
                    .trim()
                    .to_string()
            })
            .collect();
        let first = &nodes[0];
        for id in &ids[1..] {
            first.cli(&["node", "connect", id]);
        }
        for id in &ids {
            let short = id.split('@').next().unwrap();
            first.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", short]);
        }
        first.cli(&["layout", "apply", "--version", "1"]);
        // The layout reaches every node, then the key and the bucket.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(garage_bin())
                .arg("-c")
                .arg(&first.cfg)
                .args(["key", "import", "--yes", "-n", "hoard", KEY_ID, SECRET])
                .output()
                .unwrap()
                .status
                .success();
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "garage layout never became ready"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        first.cli(&["bucket", "create", "hoard"]);
        first.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", "hoard", "--key", "hoard",
        ]);
        let g = Garage {
            nodes,
            ids,
            _dir: dir,
        };
        g.wait_healthy();
        g
    }

    /// Restarts node `i` (killed before) and waits until every node sees
    /// every other one again.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].start();
        for (k, id) in self.ids.iter().enumerate() {
            if k != i {
                let _ = Command::new(garage_bin())
                    .arg("-c")
                    .arg(&self.nodes[i].cfg)
                    .args(["node", "connect", id])
                    .output();
            }
        }
        self.wait_healthy();
    }

    /// Waits until each running node reports the cluster healthy (all
    /// nodes connected, every partition fully replicated).
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            loop {
                let out = Command::new(garage_bin())
                    .arg("-c")
                    .arg(&node.cfg)
                    .args(["json-api", "GetClusterHealth"])
                    .output()
                    .unwrap();
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
                if v["status"] == "healthy" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the Garage cluster did not become healthy: {v}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Every node's S3 endpoint, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(Node::s3).collect()
    }

    /// The node whose endpoint is `url`.
    pub fn node_at(&self, url: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.s3() == url)
            .unwrap_or_else(|| panic!("no node serves {url}"))
    }
}
