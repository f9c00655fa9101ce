#!/usr/bin/env bash
# Prints the path of a Garage 2.x binary (the S3-compatible store the S3
# pack backend is tested against), building it once per machine from
# crates.io (~10 minutes on 2 cores) into a persistent directory, as the
# target directory is kept for RocksDB.
#   GARAGE=$(scripts/garage.sh)
set -euo pipefail
root="${HOARD_GARAGE_ROOT:-/var/cache/hoard-ci/garage}"
bin="$root/bin/garage"
if [[ ! -x "$bin" ]]; then
  mkdir -p "$root"
  CARGO_TARGET_DIR="$root/target" cargo install --quiet --locked --root "$root" \
    garage --version '^2' --no-default-features --features bundled-libs,lmdb >&2
fi
echo "$bin"
