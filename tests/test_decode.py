import json
import shutil
import subprocess
import sys

import pytest
from conftest import TINY_MODEL

from nmt.decode import main

PY = sys.executable


def test_end_to_end_smoke_train_then_decode_beam4(toy_multi30k, tmp_path):
    """The main path, as a user runs it: train a few steps on a Multi30k-layout corpus, decode --beam 4."""
    run = tmp_path / "run"
    train = subprocess.run([PY, "-m", "nmt.train", "--data-dir", str(toy_multi30k), "--run-dir", str(run),
                            "--vocab-size", "64", "--max-tokens", "300", "--max-train-len", "60", "--max-steps", "12",
                            "--warmup-steps", "4", *TINY_MODEL], capture_output=True, text=True)
    assert train.returncode == 0, train.stderr[-2000:]
    dec = subprocess.run([PY, "-m", "nmt.decode", "--checkpoint", str(run), "--beam", "4"],
                         capture_output=True, text=True)
    assert dec.returncode == 0, dec.stderr[-2000:]
    out = run / "eval" / "test_2016_flickr.checkpoint_best.beam4.T1.0.txt"
    assert len(out.read_text().splitlines()) == 20
    metrics = json.loads((run / "eval" / (out.name + ".metrics.json")).read_text())
    import sacrebleu
    from conftest import toy_pairs
    refs = [t for _, t in toy_pairs(20, 2)]  # the toy corpus's test references
    expected = sacrebleu.corpus_bleu(out.read_text().splitlines(), [refs]).score
    assert metrics["beam"] == 4 and metrics["bleu"] == pytest.approx(expected, abs=1e-9)
    assert metrics["bleu_signature"].startswith("nrefs:1")
    assert 0 <= metrics["forced"]["ece"] <= 1 and metrics["forced"]["tokens"] > 0
    assert "BLEU" in dec.stdout and "ECE|bins:15|binning:uniform|level:token|forced|T:1.0|version:nmt-" in dec.stdout
    assert "|inference|labeller:ter|unit:piece|eos:include|" in dec.stdout


def test_a_trained_model_translates_and_reports(tiny_run, toy_corpus, tmp_path, capsys):
    out = tmp_path / "hyp.txt"
    assert main(["--checkpoint", str(tiny_run), "--input", str(toy_corpus / "test.en"),
                 "--references", str(toy_corpus / "test.de"), "--output", str(out), "--beam", "4"]) == 0
    m = json.loads((tmp_path / "hyp.txt.metrics.json").read_text())
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


def test_beam_1_matches_a_one_wide_beam_search_on_the_cli(tiny_run, toy_corpus, tmp_path):
    """--beam 1 on the command line (greedy search, batched) gives what the beam-search code gives with a beam
    of one, sentence by sentence: two algorithms that must agree, not one code path compared with itself."""
    import torch

    from nmt.checkpoint import load_model
    from nmt.data import read_text
    from nmt.search import beam_search
    from nmt.tokenizer import encode_lines
    out = tmp_path / "b1.txt"
    assert main(["--checkpoint", str(tiny_run), "--input", str(toy_corpus / "test.en"), "--output", str(out),
                 "--beam", "1"]) == 0
    model, _, sp = load_model(tiny_run)
    expected = []
    for ids in encode_lines(sp, read_text(toy_corpus / "test.en")):  # one sentence at a time: no batching
        h, = beam_search(model, torch.tensor([ids]), beam=1)
        expected.append(sp.decode(h.ids))
    assert out.read_text().splitlines() == expected


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
    m = json.loads((tmp_path / "t.txt.metrics.json").read_text())
    assert m["temperature"] == pytest.approx(fitted)
    assert f"|T:{round(fitted, 4)}|" in m["forced"]["signature"]
    assert main(["--checkpoint", str(tiny_run), "--input", "-", "--temperature", "-1"]) == 2


# -- outputs never clobber anything -----------------------------------------------------------------

