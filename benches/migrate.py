#!/usr/bin/env python3
"""`hoard migrate import` vs git-lfs's own round trip, on one generated
git-lfs history, same run (issue 18):

    scripts/bootstrap.sh && cargo build --release --workspace --bins
    python3 benches/migrate.py [--commits 500] [--mb 2000]

The history: `--commits` commits on 3 branches; each commit edits a few
bytes of one of 8 model files (slightly edited versions, as checkpoints
are) and every 10th adds a fresh file, two paths share content; LFS
objects total about `--mb` MB. It is written with fast-import and the LFS
objects are placed in .git/lfs/objects directly (as `git lfs` would have).

Measured on copies of the same repository:
  hoard     `hoard migrate import --everything` (objects into a fresh
            store, history rewritten)
  git-lfs   `git lfs migrate export --everything --include='*'` then
            `git lfs migrate import --everything --include='*.bin'` (the
            round trip a user switching away and back would run)
and the hoard store's size vs .git/lfs/objects.
"""
import argparse, hashlib, os, random, shutil, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402

WORK = os.path.join(e2e.WORK, "migrate")
MB = 1e6


def git(repo, *args, **kw):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, **kw).stdout


def make_history(repo, commits, total_mb):
    os.makedirs(repo)
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "b@example.com")
    git(repo, "config", "user.name", "Bench")
    lfs = os.path.join(repo, ".git", "lfs", "objects")
    rng = random.Random(3)
    size = int(total_mb * MB / (commits * 1.1))
    models = [bytearray(os.urandom(size)) for _ in range(8)]
    attrs = b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    out = bytearray()
    mark = 0

    def blob(data):
        nonlocal mark
        mark += 1
        out.extend(b"blob\nmark :%d\ndata %d\n" % (mark, len(data)))
        out.extend(data)
        out.extend(b"\n")
        return mark

    def lfs_pointer(data):
        oid = hashlib.sha256(data).hexdigest()
        d = os.path.join(lfs, oid[:2], oid[2:4])
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, oid)
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.write(data)
        return blob(b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (oid.encode(), len(data)))

    attrs_mark = blob(attrs)
    heads = {"main": None, "b1": None, "b2": None}
    t = 1_700_000_000
    for i in range(commits):
        branch = "main" if i < commits * 0.6 else ("b1" if i < commits * 0.8 else "b2")
        parent = heads[branch] or heads["main"]
        k = i % 8
        m = models[k]
        for _ in range(4):
            m[rng.randrange(len(m))] = rng.randrange(256)
        changes = [(f"models/m{k}.bin", lfs_pointer(bytes(m)))]
        if i % 10 == 0:
            fresh = os.urandom(size)
            p = lfs_pointer(fresh)
            changes += [(f"data/new{i}.bin", p), (f"data/copy{i}.bin", p)]
        if i == 0:
            changes.append((".gitattributes", attrs_mark))
        mark += 1
        out.extend(b"commit refs/heads/%s\nmark :%d\ncommitter B <b@example.com> %d +0000\ndata 9\ncommit %d\n" % (branch.encode(), mark, t + i, i % 10))
        if parent:
            out.extend(b"from :%d\n" % parent)
        for path, bm in changes:
            out.extend(b"M 100644 :%d %s\n" % (bm, path.encode()))
        out.extend(b"\n")
        heads[branch] = mark
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=bytes(out), check=True)
    git(repo, "checkout", "-q", "main")
    git(repo, "lfs", "install", "--local")
    git(repo, "tag", "v1", "main~10")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=500)
    ap.add_argument("--mb", type=float, default=2000)
    a = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    src = os.path.join(WORK, "src")
    make_history(src, a.commits, a.mb)
    lfs_bytes = e2e.du(os.path.join(src, ".git", "lfs", "objects"))
    print(f"history: {a.commits} commits, .git/lfs/objects {lfs_bytes / MB:.0f} MB")

    hrepo = os.path.join(WORK, "hoard")
    shutil.copytree(src, hrepo, symlinks=True)
    h = e2e.Hoard("migrate")
    env = dict(h.env, HOME=WORK, GIT_CONFIG_GLOBAL=os.path.join(WORK, "gitconfig"))
    t = time.perf_counter()
    subprocess.run([os.path.join(e2e.BIN, "hoard"), "migrate", "import", "--everything"], cwd=hrepo, env=env, check=True,
                   capture_output=True)
    ht = time.perf_counter() - t
    stored = h.stats()["stored_bytes"]
    h.destroy()

    lrepo = os.path.join(WORK, "lfs")
    shutil.copytree(src, lrepo, symlinks=True)
    t = time.perf_counter()
    git(lrepo, "lfs", "migrate", "export", "--everything", "--include=*", "--yes")
    t1 = time.perf_counter() - t
    t = time.perf_counter()
    git(lrepo, "lfs", "migrate", "import", "--everything", "--include=*.bin", "--yes")
    t2 = time.perf_counter() - t
    print(f"hoard migrate import: {ht:.1f} s; git lfs migrate export {t1:.1f} s + import {t2:.1f} s = {t1 + t2:.1f} s "
          f"(hoard at {ht / (t1 + t2):.2f}x the round trip, {ht / t2:.2f}x git-lfs's import alone)")
    print(f"store {stored / MB:.1f} MB vs .git/lfs/objects {lfs_bytes / MB:.0f} MB: {stored / lfs_bytes:.3f}x")
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
