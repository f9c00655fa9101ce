#!/usr/bin/env bash
# Crash-thrash bench: the end-to-end suite tests/crash.rs with 100 kills
# instead of CI's 8, then its report line.
#
#     benches/crash.sh [KILLS]        # default 100 (or $HOARD_CRASH_KILLS)
#
# What runs: a local daemon (A) and a hub under concurrent real commands —
# `hoard add`, `git add` + `git commit` through hoard's filter, a watched
# dataset with snapshots and tags, push and `dataset push` to the hub,
# `fetch` and `clone` from it (fed by a third daemon), reads — while a
# killer `kill -9`s A (or every fourth time the hub) at random moments,
# restarts it and checks both stores: `hoard verify --read-data`, every
# acknowledged file read back, every acknowledged snapshot checked out and
# compared, every ref naming a complete snapshot. It fails naming the file,
# snapshot or ref and the kill after which it was found wrong, or a command
# that hung (over 120 s, with its processes' stacks and open pipes).
#
# The last line printed is the suite's report:
#
#     crash-thrash: seed=… kills=100 kills_a=75 kills_hub=25 restart_kills=…
#       mid_op=… acked_files_a=… acked_snapshots_a=… acked_pushes=…
#       file_checks=… snapshot_checks=… ref_checks=… verify_runs=… secs=…
#
# kills_a/kills_hub: SIGKILLs of A and of the hub; restart_kills: extra kills
# of a restarted A early in its start-up; mid_op: kills that landed while a
# command talking to the killed daemon was in flight; acked_*: what was
# acknowledged (and is checked at every kill and at the end); *_checks and
# verify_runs: how many reads, checkouts, ref checks and verifies were done.
#
# Environment: HOARD_CRASH_SEED=N repeats a run's schedule of sleeps, sizes
# and operations (the seed is printed first; thread timing still varies).
# HOARD_CRASH_RECHECK=N re-reads items acknowledged before the previous
# kill only every N-th kill (new ones at every kill, all at the end); the
# default 1 re-reads everything at every kill, so the checks grow with the
# run: 30 kills took 252 s on 2 vCPUs, 100 kills need about 35 minutes.
# CARGO_TARGET_DIR as for any cargo build. Servers listen on 127.0.0.1 only;
# every daemon is stopped at the end, also when the run fails.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-${HOARD_CRASH_KILLS:-100}}
cargo build --release --workspace --bins
log=$(mktemp /tmp/hoard-crash-bench.XXXXXX)
trap 'rm -f "$log"' EXIT
status=0
HOARD_CRASH_KILLS=$kills cargo test --release --test crash -- --nocapture 2>&1 | tee "$log" || status=$?
echo
if ! grep '^crash-thrash:' "$log"; then
    echo "crash-thrash: no report: the run failed (see above)" >&2
fi
exit "$status"