def test_metrics_never_replace_the_hypotheses_or_an_input(tiny_run, toy_corpus, tmp_path, capsys):
    src, ref = str(toy_corpus / "test.en"), str(toy_corpus / "test.de")
    hyp = tmp_path / "hyp.json"  # once, the metrics overwrote a hypotheses file with this name
    assert main(["--checkpoint", str(tiny_run), "--input", src, "--references", ref, "--output", str(hyp)]) == 0
    assert len(hyp.read_text().splitlines()) == 30 and (tmp_path / "hyp.json.metrics.json").is_file()
    two = tmp_path / "two"
    for name in ("test.de", "test.fr"):  # once, both wrote two/test.json
        assert main(["--checkpoint", str(tiny_run), "--input", src, "--references", ref, "--output",
                     str(two / name)]) == 0
    assert sorted(p.name for p in two.iterdir()) == ["test.de", "test.de.metrics.json", "test.fr",
                                                     "test.fr.metrics.json"]
    victim = tmp_path / "victim.en"
    victim.write_text("a dog runs\n")
    before = victim.read_text()
    assert main(["--checkpoint", str(tiny_run), "--input", str(victim), "--output", str(victim)]) == 2
    assert "would overwrite --input" in capsys.readouterr().err and victim.read_text() == before
    assert main(["--checkpoint", str(tiny_run), "--input", src, "--references", ref, "--output", str(tmp_path / "h"),
                 "--metrics", ref]) == 2
    assert "would overwrite --references" in capsys.readouterr().err


def test_a_read_only_output_fails_before_translating(tiny_run, toy_corpus, tmp_path, capsys):
    import os
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores the mode bits: nothing to test here
            pytest.skip("running as root: a read-only directory is writable")
        assert main(["--checkpoint", str(tiny_run), "--input", str(toy_corpus / "test.en"), "--output",
                     str(ro / "hyp.txt")]) == 2
        assert "cannot write here" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_output_under_a_file_fails_before_translating(tiny_run, toy_corpus, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--checkpoint", str(tiny_run), "--input", str(toy_corpus / "test.en"), "--output",
                 str(blocker / "hyp.txt")]) == 2
    assert "cannot write here" in capsys.readouterr().err and blocker.read_text() == "x"


def test_per_token_records(tiny_run, toy_corpus, tmp_path):
    out = tmp_path / "h.txt"
    assert main(["--checkpoint", str(tiny_run), "--input", str(toy_corpus / "test.en"), "--references",
                 str(toy_corpus / "test.de"), "--output", str(out), "--per-token"]) == 0
    recs = [json.loads(x) for x in (tmp_path / "h.txt.tokens.jsonl").read_text().splitlines()]
    hyps = out.read_text().splitlines()
    assert len(recs) == len(hyps) == 30
    for rec in recs:
        assert len(rec["pieces"]) == len(rec["token_probs"]) == len(rec["correct"]) and rec["pieces"][-1] == "</s>"
        assert rec["logprob"] == pytest.approx(sum(__import__("math").log(p) for p in rec["token_probs"]), abs=1e-4)
    # The labels recompute the inference ECE the metrics report.
    from nmt.calibration import CalibrationStats
    stats = CalibrationStats(15)
    for rec in recs:
        stats.update(rec["token_probs"], rec["correct"])
    m = json.loads((tmp_path / "h.txt.metrics.json").read_text())
    assert stats.result()["ece"] == pytest.approx(m["inference"]["ece"], abs=1e-12)


@pytest.mark.parametrize("flags, message", [
    (["--input", "x.en"], "--input: not used with the study"),
    (["--checkpoint", "a", "--runs", "r"], "--runs: not used with one --checkpoint"),
    (["--checkpoint", "a", "--study", "s.toml"], "--study: not used with one --checkpoint"),
    (["--beam", "0"], "--beam 0: expected a whole number >= 1"),
    (["--checkpoint", "a", "--temperature", "inf"], "--temperature 'inf': expected a number in [0.01, 100] or 'auto'"),
])
def test_flags_that_do_not_apply_or_cannot_work_are_errors(flags, message, capsys):
    assert main(flags) == 2
    assert message in capsys.readouterr().err


