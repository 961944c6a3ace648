import csv
import json

import pytest

from conftest import TINY_MODEL
from nmt.comparison import parse_grid
from nmt.decode import main as decode
from nmt.study import main as study
from nmt.train import main as train


@pytest.fixture(scope="module")
def two_models(toy_multi30k, tmp_path_factory):
    runs = tmp_path_factory.mktemp("study")
    dirs = []
    for alpha, seed in ((0.0, 1), (0.1, 1), (0.1, 2)):
        d = runs / f"a{alpha}_s{seed}"
        assert train(["--data-dir", str(toy_multi30k), "--run-dir", str(d), "--alpha", str(alpha), "--seed", str(seed),
                      "--vocab-size", "64", "--max-tokens", "200", "--max-train-len", "60", "--max-epochs", "6",
                      "--lr", "5e-3", "--warmup-steps", "20", *TINY_MODEL]) == 0
        dirs.append(d)
    (runs / "study.json").write_text(json.dumps({"runs": [{"dir": str(d)} for d in dirs]}))
    return runs, dirs


def test_parse_grid():
    from nmt.config import UsageError
    assert parse_grid("0.7:1.6:0.1") == [0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]
    assert parse_grid("0.8,1,1.25") == [0.8, 1.0, 1.25] and parse_grid("none") == []
    for bad in ("1:0.5:0.1", "0.5:1:0", "a,b", "0,1"):
        with pytest.raises(UsageError, match="--sweep"):
            parse_grid(bad)


def test_comparison_table_sweep_and_figures(two_models, tmp_path, capsys):
    runs, dirs = two_models
    out = tmp_path / "results"
    assert decode(["--beam", "2", "--runs", str(runs), "--results", str(out), "--sweep", "0.8,1.25"]) == 0
    data = json.loads((out / "comparison.json").read_text())
    rows, agg = data["rows"], data["aggregate"]
    assert len(rows) == 6  # 3 models x (T = 1, fitted T)
    assert [(r["label"], r["n"]) for r in agg] == [("hard targets", 1), ("hard targets + T", 1),
                                                   ("label smoothing α=0.1", 2), ("label smoothing α=0.1 + T", 2)]
    fitted = json.loads((dirs[0] / "temperature.json").read_text())["checkpoint_best.pt"]["temperature"]
    hard_t = [r for r in rows if r["label"] == "hard targets + T"][0]
    assert hard_t["temperature"] == pytest.approx(fitted)
    # Temperature scaling does not change the teacher-forced argmax (computed afresh at each T) ...
    hard_1 = [r for r in rows if r["label"] == "hard targets"][0]
    assert hard_t["accuracy"] == hard_1["accuracy"]
    # ... and, fitted on validation, it does not raise the validation NLL.
    assert hard_t["val_nll"] <= hard_1["val_nll"] + 1e-9
    # Intervals: NLL's contains its value (a mean); ECE's percentile intervals may lie above it on 20
    # sentences (ECE is biased upwards, resampling more so), but they are proper intervals.
    for r in rows:
        lo, hi = r["test_nll_ci"]
        assert lo <= r["test_nll"] <= hi
        for key in ("ece_forced", "ece_inference"):
            lo, hi = r[key + "_ci"]
            assert 0 <= lo < hi <= 1, (key, r)
    # Paired bootstrap against the hard-target row of the same seed; seed 2 has no hard-target model.
    seed1 = [r for r in rows if r["seed"] == 1]
    assert all(r["bleu_ci"] > 0 and r["chrf_ci"] > 0 for r in seed1) and hard_1["bleu_p"] is None
    assert all(0 < r["bleu_p"] <= 1 and 0 < r["chrf_p"] <= 1 for r in seed1 if r is not hard_1)
    assert all("bleu_p" not in r for r in rows if r["seed"] == 2)
    ls = [r for r in agg if r["label"] == "label smoothing α=0.1"][0]
    assert ls["bleu_beam_std"] is not None
    md = (out / "comparison.md").read_text()
    assert "| hard targets + T |" in md and "±" in md and "nrefs:1" in md and "labels:ter" in md
    prov = data["meta"]["provenance"]
    assert prov["command"].startswith("python -m nmt.study") and prov["torch"] and prov["machine"]["threads"] >= 1
    assert (out / "runs" / dirs[0].name / "log.jsonl").is_file()
    # The Markdown is made from the JSON alone.
    assert study(["--from-results", str(out)]) == 0
    assert capsys.readouterr().out.endswith(md)
    with open(out / "temperature_sweep.csv") as f:
        sweep = list(csv.DictReader(f))
    assert len(sweep) == 4 and {float(r["temperature"]) for r in sweep} == {0.8, 1.25}
    for name in ("reliability.png", "temperature_sweep.png", "reliability_hard_targets.png"):
        assert (out / name).stat().st_size > 10_000


