#!/usr/bin/env python3
"""Watched-dataset benchmark (issue 5).

    cargo build --release --workspace --bins
    python3 benches/watch.py [--files 100000] [--idle-secs 30]

Measures, on one daemon watching a dataset of N small files:
  idle      daemon CPU (utime+stime from /proc) over --idle-secs with nothing
            changing, and its RSS (VmRSS, VmHWM): once after ingesting the
            files for the first time, and once after a restart (start-up
            rescan answered by the stat cache, then idle)
  status    wall time of `hoard status NAME` and `hoard snapshot NAME` on the
            unchanged dataset (the whole client command: process start,
            connect, answer), median of 10
  latency   from a file's last write to the moment `hoard status` shows it
            ingested (pending 0), versus the configured debounce, and the
            time `hoard add` takes for the same file alone; median of 5
"""
import argparse, json, os, shutil, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release")
WORK = os.environ.get("HOARD_BENCH_DIR", "/var/tmp/hoard-bench")
HZ = os.sysconf("SC_CLK_TCK")


def run(env, *args):
    return subprocess.run([os.path.join(BIN, "hoard"), *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def timed(env, *args):
    t = time.perf_counter()
    out = run(env, *args)
    return time.perf_counter() - t, out


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])  # utime, stime


def mem(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def settled(env):
    """Waits until the watched dataset has been scanned and nothing is pending."""
    while True:
        d = json.loads(run(env, "dataset", "list", "--json"))[0]
        if d["changed"] is not None and d["pending"] == 0:
            return
        time.sleep(0.2)


def idle_cpu(pid, secs):
    """The daemon's CPU use over `secs` (after 3 s of quiet), in percent."""
    time.sleep(3)
    c0, t0 = cpu_ticks(pid), time.perf_counter()
    time.sleep(secs)
    c1, t1 = cpu_ticks(pid), time.perf_counter()
    return (c1 - c0) / HZ / (t1 - t0) * 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--idle-secs", type=int, default=30)
    ap.add_argument("--debounce-ms", type=int, default=1000)
    a = ap.parse_args()

    base = os.path.join(WORK, "watch")
    shutil.rmtree(base, ignore_errors=True)
    home, data = os.path.join(base, "home"), os.path.join(base, "data")
    os.makedirs(home)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(f"[watch]\ndebounce_ms = {a.debounce_ms}\n")
    per_dir = 100
    t = time.perf_counter()
    for i in range(a.files):
        d = os.path.join(data, f"d{i // per_dir // 100:03d}", f"s{i // per_dir:05d}")
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:06d}.csv"), "w") as f:
            f.write(f"{i},{i * 7 % 1000},sample row {i}\n" * (1 + i % 40))
    print(f"made {a.files} files in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    env = dict(os.environ, HOARD_HOME=home, HOARD_DAEMON=os.path.join(BIN, "hoardd"))
    run(env, "daemon", "start")
    pid = json.loads(run(env, "daemon", "status", "--json"))["pid"]
    t = time.perf_counter()
    run(env, "dataset", "add", "big", data, "--watch")
    settled(env)
    scan = time.perf_counter() - t
    dt, out = timed(env, "snapshot", "big", "--json")
    first = json.loads(out)
    print(f"initial scan+ingest of {first['files']} files: {scan:.1f} s; first snapshot {dt * 1000:.0f} ms",
          file=sys.stderr)

    idle = idle_cpu(pid, a.idle_secs)
    m = mem(pid)

    # Unchanged status / snapshot.
    st = [timed(env, "status", "big")[0] for _ in range(10)]
    sn = []
    for _ in range(10):
        dt, out = timed(env, "snapshot", "big", "--json")
        assert json.loads(out)["unchanged"], out
        sn.append(dt)
    noop = [timed(env, "daemon", "status")[0] for _ in range(10)]

    # Latency from last write to ingested.
    lat, add = [], []
    for k in range(5):
        p = os.path.join(data, f"new{k}.bin")
        payload = os.urandom(8 << 20)
        with open(p, "wb") as f:
            f.write(payload)
        t_write = time.perf_counter()
        while True:
            s = json.loads(run(env, "status", "big", "--json"))
            if s["pending"] == 0 and any(c["path"] == f"new{k}.bin" for c in s["changes"]):
                break
            time.sleep(0.02)
        lat.append(time.perf_counter() - t_write)
        q = os.path.join(base, f"copy{k}.bin")
        with open(q, "wb") as f:
            f.write(os.urandom(8 << 20))
        add.append(timed(env, "add", q)[0])
    run(env, "daemon", "stop")

    # A daemon restarted on the same store, watching the same files (the
    # usual state: a start-up rescan answered by the stat cache, then idle).
    run(env, "daemon", "start")
    pid2 = json.loads(run(env, "daemon", "status", "--json"))["pid"]
    t = time.perf_counter()
    settled(env)
    rescan = time.perf_counter() - t
    idle2 = idle_cpu(pid2, a.idle_secs)
    m2 = mem(pid2)
    run(env, "daemon", "stop")

    res = {
        "restart_rescan_s": round(rescan, 2),
        "restarted_idle_cpu_percent": round(idle2, 3),
        "restarted_rss_mb": round(m2["VmRSS"] / 1e6, 1),
        "restarted_peak_rss_mb": round(m2["VmHWM"] / 1e6, 1),
        "files": first["files"],
        "initial_scan_s": round(scan, 2),
        "idle_cpu_percent": round(idle, 3),
        "idle_secs": a.idle_secs,
        "rss_mb": round(m["VmRSS"] / 1e6, 1),
        "peak_rss_mb": round(m["VmHWM"] / 1e6, 1),
        "status_ms_median": round(statistics.median(st) * 1000, 1),
        "status_ms_runs": [round(x * 1000, 1) for x in st],
        "snapshot_unchanged_ms_median": round(statistics.median(sn) * 1000, 1),
        "client_roundtrip_ms_median": round(statistics.median(noop) * 1000, 1),
        "debounce_ms": a.debounce_ms,
        "write_to_ingested_ms_median": round(statistics.median(lat) * 1000),
        "write_to_ingested_ms_runs": [round(x * 1000) for x in lat],
        "hoard_add_8mib_ms_median": round(statistics.median(add) * 1000),
    }
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
