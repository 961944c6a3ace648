"""scripts/bench_decode.py end to end on the tiny run: the systems that need no `bench` extra (generate and
the converted MarianMT need transformers), CTranslate2 on nmt's exported weights among them."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_decode.py"


@pytest.mark.slow
def test_bench_decode_runs_nmt_and_both_floors(tiny_run, toy_multi30k, tmp_path):
    out = tmp_path / "decode.json"
    res = subprocess.run([sys.executable, str(SCRIPT), "--checkpoint", str(tiny_run), "--data-dir", str(toy_multi30k),
                          "--systems", "nmt,matmuls,kernels,ct2-export", "--rounds", "1", "--length", "5",
                          "--batch-size", "8",
                          "--json", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    results = json.loads(out.read_text())["results"]
    assert sorted(results) == ["ct2-export", "kernels", "matmuls", "nmt"]
    for r in results.values():  # the 20 toy test sentences, exactly 5 decoder steps each
        assert (r["sentences"], r["target_tokens"]) == (20, 100)
        assert r["tokens_per_s"] > 0
    assert "ct2-export" in res.stdout.splitlines()[-2]  # the table's last row, before the summary line


def test_bench_decode_rejects_an_unknown_system():
    res = subprocess.run([sys.executable, str(SCRIPT), "--systems", "nmt,fast"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "--systems: unknown fast" in res.stderr


@pytest.mark.slow
def test_gpu_check_refuses_without_a_gpu_and_writes_nothing(tmp_path):
    import os
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "NMT_PY": sys.executable}
    res = subprocess.run([str(SCRIPT.parent / "gpu_check.sh"), "--out", str(tmp_path / "bench")], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 3, res.stderr
    assert "no CUDA GPU visible" in res.stderr and "nothing was measured" in res.stderr
    assert not (tmp_path / "bench").exists()
