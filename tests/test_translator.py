"""The notebook API gives what the command line gives."""
import json
import math

import pytest

from nmt import Translator


def test_translator_matches_independent_computations(tiny_run, toy_corpus, tmp_path):
    """Translator.translate against beam_search run one sentence at a time (no batching, no translate_many), and
    Translator.score against a plain loop over sentences (no batches, no streaming bins)."""
    import torch
    import torch.nn.functional as F

    from nmt.checkpoint import load_model
    from nmt.search import beam_search
    from nmt.tokenizer import BOS, encode_lines
    src = (toy_corpus / "test.en").read_text().splitlines()
    ref = (toy_corpus / "test.de").read_text().splitlines()
    t = Translator.load(tiny_run)
    out = t.translate(src, beam=4)
    model, _, sp = load_model(tiny_run)
    for o, ids in zip(out, encode_lines(sp, src)):
        h, = beam_search(model, torch.tensor([ids]), beam=4)
        assert o.text == sp.decode(h.ids) and o.score == pytest.approx(h.score, abs=1e-5)
    o = out[0]
    assert o.pieces[-1] == "</s>" and len(o.pieces) == len(o.token_probs)
    assert o.logprob == pytest.approx(sum(math.log(p) for p in o.token_probs), abs=1e-5)
    assert o.score == pytest.approx(o.logprob / len(o.pieces), abs=1e-5)  # length penalty 1
    nll = correct = n = 0.0
    with torch.no_grad():
        for s_ids, r_ids in zip(encode_lines(sp, src), encode_lines(sp, ref)):
            lp = F.log_softmax(model(torch.tensor([s_ids]), torch.tensor([[BOS] + r_ids[:-1]]))[0], -1)  # (T, V)
            y = torch.tensor(r_ids)
            nll += -lp[torch.arange(len(r_ids)), y].sum().item()
            correct += (lp.argmax(-1) == y).sum().item()
            n += len(r_ids)
    s = t.score(src, ref)
    assert s.nll == pytest.approx(nll / n, rel=1e-6) and s.accuracy == pytest.approx(correct / n)


def test_translator_auto_temperature_and_empty_text(tiny_run):
    t = Translator.load(tiny_run)
    fitted = json.loads((tiny_run / "temperature.json").read_text())["checkpoint_avg.pt"]["temperature"]
    assert t.temperature("auto") == pytest.approx(fitted)
    out = t.translate(["a dog runs", ""], beam=2, temperature="auto")
    assert out[1].text == "" and out[1].pieces == [] and out[0].text
    assert all(0 < p <= 1 for p in out[0].token_probs)
