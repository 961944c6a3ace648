"""Losses, as pure functions: `(loss, nll)` out, summed over non-padding positions.

Label smoothing: Szegedy et al. 2016 (Sec. 7), as studied by Mueller, Kornblith & Hinton 2019,
"When Does Label Smoothing Help?" (Sec. 1: y_k^LS = y_k (1 - alpha) + alpha / K); with a unigram prior
(Gao et al. 2020) or masked to the target side's pieces (Chen et al. 2022); the confidence penalty
(Pereyra et al. 2017).
Distillation: Hinton et al. 2015, token-level for NMT as in Kim & Rush 2016 (Sec. 3.1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nmt.tokenizer import EOS


def label_smoothed_nll_loss(lprobs: torch.Tensor, target: torch.Tensor, alpha: float, ignore_index: int,
                            prior: torch.Tensor = None, plain: bool = False):
    """Cross-entropy against label-smoothed targets, and the plain NLL.

    lprobs (N, V) or (..., V) log-probabilities; target (...) class ids. The smoothed target at a position
    with reference y is

        q_k = (1 - alpha) * [k = y] + alpha * pi_k,

    with `prior` pi a length-V distribution with pi_pad = 0; None is the uniform prior of Szegedy et al. 2016
    (pi_k = 1 / (V - 1) for k != pad). Summing over positions i whose target is not `ignore_index`,

        loss = sum_i (1 - alpha) * (-log p_i,y_i) + alpha * (-sum_k pi_k log p_ik)
        nll  = sum_i -log p_i,y_i.

    The uniform term is the row sum of the log-probabilities (as fairseq's `label_smoothed_nll_loss`), a
    prior's is one matrix-vector product, so no (..., V) target tensor is built. Padding positions add exactly
    zero to both sums and to the gradient; alpha = 0 gives loss == nll exactly. With a confidence penalty,
    `confidence_penalty_loss` (from the logits).

    Convention: `F.cross_entropy(label_smoothing=alpha)` spreads alpha over all V classes, padding
    included (q_k = (1 - alpha) [k = y] + alpha / V); here padding gets no mass.

    `plain`: the formula in autograd's own operations (`_smoothed_plain`), the reference the hand-written
    backward of `_LabelSmoothedNLL` is tested against.
    """
    if prior is not None and is_uniform_prior(prior, ignore_index):
        prior = None  # the row-sum path: the same numbers as no prior, to the bit
    if plain:
        return _smoothed_plain(lprobs, target, alpha, ignore_index, prior)
    return _LabelSmoothedNLL.apply(lprobs, target, float(alpha), int(ignore_index), prior)


def _smoothed_plain(lprobs, target, alpha: float, ignore_index: int, prior=None):
    """`label_smoothed_nll_loss` written as the formula, differentiated by autograd: the kept positions' rows,
    the target's log-probability, and the prior (uniform off the padding class when None) as a full vector."""
    keep = target != ignore_index  # (...)
    lp, y = lprobs[keep], target[keep]  # (..., V) -> (N', V); (...) -> (N',)
    if prior is None:
        prior = torch.full((lp.size(-1),), 1.0 / (lp.size(-1) - 1), dtype=lp.dtype, device=lp.device)
        prior[ignore_index] = 0.0
    nll = -lp.gather(-1, y[:, None]).squeeze(-1)  # (N',)
    smooth = -(lp * prior.to(lp.dtype)).sum(-1)  # -sum_k pi_k log p_k, (N',)
    return ((1.0 - alpha) * nll + alpha * smooth).sum(), nll.sum()


def is_uniform_prior(prior: torch.Tensor, ignore_index: int) -> bool:
    """True when `prior` is exactly 1 / (V - 1) on every class but the padding one, 0 there."""
    V = prior.numel()
    u = torch.full_like(prior, 1.0 / (V - 1))
    u[ignore_index] = 0.0
    return bool(torch.equal(prior, u))


class _LabelSmoothedNLL(torch.autograd.Function):
    """The formula of `label_smoothed_nll_loss`, with a hand-written backward.

    d loss / d log p_ik = -(1 - alpha) [k = y_i] - alpha pi_k and d nll / d log p_ik = -[k = y_i] at kept
    positions, 0 at padding: one (..., V) fill (or a prior broadcast), zeros written into the padding rows
    alone, one scatter, where autograd's own graph (gather, sum, index, where) makes several (..., V) passes.
    scripts/bench_loss.py times it against F.cross_entropy (docs/benchmarks.md).
    """

    @staticmethod
    def forward(ctx, lprobs, target, alpha, ignore_index, prior):
        keep = target != ignore_index  # (...)
        safe_target = target.masked_fill(~keep, 0)
        zero = lprobs.new_zeros(())
        nll = torch.where(keep, -lprobs.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1), zero).sum()
        V = lprobs.size(-1)
        if alpha == 0.0:
            loss = nll.clone()
        elif prior is None:
            smooth = -(lprobs.sum(-1) - lprobs[..., ignore_index])  # -sum_{k != pad} log p_k, (...)
            loss = (1.0 - alpha) * nll + (alpha / (V - 1)) * torch.where(keep, smooth, zero).sum()
        else:
            smooth = -(lprobs @ prior.to(lprobs.dtype))  # -sum_k pi_k log p_k: (..., V) x (V,) -> (...)
            loss = (1.0 - alpha) * nll + alpha * torch.where(keep, smooth, zero).sum()
        ctx.save_for_backward(safe_target, keep, prior)
        ctx.alpha, ctx.ignore_index, ctx.shape, ctx.dtype = alpha, ignore_index, lprobs.shape, lprobs.dtype
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss, grad_nll):
        safe_target, keep, prior = ctx.saved_tensors
        alpha, V = ctx.alpha, ctx.shape[-1]
        if prior is None:  # -alpha/(V-1) on every real class, 0 on the padding class ...
            grad = torch.empty(ctx.shape, dtype=ctx.dtype, device=safe_target.device)
            grad.fill_(-alpha / (V - 1) * grad_loss)
            grad[..., ctx.ignore_index] = 0.0
        else:  # ... or -alpha pi_k
            grad = (-alpha * grad_loss * prior.to(ctx.dtype)).expand(ctx.shape).clone()
        _zero_padding_rows(grad, keep)
        # ... then the one-hot part at y: -(1 - alpha) from the loss, -1 from the nll.
        onehot = keep.to(ctx.dtype) * (-(1.0 - alpha) * grad_loss - grad_nll)  # (...)
        grad.scatter_add_(-1, safe_target.unsqueeze(-1), onehot.unsqueeze(-1))
        return grad, None, None, None, None