def test_no_study_is_a_clear_error(tmp_path, capsys):
    assert decode(["--runs", str(tmp_path), "--results", str(tmp_path / "r")]) == 2
    assert "scripts/train.sh" in capsys.readouterr().err


def test_train_sh_main_job_end_to_end(toy_multi30k, tmp_path):
    """scripts/train.sh with the smoke preset: both models, the manifest, the comparison; a rerun skips."""
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "scripts" / "train.sh"
    cmd = ["bash", str(script), "--preset", "smoke", "--data-dir", str(toy_multi30k), "--runs", str(tmp_path / "runs"),
           "--results", str(tmp_path / "results"), "--sweep", "none", "--", "--max-steps", "15", "--vocab-size", "64",
           "--max-train-len", "60"]
    env = {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((tmp_path / "runs" / "study.json").read_text())
    assert [(r["alpha"], r["seed"]) for r in manifest["runs"]] == [(0, 1), (0.1, 1)]
    table = (tmp_path / "results" / "comparison.md").read_text()
    assert "| hard targets |" in table and "| label smoothing α=0.1 + T |" in table
    again = subprocess.run(cmd[:-7] + ["--no-eval"], capture_output=True, text=True, env=env)
    assert again.returncode == 0 and again.stdout.count("already trained, skipped") == 2
    bad = subprocess.run(["bash", str(script), "--preset", "huge"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown preset" in bad.stderr
    # scripts/distill.sh on those two models as teachers: four students, one table with teachers beside them.
    distill = script.parent / "distill.sh"
    res = subprocess.run(["bash", str(distill), "--preset", "smoke", "--runs", str(tmp_path / "runs"), "--results",
                          str(tmp_path / "distill")], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    labels = [r["label"] for r in json.loads((tmp_path / "distill" / "comparison.json").read_text())["aggregate"]]
    assert len(labels) == 12  # 2 teachers + 4 students, each at T = 1 and fitted T
    assert "student ← hard targets teacher (β=0.5, T=1) [d32 1+1L]" in labels
    assert "student ← label smoothing α=0.1 teacher (β=0.5, T=1) [d32 1+1L] + T" in labels
    hashes = {json.loads((d / "config.json").read_text())["tokenizer_sha256"]
              for d in (tmp_path / "runs").glob("**/alpha*_seed1")} | \
        {json.loads((d / "config.json").read_text())["tokenizer_sha256"] for d in (tmp_path / "runs" / "distill").iterdir()}
    # Same data and seed: the two teachers trained byte-identical tokenizers; every student reuses it.
    assert len(hashes) == 1
    # The distilled students' directories name beta and T, so another setting can never reuse them.
    assert sorted(d.name for d in (tmp_path / "runs" / "distill").iterdir()) == [
        "student_alone_alpha0", "student_alone_alpha0.1", "student_from_alpha0.1_beta0.5_T1",
        "student_from_alpha0_beta0.5_T1"]


def test_committed_results_rebuild_the_committed_tables_and_the_readme():
    """results/main holds the study behind the README: comparison.md is made from comparison.json alone, and
    the README's headline table and claims are what `python -m nmt.study --from-results results/main
    --headline` prints."""
    from pathlib import Path

    from nmt.comparison import rebuild
    root = Path(__file__).resolve().parents[1]
    main_results = root / "results" / "main"
    assert rebuild(main_results) == (main_results / "comparison.md").read_text()
    assert rebuild(main_results, headline=True) in (root / "README.md").read_text()
