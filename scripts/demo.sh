#!/usr/bin/env bash
# README command 1: build hoard, start hoardd on the embedded default store
# (RocksDB index + local packs in $HOARD_HOME, else ~/.local/share/hoard),
# ingest a generated versioned sample dataset, show what dedup and
# compression saved, watch a dataset directory and record snapshots of it,
# then use it from git (pointers in commits, content in the store, a
# selective pull in a clone).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo build --release --workspace --bins
bin="$PWD/target/release"
[[ -n "${CARGO_TARGET_DIR:-}" ]] && bin="$CARGO_TARGET_DIR/release"
export PATH="$bin:$PATH"

sample="${HOARD_SAMPLE:-${TMPDIR:-/tmp}/hoard-sample}"
echo "== generating a sample dataset in $sample (3 versions of a table + images)"
python3 - "$sample" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(42)
rows = [f"{i},{rnd.choice(['cat','dog','owl','fox'])},{rnd.random():.6f},{rnd.randint(0,10**6)}\n" for i in range(400_000)]
blobs = [rnd.randbytes(2 << 20) for _ in range(4)]
for v in (1, 2, 3):
    d = os.path.join(root, f"v{v}")
    os.makedirs(os.path.join(d, "images"), exist_ok=True)
    # Each version edits a few rows and appends some.
    for _ in range(50):
        i = rnd.randrange(len(rows))
        rows[i] = f"{i},edited-v{v},{rnd.random():.6f},0\n"
    rows.extend(f"{len(rows)+k},new-v{v},{rnd.random():.6f},1\n" for k in range(5000))
    with open(os.path.join(d, "table.csv"), "w") as f:
        f.writelines(rows)
    for k, b in enumerate(blobs):
        with open(os.path.join(d, "images", f"img{k}.bin"), "wb") as f:
            f.write(b)
PY

echo "== hoard daemon start"
hoard daemon start
echo "== hoard add $sample"
hoard add "$sample"
echo "== hoard stats"
hoard stats
echo "== hoard verify --read-data"
hoard verify --read-data
oid=$(hoard add --json "$sample/v3/table.csv" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["oid"])')
echo "== hoard cat $oid | head -3"
hoard cat "$oid" | head -3

ds="${TMPDIR:-/tmp}/hoard-demo-survey"
out="${TMPDIR:-/tmp}/hoard-demo-checkout"
rm -rf "$ds" "$out"
mkdir -p "$ds"
echo
echo "== a watched dataset ($ds): every change is ingested in the background"
cp -r "$sample/v1/." "$ds/"
hoard dataset add demo-survey "$ds" --watch
v1=$(hoard snapshot demo-survey --rescan -m "v1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
hoard tag demo-survey v1 "$v1" --force >/dev/null
cp -r "$sample/v2/." "$ds/"
echo "== waiting for the watcher to ingest v2 ..."
for _ in $(seq 100); do
  n=$(hoard status demo-survey --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(len(s["changes"]) if s["pending"] == 0 else 0)')
  [[ "$n" != 0 ]] && break
  sleep 0.2
done
hoard status demo-survey
hoard snapshot demo-survey -m "v2" --from "demo-survey@v1" --meta step=demo
echo "== hoard log demo-survey -n 2"
hoard log demo-survey -n 2
echo "== hoard diff demo-survey@v1 demo-survey"
hoard diff demo-survey@v1 demo-survey
echo "== hoard checkout demo-survey@v1 --to $out --include 'images/**'"
hoard checkout demo-survey@v1 --to "$out" --include 'images/**'
hoard dataset list

repo="${TMPDIR:-/tmp}/hoard-demo-repo"
clone="${TMPDIR:-/tmp}/hoard-demo-clone"
rm -rf "$repo" "$clone"
echo
echo "== git: a repository whose data/ is stored by hoard ($repo)"
git init -q "$repo"
cd "$repo"
git config user.email demo@example.com
git config user.name demo
hoard install --local          # filter + hooks for this repository only
hoard track 'data/**'
for v in 1 2 3; do
  rm -rf data && cp -r "$sample/v$v" data
  git add -A && git commit -q -m "dataset v$v"
done
echo "== what git holds for data/table.csv (a pointer):"
git show HEAD:data/table.csv
echo "== hoard ls-files"
hoard ls-files
echo "== git checkout HEAD~2 (v1 materialized), then back"
git checkout -q HEAD~2 && head -c 120 data/table.csv && echo " ..."
git checkout -q - 2>/dev/null || git checkout -q main 2>/dev/null || git checkout -q master
echo "== clone with the filter off (only pointers), then hoard pull --include 'data/images/**'"
git -c filter.hoard.process= -c filter.hoard.smudge= -c filter.hoard.required=false clone -q "$repo" "$clone"
cd "$clone"
hoard install --local >/dev/null
hoard pull --include 'data/images/**'
hoard status
cd - >/dev/null
echo
echo "The daemon keeps running in the background: 'hoard daemon status', 'hoard daemon stop'."
