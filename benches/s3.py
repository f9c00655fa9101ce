#!/usr/bin/env python3
"""A hub on local disk vs a hub whose packs are in Garage (one node, and a
3-node cluster with replication_factor 3), side by side in one run on the
same data (issue 15).

    scripts/bootstrap.sh --bench && cargo build --release --workspace --bins
    scripts/garage.sh            # Garage 2.x, built once per machine
    python3 benches/s3.py [--quick]

The data is benches/sync.py's fresh-pull set (a 2 GiB incompressible file
and ten Django release tars; --quick: 256 MiB and the tars). For each hub:
  push     a client `hoard push`es every file to an empty hub: time, MB/s;
           bucket requests per pack written
  pull x1  a fresh client `hoard fetch`es every file from the hub restarted
           (its read cache cold): time, MB/s, bucket bytes read per byte the
           hub sent (a counting proxy in front of the hub), requests per pack
  pull x4  four fresh clients fetch everything at once from the restarted
           hub: wall time, bucket bytes read per copy served
  updates  a client holding release k fetches release k+1's tar, k = 0..8:
           time and bytes on the wire for the 9 updates
"""
import argparse, json, os, shutil, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402
import sync  # noqa: E402

BIN = e2e.BIN
WORK = os.path.join(e2e.WORK, "s3")
sync.WORK = WORK
GARAGE = os.environ.get("HOARD_GARAGE", "/var/cache/hoard-ci/garage/bin/garage")
KEY_ID = "GK0123456789abcdef01234567"
SECRET = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
R = {}


class Garage:
    """n Garage nodes on loopback serving bucket `hoard`."""

    def __init__(self, n):
        self.dir = os.path.join(WORK, f"garage{n}")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.procs, self.cfgs, self.s3 = [], [], []
        for i in range(n):
            d = os.path.join(self.dir, f"node{i}")
            os.makedirs(d)
            rpc, s3, admin = sync.free_port(), sync.free_port(), sync.free_port()
            cfg = os.path.join(d, "garage.toml")
            with open(cfg, "w") as f:
                f.write(f'metadata_dir = "{d}/meta"\ndata_dir = "{d}/data"\ndb_engine = "lmdb"\n'
                        f'replication_factor = {n}\ncompression_level = "none"\n'
                        f'rpc_bind_addr = "127.0.0.1:{rpc}"\nrpc_public_addr = "127.0.0.1:{rpc}"\n'
                        f'rpc_secret = "{SECRET}"\n[s3_api]\ns3_region = "garage"\n'
                        f'api_bind_addr = "127.0.0.1:{s3}"\nroot_domain = ".s3.garage.localhost"\n'
                        f'[admin]\napi_bind_addr = "127.0.0.1:{admin}"\nadmin_token = "{SECRET}"\n')
            os.chmod(cfg, 0o600)
            env = dict(os.environ, RUST_LOG="garage=warn")
            args = [GARAGE, "-c", cfg, "server"]
            if n == 1:
                args += ["--single-node", "--default-access-key", "--default-bucket"]
                env.update(GARAGE_DEFAULT_ACCESS_KEY=KEY_ID, GARAGE_DEFAULT_SECRET_KEY=SECRET,
                           GARAGE_DEFAULT_BUCKET="hoard")
            log = open(os.path.join(d, "garage.log"), "w")
            self.procs.append(subprocess.Popen(args, env=env, stdout=log, stderr=log))
            self.cfgs.append(cfg)
            self.s3.append(f"http://127.0.0.1:{s3}")
            wait_port(s3)
        if n > 1:
            ids = [next(l for l in self.cli(i, "node", "id").splitlines() if "@" in l).strip() for i in range(n)]
            for i in ids[1:]:
                self.cli(0, "node", "connect", i)
            for i in ids:
                self.cli(0, "layout", "assign", "-z", "dc1", "-c", "10G", i.split("@")[0])
            self.cli(0, "layout", "apply", "--version", "1")
            for _ in range(300):
                if subprocess.run([GARAGE, "-c", self.cfgs[0], "key", "import", "--yes", "-n", "hoard", KEY_ID,
                                   SECRET], capture_output=True).returncode == 0:
                    break
                time.sleep(0.2)
            self.cli(0, "bucket", "create", "hoard")
            self.cli(0, "bucket", "allow", "--read", "--write", "--owner", "hoard", "--key", "hoard")

    def cli(self, i, *args):
        r = subprocess.run([GARAGE, "-c", self.cfgs[i], *args], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"garage {' '.join(args)}: {r.stdout}{r.stderr}")
        return r.stdout

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_port(port):
    import socket
    for _ in range(1200):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


