"""The small scripts that choose and check runs and make docs tables: scripts/check_replay.py, scripts/choose_on_val.py,
scripts/distill_tables.py, scripts/profile_search.py, results/variants/eos_check.py."""
import importlib.util
import json
import shutil
from pathlib import Path


def _script(name, folder="scripts"):
    """A script of scripts/ (or of another folder of the checkout) as a module, to call its main() in-process."""
    path = Path(__file__).resolve().parent.parent / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _copy(run: Path, tmp_path: Path) -> Path:
    """A copy of a run to damage (the session's tiny run stays as it is)."""
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


def test_check_replay_finds_todays_training_identical_and_a_changed_number(tiny_run, tmp_path, capsys):
    """scripts/check_replay.py retrains a run's first updates and compares its log exactly: the tiny run
    replays identically; the same run with one logged loss moved by 1e-12 does not; a linear schedule past
    its warm-up is refused."""
    replay = _script("check_replay")
    assert replay.main([str(tiny_run), "--steps", "20", "--work", str(tmp_path)]) == 0
    assert "are identical" in capsys.readouterr().out
    copy = _copy(tiny_run, tmp_path)
    lines = (copy / "log.jsonl").read_text().splitlines()
    i = next(i for i, x in enumerate(lines) if '"event": "train"' in x and '"step": 10,' in x)
    e = json.loads(lines[i])
    e["loss"] += 1e-12
    lines[i] = json.dumps(e)
    (copy / "log.jsonl").write_text("\n".join(lines) + "\n")
    assert replay.main([str(copy), "--steps", "20", "--work", str(tmp_path)]) == 1
    assert "train at update 10: loss" in capsys.readouterr().out
    cfg = json.loads((copy / "config.json").read_text())
    cfg["train_config"]["lr_schedule"] = "linear"
    (copy / "config.json").write_text(json.dumps(cfg))
    assert replay.main([str(copy), "--steps", "21", "--work", str(tmp_path)]) == 2
    assert "--steps 21: the run's linear schedule" in capsys.readouterr().err


def test_choose_on_val_by_hand():
    """--by nll: the lowest fitted-T NLL; --by bleu: the best BLEU among NLLs within the margin of the best."""
    choose = _script("choose_on_val").choose
    rows = [{"val_nll_fitted": 1.80, "val_bleu": 35.0}, {"val_nll_fitted": 1.79, "val_bleu": 34.0},
            {"val_nll_fitted": 1.81, "val_bleu": 36.0}, {"val_nll_fitted": 1.95, "val_bleu": 40.0}]
    assert choose(rows, "nll", 0.02) == 1
    assert choose(rows, "bleu", 0.02) == 2  # 1.81 <= 1.79 + 0.02; the 40.0 is too far on NLL
    assert choose(rows, "bleu", 0.005) == 1


