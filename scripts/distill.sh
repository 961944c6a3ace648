#!/usr/bin/env bash
# Knowledge distillation from a hard-target and a label-smoothed teacher (Mueller et al. 2019, Sec. 4):
# smaller students trained alone (alpha 0 and 0.1) and distilled from each teacher, evaluated in one
# table beside the teachers (BLEU beam 4, NLL, ECE): results/distill/comparison.md.
#
#   scripts/distill.sh                    # teachers: the seed-1 models of scripts/train.sh (runs/study.json)
#   scripts/distill.sh --beta 0.5 --temperature 2 --results results/distill_T2
#   scripts/distill.sh --hard-teacher RUN_A --ls-teacher RUN_B -- --max-epochs 3
#
# Students trained alone are shared by every setting; distilled ones live in runs/distill/student_from_
# alpha{A}_beta{B}_T{T}/, one per setting.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'TXT'
usage: scripts/distill.sh [--preset cpu|smoke] [--hard-teacher RUN] [--ls-teacher RUN] [--runs runs]
                          [--results results/distill] [--beta 0.5] [--temperature 1] [--ls-alpha 0.1]
                          [-- extra nmt.train flags for the students]
TXT
}

PRESET=cpu RUNS=runs RESULTS=results/distill BETA=0.5 TEMP=1 LS_ALPHA=0.1 HARD= LS= EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) PRESET=$2; shift 2 ;;
    --hard-teacher) HARD=$2; shift 2 ;;
    --ls-teacher) LS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --beta) BETA=$2; shift 2 ;;
    --temperature) TEMP=$2; shift 2 ;;
    --ls-alpha) LS_ALPHA=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "scripts/distill.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python}

HARD=${HARD:-$("$PY" -m nmt.study --runs "$RUNS" --lookup 0 1)}
LS=${LS:-$("$PY" -m nmt.study --runs "$RUNS" --lookup "$LS_ALPHA" 1)}

case "$PRESET" in
  cpu) ARGS=(--d-model 128 --n-heads 4 --encoder-layers 2 --decoder-layers 2 --d-ff 512 --dropout 0.1
             --max-tokens 2500 --lr 1.5e-3 --warmup-steps 500 --max-epochs 6 --average-last 2) ;;
  smoke) ARGS=(--d-model 32 --n-heads 2 --encoder-layers 1 --decoder-layers 1 --d-ff 64 --max-tokens 2000
               --lr 2e-3 --warmup-steps 20 --max-steps 30 --max-epochs 1) ;;
  *) echo "scripts/distill.sh: unknown preset $PRESET (cpu, smoke)" >&2; exit 2 ;;
esac

# The students read the teachers' corpus: --data-from takes the hard-target teacher's corpus settings.
DATA=(--data-from "$HARD")

train_one() {  # name, then nmt.train flags
  local dir="$RUNS/distill/$1"; shift
  if [[ -f "$dir/log.jsonl" ]] && grep -q '"event": "done"' "$dir/log.jsonl"; then
    echo "== $dir: already trained, skipped"; return
  fi
  local resume=()
  [[ -f "$dir/checkpoint_last.pt" ]] && resume=(--resume)
  echo "== training $dir"
  local start=$(date +%s)
  "$PY" -m nmt.train --run-dir "$dir" "${DATA[@]}" "${ARGS[@]}" "$@" "${EXTRA[@]}" "${resume[@]}"
  echo "== $dir: $(( ($(date +%s) - start) / 60 )) min"
}

train_one student_alone_alpha0 --alpha 0 --tokenizer "$HARD"
train_one "student_alone_alpha$LS_ALPHA" --alpha "$LS_ALPHA" --tokenizer "$HARD"
# The distilled students' directories name beta and T: other settings train new students, never reuse these.
KD="beta${BETA}_T${TEMP}"
train_one "student_from_alpha0_$KD" --teacher "$HARD" --distill-beta "$BETA" --distill-temperature "$TEMP"
train_one "student_from_alpha${LS_ALPHA}_$KD" --teacher "$LS" --distill-beta "$BETA" --distill-temperature "$TEMP"
STUDENTS=("$RUNS/distill/student_alone_alpha0" "$RUNS/distill/student_alone_alpha$LS_ALPHA"
          "$RUNS/distill/student_from_alpha0_$KD" "$RUNS/distill/student_from_alpha${LS_ALPHA}_$KD")

ckpts=()
for d in "$HARD" "$LS" "${STUDENTS[@]}"; do ckpts+=(--checkpoint "$d"); done
echo "== evaluating teachers and students: python -m nmt.study --beam 4 ${ckpts[*]} --results $RESULTS --sweep none"
"$PY" -m nmt.study --beam 4 "${ckpts[@]}" --results "$RESULTS" --sweep none
echo "== done. Students in $RUNS/distill/, table in $RESULTS/comparison.md"
