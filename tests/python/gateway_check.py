"""Checks hoardd's HTTP gateway with real clients: plain urllib for the HTTP
contract, then fsspec, pandas/pyarrow, Dask (a 2-worker local cluster) and
Ray Data
through the hoard-fsspec package. Driven by tests/gateway.rs, which made
the data (see `make`), recorded it as dataset `survey` and started the
daemon; exits non-zero with the failed check's message.

    gateway_check.py make DIR            write the sample data into DIR
    gateway_check.py check CONFIG.json   run the checks
"""

import json
import os
import random
import sys
import time
import urllib.error
import urllib.request

WIDE_COLS = 50
WIDE_ROWS = 60_000
PARTS = 8


def make(root):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    os.makedirs(os.path.join(root, "train"), exist_ok=True)
    os.makedirs(os.path.join(root, "parts"), exist_ok=True)
    wide = pd.DataFrame(
        {f"c{i}": rng.standard_normal(WIDE_ROWS) for i in range(WIDE_COLS)}
    )
    wide.to_parquet(os.path.join(root, "train", "wide.parquet"), row_group_size=15_000)
    for p in range(PARTS):
        n = 5_000
        df = pd.DataFrame(
            {
                "key": np.arange(p * n, (p + 1) * n),
                "x": rng.standard_normal(n),
                "label": [f"row-{p}-{i % 97}" for i in range(n)],
            }
        )
        df.to_parquet(os.path.join(root, "parts", f"part-{p}.parquet"))
    with open(os.path.join(root, "notes with space.txt"), "w") as f:
        f.write("hello from a dataset\n" * 100)


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def http(url, method="GET", headers=None, token=None):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def stats(base):
    return json.loads(http(base + "/v1/stats")[2])


def check_http(base, src, rev):
    """The HTTP contract, with urllib."""
    local = open(os.path.join(src, "notes with space.txt"), "rb").read()
    url = f"{base}/v1/datasets/survey@{rev}/notes%20with%20space.txt"
    s, h, body = http(url, "HEAD")
    check(s == 200, f"HEAD {url}: {s}")
    check(body == b"", "HEAD has no body")
    check(int(h["Content-Length"]) == len(local), "HEAD Content-Length")
    check(h["Accept-Ranges"] == "bytes", "Accept-Ranges")
    check(h.get("Content-Encoding") is None, "no Content-Encoding")
    etag = h["ETag"]
    check(etag.startswith('"blake3:') and len(etag) == 2 + 7 + 64, f"ETag {etag}")
    s, h, body = http(url)
    check(s == 200 and body == local, "GET whole file")
    s, h, body = http(url, headers={"Range": "bytes=10-29"})
    check(s == 206 and body == local[10:30], f"Range a-b: {s}")
    check(h["Content-Range"] == f"bytes 10-29/{len(local)}", h["Content-Range"])
    check(int(h["Content-Length"]) == 20, "206 Content-Length")
    s, h, body = http(url, headers={"Range": "bytes=-7"})
    check(s == 206 and body == local[-7:], "Range -n")
    s, h, body = http(url, headers={"Range": "bytes=2000-"})
    check(s == 206 and body == local[2000:], "Range a-")
    s, h, body = http(url, headers={"Range": f"bytes={len(local)}-"})
    check(s == 416, f"Range past the end: {s}")
    check(h["Content-Range"] == f"bytes */{len(local)}", "416 Content-Range")
    s, h, body = http(url, headers={"Range": "bytes=0-1,5-6"})
    check(s == 400 and b"one range per request" in body, f"multiple ranges: {s} {body}")
    s, h, body = http(url, headers={"If-None-Match": etag})
    check(s == 304, f"If-None-Match: {s}")
    s, h, body = http(url, headers={"Range": "bytes=10-29", "If-Range": etag})
    check(s == 206 and body == local[10:30], f"If-Range with the current ETag: {s}")
    s, h, body = http(url, headers={"Range": "bytes=10-29", "If-Range": '"blake3:' + "0" * 64 + '"'})
    check(s == 200 and body == local, f"If-Range with another version's ETag gives the whole file: {s}")
    check(len(h.get("X-Hoard-Snapshot", "")) == 64, "a dataset path names its snapshot")
    s, h, body = http(url, "POST")
    check(s == 405 and "GET" in h["Allow"], f"POST: {s}")
    # The same file by id: cacheable for ever, same bytes.
    fid = etag.strip('"')
    s, h, body = http(f"{base}/v1/files/{fid}")
    check(s == 200 and body == local, "GET by id")
    check("immutable" in h["Cache-Control"], h["Cache-Control"])
    # A directory answers its listing.
    s, h, body = http(f"{base}/v1/datasets/survey@{rev}/parts")
    check(s == 200 and h["X-Hoard-Kind"] == "dir", "directory listing")
    names = sorted(e["name"] for e in json.loads(body)["entries"])
    check(names == [f"part-{p}.parquet" for p in range(PARTS)], f"listing {names}")
    # Errors say what to do.
    s, h, body = http(f"{base}/v1/datasets/survey@{rev}/nope.csv")
    check(s == 404 and b"not in snapshot" in body, f"missing path: {s} {body}")
    check(h["X-Hoard-Error"] == "not found", f"error kind header {h['X-Hoard-Error']}")
    s, h, body = http(f"{base}/v1/datasets/nosuch@v1/x")
    check(s == 404 and b"hoard" in body, f"unknown dataset: {s} {body}")
    s, h, body = http(f"{base}/v1/datasets/survey@zzzz9/x")
    check(s == 404 and b"hoard log survey" in body, f"unknown revision: {s} {body}")
    s, h, body = http(f"{base}/v1/files/blake3:{'0' * 64}")
    check(s == 404, f"unknown file id: {s}")
    s, h, body = http(f"{base}/v1/nothing")
    check(s == 404, "unknown route")


