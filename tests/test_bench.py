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


def test_the_static_shape_cache_of_the_compile_benchmark_searches_exactly_as_the_step_cache():
    """nmt-static's `CapacityCache` attends over the cache's whole capacity, the unwritten positions masked: the
    same translations as `StepCache` (a random model, beam 4, sentences of different lengths, every hypothesis
    past the cache's first capacity), and probabilities equal to float32 rounding (the softmax sums over more,
    zero-weight, entries)."""
    import importlib.util

    import torch

    from nmt.config import ModelConfig
    from nmt.data import pad_ids
    from nmt.model import CACHE_CHUNK, Transformer
    from nmt.search import beam_search
    spec = importlib.util.spec_from_file_location("bench_decode", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=40, d_model=32, n_heads=4, encoder_layers=2, decoder_layers=2,
                                    d_ff=64, dropout=0.0)).eval()
    src = pad_ids([[5, 6, 7, 8, 9, 2], [10, 11, 2], [12, 13, 14, 2]])
    plain = beam_search(model, src, beam=4, max_len_a=0, max_len_b=44, min_len=34)
    model.new_cache = lambda: bench.CapacityCache(len(model.decoder))
    static = beam_search(model, src, beam=4, max_len_a=0, max_len_b=44, min_len=34)
    assert [h.tokens for h in static] == [h.tokens for h in plain]
    assert min(len(h.tokens) for h in plain) > CACHE_CHUNK  # the cache grew once: a new capacity
    for a, b in zip(static, plain):
        assert a.token_probs == pytest.approx(b.token_probs, rel=1e-5)
