import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import toy_train_args, write_lines
from nmt.train import inverse_sqrt, main

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run(args, **kw):
    return subprocess.run([sys.executable, "-m", "nmt.train", *args], capture_output=True, text=True, env=ENV, **kw)


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_inverse_sqrt_schedule():
    assert [round(inverse_sqrt(s, 4), 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 0.8944, 0.8165]


def test_bad_corpus_is_a_clear_error_and_leaves_no_run_dir(tmp_path, capsys):
    write_lines(tmp_path / "s.txt", ["a", "b", "c"])
    write_lines(tmp_path / "t.txt", ["x", "y"])
    run_dir = tmp_path / "run"
    code = main(["--run-dir", str(run_dir), "--train-src", str(tmp_path / "s.txt"), "--train-tgt", str(tmp_path / "t.txt"),
                 "--valid-src", str(tmp_path / "s.txt"), "--valid-tgt", str(tmp_path / "t.txt")])
    assert code == 2
    assert "t.txt:3: file ends after 2 lines" in capsys.readouterr().err
    assert not run_dir.exists()


def test_an_existing_run_is_never_overwritten(tiny_run, toy_corpus, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_run.iterdir()}
    assert main(toy_train_args(toy_corpus, tiny_run, "--max-epochs", "1")) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(toy_train_args(toy_corpus, tiny_run, "--resume", "--alpha", "0.3")) == 2
    assert "--resume keeps the run's config" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in tiny_run.iterdir()} == before


def test_tiny_run_outputs(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "spm.model", "log.jsonl", "checkpoint_last.pt", "checkpoint_best.pt",
            "checkpoint_avg.pt", "temperature.json"} <= names
    assert len([n for n in names if n.startswith("checkpoint_epoch")]) == 2  # --average-last 2 keeps two
    events = [json.loads(line) for line in (tiny_run / "log.jsonl").read_text().splitlines()]
    valid = [e for e in events if e["event"] == "valid"]
    assert len(valid) == 40 and valid[-1]["nll"] < valid[0]["nll"]
    assert all({"loss", "nll", "ppl", "accuracy"} <= set(e) for e in valid)
    assert json.loads((tiny_run / "temperature.json").read_text())["checkpoint_avg.pt"]["temperature"] > 0


def test_killed_and_resumed_run_ends_with_the_same_weights(toy_corpus, tmp_path):
    # Dropout on: the RNG state must survive the kill too.
    common = ["--max-epochs", "25", "--save-every-steps", "3", "--dropout", "0.1", "--no-fit-temperature"]
    ref = run(toy_train_args(toy_corpus, tmp_path / "ref", *common), timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]

    victim = tmp_path / "victim"
    proc = subprocess.Popen([sys.executable, "-m", "nmt.train", *toy_train_args(toy_corpus, victim, *common)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    log = victim / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        steps = [json.loads(x).get("step", 0) for x in lines if '"checkpoint"' in x]
        if steps and max(steps) >= 40:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert '"done"' not in log.read_text(), "the run finished before it could be killed"

    res = run(toy_train_args(toy_corpus, victim, *common, "--resume"), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = weights(tmp_path / "ref" / "checkpoint_last.pt"), weights(victim / "checkpoint_last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert '"resume"' in log.read_text()


def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch(toy_corpus, tmp_path):
    common = ["--max-steps", "6", "--max-epochs", "1", "--no-fit-temperature", "--seed", "3"]
    one = run(toy_train_args(toy_corpus, tmp_path / "one", *common), timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "nmt.train", *toy_train_args(toy_corpus, tmp_path / "two", *common)],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 rank(s)" in two.stderr
    a, b = weights(tmp_path / "one" / "checkpoint_last.pt"), weights(tmp_path / "two" / "checkpoint_last.pt")
    # Key biases add the same q.b to every attention score of a query: softmax cancels them, their true
    # gradient is 0, and Adam turns the float noise of the two summation orders into different (harmless)
    # steps. Compare everything else, and the functions the two models compute.
    D = 32
    key_bias = {"encoder.0.qkv.bias": slice(D, 2 * D), "decoder.0.self_qkv.bias": slice(D, 2 * D),
                "decoder.0.cross_kv.bias": slice(0, D)}
    for k in a:
        x, y = a[k], b[k]
        if k in key_bias:
            keep = torch.ones_like(x, dtype=torch.bool)
            keep[key_bias[k]] = False
            x, y = x[keep], y[keep]
        assert (x - y).abs().max().item() < 1e-5, k
    from nmt.checkpoint import load_model
    from nmt.model import BOS, EOS
    src, tgt = torch.tensor([[5, 9, 12, 7, EOS]]), torch.tensor([[BOS, 6, 11, 8]])
    out_a, out_b = (load_model(tmp_path / r / "checkpoint_last.pt")[0](src, tgt) for r in ("one", "two"))
    assert torch.allclose(out_a, out_b, atol=1e-4)
    assert torch.load(tmp_path / "one" / "checkpoint_last.pt", weights_only=False)["step"] == 6


def test_a_corpus_with_nothing_to_train_leaves_no_run_dir(tmp_path, capsys):
    write_lines(tmp_path / "s.txt", ["", "a b", ""])
    write_lines(tmp_path / "t.txt", ["x", "", "y"])  # every pair has an empty side
    run_dir = tmp_path / "run"
    assert main(["--run-dir", str(run_dir), "--train-src", str(tmp_path / "s.txt"), "--train-tgt", str(tmp_path / "t.txt"),
                 "--valid-src", str(tmp_path / "s.txt"), "--valid-tgt", str(tmp_path / "t.txt"), "--vocab-size", "20"]) == 2
    err = capsys.readouterr().err
    assert "no pair left to train on after filtering (2 empty source, 1 empty target)" in err
    assert not run_dir.exists()


def test_gradient_accumulation_makes_fewer_larger_updates(toy_corpus, tmp_path):
    one = tmp_path / "uf1"
    two = tmp_path / "uf2"
    for run_dir, uf in ((one, "1"), (two, "2")):
        assert main(toy_train_args(toy_corpus, run_dir, "--max-epochs", "1", "--update-freq", uf,
                                   "--no-fit-temperature")) == 0
    steps = [torch.load(d / "checkpoint_last.pt", weights_only=False)["step"] for d in (one, two)]
    assert steps[1] == (steps[0] + 1) // 2  # ceil(batches / 2) updates
