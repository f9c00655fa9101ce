//! Crash-thrash (after bupstash's crash tests): workers drive a local
//! daemon (A) and a hub with real commands while a killer `kill -9`s one
//! of them at random moments, restarts it, and checks that nothing that
//! was acknowledged was lost or is wrong.
//!
//! - A (`HOARD_HOME` of a [`User`]) has the hub as remote `origin`; B, a
//!   third daemon that is never killed, feeds the hub with content and a
//!   dataset for A to pull.
//! - Workers on A, for the whole run: `hoard add` of fresh files; `git add`
//!   and `git commit` of tracked files through hoard's filter; a watched
//!   dataset `w` (auto-synced to the hub) receiving, replacing and losing
//!   files, with `snapshot` (watcher's view or `--rescan`) and `tag`;
//!   `push` of files and `dataset push w` to the hub; `fetch` of B's files
//!   and `clone origin/feed DIR` from the hub; `cat` of acknowledged files
//!   (a read that exits 0 must be byte-exact). B: snapshots of `feed`,
//!   `dataset push feed`, `add` + `push` of files. Each worker records what
//!   was acknowledged (the command exited 0 and printed the id, the
//!   snapshot id, the pushed snapshot), and nothing else.
//! - The killer: after 50–1500 ms (seeded RNG) `kill -9` daemon A (pid from
//!   its lock file), or every fourth time the hub, counting the worker
//!   commands that were in flight against it; A is restarted by whichever
//!   worker comes first (the CLI starts it on demand) or by `hoard daemon
//!   start`, the hub by `hoardd run --listen` on the same port. One A kill
//!   in four also kills the daemon a worker starts next, 0–300 ms after it
//!   took the store's lock (a kill during recovery). Then the
//!   workers are paused and both stores are checked: `hoard verify
//!   --read-data`, every acknowledged file read back (`hoard cat`), every
//!   acknowledged snapshot checked out (`hoard checkout ID --to`) and
//!   compared, every acknowledged snapshot still in its dataset's history,
//!   every tag where it was put, and every dataset ref (A's `dataset list`,
//!   the hub's `log`) naming a snapshot that checks out completely. At the
//!   end also a `git checkout` of the acknowledged files through smudge.
//! - A failure panics naming the file or snapshot, when it was
//!   acknowledged and the kill after which it was found wrong, with the
//!   daemon's log (`HOARD_HOME/hoardd.log`). A command that runs over 120 s
//!   is a hang: it fails the test with its processes' stacks (gdb, if on
//!   PATH) and who holds their pipes.
//!
//! Size: `HOARD_CRASH_KILLS` (default 8, two of them the hub's);
//! `HOARD_CRASH_SEED` repeats the schedule of sleeps, sizes and operations
//! (thread timing still varies); `HOARD_CRASH_RECHECK=N` re-reads what was
//! acknowledged before the previous kill only every N-th kill (default 1:
//! everything at every kill; always everything at the end);
//! `HOARD_CRASH_SABOTAGE=pack` damages a pack of A after kill 2, to see the
//! suite fail. The last line is the report, `crash-thrash: key=value ...`;
//! `benches/crash.sh` runs 100 kills.

mod common;

use common::git::User;
use common::{data, wait_gone_for, Env};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A worker command taking longer than this is a hang: the test fails.
const CMD_LIMIT: Duration = Duration::from_secs(120);
/// The same for a check (verify reads the whole store).
const CHECK_LIMIT: Duration = Duration::from_secs(600);

/// Which daemons a command talks to.
const A: u8 = 1;
const HUB: u8 = 2;
const B: u8 = 4;

/// Files in the watched dataset `w` and in B's `feed`, at most.
const W_MAX: usize = 40;
const FEED_MAX: usize = 30;

// ---- randomness and content ------------------------------------------------

/// splitmix64: small, seeded, good enough to pick sleeps and sizes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// In `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// A generated file: [`data`]`(len, seed, text)`, whose id is `oid`.
#[derive(Clone, Debug)]
struct Spec {
    len: usize,
    seed: u64,
    text: bool,
    oid: String,
}

impl Spec {
    fn bytes(&self) -> Vec<u8> {
        data(self.len, self.seed, self.text)
    }
    /// The pointer git must hold for it.
    fn pointer(&self) -> String {
        format!("version hoard/1\noid {}\nsize {}\n", self.oid, self.len)
    }
}

fn oid_of(bytes: &[u8]) -> String {
    common::b3(bytes)
}

/// An acknowledged file: what it is, which command acknowledged it, and
/// after which kill.
#[derive(Clone, Debug)]
struct AckFile {
    spec: Spec,
    how: String,
    kill: usize,
}

/// What an acknowledged snapshot must hold.
#[derive(Clone, Debug)]
enum Expect {
    /// Exactly these files (a scan of the directory).
    Exact(BTreeMap<String, Spec>),
    /// A watcher's view: every file in it is a version that path had.
    Subset,
    /// Content not known here (pushed or cloned without being seen
    /// acknowledged): it must only check out completely.
    Unknown,
}

#[derive(Clone, Debug)]
struct AckSnap {
    id: String,
    dataset: &'static str,
    expect: Expect,
    how: String,
    kill: usize,
}

/// What one store acknowledged.
#[derive(Default)]
struct Acked {
    /// By oid.
    files: BTreeMap<String, AckFile>,
    snaps: Vec<AckSnap>,
    /// (dataset, tag, snapshot id, kill).
    tags: Vec<(&'static str, String, String, usize)>,
    /// Push commands acknowledged (into this store).
    pushes: u64,
}

impl Acked {
    fn file(&mut self, spec: &Spec, how: &str, kill: usize) {
        self.files.entry(spec.oid.clone()).or_insert(AckFile {
            spec: spec.clone(),
            how: how.to_string(),
            kill,
        });
    }
    fn expect_of(&self, id: &str) -> Option<Expect> {
        self.snaps
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.expect.clone())
    }
}

// ---- shared state ------------------------------------------------------------

struct Ctx<'a> {
    user: &'a User,
    hub: &'a Env,
    b: &'a Env,
    repo: PathBuf,
    hub_port: u16,
    seed: u64,
    stop: AtomicBool,
    paused: AtomicBool,
    parked: AtomicUsize,
    /// Kills so far.
    kill: AtomicUsize,
    seeds: AtomicU64,
    next_cmd: AtomicU64,
    /// Commands running now: id → (what, daemons it talks to).
    inflight: Mutex<BTreeMap<u64, (String, u8)>>,
    failure: Mutex<Option<String>>,
    a_acked: Mutex<Acked>,
    hub_acked: Mutex<Acked>,
    /// Every version each path of `w` ever had (oids).
    w_versions: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// B's snapshots of feed, by id: their exact content.
    feed_snaps: Mutex<BTreeMap<String, BTreeMap<String, Spec>>>,
    /// B's files acknowledged on the hub: what A may fetch.
    hub_b_files: Mutex<Vec<Spec>>,
    commands: AtomicU64,
    failed: AtomicU64,
    reads: AtomicU64,
    reads_failed: AtomicU64,
}