def _zero_padding_rows(grad: torch.Tensor, keep: torch.Tensor) -> None:
    """Zeros into the rows of `grad` (..., V) at padding positions (~keep), those rows alone: no full pass."""
    pad_rows = (~keep).reshape(-1).nonzero().squeeze(1)
    if pad_rows.numel():
        grad.view(-1, grad.size(-1)).index_fill_(0, pad_rows, 0.0)


def confidence_penalty_loss(logits: torch.Tensor, target: torch.Tensor, beta: float, ignore_index: int,
                            alpha: float = 0.0, prior: torch.Tensor = None, plain: bool = False):
    """The confidence penalty (Pereyra et al. 2017, Eq. 2), with optional label smoothing, from the logits.

    logits z (..., V); target (...) class ids; p = softmax(z). Summing over positions i whose target is not
    `ignore_index`,

        loss = sum_i (1 - alpha) * (-log p_i,y_i) + alpha * (-sum_k pi_k log p_ik) - beta * H(p_i)
        nll  = sum_i -log p_i,y_i,          H(p_i) = -sum_k p_ik log p_ik,

    with `prior` pi as in `label_smoothed_nll_loss` (None: uniform over the non-padding classes): beta = 0
    is that loss on log_softmax(z). Written with log Z_i = logsumexp_k z_ik and E_i = sum_k p_ik z_ik, so no
    log-probability tensor is ever formed: -log p_i,y = log Z_i - z_i,y, -sum_k pi_k log p_ik = log Z_i -
    pi . z_i, H(p_i) = log Z_i - E_i; and log Z_i = max_k z_ik - log max_k p_ik (softmax divides by the sum
    of exp(z - max)). The gradient (hand-written, `_ConfidencePenalty`):

        d loss / d z_ik = p_ik (1 + beta (z_ik - E_i)) - (1 - alpha) [k = y_i] - alpha pi_k
        d nll / d z_ik  = p_ik - [k = y_i],     both 0 at padding positions.

    `plain`: the formula on log_softmax(z) in autograd's own operations, the reference for the hand-written one.
    """
    if prior is not None and is_uniform_prior(prior, ignore_index):
        prior = None
    if plain:
        lprobs = F.log_softmax(_at_least_fp32(logits), dim=-1)  # (..., V)
        keep = target != ignore_index
        entropy = -(lprobs[keep].exp() * lprobs[keep]).sum()  # sum_i H(p_i) over kept positions
        loss, nll = _smoothed_plain(lprobs, target, alpha, ignore_index, prior)
        return loss - beta * entropy, nll
    return _ConfidencePenalty.apply(logits, target, float(beta), int(ignore_index), float(alpha), prior)


