import json
import shutil
import subprocess
import sys
import time

import pytest

from conftest import TINY_MODEL, toy_pairs
from nmt.decode import main

PY = sys.executable


def test_end_to_end_smoke_train_then_decode_beam4(toy_multi30k, tmp_path):
    """The main path, as a user runs it: train a few steps on a Multi30k-layout corpus, decode --beam 4."""
    t0 = time.time()
    run = tmp_path / "run"
    train = subprocess.run([PY, "-m", "nmt.train", "--data-dir", str(toy_multi30k), "--run-dir", str(run),
                            "--vocab-size", "64", "--max-tokens", "300", "--max-len", "60", "--max-steps", "12",
                            "--warmup-steps", "4", *TINY_MODEL], capture_output=True, text=True)
    assert train.returncode == 0, train.stderr[-2000:]
    dec = subprocess.run([PY, "-m", "nmt.decode", "--checkpoint", str(run), "--beam", "4"],
                         capture_output=True, text=True)
    assert dec.returncode == 0, dec.stderr[-2000:]
    assert time.time() - t0 < 30
    out = run / "eval" / "test_2016_flickr.checkpoint_best.beam4.T1.0.txt"
    assert len(out.read_text().splitlines()) == 20
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert metrics["beam"] == 4 and 0 <= metrics["bleu"] <= 100 and metrics["bleu_signature"].startswith("nrefs:1")
    assert 0 <= metrics["forced"]["ece"] <= 1 and metrics["forced"]["tokens"] > 0
    assert "BLEU" in dec.stdout and "ECE|bins:15|binning:uniform|level:token|forced|T:1.0" in dec.stdout


def test_a_trained_model_translates_and_reports(tiny_run, toy_corpus, tmp_path, capsys):
    out = tmp_path / "hyp.txt"
    assert main(["--checkpoint", str(tiny_run), "--input", str(toy_corpus / "test.en"),
                 "--references", str(toy_corpus / "test.de"), "--output", str(out), "--beam", "4"]) == 0
    m = json.loads(out.with_suffix(".json").read_text())
    assert m["checkpoint"].endswith("checkpoint_avg.pt")  # a run directory stands for its averaged checkpoint
    assert m["bleu"] > 50, m["bleu"]  # the toy task is word-for-word: a trained tiny model gets most of it
    assert m["speed"]["sentences_per_s"] > 0 and m["length_ratio"] > 0.5
    printed = capsys.readouterr().out
    assert "chrF" in printed and "ECE EOS" in printed and "ECE infer." in printed


def test_stdin_filter_keeps_line_count_and_empty_lines(tiny_run):
    src = "a dog runs\n\nthe man sits on the grass\n\n"
    res = subprocess.run([PY, "-m", "nmt.decode", "--checkpoint", str(tiny_run), "--input", "-", "--beam", "4"],
                         input=src, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.split("\n")
    assert len(lines) == 5 and lines[-1] == ""  # 4 lines, each newline-terminated
    assert lines[1] == "" and lines[3] == "" and lines[0] and lines[2]


def test_beam_1_matches_greedy_on_the_cli(tiny_run, toy_corpus, tmp_path):
    outs = []
    for beam in (1, 4):
        out = tmp_path / f"b{beam}.txt"
        assert main(["--checkpoint", str(tiny_run), "--input", str(toy_corpus / "test.en"), "--output", str(out),
                     "--beam", str(beam)]) == 0
        outs.append(out.read_text().splitlines())
    assert len(outs[0]) == len(outs[1]) == 30


def test_invalid_utf8_on_stdin_is_a_clear_error(tiny_run):
    res = subprocess.run([PY, "-m", "nmt.decode", "--checkpoint", str(tiny_run), "--input", "-"],
                         input=b"fine\nbad \xff\n", capture_output=True)
    assert res.returncode == 2 and b"<stdin>:2: invalid UTF-8" in res.stderr


def test_missing_checkpoint_and_wrong_tokenizer(tiny_run, tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nope.pt"), "--input", "-"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["--checkpoint", str(tmp_path / "junk.pt"), "--input", "-"]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    (other / "spm.model").write_bytes((other / "spm.model").read_bytes()[:-10] + b"0123456789")
    assert main(["--checkpoint", str(other), "--input", "-"]) == 2
    assert "tokenizer does not match the checkpoint" in capsys.readouterr().err


def test_long_lines_are_truncated_with_a_warning(tiny_run, tmp_path, caplog):
    src = tmp_path / "long.en"
    src.write_text("a dog runs\n" + " ".join(["dog"] * 200) + "\n")
    out = tmp_path / "long.de"
    assert main(["--checkpoint", str(tiny_run), "--input", str(src), "--output", str(out), "--beam", "2"]) == 0
    assert "long.en:2:" in caplog.text and "truncated" in caplog.text
    assert len(out.read_text().splitlines()) == 2


def test_temperature_auto_reads_the_fitted_value(tiny_run, toy_corpus, tmp_path):
    fitted = json.loads((tiny_run / "temperature.json").read_text())["checkpoint_avg.pt"]["temperature"]
    out = tmp_path / "t.txt"
    assert main(["--checkpoint", str(tiny_run), "--input", str(toy_corpus / "test.en"), "--references",
                 str(toy_corpus / "test.de"), "--output", str(out), "--temperature", "auto"]) == 0
    m = json.loads(out.with_suffix(".json").read_text())
    assert m["temperature"] == pytest.approx(fitted)
    assert m["forced"]["signature"].endswith(f"T:{round(fitted, 4)}")
    assert main(["--checkpoint", str(tiny_run), "--input", "-", "--temperature", "-1"]) == 2
