import math

import numpy as np
import pytest
import torch

from nmt.calibration import (
    CalibrationStats,
    ECESignature,
    bin_index,
    bootstrap_interval,
    edit_alignment_matches,
    expected_calibration_error,
    fit_temperature,
    inference_calibration,
    inference_labels,
    teacher_forced,
    ter_alignment_matches,
)
from nmt.config import ModelConfig
from nmt.model import Transformer
from nmt.tokenizer import BOS, EOS, PAD


@pytest.mark.parametrize("conf, n_bins, expected", [
    ([0.0, 0.1, 0.2, 0.21, 0.5, 1.0], 5, [0, 0, 0, 1, 2, 4]),  # bins (m/M, (m+1)/M]; 0 goes to bin 0
    ([0.6, 0.6000001, 0.8, 0.99], 5, [2, 3, 3, 4]),  # 0.6 is the top of (0.4, 0.6]
    ([0.5, 0.51], 2, [0, 1]),
])
def test_bin_index(conf, n_bins, expected):
    assert bin_index(torch.tensor(conf, dtype=torch.float64), n_bins).tolist() == expected


# Hand-computed tables, M = 5 bins of width 0.2.
#  conf 0.1 (wrong), 0.3 (right), 0.35 (wrong), 0.9 (right), 0.95 (right), 0.85 (wrong)
#  bin 0: n=1 acc 0 conf 0.1 -> |gap| 0.1 ; bin 1: n=2 acc 0.5 conf 0.325 -> 0.175 ;
#  bin 4: n=3 acc 2/3 conf 0.9 -> 0.2333
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
    from nmt import __version__
    sig = ECESignature(15, "forced", 1.0)
    assert str(sig) == f"ECE|bins:15|binning:uniform|level:token|forced|T:1.0|version:nmt-{__version__}"
    inf = ECESignature(20, "inference", 1.13, labeller="ter", unit="piece", eos="exclude")
    assert "|inference|labeller:ter|unit:piece|eos:exclude|T:1.13|" in str(inf)
    assert "|T:<row's T>|" in inf.without_temperature()
    assert str(ECESignature(10, "forced", 1.0, subset="eos")).endswith(f"T:1.0|tokens:eos|version:nmt-{__version__}")


# (hypothesis, reference, matched): checked by hand.
EDIT_CASES = [
    ("abc", "abc", [1, 1, 1]),
    ("abxc", "abc", [1, 1, 0, 1]),  # one insertion
    ("ac", "abc", [1, 1]),  # one deletion
    ("axc", "abc", [1, 0, 1]),  # one substitution
    ("cba", "abc", [0, 1, 0]),  # distance 2: only b can be matched
    ("78", "89", [0, 1]),  # distance 2 either way: delete 7, match 8, insert 9 beats two substitutions
    ("ab", "ba", [1, 0]),  # swapped words: distance 2, one of them matched
    ("abcd", "cdab", [1, 1, 0, 0]),  # a moved block: edit distance matches only one side of it
    ("", "abc", []),  # empty hypothesis
    ("ab", "", [0, 0]),  # empty reference
]


@pytest.mark.parametrize("hyp, ref, matched", EDIT_CASES)
def test_edit_alignment_matches(hyp, ref, matched):
    assert edit_alignment_matches(list(hyp), list(ref)) == [bool(x) for x in matched]


def test_edit_alignment_repeated_tokens():
    # a a against a: one match, distance 1 either way; which a is matched does not matter
    assert sorted(edit_alignment_matches(list("aa"), list("a"))) == [False, True]


# TER (Snover et al. 2006) shifts blocks before the edit distance: each case worked out by hand.
TER_CASES = [
    ("abc", "abc", [1, 1, 1]),
    ("axc", "abc", [1, 0, 1]),
    ("78", "89", [0, 1]),  # no shift helps: the same labels as the edit distance
    ("ab", "ba", [1, 1]),  # a one-word shift of b before a: both match
    ("abcd", "cdab", [1, 1, 1, 1]),  # the block cd moves to the front: everything matches
    ("aab", "aba", [1, 1, 1]),  # repeated tokens: a shift of the second a to the end
    ("", "abc", []),
    ("ab", "", [0, 0]),
]


