#!/usr/bin/env bash
# Installs the system packages hoard's build and tests need, when missing.
#   libclang-dev  rocksdb's bindgen
#   b3sum         tests compare ids with b3sum's output
#   git-lfs       `hoard migrate` is tested against real git-lfs repositories
# With --bench, also the tools the benches compare against (restic, rsync).
# protobuf is compiled in Rust (protox): no protoc needed.
set -euo pipefail
pkgs=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
have_pkg libclang-dev || pkgs+=(libclang-dev)
command -v b3sum >/dev/null || pkgs+=(b3sum)
command -v git-lfs >/dev/null || pkgs+=(git-lfs)
if [[ "${1:-}" == "--bench" ]]; then
  command -v restic >/dev/null || pkgs+=(restic)
  command -v rsync >/dev/null || pkgs+=(rsync)
fi
if ((${#pkgs[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing: ${pkgs[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
