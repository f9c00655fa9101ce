//! Shared harness for end-to-end tests: the real `hoard` and `hoardd`
//! binaries, each test with its own store directory, daemons stopped on drop.
#![allow(dead_code)]

pub mod double;
pub mod garage;
pub mod git;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/`, where cargo put the binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .expect("deps dir")
        .parent()
        .expect("profile dir")
        .to_path_buf();
    assert!(
        dir.join("hoard").exists() && dir.join("hoardd").exists(),
        "build the binaries first: cargo build --release --workspace --bins (scripts/test.sh does)"
    );
    dir
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        // Short paths: Unix socket names are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("hoard-e2e")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let home = dir.path().join("h");
        Env { dir, home }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn hoard(&self) -> Command {
        let mut c = Command::new(bin_dir().join("hoard"));
        c.env("HOARD_HOME", &self.home)
            .env("HOARD_DAEMON", bin_dir().join("hoardd"))
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    pub fn hoardd(&self) -> Command {
        let mut c = Command::new(bin_dir().join("hoardd"));
        c.env("HOARD_HOME", &self.home).stdin(Stdio::null());
        c
    }

    /// Runs `hoard ARGS`, bounded in time; returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let child = self
            .hoard()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hoard");
        wait_output(child, Duration::from_secs(300), &format!("hoard {args:?}"))
    }

    /// Runs `hoard ARGS` and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "hoard {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log (tail):\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log_tail(30)
        );
        String::from_utf8(o.stdout).expect("utf-8 output")
    }

    /// JSON lines of `hoard ARGS --json`.
    pub fn json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut a = args.to_vec();
        a.push("--json");
        self.ok(&a)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// The last `n` lines of the daemon's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.home.join("hoardd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn daemon_pid(&self) -> Option<i32> {
        let o = self.run(&["daemon", "status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    }

    /// The daemon's pack files.
    pub fn packs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in std::fs::read_dir(self.home.join("packs"))
            .expect("packs dir")
            .flatten()
        {
            if d.file_name().len() == 2 {
                for f in std::fs::read_dir(d.path()).expect("pack subdir").flatten() {
                    out.push(f.path());
                }
            }
        }
        out.sort();
        out
    }

    pub fn kill_daemon(&self) {
        if let Some(pid) = self.daemon_pid() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait_gone(pid);
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            unsafe { libc::kill(pid, libc::SIGTERM) };
            if !wait_gone_for(pid, Duration::from_secs(20)) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

pub fn wait_gone(pid: i32) {
    assert!(
        wait_gone_for(pid, Duration::from_secs(30)),
        "process {pid} did not exit"
    );
}

pub fn wait_gone_for(pid: i32, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        let alive = unsafe { libc::kill(pid, 0) } == 0
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
        if !alive {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits for a child with a deadline, killing it if it overruns.
pub fn wait_output(mut child: std::process::Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = std::io::Read::read_to_end(o, &mut b);
        }
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = std::io::Read::read_to_end(e, &mut b);
        }
        b
    });
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Output {
                status,
                stdout: t_out.join().unwrap_or_default(),
                stderr: t_err.join().unwrap_or_default(),
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Deterministic pseudo-random bytes; `text` makes them compressible.
pub fn data(len: usize, seed: u64, text: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let words: [&[u8]; 8] = [
        b"alpha ",
        b"beta ",
        b"gamma ",
        b"delta,",
        b"42 ",
        b"3.14159 ",
        b"\n",
        b"sample ",
    ];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if text {
            out.extend_from_slice(words[(x % 8) as usize]);
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

pub fn b3(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

/// Makes a file look old enough for the stat cache to trust it.
pub fn age(path: &Path) {
    let t = std::time::SystemTime::now() - Duration::from_secs(10);
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open to age");
    f.set_modified(t).expect("set mtime");
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .expect("local addr")
        .port()
}

impl Env {
    /// Starts this env's daemon serving the Peer API on a free loopback
    /// port; returns its URL.
    pub fn start_hub(&self) -> String {
        let port = free_port();
        self.start_hub_at(port);
        format!("http://127.0.0.1:{port}")
    }

    /// Starts this env's daemon serving the Peer API on `port`.
    pub fn start_hub_at(&self, port: u16) {
        self.start_hub_with(port, &[]);
    }

    /// Like [`Env::start_hub_at`], with extra environment for the daemon.
    pub fn start_hub_with(&self, port: u16, vars: &[(&str, &str)]) {
        let addr = format!("127.0.0.1:{port}");
        std::fs::create_dir_all(&self.home).expect("hub home");
        let log = std::fs::File::create(self.home.join("hoardd.log")).expect("hub log");
        let mut child = self
            .hoardd()
            .args(["run", "--listen", &addr])
            .envs(vars.iter().copied())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn hub");
        // Reaped when it exits (Drop stops it).
        std::thread::spawn(move || child.wait());
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.daemon_pid().is_none() {
            assert!(
                Instant::now() < deadline,
                "hub did not start:\n{}",
                self.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `hoard token create --read|--write` on this env's daemon.
    pub fn token(&self, write: bool) -> String {
        let v = self.json(&["token", "create", if write { "--write" } else { "--read" }]);
        v[0]["token"].as_str().expect("token").to_string()
    }
}