def test_choose_on_val_reads_a_finished_run_and_refuses_an_unfinished_one(tiny_run, tmp_path, capsys):
    tool = _script("choose_on_val")
    out = tmp_path / "choice.json"
    assert tool.main(["--by", "bleu", str(tiny_run), "--names", "tiny", "--work", str(tmp_path),
                      "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["chosen"] == "tiny" and got["rows"][0]["val_nll_fitted"] <= got["rows"][0]["val_nll_t1"]
    assert 0 <= got["rows"][0]["val_bleu"] <= 100
    assert not list(tiny_run.glob("eval*"))  # nothing written into the run
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "log.jsonl").write_text('{"event": "start_run"}\n')
    assert tool.main(["--by", "nll", str(unfinished)]) == 2
    assert "has not finished" in capsys.readouterr().err


def test_choose_on_val_names_a_malformed_file(tiny_run, tmp_path, capsys):
    """A damaged temperature.json or log line is a named error (exit 2), never a traceback."""
    tool = _script("choose_on_val")
    copy = _copy(tiny_run, tmp_path)
    (copy / "temperature.json").write_text('{"final": ')
    assert tool.main(["--by", "nll", str(copy)]) == 2
    assert f"{copy / 'temperature.json'}: not valid JSON" in capsys.readouterr().err
    (copy / "temperature.json").write_text("{}")
    assert tool.main(["--by", "nll", str(copy)]) == 2
    assert "temperature.json lacks" in capsys.readouterr().err


def test_check_replay_names_a_missing_corpus(tiny_run, tmp_path, capsys):
    """A run whose corpus is gone is bad input (exit 2, the path named), not a crash."""
    replay = _script("check_replay")
    copy = _copy(tiny_run, tmp_path)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["train_config"]["train_src"] = str(tmp_path / "gone.en")
    (copy / "config.json").write_text(json.dumps(cfg))
    assert replay.main([str(copy), "--steps", "10", "--work", str(tmp_path)]) == 2
    assert str(tmp_path / "gone.en") in capsys.readouterr().err


def test_distill_tables_by_hand_and_in_the_docs(tmp_path, capsys):
    """scripts/distill_tables.py: a claim's cell is its Holm verdict, the difference and its interval with a
    typographic minus; the committed results/distill gives exactly the two tables docs/representations.md shows;
    a claim without a setting is refused with the file's name."""
    from nmt.results import load_comparison
    mod = _script("distill_tables")
    claims = [{"claim": "x < y, token KD, T=2", "metric": "test_nll", "verdict": "holds", "verdict_holm": "holds",
               "estimate": 0.0534, "ci": [0.0421, 0.0638], "n": 3, "direction": "less"},
              {"claim": "x < y, token KD, T=2", "metric": "bleu_beam", "verdict": "holds",
               "verdict_holm": "inconclusive", "estimate": -0.284, "ci": [-2.004, 1.436], "n": 3, "direction": "less"},
              {"claim": "x ≈ y, token KD, T=2", "metric": "bleu_beam", "verdict": "inconclusive",
               "verdict_holm": "inconclusive", "estimate": -0.284, "ci": [-1.45, 0.89], "n": 3,
               "direction": "equivalent"}]
    from nmt.results import Comparison
    from nmt.stats import Claim
    typed = [Claim(**{"a": {}, "b": {}, "differences": [], "seeds": [], "test": "paired t", "p": None, **c})
             for c in claims]
    assert mod.claims_table(Comparison({}, {}, [], [], typed)).splitlines()[2] == (
        "| token KD, T=2 | inconclusive (holds before Holm; −0.28 [−2.00, +1.44]; n = 3) | inconclusive (−0.28 "
        "[−1.45, +0.89]; n = 3) | - | **holds** (+0.053 [+0.042, +0.064]; n = 3) |")
    root = Path(__file__).resolve().parent.parent
    data = load_comparison(root / "results" / "distill")
    docs = (root / "docs" / "representations.md").read_text()
    assert mod.models_table(data) in docs and mod.claims_table(data) in docs
    bad = json.loads((root / "results" / "distill" / "comparison.json").read_text())
    bad["claims"][0]["claim"] = "no setting here"
    (tmp_path / "comparison.json").write_text(json.dumps(bad))
    assert mod.main([str(tmp_path)]) == 2
    assert f"error: {tmp_path / 'comparison.json'}: not a distillation study's" in capsys.readouterr().err


def test_choose_on_val_with_the_rows_of_an_earlier_choice(tiny_run, tmp_path, capsys):
    """--with-rows: an earlier choice's rows join the table as they were (marked "from" the file) and the rule
    runs over all; a damaged row (a BLEU over 100, a name used twice, a file that is not a choice) is refused
    before anything is decoded (exit 2, the file and the row named)."""
    tool = _script("choose_on_val")
    earlier = tmp_path / "earlier.json"
    row = {"name": "old", "run": "elsewhere/old_seed1", "minutes": 19.0, "val_nll_t1": 0.1, "val_nll_fitted": 0.1,
           "temperature": 1.0, "val_bleu": 99.0}
    earlier.write_text(json.dumps({"rows": [row]}))
    out = tmp_path / "choice.json"
    args = ["--by", "bleu", str(tiny_run), "--names", "tiny", "--work", str(tmp_path), "--json", str(out)]
    assert tool.main(args + ["--with-rows", str(earlier)]) == 0
    got = json.loads(out.read_text())
    assert got["chosen"] == "old"  # the lowest NLL and the highest BLEU: the tiny run is far behind on both
    assert [r["name"] for r in got["rows"]] == ["tiny", "old"] and got["rows"][1]["from"] == str(earlier)
    assert "from" not in got["rows"][0]
    tool.val_bleu = lambda *a: (_ for _ in ()).throw(AssertionError("decoded before the rows were checked"))
    for bad, said in (({"val_bleu": 101.0}, "row 1 (old): val_bleu = 101.0"),
                      ({"name": "tiny"}, "expected each once"), ({"minutes": "19"}, "minutes = '19'")):
        earlier.write_text(json.dumps({"rows": [{**row, **bad}]}))
        assert tool.main(args[:-2] + ["--with-rows", str(earlier)]) == 2
        assert said in capsys.readouterr().err
    earlier.write_text("[1, 2]")
    assert tool.main(args[:-2] + ["--with-rows", str(earlier)]) == 2
    assert "a --json file of this script" in capsys.readouterr().err


def test_profile_search_shares_add_up_on_the_tiny_run(tiny_run, toy_multi30k, tmp_path, capsys):
    """scripts/profile_search.py: every operator's self time, the products among them, written as JSON."""
    tool = _script("profile_search")
    out = tmp_path / "profile.json"
    assert tool.main(["--checkpoint", str(tiny_run), "--data-dir", str(toy_multi30k), "--batches", "1",
                      "--batch-size", "4", "--length", "3", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["total_ms"] == sum(got["ms"].values()) and 0 < got["products_ms"] < got["total_ms"]
    assert got["search_kernels"] in ("packed", "plain") and "the products" in capsys.readouterr().out


def test_eos_check_counts_every_position_where_the_reference_goes_on(tiny_run, toy_corpus, tmp_path, capsys):
    """results/variants/eos_check.py on the tiny run: its positions are the validation references' pieces
    without their EOS (counted here with the run's own SentencePiece model), p(EOS) is a probability, and EOS
    can rank first no more often than among the two, nor among the two more often than among the four."""
    import sentencepiece as spm

    tool = _script("eos_check", "results/variants")
    out = tmp_path / "eos.json"
    assert tool.main([str(tiny_run), "--json", str(out), "--threads", "1"]) == 0
    (row,) = json.loads(out.read_text())["runs"]
    sp = spm.SentencePieceProcessor(model_file=str(tiny_run / "spm.model"))
    refs = [line for line in (toy_corpus / "val.de").read_text().splitlines() if line.strip()]
    assert row["positions"] == sum(len(ids) for ids in sp.encode(refs)) > 0
    assert 0 < row["mean_p_eos"] < 1 and 0 <= row["eos_top1"] <= row["eos_top2"] <= row["eos_top4"] <= 1
    assert row["run"] == "tiny" and row["prior_eos"] is None and "tiny" in capsys.readouterr().out
