#!/usr/bin/env bash
# The main job of the study: train the hard-target (alpha = 0) and label-smoothed (alpha = 0.1) models with
# the same settings and seed, then evaluate them against temperature scaling (python -m nmt.study).
#
#   scripts/train.sh                       # CPU preset, 1 seed, alpha 0 and 0.1
#   scripts/train.sh --preset gpu --seeds 3
#   scripts/train.sh --alpha-sweep         # alpha 0, 0.05, 0.1, 0.2, 0.3
#   scripts/train.sh -- --max-epochs 2     # extra flags for every python -m nmt.train
#
# Finished runs are skipped and interrupted ones resumed, so the job can simply be started again. Set-up
# (scripts/setup.sh: .venv, PyTorch, nmt, the corpus) runs first unless PYTHON names an interpreter to use.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'TXT'
usage: scripts/train.sh [--preset cpu|gpu|smoke] [--seeds N] [--alphas "0 0.1"] [--alpha-sweep]
                        [--data-dir DIR] [--src-lang en] [--tgt-lang de] [--runs runs] [--results results]
                        [--sweep 0.7:1.6:0.1|none] [--no-eval] [-- extra nmt.train flags]
The presets' settings: python -m nmt.train --help
TXT
}

PRESET=cpu SEEDS=1 ALPHAS="0 0.1" RUNS=runs RESULTS=results SWEEP=0.7:1.6:0.1 EVAL=1
DATA=() EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) PRESET=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --alphas) ALPHAS=$2; shift 2 ;;
    --alpha-sweep) ALPHAS="0 0.05 0.1 0.2 0.3"; shift ;;
    --data-dir|--src-lang|--tgt-lang) DATA+=("$1" "$2"); shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --sweep) SWEEP=$2; shift 2 ;;
    --no-eval) EVAL=0; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "scripts/train.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$SEEDS" =~ ^[1-9][0-9]*$ ]] || { echo "scripts/train.sh: --seeds needs a positive integer, not '$SEEDS'" >&2; exit 2; }
case "$PRESET" in cpu|gpu|smoke) ;; *) echo "scripts/train.sh: unknown preset $PRESET (cpu, gpu, smoke)" >&2; exit 2 ;; esac

if [[ -n "${PYTHON:-}" ]]; then  # an environment of your own: use it as it is
  PY=$PYTHON
else
  source scripts/setup.sh --corpus
fi
dirs=()
for seed in $(seq 1 "$SEEDS"); do
  for alpha in $ALPHAS; do
    dir="$RUNS/$PRESET/alpha${alpha}_seed${seed}"
    dirs+=("$dir")
    if [[ -f "$dir/log.jsonl" ]] && grep -q '"event": "done"' "$dir/log.jsonl"; then
      echo "== $dir: already trained, skipped"
      continue
    fi
    resume=()
    [[ -f "$dir/checkpoint_last.pt" ]] && resume=(--resume)
    echo "== training alpha=$alpha seed=$seed -> $dir ${resume[*]:-}"
    start=$(date +%s)
    "$PY" -m nmt.train --preset "$PRESET" --run-dir "$dir" --alpha "$alpha" --seed "$seed" "${DATA[@]}" \
      "${EXTRA[@]}" "${resume[@]}"
    echo "== $dir: $(( ($(date +%s) - start) / 60 )) min"
  done
done
"$PY" -m nmt.study --runs "$RUNS" --record "${dirs[@]}"

if [[ "$EVAL" == 1 ]]; then
  echo "== evaluating: python -m nmt.study --beam 4 --runs $RUNS --results $RESULTS --sweep $SWEEP"
  "$PY" -m nmt.study --beam 4 --runs "$RUNS" --results "$RESULTS" --sweep "$SWEEP"
fi
echo "== done. Runs in $RUNS/$PRESET/, results in $RESULTS/ (comparison.md, comparison.json, figures)"
