#!/usr/bin/env python3
"""hoard vs git-lfs through real git, side by side on the same data in one run
(issue 3).

    scripts/bootstrap.sh --bench && cargo build --release --workspace --bins
    python3 benches/git.py [--quick] [--only small,big,checkout,versions]

Scenarios:
  small     `git add -A && git commit` of 10k small tracked files (also
            git itself without a filter, the floor)
  big       the same for ten 1 GB files (incompressible); for hoard also with
            the files already in its store (ingested earlier by `hoard add`
            or a watched dataset), where clean only hashes what git pipes
  checkout  `git checkout` between two commits that differ in all 10k files
            (also git itself)
  versions  ten successive Django releases (as tars, then as trees) committed
            one after another: hoard's stored bytes vs .git/lfs/objects

Each tool runs with its own HOME (global git config) and a fresh repository;
hoard's daemon is started before timing (it stays running in normal use).
Timed steps run 3 times (1 with --quick), the tools alternating in order;
medians and ratios are reported.

Everything runs on a freshly made ext4 file system (a loop-mounted image,
made again by each run; needs root): on a long-used ext4 the same `git
checkout` of 10k files measured 1.0 s in one directory and 4.3 s in another,
because the inode allocator scans past recently deleted inodes — noise
larger than the differences measured here.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (shared data: the Django versions)

BIN = e2e.BIN
IMAGE = os.path.join(e2e.WORK, "gitfs.img")
WORK = os.path.join(e2e.WORK, "gitfs")
R = {}


def fresh_fs(gib=60):
    """A new ext4 file system at WORK (sparse image, discard on delete)."""
    os.makedirs(WORK, exist_ok=True)
    if subprocess.run(["mountpoint", "-q", WORK]).returncode == 0:
        subprocess.run(["umount", WORK], check=True)
    if os.path.exists(IMAGE):
        os.remove(IMAGE)
    subprocess.run(["truncate", "-s", f"{gib}G", IMAGE], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", IMAGE], check=True)
    subprocess.run(["mount", "-o", "loop,discard", IMAGE, WORK], check=True)


def order(tools, run):
    return tools if run % 2 == 0 else list(reversed(tools))


def sh(cmd, env, cwd=None, **kw):
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def timed(cmds, env, cwd):
    t = time.perf_counter()
    for c in cmds:
        sh(c, env, cwd)
    return time.perf_counter() - t


def echo_filter():
    """benches/echo_filter.c built once per run (gcc)."""
    exe = os.path.join(WORK, "echo-filter")
    if not os.path.exists(exe):
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo_filter.c")
        subprocess.run(["gcc", "-O2", "-o", exe, src], check=True)
    return exe


class Tool:
    """One tool's user: HOME with global git config, a store."""

    def __init__(self, kind):
        self.kind = kind
        self.root = os.path.join(WORK, kind)
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(os.path.join(self.root, "home"))
        self.env = dict(
            os.environ,
            HOME=os.path.join(self.root, "home"),
            GIT_CONFIG_NOSYSTEM="1",
            PATH=f"{BIN}:{os.environ['PATH']}",
            HOARD_HOME=os.path.join(self.root, "store"),
            HOARD_DAEMON=os.path.join(BIN, "hoardd"),
        )
        # No background gc/maintenance: it would race the timing and cleanup.
        for k, v in (("user.email", "b@example.com"), ("user.name", "bench"), ("init.defaultBranch", "main"),
                     ("gc.auto", "0"), ("maintenance.auto", "false")):
            sh(["git", "config", "--global", k, v], self.env)
        if kind == "hoard":
            sh(["hoard", "install"], self.env, self.env["HOME"])
            sh(["hoard", "daemon", "start"], self.env)
        elif kind == "git-lfs":
            sh(["git", "lfs", "install"], self.env, self.env["HOME"])
        elif kind in ("echo", "echo-delay"):
            cmd = echo_filter() + (" --delay" if kind == "echo-delay" else "")
            sh(["git", "config", "--global", "filter.echo.process", cmd], self.env)
            sh(["git", "config", "--global", "filter.echo.required", "true"], self.env)
        # "git": git itself, no filter (the floor); "echo": git through a
        # filter that hands every file back (the floor of the protocol);
        # "echo-delay": the same answering checkouts as hoard does, delayed.

    def repo(self, name, pattern):
        d = os.path.join(self.root, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        sh(["git", "init", "-q"], self.env, d)
        if self.kind == "hoard":
            sh(["hoard", "track", pattern], self.env, d)
        elif self.kind == "git-lfs":
            sh(["git", "lfs", "track", pattern], self.env, d)
        elif self.kind in ("echo", "echo-delay"):
            with open(os.path.join(d, ".gitattributes"), "w") as f:
                f.write(f"{pattern} filter=echo -text\n")
        else:
            with open(os.path.join(d, ".gitattributes"), "w") as f:
                f.write(f"{pattern} -text\n")
        sh(["git", "add", ".gitattributes"], self.env, d)
        sh(["git", "commit", "-q", "-m", "attributes"], self.env, d)
        return d

    def reset_store(self):
        if self.kind == "hoard":
            sh(["hoard", "daemon", "stop"], self.env)
            shutil.rmtree(self.env["HOARD_HOME"], ignore_errors=True)
            sh(["hoard", "daemon", "start"], self.env)

    def stored_bytes(self, repo):
        if self.kind == "hoard":
            return json.loads(sh(["hoard", "stats", "--json"], self.env))["stored_bytes"]
        return e2e.du(os.path.join(repo, ".git", "lfs", "objects"))

    def close(self):
        if self.kind == "hoard":
            subprocess.run(["hoard", "daemon", "stop"], env=self.env, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def small_files(n, seed):
    """n files of 1–16 KiB, half text-like, half random, under data/."""
    d = os.path.join(WORK, f"src-small-{n}-{seed}")
    if os.path.isdir(d):
        return d
    import random
    rng = random.Random(seed)
    words = [b"alpha ", b"beta ", b"gamma ", b"delta,", b"42 ", b"3.14 ", b"\n", b"sample "]
    tmp = d + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for i in range(n):
        sub = os.path.join(tmp, "data", f"{i // 1000:02d}")
        os.makedirs(sub, exist_ok=True)
        size = rng.randint(1024, 16384)
        if i % 2:
            b = rng.randbytes(size)
        else:
            b = b"".join(rng.choice(words) for _ in range(size // 5))[:size]
        with open(os.path.join(sub, f"f{i:05d}.dat"), "wb") as f:
            f.write(b)
    os.rename(tmp, d)
    return d


def link_tree(src, dst):
    """Hard-links src's files into dst (no data copied; every path is new)."""
    for d, _, files in os.walk(src):
        rel = os.path.relpath(d, src)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for f in files:
            os.link(os.path.join(d, f), os.path.join(dst, rel, f))


FLOORS = (("git", "git without a filter"), ("echo", "git through an echo filter"),
          ("echo-delay", "echo filter answering `delayed`"))


def against_floors(res):
    """Each tool's median over git's own (the floors' and hoard's)."""
    if "git" in res:
        for kind in ("hoard", "echo", "echo-delay"):
            if kind in res:
                res[kind + "_vs_git"] = res[kind] / res["git"]


def floor_rows(s, goal):
    for kind, what in FLOORS:
        if kind not in s:
            continue
        if kind == "git":
            print(f"| same, {what} | {s['git']:.2f} s | | hoard {s['hoard_vs_git']:.2f}× git | {goal} |")
        else:
            print(f"| same, {what} | {s[kind]:.2f} s | | {s[kind + '_vs_git']:.2f}× git | floor |")


def bench_small(tools, runs):
    src = small_files(10_000, 1)
    res = {t.kind + "_runs": [] for t in tools}
    for run in range(runs):
        for t in order(tools, run):
            t.reset_store()
            r = t.repo("small", "data/**")
            link_tree(src, r)
            res[t.kind + "_runs"].append(
                timed([["git", "add", "-A"], ["git", "commit", "-q", "-m", "small"]], t.env, r))
            shutil.rmtree(r, ignore_errors=True)
    for t in tools:
        res[t.kind] = statistics.median(res[t.kind + "_runs"])
    res["speedup"] = res["git-lfs"] / res["hoard"]
    against_floors(res)
    R["small_10k_add_commit"] = res


def big_files(count, size):
    d = os.path.join(WORK, f"src-big-{count}x{size}")
    if os.path.isdir(d):
        return d
    tmp = d + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "data"))
    for i in range(count):
        with open(os.path.join(tmp, "data", f"big{i}.bin"), "wb") as f:
            left = size
            while left:
                n = min(left, 1 << 24)
                f.write(os.urandom(n))
                left -= n
    os.rename(tmp, d)
    return d


def bench_big(tools, runs, count, size):
    src = big_files(count, size)
    res = {"files": count, "bytes_each": size}
    times = {t.kind: [] for t in tools}
    pre = []
    for run in range(runs):
        for t in order(tools, run):
            t.reset_store()
            r = t.repo("big", "data/**")
            link_tree(src, r)
            times[t.kind].append(timed([["git", "add", "-A"], ["git", "commit", "-q", "-m", "big"]], t.env, r))
            shutil.rmtree(r, ignore_errors=True)
            if t.kind == "hoard":
                # Content the daemon already holds (hoard add / a watched dataset).
                r = t.repo("big", "data/**")
                link_tree(src, r)
                sh(["hoard", "add", os.path.join(r, "data")], t.env)
                e2e_age(os.path.join(r, "data"))
                sh(["hoard", "add", os.path.join(r, "data")], t.env)
                pre.append(timed([["git", "add", "-A"], ["git", "commit", "-q", "-m", "big"]], t.env, r))
                shutil.rmtree(r, ignore_errors=True)
    for t in tools:
        res[t.kind] = statistics.median(times[t.kind])
        res[t.kind + "_runs"] = times[t.kind]
    res["hoard_already_stored"] = statistics.median(pre)
    res["hoard_already_stored_runs"] = pre
    res["speedup"] = res["git-lfs"] / res["hoard"]
    res["speedup_already_stored"] = res["git-lfs"] / res["hoard_already_stored"]
    res["hoard_MBps"] = count * size / res["hoard"] / 1e6
    res["git-lfs_MBps"] = count * size / res["git-lfs"] / 1e6
    R["big_add_commit"] = res


def e2e_age(path):
    """Backdates mtimes so the stat cache may trust the files (racy rule)."""
    old = time.time() - 10
    for d, _, files in os.walk(path):
        for f in files:
            os.utime(os.path.join(d, f), (old, old))


def bench_checkout(tools, runs):
    a = small_files(10_000, 1)
    b = small_files(10_000, 2)
    res = {}
    repos = {}
    for t in tools:
        t.reset_store()
        r = t.repo("co", "data/**")
        repos[t.kind] = r
        link_tree(a, r)
        sh(["git", "add", "-A"], t.env, r)
        sh(["git", "commit", "-q", "-m", "a"], t.env, r)
        sh(["git", "tag", "A"], t.env, r)
        shutil.rmtree(os.path.join(r, "data"))
        link_tree(b, r)
        sh(["git", "add", "-A"], t.env, r)
        sh(["git", "commit", "-q", "-m", "b"], t.env, r)
        sh(["git", "tag", "B"], t.env, r)
    times = {t.kind: [] for t in tools}
    for run in range(runs):
        for target in ("A", "B"):
            for t in order(tools, run):
                times[t.kind].append(timed([["git", "checkout", "-q", target]], t.env, repos[t.kind]))
    for t in tools:
        r = repos[t.kind]
        res[t.kind] = statistics.median(times[t.kind])
        res[t.kind + "_runs"] = times[t.kind]
        # Sanity: the checkout really wrote content, not pointers.
        one = os.path.join("data", "00", "f00001.dat")
        with open(os.path.join(r, one), "rb") as f1, open(os.path.join(b, one), "rb") as f2:
            assert f1.read() == f2.read(), f"{t.kind}: checkout content differs"
        shutil.rmtree(r, ignore_errors=True)
    res["speedup"] = res["git-lfs"] / res["hoard"]
    against_floors(res)
    R["checkout_10k"] = res


def bench_versions(tools):
    trees, tars = e2e.versions()
    res = {"tar_input_bytes": sum(os.path.getsize(t) for t in tars),
           "tree_input_bytes": sum(e2e.du(t) for t in trees)}
    for kind, paths in (("tar", tars), ("tree", trees)):
        for t in tools:
            t.reset_store()
            r = t.repo("ver", "data/**" if kind == "tree" else "*.tar")
            total = 0.0
            for i, p in enumerate(paths):
                if kind == "tar":
                    shutil.copyfile(p, os.path.join(r, "release.tar"))
                else:
                    # The release's files at the same paths each time (a
                    # vendored tree updated in place), not under a new
                    # top directory named for each release.
                    (top,) = os.listdir(p)
                    shutil.rmtree(os.path.join(r, "data"), ignore_errors=True)
                    shutil.copytree(os.path.join(p, top), os.path.join(r, "data"), symlinks=True)
                total += timed([["git", "add", "-A"], ["git", "commit", "-q", "-m", f"v{i}"]], t.env, r)
                if i == 4:
                    res[f"{kind}_{t.kind}_5_s"] = total
            if t.kind in ("hoard", "git-lfs"):
                res[f"{kind}_{t.kind}_stored"] = t.stored_bytes(r)
            res[f"{kind}_{t.kind}_s"] = total
            shutil.rmtree(r, ignore_errors=True)
        res[f"{kind}_stored_ratio"] = res[f"{kind}_hoard_stored"] / res[f"{kind}_git-lfs_stored"]
        res[f"{kind}_5_vs_lfs"] = res[f"{kind}_hoard_5_s"] / res[f"{kind}_git-lfs_5_s"]
    R["versions"] = res


def report():
    print(json.dumps(R, indent=1))
    print("\n| scenario | hoard | git-lfs | git-lfs / hoard | target |\n| --- | --- | --- | --- | --- |")
    if "small_10k_add_commit" in R:
        s = R["small_10k_add_commit"]
        print(f"| add+commit 10k small files | {s['hoard']:.2f} s | {s['git-lfs']:.2f} s | {s['speedup']:.1f}× | ≥ 10× |")
        floor_rows(s, "≤ 2×")
    if "big_add_commit" in R:
        s = R["big_add_commit"]
        print(f"| add+commit {s['files']} × {s['bytes_each']/1e9:.1f} GB, fresh | {s['hoard']:.1f} s ({s['hoard_MBps']:.0f} MB/s) | {s['git-lfs']:.1f} s ({s['git-lfs_MBps']:.0f} MB/s) | {s['speedup']:.1f}× | ≥ 10× |")
        print(f"| same, content already in hoard's store | {s['hoard_already_stored']:.1f} s | {s['git-lfs']:.1f} s | {s['speedup_already_stored']:.1f}× | |")
    if "checkout_10k" in R:
        s = R["checkout_10k"]
        print(f"| checkout, 10k files differ | {s['hoard']:.2f} s | {s['git-lfs']:.2f} s | {s['speedup']:.1f}× | ≥ 5× |")
        floor_rows(s, "≤ 1.5×")
    if "versions" in R:
        s = R["versions"]
        for k in ("tar", "tree"):
            print(f"| 10 Django releases as {k}s ({s[k + '_input_bytes']/1e6:.0f} MB) stored | {s[k + '_hoard_stored']/1e6:.1f} MB ({s[k + '_hoard_s']:.1f} s) | {s[k + '_git-lfs_stored']/1e6:.1f} MB ({s[k + '_git-lfs_s']:.1f} s) | {1/s[k + '_stored_ratio']:.1f}× | report |")
            floors = ", ".join(f"{f} {s[k + '_' + f + '_5_s']:.1f} s" for f in ("git", "echo") if k + "_" + f + "_5_s" in s)
            print(f"| add+commit of the first 5 as {k}s | {s[k + '_hoard_5_s']:.1f} s | {s[k + '_git-lfs_5_s']:.1f} s | hoard {s[k + '_5_vs_lfs']:.2f}× git-lfs ({floors}) | ≤ 0.3× |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one run each, 2 × 256 MB big files")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    if shutil.which("git-lfs") is None:
        sys.exit("git-lfs is not installed: scripts/bootstrap.sh --bench")
    if os.geteuid() == 0:
        fresh_fs()
    else:
        print("not root: running on the existing file system (see the note on ext4 above)", file=sys.stderr)
        os.makedirs(WORK, exist_ok=True)
    only = set(filter(None, a.only.split(",")))
    runs = 1 if a.quick else 3
    tools = [Tool("hoard"), Tool("git-lfs")]
    # git itself, no filter: the floor of the per-file scenarios.
    # git through a filter that only echoes: the floor of the protocol.
    floor = tools + [Tool("git"), Tool("echo")]
    # The same answering checkouts `delayed`, as hoard does.
    co_floor = floor + [Tool("echo-delay")]
    try:
        if not only or "small" in only:
            bench_small(floor, runs)
        if not only or "checkout" in only:
            bench_checkout(co_floor, runs)
        if not only or "big" in only:
            count, size = (2, 256 << 20) if a.quick else (10, 1 << 30)
            bench_big(tools, runs, count, size)
        if not only or "versions" in only:
            bench_versions(floor)
    finally:
        for t in co_floor:
            t.close()
    report()


if __name__ == "__main__":
    main()