def test_beam_above_the_vocabulary_and_min_len_above_the_limit_are_refused(tiny_run, tmp_path, capsys):
    src = tmp_path / "s.en"
    src.write_text("a dog runs\n")
    assert main(["--checkpoint", str(tiny_run), "--input", str(src), "--output", str(tmp_path / "o"),
                 "--beam", "10000"]) == 2
    assert "--beam 10000: expected at most the vocabulary size" in capsys.readouterr().err
    assert main(["--checkpoint", str(tiny_run), "--input", str(src), "--output", str(tmp_path / "o"),
                 "--min-len", "40"]) == 2
    assert "--min-len 40" in capsys.readouterr().err and not (tmp_path / "o").exists()


SEPARATORS = ["\u2028", "\u2029", "\u0085", "\v", "\f", "\x1c", "\x1d", "\x1e", "\r"]


def test_one_output_line_per_input_line_whatever_the_characters(tiny_run):
    """Random Unicode lines, separators that str.splitlines splits on among them: from stdin and from a
    file, exactly one hypothesis per input line, in order (empty lines stay empty)."""
    import random
    rng = random.Random(7)
    words = ["a", "dog", "runs", "the", "cat", "é", "ß", "猫", "\U0001F600"]
    lines = []
    for i in range(20):
        parts = [rng.choice(words + SEPARATORS) for _ in range(rng.randint(0, 6))]
        lines.append(" ".join(parts).replace("\n", ""))
    lines[3] = ""
    text = "".join(line + "\n" for line in lines)
    res = subprocess.run([PY, "-m", "nmt.decode", "--checkpoint", str(tiny_run), "--input", "-", "--beam", "2"],
                         input=text.encode(), capture_output=True)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout.decode().split("\n")
    assert len(out) == 21 and out[-1] == "" and out[3] == ""


def test_empty_input_with_references_reports_metrics_as_not_defined(tiny_run, tmp_path):
    for content in ("", "\n\n"):
        src, ref = tmp_path / "e.en", tmp_path / "e.de"
        src.write_text(content)
        ref.write_text(content)
        out = tmp_path / "e.out"
        assert main(["--checkpoint", str(tiny_run), "--input", str(src), "--references", str(ref), "--output",
                     str(out)]) == 0
        assert out.read_text() == content
        m = json.loads((tmp_path / "e.out.metrics.json").read_text())
        assert m["bleu"] is None and m["forced"] is None


def test_greedy_probabilities_are_at_the_temperature_asked_for(tiny_run, toy_corpus, tmp_path):
    """--beam 1 --temperature 2: the same tokens as at T = 1, their probabilities under softmax(z / 2)."""
    import torch

    from nmt.checkpoint import load_model
    from nmt.data import read_text
    from nmt.search import greedy
    from nmt.tokenizer import encode_lines
    probs = {}
    for t in ("1", "2"):
        out = tmp_path / f"t{t}.txt"
        assert main(["--checkpoint", str(tiny_run), "--input", str(toy_corpus / "test.en"), "--output", str(out),
                     "--beam", "1", "--temperature", t, "--per-token"]) == 0
        lines = (tmp_path / f"t{t}.txt.tokens.jsonl").read_text().splitlines()
        probs[t] = [json.loads(x)["token_probs"] for x in lines]
    model, _, sp = load_model(tiny_run)
    first = encode_lines(sp, read_text(toy_corpus / "test.en"))[0]
    h, = greedy(model, torch.tensor([first]), temperature=2.0)
    assert probs["2"][0] == pytest.approx(h.token_probs, abs=1e-6) and probs["2"][0] != probs["1"][0]
    # the same tokens at both temperatures (the arg-max does not move), so the same hypotheses
    assert (tmp_path / "t1.txt").read_text() == (tmp_path / "t2.txt").read_text()
    tokens = {t: [json.loads(x)["ids"] for x in (tmp_path / f"t{t}.txt.tokens.jsonl").read_text().splitlines()]
              for t in ("1", "2")}
    assert tokens["1"] == tokens["2"] and tokens["2"][0] == h.tokens


