#!/usr/bin/env python3
"""Peer sync vs rsync over loopback, side by side on the same data in one run
(issue 4).

    scripts/bootstrap.sh --bench && cargo build --release --workspace --bins
    python3 benches/sync.py [--quick] [--only versions,fresh]

Scenarios:
  versions  bring a copy from release k to k+1 of ten Django releases, as
            trees and as tars: total bytes on the wire for the 9 updates,
            hoard (`hoard fetch` from a hub) vs `rsync -az` from an rsync
            daemon. Both go through one byte-counting TCP proxy; the hoard
            receiver keeps what it fetched before, rsync updates the previous
            release in place.
  fresh     pulling data the receiver does not have (2 GiB incompressible
            file and the 10 tars), `hoard fetch` vs `rsync -a` (no -z),
            direct on loopback: time and MB/s, medians of 3.
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402

BIN = e2e.BIN
WORK = os.path.join(e2e.WORK, "sync")
R = {}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Proxy:
    """Forwards 127.0.0.1:port to a target port, counting bytes both ways."""

    def __init__(self, target):
        self.target = target
        self.bytes = 0
        self.down = 0
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            for a, b, down in ((c, u, False), (u, c, True)):
                threading.Thread(target=self.pipe, args=(a, b, down), daemon=True).start()

    def pipe(self, a, b, down):
        try:
            while True:
                d = a.recv(1 << 20)
                if not d:
                    break
                with self.lock:
                    self.bytes += len(d)
                    if down:
                        self.down += len(d)
                b.sendall(d)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self):
        """(bytes both ways, bytes from the server) since the last take."""
        with self.lock:
            n, self.bytes = self.bytes, 0
            d, self.down = self.down, 0
        return n, d


class Daemon:
    def __init__(self, name, listen=None):
        self.home = os.path.join(WORK, name)
        shutil.rmtree(self.home, ignore_errors=True)
        os.makedirs(self.home)
        self.env = dict(os.environ, HOARD_HOME=self.home, HOARD_DAEMON=os.path.join(BIN, "hoardd"))
        if listen:
            self.proc = subprocess.Popen([os.path.join(BIN, "hoardd"), "run", "--listen", listen],
                                         env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(600):
                if subprocess.run([os.path.join(BIN, "hoard"), "daemon", "status"], env=self.env,
                                  capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
        else:
            self.run("daemon", "start")

    def run(self, *args):
        r = subprocess.run([os.path.join(BIN, "hoard"), *args], env=self.env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"hoard {' '.join(args[:3])} failed: {r.stderr}")
        return r.stdout

    def oids(self, path):
        out = self.run("add", "--json", path)
        return [json.loads(l) for l in out.splitlines() if json.loads(l).get("type") == "file"]

    def stop(self):
        subprocess.run([os.path.join(BIN, "hoard"), "daemon", "stop"], env=self.env, capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


def rsyncd(root):
    port = free_port()
    conf = os.path.join(WORK, "rsyncd.conf")
    # A run that was interrupted leaves its pid file, and rsync then refuses to start.
    if os.path.exists(os.path.join(WORK, "rsyncd.pid")):
        os.remove(os.path.join(WORK, "rsyncd.pid"))
    with open(conf, "w") as f:
        f.write(f"port = {port}\naddress = 127.0.0.1\nuse chroot = no\npid file = {WORK}/rsyncd.pid\n"
                f"[data]\npath = {root}\nread only = yes\n")
    p = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            time.sleep(0.05)
    return p, port


def hub_with(paths):
    port = free_port()
    hub = Daemon("hub", f"127.0.0.1:{port}")
    token = json.loads(hub.run("token", "create", "--read", "--json"))["token"]
    return hub, port, token


def bench_versions():
    trees, tars = e2e.versions()
    root = os.path.join(e2e.WORK, "versions")
    rs, rport = rsyncd(root)
    hub, hport, token = hub_with(None)
    try:
        for kind, paths in (("tar", tars), ("tree", trees)):
            files = [hub.oids(p) for p in paths]
            px_h, px_r = Proxy(hport), Proxy(rport)
            client = Daemon("client")
            client.run("remote", "add", "origin", f"http://127.0.0.1:{px_h.port}", "--token", token)
            client.run("fetch", *[f["oid"] for f in files[0]])
            dest = os.path.join(WORK, "rsync-dest")
            shutil.rmtree(dest, ignore_errors=True)
            rel = lambda p: os.path.relpath(p, root)
            if kind == "tar":
                os.makedirs(dest)
                shutil.copyfile(paths[0], os.path.join(dest, "release.tar"))
            else:
                shutil.copytree(paths[0], dest, symlinks=True)
            px_h.take()
            px_r.take()
            h_bytes = r_bytes = r_sent = 0
            for k in range(1, len(paths)):
                client.run("fetch", *[f["oid"] for f in files[k]])
                h_bytes += px_h.take()[0]
                src = f"rsync://127.0.0.1:{px_r.port}/data/{rel(paths[k])}" + ("" if kind == "tar" else "/")
                target = os.path.join(dest, "release.tar") if kind == "tar" else dest + "/"
                subprocess.run(["rsync", "-az", "--delete", src, target], check=True, capture_output=True)
                both, sent = px_r.take()
                r_bytes += both
                r_sent += sent
            R[f"versions_{kind}"] = {"hoard_wire_bytes": h_bytes, "rsync_az_wire_bytes": r_bytes,
                                     "rsync_az_bytes_sent": r_sent, "ratio": h_bytes / r_sent}
            client.stop()
            shutil.rmtree(dest, ignore_errors=True)
    finally:
        rs.terminate()
        hub.proc.terminate()
        hub.proc.wait()
        shutil.rmtree(hub.home, ignore_errors=True)


def bench_fresh(runs):
    src = os.path.join(WORK, "fresh")
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    os.link(os.path.join(e2e.WORK, "random.bin"), os.path.join(src, "random.bin")) if os.path.exists(
        os.path.join(e2e.WORK, "random.bin")) else subprocess.run(
        ["head", "-c", str(2 << 30), "/dev/urandom"], stdout=open(os.path.join(src, "random.bin"), "wb"), check=True)
    _, tars = e2e.versions()
    for t in tars:
        shutil.copyfile(t, os.path.join(src, os.path.basename(t)))
    total = e2e.du(src)
    rs, rport = rsyncd(src)
    hub, hport, token = hub_with(None)
    oids = [f["oid"] for f in hub.oids(src)]
    h_times, r_times = [], []
    try:
        for i in range(runs):
            client = Daemon("client")
            client.run("remote", "add", "origin", f"http://127.0.0.1:{hport}", "--token", token)
            dest = os.path.join(WORK, "rsync-dest")
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest)
            order = [0, 1] if i % 2 == 0 else [1, 0]
            for o in order:
                if o == 0:
                    t = time.perf_counter()
                    client.run("fetch", *oids)
                    h_times.append(time.perf_counter() - t)
                else:
                    t = time.perf_counter()
                    subprocess.run(["rsync", "-a", f"rsync://127.0.0.1:{rport}/data/", dest + "/"], check=True,
                                   capture_output=True)
                    subprocess.run(["sync"], check=True)
                    r_times.append(time.perf_counter() - t)
            client.stop()
            shutil.rmtree(dest, ignore_errors=True)
    finally:
        rs.terminate()
        hub.proc.terminate()
        hub.proc.wait()
        shutil.rmtree(hub.home, ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)
    h, r = statistics.median(h_times), statistics.median(r_times)
    R["fresh"] = {"bytes": total, "hoard_s": h, "rsync_s": r, "hoard_runs": h_times, "rsync_runs": r_times,
                  "hoard_MBps": total / h / 1e6, "rsync_MBps": total / r / 1e6, "ratio": r / h}


def report():
    print(json.dumps(R, indent=1))
    print("\n| scenario | hoard | rsync | hoard / rsync | target |\n| --- | --- | --- | --- | --- |")
    for k in ("tar", "tree"):
        v = R.get(f"versions_{k}")
        if v:
            print(f"| 9 updates of 10 Django releases as {k}s, bytes on the wire (hoard: both ways) | {v['hoard_wire_bytes']/1e6:.1f} MB | "
                  f"{v['rsync_az_bytes_sent']/1e6:.1f} MB sent by `rsync -az` ({v['rsync_az_wire_bytes']/1e6:.1f} MB both ways) | {v['ratio']:.2f}× | ≤ 0.5× |")
    f = R.get("fresh")
    if f:
        print(f"| fresh pull, {f['bytes']/1e9:.2f} GB | {f['hoard_s']:.1f} s ({f['hoard_MBps']:.0f} MB/s) | "
              f"{f['rsync_s']:.1f} s ({f['rsync_MBps']:.0f} MB/s, `rsync -a` + sync) | {f['hoard_MBps']/f['rsync_MBps']:.2f}× | ≥ 1× |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    if shutil.which("rsync") is None:
        sys.exit("rsync is not installed: scripts/bootstrap.sh --bench")
    os.makedirs(WORK, exist_ok=True)
    only = set(filter(None, a.only.split(",")))
    if not only or "versions" in only:
        bench_versions()
    if not only or "fresh" in only:
        bench_fresh(1 if a.quick else 3)
    report()


if __name__ == "__main__":
    main()
