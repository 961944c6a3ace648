"""Study files: validation, the runner (local and through submitit), typed results, claims, rebuilds."""
import csv
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nmt.claims import same
from nmt.config import parse_grid
from nmt.data import read_text
from nmt.errors import DataError, StudyError, UsageError
from nmt.stats import TREND_TEST, recompute, recompute_all
from nmt.study import main as study
from nmt.studyfile import load_study

ROOT = Path(__file__).resolve().parents[1]
TOY_FLAGS = ('flags = { max_steps = 15, vocab_size = 64, max_train_len = 60, d_model = 32, n_heads = 2, '
             'encoder_layers = 1, decoder_layers = 1, d_ff = 64, max_positions = 64 }')


def toy_study(path: Path, data_dir: Path, seeds="[1, 2]", extra: str = "", models: str = None) -> Path:
    models = models or ('[[models]]\nname = "hard"\nlabel = "hard targets"\n\n'
                        '[[models]]\nname = "ls"\nlabel = "label smoothing α=0.1"\nalpha = 0.1\n')
    path.write_text(f'name = "toy"\n[data]\ndir = "{data_dir}"\n[defaults]\npreset = "smoke"\nseeds = {seeds}\n'
                    f'{TOY_FLAGS}\n\n{models}\n[evaluate]\nbeam = 2\nsweep = "0.8,1.25"\nbaseline = "hard"\n'
                    f'{extra}\n'
                    '[margins]\nbleu_beam = 0.5\n\n'
                    '[[claims]]\nclaim = "ECE(LS) < ECE(hard)"\nfamily = "primary"\nmetric = "ece_forced"\na = "ls"\n'
                    'b = "hard"\ndirection = "less"\n\n'
                    '[[claims]]\nclaim = "ECE(hard + T) ≈ ECE(LS)"\nfamily = "primary"\nmetric = "ece_forced"\n'
                    'a = { model = "hard", t_kind = "fitted" }\nb = "ls"\ndirection = "equivalent"\n'
                    'margin = 0.01\n\n'
                    '[[claims]]\nclaim = "BLEU (LS) > BLEU (hard)"\nfamily = "secondary"\nmetric = "bleu_beam"\n'
                    'a = "ls"\nb = "hard"\ndirection = "greater"\n\n'
                    '[[claims]]\nclaim = "BLEU (LS) ≈ BLEU (hard)"\nfamily = "secondary"\nmetric = "bleu_beam"\n'
                    'a = "ls"\nb = "hard"\ndirection = "equivalent"\n')
    return path


def test_parse_grid():
    assert parse_grid("0.7:1.6:0.1") == [0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]
    assert parse_grid("0.8,1,1.25") == [0.8, 1.0, 1.25] and parse_grid("none") == []
    for bad in ("1:0.5:0.1", "0.5:1:0", "a,b", "0,1"):
        with pytest.raises(UsageError, match="--sweep"):
            parse_grid(bad)


