//! Real git in temporary repositories, with `hoard` on PATH and a private
//! HOME (global git config) per test.

use super::{bin_dir, wait_output, Env};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A test user: a store (via [`Env`]), a HOME holding their global git
/// config, and whether hoard is installed for them.
pub struct User {
    pub env: Env,
    pub home: PathBuf,
}

impl User {
    /// A user with `hoard install` done (global config).
    pub fn new() -> User {
        let u = Self::without_hoard();
        u.hoard_in(&u.home, &["install"]);
        u
    }

    /// A user whose git knows nothing of hoard.
    pub fn without_hoard() -> User {
        let env = Env::new();
        let home = env.path("home");
        std::fs::create_dir_all(&home).expect("home");
        let u = User { env, home };
        for (k, v) in [
            ("user.email", "test@example.com"),
            ("user.name", "Test"),
            ("init.defaultBranch", "main"),
            ("advice.detachedHead", "false"),
            ("protocol.file.allow", "always"),
        ] {
            u.git_ok(&u.home, &["config", "--global", k, v]);
        }
        u
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.env.path(rel)
    }

    fn envs(&self, c: &mut Command) {
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("PATH", path)
            .env("HOARD_HOME", &self.env.home)
            .env("HOARD_DAEMON", bin_dir().join("hoardd"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }

    pub fn git_cmd(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.args(args).current_dir(dir);
        self.envs(&mut c);
        c
    }

    pub fn git(&self, dir: &Path, args: &[&str]) -> Output {
        let child = self.git_cmd(dir, args).spawn().expect("spawn git");
        wait_output(child, Duration::from_secs(300), &format!("git {args:?}"))
    }

    pub fn git_ok(&self, dir: &Path, args: &[&str]) -> String {
        let o = self.git(dir, args);
        self.expect_ok("git", args, dir, o)
    }

    /// stdout of a command that must have succeeded; else a report with
    /// its output and the daemon's log.
    fn expect_ok(&self, what: &str, args: &[&str], dir: &Path, o: Output) -> String {
        assert!(
            o.status.success(),
            "{what} {args:?} in {} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log (tail):\n{}",
            dir.display(),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.env.log_tail(20)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn hoard_cmd(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("hoard"));
        c.args(args).current_dir(dir);
        self.envs(&mut c);
        c
    }

    pub fn hoard(&self, dir: &Path, args: &[&str]) -> Output {
        let child = self.hoard_cmd(dir, args).spawn().expect("spawn hoard");
        wait_output(child, Duration::from_secs(300), &format!("hoard {args:?}"))
    }

    pub fn hoard_in(&self, dir: &Path, args: &[&str]) -> String {
        let o = self.hoard(dir, args);
        self.expect_ok("hoard", args, dir, o)
    }

    pub fn hoard_json(&self, dir: &Path, args: &[&str]) -> Vec<serde_json::Value> {
        let mut a = args.to_vec();
        a.push("--json");
        self.hoard_in(dir, &a)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            .collect()
    }

    /// A new repository at `rel` tracking `patterns`.
    pub fn repo(&self, rel: &str, patterns: &[&str]) -> PathBuf {
        let dir = self.path(rel);
        std::fs::create_dir_all(&dir).expect("repo dir");
        self.git_ok(&dir, &["init", "-q"]);
        let mut args = vec!["track"];
        args.extend_from_slice(patterns);
        self.hoard_in(&dir, &args);
        dir
    }
}

/// Writes `bytes` to `dir/rel`, creating parents.
pub fn write(dir: &Path, rel: &str, bytes: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, bytes).expect("write");
}

pub fn read(dir: &Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The pointer text hoard commits for `bytes` (empty files stay empty).
pub fn pointer_of(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    format!(
        "version hoard/1\noid blake3:{}\nsize {}\n",
        blake3::hash(bytes).to_hex(),
        bytes.len()
    )
}
