#!/usr/bin/env python3
"""The HTTP read gateway, measured (issue 16), all in one run on one store:

    cargo build --release --workspace --bins
    $(scripts/pyenv.sh) benches/gateway.py [--gib 1] [--reads 2000]

  random    random 64 KiB reads of a GiB file through the gateway on
            loopback (one keep-alive connection, warm: every frame read once
            before): p50/p99 latency; the same reads by `hoard cat --offset`
            for reference
  seq       sequential read of the file: fsspec (`open().read()` in 8 MiB
            blocks) vs `hoard cat > /dev/null`; throughput, medians of 3
  parquet   a two-column read of a 50-column Parquet file: pandas through
            hoard:// vs pandas from local disk: time (median of 5) and the
            bytes the gateway served vs the file's size and the columns' bytes
"""
import argparse, http.client, json, os, random, shutil, socket, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402

WORK = os.path.join(e2e.WORK, "gateway")
MB = 1e6


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(vals, p):
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(len(vals) * p / 100))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--reads", type=int, default=2000)
    a = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    src = os.path.join(WORK, "survey")
    os.makedirs(src)
    size = int(a.gib * (1 << 30))
    e2e.gen_random(os.path.join(src, "big.bin"), size)
    sys.path.insert(0, os.path.join(e2e.ROOT, "tests", "python"))
    import gateway_check

    gateway_check.make(src)
    port = free_port()
    h = e2e.Hoard("gateway", config=f'[http]\nlisten = "127.0.0.1:{port}"\n')
    base = f"http://127.0.0.1:{port}"
    try:
        h.run("dataset", "add", "survey", src)
        h.run("snapshot", "survey", "-m", "bench")
        listing = json.loads(urlget(base, "/v1/datasets/survey"))
        big = next(e for e in listing["entries"] if e["name"] == "big.bin")
        path = f"/v1/files/{big['id']}"

        # random: warm every frame first.
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", path)
        r = conn.getresponse()
        while r.read(8 << 20):
            pass
        rng = random.Random(5)
        offs = [rng.randrange(0, size - 65536) for _ in range(a.reads)]
        lat = []
        for off in offs:
            t = time.perf_counter()
            conn.request("GET", path, headers={"Range": f"bytes={off}-{off + 65535}"})
            r = conn.getresponse()
            body = r.read()
            lat.append(time.perf_counter() - t)
            assert r.status == 206 and len(body) == 65536
        cat_lat = []
        for off in offs[:100]:
            t = time.perf_counter()
            subprocess.run([os.path.join(e2e.BIN, "hoard"), "cat", big["id"], "--offset", str(off), "--length", "65536"],
                           env=h.env, stdout=subprocess.DEVNULL, check=True)
            cat_lat.append(time.perf_counter() - t)
        print(f"random 64 KiB reads of a {size / MB:.0f} MB file, n={len(lat)}: gateway p50 {pct(lat, 50) * 1e3:.2f} ms "
              f"p99 {pct(lat, 99) * 1e3:.2f} ms; `hoard cat --offset` (a process each, n=100) p50 {pct(cat_lat, 50) * 1e3:.1f} ms")

        # seq
        import fsspec
        fs = fsspec.filesystem("hoard", url=base)

        def fsspec_read():
            t = time.perf_counter()
            with fs.open(f"survey/big.bin", block_size=8 << 20) as f:
                while f.read(8 << 20):
                    pass
            return time.perf_counter() - t

        def cat_read():
            t = time.perf_counter()
            subprocess.run([os.path.join(e2e.BIN, "hoard"), "cat", big["id"]], env=h.env,
                           stdout=subprocess.DEVNULL, check=True)
            return time.perf_counter() - t

        fs_t, fs_all = e2e.median_of(3, fsspec_read)
        cat_t, cat_all = e2e.median_of(3, cat_read)
        print(f"sequential read: fsspec {size / MB / fs_t:.0f} MB/s (median of {[round(x, 2) for x in fs_all]} s), "
              f"hoard cat {size / MB / cat_t:.0f} MB/s ({[round(x, 2) for x in cat_all]} s); ratio {cat_t / fs_t:.2f}")

        # parquet
        import pandas as pd
        cols = ["c3", "c40"]
        local = os.path.join(src, "train", "wide.parquet")

        def remote():
            t = time.perf_counter()
            pd.read_parquet(f"hoard://survey/train/wide.parquet", columns=cols, storage_options={"gateway": base})
            return time.perf_counter() - t

        def localread():
            t = time.perf_counter()
            pd.read_parquet(local, columns=cols)
            return time.perf_counter() - t

        before = json.loads(urlget(base, "/v1/stats"))["bytes_served"]
        rt, _ = e2e.median_of(5, remote)
        served = (json.loads(urlget(base, "/v1/stats"))["bytes_served"] - before) / 5
        lt, _ = e2e.median_of(5, localread)
        chunks, footer = gateway_check.column_bytes(local, cols)
        fsize = os.path.getsize(local)
        print(f"parquet two of 50 columns: hoard:// {rt * 1e3:.0f} ms, local disk {lt * 1e3:.0f} ms; served {served:.0f} bytes "
              f"per read = {served / fsize:.3f} of the {fsize}-byte file, {served / (chunks + footer):.2f}x the columns + footer")
    finally:
        h.destroy()


def urlget(base, path):
    host, port = base.split("//")[1].split(":")
    c = http.client.HTTPConnection(host, int(port))
    c.request("GET", path)
    r = c.getresponse()
    return r.read()


if __name__ == "__main__":
    main()
