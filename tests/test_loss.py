import math

import pytest
import torch
import torch.nn.functional as F

from nmt.loss import label_smoothed_nll_loss

PAD = 0
# One position, V = 4, p = (0.1, 0.2, 0.3, 0.4) with class 0 the padding symbol.
P = [0.1, 0.2, 0.3, 0.4]
SMOOTH = -(math.log(0.2) + math.log(0.3) + math.log(0.4))  # -sum_{k != pad} log p_k = 3.7297014


@pytest.mark.parametrize("target, alpha, loss, nll", [
    (2, 0.0, 1.2039728, 1.2039728),  # -log 0.3, both
    (2, 0.3, 1.2157511, 1.2039728),  # 0.7 * 1.2039728 + 0.3 / 3 * 3.7297014
    (3, 1.0, 1.2432338, 0.9162907),  # 1/3 * 3.7297014 ; -log 0.4
    (1, 0.1, 1.5728175, 1.6094379),  # 0.9 * 1.6094379 + 0.1 / 3 * 3.7297014
    (0, 0.3, 0.0, 0.0),  # a padding position counts for nothing
])
def test_hand_computed(target, alpha, loss, nll):
    lp = torch.tensor([P]).log()
    got_loss, got_nll = label_smoothed_nll_loss(lp, torch.tensor([target]), alpha, PAD)
    assert got_loss.item() == pytest.approx(loss, abs=1e-6)
    assert got_nll.item() == pytest.approx(nll, abs=1e-6)


@pytest.mark.parametrize("target", [1, 2, 3])
def test_alpha_one_is_the_uniform_term_whatever_the_target(target):
    """At alpha = 1 the target is uniform over the V - 1 non-padding classes: SMOOTH / 3 for every target."""
    got, _ = label_smoothed_nll_loss(torch.tensor([P]).log(), torch.tensor([target]), 1.0, PAD)
    assert got.item() == pytest.approx(SMOOTH / 3, abs=1e-6)


def dense_reference(lprobs, target, alpha, pad):
    """Build q explicitly: (1 - alpha) onehot(y) + alpha * u, u uniform over the V - 1 non-pad classes."""
    V = lprobs.size(-1)
    u = torch.full((V,), 1.0 / (V - 1), dtype=lprobs.dtype)
    u[pad] = 0.0
    q = (1 - alpha) * F.one_hot(target, V).to(lprobs.dtype) + alpha * u
    keep = (target != pad).to(lprobs.dtype).unsqueeze(-1)
    return -(q * lprobs * keep).sum(), -(F.one_hot(target, V) * lprobs * keep).sum()


def random_batch(B=3, T=5, V=11, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=dtype, requires_grad=True)
    target = torch.randint(1, V, (B, T), generator=g)
    target[0, 3:] = PAD
    target[2, 1:] = PAD
    return logits, target


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1.0])
def test_matches_dense_reference_values_and_gradients(alpha):
    logits, target = random_batch()
    loss, nll = label_smoothed_nll_loss(F.log_softmax(logits, -1), target, alpha, PAD)
    ref_loss, ref_nll = dense_reference(F.log_softmax(logits, -1), target, alpha, PAD)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    assert nll.item() == pytest.approx(ref_nll.item(), rel=1e-12)
    # Gradients of a combination of both outputs, against autograd through the dense reference.
    g, = torch.autograd.grad(loss + 0.5 * nll, logits)
    g_ref, = torch.autograd.grad(ref_loss + 0.5 * ref_nll, logits)
    assert torch.allclose(g, g_ref, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.3])
def test_matches_torch_cross_entropy_without_the_padding_class(alpha):
    """F.cross_entropy spreads alpha over all its C classes. Give it the V - 1 real classes (and give our
    loss a padding class of probability ~0): the two targets then coincide."""
    logits, target = random_batch(B=4, T=6, V=9, seed=1)
    with torch.no_grad():
        logits[..., PAD] = -1e4  # p(pad) = 0 in float64, so log_softmax over V == over the V - 1 others
    keep = target != PAD
    loss, nll = label_smoothed_nll_loss(F.log_softmax(logits, -1), target, alpha, PAD)
    ce = F.cross_entropy(logits[keep][:, 1:], target[keep] - 1, label_smoothing=alpha, reduction="sum")
    ce_nll = F.cross_entropy(logits[keep][:, 1:], target[keep] - 1, reduction="sum")
    assert loss.item() == pytest.approx(ce.item(), rel=1e-9)
    assert nll.item() == pytest.approx(ce_nll.item(), rel=1e-9)