@pytest.mark.parametrize("hyp, ref, matched", TER_CASES)
def test_ter_alignment_matches(hyp, ref, matched):
    assert ter_alignment_matches(list(hyp), list(ref)) == [bool(x) for x in matched]
    assert inference_labels(list(hyp), list(ref), "ter") == [bool(x) for x in matched]


def test_ter_labels_agree_with_sacrebleu_ter_counts():
    """The number of unmatched hypothesis tokens never exceeds TER's edits minus its shifts' savings:
    on sentences where no shift happens, non-matches = substitutions + insertions <= TER edits."""
    from sacrebleu.metrics.lib_ter import translation_edit_rate
    for hyp, ref in (("a b x c", "a b c"), ("x y", "a b c"), ("a b c d", "c d a b")):
        h, r = hyp.split(), ref.split()
        edits, _ = translation_edit_rate(h, r)
        assert len(h) - sum(ter_alignment_matches(h, r)) <= edits


def test_inference_calibration_by_hand():
    # hyp a b x (probs .9 .8 .6) against ref a b c: a, b matched, x not.
    # M = 10: bins (0.8, 0.9] -> 0.9 (right); (0.7, 0.8] -> 0.8 (right); (0.5, 0.6] -> 0.6 (wrong)
    # ECE = (0.1 + 0.2 + 0.6) / 3 = 0.3
    hyp, ref = [5, 6, 7], [5, 6, 8]
    labels = [inference_labels(hyp, ref, "edit")]
    res = inference_calibration([hyp], [[0.9, 0.8, 0.6]], labels, n_bins=10, labeller="edit")
    assert res.ece == pytest.approx(0.3, abs=1e-9)
    assert res.tokens == 3 and res.accuracy == pytest.approx(2 / 3)
    assert "labeller:edit|unit:piece|eos:include" in res.signature


def test_inference_calibration_can_leave_out_eos():
    # hyp a EOS (probs .9 .5), both matched; without EOS only a: ECE = |1 - 0.9| = 0.1
    hyp, ref = [5, EOS], [5, EOS]
    labels = [inference_labels(hyp, ref, "ter")]
    with_eos = inference_calibration([hyp], [[0.9, 0.5]], labels, n_bins=10)
    without = inference_calibration([hyp], [[0.9, 0.5]], labels, n_bins=10, eos="exclude")
    assert with_eos.tokens == 2 and with_eos.ece == pytest.approx((0.1 + 0.5) / 2)
    assert without.tokens == 1 and without.ece == pytest.approx(0.1)


def test_bootstrap_interval_by_hand():
    # Two sentences with identical statistics: every resample gives the same NLL and ECE.
    per = {"nll": np.array([2.0, 2.0]), "tokens": np.array([1, 1]),
           "bins": np.array([[[1, 0.9, 1]], [[1, 0.9, 1]]], dtype=float)}
    assert bootstrap_interval(per, "nll", n_bins=1) == pytest.approx([2.0, 2.0])
    assert bootstrap_interval(per, "ece", n_bins=1) == pytest.approx([0.1, 0.1])
    # Different sentences: the interval lies between the extremes and contains the full-sample value.
    per = {"nll": np.array([1.0, 3.0, 2.0, 6.0]), "tokens": np.array([1, 1, 1, 2]),
           "bins": np.zeros((4, 1, 3))}
    lo, hi = bootstrap_interval(per, "nll", n_bins=1)
    assert 1.0 <= lo < 12 / 5 < hi <= 3.0
    assert bootstrap_interval(per, "nll", n_bins=1) == [lo, hi]  # fixed seed: the same interval again


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
    nll = lambda T: teacher_forced(m, batches, temperature=T).nll  # noqa: E731
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
    assert res.tokens == int(keep.sum())
    assert res.nll == pytest.approx(-lp.gather(1, y[:, None]).mean().item(), rel=1e-5)
    assert res.accuracy == pytest.approx((lp.argmax(-1) == y).float().mean().item())
    assert res.ppl == pytest.approx(math.exp(res.nll))
    assert res.calibration_eos["n"] == int((y == EOS).sum())
    # Batching invariance of the whole evaluation.
    split = [(src[:2], tgt_in[:2], out[:2]), (src[2:], tgt_in[2:], out[2:])]
    res2 = teacher_forced(m, split, temperature=1.0)
    assert res2.ece == pytest.approx(res.ece, abs=1e-9) and res2.nll == pytest.approx(res.nll, rel=1e-6)