impl Ctx<'_> {
    fn a(&self) -> &Env {
        &self.user.env
    }

    fn kills(&self) -> usize {
        self.kill.load(SeqCst)
    }

    fn fail(&self, msg: String) {
        let mut f = self.failure.lock().unwrap();
        if f.is_none() {
            *f = Some(msg);
        }
        self.stop.store(true, SeqCst);
    }

    /// Panics (on the killer's thread) if a worker failed.
    fn check_failed(&self) {
        if let Some(m) = self.failure.lock().unwrap().clone() {
            panic!("{m}");
        }
    }

    /// Sleeps, looking out for a worker's failure.
    fn nap(&self, ms: u64) {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            self.check_failed();
            std::thread::sleep(Duration::from_millis(5).min(until - Instant::now()));
        }
    }

    fn gen(&self, rng: &mut Rng) -> (Spec, Vec<u8>) {
        let len = match rng.below(100) {
            0..=9 => rng.range(1, 1000),
            10..=59 => rng.range(1001, 64 << 10),
            60..=89 => rng.range(64 << 10, 600 << 10),
            _ => rng.range(1_100_000, 2_500_000),
        } as usize;
        let text = rng.chance(40);
        // Even seeds: `data` ORs 1 into seed × odd constant.
        let seed = self.seeds.fetch_add(2, SeqCst);
        let bytes = data(len, seed, text);
        let oid = oid_of(&bytes);
        (
            Spec {
                len,
                seed,
                text,
                oid,
            },
            bytes,
        )
    }

    /// Runs a worker's command, counted as in flight against `targets`.
    fn run(&self, what: &str, targets: u8, mut c: Command) -> Output {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let id = self.next_cmd.fetch_add(1, SeqCst);
        self.inflight
            .lock()
            .unwrap()
            .insert(id, (what.to_string(), targets));
        let child = c.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let k = self.kills();
        let others = || {
            let mut v = Vec::new();
            for (name, env, bit) in [("daemon A", self.a(), A), ("the hub", self.hub, HUB)] {
                if targets & bit != 0 {
                    v.extend(lock_pid(&env.home).map(|p| (name.to_string(), p)));
                }
            }
            v
        };
        let o = wait_bounded_or(
            child,
            CMD_LIMIT,
            &format!("{what} (a worker's command, started after kill {k})"),
            &others,
        );
        self.inflight.lock().unwrap().remove(&id);
        self.commands.fetch_add(1, SeqCst);
        if !o.status.success() {
            self.failed.fetch_add(1, SeqCst);
        }
        o
    }

    fn hoard_a(&self, args: &[&str]) -> Command {
        let mut c = self.a().hoard();
        c.args(args);
        c
    }

    fn hoard_b(&self, args: &[&str]) -> Command {
        let mut c = self.b.hoard();
        c.args(args);
        c
    }
}

/// Sets `stop` when the killer's scope ends, however it ends.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

/// Waits for a child with a deadline, killing it if it overruns (a hang
/// fails the test). Like `common::wait_output`, polling every millisecond:
/// the suite runs thousands of short commands.
fn wait_bounded(child: std::process::Child, limit: Duration, what: &str) -> Output {
    wait_bounded_or(child, limit, what, &|| Vec::new())
}

/// [`wait_bounded`]; on a hang, the processes `others` names are described too.
fn wait_bounded_or(
    mut child: std::process::Child,
    limit: Duration,
    what: &str,
    others: &dyn Fn() -> Vec<(String, i32)>,
) -> Output {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut b);
        }
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut b);
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
            let pid = child.id() as i32;
            let mut report = diagnose(pid);
            for (name, p) in others() {
                report.push_str(&format!("{name}:\n{}", diagnose(p)));
            }
            for p in descendants(pid) {
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?} (a hang). Its processes then:\n{report}"
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `pid`'s open pipes and sockets, each with the other processes that hold
/// it (who keeps a pipe open decides when its reader sees the end).
fn pipe_holders(pid: i32) -> String {
    let fds = |p: i32| -> Vec<(String, String)> {
        std::fs::read_dir(format!("/proc/{p}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let t = std::fs::read_link(e.path()).ok()?;
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    t.to_string_lossy().into_owned(),
                ))
            })
            .collect()
    };
    let all: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    let mut out = Vec::new();
    for (fd, target) in fds(pid) {
        if !target.starts_with("pipe:") && !target.starts_with("socket:") {
            out.push(format!("{fd}={target}"));
            continue;
        }
        let others: Vec<String> = all
            .iter()
            .filter(|&&o| o != pid)
            .filter_map(|&o| {
                let f: Vec<String> = fds(o)
                    .into_iter()
                    .filter(|(_, t)| *t == target)
                    .map(|(f, _)| f)
                    .collect();
                (!f.is_empty()).then(|| {
                    let name =
                        std::fs::read_to_string(format!("/proc/{o}/comm")).unwrap_or_default();
                    format!("{o}({}) fd {}", name.trim(), f.join(","))
                })
            })
            .collect();
        out.push(format!(
            "{fd}={target} also held by [{}]",
            others.join("; ")
        ));
    }
    out.join(", ")
}

/// The processes below `pid` (children, their children, ...).
fn descendants(pid: i32) -> Vec<i32> {
    let mut parent: Vec<(i32, i32)> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            if let Some(pp) = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .and_then(|x| x.parse().ok())
            {
                parent.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for (c, _) in parent.iter().filter(|(_, pp)| *pp == p) {
            out.push(*c);
            todo.push(*c);
        }
    }
    out
}

/// What `pid` and the processes below it are doing: command line, state,
/// kernel wait channel, and (with gdb on PATH) the threads' stacks of
/// hoard's own processes.
fn diagnose(pid: i32) -> String {
    let mut out = String::new();
    for p in std::iter::once(pid).chain(descendants(pid)) {
        let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|b| text(&b).replace('\0', " "))
            .unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        let wchan = std::fs::read_to_string(format!("/proc/{p}/wchan")).unwrap_or_default();
        out.push_str(&format!("pid {p} [{state}, {wchan}]: {cmd}\n"));
        out.push_str(&format!("  fds: {}\n", pipe_holders(p)));
        if cmd.contains("hoard") {
            let bt = Command::new("gdb")
                .args([
                    "-p",
                    &p.to_string(),
                    "-batch",
                    "-ex",
                    "thread apply all bt 25",
                ])
                .stdin(Stdio::null())
                .output();
            if let Ok(bt) = bt {
                let frames: Vec<String> = text(&bt.stdout)
                    .lines()
                    .filter(|l| l.starts_with("Thread ") || l.starts_with('#'))
                    .map(str::to_string)
                    .collect();
                out.push_str(&frames.join("\n"));
                out.push('\n');
            }
        }
    }
    out
}

fn last_json(o: &Output) -> Option<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout).chars().take(2000).collect::<String>(),
        text(&o.stderr).chars().take(4000).collect::<String>()
    )
}

/// `hoard ARGS` on `env` for a check: bounded, not counted as a worker's.
fn hoard(env: &Env, args: &[&str]) -> Output {
    let child = env
        .hoard()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hoard");
    wait_bounded(child, CHECK_LIMIT, &format!("check: hoard {args:?}"))
}

