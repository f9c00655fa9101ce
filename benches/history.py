#!/usr/bin/env python3
"""Versions of one path, stored and synced (issue 17), side by side in one
run on the same data: ten successive Django releases, as one tar file
rewritten in place (`release.tar`) and as one directory synced to each
release (`tree/`), the way a dataset is updated.

    scripts/bootstrap.sh --bench && cargo build --release --workspace --bins
    python3 benches/history.py [--only tar,tree]

  store   stored bytes for the 10 versions: hoard (`hoard add` of the path
          after each update) vs restic (`restic backup` of the same path)
          vs the zstd frontier (the first version at -3 --long=27, then each
          next one `--patch-from` the one before)
  wire    a hub adds each version in place; a client holding release k
          fetches release k+1, k = 0..8: bytes on the wire through a
          counting proxy (both ways), and where they went (from the
          client's log: delta frames, whole frames, chunks, manifests, the
          rest protocol); vs `rsync -az` updating the previous release in
          place (bytes the server sent, and both ways); vs `zstd -3
          --long=27 --patch-from` of each update (trees: of a tar of the
          tree, members sorted by name)
  read    (tars) reading each version whole from the hub's store

Results go to $HOARD_BENCH_DIR/history-results.json.
"""
import json, os, re, shutil, subprocess, sys, tarfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402
import sync  # noqa: E402

WORK = os.path.join(e2e.WORK, "history")
sync.WORK = WORK
R = {}


def top(tree):
    """A release tree's one top directory (its name changes per release)."""
    (name,) = os.listdir(tree)
    return os.path.join(tree, name)


def update(kind, src, dst):
    """Makes `dst` hold release `src`, in place."""
    if kind == "tar":
        shutil.copyfile(src, dst)
    else:
        subprocess.run(["rsync", "-a", "--delete", top(src) + "/", dst + "/"], check=True)


def as_tar(kind, src, out):
    if kind == "tar":
        return src
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as t:
        root = top(src)
        for d, dirs, files in os.walk(root):
            dirs.sort()
            for f in sorted(files):
                p = os.path.join(d, f)
                t.add(p, arcname=os.path.relpath(p, root), recursive=False)
    return out


def zstd_size(args):
    r = subprocess.run(["zstd", "-q", "-c", *args], check=True, capture_output=True)
    return len(r.stdout)


def frontier(kind, paths):
    tars = [as_tar(kind, p, os.path.join(WORK, f"frontier{i}.tar")) for i, p in enumerate(paths)]
    first = zstd_size(["-3", "--long=27", tars[0]])
    updates = [zstd_size(["-3", "--long=27", f"--patch-from={a}", b]) for a, b in zip(tars, tars[1:])]
    for i in range(len(paths)):
        p = os.path.join(WORK, f"frontier{i}.tar")
        if os.path.exists(p):
            os.remove(p)
    return first, updates


def restic_store(kind, paths, target):
    repo = os.path.join(WORK, f"restic-{kind}")
    shutil.rmtree(repo, ignore_errors=True)
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=repo,
               RESTIC_CACHE_DIR=os.path.join(WORK, "restic-cache"))
    subprocess.run(["restic", "init", "--repository-version", "2"], env=env, check=True, capture_output=True)
    for p in paths:
        update(kind, p, target)
        subprocess.run(["restic", "backup", "--compression", "auto", target], env=env, check=True,
                       capture_output=True)
    n = e2e.du(repo)
    shutil.rmtree(repo, ignore_errors=True)
    return n


PULLED = re.compile(r"pulled.*delta_frame_bytes=(\d+) whole_frame_bytes=(\d+) chunk_bytes=(\d+) manifest_bytes=(\d+)")


def pulls_logged(home):
    with open(os.path.join(home, "hoardd.log")) as f:
        return [tuple(int(x) for x in m.groups()) for m in PULLED.finditer(f.read())]