def test_teacher_forced_against_a_plain_loop_over_positions():
    """NLL, accuracy and ECE by a plain Python loop, one position at a time with a full softmax, binned by
    hand as ECE's definition says: the streaming, batched evaluation must give the same numbers."""
    m, batches = tiny_setup(seed=3)
    n_bins = 5
    nll = correct = count = 0
    bins = [[0, 0.0, 0] for _ in range(n_bins)]  # count, confidence sum, correct sum
    for src, tgt_in, out in batches:
        with torch.no_grad():
            logits = m(src, tgt_in)  # (B, T, V)
        for b in range(out.size(0)):
            for t in range(out.size(1)):
                y = int(out[b, t])
                if y == PAD:
                    continue
                p = torch.softmax(logits[b, t].double(), -1)
                conf, pred = float(p.max()), int(p.argmax())
                nll -= math.log(float(p[y]))
                correct += pred == y
                count += 1
                k = min(max(math.ceil(conf * n_bins) - 1, 0), n_bins - 1)  # bin (k/M, (k+1)/M]
                bins[k][0] += 1
                bins[k][1] += conf
                bins[k][2] += pred == y
    ece = sum(abs(c_sum - conf_sum) for n, conf_sum, c_sum in bins if n) / count
    res = teacher_forced(m, batches, n_bins=n_bins)
    assert res.tokens == count
    assert res.nll == pytest.approx(nll / count, rel=1e-5)
    assert res.accuracy == pytest.approx(correct / count)
    assert res.ece == pytest.approx(ece, abs=1e-5)
    per = teacher_forced(m, batches, n_bins=n_bins, per_sentence=True).per_sentence
    assert per["tokens"].sum() == count and per["nll"].sum() / count == pytest.approx(nll / count, rel=1e-5)


# -- ECE's own bias: the debiased estimate and the floor of a calibrated model ------------------------------

def test_debiased_ece_by_hand():
    from nmt.calibration import debiased_ece
    # one bin of 4 tokens, accuracy 0.5 = confidence: plug-in ECE 0; sigma = sqrt(0.25 / 4) = 0.25, E|Z| =
    # 0.25 sqrt(2 / pi) = 0.199471: debiased = 2 * 0 - 0.199471
    assert debiased_ece([4], [2.0], [2.0]) == pytest.approx(-0.199471, abs=1e-6)
    # a bin whose accuracy is 1 has no sampling noise (sigma 0): debiased = plug-in = |1 - 0.9|
    assert debiased_ece([10], [9.0], [10.0]) == pytest.approx(0.1)


@pytest.mark.parametrize("conf, floor", [
    ([0.5, 0.5], 0.25),  # K ~ Bin(2, .5): E|K - 1| = 0.5, over N = 2
    ([0.5, 0.5, 0.5], 0.25),  # E|K - 1.5| = (1.5 + 3 x 0.5 + 3 x 0.5 + 1.5) / 8 = 0.75, over 3
    ([1.0, 1.0, 0.0], 0.0),  # certain tokens: no noise at all
    ([0.9, 0.1], 0.18),  # two bins: E|K - 0.9| = 0.9 x 0.1 + 0.1 x 0.9 = 0.18 each, over 2
])
def test_ece_floor_of_a_calibrated_model_by_hand(conf, floor):
    from nmt.calibration import ece_floor
    assert ece_floor(conf, 15) == pytest.approx(floor, abs=1e-12)


def test_ece_floor_matches_simulated_calibrated_labels():
    import numpy as np

    from nmt.calibration import ece_floor
    c = np.random.RandomState(0).beta(5, 1, size=3000)
    sims = [expected_calibration_error(torch.tensor(c), torch.tensor(np.random.RandomState(s).rand(3000) < c))
            for s in range(200)]
    assert ece_floor(c, 15) == pytest.approx(np.mean(sims), rel=0.05)


