#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py says what it runs), 8 minutes at most including set-up:
#   scripts/gpu_check.sh [--out DIR] [--data-dir DIR] [--updates N]
# Python: $NMT_PY, else .venv's where it has torch, else python3. Without a CUDA GPU it exits 3 at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${NMT_PY:-}
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import torch, sentencepiece, sacrebleu, datasets, pytest, nmt" 2>/dev/null; then
  echo "gpu_check: installing nmt into $PY's environment" >&2
  "$PY" -m pip install -q -e ".[test]" || { echo "gpu_check: $PY lacks nmt's packages and pip could not install them" >&2; exit 2; }
fi
exec timeout 470 "$PY" scripts/gpu_check.py "$@"
