#!/usr/bin/env bash
# README command 2: the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo fmt --all -- --check
# End-to-end tests drive the real binaries: build them first.
cargo build --release --workspace --bins
cargo test --release --workspace -- --test-threads=2
