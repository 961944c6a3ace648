#!/usr/bin/env bash
# Set up everything nmt needs in .venv, idempotently (a second call changes nothing and needs no network):
#   1. .venv with PyTorch: the CUDA build where `nvidia-smi -L` finds a GPU, else the CPU build (a wheel pip
#      already finds on this machine, else PyTorch's CPU index: NMT_TORCH_INDEX overrides it);
#   2. nmt itself with its test and export extras (again only when pyproject.toml changed);
#   3. with --corpus, Multi30k via `python -m nmt.data fetch` when neither data/multi30k nor
#      ../shared/data/multi30k holds it (checksums verified).
# Sourced by scripts/train.sh and scripts/test.sh; leaves PY set to the environment's python.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TORCH_VERSION=${NMT_TORCH_VERSION:-2.13.0}
[[ -x .venv/bin/python ]] || { echo "== setup: creating .venv"; python3 -m venv .venv; }
PY=$PWD/.venv/bin/python
if ! "$PY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "== setup: a CUDA GPU: PyTorch $TORCH_VERSION, CUDA build"
    "$PY" -m pip install -q "torch==$TORCH_VERSION"
  else
    echo "== setup: no CUDA GPU: PyTorch $TORCH_VERSION, CPU build"
    "$PY" -m pip install -q --no-index --no-deps "torch==$TORCH_VERSION" 2>/dev/null \
      || "$PY" -m pip install -q --no-deps "torch==$TORCH_VERSION" \
           --index-url "${NMT_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
    "$PY" -m pip install -q "torch==$TORCH_VERSION"  # its dependencies; the CPU build already satisfies it
  fi
fi
stamp=$(sha256sum pyproject.toml | cut -c1-16)
if [[ "$(cat .venv/.nmt-installed 2>/dev/null)" != "$stamp" ]]; then
  echo "== setup: installing nmt and its dependencies"
  "$PY" -m pip install -q -e ".[test,export]"
  echo "$stamp" > .venv/.nmt-installed
fi
if [[ "${1:-}" == "--corpus" ]] && ! "$PY" -c "from nmt.data import find_data_dir; find_data_dir()" 2>/dev/null; then
  echo "== setup: fetching Multi30k into data/multi30k"
  "$PY" -m nmt.data fetch --dest data/multi30k
fi