class Hub:
    def __init__(self, config):
        self.home = os.path.join(WORK, "hub")
        shutil.rmtree(self.home, ignore_errors=True)
        os.makedirs(self.home)
        with open(os.path.join(self.home, "config.toml"), "w") as f:
            f.write(config)
        self.port = sync.free_port()
        self.env = dict(os.environ, HOARD_HOME=self.home, HOARD_LOG=os.environ.get("BENCH_HUB_LOG", "info"), AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET)
        self.start()
        self.token = json.loads(self.run("token", "create", "--write", "--json"))["token"]

    def start(self):
        log = open(os.path.join(self.home, "hoardd.log"), "a")
        self.proc = subprocess.Popen([os.path.join(BIN, "hoardd"), "run", "--listen", f"127.0.0.1:{self.port}"],
                                     env=self.env, stdout=log, stderr=log)
        for _ in range(1200):
            if subprocess.run([os.path.join(BIN, "hoard"), "daemon", "status"], env=self.env,
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.05)
        sys.exit("hub did not start")

    def restart(self):
        self.run("daemon", "stop")
        self.proc.wait()
        self.start()

    def run(self, *args):
        r = subprocess.run([os.path.join(BIN, "hoard"), *args], env=self.env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"hub: hoard {' '.join(args[:3])} failed: {r.stderr}")
        return r.stdout

    def backend(self):
        return json.loads(self.run("daemon", "status", "--json"))["backend"]

    def stats(self):
        return json.loads(self.run("stats", "--json"))

    def stop(self):
        subprocess.run([os.path.join(BIN, "hoard"), "daemon", "stop"], env=self.env, capture_output=True)
        self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def client(name, port):
    c = sync.Daemon(name)
    c.run("remote", "add", "origin", f"http://127.0.0.1:{port}", "--token", HUB_TOKEN[0])
    return c


HUB_TOKEN = [""]


