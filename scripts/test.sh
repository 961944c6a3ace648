#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the tests: scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec "$PY" -m pytest "$@"
