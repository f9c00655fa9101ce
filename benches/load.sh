#!/usr/bin/env bash
# Full-size load run: 32 daemons pushing to and fetching from one hub while
# a hostile client streams garbage (tests/load.rs at bench size). Prints the
# `load:` line: errors, p50/p99 latency of pushes and fetches, hub peak RSS.
#   benches/load.sh [CLIENTS] [ROUNDS]    (defaults 32 and 5)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/hoard-ci/target}"
cargo build --release --workspace --bins
HOARD_LOAD_CLIENTS="${1:-32}" HOARD_LOAD_ROUNDS="${2:-5}" \
  cargo test --release --test load -- --nocapture 2>&1 | grep -E '^load:|test result|panicked'
