import math

import pytest
import torch

from nmt.calibration import (CalibrationStats, bin_index, ece_signature, edit_alignment_matches,
                             expected_calibration_error, fit_temperature, inference_calibration, teacher_forced)
from nmt.config import ModelConfig
from nmt.model import BOS, EOS, PAD, Transformer


@pytest.mark.parametrize("conf, n_bins, expected", [
    ([0.0, 0.1, 0.2, 0.21, 0.5, 1.0], 5, [0, 0, 0, 1, 2, 4]),  # bins (m/M, (m+1)/M]; 0 goes to bin 0
    ([0.6, 0.6000001, 0.8, 0.99], 5, [2, 3, 3, 4]),  # 0.6 is the top of (0.4, 0.6]
    ([0.5, 0.51], 2, [0, 1]),
])
def test_bin_index(conf, n_bins, expected):
    assert bin_index(torch.tensor(conf, dtype=torch.float64), n_bins).tolist() == expected


# Hand-computed tables, M = 5 bins of width 0.2.
#  conf 0.1 (wrong), 0.3 (right), 0.35 (wrong), 0.9 (right), 0.95 (right), 0.85 (wrong)
#  bin 0: n=1 acc 0 conf 0.1 -> |gap| 0.1 ; bin 1: n=2 acc 0.5 conf 0.325 -> 0.175 ; bin 4: n=3 acc 2/3 conf 0.9 -> 0.2333
#  ECE = (1 * 0.1 + 2 * 0.175 + 3 * 0.23333) / 6 = 1.15 / 6 = 0.191667 ; MCE = 0.233333
CASES = [
    ([0.1, 0.3, 0.35, 0.9, 0.95, 0.85], [0, 1, 0, 1, 1, 0], 5, 1.15 / 6, 0.7 / 3),
    # All in one bin: ECE = |acc - mean conf| = |0.5 - 0.7| = 0.2
    ([0.7, 0.7, 0.7, 0.7], [1, 0, 1, 0], 10, 0.2, 0.2),
    # Confidence 1 and always right: perfectly calibrated.
    ([1.0, 1.0], [True, True], 15, 0.0, 0.0),
    # Confidence 1 and always wrong: ECE 1.
    ([1.0, 1.0, 1.0], [False, False, False], 15, 1.0, 1.0),
]


@pytest.mark.parametrize("conf, correct, n_bins, ece, mce", CASES)
def test_hand_computed_ece_and_mce(conf, correct, n_bins, ece, mce):
    assert expected_calibration_error(conf, correct, n_bins) == pytest.approx(ece, abs=1e-9)
    res = CalibrationStats(n_bins).update(conf, correct).result()
    assert res["mce"] == pytest.approx(mce, abs=1e-9)
    assert sum(b["count"] for b in res["bins"]) == len(conf)


def test_bin_table_of_the_first_case():
    bins = CalibrationStats(5).update(*CASES[0][:2]).result()["bins"]
    assert [b["count"] for b in bins] == [1, 2, 0, 0, 3]
    assert [round(b["accuracy"], 6) for b in bins] == [0.0, 0.5, 0.0, 0.0, round(2 / 3, 6)]
    assert [round(b["confidence"], 6) for b in bins] == [0.1, 0.325, 0.0, 0.0, 0.9]


def test_perfectly_calibrated_synthetic_set_has_zero_ece():
    # In each bin, a fraction conf of the predictions is correct, exactly.
    conf, correct = [], []
    for c, n in ((0.25, 4), (0.5, 10), (0.75, 8), (0.9, 10)):
        conf += [c] * n
        correct += [1] * round(c * n) + [0] * (n - round(c * n))
    assert expected_calibration_error(conf, correct, 10) == pytest.approx(0.0, abs=1e-12)


def test_streaming_is_independent_of_batching():
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(1000, generator=g, dtype=torch.float64)
    correct = torch.rand(1000, generator=g, dtype=torch.float64) < conf ** 2
    whole = CalibrationStats(15).update(conf, correct).result()
    parts = CalibrationStats(15)
    for chunk in (conf[:7], conf[7:300], conf[300:301], conf[301:]):
        start = int((conf == chunk[0]).nonzero()[0])
        parts.update(chunk, correct[start:start + len(chunk)])
    merged = CalibrationStats(15).merge(CalibrationStats(15).update(conf[:500], correct[:500])).merge(
        CalibrationStats(15).update(conf[500:], correct[500:]))
    for res in (parts.result(), merged.result()):
        assert res["ece"] == pytest.approx(whole["ece"], abs=1e-12)
        assert [b["count"] for b in res["bins"]] == [b["count"] for b in whole["bins"]]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="confidences"):
        expected_calibration_error([1.5], [1])
    with pytest.raises(ValueError, match="correctness"):
        expected_calibration_error([0.5, 0.5], [1])
    with pytest.raises(ValueError, match="0/1"):
        expected_calibration_error([0.5], [2])