def bench(kind, paths):
    out = {}
    target = os.path.join(WORK, "release.tar" if kind == "tar" else "tree")
    if kind == "tree":
        os.makedirs(target, exist_ok=True)
    first, upd = frontier(kind, paths)
    out["patch_from_first"] = first
    out["patch_from_updates"] = upd
    out["patch_from_wire"] = sum(upd)
    out["patch_from_stored"] = first + sum(upd)

    out["restic_stored"] = restic_store(kind, paths, target)

    # The hub adds each release at the same path, as a dataset changes.
    port = sync.free_port()
    hub = sync.Daemon("hub", f"127.0.0.1:{port}")
    token = json.loads(hub.run("token", "create", "--read", "--json"))["token"]
    rsroot = os.path.join(WORK, "rsync-src")
    shutil.rmtree(rsroot, ignore_errors=True)
    os.makedirs(rsroot)
    rs, rport = sync.rsyncd(rsroot)
    try:
        files, add_s = [], []
        for p in paths:
            update(kind, p, target)
            t = time.perf_counter()
            files.append(hub.oids(target))
            add_s.append(time.perf_counter() - t)
        out["hoard_add_s"] = add_s
        if kind == "tar":
            # Reading each version whole out of the hub's store: the first
            # is self-contained, later ones decode their delta chains.
            out["read_s"] = []
            for f in files:
                t = time.perf_counter()
                subprocess.run([os.path.join(sync.BIN, "hoard"), "cat", f[0]["oid"]], env=hub.env, check=True,
                               stdout=subprocess.DEVNULL)
                out["read_s"].append(time.perf_counter() - t)
        st = json.loads(hub.run("stats", "--json"))
        out["hoard_stored"] = st["stored_bytes"]
        out["stored_vs_restic"] = out["hoard_stored"] / out["restic_stored"]
        out["stored_vs_patch_from"] = out["hoard_stored"] / out["patch_from_stored"]

        px = sync.Proxy(port)
        client = sync.Daemon("client")
        client.run("remote", "add", "origin", f"http://127.0.0.1:{px.port}", "--token", token)
        client.run("fetch", *[f["oid"] for f in files[0]])
        px.take()
        skip = len(pulls_logged(client.home))
        wire = []
        for k in range(1, len(paths)):
            client.run("fetch", *[f["oid"] for f in files[k]])
            wire.append(px.take()[0])
        parts = pulls_logged(client.home)[skip:]
        client.stop()
        out["hoard_wire_updates"] = wire
        out["hoard_wire"] = sum(wire)
        names = ("delta_frames", "whole_frames", "chunks", "manifests")
        out["hoard_wire_parts"] = {n: sum(p[i] for p in parts) for i, n in enumerate(names)}
        out["hoard_wire_parts"]["protocol"] = out["hoard_wire"] - sum(out["hoard_wire_parts"].values())

        # rsync -az: the receiver updates the previous release in place.
        dest = os.path.join(WORK, f"rsync-dest-{kind}")
        shutil.rmtree(dest, ignore_errors=True)
        pr = sync.Proxy(rport)
        for i, p in enumerate(paths):
            name = f"r{i}" + (".tar" if kind == "tar" else "")
            src_path = os.path.join(rsroot, name)
            if kind == "tar":
                shutil.copyfile(p, src_path)
            else:
                shutil.copytree(top(p), src_path, symlinks=True)
        both = sent = 0
        for i in range(len(paths)):
            name = f"r{i}" + (".tar" if kind == "tar" else "/")
            tgt = dest if kind == "tar" else dest + "/"
            subprocess.run(["rsync", "-az", "--delete", f"rsync://127.0.0.1:{pr.port}/data/{name}", tgt],
                           check=True, capture_output=True)
            b, s = pr.take()
            if i > 0:
                both += b
                sent += s
        out["rsync_az_sent"] = sent
        out["rsync_az_both"] = both
        out["wire_vs_rsync"] = out["hoard_wire"] / sent
        out["wire_vs_patch_from"] = out["hoard_wire"] / out["patch_from_wire"]
    finally:
        rs.terminate()
        hub.proc.terminate()
        hub.proc.wait()
        shutil.rmtree(hub.home, ignore_errors=True)
        shutil.rmtree(rsroot, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        if os.path.isfile(target):
            os.remove(target)
        shutil.rmtree(os.path.join(WORK, f"rsync-dest-{kind}"), ignore_errors=True)
    R[kind] = out
    print(kind, json.dumps(out), flush=True)


def main():
    for tool in ("rsync", "restic", "zstd"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: scripts/bootstrap.sh --bench")
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="tar,tree")
    only = ap.parse_args().only.split(",")
    os.makedirs(WORK, exist_ok=True)
    trees, tars = e2e.versions()
    for kind, paths in (("tar", tars), ("tree", trees)):
        if kind in only:
            bench(kind, paths)
    MB = 1e6
    print("\n| 10 Django releases | hoard | restic | zstd frontier | rsync -az | hoard / other |\n|---|---|---|---|---|---|")
    for kind, v in R.items():
        print(f"| {kind}s, stored | {v['hoard_stored']/MB:.1f} MB | {v['restic_stored']/MB:.1f} MB | "
              f"{v['patch_from_stored']/MB:.1f} MB | – | {v['stored_vs_restic']:.2f}× restic |")
        p = v["hoard_wire_parts"]
        print(f"| {kind}s, 9 updates on the wire | {v['hoard_wire']/MB:.1f} MB (delta frames {p['delta_frames']/MB:.1f}, "
              f"whole frames {p['whole_frames']/MB:.1f}, chunks {p['chunks']/MB:.1f}, manifests {p['manifests']/MB:.2f}, "
              f"protocol {p['protocol']/MB:.2f}) | – | {v['patch_from_wire']/MB:.1f} MB | {v['rsync_az_sent']/MB:.1f} MB | "
              f"{v['wire_vs_rsync']:.2f}× rsync, {v['wire_vs_patch_from']:.2f}× patch-from |")
    with open(os.path.join(e2e.WORK, "history-results.json"), "w") as f:
        json.dump(R, f, indent=1)


if __name__ == "__main__":
    main()