def _softmax_stats(logits: torch.Tensor, rows: int = 64):
    """p = softmax(z) (..., V), log Z = max_k z_k - log max_k p_k (...) and E = sum_k p_k z_k (...). On the CPU
    in blocks of `rows` rows, each written in place, so that the block stays in cache for the maxima and the
    dot product (a quarter faster at 4096 x 8000 than whole-tensor ops; p and log Z bit-identical to them)."""
    V = logits.size(-1)
    z = logits.reshape(-1, V)  # (N, V), a view of a contiguous tensor
    if logits.device.type != "cpu":
        rows = max(z.size(0), 1)
    probs = torch.empty_like(z)
    log_z, expected = z.new_empty(z.size(0)), z.new_empty(z.size(0))  # (N,)
    for s in range(0, z.size(0), rows):
        zc, pc = z[s:s + rows], probs[s:s + rows]
        torch.softmax(zc, -1, out=pc)
        torch.sub(zc.amax(-1), pc.amax(-1).log_(), out=log_z[s:s + rows])
        torch.linalg.vecdot(pc, zc, out=expected[s:s + rows])
    lead = logits.shape[:-1]
    return probs.view(logits.shape), log_z.view(lead), expected.view(lead)  # (..., V), (...), (...)


class _ConfidencePenalty(torch.autograd.Function):
    """`confidence_penalty_loss`: one softmax, two row maxima and one row dot product forward (in cache-sized
    blocks, `_softmax_stats`); one fused (..., V) multiply-add and one product backward, against
    F.cross_entropy's log-softmax, its exp in the backward and its fill (scripts/bench_loss.py,
    docs/benchmarks.md)."""

    @staticmethod
    def forward(ctx, logits, target, beta, ignore_index, alpha, prior):
        keep = target != ignore_index  # (...)
        safe_target = target.masked_fill(~keep, 0)
        zero = logits.new_zeros(())
        probs, log_z, expected = _softmax_stats(logits)
        nll_i = log_z - logits.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1)
        per_pos = (1.0 - beta) * log_z + beta * expected - (1.0 - alpha) * (log_z - nll_i)  # (...)
        if alpha:
            V = logits.size(-1)
            if prior is None:  # pi . z = (sum_k z_k - z_pad) / (V - 1)
                pi_z = (logits.sum(-1) - logits[..., ignore_index]) / (V - 1)
            else:
                pi_z = logits @ prior.to(logits.dtype)  # (..., V) x (V,) -> (...)
            per_pos = per_pos - alpha * pi_z
        loss = torch.where(keep, per_pos, zero).sum()
        nll = torch.where(keep, nll_i, zero).sum()
        ctx.save_for_backward(safe_target, keep, prior, logits, probs, expected)
        ctx.beta, ctx.alpha, ctx.ignore_index = beta, alpha, ignore_index
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss, grad_nll):
        safe_target, keep, prior, logits, probs, expected = ctx.saved_tensors
        beta, alpha, V = ctx.beta, ctx.alpha, logits.size(-1)
        # p_k (c_i + g beta z_k) with c_i = g + g_nll - g beta E_i: one fused multiply-add, one product
        c = (grad_loss + grad_nll) - (grad_loss * beta) * expected  # (...)
        grad = torch.add(c.unsqueeze(-1), logits, alpha=float(grad_loss * beta)).mul_(probs)  # (..., V)
        if alpha:
            pi = _uniform(V, ctx.ignore_index) if prior is None else prior
            grad.sub_(alpha * grad_loss * pi.to(device=grad.device, dtype=grad.dtype))
        _zero_padding_rows(grad, keep)
        onehot = keep.to(grad.dtype) * (-(1.0 - alpha) * grad_loss - grad_nll)  # (...)
        grad.scatter_add_(-1, safe_target.unsqueeze(-1), onehot.unsqueeze(-1))
        return grad, None, None, None, None, None