/// Every file below `dir` (checkout's temporary files left out): path →
/// (oid, size).
fn listing(dir: &Path) -> BTreeMap<String, (String, usize)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (String, usize)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name();
            if name.to_string_lossy().starts_with(".hoard-tmp.") {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                walk(root, &p, out);
            } else {
                let b = std::fs::read(&p).unwrap_or_default();
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, (oid_of(&b), b.len()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Differences between a directory's listing and the files it must hold.
fn differences(
    got: &BTreeMap<String, (String, usize)>,
    want: &BTreeMap<String, Spec>,
) -> Vec<String> {
    let mut d = Vec::new();
    for (p, s) in want {
        match got.get(p) {
            None => d.push(format!("{p}: missing (want {} bytes {})", s.len, s.oid)),
            Some((oid, len)) if *oid != s.oid => d.push(format!(
                "{p}: holds {len} bytes {oid}, want {} bytes {}",
                s.len, s.oid
            )),
            _ => {}
        }
    }
    for (p, (oid, len)) in got {
        if !want.contains_key(p) {
            d.push(format!("{p}: should not be there ({len} bytes {oid})"));
        }
    }
    d
}

// ---- a directory the workers change -------------------------------------------

/// A dataset directory and what it holds; files appear, are replaced and
/// go by rename or unlink, never half-written.
struct DirState {
    root: PathBuf,
    stage: PathBuf,
    files: BTreeMap<String, Spec>,
    max: usize,
}

impl DirState {
    fn new(root: PathBuf, stage: PathBuf, max: usize) -> DirState {
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&stage).unwrap();
        DirState {
            root,
            stage,
            files: BTreeMap::new(),
            max,
        }
    }

    fn mutate(
        &mut self,
        ctx: &Ctx,
        rng: &mut Rng,
        versions: Option<&Mutex<BTreeMap<String, BTreeSet<String>>>>,
    ) {
        let n = self.files.len();
        let op = if n < 4 {
            0
        } else if n >= self.max {
            2
        } else {
            match rng.below(100) {
                0..=69 => 0,
                70..=84 => 1,
                _ => 2,
            }
        };
        if op == 2 {
            let keys: Vec<String> = self.files.keys().cloned().collect();
            let rel = rng.pick(&keys).clone();
            std::fs::remove_file(self.root.join(&rel)).unwrap();
            self.files.remove(&rel);
            return;
        }
        let (spec, bytes) = ctx.gen(rng);
        let rel = if op == 1 {
            let keys: Vec<String> = self.files.keys().cloned().collect();
            rng.pick(&keys).clone()
        } else {
            let sub = *rng.pick(&["", "a/", "b/c/"]);
            format!("{sub}f{}.dat", spec.seed)
        };
        if let Some(v) = versions {
            v.lock()
                .unwrap()
                .entry(rel.clone())
                .or_default()
                .insert(spec.oid.clone());
        }
        let tmp = self.stage.join(format!("t{}", spec.seed));
        std::fs::write(&tmp, &bytes).unwrap();
        let dest = self.root.join(&rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::rename(&tmp, &dest).unwrap();
        self.files.insert(rel, spec);
    }
}

// ---- workers ---------------------------------------------------------------------

/// Runs `step` until stopped, parking while the killer checks. A panic
/// (a wrong acknowledged result, a hang) is recorded for the killer.
fn worker(ctx: &Ctx, name: &str, idx: u64, mut step: impl FnMut(&mut Rng)) {
    let mut rng = Rng::new(ctx.seed.wrapping_add(idx.wrapping_mul(0x1000_0000_01b3)));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        while !ctx.stop.load(SeqCst) {
            if ctx.paused.load(SeqCst) {
                ctx.parked.fetch_add(1, SeqCst);
                while ctx.paused.load(SeqCst) && !ctx.stop.load(SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                ctx.parked.fetch_sub(1, SeqCst);
                continue;
            }
            step(&mut rng);
            std::thread::sleep(Duration::from_millis(rng.range(20, 250)));
        }
    }));
    if let Err(e) = r {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        ctx.fail(format!(
            "worker {name} (seed {}, after kill {}): {msg}\ndaemon A log (tail):\n{}\nhub log (tail):\n{}",
            ctx.seed,
            ctx.kills(),
            ctx.a().log_tail(40),
            ctx.hub.log_tail(20)
        ));
    }
}