def test_the_committed_study_files_are_valid():
    for f in sorted((ROOT / "studies").glob("*.toml")):
        s = load_study(f)
        assert s.models and s.name == f.stem, f


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('alpha = 0.1', 'alhpa = 0.1'),
     r"models\[1\]\.alhpa: unknown key \(allowed: name, label, alpha"),
    (lambda t: t.replace('alpha = 0.1', 'alpha = 1.5'), r"models\[1\]\.alpha: 1\.5: expected a number in \[0, 1\)"),
    (lambda t: t.replace('name = "ls"', 'name = "hard"'), r"models\[1\]\.name: 'hard': two models have this name"),
    (lambda t: t.replace('margin = 0.01', ''), r"claims\[1\]\.margin: missing: an equivalence claim needs its margin"),
    (lambda t: t.replace('b = "hard"', 'b = "nobody"'), r"claims\[0\]\.b: 'nobody': not a model of this study"),
    (lambda t: t.replace('metric = "ece_forced"', 'metric = "ece"', 1), r"claims\[0\]\.metric: 'ece': expected one of"),
    (lambda t: t.replace('beam = 2', 'beam = 0'), r"evaluate\.beam: 0: expected a whole number >= 1"),
    (lambda t: t.replace('seeds = [1, 2]', 'seeds = [1, 1]'), r"defaults\.seeds: \[1, 1\]: a seed is listed twice"),
    (lambda t: t.replace('max_steps = 15', 'max_stepz = 15'), r"defaults\.flags\.max_stepz: unknown key"),
    (lambda t: t.replace('max_steps = 15', 'lr = -1'), r"models\[0\]: the model cannot be trained: --lr -1"),
    (lambda t: t.replace('name = "toy"', ''), r"name: missing"),
    (lambda t: t + '\n[[models]]\nname = "kd"\nteacher = "ghost"\n', r"models\[2\]\.teacher: 'ghost'"),
    (lambda t: t.replace('[data]', '[data]\npair = "en-xx"'), r"data\.pair: 'en-xx': expected SRC-TGT"),
    (lambda t: "name = [", "not a TOML file"),
    (lambda t: t.replace('family = "primary"\n', '', 1), r"claims\[0\]\.family: missing \(expected primary"),
    (lambda t: t.replace('family = "primary"', 'family = "main"', 1), r"claims\[0\]\.family: 'main': expected one of"),
    (lambda t: t[:t.rindex('[[claims]]')],
     r"claims\[2\]: 'BLEU \(LS\) > BLEU \(hard\)': an ordering on bleu_beam needs its equivalence companion"),
    (lambda t: t.replace('[margins]\nbleu_beam = 0.5', '[margins]\nbleu_beam = -1'), r"margins\.bleu_beam: -1"),
    (lambda t: t.replace('direction = "less"', 'direction = "less"\npool = "blocks"'),
     r"claims\[0\]\.pool: only a pooled claim"),
    (lambda t: t.replace('alpha = 0.1', 'alpha = 0.3\nsmoothing = "zipf"'), r"models\[1\]\.smoothing: 'zipf'"),
    (lambda t: t.replace('alpha = 0.1', 'confidence_penalty = -0.1'), r"models\[1\]\.confidence_penalty: -0\.1"),
])
def test_a_bad_study_file_names_the_key_and_trains_nothing(edit, message, tmp_path, toy_multi30k, capsys):
    f = toy_study(tmp_path / "s.toml", toy_multi30k)
    f.write_text(edit(f.read_text()))
    with pytest.raises(StudyError, match=message):
        load_study(f)
    runs = tmp_path / "runs"
    assert study(["run", str(f), "--runs", str(runs), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {f}: ") and err.count("\n") == 1
    assert not runs.exists() and not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def toy_results(toy_multi30k, tmp_path_factory):
    """The toy study run once with the local launcher: two models, two seeds, a sweep and a beam sweep."""
    d = tmp_path_factory.mktemp("toystudy")
    f = toy_study(d / "toy.toml", toy_multi30k, extra="beams = [1, 3]\ntest_sets = \"all\"")
    assert study(["run", str(f), "--runs", str(d / "runs"), "--results", str(d / "results")]) == 0
    return d, f


def test_the_committed_evidence_gives_back_every_calibration_number_of_its_row(toy_results, toy_multi30k):
    """results/NAME/evidence/: per row, the per-token confidences and correctness in corpus order. From them
    alone: forced ECE (all positions, EOS only, no EOS), smooth ECE, inference ECE under the study's protocol and
    test NLL equal the row's; the two-level bootstrap covers the ECE and BLEU claims, its interval around the
    estimate; torchmetrics' binary calibration error (L1, 15 bins) agrees with nmt's on the same confidences."""
    import numpy as np
    from torchmetrics.functional.classification import binary_calibration_error

    from nmt import evidence, hierarchical
    from nmt.calibration import expected_calibration_error, smooth_ece
    from nmt.studyfile import InferenceProtocol
    d, _ = toy_results
    out = d / "results"
    data = json.loads((out / "comparison.json").read_text())
    refs = read_text(toy_multi30k / "test_2016_flickr.de.gz")
    for r in data["rows"]:
        ev = evidence.load(out / "evidence" / evidence.file_name(r["model"], r["seed"], r["test_set"], r["t_kind"]))
        f = ev.forced
        ok = f.correct["forced"]
        # corpus order: each sentence's tokens end with its one EOS, as many sentences as the test set has
        ends = np.cumsum(f.counts)[f.counts > 0] - 1
        assert len(f.counts) == len(refs) and f.eos[ends].all() and f.eos.sum() == len(ends)
        inf = ev.inference
        assert len(inf.counts) == len(refs) and inf.confidence.size == inf.counts.sum() == inf.eos.size
        assert expected_calibration_error(f.confidence, ok) == pytest.approx(r["ece_forced"], abs=1e-12)
        assert expected_calibration_error(f.confidence[f.eos], ok[f.eos]) == pytest.approx(r["ece_forced_eos"],
                                                                                            abs=1e-12)
        assert expected_calibration_error(f.confidence[~f.eos], ok[~f.eos]) == pytest.approx(r["ece_forced_noeos"],
                                                                                              abs=1e-12)
        assert smooth_ece(f.confidence, ok) == pytest.approx(r["smece_forced"], abs=1e-12)
        tm = binary_calibration_error(torch.from_numpy(f.confidence.astype(np.float64)), torch.from_numpy(ok).long(),
                                      n_bins=15, norm="l1")
        assert float(tm) == pytest.approx(r["ece_forced"], abs=1e-9)  # torchmetrics, the parity check
        hyps = read_text(out / "hyps" / f"{r['model']}.seed{r['seed']}.{r['test_set']}.T{round(r['temperature'], 4)}"
                                        f".beam2.txt")
        for metric, value in (("ece_forced", r["ece_forced"]), ("ece_forced_noeos", r["ece_forced_noeos"]),
                              ("test_nll", r["test_nll"]), ("ece_inference", r["ece_inference"]),
                              ("bleu_beam", r["bleu_beam"]), ("chrf", r["chrf"])):
            s = hierarchical.sentence_stats(metric, hyps, refs, ev, 15, InferenceProtocol())
            # NLL: the row sums float32 batch totals, the evidence float64 sentence totals (1e-7 apart)
            assert s.value() == pytest.approx(value, rel=1e-6 if metric == "test_nll" else 1e-9, abs=1e-12), metric
    for c in data["claims"]:
        lo, hi = c["ci_two_level"]
        assert lo <= c["estimate"] <= hi and (hi - lo > 0 or c["metric"] == "bleu_beam"), c["claim"]  # toy BLEU: 0


def test_the_study_trains_evaluates_and_writes_typed_results(toy_results, capsys):
    d, f = toy_results
    out = d / "results"
    data = json.loads((out / "comparison.json").read_text())
    rows = data["rows"]
    assert len(rows) == 2 * 2 * 2  # 2 models x 2 seeds x (T = 1, fitted T), one test set
    assert {(r["model"], r["seed"], r["t_kind"]) for r in rows} == {(m, s, k) for m in ("hard", "ls") for s in (1, 2)
                                                                   for k in ("1", "fitted")}
    assert all(r["test_set"] == "test_2016_flickr" for r in rows)  # "all": the only test set the toy data has
    fitted = json.loads(next((d / "runs/en-de/smoke").glob("hard+flags*_seed1/temperature.json")).read_text())
    hard_t = next(r for r in rows if (r["model"], r["seed"], r["t_kind"]) == ("hard", 1, "fitted"))
    hard_1 = next(r for r in rows if (r["model"], r["seed"], r["t_kind"]) == ("hard", 1, "1"))
    assert hard_t["temperature"] == pytest.approx(fitted["checkpoint_best.pt"]["temperature"])
    assert hard_t["accuracy"] == hard_1["accuracy"]  # T never changes the arg-max
    assert hard_t["val_nll"] <= hard_1["val_nll"] + 1e-9  # fitted on validation: it cannot raise validation NLL
    for r in rows:
        lo, hi = r["test_nll_ci"]
        assert lo <= r["test_nll"] <= hi
        assert 0 <= r["ece_forced_floor"] <= r["ece_forced"] + 0.2
    assert hard_1["bleu_p"] is None and all(r["bleu_p"] is not None for r in rows if r is not hard_1
                                            and r["seed"] == 1)
    # the claims: the per-seed differences of the rows, and every interval / verdict recomputed from them
    assert [c["claim"] for c in data["claims"]] == ["ECE(LS) < ECE(hard)", "ECE(hard + T) ≈ ECE(LS)",
                                                    "BLEU (LS) > BLEU (hard)", "BLEU (LS) ≈ BLEU (hard)"]
    assert [c["family"] for c in data["claims"]] == ["primary", "primary", "secondary", "secondary"]
    for c in data["claims"][:2]:
        per = {s: next(r["ece_forced"] for r in rows if (r["model"], r["seed"], r["t_kind"]) ==
                       (c["a"]["model"], s, c["a"]["t_kind"])) -
               next(r["ece_forced"] for r in rows if (r["model"], r["seed"], r["t_kind"]) ==
                    (c["b"]["model"], s, c["b"]["t_kind"])) for s in (1, 2)}
        assert c["differences"] == [per[1], per[2]] and c["n"] == 2
        again = recompute(c)
        assert (again.ci, again.p, again.verdict) == (c["ci"], c["p"], c["verdict"])
    md = (out / "comparison.md").read_text()
    assert "| hard targets + T |" in md and "**" in md and "Holm p" in md and "labeller:ter-wang" in md
    assert "uncommitted changes" in md or "(clean tree)" in md
    # the beam sweep's section: one line per model and T, a column per beam, mean ± std over the two seeds
    bleu_table = md.split("### test_2016_flickr: BLEU\n\n")[1].split("\n\n")[0].splitlines()
    assert bleu_table[0] == "| model | T | beam 1 | beam 3 | n |" and len(bleu_table) == 2 + 4
    hard_b3 = [float(b["bleu"]) for b in csv.DictReader(open(out / "beam_sweep.csv"))
               if (b["model"], b["t_kind"], b["beam"]) == ("hard", "1", "3")]
    assert bleu_table[2].startswith("| hard targets | 1 | ") and f"{sum(hard_b3) / 2:.2f} ± " in bleu_table[2]
    assert "### test_2016_flickr: share cut at the length limit" in md
    prov = data["meta"]["provenance"]
    assert prov["command"].startswith("python -m nmt.study run") and str(ROOT) not in prov["command"]
    # The Markdown is made from the JSON alone.
    assert study(["--from-results", str(out)]) == 0
    assert capsys.readouterr().out == md
    with open(out / "temperature_sweep.csv") as fh:
        sweep = list(csv.DictReader(fh))
    assert len(sweep) == 2 * 2 * 2 and {int(r["seed"]) for r in sweep} == {1, 2}  # every seed is swept
    with open(out / "beam_sweep.csv") as fh:
        beams = list(csv.DictReader(fh))
    assert len(beams) == 2 * 2 * 2 * 2 and {int(r["beam"]) for r in beams} == {1, 3}
    assert all(float(r["sweep_seconds"]) > 0 for r in beams)  # each model-seed's sweep, timed
    for name in ("reliability.png", "temperature_sweep.png", "beam_sweep.png", "reliability_hard_t.png"):
        assert (out / name).stat().st_size > 10_000
    assert len(list((out / "runs" / "en-de" / "smoke").iterdir())) == 4
    assert len(list((out / "hyps").iterdir())) == 8


def test_a_second_run_trains_nothing_and_a_dry_run_says_so(toy_results, capsys):
    d, f = toy_results
    assert study(["run", str(f), "--runs", str(d / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("done") == 4 and "0 of 4 runs to train" in out
    # --train-only trains what is missing (nothing here) and evaluates nothing: no test set read, no results
    assert study(["run", str(f), "--runs", str(d / "runs"), "--results", str(d / "nothing"), "--train-only"]) == 0
    assert "nothing evaluated (--train-only)" in capsys.readouterr().out and not (d / "nothing").exists()
    assert study(["run", str(f), "--runs", str(d / "runs"), "--train-only", "--partial"]) == 2
    assert "--train-only: not with --no-train or --partial" in capsys.readouterr().err


def test_a_dry_run_estimates_a_token_level_student_with_its_teachers_forward_pass(tmp_path, capsys):
    """The committed distillation study, planned into an empty runs directory: a student alone or a
    sequence-level one at the student preset's 7 minutes, a token-level one at 7 x 1.8 (its teacher runs at
    every batch), a teacher at the CPU preset's 15: 6 x 15 + 12 x 7 + 12 x 12.6 = 325.2 minutes."""
    assert study(["run", str(ROOT / "studies" / "distill.toml"), "--runs", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = {tuple(x.split()[1:4]): x.split("~")[-1] for x in out.splitlines() if "seed" in x}
    assert lines[("alone", "seed", "1")] == "7 min" and lines[("seq-hard", "seed", "2")] == "7 min"
    assert lines[("kd-ls-T2", "seed", "3")] == "12.6 min" and lines[("hard", "seed", "1")] == "15 min"
    assert "30 of 30 runs to train, about 325.2 minutes" in out


@pytest.mark.parametrize("name", ["distill", "variants", "main"])
def test_the_study_expects_the_configs_that_its_own_train_arguments_make(name, tmp_path):
    """For every model of the committed study (a sequence-level student's arguments name its teacher's
    translations, which an empty runs directory lacks), the TrainConfig and ModelConfig that `nmt.train` builds
    from the study's arguments are the ones the study checks a finished run against (a token-level student's
    distillation temperature included), field by field."""
    from nmt.config import ModelConfig, TrainConfig, from_arguments
    from nmt.runs import NOT_IDENTITY, train_arguments
    from nmt.studyfile import PRESETS, train_configs
    from nmt.train import parse_args
    s = load_study(ROOT / "studies" / f"{name}.toml")
    checked = 0
    for spec in s.models:
        if spec.teacher and spec.distill.kind == "sequence":
            continue
        args = parse_args(train_arguments(s, spec, 1, tmp_path))
        made = (from_arguments(TrainConfig, args, preset=PRESETS[spec.preset]),
                from_arguments(ModelConfig, args, preset=PRESETS[spec.preset]))
        for want, got in zip(train_configs(spec), made):
            for k in (f.name for f in dataclasses.fields(want)):
                if k not in NOT_IDENTITY | {"seed", "vocab_size"}:
                    assert getattr(want, k) == getattr(got, k), (spec.name, k)
        checked += 1
    assert checked == {"distill": 8, "variants": 5, "main": 2}[name]


def test_a_run_dir_of_other_settings_is_refused(toy_results, tmp_path, capsys):
    """A directory where the study expects its model but which holds a run trained otherwise (here: another
    dropout) is refused, never retrained over or evaluated as if it were the study's."""
    d, f = toy_results
    runs = tmp_path / "runs"
    shutil.copytree(d / "runs", runs, ignore=shutil.ignore_patterns(".lock", "cache"))
    victim = next((runs / "en-de/smoke").glob("uniform0.1*_seed1"))
    cfg = json.loads((victim / "config.json").read_text())
    cfg["model_config"]["dropout"] = 0.3
    (victim / "config.json").write_text(json.dumps(cfg))
    before = (victim / "checkpoint_last.pt").read_bytes()
    assert study(["run", str(f), "--runs", str(runs), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "holds a run of other settings" in err and "dropout: 0.3 there, 0.1 here" in err
    assert (victim / "checkpoint_last.pt").read_bytes() == before and not (tmp_path / "r").exists()


def test_damaged_run_files_are_named_never_a_traceback(toy_results, tmp_path, capsys):
    """A killed run's truncated last log line is no event (the run counts as interrupted); a damaged line before
    it, a config.json whose precision is no precision, and a checkpoint whose format is no number are one line
    each, exit 2, --dry-run included."""
    d, f = toy_results
    runs = tmp_path / "runs"
    shutil.copytree(d / "runs", runs, ignore=shutil.ignore_patterns(".lock", "cache"))
    victim = next((runs / "en-de/smoke").glob("hard+flags*_seed1"))
    log = victim / "log.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(line for line in lines if '"done"' not in line) + '\n{"event": "trai')
    assert study(["run", str(f), "--runs", str(runs), "--dry-run"]) == 0
    assert re.search(r"interrupted +hard +seed 1", capsys.readouterr().out)
    log.write_text(lines[0] + "\n{not json\n" + "\n".join(lines[1:]) + "\n")
    assert study(["run", str(f), "--runs", str(runs), "--dry-run"]) == 2
    assert f"{log}:2: not a JSON line" in capsys.readouterr().err
    log.write_text("\n".join(lines) + "\n")
    cfg = json.loads((victim / "config.json").read_text())
    cfg["precision"] = {"precision": "fast"}
    (victim / "config.json").write_text(json.dumps(cfg))
    assert study(["run", str(f), "--runs", str(runs), "--results", str(tmp_path / "r")]) == 2
    assert "precision 'fast': expected fp32, bf16 or fp16" in capsys.readouterr().err
    from nmt.checkpoint import resolve
    from nmt.decode import main as decode
    ckpt = torch.load(resolve(victim), weights_only=True)
    ckpt["format"] = "2"
    torch.save(ckpt, resolve(victim))
    assert decode(["--checkpoint", str(victim), "--split", "val", "--output", str(tmp_path / "o.txt")]) == 2
    assert "format '2': expected a whole number >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_the_slurm_launcher_through_submitits_local_executor(toy_results, tmp_path):
    """--launcher submitit-local: each training is a submitit job; the runs equal the local launcher's (trained
    only: the evaluation is the local launcher's, tested above)."""
    pytest.importorskip("submitit")
    d, f = toy_results
    one = tmp_path / "one.toml"
    one.write_text(f.read_text().replace("seeds = [1, 2]", "seeds = [1]").replace('beams = [1, 3]\ntest_sets = "all"',
                                                                                  ""))
    res = subprocess.run([sys.executable, "-m", "nmt.study", "run", str(one), "--runs", str(tmp_path / "runs"),
                          "--results", str(tmp_path / "results"), "--launcher", "submitit-local", "--train-only"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "submitted hard seed 1" in res.stderr and (tmp_path / "runs" / ".submitit").is_dir()
    for run in (tmp_path / "runs/en-de/smoke").iterdir():
        a = torch.load(run / "checkpoint_last.pt", weights_only=True)["model"]
        b = torch.load(d / "runs/en-de/smoke" / run.name / "checkpoint_last.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), run.name
    assert "nothing evaluated (--train-only)" in res.stdout and not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_failing_submitit_job_ends_the_study_with_the_trainings_own_error(toy_multi30k, tmp_path):
    """--launcher submitit-local with a corrupt corpus: exit 2 and the training's own error line, not only the
    job's log path."""
    pytest.importorskip("submitit")
    data = tmp_path / "data"
    shutil.copytree(toy_multi30k, data)
    (data / "train.de.gz").write_bytes(b"this is not gzip")
    f = toy_study(tmp_path / "broken.toml", data, seeds="[1]")
    res = subprocess.run([sys.executable, "-m", "nmt.study", "run", str(f), "--runs", str(tmp_path / "runs"),
                          "--launcher", "submitit-local", "--train-only"], capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 2 and "failed" in last and "train.de.gz" in last, res.stderr[-2000:]


def test_a_pair_evaluates_its_own_test_sets_and_warns_only_of_its_missing_ones(tmp_path, toy_multi30k, caplog):
    """A study lists every pair's test sets; en-de passes over another pair's public set (nmt.publicsets)
    quietly, and warns of a set of its own whose files are missing."""
    import logging

    from nmt.config import TrainConfig
    from nmt.experiment import test_data
    s = load_study(toy_study(tmp_path / "s.toml", toy_multi30k,
                             extra='test_sets = ["test_2016_flickr", "wmt22_cs", "tatoeba_fr", "test_2099_flickr"]'))
    caplog.set_level(logging.DEBUG, logger="nmt.experiment")
    got = test_data(s, TrainConfig(data_dir=str(toy_multi30k), src_lang="en", tgt_lang="de"))
    assert [name for name, _, _ in got] == ["test_2016_flickr"]
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "test_2099_flickr" in warned[0], warned


def test_a_third_alpha_is_a_study_file_and_no_code(tmp_path, toy_multi30k):
    """The README's example: one more model of three seeds is a few lines of TOML."""
    f = tmp_path / "alpha.toml"
    f.write_text(f'name = "alpha03"\n[data]\ndir = "{toy_multi30k}"\n[defaults]\nseeds = [1, 2, 3]\n\n'
                 '[[models]]\nname = "hard"\n\n[[models]]\nname = "ls03"\nalpha = 0.3\n\n'
                 '[[claims]]\nclaim = "ECE(LS 0.3) < ECE(hard)"\nfamily = "primary"\nmetric = "ece_forced"\n'
                 'a = "ls03"\nb = "hard"\ndirection = "less"\n')
    s = load_study(f)
    assert [m.seeds for m in s.models] == [(1, 2, 3)] * 2 and s.models[1].alpha == 0.3


def test_committed_results_rebuild_the_committed_tables_and_the_readme():
    """results/main holds the study behind the README: comparison.md is made from comparison.json alone, the
    README's table and claims are what `python -m nmt.study --from-results results/main --headline` prints,
    every claim follows from its per-seed differences, and the study was made from a clean tree; the same for
    pairs, variants, distill (whose verdicts docs/representations.md carries), decoders, shift and alpha (whose
    claims docs/results.md carries, each line verbatim)."""
    from nmt.experiment import rebuild
    main_results = ROOT / "results" / "main"
    assert rebuild(main_results) == (main_results / "comparison.md").read_text()
    assert rebuild(main_results, headline=True) in (ROOT / "README.md").read_text()
    distill = ROOT / "results" / "distill"
    for d in (main_results, ROOT / "results" / "pairs", ROOT / "results" / "variants", distill,
              ROOT / "results" / "decoders", ROOT / "results" / "shift", ROOT / "results" / "alpha"):
        assert rebuild(d) == (d / "comparison.md").read_text(), d
        data = json.loads((d / "comparison.json").read_text())
        assert data["meta"]["provenance"]["git_dirty"] is False and not data["meta"].get("missing_runs"), d
        again = recompute_all(data["claims"])  # from the stored differences alone, Holm within each family
        for c, a in zip(data["claims"], again):
            assert d != distill or c["n"] == 3, c["claim"]  # teacher seed s to student seed s, seeds 1-3
            assert (a.ci, a.p, a.verdict, a.p_holm, a.verdict_holm) == (
                c["ci"], c["p"], c["verdict"], c["p_holm"], c["verdict_holm"]), c["claim"]
            # the power is an integral: equal to the stored one to the rounding of its quadrature
            assert same(a.mde_holm, c["mde_holm"]) and same(a.mde, c["mde"]), c["claim"]
            assert c["family"] in ("primary", "secondary") and c["test"] and c["p_holm"] is not None
            assert c["direction"] == "equivalent" or c["mde"] is not None  # every ordering states its power
            assert not isinstance(c["a"], list) or c["test"] in ("blocked t", "blocked TOST", "t over block means",
                                                                 "TOST over block means", TREND_TEST)
            if c["metric"].startswith("bleu") and c["direction"] != "equivalent":  # its TOST companion
                assert any(o["direction"] == "equivalent" and (o["metric"], o["a"], o["b"], o["test_set"]) ==
                           (c["metric"], c["a"], c["b"], c["test_set"]) for o in data["claims"]), c["claim"]
    docs = (ROOT / "docs" / "representations.md").read_text()
    assert all(line in docs for line in rebuild(distill, headline=True).splitlines() if line.startswith("- "))
    alpha = (ROOT / "results" / "alpha" / "comparison.md").read_text()  # its claims, in docs/results.md
    docs = (ROOT / "docs" / "results.md").read_text()
    for family, n in (("Primary", 10), ("Secondary", 9)):
        lines = alpha.split(f"### {family} claims", 1)[1].split("\n\n")[1].splitlines()  # the list after it
        assert len(lines) == n and all(line in docs for line in lines), family
    assert not subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q",
                               str(next((main_results / "runs").rglob("log.jsonl")))]).returncode == 0


def test_the_alpha_study_has_a_row_for_every_evaluated_run_and_its_curve():
    """results/alpha: one row per (model, seed, T) on test_2016_flickr for every run of its study file that its
    evaluation does not name missing (none: 24 runs, 48 rows), and the α curve's CSV: one line per (α, seed, T) of
    the hard-target and uniform-smoothing runs among them (5 × 3 × 2)."""
    from nmt.runs import run_dir, run_id
    d = ROOT / "results" / "alpha"
    data = json.loads((d / "comparison.json").read_text())
    study = load_study(ROOT / "studies" / "alpha.toml")
    runs = {(m.name, seed): run_id(run_dir(study, m, seed, "runs")) for m in study.models for seed in m.seeds}
    assert len(runs) == 24 and not data["meta"]["missing_runs"]
    have = set(runs)
    want = {(name, seed, kind, "test_2016_flickr") for name, seed in have for kind in ("1", "fitted")}
    got = [(r["model"], r["seed"], r["t_kind"], r["test_set"]) for r in data["rows"]]
    assert sorted(got) == sorted(want) and len(got) == 48
    alpha = {m.name: m.alpha for m in study.models}
    curve = [(p["model"], float(p["alpha"]), int(p["seed"]), p["t_kind"])
             for p in csv.DictReader((d / "alpha_curve.csv").open())]
    assert sorted(curve) == sorted((name, alpha[name], seed, kind) for name, seed in have
                                   if name in ("hard", "ls005", "ls", "ls02", "ls03") for kind in ("1", "fitted"))
    assert len(curve) == 30 and (d / "alpha_curve.png").is_file()


def test_the_lowest_ece_of_the_alpha_curve_regenerates_from_the_committed_rows(tmp_path):
    """results/alpha/lowest_ece.json is what its script writes from comparison.json, and its lowest α at each
    temperature kind is the α whose mean forced ECE over seeds (comparison.json's aggregates) is the lowest."""
    out = tmp_path / "lowest.json"
    subprocess.run([sys.executable, "results/alpha/lowest_ece.py", "results/alpha", "--json", str(out)], cwd=ROOT,
                   check=True, capture_output=True)
    committed = json.loads((ROOT / "results" / "alpha" / "lowest_ece.json").read_text())
    assert json.loads(out.read_text()) == committed
    aggregates = json.loads((ROOT / "results" / "alpha" / "comparison.json").read_text())["aggregate"]
    for found in committed["by_t"]:
        models = [e["model"] for e in found["by_alpha"]]
        means = {a["model"]: a["mean"]["ece_forced"] for a in aggregates
                 if a["t_kind"] == found["t_kind"] and a["model"] in models}
        assert found["lowest"]["model"] == min(means, key=means.get)
        for e in found["by_alpha"]:
            assert e["mean"] == pytest.approx(means[e["model"]], abs=1e-12)
            assert e["ci"][0] < e["mean"] < e["ci"][1] and e["n"] == 3


def test_the_shift_study_has_every_row_and_the_checksum_of_every_test_file():
    """results/shift: one row per (model, seed, T, test set) of its study file, each pair on the test sets its
    data has (en-cs: no 2017 sets), and the provenance's SHA-256 of both files of every test set it used."""
    from nmt.studyfile import load_study
    d = ROOT / "results" / "shift"
    data = json.loads((d / "comparison.json").read_text())
    study = load_study(ROOT / "studies" / "shift.toml")
    sets = {"en-de": {"test_2016_flickr", "test_2017_flickr", "test_2017_mscoco", "test_2018_flickr", "wmt22_de"},
            "en-fr": {"test_2016_flickr", "test_2017_flickr", "test_2017_mscoco", "test_2018_flickr", "tatoeba_fr"},
            "en-cs": {"test_2016_flickr", "test_2018_flickr", "wmt22_cs"}}
    want = {(m.name, seed, kind, ts) for m in study.models for seed in m.seeds for kind in ("1", "fitted")
            for ts in sets[m.pair]}
    got = [(r["model"], r["seed"], r["t_kind"], r["test_set"]) for r in data["rows"]]
    assert sorted(got) == sorted(want) and len(got) == 196
    checksums = data["meta"]["provenance"]["corpus_sha256"]
    for pair, names in sets.items():
        for name in names:
            for lang in pair.split("-"):
                assert re.fullmatch(r"[0-9a-f]{64}", checksums[f"{name}.{lang}.gz"]), (name, lang)
    assert (d / "shift.png").is_file() and (d / "shift.csv").is_file()


def test_every_figure_redraws_from_the_results_files_alone(toy_results, tmp_path, capsys):
    """--figures OUT: the sweeps' CSVs as the evaluation wrote them, and every figure it drew, by name, from
    comparison.json and reliability.json (the diagrams' bins); a reliability.json with a bad bin is refused."""
    d, _ = toy_results
    out = d / "results"
    assert study(["--from-results", str(out), "--figures", str(tmp_path / "fig")]) == 0
    drawn = {p.name for p in (tmp_path / "fig").iterdir()}
    assert drawn == {p.name for p in out.iterdir() if p.suffix in (".png", ".csv")}
    assert {"reliability.png", "reliability_hard_t.png", "beam_sweep.png", "temperature_sweep.png"} <= drawn
    for name in ("temperature_sweep.csv", "beam_sweep.csv"):
        assert (tmp_path / "fig" / name).read_text() == (out / name).read_text()
    rel = json.loads((out / "reliability.json").read_text())
    assert {(p["model"], p["t_kind"]) for p in rel["panels"]} == {(m, k) for m in ("hard", "ls")
                                                                  for k in ("1", "fitted")}
    bad = tmp_path / "bad"
    shutil.copytree(out, bad, ignore=shutil.ignore_patterns("*.png", "hyps", "runs"))
    rel["panels"][1]["calibration"]["bins"][3]["count"] = "12"
    (bad / "reliability.json").write_text(json.dumps(rel))
    capsys.readouterr()
    assert study(["--from-results", str(bad), "--figures", str(tmp_path / "fig2")]) == 2
    assert "reliability.json: panels[1].calibration.bins[3]: expected lo, hi, count" in capsys.readouterr().err
    assert not (tmp_path / "fig2").exists()


@pytest.mark.slow
def test_the_committed_sweeps_redraw_from_comparison_json_alone(tmp_path):
    """--from-results DIR --figures OUT writes the sweeps' CSVs byte for byte as the evaluation wrote them, and
    their figures; --figures without --from-results is refused."""
    from nmt.study import main
    for name, csv_name in (("main", "temperature_sweep.csv"), ("variants", "beam_sweep.csv")):
        out = tmp_path / name
        assert main(["--from-results", str(ROOT / "results" / name), "--figures", str(out)]) == 0
        assert (out / csv_name).read_text() == (ROOT / "results" / name / csv_name).read_text(), name
        assert (out / csv_name.replace(".csv", ".png")).stat().st_size > 10_000
    committed = {p.name for p in (ROOT / "results" / "variants").glob("*.png")}  # reliability.json: every diagram
    assert committed <= {p.name for p in (tmp_path / "variants").iterdir()} and "reliability_cp_t.png" in committed
    assert main(["--figures", str(tmp_path / "x")]) == 2 and not (tmp_path / "x").exists()


def test_the_evaluation_cache_is_keyed_on_the_checkpoints_bytes_not_its_path(tiny_run, toy_multi30k, tmp_path):
    """Two copies of one run at two paths share their cache key; a run retrained at the same path (other bytes
    in its checkpoint) gets another, so its old evaluation is never reused."""
    from nmt import evalcache, experiment
    from nmt.checkpoint import resolve
    st = load_study(toy_study(tmp_path / "toy.toml", toy_multi30k))

    def key(run):
        return evalcache.entry_key(st, experiment.decode_config(st), st.model("hard"), 1, run, True, "cpu")
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_run, a)
    shutil.copytree(tiny_run, b)
    assert key(a) == key(b)
    final = resolve(a)
    other = next(p for p in a.glob("checkpoint_*.pt") if p.read_bytes() != final.read_bytes())
    shutil.copyfile(other, final)  # "retrained": the same path, other weights
    assert key(a) != key(b)


def test_a_trend_claim_is_a_t_over_per_seed_slopes_by_hand(tmp_path, toy_multi30k):
    """ECE of hard (alpha 0), ls01 (0.1), ls02 (0.2) on three seeds. Per seed, the least-squares slope over
    alpha is (y(0.2) - y(0)) / 0.2 for three equally spaced alphas: seed 1 (0.10, 0.08, 0.07) -0.15, seed 2
    (0.12, 0.09, 0.08) -0.20, seed 3 (0.11, 0.10, 0.06) -0.25. Mean -0.2, sd 0.05, se 0.05 / sqrt 3 =
    0.0288675, t = -6.928 on 2 df: P(T < t) = 1/2 + t / (2 sqrt(t^2 + 2)) = 0.010102, two-sided p (as every
    ordering's) 0.020204; 95% interval
    -0.2 -+ 4.302653 se = [-0.324207, -0.075793]: holds. The stored claim is checked again from its rows."""
    from types import SimpleNamespace as Row

    from nmt.claims import check, judge_claims
    from nmt.report import claim_line, jsonable
    from nmt.studyfile import ClaimSpec, ModelRef
    ece = {"hard": (0.10, 0.12, 0.11), "ls01": (0.08, 0.09, 0.10), "ls02": (0.07, 0.08, 0.06)}
    rows = [Row(model=m, seed=i + 1, t_kind="1", test_set="t", ece_forced=v) for m, vs in ece.items()
            for i, v in enumerate(vs)]
    spec = ClaimSpec("ECE falls with alpha", "ece_forced", tuple(ModelRef(m) for m in ece), (), "less",
                     test_set="t", x=(0.0, 0.1, 0.2))
    c, = judge_claims((spec,), rows)
    assert c.differences == pytest.approx([-0.15, -0.20, -0.25]) and c.seeds == [1, 2, 3]
    assert c.test == "t over per-seed slopes" and c.se == pytest.approx(0.0288675, abs=1e-7) and c.df == 2
    assert c.p == pytest.approx(0.020204, abs=1e-6) and c.ci == pytest.approx([-0.324207, -0.075793], abs=1e-6)
    assert c.verdict == "holds" and c.b == [] and c.x == [0.0, 0.1, 0.2]
    stored = jsonable(c.to_dict())
    assert check([stored], rows, "x")[0].verdict == "holds"
    edited = {**stored, "x": [0.0, 0.1, 0.3]}  # other alphas than the rows were judged on
    with pytest.raises(DataError, match=r"claims\[0\].*differences"):
        check([edited], rows, "x")
    assert "mean slope per unit alpha -0.2000" in claim_line(c) and "alphas 0, 0.1, 0.2" in claim_line(c)
    # in a study file: `trend` lists the models (their alphas from [[models]]); a and b, or two models, refused
    f = toy_study(tmp_path / "t.toml", toy_multi30k, models='[[models]]\nname = "hard"\n\n[[models]]\nname = '
                  '"ls"\nalpha = 0.1\n\n[[models]]\nname = "ls02"\nalpha = 0.2\n')
    trend = ('\n[[claims]]\nclaim = "ECE falls with alpha"\nfamily = "primary"\nmetric = "ece_forced"\n'
             'direction = "less"\ntrend = ["hard", "ls", "ls02"]\n')
    f.write_text(f.read_text() + trend)
    assert load_study(f).claims[-1].x == (0.0, 0.1, 0.2)
    f.write_text(f.read_text().replace('trend = ["hard", "ls", "ls02"]', 'trend = ["hard", "ls"]'))
    with pytest.raises(StudyError, match="three or more different models"):
        load_study(f)
    f.write_text(f.read_text().replace('trend = ["hard", "ls"]', 'trend = ["hard", "ls", "ls02"]\na = "ls"'))
    with pytest.raises(StudyError, match="not in a trend claim"):
        load_study(f)


def test_a_claim_pairs_by_seed_number_not_by_position():
    """a has seeds 1, 2, 3 and b seeds 1, 3 (b's seed 2 missing, as with --partial): the differences are
    a1 - b1 = 0.10 - 0.15 = -0.05 and a3 - b3 = 0.20 - 0.30 = -0.10, on seeds [1, 3]; by position, a2 would be
    paired with b3 (0.50 - 0.30 = +0.20)."""
    from types import SimpleNamespace as Row

    from nmt.claims import judge_claims
    from nmt.studyfile import ClaimSpec, ModelRef
    vals = {("a", 1): 0.10, ("a", 2): 0.50, ("a", 3): 0.20, ("b", 1): 0.15, ("b", 3): 0.30}
    rows = [Row(model=m, seed=sd, t_kind="1", test_set="t", ece_forced=v) for (m, sd), v in vals.items()]
    c, = judge_claims((ClaimSpec("a < b", "ece_forced", ModelRef("a"), ModelRef("b"), "less"),), rows)
    assert c.seeds == [1, 3] and c.n == 2 and c.differences == pytest.approx([-0.05, -0.10])
    assert c.estimate == pytest.approx(-0.075) and c.df == 1


def test_a_pooled_claim_pairs_every_model_pair_and_seed_by_hand():
    """a = [a1, a2], b = [b1, b2]: one difference per (pair, seed) both sides have, the pair a fixed block; a
    model with no rows makes its claim 'not measured'."""
    from types import SimpleNamespace as Row

    from nmt.claims import judge_claims
    from nmt.studyfile import ClaimSpec, ModelRef
    vals = {("a1", 1): 0.10, ("a1", 2): 0.12, ("b1", 1): 0.15, ("b1", 2): 0.16,
            ("a2", 1): 0.20, ("a2", 2): 0.21, ("a2", 3): 0.30, ("b2", 1): 0.22, ("b2", 2): 0.25}
    rows = [Row(model=m, seed=s, t_kind="1", test_set="t", ece_forced=v) for (m, s), v in vals.items()]
    pooled = ClaimSpec("pooled", "ece_forced", (ModelRef("a1"), ModelRef("a2")), (ModelRef("b1"), ModelRef("b2")),
                       "less", pool="blocks")
    absent = ClaimSpec("absent", "ece_forced", ModelRef("a1"), ModelRef("ghost"), "less")
    c, none = judge_claims((pooled, absent), rows)
    assert c.seeds == ["a1:1", "a1:2", "a2:1", "a2:2"] and c.n == 4  # a2's seed 3 has no b2 to pair with
    assert c.differences == pytest.approx([-0.05, -0.04, -0.02, -0.04])
    assert c.estimate == pytest.approx(-0.0375) and c.a == [{"model": "a1", "t_kind": "1"},
                                                           {"model": "a2", "t_kind": "1"}]
    # blocks a1: -0.05, -0.04 (mean -0.045), a2: -0.02, -0.04 (mean -0.03); within SS 5e-5 + 2e-4, df 2,
    # s_p^2 1.25e-4, se = sqrt(1.25e-4 (1/2 + 1/2)) / 2 = 0.0055902; t(0.975, 2) 4.302653: -0.0375 ± 0.0240527
    assert c.test == "blocked t" and c.df == 2 and c.se == pytest.approx(0.00559017, abs=1e-8)
    assert c.ci == pytest.approx([-0.0615527, -0.0134473], abs=1e-6) and c.verdict == "holds"
    # heterogeneity: SSB = 2 (0.0075^2) 2 = 2.25e-4 on 1 df, MSW 1.25e-4 on 2: F = 1.8
    assert c.heterogeneity.f == pytest.approx(1.8) and c.heterogeneity.df == [1, 2] and not c.heterogeneity.differs
    assert none.n == 0 and none.verdict == "not measured (no runs)"
    again = recompute(c.to_dict())
    assert (again.ci, again.verdict) == (c.ci, c.verdict)


@pytest.mark.parametrize("a, b, message", [
    ('["ls"]', '"hard"', r"claims\[0\]\.b: a pooled claim pairs a\[i\] with b\[i\]"),
    ('["ls", "hard"]', '["hard"]', r"claims\[0\]\.b: a pooled claim pairs"),
    ('[]', '[]', r"claims\[0\]\.a: \[\]: expected a model, or a non-empty list"),
    ('["ls", "nobody"]', '["hard", "hard"]', r"claims\[0\]\.a\[1\]: 'nobody': not a model"),
])
def test_a_bad_pooled_claim_names_its_key(a, b, message, tmp_path, toy_multi30k):
    f = toy_study(tmp_path / "s.toml", toy_multi30k)
    f.write_text(f.read_text().replace('a = "ls"\nb = "hard"', f'a = {a}\nb = {b}', 1))
    with pytest.raises(StudyError, match=message):
        load_study(f)


def test_partial_evaluates_the_runs_there_are_and_names_the_others(toy_results, tmp_path, capsys):
    d, f = toy_results
    three = tmp_path / "three.toml"
    three.write_text(f.read_text().replace("seeds = [1, 2]", "seeds = [1, 2, 3]").replace(
        'beams = [1, 3]\ntest_sets = "all"', ""))
    out = tmp_path / "r"
    assert study(["run", str(three), "--runs", str(d / "runs"), "--results", str(out), "--partial"]) == 0
    data = json.loads((out / "comparison.json").read_text())
    assert len(data["meta"]["missing_runs"]) == 2 and all("_seed3" in m for m in data["meta"]["missing_runs"])
    assert {r["seed"] for r in data["rows"]} == {1, 2} and not list((d / "runs/en-de/smoke").glob("*_seed3"))
    assert "**Partial results**" in (out / "comparison.md").read_text()
    empty = tmp_path / "empty"
    assert study(["run", str(three), "--runs", str(empty), "--results", str(tmp_path / "r2"), "--partial"]) == 2
    assert "--partial: none of the 6 runs" in capsys.readouterr().err and not (tmp_path / "r2").exists()


def test_representations_over_every_seed_of_a_study(toy_results, tmp_path, capsys):
    """nmt.visualize --all-seeds: tokens chosen once (first model, first seed), every seed analysed, tables
    over seeds, and the paper's three predictions judged against the baseline, paired over seeds; the figures
    redrawn from their points file alone."""
    from nmt.representations import geometry
    from nmt.visualize import main as visualize
    d, f = toy_results
    out = tmp_path / "rep"
    assert visualize(["--study", str(f), "--runs", str(d / "runs"), "--all-seeds", "--tokens", "der", "mit",
                      "auf", "--results", str(out), "--mi-positions", "20", "--mi-passes", "3", "--mi-repeats", "2",
                      "--train-sentences", "200"]) == 0
    rep = json.loads((out / "representations.json").read_text())
    assert [(e["study_model"], e["seed"]) for e in rep["models"]] == [("hard", 1), ("hard", 2), ("ls", 1), ("ls", 2)]
    assert "hard+flags" in rep["tokens_chosen_on"] and "_seed1" in rep["tokens_chosen_on"]
    assert all(e["mutual_information"][0]["se"] is not None and len(e["mutual_information"][0]["values"]) == 2
               for e in rep["models"])
    mi = next(s for s in rep["summary"] if (s["model"], s["quantity"]) == ("ls", "mi"))
    by_hand = [e["mutual_information"][0]["mi"] for e in rep["models"] if e["study_model"] == "ls"]
    assert mi["n"] == 2 and mi["mean"] == pytest.approx(sum(by_hand) / 2)
    assert [c["metric"] for c in rep["claims"]] == ["radius_val", "cv_val", "mi"]
    c = rep["claims"][2]
    assert c["differences"] == pytest.approx([by_hand[i] - [e["mutual_information"][0]["mi"] for e in rep["models"]
                                                            if e["study_model"] == "hard"][i] for i in (0, 1)])
    assert recompute(c).verdict == c["verdict"]
    assert (out / "penultimate.png").is_file() and (out / "penultimate_seed2.png").is_file()
    assert "± " in (out / "representations.md").read_text()
    # penultimate_points.json: the figures' points give representations.json's geometry (to their 5 digits),
    # --from-results DIR --figures OUT draws the same figures by name, and a malformed file is refused, naming
    # the entry, before anything is drawn.
    points = json.loads((out / "penultimate_points.json").read_text())
    assert [f["file"] for f in points["figures"]] == ["penultimate.png", "penultimate_seed2.png"]
    for fig, seed in zip(points["figures"], (1, 2)):
        for p in fig["panels"]:
            entry = next(e for e in rep["models"] if (e["model"], e["seed"]) == (p["model"], seed))
            g = geometry({t: torch.tensor(v) for t, v in p["points"].items()})
            assert g["distance_cv"] == pytest.approx(entry["geometry"][p["split"]]["distance_cv"], rel=1e-4)
            assert p["geometry"]["distance_cv"] == entry["geometry"][p["split"]]["distance_cv"]
    assert visualize(["--from-results", str(out), "--figures", str(tmp_path / "fig")]) == 0
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["penultimate.png", "penultimate_seed2.png"]
    points["figures"][1]["panels"][2]["points"]["mit"][4] = [0.5, "1"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "penultimate_points.json").write_text(json.dumps(points))
    capsys.readouterr()
    assert visualize(["--from-results", str(tmp_path / "bad"), "--figures", str(tmp_path / "fig2")]) == 2
    assert "figures[1].panels[2].points['mit']: expected a list of [x, y] pairs" in capsys.readouterr().err
    assert not (tmp_path / "fig2").exists()
    assert visualize(["--figures", str(tmp_path / "fig3")]) == 2 and not (tmp_path / "fig3").exists()


@pytest.mark.slow
def test_sequence_level_students_learn_exactly_their_teachers_translations(toy_results, toy_multi30k, tmp_path):
    """distill = { kind = "sequence" }: the teacher translates its training sources once (beam 4, into its run's
    seqkd/), the student trains on those targets, and the provenance holds their hash. The teacher is the toy
    study's hard seed-1 run (the same identity, so the same directory: it is not trained again)."""
    from nmt.checkpoint import load_model, read_run_config
    from nmt.data import load_pairs, read_text_pairs
    from nmt.evaluate import encode_for_model
    from nmt.search import translate
    f = tmp_path / "seq.toml"
    f.write_text(f'name = "seq"\n[data]\ndir = "{toy_multi30k}"\n[defaults]\npreset = "smoke"\nseeds = [1]\n'
                 f'{TOY_FLAGS}\n\n'
                 '[[models]]\nname = "hard"\n\n[[models]]\nname = "seqkd"\nteacher = "hard"\n'
                 'distill = { kind = "sequence" }\n\n[evaluate]\nbeam = 2\nsweep = "none"\n')
    runs = toy_results[0] / "runs"
    teacher = next((runs / "en-de/smoke").glob("hard+*_seed1"))
    trained_before = (teacher / "checkpoint_last.pt").stat().st_mtime_ns
    assert study(["run", str(f), "--runs", str(runs), "--results", str(tmp_path / "r")]) == 0
    assert (teacher / "checkpoint_last.pt").stat().st_mtime_ns == trained_before
    student = next((runs / "en-de/smoke").glob("kd-sequence-from-hard+*_seed1"))
    tcfg = read_run_config(student)[0]
    assert tcfg.train_tgt == str(teacher / "seqkd" / "train.beam4.tgt") and tcfg.teacher is None
    model, _, sp = load_model(teacher)
    sources, _ = read_text_pairs(read_run_config(teacher)[0], "train")
    hyps = [sp.decode(h.ids) for h in translate(model, encode_for_model(sp, sources, model.cfg.max_positions), beam=4)]
    assert (teacher / "seqkd" / "train.beam4.tgt").read_text().splitlines() == hyps
    pairs = load_pairs(tcfg, "train")
    assert list(pairs["tgt"]) == hyps and list(pairs["src"]) == sources  # the student's targets: the teacher's output
    prov = json.loads((tmp_path / "r" / "comparison.json").read_text())["meta"]["provenance"]
    import hashlib
    want = hashlib.sha256((teacher / "seqkd" / "train.beam4.tgt").read_bytes()).hexdigest()
    assert want in prov["corpus_sha256"].values() if "corpus_sha256" in prov else want in json.dumps(prov)
    # A second run reuses the translations, and refuses them once they were changed.
    (teacher / "seqkd" / "train.beam4.tgt").write_text("changed\n")
    from nmt.seqkd import teacher_targets
    with pytest.raises(Exception, match="sha256 differs"):
        teacher_targets(teacher)


@pytest.mark.slow
def test_a_token_level_student_at_t2_trained_by_the_study_is_its_own_run_again(toy_results, toy_multi30k, tmp_path,
                                                                                capsys):
    """distill = { kind = "token", temperature = 2 }: the study trains the student with T = 2 and, planned
    again, finds it done (not "a run of other settings"); the student's config holds the study's beta and T."""
    from nmt.checkpoint import read_run_config
    f = tmp_path / "kd.toml"
    f.write_text(f'name = "kd"\n[data]\ndir = "{toy_multi30k}"\n[defaults]\npreset = "smoke"\nseeds = [1]\n'
                 f'{TOY_FLAGS}\n\n'
                 '[[models]]\nname = "hard"\n\n[[models]]\nname = "kd"\nteacher = "hard"\n'
                 'distill = { kind = "token", beta = 0.3, temperature = 2.0 }\n')
    runs = tmp_path / "runs"
    shutil.copytree(toy_results[0] / "runs", runs, ignore=shutil.ignore_patterns(".lock", "cache"))
    assert study(["run", str(f), "--runs", str(runs), "--train-only"]) == 0
    student = next((runs / "en-de/smoke").glob("kd-token-b0.3-T2-from-hard+*_seed1"))
    tcfg = read_run_config(student)[0]
    assert (tcfg.distill_beta, tcfg.distill_temperature) == (0.3, 2.0)
    capsys.readouterr()
    assert study(["run", str(f), "--runs", str(runs), "--dry-run"]) == 0
    assert "0 of 2 runs to train" in capsys.readouterr().out


def test_the_beam_sweeps_minutes_count_each_sweep_once():
    """Every point of one (model, seed, test set) sweep carries that sweep's seconds: 30 s and 90 s sweeps of
    three points each are 2 minutes in all, not 6."""
    from nmt.report import sweep_minutes
    points = [{"model": m, "seed": 1, "test_set": "t", "beam": b, "sweep_seconds": sec}
              for m, sec in (("hard", 30.0), ("ls", 90.0)) for b in (1, 2, 4)]
    assert sweep_minutes(points) == 2.0


def test_an_interrupted_evaluation_resumes_after_the_last_run_it_finished(toy_results, tmp_path, monkeypatch):
    """Ctrl-C during the second run's evaluation: run again, only the three unfinished runs are evaluated, the
    numbers equal an uninterrupted evaluation's, the provenance names the resumed run and the cache is gone.
    A cache entry that does not match (another checkpoint, or edited) is evaluated again, never used."""
    import nmt.experiment as experiment
    d, f = toy_results
    out = tmp_path / "r"
    real, calls, interrupt = experiment.evaluate_model, [], [2]

    def interrupt_second(study_, spec, seed, *a, **k):
        calls.append((spec.name, seed))
        if len(calls) in interrupt:
            interrupt.clear()
            raise KeyboardInterrupt
        return real(study_, spec, seed, *a, **k)

    monkeypatch.setattr(experiment, "evaluate_model", interrupt_second)
    assert study(["run", str(f), "--runs", str(d / "runs"), "--results", str(out)]) == 130
    cache = out / ".eval-cache"
    assert sorted(p.name for p in cache.iterdir()) == ["hard.seed1.json", "hard.seed1.test_2016_flickr.1.npz",
                                                       "hard.seed1.test_2016_flickr.fitted.npz"]
    assert not (out / "comparison.json").exists()
    calls.clear()
    assert study(["run", str(f), "--runs", str(d / "runs"), "--results", str(out)]) == 0
    assert calls == [("hard", 2), ("ls", 1), ("ls", 2)] and not cache.exists()
    data = json.loads((out / "comparison.json").read_text())
    whole = json.loads((d / "results" / "comparison.json").read_text())
    assert data["rows"] == whole["rows"] and data["claims"] == whole["claims"]
    untimed = [[{k: v for k, v in p.items() if k != "sweep_seconds"} for p in x["beam_sweep"]] for x in (data, whole)]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 16
    run1 = next((d / "runs/en-de/smoke").glob("hard+flags*_seed1"))
    assert data["meta"]["provenance"]["evaluations_resumed"] == [experiment.relative(run1)]
    assert "1 runs were evaluated by an earlier, interrupted call" in (out / "comparison.md").read_text()
    # a stale key and an edited entry are both evaluated again
    from nmt import evalcache
    from nmt.studyfile import load_study
    st = load_study(f)
    key = evalcache.entry_key(st, experiment.decode_config(st), st.model("hard"), 1, run1, True, "cpu")
    from nmt.results import ModelEvaluation
    res = ModelEvaluation(rows=[])
    evalcache.save(cache, "hard", 1, key, res)
    assert evalcache.load(cache, "hard", 1, key) == res
    assert evalcache.load(cache, "hard", 1, "another key") is None
    entry = json.loads((cache / "hard.seed1.json").read_text())
    entry["rows"] = [{"model": "hard", "label": "x", "seed": 1, "t_kind": "1", "temperature": "1.0", "test_set": "t"}]
    (cache / "hard.seed1.json").write_text(json.dumps(entry))
    assert evalcache.load(cache, "hard", 1, key) is None  # a temperature that is not a number
    evalcache.save(cache, "hard", 1, key, ModelEvaluation(rows=[], references={"t": ["ein hund"]}))
    assert evalcache.load(cache, "hard", 1, key).references == {"t": ["ein hund"]}
    entry = json.loads((cache / "hard.seed1.json").read_text())
    entry["references"]["t"] = ["eine katze"]  # well formed, but not what was written: its digest says so
    (cache / "hard.seed1.json").write_text(json.dumps(entry))
    assert evalcache.load(cache, "hard", 1, key) is None
    evalcache.clear(cache)
    assert not cache.exists()


def test_a_run_whose_checkpoint_is_gone_keeps_its_committed_evaluation(toy_results, tmp_path, capsys):
    """--reuse DIR (a new machine, the runs gone): ls seed 2's run deleted, its numbers come from the toy study's
    results; the other three are evaluated again; rows and claims equal the whole evaluation's, the provenance
    names the reused run and the commit that evaluated it. Results of other settings, or without the run's
    hypotheses, are refused (exit 2) and nothing is written."""
    d, f = toy_results
    runs, out, whole = tmp_path / "runs", tmp_path / "r", d / "results"
    shutil.copytree(d / "runs", runs)
    gone = next((runs / "en-de/smoke").glob("uniform0.1+flags*_seed2"))
    shutil.rmtree(gone)
    args = ["run", str(f), "--runs", str(runs), "--results", str(out), "--partial", "--reuse", str(whole)]
    assert study(args) == 0
    data, ref = (json.loads((p / "comparison.json").read_text()) for p in (out, whole))
    where = lambda rows: [{k: v for k, v in r.items() if k != "checkpoint"} for r in rows]  # noqa: E731 (its path)
    assert where(data["rows"]) == where(ref["rows"]) and data["claims"] == ref["claims"]
    assert data["meta"]["missing_runs"] == []
    reused = data["meta"]["provenance"]["evaluations_reused"]
    assert list(reused) == [f"en-de/smoke/{gone.name}"]
    assert reused[f"en-de/smoke/{gone.name}"]["git_commit"] == ref["meta"]["provenance"]["git_commit"]
    assert "1 runs' evaluations were reused from committed results" in (out / "comparison.md").read_text()
    assert (out / "runs/en-de/smoke" / gone.name / "config.json").read_bytes() == \
        (whole / "runs/en-de/smoke" / gone.name / "config.json").read_bytes()
    capsys.readouterr()
    assert study(args[:-3] + ["--reuse", str(whole)]) == 2  # neither --partial nor --no-train
    assert "--reuse: only with --partial or --no-train" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(whole, other)
    cmp = json.loads((other / "comparison.json").read_text())
    cmp["meta"]["evaluate"]["beam"] = 5
    (other / "comparison.json").write_text(json.dumps(cmp))
    bad = ["run", str(f), "--runs", str(runs), "--results", str(tmp_path / "r2"), "--partial", "--reuse", str(other)]
    assert study(bad) == 2
    assert "meta.evaluate: beam differ from the study's (beam=2)" in capsys.readouterr().err
    cmp["meta"]["evaluate"]["beam"] = 2
    (other / "comparison.json").write_text(json.dumps(cmp))
    for p in (other / "hyps").glob("ls.seed2.*"):
        p.unlink()
    assert study(bad) == 2
    assert "not found (the hypotheses of ls seed 2" in capsys.readouterr().err and not (tmp_path / "r2").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["claims"][0].update(verdict="holds", verdict_holm="holds"),
     r"claims\[0\] \('ECE\(LS\) < ECE\(hard\)'\)\.verdict: stored 'holds'"),
    (lambda d: d["claims"][1].update(differences=[0.9, 0.9]), r"claims\[1\] .*\.differences: stored \[0\.9, 0\.9\]"),
    (lambda d: d["aggregate"][0]["mean"].update(ece_forced=0.9999), r"aggregate\[0\]: differs from the mean"),
    (lambda d: d["rows"][0].update(ece_forced=float("nan")), r"NaN is not a number nmt accepts"),
    (lambda d: d["rows"][0].update(ece_forced=1e400), r"Infinity is not a number nmt accepts"),
    (lambda d: d["claims"][0].update(family="tertiary"), r"claims\[0\]\.family: 'tertiary': expected one of"),
])
def test_from_results_shows_no_number_its_rows_do_not_give(edit, message, toy_results, tmp_path, capsys):
    """--from-results recomputes the aggregates from the validated rows and judges every claim again: an edited
    verdict, difference or mean, or a non-finite value, is refused naming the entry (exit 2), never printed."""
    d, _ = toy_results
    bad = tmp_path / "bad"
    shutil.copytree(d / "results", bad, ignore=shutil.ignore_patterns("*.png", "hyps", "runs", "evidence"))
    data = json.loads((bad / "comparison.json").read_text())
    edit(data)
    (bad / "comparison.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert study(["--from-results", str(bad)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1, err


def test_judge_and_plan_on_finished_rows(toy_results, tmp_path, capsys):
    """`judge FILE` judges a changed claim list again on the rows a results directory holds (nothing evaluated)
    and says so in the provenance; --plan says how many seeds an ordering needs for a stated effect."""
    d, f = toy_results
    out = tmp_path / "r"
    shutil.copytree(d / "results", out, ignore=shutil.ignore_patterns("*.png", "hyps", "runs", "evidence"))
    g = tmp_path / "toy.toml"
    g.write_text(f.read_text() + '\n[[claims]]\nclaim = "NLL(hard) < NLL(LS)"\nfamily = "secondary"\n'
                                 'metric = "test_nll"\na = "hard"\nb = "ls"\ndirection = "less"\n')
    assert study(["judge", str(g), "--results", str(out)]) == 0
    assert "NLL(hard) < NLL(LS)" in capsys.readouterr().out
    data = json.loads((out / "comparison.json").read_text())
    assert [c["claim"] for c in data["claims"]][-1] == "NLL(hard) < NLL(LS)" and data["claims"][-1]["n"] == 2
    assert data["meta"]["provenance"]["judged"]["command"].startswith("python -m nmt.study judge")
    assert data["rows"] == json.loads((d / "results" / "comparison.json").read_text())["rows"]
    assert "Claims judged again on these rows by `python -m nmt.study judge" in (out / "comparison.md").read_text()
    assert study(["--from-results", str(out), "--plan", "test_nll=0.01"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "seeds at 5%" in lines[0]
    assert lines[0].startswith("NLL(hard) < NLL(LS) [test_2016_flickr]: sd ")
    assert study(["--from-results", str(out), "--plan", "bleu=1"]) == 2
    assert "--plan bleu=1: expected METRIC=EFFECT" in capsys.readouterr().err
    assert study(["judge", str(tmp_path / "missing.toml"), "--results", str(out)]) == 2


def test_a_model_name_from_a_results_file_cannot_write_outside_the_figures_folder(toy_results, tmp_path, capsys):
    """--from-results DIR --figures OUT: a model or test-set name read from DIR that would leave OUT (a '/' or
    '..') is refused where the file is read, naming the entry (exit 2); nothing is drawn anywhere."""
    d, _ = toy_results
    bad = tmp_path / "bad"
    shutil.copytree(d / "results", bad, ignore=shutil.ignore_patterns("*.png", "hyps", "runs", "evidence"))
    rel = json.loads((bad / "reliability.json").read_text())
    rel["panels"][0]["model"] = "x/../../escaped"
    (bad / "reliability.json").write_text(json.dumps(rel))
    capsys.readouterr()
    assert study(["--from-results", str(bad), "--figures", str(tmp_path / "out" / "fig")]) == 2
    assert "panels[0].model: 'x/../../escaped': expected a name" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*escaped*")) and not (tmp_path / "out").exists()
    data = json.loads((d / "results" / "comparison.json").read_text())
    data["rows"][0]["test_set"] = ".."
    (bad / "comparison.json").write_text(json.dumps(data))
    assert study(["--from-results", str(bad)]) == 2
    assert "rows[0].test_set: '..': expected a name" in capsys.readouterr().err


def test_every_pair_gets_its_own_baseline_for_the_paired_bootstrap():
    """The pairs study's baseline is hard-de; en-fr and en-cs rows are compared with the model trained the same
    way on their own pair (before, they had no baseline and no paired bootstrap at all)."""
    from nmt.experiment import baselines
    assert baselines(load_study(ROOT / "studies" / "pairs.toml")) == {"en-de": "hard-de", "en-fr": "hard-fr",
                                                                      "en-cs": "hard-cs"}
    assert baselines(load_study(ROOT / "studies" / "main.toml")) == {"en-de": "hard"}


def test_a_claim_pooled_over_test_sets_takes_each_test_set_as_a_block(tmp_path, toy_multi30k):
    """test_sets = [...]: the same two models on every test set, one block per test set, by hand; the study file
    refuses such a claim with test_set or with model lists too, and a test set the study does not evaluate."""
    from types import SimpleNamespace as Row

    from nmt.claims import judge_claims
    from nmt.studyfile import ClaimSpec, ModelRef
    vals = {("a", "t1", 1): 0.10, ("a", "t1", 2): 0.12, ("b", "t1", 1): 0.15, ("b", "t1", 2): 0.16,
            ("a", "t2", 1): 0.20, ("a", "t2", 2): 0.21, ("b", "t2", 1): 0.22, ("b", "t2", 2): 0.25}
    rows = [Row(model=m, seed=s, t_kind="1", test_set=t, ece_forced=v) for (m, t, s), v in vals.items()]
    spec = ClaimSpec("over sets", "ece_forced", ModelRef("a"), ModelRef("b"), "less", pool="blocks",
                     test_sets=("t1", "t2"))
    (c,) = judge_claims((spec,), rows)
    # blocks t1: -0.05, -0.04 (mean -0.045); t2: -0.02, -0.04 (mean -0.03): the table of the model-pooled test
    assert c.seeds == ["t1:1", "t1:2", "t2:1", "t2:2"] and c.test_sets == ["t1", "t2"] and c.df == 2
    assert c.estimate == pytest.approx(-0.0375) and c.se == pytest.approx(0.00559017, abs=1e-8)
    assert c.heterogeneity.f == pytest.approx(1.8) and recompute(c.to_dict()).ci == c.ci
    f = toy_study(tmp_path / "s.toml", toy_multi30k)
    text = f.read_text().replace('direction = "less"\n',
                                 'direction = "less"\ntest_sets = ["test_2016_flickr", "x"]\n', 1)
    f.write_text(text)
    with pytest.raises(StudyError, match=r"claims\[0\]\.test_sets: 'x': not one of \[evaluate\]\.test_sets"):
        load_study(f)
    f.write_text(text.replace('test_sets = ["test_2016_flickr", "x"]', 'test_sets = ["test_2016_flickr"]'))
    with pytest.raises(StudyError, match=r"claims\[0\]\.test_sets: .*two or more"):
        load_study(f)


def test_the_committed_main_study_evidence_gives_its_calibration_numbers():
    """results/main/evidence: from the committed per-token evidence alone, every row's forced ECE (all
    positions, EOS only, no EOS) and smooth ECE, without the checkpoints."""
    from nmt import evidence
    from nmt.calibration import expected_calibration_error, smooth_ece
    d = ROOT / "results" / "main"
    data = json.loads((d / "comparison.json").read_text())
    assert len(data["rows"]) == 12
    for r in data["rows"]:
        f = evidence.load(d / "evidence" / evidence.file_name(r["model"], r["seed"], r["test_set"], r["t_kind"])).forced
        ok = f.correct["forced"]
        assert f.confidence.size == 15992
        assert expected_calibration_error(f.confidence, ok) == pytest.approx(r["ece_forced"], abs=1e-12)
        assert expected_calibration_error(f.confidence[~f.eos], ok[~f.eos]) == pytest.approx(r["ece_forced_noeos"],
                                                                                              abs=1e-12)
        assert expected_calibration_error(f.confidence[f.eos], ok[f.eos]) == pytest.approx(r["ece_forced_eos"],
                                                                                            abs=1e-12)
        assert smooth_ece(f.confidence, ok) == pytest.approx(r["smece_forced"], abs=1e-12)


def test_every_row_field_comes_from_the_metric_registry_and_is_validated_when_read():
    """A new metric is one registry entry (nmt.metrics) and its computation: Row's fields, the checks of a row read
    back, the aggregates and the report's columns follow from the entry."""
    from nmt.metrics import REGISTRY
    from nmt.report import COLUMNS
    from nmt.results import DESCRIPTION, IDENTITY, NUMERIC, ROW_FIELDS, aggregate, row_from
    expected = {k for k, *_ in IDENTITY + DESCRIPTION} | {m.name for m in REGISTRY} | {m.interval for m in REGISTRY
                                                                                        if m.interval}
    assert ROW_FIELDS == expected | {"signatures"}
    base = {"model": "hard", "label": "hard", "seed": 1, "t_kind": "1", "temperature": 1.0, "test_set": "t"}
    for m in REGISTRY:
        with pytest.raises(DataError, match=rf"rows\[0\]\.{m.name}: 'x': expected a finite number"):
            row_from({**base, m.name: "x"}, "rows[0]")
    rows = [row_from({**base, "seed": s, **{k: float(s) for k in NUMERIC if k != "temperature"}}, "r") for s in (1, 2)]
    agg, = aggregate(rows, ["hard"])
    assert {k for k in agg.mean} == {k for k in NUMERIC if not k.endswith("_p")} and agg.mean["ece_forced"] == 1.5
    assert [c[0] for c in COLUMNS] == [m.name for m in REGISTRY if m.column]


def test_committed_results_written_with_the_older_key_names_are_still_reusable():
    """results/main was written when the labeller was called "labels" and a claim's side named "temperature": its
    settings still equal the main study's (so --reuse takes its evaluations), its claims are still judged."""
    from nmt import evalcache
    from nmt.experiment import decode_config
    from nmt.results import load_comparison
    main = load_study(ROOT / "studies" / "main.toml")
    data = load_comparison(ROOT / "results" / "main")
    stored = json.loads((ROOT / "results" / "main" / "comparison.json").read_text())
    assert "labels" in stored["meta"]["decode"] and "temperature" in stored["claims"][0]["a"]  # the older names
    evalcache.check_settings(main, decode_config(main), data.meta, "results/main")
    with pytest.raises(DataError, match=r"meta\.decode: decoder differ"):  # the sampling decoders came later
        evalcache.check_settings(main, dataclasses.replace(decode_config(main), decoder="mbr"), data.meta, "")
    with pytest.raises(DataError, match=r"meta\.evaluate: decoders differ"):
        evalcache.check_settings(dataclasses.replace(main, evaluate=dataclasses.replace(main.evaluate,
                                                                                        decoders=("mbr",))),
                                 decode_config(main), data.meta, "")
    assert data.claims[1].a == {"model": "hard", "t_kind": "fitted"}


@pytest.mark.slow
def test_a_study_with_the_sampling_decoders_reports_and_judges_them(toy_results, tmp_path):
    """[evaluate] decoders = ["epsilon", "mbr"] on the toy study's runs (nothing trained again): every row has the
    epsilon sample's and MBR's BLEU and chrF, and the sentence-confidence metrics of beam and MBR in their ranges;
    a claim on chrf_mbr is judged; the same command again gives the same numbers (seeded sampling); a bad
    decoder name, or samples = 0, is refused before anything runs."""
    d, f = toy_results
    text = f.read_text().replace('beams = [1, 3]\ntest_sets = "all"', 'decoders = ["epsilon", "mbr"]\nsamples = 4\n'
                                 'seed = 3\noracle_temperature = true\nsweep_test_sets = "first"')
    text = text.replace('[margins]\nbleu_beam = 0.5', '[margins]\nbleu_beam = 0.5\nchrf_mbr = 0.5') + (
        '\n[[claims]]\nclaim = "chrF MBR (LS) ≈ chrF MBR (hard)"\nfamily = "secondary"\nmetric = "chrf_mbr"\n'
        'a = "ls"\nb = "hard"\ndirection = "equivalent"\n')
    dec = tmp_path / "dec.toml"
    dec.write_text(text)
    runs = {p.name: p.stat().st_mtime for p in (d / "runs/en-de/smoke").iterdir()}
    for out in ("r", "again"):
        assert study(["run", str(dec), "--runs", str(d / "runs"), "--results", str(tmp_path / out)]) == 0
    assert {p.name: p.stat().st_mtime for p in (d / "runs/en-de/smoke").iterdir()} == runs
    data, again = (json.loads((tmp_path / o / "comparison.json").read_text()) for o in ("r", "again"))
    for r in data["rows"]:
        assert all(0 <= r[k] <= 100 for k in ("bleu_epsilon", "chrf_epsilon", "bleu_mbr", "chrf_mbr")), r
        assert all(r[k] is None or -1 <= r[k] <= 1 for k in ("confidence_spearman_beam", "confidence_spearman_mbr"))
        assert all(r[k] is None or 0 <= r[k] <= 1 for k in ("sentence_ece_beam", "sentence_ece_mbr"))
    assert [r["chrf_mbr"] for r in data["rows"]] == [r["chrf_mbr"] for r in again["rows"]]
    # the oracle T: fitted on the test set's own references, one value per model and seed (both T kinds)
    from nmt import checkpoint as ckpt_io
    from nmt.calibration import fit_temperature
    from nmt.evaluate import eval_batches
    oracle = {(r["model"], r["seed"]): r["oracle_temperature"] for r in data["rows"] if r["t_kind"] == "1"}
    assert all(r["oracle_temperature"] == oracle[r["model"], r["seed"]] for r in data["rows"])
    model, _, sp = ckpt_io.load_model(next((d / "runs/en-de/smoke").glob("hard+*_seed1")), torch.device("cpu"))
    data_dir = Path(load_study(dec).data.dir)
    src, ref = (read_text(data_dir / f"test_2016_flickr.{lang}.gz") for lang in ("en", "de"))
    fit = fit_temperature(model, eval_batches(sp, src, ref, model.cfg.max_positions, torch.device("cpu")))
    assert oracle["hard", 1] == pytest.approx(fit["temperature"], rel=1e-9)
    assert "oracle T" in (tmp_path / "r" / "comparison.md").read_text()
    assert data["claims"][-1]["metric"] == "chrf_mbr" and data["claims"][-1]["n"] == 2
    assert "chrF MBR" in (tmp_path / "r" / "comparison.md").read_text()
    for old, new, message in (('decoders = ["epsilon", "mbr"]', 'decoders = ["beam"]',
                               r"evaluate\.decoders: \['beam'\]: expected a list of distinct"),
                              ('sweep_test_sets = "first"', 'sweep_test_sets = "some"',
                               r"evaluate\.sweep_test_sets: 'some': expected"),
                              ("samples = 4", "samples = 0", r"evaluate\.samples: 0: expected a whole number in \[1,")):
        dec.write_text(text.replace(old, new))
        with pytest.raises(StudyError, match=message):
            load_study(dec)


def test_the_shift_figure_orders_test_sets_by_hard_bleu_and_divides_the_oracle_t_by_the_validation_t(tmp_path):
    """Hard targets' BLEU at T = 1 (mean over two seeds): a 30, b 20, c 25, so the order is a, c, b, whatever label
    smoothing scores (its BLEU ranks b first). Hard seed 1 has validation T 1.1 and oracle T 1.32 on b: drift
    1.2; a study of one test set per pair draws no shift figure."""
    from nmt.report import shift_order, shift_points, write_figures
    from nmt.results import Comparison, Row
    bleu = {("hard", "a"): 30, ("hard", "b"): 20, ("hard", "c"): 25, ("ls", "a"): 10, ("ls", "b"): 40, ("ls", "c"): 5}
    rows = [Row(model=m, label=m + (" + T" if k == "fitted" else ""), alpha=0.1 if m == "ls" else 0.0, seed=s, t_kind=k,
                temperature=1.0 if k == "1" else 1.1, test_set=t, bleu_beam=b + s - 1.5, ece_forced=0.01 * s,
                ece_inference=0.02, oracle_temperature=1.32)
            for (m, t), b in bleu.items() for s in (1, 2) for k in ("1", "fitted")]
    assert shift_order(rows) == {"en-de": ["a", "c", "b"]}
    p = next(p for p in shift_points(rows)
             if (p["model"], p["seed"], p["test_set"], p["t_kind"]) == ("hard", 1, "b", "1"))
    assert p["rank"] == 3 and p["drift"] == pytest.approx(1.2) and p["label"] == "hard"
    assert {p["label"] for p in shift_points(rows) if p["model"] == "hard"} == {"hard", "hard + T"}  # once
    data = Comparison({"beam": 4}, {}, rows, [], [], [], [])
    written = write_figures({}, data, tmp_path)
    assert written == [tmp_path / "shift.csv", tmp_path / "shift.png"] and (tmp_path / "shift.png").stat().st_size
    lines = list(csv.DictReader((tmp_path / "shift.csv").open()))
    assert len(lines) == 24 and {ln["rank"] for ln in lines if ln["test_set"] == "c"} == {"2"}
    one = [dataclasses.replace(r, test_set="a") for r in rows if r.test_set == "a"]
    assert write_figures({}, Comparison({"beam": 4}, {}, one, [], [], [], []), tmp_path / "one") == []


def test_the_alpha_curve_takes_hard_targets_and_uniform_smoothing_on_the_first_test_set():
    """Four α (0, 0.05, 0.1, 0.2) of uniform smoothing, a unigram prior at α 0.1 (not on the curve), a second
    test set (not on it either), two seeds, T = 1 and fitted: 4 x 2 x 2 = 16 points, their α as the rows say;
    three α draw the figure, two do not."""
    import tempfile

    from nmt.report import alpha_points, write_figures
    from nmt.results import Comparison, Row
    models = {"hard": ("hard", 0.0), "ls005": ("uniform", 0.05), "ls": ("uniform", 0.1), "ls02": ("uniform", 0.2),
              "unigram": ("unigram", 0.1)}
    rows = [Row(model=m, label=m, variant=v, alpha=a, seed=s, t_kind=k, test_set=t, ece_forced=a + s / 100,
                temperature=1.0 if k == "1" else 1.1)
            for t in ("t1", "t2") for m, (v, a) in models.items() for s in (1, 2) for k in ("1", "fitted")]
    points = alpha_points(rows)
    assert len(points) == 16 and {p["test_set"] for p in points} == {"t1"}
    assert sorted({p["alpha"] for p in points}) == [0.0, 0.05, 0.1, 0.2]
    assert "unigram" not in {p["model"] for p in points}
    assert next(p for p in points if (p["model"], p["seed"]) == ("ls02", 2))["ece_forced"] == pytest.approx(0.22)
    with tempfile.TemporaryDirectory() as d:
        written = write_figures({}, Comparison({"beam": 4}, {}, rows, [], [], [], []), d)
        assert [w.name for w in written][-2:] == ["alpha_curve.csv", "alpha_curve.png"]
        assert len(list(csv.DictReader((Path(d) / "alpha_curve.csv").open()))) == 16
        two = [r for r in rows if r.model in ("hard", "ls") and r.test_set == "t1"]
        assert write_figures({}, Comparison({"beam": 4}, {}, two, [], [], [], []), d) == []