@pytest.mark.parametrize("hyp, ref, ter, wang", [
    ([1, 3], [1, 2, 3], [True, True], [True, False]),  # reference word 2 missing before 3: Wang marks 3 wrong
    ([1, 2], [1, 2, 3], [True, True], [True, True]),  # a deletion at the end is followed by no token
    ([1, 2, 3], [1, 2, 3], [True, True, True], [True, True, True]),
    ([5, 1, 2], [1, 2], [False, True, True], [False, True, True]),  # an insertion is no deletion
    # the rule marks only the token right after a deletion: match 1, delete 2, match 3 (wrong), match 4 (right)
    ([1, 3, 4], [1, 2, 3, 4], [True, True, True], [True, False, True]),
])
def test_wang_deletion_rule_by_hand(hyp, ref, ter, wang):
    from nmt.calibration import inference_labels
    assert inference_labels(hyp, ref, "ter") == ter
    assert inference_labels(hyp, ref, "ter-wang") == wang


def test_binned_ece_equals_torchmetrics_calibration_error():
    """Parity with a maintained implementation: torchmetrics' binary calibration error (top-label confidences,
    L1 norm, 15 equal-width bins) gives nmt's ECE on the same confidences and correctness, to 1e-9."""
    from torchmetrics.functional.classification import binary_calibration_error
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(20_000, generator=g, dtype=torch.float64) * 0.9 + 0.1
    p_correct = (0.55 + 1.5 * (conf - 0.55)).clamp(0, 1)  # gaps of both signs: the binning matters
    correct = torch.rand(20_000, generator=g, dtype=torch.float64) < p_correct
    ours = expected_calibration_error(conf, correct, n_bins=15)
    theirs = float(binary_calibration_error(conf, correct.long(), n_bins=15, norm="l1"))
    assert ours == pytest.approx(theirs, abs=1e-9) and ours > 0.01


def test_eos_exclude_drops_the_eos_of_an_empty_hypothesis_too():
    """eos="exclude": an empty hypothesis is its EOS alone, and nothing of it is counted. By hand: hypotheses
    [EOS] (conf 0.9, wrong) and [5, 6, EOS] (0.8 right, 0.7 wrong, 0.6 right): without EOS, two tokens,
    accuracy 1/2, confidence (0.8 + 0.7) / 2 = 0.75; with EOS, four tokens, accuracy 2/4, confidence 0.75."""
    hyps, confs, labels = [[EOS], [5, 6, EOS]], [[0.9], [0.8, 0.7, 0.6]], [[False], [True, False, True]]
    without = inference_calibration(hyps, confs, labels, n_bins=10, eos="exclude", intervals=False)
    assert without.tokens == 2 and without.accuracy == pytest.approx(0.5)
    assert without.confidence == pytest.approx(0.75)
    with_eos = inference_calibration(hyps, confs, labels, n_bins=10, eos="include", intervals=False)
    assert with_eos.tokens == 4 and with_eos.confidence == pytest.approx(0.75)


def test_sentence_calibration_by_hand():
    """Confidences 0.15, 0.25, 0.85, 0.95 against qualities 0.1, 0.3, 0.6, 1.0, five bins: bins 0, 1 and 4 hold
    (0.15, 0.1), (0.25, 0.3) and (0.85, 0.6), (0.95, 1.0): sECE = (0.05 + 0.05 + |1.8 - 1.6|) / 4 = 0.075; the
    ranks agree exactly: Spearman 1. Reversed qualities: Spearman -1."""
    from nmt.calibration import sentence_calibration, sentence_confidence
    from nmt.search import Hypothesis
    got = sentence_calibration([0.15, 0.25, 0.85, 0.95], [0.1, 0.3, 0.6, 1.0], n_bins=5)
    assert got["ece"] == pytest.approx(0.075) and got["spearman"] == pytest.approx(1.0) and got["n"] == 4
    assert sentence_calibration([0.15, 0.25, 0.85, 0.95], [1.0, 0.6, 0.3, 0.1])["spearman"] == pytest.approx(-1.0)
    assert math.isnan(sentence_calibration([0.5, 0.5], [0.1, 0.9])["spearman"])
    assert sentence_confidence(Hypothesis([5, EOS], logprob=math.log(0.25))) == pytest.approx(0.5)
