#!/usr/bin/env bash
# Full-size prune crash run (issue 14): the daemon is killed at random
# points of a prune KILLS times (default 40); after each kill the store must
# verify with --read-data, the versions the prune keeps must read back, and
# the next prune must complete. The CI variant runs 3 kills.
#   scripts/bootstrap.sh && cargo build --release --workspace --bins
#   benches/prune-crash.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
HOARD_PRUNE_KILLS="${1:-40}" cargo test --release --test prune -- --nocapture \
  random_kills_during_prunes_lose_no_kept_version
