#!/usr/bin/env bash
# README command 2: the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo fmt --all -- --check
# The house: floors, no import circle, file and function size budgets.
python3 scripts/layers.py --self-test
python3 scripts/layers.py
# The S3 pack backend's tests run against a real Garage (built once per
# machine into a persistent directory, ~12 minutes the first time).
export HOARD_GARAGE="$(scripts/garage.sh)"
# End-to-end tests drive the real binaries: build them first.
cargo build --release --workspace --bins
cargo test --release --workspace -- --test-threads=2
