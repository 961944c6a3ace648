#!/usr/bin/env bash
# Penultimate-layer geometry and logit mutual information of the study's models (after scripts/train.sh):
# results/representations/penultimate.png and representations.json. Extra flags go to python -m nmt.visualize
# (e.g. --tokens Hund Katze Straße).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m nmt.visualize --runs runs --results results/representations "$@"