def test_alpha_zero_is_exactly_the_nll():
    logits, target = random_batch(dtype=torch.float32)
    lp = F.log_softmax(logits, -1)
    loss, nll = label_smoothed_nll_loss(lp, target, 0.0, PAD)
    assert loss.item() == nll.item()
    assert nll.item() == pytest.approx(F.nll_loss(lp.transpose(1, 2), target, ignore_index=PAD,
                                                  reduction="sum").item(), rel=1e-6)


def test_padding_positions_get_zero_gradient_and_change_nothing():
    logits, target = random_batch()
    loss, _ = label_smoothed_nll_loss(F.log_softmax(logits, -1), target, 0.1, PAD)
    g, = torch.autograd.grad(loss, logits)
    assert g[target == PAD].abs().max().item() == 0.0
    assert g[target != PAD].abs().max().item() > 0.0
    # Changing the logits at padding positions changes neither output.
    other = logits.detach().clone()
    other[target == PAD] = 100.0
    a = label_smoothed_nll_loss(F.log_softmax(logits.detach(), -1), target, 0.1, PAD)
    b = label_smoothed_nll_loss(F.log_softmax(other, -1), target, 0.1, PAD)
    assert a[0].item() == b[0].item() and a[1].item() == b[1].item()


def test_flat_and_batched_shapes_agree():
    logits, target = random_batch()
    lp = F.log_softmax(logits, -1)
    a = label_smoothed_nll_loss(lp, target, 0.2, PAD)
    b = label_smoothed_nll_loss(lp.reshape(-1, lp.size(-1)), target.reshape(-1), 0.2, PAD)
    assert a[0].item() == pytest.approx(b[0].item(), rel=1e-12)


# -- distillation ------------------------------------------------------------------------------

from nmt.loss import distillation_loss  # noqa: E402