def bench_hub(kind, src, oids, tar_oids, total):
    g = None
    cfg = ""
    if kind != "local":
        g = Garage(1 if kind == "garage1" else 3)
        eps = ", ".join(f'"{e}"' for e in g.s3)
        cfg = f'[store]\nbackend = "s3"\ns3_endpoints = [{eps}]\ns3_bucket = "hoard"\ns3_region = "garage"\n'
    hub = Hub(cfg)
    HUB_TOKEN[0] = hub.token
    out = {}
    try:
        a = client("pusher", hub.port)
        a.oids(src)
        b0 = hub.backend()
        t = time.perf_counter()
        a.run("push", "origin", *oids)
        out["push_s"] = time.perf_counter() - t
        b1 = hub.backend()
        packs = hub.stats()["packs"]
        out["push_MBps"] = total / out["push_s"] / 1e6
        out["packs"] = packs
        out["push_requests_per_pack"] = (b1["requests"] - b0["requests"]) / packs
        out["bucket_bytes_written"] = b1["bytes_written"] - b0["bytes_written"]
        a.stop()

        # One puller, cold cache, through a counting proxy.
        hub.restart()
        proxy = sync.Proxy(hub.port)
        c = sync.Daemon("puller")
        c.run("remote", "add", "origin", f"http://127.0.0.1:{proxy.port}", "--token", hub.token)
        b0 = hub.backend()
        t = time.perf_counter()
        c.run("fetch", "origin", *oids)
        out["pull_s"] = time.perf_counter() - t
        b1 = hub.backend()
        _, down = proxy.take()
        out["pull_MBps"] = total / out["pull_s"] / 1e6
        out["pull_wire_bytes"] = down
        out["pull_bucket_bytes"] = b1["bytes_read"] - b0["bytes_read"]
        out["pull_bucket_per_served"] = out["pull_bucket_bytes"] / down
        out["pull_requests_per_pack"] = (b1["requests"] - b0["requests"]) / packs
        out["pull_lists"] = b1["lists"] - b0["lists"]
        c.stop()

        # Four pullers at once, cold cache.
        hub.restart()
        proxy = sync.Proxy(hub.port)
        cs = []
        for i in range(4):
            c = sync.Daemon(f"puller{i}")
            c.run("remote", "add", "origin", f"http://127.0.0.1:{proxy.port}", "--token", hub.token)
            cs.append(c)
        b0 = hub.backend()
        t = time.perf_counter()
        threads = [threading.Thread(target=c.run, args=("fetch", "origin", *oids)) for c in cs]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        out["pull4_s"] = time.perf_counter() - t
        b1 = hub.backend()
        _, down = proxy.take()
        out["pull4_wire_bytes"] = down
        out["pull4_bucket_bytes"] = b1["bytes_read"] - b0["bytes_read"]
        out["pull4_bucket_per_copy"] = out["pull4_bucket_bytes"] / (down / 4)
        out["pull4_cache_hits"] = b1["cache_hits"] - b0["cache_hits"]
        out["pull4_cache_misses"] = b1["cache_misses"] - b0["cache_misses"]
        for c in cs:
            c.stop()

        # Nine updates: a client holding release k fetches release k+1.
        hub.restart()
        proxy = sync.Proxy(hub.port)
        u = sync.Daemon("updater")
        u.run("remote", "add", "origin", f"http://127.0.0.1:{proxy.port}", "--token", hub.token)
        u.run("fetch", "origin", tar_oids[0])
        proxy.take()
        t = time.perf_counter()
        for o in tar_oids[1:]:
            u.run("fetch", "origin", o)
        out["updates_s"] = time.perf_counter() - t
        out["updates_wire_bytes"] = sum(proxy.take())
        u.stop()
        log = open(os.path.join(hub.home, "hoardd.log")).read()
        out["hub_warnings"] = log.count(" WARN ")
    finally:
        if os.environ.get("BENCH_HUB_LOG"):
            shutil.copy(os.path.join(hub.home, "hoardd.log"), os.path.join(WORK, f"hub-{kind}.log"))
        hub.stop()
        if g:
            g.stop()
    R[kind] = out
    print(kind, json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="local,garage1,garage3")
    a = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    src = os.path.join(WORK, "fresh")
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    size = (256 << 20) if a.quick else (2 << 30)
    subprocess.run(["head", "-c", str(size), "/dev/urandom"], stdout=open(os.path.join(src, "random.bin"), "wb"),
                   check=True)
    _, tars = e2e.versions()
    for t in tars:
        shutil.copyfile(t, os.path.join(src, os.path.basename(t)))
    total = e2e.du(src)
    probe = sync.Daemon("probe")
    files = probe.oids(src)
    probe.stop()
    oids = [f["oid"] for f in files]
    by_name = {os.path.basename(f["path"]): f["oid"] for f in files}
    tar_oids = [by_name[os.path.basename(t)] for t in tars]
    R["bytes"] = total
    for kind in a.only.split(","):
        bench_hub(kind, src, oids, tar_oids, total)
    shutil.rmtree(src, ignore_errors=True)
    loc = R.get("local")
    for kind in ("garage1", "garage3"):
        if loc and kind in R:
            k = R[kind]
            k["push_vs_local"] = loc["push_s"] / k["push_s"]
            k["pull_vs_local"] = loc["pull_s"] / k["pull_s"]
            k["pull4_vs_local"] = loc["pull4_s"] / k["pull4_s"]
            k["updates_vs_local"] = loc["updates_s"] / k["updates_s"]
    print(json.dumps(R, indent=1))
    with open(os.path.join(e2e.WORK, "s3-results.json"), "w") as f:
        json.dump(R, f, indent=1)


if __name__ == "__main__":
    main()
