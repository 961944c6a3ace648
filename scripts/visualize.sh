#!/usr/bin/env bash
# Penultimate-layer geometry and logit mutual information of the main study's first-seed models:
# results/representations/penultimate.png and representations.json. Extra flags go to python -m nmt.visualize.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m nmt.visualize --study studies/main.toml --results results/representations "$@"
