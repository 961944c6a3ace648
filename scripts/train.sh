#!/usr/bin/env bash
# The main job of the study: train the hard-target (alpha = 0) and label-smoothed (alpha = 0.1) models with
# the same settings and seed, then evaluate them against temperature scaling (tables and figures in results/).
#
#   scripts/train.sh                       # CPU preset, 1 seed, alpha 0 and 0.1
#   scripts/train.sh --preset gpu --seeds 3
#   scripts/train.sh --alpha-sweep         # alpha 0, 0.05, 0.1, 0.2, 0.3
#   scripts/train.sh -- --max-epochs 2     # extra flags for every python -m nmt.train
#
# Finished runs are skipped and interrupted ones resumed, so the job can simply be started again.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'TXT'
usage: scripts/train.sh [--preset cpu|gpu|smoke] [--seeds N] [--alphas "0 0.1"] [--alpha-sweep]
                        [--data-dir DIR] [--src-lang en] [--tgt-lang de] [--runs runs] [--results results]
                        [--sweep 0.7:1.6:0.1|none] [--no-eval] [-- extra nmt.train flags]
presets:
  cpu    d_model 256, 3+3 layers, ffn 1024, 8k vocabulary: about 30 minutes a model on 2 CPU cores
  gpu    d_model 512, 6+6 layers, ffn 2048, dropout 0.3: for one GPU (not measured by us)
  smoke  a tiny model for a few hundred updates: checks the pipeline in a minute; not a result
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
    --data-dir) DATA+=(--data-dir "$2"); shift 2 ;;
    --src-lang) DATA+=(--src-lang "$2"); shift 2 ;;
    --tgt-lang) DATA+=(--tgt-lang "$2"); shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --sweep) SWEEP=$2; shift 2 ;;
    --no-eval) EVAL=0; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "scripts/train.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$SEEDS" =~ ^[1-9][0-9]*$ ]] || { echo "scripts/train.sh: --seeds needs a positive integer" >&2; exit 2; }

case "$PRESET" in
  cpu) ARGS=(--d-model 256 --n-heads 4 --encoder-layers 3 --decoder-layers 3 --d-ff 1024 --dropout 0.1
             --vocab-size 8000 --max-tokens 2500 --lr 1e-3 --warmup-steps 500 --max-epochs 8 --average-last 3) ;;
  gpu) ARGS=(--d-model 512 --n-heads 8 --encoder-layers 6 --decoder-layers 6 --d-ff 2048 --dropout 0.3
             --vocab-size 8000 --max-tokens 8192 --lr 7e-4 --warmup-steps 1000 --max-epochs 40 --patience 5
             --average-last 5) ;;
  smoke) ARGS=(--d-model 64 --n-heads 2 --encoder-layers 1 --decoder-layers 1 --d-ff 128 --dropout 0.1
               --vocab-size 1000 --max-tokens 2000 --lr 2e-3 --warmup-steps 50 --max-steps 100 --max-epochs 1) ;;
  *) echo "scripts/train.sh: unknown preset $PRESET (cpu, gpu, smoke)" >&2; exit 2 ;;
esac

PY=${PYTHON:-python}
runs_json=()
for seed in $(seq 1 "$SEEDS"); do
  for alpha in $ALPHAS; do
    dir="$RUNS/$PRESET/alpha${alpha}_seed${seed}"
    runs_json+=("{\"dir\": \"$dir\", \"alpha\": $alpha, \"seed\": $seed}")
    if [[ -f "$dir/log.jsonl" ]] && grep -q '"event": "done"' "$dir/log.jsonl"; then
      echo "== $dir: already trained, skipped"
      continue
    fi
    resume=()
    [[ -f "$dir/checkpoint_last.pt" ]] && resume=(--resume)
    echo "== training alpha=$alpha seed=$seed -> $dir ${resume[*]:-}"
    start=$(date +%s)
    "$PY" -m nmt.train --run-dir "$dir" --alpha "$alpha" --seed "$seed" "${DATA[@]}" "${ARGS[@]}" "${EXTRA[@]}" "${resume[@]}"
    echo "== $dir: $(( ($(date +%s) - start) / 60 )) min"
  done
done
mkdir -p "$RUNS"
(IFS=,; echo "{\"preset\": \"$PRESET\", \"runs\": [${runs_json[*]}]}") > "$RUNS/study.json"
echo "== study manifest: $RUNS/study.json"

if [[ "$EVAL" == 1 ]]; then
  echo "== evaluating: python -m nmt.decode --beam 4 --runs $RUNS --results $RESULTS --sweep $SWEEP"
  "$PY" -m nmt.decode --beam 4 --runs "$RUNS" --results "$RESULTS" --sweep "$SWEEP"
fi
echo "== done. Runs in $RUNS/$PRESET/, results in $RESULTS/ (comparison.md, comparison.json, figures)"