def test_signature():
    assert ece_signature(15, "forced", 1.0) == "ECE|bins:15|binning:uniform|level:token|forced|T:1.0"
    assert ece_signature(10, "inference", 1.13, "eos").endswith("inference|T:1.13|tokens:eos")


@pytest.mark.parametrize("hyp, ref, matched", [
    ("abc", "abc", [1, 1, 1]),
    ("abxc", "abc", [1, 1, 0, 1]),  # one insertion
    ("ac", "abc", [1, 1]),  # one deletion
    ("axc", "abc", [1, 0, 1]),  # one substitution
    ("cba", "abc", [0, 1, 0]),  # distance 2: only b can be matched
    ("", "abc", []),
    ("aa", "a", [1, 0]),  # ties prefer the match at the end: the second a is matched ... or the first one
])
def test_edit_alignment_matches(hyp, ref, matched):
    got = edit_alignment_matches(list(hyp), list(ref))
    if hyp == "aa":
        assert sorted(got) == [False, True]  # exactly one of the two is matched
    else:
        assert got == [bool(x) for x in matched]


def test_inference_calibration_by_hand():
    # hyp a b x (probs .9 .8 .6) against ref a b c: a, b matched, x not.
    # M = 10: bins (0.8, 0.9] -> 0.9 (right); (0.7, 0.8] -> 0.8 (right); (0.5, 0.6] -> 0.6 (wrong)
    # ECE = (0.1 + 0.2 + 0.6) / 3 = 0.3
    res = inference_calibration([[1, 2, 3]], [[0.9, 0.8, 0.6]], [[1, 2, 4]], n_bins=10)
    assert res["ece"] == pytest.approx(0.3, abs=1e-9)
    assert res["tokens"] == 3 and res["accuracy"] == pytest.approx(2 / 3)


def tiny_setup(seed=0, sample_t=1.5):
    """A random tiny model and 3 batches whose targets it samples itself at temperature `sample_t`
    (ancestral sampling), so the NLL-optimal temperature is finite and near sample_t."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=25, d_model=16, n_heads=2, encoder_layers=1, decoder_layers=1, d_ff=32,
                      dropout=0.0, max_positions=20)
    m = Transformer(cfg).eval()
    with torch.no_grad():  # sharper logits make the temperature well determined
        m.embed.weight.mul_(3.0)
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(3):
        src = torch.randint(4, 25, (8, 6), generator=g)
        state, prev, out = m.init_state(src), torch.full((8,), BOS), []
        with torch.no_grad():
            for _ in range(8):
                logits = m.decode_step(prev, state) / sample_t
                logits[:, [PAD, BOS]] = -float("inf")
                prev = torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(1)
                out.append(prev)
        out = torch.stack(out, 1)
        out[0, 5:] = PAD  # a shorter reference
        tgt_in = torch.cat([torch.full((8, 1), BOS), out[:, :-1]], 1).masked_fill(out == PAD, PAD)
        batches.append((src, tgt_in, out))
    return m, batches


def test_fitted_temperature_is_a_true_minimiser():
    m, batches = tiny_setup()
    fit = fit_temperature(m, batches)
    t = fit["temperature"]
    assert not fit["at_bound"] and 1.1 < t < 2.5  # near the sampling temperature 1.5
    nll = lambda T: teacher_forced(m, batches, temperature=T)["nll"]  # noqa: E731
    assert nll(t) == pytest.approx(fit["nll"], abs=1e-5)
    assert nll(t) <= nll(t - 0.01) and nll(t) <= nll(t + 0.01)
    assert fit["nll"] <= fit["nll_t1"]


def test_teacher_forced_figures_by_hand_on_one_batch():
    m, batches = tiny_setup()
    src, tgt_in, out = batches[0]
    res = teacher_forced(m, [batches[0]], temperature=1.0)
    keep = out != PAD
    lp = torch.log_softmax(m(src, tgt_in), -1)[keep]
    y = out[keep]
    assert res["tokens"] == int(keep.sum())
    assert res["nll"] == pytest.approx(-lp.gather(1, y[:, None]).mean().item(), rel=1e-5)
    assert res["accuracy"] == pytest.approx((lp.argmax(-1) == y).float().mean().item())
    assert res["ppl"] == pytest.approx(math.exp(res["nll"]))
    assert res["calibration_eos"]["n"] == int((y == EOS).sum())
    # Batching invariance of the whole evaluation.
    split = [(src[:2], tgt_in[:2], out[:2]), (src[2:], tgt_in[2:], out[2:])]
    res2 = teacher_forced(m, split, temperature=1.0)
    assert res2["ece"] == pytest.approx(res["ece"], abs=1e-9) and res2["nll"] == pytest.approx(res["nll"], rel=1e-6)