def smoothing_prior(kind: str, target_counts: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The prior pi of `label_smoothed_nll_loss` (float64, length V, pi_pad = 0):
    - "uniform": 1 / (V - 1) on every non-padding piece (Szegedy et al. 2016);
    - "unigram": the pieces' frequencies on the target side of the training data (Gao et al. 2020);
    - "masked": uniform over the pieces that occur on the target side (Chen et al. 2022), so that no mass goes
      to pieces of a joint vocabulary that only the source side uses;
    - "unigram-noeos": the unigram prior with pi_EOS = 0, renormalised over the other pieces (the ablation of
      the unigram prior's end-of-sentence mass).
    `target_counts` (V,): how often each piece is a training target (EOS included). A ValueError for an
    unknown kind or a prior with no mass."""
    counts = target_counts.double().clone()
    counts[ignore_index] = 0.0
    if kind == "uniform":
        prior = torch.ones_like(counts)
        prior[ignore_index] = 0.0
    elif kind == "unigram":
        prior = counts
    elif kind == "masked":
        prior = (counts > 0).double()
    elif kind == "unigram-noeos":
        prior = counts
        prior[EOS] = 0.0
    else:
        raise ValueError(f"unknown smoothing prior {kind!r} (expected uniform, unigram, masked or unigram-noeos)")
    if prior.sum() <= 0:
        raise ValueError(f"the {kind} prior has no mass: no target piece in the training data")
    return prior / prior.sum() if kind != "uniform" else _uniform(counts.numel(), ignore_index)


def _uniform(V: int, ignore_index: int) -> torch.Tensor:
    u = torch.full((V,), 1.0 / (V - 1), dtype=torch.float64)
    u[ignore_index] = 0.0
    return u


def distillation_loss(student_lprobs: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                      beta: float, temperature: float, ignore_index: int, student_logits: torch.Tensor = None):
    """Token-level knowledge distillation (Hinton et al. 2015; Kim & Rush 2016, Sec. 3.1).

        loss = (1 - beta) * sum_i -log p_s(y_i)
               + beta * T^2 * sum_i KL(softmax(z_t,i / T) || softmax(z_s,i / T))
        nll  = sum_i -log p_s(y_i)            (student at T = 1)

    over positions i whose target is not `ignore_index`. The T^2 factor keeps the soft term's gradient
    scale independent of T (Hinton et al. Sec. 2). `student_lprobs` are at T = 1; pass `student_logits`
    when T != 1 so the tempered student distribution can be formed. Teacher logits are computed on the
    fly by the caller, batch by batch: no stored N x V tensors.
    """
    nll, _ = label_smoothed_nll_loss(student_lprobs, target, 0.0, ignore_index)
    if beta == 0.0:
        return nll, nll
    keep = target != ignore_index
    if temperature == 1.0:
        s_lp = student_lprobs
    elif student_logits is None:
        raise ValueError("distillation at temperature != 1 needs the student's logits")
    else:
        s_lp = F.log_softmax(_at_least_fp32(student_logits) / temperature, dim=-1)
    t_lp = F.log_softmax(_at_least_fp32(teacher_logits) / temperature, dim=-1)
    kl = (t_lp.exp() * (t_lp - s_lp)).sum(-1)  # KL(teacher || student) per position, (...)
    kl = torch.where(keep, kl, torch.zeros_like(kl)).sum()
    return (1.0 - beta) * nll + beta * temperature ** 2 * kl, nll


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits (autocast) are promoted; float32/float64 stay as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def target_counts(targets, vocab: int) -> torch.Tensor:
    """How often each piece occurs in the training targets (EOS included): the counts a unigram prior is built from
    (`smoothing_prior`). `targets` is a list of id lists; returns a float64 vector of length `vocab`."""
    counts = torch.zeros(vocab, dtype=torch.float64)
    for ids in targets:
        counts += torch.bincount(torch.tensor(ids, dtype=torch.long), minlength=vocab).double()
    return counts
