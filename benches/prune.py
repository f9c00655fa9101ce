#!/usr/bin/env python3
"""`hoard prune` vs `restic forget --prune`, same histories, same run (issue 14):

    scripts/bootstrap.sh --bench && cargo build --release --workspace --bins
    python3 benches/prune.py [--quick]

Two histories, each backed up by restic (`backup` per version) and
snapshotted by hoard (a dataset, `snapshot` per version):
  tree   10 versions of a 4,000-file text tree (~8 KB files; each version
         edits 15 % of the files, adds 40 and deletes 20); keep the last 3
  big    a 5 GB store: 10 versions of 500 MB of fresh incompressible data
         beside a 50 MB part that never changes; keep the last 5 (half
         expired)
For each: prune time, the pruner's peak RSS (hoard: the daemon's VmHWM,
restarted just before; restic: the process's maxrss), stored bytes before
and after, bytes rewritten by the prune vs bytes reclaimed, and for hoard a
fresh store holding only the kept versions.
"""
import argparse, json, os, random, shutil, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402

WORK = os.path.join(e2e.WORK, "prune")
MB = 1e6


def run_rss(cmd, env):
    """Runs cmd; returns (seconds, peak RSS in bytes of the process)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    if status != 0:
        sys.exit(f"{cmd} failed: {p.stderr.read().decode()}")
    return dt, ru.ru_maxrss * 1024


def tree_versions(dst, v, rng, state):
    """Writes version v of the 4k-file tree into dst (edits in place)."""
    if v == 0:
        state["files"] = [f"d{i % 40:02}/f{i:05}.txt" for i in range(4000)]
        state["next"] = 4000
        for rel in state["files"]:
            write_text(os.path.join(dst, rel), rng)
        return
    files = state["files"]
    for rel in rng.sample(files, len(files) * 15 // 100):
        write_text(os.path.join(dst, rel), rng)
    for rel in rng.sample(files, 20):
        os.remove(os.path.join(dst, rel))
        files.remove(rel)
    for _ in range(40):
        rel = f"d{rng.randrange(40):02}/f{state['next']:05}.txt"
        state["next"] += 1
        write_text(os.path.join(dst, rel), rng)
        files.append(rel)


WORDS = [("w%d" % i).encode() for i in range(5000)]


def write_text(path, rng):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    n = rng.randrange(4000, 12000)
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rng.choice(WORDS) for _ in range(12)) + b"\n"
    with open(path, "wb") as f:
        f.write(out[:n])


def big_versions(dst, v, size):
    if v == 0:
        os.makedirs(dst, exist_ok=True)
        with open(os.path.join(dst, "static.bin"), "wb") as f:
            f.write(os.urandom(50_000_000))
    with open(os.path.join(dst, "fresh.bin"), "wb") as f:
        left = size
        while left:
            n = min(left, 64 << 20)
            f.write(os.urandom(n))
            left -= n


def scenario(name, make, versions, keep):
    src = os.path.join(WORK, name, "src")
    shutil.rmtree(os.path.join(WORK, name), ignore_errors=True)
    os.makedirs(src)
    h = e2e.Hoard(f"prune-{name}")
    h.run("dataset", "add", "ds", src)
    repo = os.path.join(WORK, name, "restic")
    renv = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=repo,
                RESTIC_CACHE_DIR=os.path.join(WORK, "restic-cache"))
    e2e.sh(["restic", "init", "--repository-version", "2"], env=renv)
    kept_dirs = []
    for v in range(versions):
        make(src, v)
        h.run("snapshot", "ds", "-m", f"v{v}", "--rescan")
        e2e.sh(["restic", "backup", "--compression", "auto", "--host", "bench", src], env=renv)
        if v >= versions - keep:
            d = os.path.join(WORK, name, f"kept{v}")
            shutil.copytree(src, d)
            kept_dirs.append(d)
    r = {"versions": versions, "keep": keep}
    r["hoard_before"] = h.stats()["stored_bytes"]
    r["restic_before"] = e2e.du(repo)
    h.stop()
    h.run("daemon", "start")
    pid = h.pid()
    t = time.perf_counter()
    rep = json.loads(h.run("prune", "--keep-last", str(keep), "--grace", "0s", "--json"))
    r["hoard_seconds"] = time.perf_counter() - t
    with open(f"/proc/{pid}/status") as f:
        r["hoard_peak_rss"] = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM"))
    s = rep["sweep"]
    r["hoard_after"] = h.stats()["stored_bytes"]
    r["hoard_rewritten"] = s["bytes_written"]
    r["hoard_repacked_read"] = s["bytes_repacked"]
    r["hoard_reclaimed"] = s["stored_before"] - s["stored_after"]
    r["hoard_frames_reencoded"] = s["frames_reencoded"]
    h.run("verify", "--read-data")
    h.destroy()
    dt, rss = run_rss(["restic", "forget", "--keep-last", str(keep), "--prune"], renv)
    r["restic_seconds"], r["restic_peak_rss"] = dt, rss
    r["restic_after"] = e2e.du(repo)
    shutil.rmtree(repo, ignore_errors=True)
    fresh = e2e.Hoard(f"prune-{name}-fresh")
    fsrc = os.path.join(WORK, name, "fresh-src")
    os.makedirs(fsrc)
    fresh.run("dataset", "add", "ds", fsrc)
    for d in kept_dirs:
        shutil.rmtree(fsrc)
        shutil.copytree(d, fsrc)
        fresh.run("snapshot", "ds", "-m", "kept", "--rescan")
    r["hoard_fresh_kept"] = fresh.stats()["stored_bytes"]
    fresh.destroy()
    shutil.rmtree(os.path.join(WORK, name), ignore_errors=True)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="big: 10 × 50 MB instead of 10 × 500 MB")
    ap.add_argument("--only", choices=["tree", "big"])
    a = ap.parse_args()
    rng = random.Random(14)
    state = {}
    out = {}
    if a.only in (None, "tree"):
        out["tree"] = scenario("tree", lambda d, v: tree_versions(d, v, rng, state), 10, 3)
    size = 50_000_000 if a.quick else 500_000_000
    if a.only in (None, "big"):
        out["big"] = scenario("big", lambda d, v: big_versions(d, v, size), 10, 5)
    for k, r in out.items():
        print(f"== {k}: {r['versions']} versions, keep {r['keep']}")
        print(f"  stored before: hoard {r['hoard_before'] / MB:.1f} MB, restic {r['restic_before'] / MB:.1f} MB")
        print(f"  after prune:   hoard {r['hoard_after'] / MB:.1f} MB, restic {r['restic_after'] / MB:.1f} MB"
              f" (hoard/restic {r['hoard_after'] / r['restic_after']:.2f}); a fresh hoard store of the kept versions"
              f" {r['hoard_fresh_kept'] / MB:.1f} MB (pruned/fresh {r['hoard_after'] / r['hoard_fresh_kept']:.2f})")
        print(f"  time:          hoard {r['hoard_seconds']:.2f} s, restic {r['restic_seconds']:.2f} s"
              f" (hoard/restic {r['hoard_seconds'] / r['restic_seconds']:.2f})")
        print(f"  peak RSS:      hoard daemon {r['hoard_peak_rss'] / MB:.0f} MB, restic {r['restic_peak_rss'] / MB:.0f} MB")
        print(f"  hoard rewrote {r['hoard_rewritten'] / MB:.1f} MB (read {r['hoard_repacked_read'] / MB:.1f} MB of partly used packs)"
              f" to reclaim {r['hoard_reclaimed'] / MB:.1f} MB; {r['hoard_frames_reencoded']} frames re-encoded")
    with open(os.path.join(e2e.WORK, "prune-results.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