/// `hoard add` of 1–3 fresh files: every file listed is acknowledged
/// (README: listed only once durable), even if the command then fails.
fn add_step(ctx: &Ctx, rng: &mut Rng) {
    let dir = ctx.a().path("adds");
    std::fs::create_dir_all(&dir).unwrap();
    let mut batch: BTreeMap<String, Spec> = BTreeMap::new();
    let mut paths = Vec::new();
    for _ in 0..rng.range(1, 3) {
        let (spec, bytes) = ctx.gen(rng);
        let p = dir.join(format!("f{}", spec.seed));
        std::fs::write(&p, &bytes).unwrap();
        paths.push(p.to_str().unwrap().to_string());
        batch.insert(spec.oid.clone(), spec);
    }
    let mut args = vec!["add", "--json"];
    args.extend(paths.iter().map(|s| s.as_str()));
    let o = ctx.run(
        &format!("add ({} files)", paths.len()),
        A,
        ctx.hoard_a(&args),
    );
    let mut listed = 0;
    for l in text(&o.stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let Some(oid) = v["oid"].as_str() else {
            continue;
        };
        let path = v["path"].as_str().unwrap_or("");
        let spec = batch.get(oid).unwrap_or_else(|| {
            panic!(
                "hoard add listed {path} as {oid}, which is none of the files it was given:\n{}",
                show(&o)
            )
        });
        listed += 1;
        ctx.a_acked
            .lock()
            .unwrap()
            .file(spec, &format!("hoard add {path}"), ctx.kills());
    }
    if o.status.success() && listed < paths.len() {
        panic!(
            "hoard add exited 0 but listed {listed} of {} files:\n{}",
            paths.len(),
            show(&o)
        );
    }
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

struct GitState {
    /// Written, not yet acknowledged as committed: path → content.
    pending: BTreeMap<String, Spec>,
    /// A failed round may have left pointers staged whose content is not
    /// stored: clean them again.
    renormalize: bool,
    commits: u64,
}

/// `git add` + `git commit` of 1–2 new tracked files. Acknowledged: both
/// exited 0, the filter said nothing (it names files it could not store),
/// and HEAD holds each file's pointer.
fn git_step(ctx: &Ctx, rng: &mut Rng, g: &mut GitState) {
    let u = ctx.user;
    let repo = &ctx.repo;
    for _ in 0..rng.range(1, 2) {
        let (spec, bytes) = ctx.gen(rng);
        let rel = format!("data/g{}.bin", spec.seed);
        common::git::write(repo, &rel, &bytes);
        g.pending.insert(rel, spec);
    }
    let rels: Vec<&str> = g.pending.keys().map(|s| s.as_str()).collect();
    let mut args = vec!["add", "--"];
    args.extend(&rels);
    let o = ctx.run("git add", A, u.git_cmd(repo, &args));
    let mut ok = o.status.success() && o.stderr.is_empty();
    if ok && g.renormalize {
        let mut args = vec!["add", "--renormalize", "--"];
        args.extend(&rels);
        let o = ctx.run("git add --renormalize", A, u.git_cmd(repo, &args));
        ok = o.status.success() && o.stderr.is_empty();
    }
    if !ok {
        g.renormalize = true;
        return;
    }
    g.commits += 1;
    let msg = format!("c{}", g.commits);
    let o = ctx.run(
        "git commit",
        A,
        u.git_cmd(repo, &["commit", "-q", "-m", &msg]),
    );
    if !o.status.success() || !o.stderr.is_empty() {
        g.renormalize = true;
        return;
    }
    for (rel, spec) in &g.pending {
        let o = ctx.run(
            "git cat-file",
            0,
            u.git_cmd(repo, &["cat-file", "-p", &format!("HEAD:{rel}")]),
        );
        assert!(
            o.status.success() && text(&o.stdout) == spec.pointer(),
            "git committed {rel} but HEAD does not hold its pointer {}:\n{}",
            spec.oid,
            show(&o)
        );
        ctx.a_acked
            .lock()
            .unwrap()
            .file(spec, &format!("git commit {msg} of {rel}"), ctx.kills());
    }
    g.pending.clear();
    g.renormalize = false;
}

/// The watched dataset `w`: change it, then sometimes `snapshot` (the
/// watcher's view, or `--rescan`: exactly the directory) and `tag`.
fn dataset_step(ctx: &Ctx, rng: &mut Rng, d: &mut DirState, tags: &mut u64) {
    for _ in 0..rng.range(1, 2) {
        d.mutate(ctx, rng, Some(&ctx.w_versions));
    }
    if !rng.chance(60) {
        return;
    }
    let rescan = rng.chance(50);
    let m = format!("after kill {}", ctx.kills());
    let mut args = vec!["snapshot", "w", "--json", "-m", &m];
    if rescan {
        args.push("--rescan");
    }
    let what = if rescan {
        "snapshot w --rescan"
    } else {
        "snapshot w"
    };
    let o = ctx.run(what, A, ctx.hoard_a(&args));
    if !o.status.success() {
        return;
    }
    let v = last_json(&o).unwrap_or_else(|| panic!("{what}: no JSON:\n{}", show(&o)));
    let id = v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no id:\n{}", show(&o)))
        .to_string();
    let expect = if rescan {
        Expect::Exact(d.files.clone())
    } else {
        Expect::Subset
    };
    let kill = ctx.kills();
    ctx.a_acked.lock().unwrap().snaps.push(AckSnap {
        id: id.clone(),
        dataset: "w",
        expect,
        how: format!("hoard {what} (unchanged: {})", v["unchanged"]),
        kill,
    });
    if rng.chance(30) {
        *tags += 1;
        let tag = format!("t{tags}");
        let o = ctx.run("tag", A, ctx.hoard_a(&["tag", "w", &tag, &id]));
        if o.status.success() {
            ctx.a_acked
                .lock()
                .unwrap()
                .tags
                .push(("w", tag, id, ctx.kills()));
        }
    }
}

/// A to the hub: `push` of up to 4 acknowledged files the hub is not known
/// to have, or `dataset push w`.
fn push_step(ctx: &Ctx, rng: &mut Rng) {
    if rng.chance(50) {
        let candidates: Vec<Spec> = {
            let a = ctx.a_acked.lock().unwrap();
            let h = ctx.hub_acked.lock().unwrap();
            a.files
                .values()
                .filter(|f| !f.how.starts_with("hoard fetch") && !h.files.contains_key(&f.spec.oid))
                .map(|f| f.spec.clone())
                .collect()
        };
        if candidates.is_empty() {
            return;
        }
        let mut picked: BTreeMap<String, Spec> = BTreeMap::new();
        for _ in 0..4 {
            let s = rng.pick(&candidates);
            picked.insert(s.oid.clone(), s.clone());
        }
        let mut args = vec!["push", "origin"];
        args.extend(picked.keys().map(|s| s.as_str()));
        args.push("--json");
        let o = ctx.run(
            &format!("push ({} files)", picked.len()),
            A | HUB,
            ctx.hoard_a(&args),
        );
        if o.status.success() {
            let kill = ctx.kills();
            let mut h = ctx.hub_acked.lock().unwrap();
            h.pushes += 1;
            for s in picked.values() {
                h.file(s, "hoard push origin (from A)", kill);
            }
        }
    } else {
        let o = ctx.run(
            "dataset push w",
            A | HUB,
            ctx.hoard_a(&["dataset", "push", "w", "origin", "--json"]),
        );
        if !o.status.success() {
            return;
        }
        let v = last_json(&o).unwrap_or_else(|| panic!("dataset push: no JSON:\n{}", show(&o)));
        let Some(id) = v["snapshot"].as_str() else {
            panic!(
                "dataset push w exited 0 without naming the snapshot:\n{}",
                show(&o)
            );
        };
        let expect = ctx
            .a_acked
            .lock()
            .unwrap()
            .expect_of(id)
            .unwrap_or(Expect::Unknown);
        let kill = ctx.kills();
        let mut h = ctx.hub_acked.lock().unwrap();
        h.pushes += 1;
        h.snaps.push(AckSnap {
            id: id.to_string(),
            dataset: "w",
            expect,
            how: "hoard dataset push w origin (from A)".into(),
            kill,
        });
    }
}

/// The hub to A: `fetch` of B's files the hub acknowledged, or `clone
/// origin/feed DIR` (whose DIR must then hold exactly that snapshot).
fn pull_step(ctx: &Ctx, rng: &mut Rng, clone_dir: &Path) {
    if rng.chance(50) {
        let candidates: Vec<Spec> = {
            let a = ctx.a_acked.lock().unwrap();
            ctx.hub_b_files
                .lock()
                .unwrap()
                .iter()
                .filter(|s| !a.files.contains_key(&s.oid))
                .cloned()
                .collect()
        };
        if candidates.is_empty() {
            return;
        }
        let mut picked: BTreeMap<String, Spec> = BTreeMap::new();
        for _ in 0..3 {
            let s = rng.pick(&candidates);
            picked.insert(s.oid.clone(), s.clone());
        }
        let mut args = vec!["fetch", "origin"];
        args.extend(picked.keys().map(|s| s.as_str()));
        args.push("--json");
        let o = ctx.run(
            &format!("fetch ({} files)", picked.len()),
            A | HUB,
            ctx.hoard_a(&args),
        );
        if o.status.success() {
            let kill = ctx.kills();
            let mut a = ctx.a_acked.lock().unwrap();
            for s in picked.values() {
                a.file(s, "hoard fetch origin (B's file)", kill);
            }
        }
    } else {
        let dir = clone_dir.to_str().unwrap();
        let o = ctx.run(
            "clone origin/feed",
            A | HUB,
            ctx.hoard_a(&["clone", "origin/feed", dir, "--json"]),
        );
        if !o.status.success() {
            return;
        }
        let v = last_json(&o).unwrap_or_else(|| panic!("clone: no JSON:\n{}", show(&o)));
        let Some(id) = v["snapshot"].as_str() else {
            panic!("clone exited 0 without naming the snapshot:\n{}", show(&o));
        };
        let want = ctx.feed_snaps.lock().unwrap().get(id).cloned();
        if let Some(want) = &want {
            let d = differences(&listing(clone_dir), want);
            assert!(
                d.is_empty(),
                "clone origin/feed acknowledged snapshot {id} but {dir} does not hold it:\n{}",
                d.join("\n")
            );
        }
        let kill = ctx.kills();
        ctx.a_acked.lock().unwrap().snaps.push(AckSnap {
            id: id.to_string(),
            dataset: "feed",
            expect: want.map(Expect::Exact).unwrap_or(Expect::Unknown),
            how: "hoard clone origin/feed".into(),
            kill,
        });
    }
}

/// `hoard cat` (sometimes a byte range) of an acknowledged file while
/// daemons die: it may fail, but a read that exits 0 must be exact.
fn read_step(ctx: &Ctx, rng: &mut Rng) {
    let files: Vec<Spec> = {
        let a = ctx.a_acked.lock().unwrap();
        if a.files.is_empty() {
            return;
        }
        let n = a.files.len() as u64;
        let i = rng.below(n) as usize;
        a.files
            .values()
            .skip(i)
            .take(1)
            .map(|f| f.spec.clone())
            .collect()
    };
    let s = &files[0];
    let (offset, length) = if rng.chance(30) && s.len > 2 {
        let off = rng.below(s.len as u64 - 1);
        (off, rng.range(1, s.len as u64 - off))
    } else {
        (0, s.len as u64)
    };
    let (o1, l1) = (offset.to_string(), length.to_string());
    let o = ctx.run(
        "cat",
        A,
        ctx.hoard_a(&["cat", &s.oid, "--offset", &o1, "--length", &l1]),
    );
    ctx.reads.fetch_add(1, SeqCst);
    if !o.status.success() {
        ctx.reads_failed.fetch_add(1, SeqCst);
        return;
    }
    let want = &s.bytes()[offset as usize..(offset + length) as usize];
    assert!(
        o.stdout == want,
        "hoard cat {} --offset {offset} --length {length} exited 0 with {} bytes that are not the content ({} bytes expected)\nstderr: {}",
        s.oid,
        o.stdout.len(),
        want.len(),
        text(&o.stderr)
    );
}

/// B, never killed: changes feed, snapshots it (a scan: exact), pushes it,
/// and adds and pushes a standalone file, all to the hub.
fn producer_step(ctx: &Ctx, rng: &mut Rng, d: &mut DirState) {
    for _ in 0..rng.range(1, 2) {
        d.mutate(ctx, rng, None);
    }
    let o = ctx.run(
        "B: snapshot feed",
        B,
        ctx.hoard_b(&["snapshot", "feed", "--json"]),
    );
    if o.status.success() {
        if let Some(id) = last_json(&o).and_then(|v| v["id"].as_str().map(str::to_string)) {
            ctx.feed_snaps.lock().unwrap().insert(id, d.files.clone());
        }
    }
    if rng.chance(70) {
        let o = ctx.run(
            "B: dataset push feed",
            B | HUB,
            ctx.hoard_b(&["dataset", "push", "feed", "origin", "--json"]),
        );
        if o.status.success() {
            let v = last_json(&o).unwrap_or_default();
            let Some(id) = v["snapshot"].as_str() else {
                panic!(
                    "B: dataset push feed exited 0 without naming the snapshot:\n{}",
                    show(&o)
                );
            };
            let expect = ctx
                .feed_snaps
                .lock()
                .unwrap()
                .get(id)
                .cloned()
                .map(Expect::Exact)
                .unwrap_or(Expect::Unknown);
            let kill = ctx.kills();
            let mut h = ctx.hub_acked.lock().unwrap();
            h.pushes += 1;
            h.snaps.push(AckSnap {
                id: id.to_string(),
                dataset: "feed",
                expect,
                how: "hoard dataset push feed origin (from B)".into(),
                kill,
            });
        }
    }
    let (spec, bytes) = ctx.gen(rng);
    let p = ctx.b.path(&format!("adds/f{}", spec.seed));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, &bytes).unwrap();
    let o = ctx.run("B: add", B, ctx.hoard_b(&["add", p.to_str().unwrap()]));
    let _ = std::fs::remove_file(&p);
    if !o.status.success() {
        return;
    }
    let o = ctx.run(
        "B: push (1 file)",
        B | HUB,
        ctx.hoard_b(&["push", "origin", &spec.oid, "--json"]),
    );
    if o.status.success() {
        let kill = ctx.kills();
        let mut h = ctx.hub_acked.lock().unwrap();
        h.pushes += 1;
        h.file(&spec, "hoard push origin (from B)", kill);
        drop(h);
        ctx.hub_b_files.lock().unwrap().push(spec);
    }
}

