#!/usr/bin/env bash
# The Python environment the gateway's tests and benches use: a venv with
# pandas, pyarrow, fsspec, dask[distributed] and ray[data] (wheels from
# PyPI) and
# hoard's own fsspec package (python/) installed editable. Kept in
# $HOARD_PYENV (default /var/cache/hoard-ci/pyenv) across runs; prints its
# python. Rebuilt when python/pyproject.toml or this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${HOARD_PYENV:-/var/cache/hoard-ci/pyenv}"
stamp="$venv/.hoard-stamp"
want="$(cat scripts/pyenv.sh python/pyproject.toml | sha256sum | cut -c1-16)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$venv/bin/python"
  exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2 || {
  # Debian's python3 without ensurepip.
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
  python3 -m venv "$venv" >&2
}
"$venv/bin/pip" install -q --disable-pip-version-check \
  "pandas>=2" "pyarrow>=14" "fsspec>=2023.1" "dask[dataframe,distributed]>=2024.1" \
  "ray[data]>=2.9" >&2
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps -e ./python >&2
echo "$want" > "$stamp"
echo "$venv/bin/python"