@pytest.fixture(scope="module")
def extra_sets_run(toy_multi30k, tmp_path_factory):
    """A tiny model trained on a Multi30k-layout directory with two more test sets: test_2018_flickr (both
    languages) and test_2017_mscoco (English only, so not a pair)."""
    from conftest import toy_pairs, write_lines

    from nmt.train import main as train
    d = tmp_path_factory.mktemp("extra") / "m30k"
    shutil.copytree(toy_multi30k, d)
    pairs = toy_pairs(12, 7)
    write_lines(d / "test_2018_flickr.en.gz", [s for s, _ in pairs], gz=True)
    write_lines(d / "test_2018_flickr.de.gz", [t for _, t in pairs], gz=True)
    write_lines(d / "test_2017_mscoco.en.gz", [s for s, _ in pairs[:5]], gz=True)
    run = d.parent / "run"
    assert train(["--run-dir", str(run), "--data-dir", str(d), "--preset", "smoke", "--max-steps", "15",
                  "--vocab-size", "64", "--max-train-len", "60", *TINY_MODEL]) == 0
    return run


def test_test_sets_all_decodes_every_pair_of_the_data_directory(extra_sets_run, capsys):
    assert main(["--checkpoint", str(extra_sets_run), "--test-sets", "all", "--beam", "2"]) == 0
    err = capsys.readouterr().err
    assert "test sets: test_2016_flickr, test_2018_flickr" in err
    made = sorted(p.name.split(".")[0] for p in (extra_sets_run / "eval").glob("*.metrics.json"))
    assert made == ["test_2016_flickr", "test_2018_flickr"]
    m = json.loads(next((extra_sets_run / "eval").glob("test_2018_flickr.*.metrics.json")).read_text())
    assert m["sentences"] == 12 and m["bleu"] is not None


def test_test_sets_list_skips_and_names_an_absent_set(extra_sets_run, capsys, tmp_path):
    assert main(["--checkpoint", str(extra_sets_run), "--test-sets", "test_2017_mscoco,test_2018_flickr",
                 "--beam", "1", "--output", str(tmp_path / "h.txt")]) == 0
    assert "test sets: test_2018_flickr (not in the data directory: test_2017_mscoco)" in capsys.readouterr().err
    assert json.loads((tmp_path / "h.txt.metrics.json").read_text())["sentences"] == 12


@pytest.mark.parametrize("flags, message", [
    (["--test-sets", "train"], "--test-sets 'train': expected \"all\" or a comma-separated list"),
    (["--test-sets", "all", "--output", "x.txt"], "--output/--metrics name one file"),
    (["--test-sets", "test_2017_mscoco"], "--test-sets test_2017_mscoco: none found for en-de"),
])
def test_bad_test_sets_are_refused_before_anything_is_written(flags, message, extra_sets_run, capsys, tmp_path,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in extra_sets_run.rglob("*"))
    assert main(["--checkpoint", str(extra_sets_run), *flags]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in extra_sets_run.rglob("*")) == before and not (tmp_path / "x.txt").exists()


def test_a_study_gets_one_column_group_per_test_set(extra_sets_run, tmp_path):
    from nmt.study import main as study
    out = tmp_path / "r"
    assert study(["--checkpoint", str(extra_sets_run), "--test-sets", "all", "--results", str(out)]) == 0
    data = json.loads((out / "comparison.json").read_text())
    assert sorted({r["test_set"] for r in data["rows"]}) == ["test_2016_flickr", "test_2018_flickr"]
    md = (out / "comparison.md").read_text()
    assert "test_2016_flickr" in md and "test_2018_flickr" in md


