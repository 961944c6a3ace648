import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY_MODEL, toy_train_args, write_lines

from nmt.schedule import inverse_sqrt
from nmt.train import main

TINY_D_FF = TINY_MODEL[TINY_MODEL.index("--d-ff") + 1]

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_inverse_sqrt_schedule():
    assert [round(inverse_sqrt(s, 4), 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 0.8944, 0.8165]


def test_linear_decay_schedule_by_hand():
    """The CPU preset's schedule: warm-up 2 of 6 updates, then down to 0 at the last: (6 - s) / 4."""
    from nmt.schedule import linear_decay
    assert [linear_decay(s, 2, 6) for s in range(7)] == [0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_bad_corpus_is_a_clear_error_and_leaves_no_run_dir(tmp_path, capsys):
    write_lines(tmp_path / "s.txt", ["a", "b", "c"])
    write_lines(tmp_path / "t.txt", ["x", "y"])
    run_dir = tmp_path / "run"
    code = main(["--run-dir", str(run_dir), "--train-src", str(tmp_path / "s.txt"),
                 "--train-tgt", str(tmp_path / "t.txt"), "--valid-src", str(tmp_path / "s.txt"),
                 "--valid-tgt", str(tmp_path / "t.txt")])
    assert code == 2
    assert "t.txt:3: file ends after 2 lines" in capsys.readouterr().err
    assert not run_dir.exists()


def files_of(run_dir):
    """The run's files and their modification times (the lock file aside: taking the lock writes a PID)."""
    return {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.name != ".lock"}


def test_an_existing_run_is_never_overwritten(tiny_run, toy_corpus, capsys):
    before = files_of(tiny_run)
    assert main(toy_train_args(toy_corpus, tiny_run, "--max-epochs", "1")) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(toy_train_args(toy_corpus, tiny_run, "--resume", "--alpha", "0.3")) == 2
    assert "--resume keeps the run's config" in capsys.readouterr().err
    assert files_of(tiny_run) == before


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
    common = ["--max-epochs", "12", "--save-every-steps", "3", "--dropout", "0.1", "--no-fit-temperature"]
    assert main(toy_train_args(toy_corpus, tmp_path / "ref", *common)) == 0  # in-process: only the victim is killed

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

    assert main(toy_train_args(toy_corpus, victim, *common, "--resume")) == 0
    a, b = weights(tmp_path / "ref" / "checkpoint_last.pt"), weights(victim / "checkpoint_last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert '"resume"' in log.read_text()


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch(toy_corpus, tmp_path):
    common = ["--max-steps", "6", "--max-epochs", "1", "--no-fit-temperature", "--seed", "3"]
    assert main(toy_train_args(toy_corpus, tmp_path / "one", *common)) == 0
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "nmt.train", *toy_train_args(toy_corpus, tmp_path / "two", *common)],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 rank(s)" in two.stderr
    ranks = [json.loads(x) for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines() if '"ranks"' in x]
    assert [(e["world"], e["weights_agree"]) for e in ranks] == [(2, True)]  # both ranks end with the same weights
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
    from nmt.tokenizer import BOS, EOS
    src, tgt = torch.tensor([[5, 9, 12, 7, EOS]]), torch.tensor([[BOS, 6, 11, 8]])
    out_a, out_b = (load_model(tmp_path / r / "checkpoint_last.pt")[0](src, tgt) for r in ("one", "two"))
    assert torch.allclose(out_a, out_b, atol=1e-4)
    assert torch.load(tmp_path / "one" / "checkpoint_last.pt", weights_only=False)["step"] == 6


def test_a_corpus_with_nothing_to_train_leaves_no_run_dir(tmp_path, capsys):
    write_lines(tmp_path / "s.txt", ["", "a b", ""])
    write_lines(tmp_path / "t.txt", ["x", "", "y"])  # every pair has an empty side
    run_dir = tmp_path / "run"
    assert main(["--run-dir", str(run_dir), "--train-src", str(tmp_path / "s.txt"),
                 "--train-tgt", str(tmp_path / "t.txt"), "--valid-src", str(tmp_path / "s.txt"),
                 "--valid-tgt", str(tmp_path / "t.txt"), "--vocab-size", "20"]) == 2
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


def test_a_confidence_penalty_run_trains_through_the_logits_loss(toy_corpus, tmp_path):
    """--confidence-penalty reaches `confidence_penalty_loss`: every logged loss is the NLL minus beta times a
    positive entropy, so below the NLL; the run ends with finite weights."""
    run_dir = tmp_path / "cp"
    assert main(toy_train_args(toy_corpus, run_dir, "--max-steps", "20", "--confidence-penalty", "0.3",
                               "--no-fit-temperature")) == 0
    train = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines() if '"event": "train"' in x]
    assert train and all(e["loss"] < e["nll"] for e in train)
    assert all(torch.isfinite(v).all() for v in weights(run_dir / "checkpoint_last.pt").values())


# -- settings that cannot work, runs that failed early, one writer per run -------------------------

@pytest.mark.parametrize("flags, message", [
    (["--lr", "0"], "--lr 0.0: expected a positive finite learning rate"),
    (["--lr=-1e-3"], "--lr -0.001: expected a positive finite learning rate"),
    (["--dropout", "1.5"], "--dropout 1.5: expected a probability in [0, 1)"),
    (["--alpha", "1.0"], "--alpha 1.0: expected a number in [0, 1)"),
    (["--n-heads", "0"], "--n-heads 0: expected a whole number in [1, 256]"),
    (["--d-model", "30", "--n-heads", "4"], "--d-model 30: expected a multiple of --n-heads 4"),
    (["--max-train-len", "300"], "--max-train-len 300: expected at most --max-positions"),
    (["--lr-schedule", "cosine"], "--lr-schedule 'cosine': expected inverse_sqrt or linear"),
    (["--smoothing", "zipf"], "--smoothing 'zipf': expected uniform, unigram, masked"),
    (["--confidence-penalty", "-0.1"], "--confidence-penalty -0.1: expected a finite number >= 0"),
    (["--confidence-penalty", "nan"], "--confidence-penalty nan: expected a finite number >= 0"),
    (["--alpha", "1.5", "--smoothing", "masked"], "--alpha 1.5: expected a number in [0, 1)"),
])
def test_settings_that_cannot_work_are_refused_before_anything_is_written(flags, message, toy_corpus, tmp_path,
                                                                          capsys):
    run_dir = tmp_path / "run"
    assert main(toy_train_args(toy_corpus, run_dir) + flags) == 2
    assert message in capsys.readouterr().err
    assert not run_dir.exists()


def test_a_run_dir_that_is_a_file_is_refused(toy_corpus, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("keep me")
    assert main(toy_train_args(toy_corpus, f)) == 2
    assert "a file, not a directory" in capsys.readouterr().err and f.read_text() == "keep me"


def test_a_run_without_a_checkpoint_starts_again_from_scratch(toy_corpus, tmp_path, caplog):
    """A run killed before its first checkpoint leaves config.json and maybe a temporary checkpoint: a
    fresh start and --resume both train it from scratch, and the temporary file is removed."""
    import logging
    caplog.set_level(logging.INFO, logger="nmt.train")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    (run_dir / ".checkpoint_last.pt.tmp12345").write_bytes(b"half a checkpoint")
    (run_dir / "spm.tmp").write_bytes(b"half a tokenizer")
    assert main(toy_train_args(toy_corpus, run_dir, "--max-epochs", "1", "--no-fit-temperature")) == 0
    assert "holds no checkpoint yet: starting the run again from scratch" in caplog.text
    assert not (run_dir / ".checkpoint_last.pt.tmp12345").exists() and not (run_dir / "spm.tmp").exists()
    assert (run_dir / "checkpoint_last.pt").is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    assert main(toy_train_args(toy_corpus, other, "--max-epochs", "1", "--no-fit-temperature", "--resume")) == 0


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_in_epoch_1_saves_and_the_run_resumes(sig, code, toy_corpus, tmp_path):
    run_dir = tmp_path / "run"
    common = ["--max-epochs", "300", "--no-fit-temperature"]
    proc = subprocess.Popen([sys.executable, "-m", "nmt.train", *toy_train_args(toy_corpus, run_dir, *common)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    log = run_dir / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and '"event": "train"' in log.read_text()):
        time.sleep(0.01)  # the loop has started: its signal handler is in place
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "interrupted at update" in err and "--resume" in err and "Traceback" not in err
    last = torch.load(run_dir / "checkpoint_last.pt", weights_only=False)
    assert last["step"] >= 1 and '"interrupted"' in log.read_text()
    assert main(toy_train_args(toy_corpus, run_dir, "--max-epochs", "2", "--no-fit-temperature", "--resume")) == 0


@pytest.mark.slow
def test_kill_during_the_first_checkpoint_write_leaves_a_run_that_starts_again(toy_corpus, tmp_path):
    """SIGKILL while checkpoint_last.pt is first being written (torch.save made slow on purpose): what is
    left restarts with the same command, and the half-written temporary file is cleared."""
    run_dir = tmp_path / "run"
    slow = ("import time, torch, runpy, sys; save = torch.save\n"
            "def slow(*a, **k):\n    time.sleep(30); return save(*a, **k)\n"
            "torch.save = slow\nsys.argv = ['nmt.train'] + sys.argv[1:]\n"
            "runpy.run_module('nmt.train', run_name='__main__')\n")
    args = toy_train_args(toy_corpus, run_dir, "--max-epochs", "1", "--no-fit-temperature")
    proc = subprocess.Popen([sys.executable, "-c", slow, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 120
    while time.time() < deadline and not list(run_dir.glob(".checkpoint_*.tmp*")):
        time.sleep(0.01)
    assert list(run_dir.glob(".checkpoint_*.tmp*")), "no checkpoint write was caught"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "checkpoint_last.pt").exists()
    assert main(args) == 0
    assert not list(run_dir.glob(".*.tmp*")) and (run_dir / "checkpoint_last.pt").is_file()


@pytest.mark.slow
def test_two_trainings_in_one_run_dir_one_is_refused(toy_corpus, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = toy_train_args(toy_corpus, run_dir, "--max-epochs", "300", "--no-fit-temperature")
    first = subprocess.Popen([sys.executable, "-m", "nmt.train", *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run_dir / ".lock").exists():
            time.sleep(0.01)
        for extra in ([], ["--resume"]):
            assert main(args + extra) == 2
            assert f"another process (PID {first.pid}) is writing this run" in capsys.readouterr().err
        assert run_dir.is_dir()  # the refused process removed nothing
        log = run_dir / "log.jsonl"
        while time.time() < deadline and not (log.exists() and '"event": "train"' in log.read_text()):
            time.sleep(0.01)  # the first one's loop has started: SIGTERM is its clean stop, not a kill
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    assert first.returncode == 143


def test_collectives_get_tensors_on_the_training_device(monkeypatch):
    """Under NCCL every tensor of a collective must live on the GPU. Rank 1 of 2 at an epoch's end, on the
    'meta' device standing in for the GPU: the early-stop flag it broadcasts must be on that device."""
    from types import SimpleNamespace

    from nmt import train as train_mod
    from nmt.config import TrainConfig
    seen = []

    class Broadcast(Exception):
        pass

    def broadcast(tensor, src):  # record where the tensor lives, then stop: a meta tensor holds no value
        seen.append(tensor.device)
        raise Broadcast
    monkeypatch.setattr(train_mod.dist, "broadcast", broadcast)
    r = SimpleNamespace(tcfg=TrainConfig(max_epochs=5), progress=train_mod.Progress(step=3, batch_pos=2),
                        batches=[0, 1], device=torch.device("meta"), is_main=False, world=2)
    with pytest.raises(Broadcast):
        train_mod.end_epoch(r, 0.0)
    assert seen == [torch.device("meta")]


def test_a_corrupt_gzip_is_a_clear_error(tmp_path, capsys):
    import gzip
    good = gzip.compress(b"a dog runs\n" * 200)
    bad = good[:20] + bytes(b ^ 0xFF for b in good[20:60]) + good[60:]  # a broken deflate stream
    for name in ("train.en.gz", "train.de.gz", "val.en.gz", "val.de.gz"):
        (tmp_path / name).write_bytes(bad if name == "train.en.gz" else good)
    assert main(["--run-dir", str(tmp_path / "run"), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "train.en.gz: cannot read" in err and not (tmp_path / "run").exists()


def test_presets_are_data_and_flags_override_them(toy_corpus, tmp_path):
    from nmt.config import PRESETS, TrainConfig
    run_dir = tmp_path / "run"
    assert main(["--preset", "smoke", *toy_train_args(toy_corpus, run_dir, "--max-steps", "3", "--d-model", "48")]) == 0
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["model_config"]["d_model"] == 48  # the flag
    assert cfg["model_config"]["d_ff"] == int(TINY_D_FF) != PRESETS["smoke"]["d_ff"]  # toy_train_args' own flag
    # the preset, on settings toy_train_args leaves alone and whose default differs
    assert cfg["train_config"]["max_epochs"] == PRESETS["smoke"]["max_epochs"] != TrainConfig.max_epochs


def test_a_masked_prior_is_computed_stored_and_checked_on_resume(toy_corpus, tmp_path):
    """--smoothing masked: the prior is uniform over the target side's pieces, stored in the checkpoint (plain
    tensors: weights_only loads it) with its hash in config.json."""
    run_dir = tmp_path / "run"
    args = toy_train_args(toy_corpus, run_dir, "--alpha", "0.1", "--smoothing", "masked", "--max-steps", "4",
                          "--max-epochs", "1", "--no-fit-temperature")
    assert main(args) == 0
    ckpt = torch.load(run_dir / "checkpoint_last.pt", weights_only=True)
    prior = ckpt["prior"]
    import sentencepiece as spm

    from nmt.data import read_text
    sp = spm.SentencePieceProcessor(model_file=str(run_dir / "spm.model"))
    used = {i for line in read_text(toy_corpus / "train.de") for i in sp.encode(line)} | {3}  # EOS too
    assert {int(i) for i in prior.nonzero()} == used and prior.sum().item() == pytest.approx(1.0)
    assert json.loads((run_dir / "config.json").read_text())["prior_sha256"]


def test_a_full_disk_keeps_the_last_good_checkpoint(toy_corpus, tmp_path, monkeypatch, capsys):
    import errno
    run_dir = tmp_path / "run"
    args = toy_train_args(toy_corpus, run_dir, "--no-fit-temperature")
    assert main(args + ["--max-epochs", "1"]) == 0
    good = (run_dir / "checkpoint_last.pt").read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    assert main(args + ["--max-epochs", "2", "--resume"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "No space left on device" in err[-1] and str(run_dir) in err[-1]
    assert (run_dir / "checkpoint_last.pt").read_bytes() == good and not list(run_dir.glob(".*.tmp*"))


def fake_cpu(monkeypatch, flags):
    import nmt.runtime
    monkeypatch.setattr(nmt.runtime, "cpu_bf16_flags", lambda: list(flags))


@pytest.mark.parametrize("amp", ["auto", "none"])
def test_amp_on_a_cpu_without_bf16_units_stays_float32_without_measuring(amp, monkeypatch):
    """(Where there are units, auto follows measured updates: tests/test_levers.py.)"""
    import nmt.levers
    from nmt.config import ModelConfig
    from nmt.runtime import autocast_for
    fake_cpu(monkeypatch, [])
    monkeypatch.setattr(nmt.levers, "time_options", lambda runs: pytest.fail("measured"))
    ctx, scaler, record = autocast_for(amp, torch.device("cpu"), ModelConfig())
    assert record["precision"] == "fp32" and scaler is None and not isinstance(ctx, torch.autocast)


def test_amp_bf16_on_a_cpu_without_bf16_is_refused_before_anything_is_written(toy_corpus, tmp_path, monkeypatch,
                                                                             capsys):
    from nmt.train import main as train
    fake_cpu(monkeypatch, [])
    run_dir = tmp_path / "runs" / "bf16"
    assert train(toy_train_args(toy_corpus, run_dir, "--amp", "bf16", "--max-steps", "2")) == 2
    assert "--amp bf16: this CPU has no bf16 units" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert train(toy_train_args(toy_corpus, run_dir, "--amp", "fp16", "--max-steps", "2")) == 2
    assert "--amp fp16: not on the CPU" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_logged_losses_are_per_token_and_the_schedule_counts_updates_not_batches(toy_corpus, tmp_path):
    """Two checks on one tiny run with gradient accumulation (--update-freq 2) and a learning rate too small to
    move the weights: (1) the training NLL it logs is per target token, so an untrained model's is about its
    validation NLL (both near ln 64 = 4.16 for its 60 pieces; per sentence it would be ~6 times larger);
    (2) the linear schedule's length is in updates (batches / 2 per epoch), so the rate is 0 after the last one."""
    run = tmp_path / "run"
    assert main(toy_train_args(toy_corpus, run, "--update-freq", "2", "--lr", "1e-9", "--lr-schedule", "linear",
                               "--warmup-steps", "2", "--max-epochs", "2", "--log-every", "1",
                               "--average-last", "1")) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train = [e for e in log if e["event"] == "train"]
    valid = next(e for e in log if e["event"] == "valid")
    start = next(e for e in log if e["event"] == "start")
    assert abs(train[0]["nll"] - valid["nll"]) < 0.5 and valid["nll"] < 8, (train[0], valid)
    assert len(train) == 2 * -(-start["batches"] // 2)  # one event per update: ceil(batches / 2) per epoch
    assert train[-1]["lr"] == 0.0 and train[len(train) // 2]["lr"] > 0
