#!/usr/bin/env bash
# README command 2: the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo fmt --all -- --check
# The house: floors, no import circle, file and function size budgets.
python3 scripts/layers.py --self-test
python3 scripts/layers.py
# End-to-end tests drive the real binaries: build them first.
cargo build --release --workspace --bins
cargo test --release --workspace -- --test-threads=2
