#!/usr/bin/env bash
# Penultimate-layer geometry and logit mutual information of every seed of the main study's models, with
# tables over seeds and verdicts: results/representations/ (representations.json / .md, penultimate*.png).
# Extra flags go to python -m nmt.visualize.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m nmt.visualize --study studies/main.toml --all-seeds --results results/representations "$@"