// ---- daemons -------------------------------------------------------------------

/// The pid of the daemon holding `home`'s lock, if it is alive and is
/// that store's `hoardd` (never a recycled pid of something else).
fn lock_pid(home: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(home.join("hoardd.lock"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    if stat
        .rsplit(')')
        .next()
        .is_some_and(|r| r.trim_start().starts_with('Z'))
    {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let home = home.to_str()?.as_bytes();
    let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let mine = has(&cmdline, b"hoardd")
        && (has(&cmdline, home) || has(&environ, &[b"HOARD_HOME=", home].concat()));
    mine.then_some(pid)
}

/// Starts the hub's daemon serving the Peer API on `port` (its log is
/// appended to, kept across restarts); panics if it does not come up.
fn start_hub(hub: &Env, port: u16, k: usize) {
    std::fs::create_dir_all(&hub.home).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(hub.home.join("hoardd.log"))
        .unwrap();
    let mut child = hub
        .hoardd()
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn the hub");
    let pid = child.id() as i32;
    let exited = std::sync::Arc::new(Mutex::new(None));
    let e2 = exited.clone();
    // Reaped when it exits (killed, or stopped by Env's Drop).
    std::thread::spawn(move || {
        let s = child.wait();
        *e2.lock().unwrap() = Some(s);
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if hub.daemon_pid() == Some(pid) {
            return;
        }
        if let Some(s) = exited.lock().unwrap().as_ref() {
            panic!(
                "after kill {k}: the hub did not restart on port {port}: it exited ({s:?})\nhub log (tail):\n{}",
                hub.log_tail(30)
            );
        }
        assert!(
            Instant::now() < deadline,
            "after kill {k}: the hub did not answer within 60 s of its restart\nhub log (tail):\n{}",
            hub.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- checks --------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    kills_a: u64,
    kills_hub: u64,
    mid_op: u64,
    /// Extra kills of a restarted A early in its start-up.
    restart_kills: u64,
    restarted_by_worker: u64,
    verify_runs: u64,
    file_checks: u64,
    snapshot_checks: u64,
    ref_checks: u64,
}

/// Checks one store (A or the hub) against what it acknowledged.
struct Checker<'a> {
    ctx: &'a Ctx<'a>,
    env: &'a Env,
    name: &'static str,
    /// Where snapshots are checked out, per dataset.
    dir: PathBuf,
    k: usize,
    /// Items acknowledged before the previous kill are re-checked every
    /// `every`-th kill (1: at every kill).
    every: usize,
}

impl Checker<'_> {
    /// Whether the `i`-th item, acknowledged after kill `kill`, is checked now.
    fn due(&self, i: usize, kill: usize) -> bool {
        self.every <= 1 || kill + 1 >= self.k || i % self.every == self.k % self.every
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "after kill {} (seed {}): {}: {what}\n{} daemon log (tail):\n{}",
            self.k,
            self.ctx.seed,
            self.name,
            self.name,
            self.env.log_tail(40)
        )
    }

    fn verify(&self, t: &mut Tally) {
        let o = hoard(self.env, &["verify", "--read-data"]);
        t.verify_runs += 1;
        if !o.status.success() {
            self.fail(format!("`hoard verify --read-data` failed:\n{}", show(&o)));
        }
    }

    fn files(&self, acked: &BTreeMap<String, AckFile>, t: &mut Tally) {
        for (i, (oid, f)) in acked.iter().enumerate() {
            if !self.due(i, f.kill) {
                continue;
            }
            let o = hoard(self.env, &["cat", oid]);
            t.file_checks += 1;
            if !o.status.success() {
                self.fail(format!(
                    "acknowledged file {oid} ({} bytes; {}, after kill {}) cannot be read:\n{}",
                    f.spec.len,
                    f.how,
                    f.kill,
                    show(&o)
                ));
            }
            if oid_of(&o.stdout) != *oid {
                self.fail(format!(
                    "acknowledged file {oid} ({} bytes; {}, after kill {}) reads back as {} bytes {}",
                    f.spec.len,
                    f.how,
                    f.kill,
                    o.stdout.len(),
                    oid_of(&o.stdout)
                ));
            }
        }
    }

    /// Checks out `id` into this store's directory for `dataset`; its
    /// listing. Fails naming the snapshot if it does not check out.
    fn checkout(&self, id: &str, dataset: &str, why: &str) -> BTreeMap<String, (String, usize)> {
        let dir = self.dir.join(dataset);
        let o = hoard(
            self.env,
            &["checkout", id, "--to", dir.to_str().unwrap(), "--json"],
        );
        if !o.status.success() {
            self.fail(format!(
                "snapshot {id} of {dataset} ({why}) does not check out:\n{}",
                show(&o)
            ));
        }
        listing(&dir)
    }

    /// The number of files snapshot `id` records.
    fn file_count(&self, id: &str) -> usize {
        let o = hoard(self.env, &["log", id, "-n", "1", "--json"]);
        let v = last_json(&o);
        match v.as_ref().and_then(|v| v[0]["files"].as_u64()) {
            Some(n) => n as usize,
            None => self.fail(format!(
                "`hoard log {id} -n 1` does not show it:\n{}",
                show(&o)
            )),
        }
    }

    fn snapshots(&self, snaps: &[AckSnap], t: &mut Tally) {
        let versions = self.ctx.w_versions.lock().unwrap().clone();
        for (i, s) in snaps.iter().enumerate() {
            if !self.due(i, s.kill) {
                continue;
            }
            let why = format!("acknowledged by {} after kill {}", s.how, s.kill);
            let got = self.checkout(&s.id, s.dataset, &why);
            t.snapshot_checks += 1;
            match &s.expect {
                Expect::Exact(want) => {
                    let d = differences(&got, want);
                    if !d.is_empty() {
                        self.fail(format!(
                            "snapshot {} of {} ({why}) checks out wrong:\n{}",
                            s.id,
                            s.dataset,
                            d.join("\n")
                        ));
                    }
                }
                Expect::Subset | Expect::Unknown => {
                    if let Expect::Subset = s.expect {
                        for (p, (oid, len)) in &got {
                            if !versions.get(p).is_some_and(|v| v.contains(oid)) {
                                self.fail(format!(
                                    "snapshot {} of {} ({why}) holds {p} as {len} bytes {oid}, which that path never held",
                                    s.id, s.dataset
                                ));
                            }
                        }
                    }
                    let n = self.file_count(&s.id);
                    if n != got.len() {
                        self.fail(format!(
                            "snapshot {} of {} ({why}) records {n} files but checks out {}",
                            s.id,
                            s.dataset,
                            got.len()
                        ));
                    }
                }
            }
        }
    }

    /// `dataset`'s history here (newest first), from `hoard log`.
    fn history(&self, dataset: &str) -> Vec<(String, usize)> {
        let o = hoard(self.env, &["log", dataset, "--json"]);
        if !o.status.success() {
            self.fail(format!("`hoard log {dataset}` failed:\n{}", show(&o)));
        }
        let v = last_json(&o).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        (
                            s["id"].as_str().unwrap_or("").to_string(),
                            s["files"].as_u64().unwrap_or(0) as usize,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A ref must name a snapshot that checks out completely.
    fn head_complete(&self, dataset: &str, id: &str, files: usize, t: &mut Tally) {
        let got = self.checkout(
            id,
            &format!("head-{dataset}"),
            &format!("the head of {dataset}"),
        );
        t.ref_checks += 1;
        if got.len() != files {
            self.fail(format!(
                "the ref of {dataset} names snapshot {id}, which records {files} files but checks out {}",
                got.len()
            ));
        }
    }

    /// Acknowledged snapshots of `dataset` are still in its history.
    fn in_history(&self, dataset: &'static str, snaps: &[AckSnap], history: &[(String, usize)]) {
        let ids: BTreeSet<&str> = history.iter().map(|(i, _)| i.as_str()).collect();
        for s in snaps.iter().filter(|s| s.dataset == dataset) {
            if !ids.contains(s.id.as_str()) {
                self.fail(format!(
                    "snapshot {} of {dataset} (acknowledged by {} after kill {}) is not in the history of {dataset} (head {:?})",
                    s.id,
                    s.how,
                    s.kill,
                    history.first().map(|h| &h.0)
                ));
            }
        }
    }
}

/// Seconds since `t`, and resets it.
fn lap(t: &mut Instant) -> f64 {
    let s = t.elapsed().as_secs_f64();
    *t = Instant::now();
    s
}

/// Checks A; returns how long each part took.
fn check_a(ctx: &Ctx, k: usize, every: usize, t: &mut Tally) -> String {
    let (files, snaps, tags) = {
        let a = ctx.a_acked.lock().unwrap();
        (a.files.clone(), a.snaps.clone(), a.tags.clone())
    };
    let c = Checker {
        ctx,
        env: ctx.a(),
        name: "A",
        dir: ctx.a().path("check"),
        k,
        every,
    };
    let mut at = Instant::now();
    c.verify(t);
    let tv = lap(&mut at);
    c.files(&files, t);
    let tf = lap(&mut at);
    c.snapshots(&snaps, t);
    let ts = lap(&mut at);
    // Every dataset ref names a complete snapshot.
    let o = hoard(ctx.a(), &["dataset", "list", "--json"]);
    if !o.status.success() {
        c.fail(format!("`hoard dataset list` failed:\n{}", show(&o)));
    }
    for d in last_json(&o)
        .unwrap_or_default()
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = d["name"].as_str().unwrap_or("?").to_string();
        if let Some(id) = d["head"]["id"].as_str() {
            let n = d["head"]["files"].as_u64().unwrap_or(0) as usize;
            c.head_complete(&name, id, n, t);
        }
    }
    // w only ever moves forward here (feed's clones skip versions, so its
    // history is partial by design).
    let w: Vec<AckSnap> = snaps.iter().filter(|s| s.dataset == "w").cloned().collect();
    if !w.is_empty() {
        c.in_history("w", &w, &c.history("w"));
    }
    for (ds, tag, id, kill) in &tags {
        let o = hoard(
            ctx.a(),
            &["log", &format!("{ds}@{tag}"), "-n", "1", "--json"],
        );
        t.ref_checks += 1;
        let got = last_json(&o).and_then(|v| v[0]["id"].as_str().map(str::to_string));
        if got.as_deref() != Some(id) {
            c.fail(format!(
                "tag {ds}@{tag} (put on {id} after kill {kill}) names {got:?}:\n{}",
                show(&o)
            ));
        }
    }
    format!(
        "A: verify {tv:.1} s, {} files {tf:.1} s, {} snapshots {ts:.1} s, refs {:.1} s",
        files.len(),
        snaps.len(),
        lap(&mut at)
    )
}

/// Checks the hub; returns how long each part took.
fn check_hub(ctx: &Ctx, k: usize, every: usize, t: &mut Tally) -> String {
    let (files, snaps) = {
        let h = ctx.hub_acked.lock().unwrap();
        (h.files.clone(), h.snaps.clone())
    };
    let c = Checker {
        ctx,
        env: ctx.hub,
        name: "hub",
        dir: ctx.hub.path("check"),
        k,
        every,
    };
    let mut at = Instant::now();
    c.verify(t);
    let tv = lap(&mut at);
    c.files(&files, t);
    let tf = lap(&mut at);
    c.snapshots(&snaps, t);
    let ts = lap(&mut at);
    for ds in ["w", "feed"] {
        let o = hoard(ctx.hub, &["log", ds, "--json"]);
        let pushed: Vec<AckSnap> = snaps.iter().filter(|s| s.dataset == ds).cloned().collect();
        if !o.status.success() {
            if pushed.is_empty() {
                continue; // never pushed (yet)
            }
            c.fail(format!("`hoard log {ds}` failed:\n{}", show(&o)));
        }
        let history = c.history(ds);
        if let Some((head, n)) = history.first() {
            c.head_complete(ds, head, *n, t);
        }
        c.in_history(ds, &pushed, &history);
    }
    format!(
        "hub: verify {tv:.1} s, {} files {tf:.1} s, {} snapshots {ts:.1} s, refs {:.1} s",
        files.len(),
        snaps.len(),
        lap(&mut at)
    )
}

/// At the end: the acknowledged git files come back through smudge.
fn check_git(ctx: &Ctx, t: &mut Tally) {
    let u = ctx.user;
    let repo = &ctx.repo;
    let acked: Vec<(String, Spec)> = {
        let a = ctx.a_acked.lock().unwrap();
        a.files
            .values()
            .filter_map(|f| {
                let rel = f.how.split(" of ").nth(1)?;
                f.how
                    .starts_with("git commit")
                    .then(|| (rel.to_string(), f.spec.clone()))
            })
            .collect()
    };
    std::fs::remove_dir_all(repo.join("data")).unwrap();
    let o = u.git(repo, &["checkout", "--", "data"]);
    assert!(
        o.status.success(),
        "at the end: git checkout -- data failed:\n{}\ndaemon A log (tail):\n{}",
        show(&o),
        ctx.a().log_tail(40)
    );
    for (rel, spec) in &acked {
        let got = std::fs::read(repo.join(rel)).unwrap_or_default();
        t.file_checks += 1;
        assert!(
            oid_of(&got) == spec.oid,
            "at the end: git checkout wrote {rel} as {} bytes {}, not its committed content {} ({} bytes)\ngit stderr: {}",
            got.len(),
            oid_of(&got),
            spec.oid,
            spec.len,
            text(&o.stderr)
        );
    }
}

// ---- the run ---------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn pause(ctx: &Ctx, workers: usize, k: usize) {
    ctx.paused.store(true, SeqCst);
    let deadline = Instant::now() + CMD_LIMIT * 4;
    while ctx.parked.load(SeqCst) < workers {
        ctx.check_failed();
        assert!(
            Instant::now() < deadline,
            "after kill {k}: the workers did not pause (commands in flight: {:?})",
            ctx.inflight.lock().unwrap().values().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn resume(ctx: &Ctx) {
    ctx.paused.store(false, SeqCst);
}

/// Kills the daemon of `env` (A or the hub) with SIGKILL; returns its pid
/// and the commands in flight against it at that moment.
fn kill(ctx: &Ctx, env: &Env, bit: u8, k: usize) -> (i32, Vec<String>) {
    // A may be down (killed, not yet restarted by a worker): give the
    // workers a moment, then start it.
    let deadline = Instant::now() + Duration::from_secs(3);
    let pid = loop {
        if let Some(p) = lock_pid(&env.home) {
            break p;
        }
        if Instant::now() > deadline {
            assert!(bit == A, "kill {k}: the hub is not running");
            let o = hoard(env, &["daemon", "start"]);
            assert!(
                o.status.success(),
                "kill {k}: cannot start daemon A:\n{}",
                show(&o)
            );
        }
        ctx.nap(10);
    };
    (pid, kill_pid(ctx, pid, bit, k))
}

/// SIGKILLs `pid` (a daemon of ours); the commands in flight against it.
fn kill_pid(ctx: &Ctx, pid: i32, bit: u8, k: usize) -> Vec<String> {
    let inflight = {
        let g = ctx.inflight.lock().unwrap();
        unsafe { libc::kill(pid, libc::SIGKILL) };
        ctx.kill.store(k, SeqCst);
        g.values()
            .filter(|(_, t)| t & bit != 0)
            .map(|(w, _)| w.clone())
            .collect::<Vec<_>>()
    };
    assert!(
        wait_gone_for(pid, Duration::from_secs(30)),
        "kill {k}: pid {pid} did not die"
    );
    inflight
}

fn in_flight(v: &[String]) -> String {
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}

#[test]
fn crash_thrash() {
    let started = Instant::now();
    let kills = env_u64("HOARD_CRASH_KILLS").unwrap_or(8) as usize;
    let recheck = env_u64("HOARD_CRASH_RECHECK").unwrap_or(1).max(1) as usize;
    let sabotage = std::env::var("HOARD_CRASH_SABOTAGE").unwrap_or_default();
    let seed = env_u64("HOARD_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            % 1_000_000_007
    });
    println!(
        "crash-thrash seed {seed} (HOARD_CRASH_SEED={seed} repeats the schedule), {kills} kills, \
         older acknowledged items re-checked every {recheck} kill(s)"
    );
    let config = "[store]\npack_target = 4194304\n\n[watch]\ndebounce_ms = 200\n";

    // The hub, on a port it keeps across restarts.
    let hub = Env::new();
    std::fs::create_dir_all(&hub.home).unwrap();
    std::fs::write(hub.home.join("config.toml"), config).unwrap();
    let port = common::free_port();
    start_hub(&hub, port, 0);
    let url = format!("http://127.0.0.1:{port}");
    let token = hub.token(true);

    // A: a git user's store with the hub as origin, a watched dataset
    // auto-synced there, a repository tracking data/**.
    let user = User::without_hoard();
    std::fs::create_dir_all(&user.env.home).unwrap();
    std::fs::write(user.env.home.join("config.toml"), config).unwrap();
    user.hoard_in(&user.home, &["install"]);
    let a = &user.env;
    a.ok(&["remote", "add", "origin", &url, "--token", &token]);
    let wdir = a.path("w");
    std::fs::create_dir_all(&wdir).unwrap();
    a.ok(&[
        "dataset",
        "add",
        "w",
        wdir.to_str().unwrap(),
        "--watch",
        "--remote",
        "origin",
    ]);
    let repo = user.repo("repo", &["data/**"]);
    user.git_ok(&repo, &["add", ".gitattributes"]);
    user.git_ok(&repo, &["commit", "-q", "-m", "track data"]);

    // B: feeds the hub.
    let b = Env::new();
    b.ok(&["remote", "add", "origin", &url, "--token", &token]);
    let fdir = b.path("feed");
    std::fs::create_dir_all(&fdir).unwrap();
    b.ok(&["dataset", "add", "feed", fdir.to_str().unwrap()]);

    let ctx = Ctx {
        user: &user,
        hub: &hub,
        b: &b,
        repo: repo.clone(),
        hub_port: port,
        seed,
        stop: AtomicBool::new(false),
        paused: AtomicBool::new(false),
        parked: AtomicUsize::new(0),
        kill: AtomicUsize::new(0),
        seeds: AtomicU64::new((seed % 1_000_000) << 24),
        next_cmd: AtomicU64::new(0),
        inflight: Mutex::new(BTreeMap::new()),
        failure: Mutex::new(None),
        a_acked: Mutex::new(Acked::default()),
        hub_acked: Mutex::new(Acked::default()),
        w_versions: Mutex::new(BTreeMap::new()),
        feed_snaps: Mutex::new(BTreeMap::new()),
        hub_b_files: Mutex::new(Vec::new()),
        commands: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        reads: AtomicU64::new(0),
        reads_failed: AtomicU64::new(0),
    };
    let ctx = &ctx;
    let mut t = Tally::default();
    const WORKERS: usize = 7;

    std::thread::scope(|s| {
        let _stop = StopOnDrop(&ctx.stop);
        s.spawn(move || worker(ctx, "add", 1, |r| add_step(ctx, r)));
        s.spawn(move || {
            let mut g = GitState {
                pending: BTreeMap::new(),
                renormalize: false,
                commits: 0,
            };
            worker(ctx, "git", 2, |r| git_step(ctx, r, &mut g))
        });
        s.spawn(move || {
            let mut d = DirState::new(ctx.a().path("w"), ctx.a().path("stage-w"), W_MAX);
            let mut tags = 0;
            worker(ctx, "dataset", 3, |r| {
                dataset_step(ctx, r, &mut d, &mut tags)
            })
        });
        s.spawn(move || worker(ctx, "push", 4, |r| push_step(ctx, r)));
        s.spawn(move || {
            let dir = ctx.a().path("feed-clone");
            worker(ctx, "pull", 5, |r| pull_step(ctx, r, &dir))
        });
        s.spawn(move || worker(ctx, "read", 6, |r| read_step(ctx, r)));
        s.spawn(move || {
            let mut d = DirState::new(ctx.b.path("feed"), ctx.b.path("stage-feed"), FEED_MAX);
            worker(ctx, "B", 7, |r| producer_step(ctx, r, &mut d))
        });

        let mut rng = Rng::new(seed);
        for k in 1..=kills {
            let load_ms = rng.range(50, 1500);
            ctx.nap(load_ms);
            let on_hub = k % 4 == 0;
            let (env, name, bit) = if on_hub {
                (ctx.hub, "hub", HUB)
            } else {
                (ctx.a(), "A", A)
            };
            let (pid, inflight) = kill(ctx, env, bit, k);
            if sabotage == "pack" && k == 2 {
                // Proves the suite can fail: damage A's largest pack.
                let p = a
                    .packs()
                    .into_iter()
                    .max_by_key(|p| p.metadata().unwrap().len())
                    .unwrap();
                let mut b = std::fs::read(&p).unwrap();
                let i = b.len() / 2;
                b[i] ^= 0x55;
                std::fs::write(&p, b).unwrap();
                println!("sabotage: flipped a byte at {i} of {}", p.display());
            }
            if on_hub {
                t.kills_hub += 1;
            } else {
                t.kills_a += 1;
            }
            if !inflight.is_empty() {
                t.mid_op += 1;
            }
            println!(
                "kill {k}/{kills}: SIGKILL {name} (pid {pid}) after {load_ms} ms; in flight against it: {}",
                in_flight(&inflight)
            );
            // Now and then also the daemon a worker starts next, early in
            // its start-up (recovering from the kill).
            if !on_hub && rng.chance(25) {
                let deadline = Instant::now() + Duration::from_secs(5);
                while lock_pid(&a.home).is_none() && Instant::now() < deadline {
                    ctx.nap(1);
                }
                if let Some(p) = lock_pid(&a.home) {
                    let ms = rng.range(0, 300);
                    ctx.nap(ms);
                    let inflight = kill_pid(ctx, p, A, k);
                    t.restart_kills += 1;
                    println!(
                        "  and SIGKILL the restarted A (pid {p}) {ms} ms after it took the lock; in flight: {}",
                        in_flight(&inflight)
                    );
                }
            }
            // Workers go on meanwhile: they fail, or start A again.
            ctx.nap(rng.range(0, 1000));
            if on_hub {
                start_hub(ctx.hub, ctx.hub_port, k);
            }
            pause(ctx, WORKERS, k);
            let restarted = if on_hub {
                "by the test".to_string()
            } else if let Some(p) = lock_pid(&a.home) {
                t.restarted_by_worker += 1;
                format!("by a worker's command (pid {p})")
            } else {
                "by `hoard daemon start`".to_string()
            };
            let o = hoard(a, &["daemon", "start"]);
            assert!(
                o.status.success(),
                "after kill {k} (seed {seed}): daemon A does not start again:\n{}\ndaemon A log (tail):\n{}",
                show(&o),
                a.log_tail(40)
            );
            let check_started = Instant::now();
            let ta = check_a(ctx, k, recheck, &mut t);
            let th = check_hub(ctx, k, recheck, &mut t);
            let (files, snaps) = {
                let (a, h) = (ctx.a_acked.lock().unwrap(), ctx.hub_acked.lock().unwrap());
                (a.files.len() + h.files.len(), a.snaps.len() + h.snaps.len())
            };
            println!(
                "  restarted {restarted}; checked in {:.1} s ({files} files, {snaps} snapshots acknowledged so far; {ta}; {th})",
                check_started.elapsed().as_secs_f64(),
            );
            resume(ctx);
        }
        // The end: everything once more, plus git's smudge and B.
        pause(ctx, WORKERS, kills);
        let ta = check_a(ctx, kills, 1, &mut t);
        let th = check_hub(ctx, kills, 1, &mut t);
        println!("final check: {ta}; {th}");
        check_git(ctx, &mut t);
        let o = hoard(ctx.b, &["verify", "--read-data"]);
        t.verify_runs += 1;
        assert!(
            o.status.success(),
            "at the end: B does not verify:\n{}",
            show(&o)
        );
        ctx.stop.store(true, SeqCst);
        resume(ctx);
    });
    ctx.check_failed();

    let (a_acked, hub_acked) = (ctx.a_acked.lock().unwrap(), ctx.hub_acked.lock().unwrap());
    let by = |how: &str| {
        a_acked
            .files
            .values()
            .filter(|f| f.how.starts_with(how))
            .count()
    };
    println!(
        "crash-thrash: seed={seed} kills={} kills_a={} kills_hub={} restart_kills={} mid_op={} restarted_by_worker={} \
         acked_files_a={} acked_add={} acked_git={} acked_fetch={} acked_snapshots_a={} acked_tags_a={} acked_pushes={} acked_files_hub={} acked_snapshots_hub={} \
         file_checks={} snapshot_checks={} ref_checks={} verify_runs={} commands={} commands_failed={} \
         reads={} reads_failed={} secs={:.0}",
        t.kills_a + t.kills_hub,
        t.kills_a,
        t.kills_hub,
        t.restart_kills,
        t.mid_op,
        t.restarted_by_worker,
        a_acked.files.len(),
        by("hoard add"),
        by("git commit"),
        by("hoard fetch"),
        a_acked.snaps.len(),
        a_acked.tags.len(),
        hub_acked.pushes,
        hub_acked.files.len(),
        hub_acked.snaps.len(),
        t.file_checks,
        t.snapshot_checks,
        t.ref_checks,
        t.verify_runs,
        ctx.commands.load(SeqCst),
        ctx.failed.load(SeqCst),
        ctx.reads.load(SeqCst),
        ctx.reads_failed.load(SeqCst),
        started.elapsed().as_secs_f64()
    );
}
