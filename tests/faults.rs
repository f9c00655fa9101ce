//! Faults a store meets in real life: a full disk during a pull and during
//! a clean (a tmpfs mounted as the store, then grown), and permissions seen
//! by a user who is not root (created here): an unreadable file, an
//! unwritable checkout directory, a socket another user cannot open.
//! Each gives a clear error, the store still verifies, and a rerun
//! completes. These need root (to mount and to create users), which CI
//! has; without it they say so and pass vacuously.

mod common;

use common::{data, wait_output, Env};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn root() -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("skipped: this test needs root (to mount a tmpfs or create a user)");
    false
}

/// A tmpfs of `mib` MiB mounted at `at`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}M,mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    fn grow(&self, mib: u64) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}M")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A daemon still serving a store here (a failed assertion skipped
        // its stop) goes first: once unmounted, nobody could find its pid.
        let pid = std::fs::read_to_string(self.0.join("hoardd.lock"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            common::wait_gone_for(pid, Duration::from_secs(20));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

fn stop(env: &Env) {
    if let Some(pid) = env.daemon_pid() {
        env.ok(&["daemon", "stop"]);
        common::wait_gone(pid);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn oid(env: &Env, path: &Path) -> String {
    let v = env.json(&["add", path.to_str().unwrap()]);
    v.iter()
        .find_map(|e| e["oid"].as_str().map(str::to_string))
        .expect("an oid")
}

#[test]
fn a_full_disk_during_a_pull_and_a_clean_is_clear_and_a_rerun_completes() {
    if !root() {
        return;
    }
    let hub = Env::new();
    let url = hub.start_hub();
    let token = hub.token(false);
    std::fs::write(hub.path("big.bin"), data(48 << 20, 1, false)).unwrap();
    let big = oid(&hub, &hub.path("big.bin"));

    // The puller's whole store on a 32 MiB file system.
    let a = Env::new();
    let disk = Tmpfs::mount(&a.home, 32);
    a.ok(&["remote", "add", "origin", &url, "--token", &token]);
    let o = a.run(&["fetch", &big]);
    assert!(!o.status.success(), "a 48 MiB pull fit in 32 MiB");
    assert_eq!(
        o.status.code(),
        Some(9),
        "exit code for a full disk: {}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("disk full"), "{}", stderr(&o));
    a.ok(&["verify", "--read-data"]);
    disk.grow(256);
    let o = a.run(&["fetch", &big]);
    assert!(o.status.success(), "rerun: {}", stderr(&o));
    let got = a.run(&["cat", &big]);
    assert!(
        got.stdout == std::fs::read(hub.path("big.bin")).unwrap(),
        "pulled content differs"
    );
    a.ok(&["verify", "--read-data"]);
    stop(&a);
    drop(disk);

    // A clean (git add through the filter, and hoard add) on a full disk.
    let b = Env::new();
    let disk = Tmpfs::mount(&b.home, 24);
    let content = data(40 << 20, 2, false);
    std::fs::write(b.path("model.bin"), &content).unwrap();
    let clean = b
        .hoard()
        .args(["clean", b.path("model.bin").to_str().unwrap()])
        .stdin(std::fs::File::open(b.path("model.bin")).unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_output(clean, Duration::from_secs(120), "hoard clean");
    assert!(!o.status.success(), "a 40 MiB clean fit in 24 MiB");
    assert!(stderr(&o).contains("disk full"), "{}", stderr(&o));
    let o = b.run(&["add", b.path("model.bin").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    assert!(stderr(&o).contains("disk full"), "{}", stderr(&o));
    b.ok(&["verify", "--read-data"]);
    disk.grow(256);
    let id = oid(&b, &b.path("model.bin"));
    assert!(
        b.run(&["cat", &id]).stdout == content,
        "added content differs"
    );
    b.ok(&["verify", "--read-data"]);
    stop(&b);
}

/// A user who is not root, made once per machine.
fn user(name: &str) -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let o = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/usr/sbin/nologin", name])
            .output()
            .unwrap();
        // Another test may have made it meanwhile.
        assert!(
            o.status.success() || id("-u").is_some(),
            "useradd: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// `hoard ARGS` as `uid`:`gid` with `home` as HOARD_HOME.
fn hoard_as(uid: u32, gid: u32, home: &Path, cwd: &Path, args: &[&str]) -> Output {
    let child = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--",
        ])
        .arg(common::bin_dir().join("hoard"))
        .args(args)
        .env("HOARD_HOME", home)
        .env("HOARD_DAEMON", common::bin_dir().join("hoardd"))
        .env_remove("XDG_RUNTIME_DIR")
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(120), "hoard as another user")
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

#[test]
fn unreadable_files_unwritable_checkouts_and_other_users_sockets_are_clear_errors() {
    if !root() {
        return;
    }
    let (uid, gid) = user("hoard-test");
    let (uid2, gid2) = user("hoard-test2");
    let top = tempfile::Builder::new()
        .prefix("hoard-perm")
        .tempdir_in("/tmp")
        .unwrap();
    let t = top.path();
    std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = t.join("h");
    let ds = t.join("ds");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(ds.join("sub")).unwrap();
    std::fs::write(ds.join("a.csv"), data(300_000, 3, true)).unwrap();
    std::fs::write(ds.join("sub/b.bin"), data(200_000, 4, false)).unwrap();
    std::fs::write(ds.join("secret.bin"), b"no one may read this").unwrap();
    for p in [
        &home,
        &ds,
        &ds.join("sub"),
        &ds.join("a.csv"),
        &ds.join("sub/b.bin"),
        &ds.join("secret.bin"),
    ] {
        chown(p, uid, gid);
    }
    std::fs::set_permissions(
        ds.join("secret.bin"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let run = |args: &[&str]| hoard_as(uid, gid, &home, t, args);

    // An unreadable file: named, the rest added, the store verifies.
    let o = run(&["add", ds.to_str().unwrap()]);
    assert!(!o.status.success(), "an unreadable file went unreported");
    let err = stderr(&o);
    assert!(
        err.contains("secret.bin") && err.to_lowercase().contains("permission"),
        "{err}"
    );
    let o = run(&["dataset", "add", "survey", ds.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["snapshot", "survey"]);
    let snap_err = stderr(&o);
    eprintln!(
        "snapshot with an unreadable file: {:?} {snap_err}",
        o.status.code()
    );
    assert!(!snap_err.contains("panicked"), "{snap_err}");
    let o = run(&["verify", "--read-data"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // An unwritable checkout directory: a clear error, nothing half-written.
    std::fs::set_permissions(
        ds.join("secret.bin"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let o = run(&["snapshot", "survey", "-m", "all readable"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = t.join("out");
    std::fs::create_dir_all(&out).unwrap();
    chown(&out, uid, gid);
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o500)).unwrap();
    let o = run(&["checkout", "survey", "--to", out.to_str().unwrap()]);
    assert!(!o.status.success(), "wrote into a read-only directory");
    let err = stderr(&o);
    assert!(
        err.to_lowercase().contains("permission") && err.contains(out.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "something was left in {}",
        out.display()
    );
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = run(&["checkout", "survey", "--to", out.to_str().unwrap()]);
    assert!(o.status.success(), "rerun: {}", stderr(&o));
    assert_eq!(
        std::fs::read(out.join("sub/b.bin")).unwrap(),
        data(200_000, 4, false)
    );

    // Another user cannot open this user's socket, and is told so.
    let o = hoard_as(uid2, gid2, &home, t, &["stats"]);
    assert!(!o.status.success(), "another user used the daemon");
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.to_lowercase().contains("permission"), "{err}");
    // The owner's daemon is untouched.
    let o = run(&["verify", "--read-data"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["daemon", "stop"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
