#!/usr/bin/env bash
# The main job: set up (scripts/setup.sh: .venv, PyTorch, nmt, the corpus), then run a study file:
#   python -m nmt.study run studies/main.toml     (train what is missing, evaluate, write results/main/)
#
#   scripts/train.sh                                   # studies/main.toml
#   scripts/train.sh studies/smoke.toml --runs /tmp/r --results /tmp/r/results
#   scripts/train.sh studies/main.toml --dry-run       # what would be trained, and the minutes
#   scripts/train.sh studies/main.toml --launcher slurm
#
# Arguments after the study file go to python -m nmt.study run. Finished runs are skipped and interrupted
# ones resumed, so the job can simply be started again. PYTHON=python uses an environment of your own.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
STUDY=studies/main.toml
if [[ $# -gt 0 && "$1" != -* ]]; then STUDY=$1; shift; fi
if [[ -n "${PYTHON:-}" ]]; then
  PY=$PYTHON
else
  source scripts/setup.sh --corpus
fi
exec "$PY" -m nmt.study run "$STUDY" "$@"
