#!/usr/bin/env bash
# Old (47dad66) and new evaluation of the seed-1 pair, one after the other, nothing else running.
set -e
PY=/work/main/.venv/bin/python
cd /work/evalcmp
rm -rf old new; mkdir -p old new
$PY prepare_old.py /work/runs old/runs
$PY -c "
import json; json.dump({'runs': [{'dir': '/work/runs/cpu/alpha0_seed1', 'alpha': 0.0, 'seed': 1}, {'dir': '/work/runs/cpu/alpha0.1_seed1', 'alpha': 0.1, 'seed': 1}]}, open('new/study.json', 'w'))"
mkdir -p new/runs && mv new/study.json new/runs/
s=$(date +%s.%N); (cd /work/explore/code-47dad66 && PYTHONPATH=/work/explore/code-47dad66 $PY -m nmt.decode --beam 4 --runs /work/evalcmp/old/runs --results /work/evalcmp/old/results --threads 2) > old.log 2>&1; e=$(date +%s.%N)
echo "old $(echo "$e - $s" | bc)" > times.txt
s=$(date +%s.%N); (cd /work/seedcode && PYTHONPATH=/work/main $PY -m nmt.study --beam 4 --runs /work/evalcmp/new/runs --results /work/evalcmp/new/results --threads 2) > new.log 2>&1; e=$(date +%s.%N)
echo "new $(echo "$e - $s" | bc)" >> times.txt
cat times.txt