@pytest.mark.parametrize("beta, loss", [
    (0.0, 0.6931472),  # the NLL alone: -log 0.5
    (0.5, 0.4432365),  # 0.5 * 0.6931472 + 0.5 * KL, KL = 0.1 ln(.1/.2) + 0.6 ln(.6/.3) + 0.3 ln(.3/.5) = 0.1933259
    (1.0, 0.1933259),  # the KL alone
])
def test_distillation_by_hand(beta, loss):
    student = torch.tensor([[0.2, 0.3, 0.5]]).log()
    teacher = torch.tensor([[0.1, 0.6, 0.3]]).log()  # logits = log-probabilities
    got, nll = distillation_loss(student, teacher, torch.tensor([2]), beta, 1.0, PAD)
    assert got.item() == pytest.approx(loss, abs=1e-6) and nll.item() == pytest.approx(0.6931472, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_distillation_matches_its_formula_and_ignores_padding(temperature):
    s_logits, target = random_batch(seed=2)
    t_logits, _ = random_batch(seed=3)
    t_logits = t_logits.detach()
    loss, nll = distillation_loss(F.log_softmax(s_logits, -1), t_logits, target, 0.3, temperature, PAD,
                                  student_logits=s_logits)
    keep = (target != PAD).unsqueeze(-1).double()
    pt = F.softmax(t_logits / temperature, -1)
    kl = (pt * (F.log_softmax(t_logits / temperature, -1) - F.log_softmax(s_logits / temperature, -1)) * keep).sum()
    ref_nll = -(F.log_softmax(s_logits, -1).gather(-1, target.unsqueeze(-1)) * keep).sum()
    assert loss.item() == pytest.approx((0.7 * ref_nll + 0.3 * temperature ** 2 * kl).item(), rel=1e-10)
    assert nll.item() == pytest.approx(ref_nll.item(), rel=1e-10)
    g, = torch.autograd.grad(loss, s_logits)
    assert g[target == PAD].abs().max().item() == 0.0
    with pytest.raises(ValueError, match="student's logits"):
        distillation_loss(F.log_softmax(s_logits, -1), t_logits, target, 0.3, 2.0, PAD)


# -- the smoothing family: priors and the confidence penalty ---------------------------------------

from nmt.loss import _LabelSmoothedNLL, confidence_penalty_loss, smoothing_prior  # noqa: E402
from nmt.tokenizer import EOS  # noqa: E402


def dense_family(lprobs, target, alpha, pad, prior, beta):
    """q = (1 - alpha) onehot(y) + alpha pi built explicitly, minus beta H(p), at non-pad positions."""
    V = lprobs.size(-1)
    q = (1 - alpha) * F.one_hot(target, V).to(lprobs.dtype) + alpha * prior.to(lprobs.dtype)
    keep = (target != pad).to(lprobs.dtype)
    entropy = -(lprobs.exp() * lprobs).sum(-1)
    return (-(q * lprobs).sum(-1) * keep).sum() - beta * (entropy * keep).sum()


def some_prior(V=11, seed=5):
    p = torch.rand(V, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    p[PAD] = 0.0
    p[3] = 0.0  # a piece the target side never uses
    return p / p.sum()


@pytest.mark.parametrize("alpha, beta, kind", [(0.1, 0.0, "prior"), (0.3, 0.0, "prior"), (0.0, 0.5, "uniform"),
                                               (0.1, 0.3, "prior"), (0.1, 0.3, "uniform"), (1.0, 0.0, "prior")])
def test_family_matches_the_dense_reference_and_gradcheck(alpha, beta, kind):
    logits, target = random_batch()
    V = logits.size(-1)
    prior = some_prior(V) if kind == "prior" else smoothing_prior("uniform", torch.ones(V), PAD)
    lp = F.log_softmax(logits, -1)
    if beta:  # the confidence penalty takes the logits
        fn = lambda x: confidence_penalty_loss(x, target, beta, PAD, alpha=alpha, prior=prior)  # noqa: E731
    else:
        fn = lambda x: label_smoothed_nll_loss(F.log_softmax(x, -1), target, alpha, PAD, prior=prior)  # noqa: E731
    loss, nll = fn(logits)
    ref = dense_family(lp, target, alpha, PAD, prior, beta)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    g, = torch.autograd.grad(loss + 0.5 * nll, logits, retain_graph=True)
    ref_nll = -(lp.gather(-1, target.unsqueeze(-1)).squeeze(-1) * (target != PAD)).sum()
    g_ref, = torch.autograd.grad(ref + 0.5 * ref_nll, logits)
    assert torch.allclose(g, g_ref, atol=1e-12)
    assert g[target == PAD].abs().max().item() == 0.0  # no gradient reaches padding
    assert torch.autograd.gradcheck(fn, (logits.detach().requires_grad_(),))


def test_the_uniform_prior_passed_explicitly_is_todays_loss_to_the_bit():
    logits, target = random_batch(dtype=torch.float32)
    lp = F.log_softmax(logits, -1)
    u = smoothing_prior("uniform", torch.ones(lp.size(-1)), PAD)
    a = label_smoothed_nll_loss(lp, target, 0.1, PAD)
    b = label_smoothed_nll_loss(lp, target, 0.1, PAD, prior=u)
    assert a[0].item() == b[0].item() and a[1].item() == b[1].item()
    ga, = torch.autograd.grad(a[0], logits, retain_graph=True)
    gb, = torch.autograd.grad(b[0], logits)
    assert torch.equal(ga, gb)
    # and the matrix-vector path on the same prior agrees to rounding
    c = _LabelSmoothedNLL.apply(lp, target, 0.1, PAD, u)
    assert c[0].item() == pytest.approx(a[0].item(), rel=1e-6)


def test_priors_by_hand():
    counts = torch.tensor([5.0, 0.0, 0.0, 2.0, 6.0, 0.0])  # pad 0 (never counted), pieces 3 and 4 used
    assert smoothing_prior("unigram", counts, PAD).tolist() == [0.0, 0.0, 0.0, 0.25, 0.75, 0.0]
    assert smoothing_prior("masked", counts, PAD).tolist() == [0.0, 0.0, 0.0, 0.5, 0.5, 0.0]
    assert smoothing_prior("uniform", counts, PAD).tolist() == [0.0] + [0.2] * 5
    with pytest.raises(ValueError, match="no mass"):
        smoothing_prior("masked", torch.tensor([4.0, 0.0, 0.0]), PAD)
    with pytest.raises(ValueError, match="unknown smoothing prior"):
        smoothing_prior("zipf", counts, PAD)
    # EOS is piece 3: counts 2 (EOS), 6, 2 -> unigram 0.2, 0.6, 0.2; without EOS's mass 0, 0.75, 0.25
    counts = torch.tensor([5.0, 0.0, 0.0, 2.0, 6.0, 2.0])
    assert EOS == 3 and smoothing_prior("unigram", counts, PAD).tolist() == pytest.approx([0, 0, 0, 0.2, 0.6, 0.2])
    assert smoothing_prior("unigram-noeos", counts, PAD).tolist() == [0.0, 0.0, 0.0, 0.0, 0.75, 0.25]


def test_confidence_penalty_by_hand():
    # p = (0.1, 0.2, 0.3, 0.4), target 2: NLL 1.2039728; H = 1.2798542; beta 0.5: 1.2039728 - 0.6399271
    loss, nll = confidence_penalty_loss(torch.tensor([P]).log() + 3.0, torch.tensor([2]), 0.5, PAD)  # any shift of z
    assert loss.item() == pytest.approx(1.2039728 - 0.5 * 1.2798542, abs=1e-6)
    assert nll.item() == pytest.approx(1.2039728)


def test_confidence_penalty_at_beta_0_is_label_smoothing_and_large_logits_stay_exact():
    """beta = 0 on the logits path is `label_smoothed_nll_loss` on log_softmax; float32 logits of size ~60
    (log Z from the row maxima, no overflow) agree with the float64 dense reference to float32 rounding."""
    logits, target = random_batch()
    for alpha in (0.0, 0.1):
        a = confidence_penalty_loss(logits, target, 0.0, PAD, alpha=alpha)
        b = label_smoothed_nll_loss(F.log_softmax(logits, -1), target, alpha, PAD)
        assert a[0].item() == pytest.approx(b[0].item(), rel=1e-12)
        assert a[1].item() == pytest.approx(b[1].item(), rel=1e-12)
    big = (logits.detach() * 30).float().requires_grad_()
    loss, nll = confidence_penalty_loss(big, target, 0.3, PAD)
    lp64 = F.log_softmax(big.detach().double(), -1)
    ref = dense_family(lp64, target, 0.0, PAD, smoothing_prior("uniform", torch.ones(11), PAD), 0.3)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(ref.item(), rel=1e-5)
    g, = torch.autograd.grad(loss, big)
    x = big.detach().double().requires_grad_()
    g_ref, = torch.autograd.grad(dense_family(F.log_softmax(x, -1), target, 0.0, PAD,
                                              smoothing_prior("uniform", torch.ones(11), PAD), 0.3), x)
    assert torch.allclose(g.double(), g_ref, atol=1e-5)


def test_the_penaltys_blocked_softmax_statistics_equal_whole_tensor_ops_to_the_bit():
    """_softmax_stats works in blocks of 64 rows on the CPU (for speed); 231 rows: three full blocks and a
    partial one, against softmax, the two maxima and the row dot product on the whole tensor."""
    from nmt.loss import _softmax_stats
    z = torch.randn(7, 33, 500, generator=torch.Generator().manual_seed(3)) * 4
    p = torch.softmax(z, -1)
    probs, log_z, expected = _softmax_stats(z)
    assert torch.equal(probs, p) and probs.shape == z.shape
    assert torch.equal(log_z, z.amax(-1) - p.amax(-1).log()) and log_z.shape == (7, 33)
    assert torch.allclose(expected, (p * z).sum(-1), rtol=0, atol=1e-5) and expected.shape == (7, 33)


@pytest.mark.parametrize("alpha, beta, kind", [(0.0, 0.0, "uniform"), (0.1, 0.0, "uniform"), (0.1, 0.0, "prior"),
                                               (0.1, 0.3, "uniform"), (0.3, 0.5, "prior")])
def test_the_plain_path_and_the_hand_written_backward_agree(alpha, beta, kind):
    """`plain=True` (the formula through autograd) beside the hand-written backward: the same loss, NLL and
    gradients, padding included (float64)."""
    logits, target = random_batch(seed=3)
    prior = some_prior(logits.size(-1)) if kind == "prior" else None
    out = {}
    for plain in (False, True):
        if beta:
            loss, nll = confidence_penalty_loss(logits, target, beta, PAD, alpha=alpha, prior=prior, plain=plain)
        else:
            loss, nll = label_smoothed_nll_loss(F.log_softmax(logits, -1), target, alpha, PAD, prior=prior, plain=plain)
        out[plain] = (loss, nll, torch.autograd.grad(loss + 0.5 * nll, logits)[0])
    (a, b, ga), (c, d, gc) = out[False], out[True]
    assert a.item() == pytest.approx(c.item(), rel=1e-12) and b.item() == pytest.approx(d.item(), rel=1e-12)
    assert torch.allclose(ga, gc, atol=1e-12)
