"""The notebook API gives what the command line gives."""
import json
import math

import pytest

from nmt import Translator


def test_translator_matches_the_cli(tiny_run, toy_corpus, tmp_path):
    from nmt.decode import main
    src = (toy_corpus / "test.en").read_text().splitlines()
    ref = (toy_corpus / "test.de").read_text().splitlines()
    t = Translator.load(tiny_run)
    out = t.translate(src, beam=4)
    hyp = tmp_path / "h.txt"
    assert main(["--checkpoint", str(tiny_run), "--input", str(toy_corpus / "test.en"), "--references",
                 str(toy_corpus / "test.de"), "--output", str(hyp), "--beam", "4"]) == 0
    assert [o.text for o in out] == hyp.read_text().splitlines()
    o = out[0]
    assert o.pieces[-1] == "</s>" and len(o.pieces) == len(o.token_probs)
    assert o.logprob == pytest.approx(sum(math.log(p) for p in o.token_probs), abs=1e-5)
    assert o.score == pytest.approx(o.logprob / len(o.pieces), abs=1e-5)  # length penalty 1
    forced = json.loads((tmp_path / "h.txt.metrics.json").read_text())["forced"]
    s = t.score(src, ref)
    assert s["nll"] == pytest.approx(forced["nll"], rel=1e-9) and s["ece"] == pytest.approx(forced["ece"], abs=1e-12)


def test_translator_auto_temperature_and_empty_text(tiny_run):
    t = Translator.load(tiny_run)
    fitted = json.loads((tiny_run / "temperature.json").read_text())["checkpoint_avg.pt"]["temperature"]
    assert t.temperature("auto") == pytest.approx(fitted)
    out = t.translate(["a dog runs", ""], beam=2, temperature="auto")
    assert out[1].text == "" and out[1].pieces == [] and out[0].text
    assert all(0 < p <= 1 for p in out[0].token_probs)