def test_the_sampling_decoders_translate_reproducibly_and_refuse_bad_settings(tiny_run, toy_corpus, tmp_path,
                                                                              capsys):
    """--decoder sample / epsilon / mbr: a translation per line, the same for the same seed (and another seed
    may differ), the decoder in the output's name and metrics; a bad decoder, --samples 0 or --epsilon 1.5 is one
    line and exit 2 before anything is written."""
    src = toy_corpus / "test.en"
    n = len(src.read_text().splitlines())
    outs = {}
    for decoder, seed in (("sample", 1), ("sample", 1), ("epsilon", 1), ("mbr", 1)):
        out = tmp_path / f"{decoder}.{seed}.{len(outs)}.txt"
        assert main(["--checkpoint", str(tiny_run), "--input", str(src), "--references", str(toy_corpus / "test.de"),
                     "--decoder", decoder, "--samples", "4", "--seed", str(seed), "--output", str(out)]) == 0
        lines = out.read_text().splitlines()
        assert len(lines) == n
        m = json.loads(out.with_name(out.name + ".metrics.json").read_text())
        assert m["decode"]["decoder"] == decoder and m["bleu"] is not None
        outs[len(outs)] = lines
    assert outs[0] == outs[1]  # the same seed, input and batch size: the same samples
    capsys.readouterr()
    for bad, message in ((["--decoder", "topk"], "--decoder 'topk': expected beam, sample, epsilon, mbr"),
                         (["--decoder", "mbr", "--samples", "0"], "--samples 0: expected a whole number in [1, 1024]"),
                         (["--decoder", "epsilon", "--epsilon", "1.5"], "--epsilon 1.5: expected a number in (0, 1)")):
        assert main(["--checkpoint", str(tiny_run), "--input", str(src), "--output", str(tmp_path / "x.txt"),
                     *bad]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()


def test_the_translator_takes_a_decoder(tiny_run):
    from nmt.translator import Translator
    t = Translator.load(tiny_run)
    a = t.translate(["a big dog", "the cat"], decoder="mbr", samples=3, seed=7)
    b = t.translate(["a big dog", "the cat"], decoder="mbr", samples=3, seed=7)
    assert [x.text for x in a] == [x.text for x in b] and len(a) == 2 and all(x.logprob <= 0 for x in a)


def test_a_bf16_search_says_so_in_its_signatures_and_is_refused_without_bf16_units(tiny_run, toy_corpus, tmp_path,
                                                                                   monkeypatch, capsys):
    """--dtype bfloat16: the metrics' BLEU, chrF and inference-ECE signatures end in search:bf16 (float32's do
    not), the forced ECE's does not (teacher-forced scoring stays float32); on a CPU without bf16 units, or with
    the CTranslate2 engine, one line and exit 2 before anything is written."""
    import nmt.decode
    src, ref = toy_corpus / "test.en", toy_corpus / "test.de"
    monkeypatch.setattr(nmt.decode, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    metrics = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.txt"
        assert main(["--checkpoint", str(tiny_run), "--input", str(src), "--references", str(ref), "--dtype", dtype,
                     "--output", str(out)]) == 0
        metrics[dtype] = json.loads(out.with_name(out.name + ".metrics.json").read_text())
    bf16, fp32 = metrics["bfloat16"], metrics["float32"]
    assert bf16["bleu_signature"] == fp32["bleu_signature"] + "|search:bf16"
    assert bf16["chrf_signature"] == fp32["chrf_signature"] + "|search:bf16"
    assert "|search:bf16|" in bf16["inference"]["signature"] and "search:" not in fp32["inference"]["signature"]
    assert bf16["forced"]["signature"] == fp32["forced"]["signature"] and bf16["decode"]["dtype"] == "bfloat16"
    capsys.readouterr()
    monkeypatch.setattr(nmt.decode, "cpu_bf16_flags", lambda: [])
    for extra, message in (([], "--dtype bfloat16: this CPU has no bf16 units"),
                           (["--engine", "ctranslate2"], "--dtype bfloat16: not with --engine ctranslate2")):
        assert main(["--checkpoint", str(tiny_run), "--input", str(src), "--dtype", "bfloat16", "--device", "cpu",
                     "--output", str(tmp_path / "x.txt"), *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()