def column_bytes(path, cols):
    """Bytes of the column chunks of `cols` plus the footer."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    total = 0
    for rg in range(md.num_row_groups):
        g = md.row_group(rg)
        for c in range(g.num_columns):
            col = g.column(c)
            if col.path_in_schema in cols:
                total += col.total_compressed_size
    footer = md.serialized_size + 8
    return total, footer


def check_pandas(base, src, rev):
    import pandas as pd

    cols = ["c3", "c40"]
    local_path = os.path.join(src, "train", "wide.parquet")
    want = pd.read_parquet(local_path, columns=cols)
    before = stats(base)["bytes_served"]
    t = time.monotonic()
    got = pd.read_parquet(
        f"hoard://survey@{rev}/train/wide.parquet", columns=cols, storage_options={"gateway": base}
    )
    secs = time.monotonic() - t
    served = stats(base)["bytes_served"] - before
    check(got.equals(want), "pandas two-column read differs from the local read")
    chunks, footer = column_bytes(local_path, cols)
    size = os.path.getsize(local_path)
    ratio = served / (chunks + footer)
    print(
        f"parquet: {WIDE_COLS} columns, file {size} bytes; two columns' chunks {chunks} + footer {footer}; "
        f"gateway served {served} bytes ({ratio:.2f}x, {served / size:.3f} of the file) in {secs:.2f}s"
    )
    check(ratio <= 1.5, f"the two-column read took {ratio:.2f}x the columns' bytes")


def check_fsspec(base, src, rev, big_name):
    import fsspec
    import pickle

    fs = fsspec.filesystem("hoard", url=base)
    fs2 = pickle.loads(pickle.dumps(fs))
    check(fs2.url == base, "the filesystem pickles")
    top = fs.ls(f"survey@{rev}", detail=False)
    for want in [f"survey@{rev}/train", f"survey@{rev}/parts", f"survey@{rev}/{big_name}"]:
        check(want in top, f"ls: {want} not in {top}")
    info = fs.info(f"survey@{rev}/{big_name}")
    big_local = os.path.join(src, big_name)
    size = os.path.getsize(big_local)
    check(info["type"] == "file" and info["size"] == size, f"info {info}")
    check(fs.info(f"survey@{rev}/parts")["type"] == "directory", "info of a directory")
    found = fs.find(f"survey@{rev}/parts")
    check(len(found) == PARTS, f"find {found}")
    check(fs.isdir(f"survey@{rev}/train") and fs.isfile(f"survey@{rev}/{big_name}"), "isdir/isfile")
    check(fs.ls("", detail=False) == ["survey"], f"ls of the root: {fs.ls('', detail=False)}")
    # An open file pickles (Dask ships them) and reads the same after.
    with open(big_local, "rb") as lf, fs.open(f"survey@{rev}/{big_name}") as rf:
        rf2 = pickle.loads(pickle.dumps(rf))
        rf2.seek(12345)
        lf.seek(12345)
        check(rf2.read(1000) == lf.read(1000), "a pickled open file reads the same")
    rng = random.Random(11)
    n = 0
    with open(big_local, "rb") as lf, fs.open(f"survey@{rev}/{big_name}") as rf:
        for _ in range(200):
            off = rng.randrange(0, size)
            ln = rng.choice([1, 100, 4096, 65536, 1 << 20])
            lf.seek(off)
            rf.seek(off)
            if rf.read(ln) != lf.read(ln):
                fail(f"read of {ln} at {off} of the {size}-byte file differs")
            n += 1
        # The end, and past it.
        rf.seek(size - 10)
        lf.seek(size - 10)
        check(rf.read(100) == lf.read(100), "read at the end")
        check(rf.read(10) == b"", "read past the end")
    with open(big_local, "rb") as lf:
        lf.seek(size - 5)
        check(fs.cat_file(f"survey@{rev}/{big_name}", -5) == lf.read(), "cat_file of the last 5 bytes")
    print(f"fsspec: ls/info/find ok; {n} random reads of a {size}-byte file match")


def check_dask(base, src, rev):
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster):
        got = dd.read_parquet(f"hoard://survey@{rev}/parts/", storage_options={"url": base}).compute()
        want = dd.read_parquet(os.path.join(src, "parts")).compute()
    got = got.sort_values("key").reset_index(drop=True)
    want = want.sort_values("key").reset_index(drop=True)
    check(len(got) == len(want) and got.equals(want), "dask read differs from the local read")
    print(f"dask: {len(got)} rows from {PARTS} files on 2 workers match")


def check_ray(base, src, rev):
    """Ray Data reads a directory of Parquet files through pyarrow's
    wrapper of the fsspec filesystem (Ray on loopback only)."""
    import pandas as pd
    import pyarrow.fs as pafs
    import fsspec
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        fs = fsspec.filesystem("hoard", url=base)
        pfs = pafs.PyFileSystem(pafs.FSSpecHandler(fs))
        got = ray.data.read_parquet(f"survey@{rev}/parts", filesystem=pfs).to_pandas()
    finally:
        ray.shutdown()
    want = pd.concat(
        [pd.read_parquet(os.path.join(src, "parts", f"part-{p}.parquet")) for p in range(PARTS)]
    )
    got = got.sort_values("key").reset_index(drop=True)[list(want.columns)]
    want = want.sort_values("key").reset_index(drop=True)
    # Ray may hand back Arrow-backed dtypes: compare the values.
    same = len(got) == len(want) and all(list(got[c]) == list(want[c]) for c in want.columns)
    check(same, f"ray read differs from the local read:\n{got.head()}\n{got.dtypes}\n{want.head()}")
    print(f"ray: {len(got)} rows from {PARTS} files match")


def check_tokens(cfg):
    """A gateway that asks for tokens even on loopback."""
    base, path = cfg["token_url"], cfg["token_path"]
    s, _, body = http(base + path)
    check(s == 401 and b"token" in body, f"no token: {s} {body}")
    s, _, _ = http(base + path, token="hoard_00000000_" + "0" * 64)
    check(s == 401, f"unknown token: {s}")
    s, _, body = http(base + path, token=cfg["read_token"])
    check(s == 200 and body == open(cfg["token_file"], "rb").read(), f"read token: {s}")
    import fsspec

    fs = fsspec.filesystem("hoard", url=base, token=cfg["read_token"], skip_instance_cache=True)
    check(fs.cat_file(path.split("/v1/datasets/", 1)[1].replace("%20", " ")) == open(cfg["token_file"], "rb").read(), "fsspec with a token")
    print("tokens: none and unknown refused (401), a read token reads")


def main():
    if sys.argv[1] == "make":
        make(sys.argv[2])
        return
    cfg = json.load(open(sys.argv[2]))
    base, src, rev = cfg["url"], cfg["src"], cfg["rev"]
    check_http(base, src, rev)
    check_pandas(base, src, rev)
    check_fsspec(base, src, rev, cfg["big"])
    check_dask(base, src, rev)
    check_ray(base, src, rev)
    if "token_url" in cfg:
        check_tokens(cfg)
    print("gateway checks passed")


if __name__ == "__main__":
    main()
