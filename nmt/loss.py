"""Losses, as pure functions: `(loss, nll)` out, summed over non-padding positions.

Label smoothing: Szegedy et al. 2016 (Sec. 7), as studied by Mueller, Kornblith & Hinton 2019,
"When Does Label Smoothing Help?" (Sec. 1: y_k^LS = y_k (1 - alpha) + alpha / K).
Distillation: Hinton et al. 2015, token-level for NMT as in Kim & Rush 2016 (Sec. 3.1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothed_nll_loss(lprobs: torch.Tensor, target: torch.Tensor, alpha: float, ignore_index: int):
    """Cross-entropy against label-smoothed targets, and the plain NLL.

    lprobs (..., V) log-probabilities; target (...) class ids. With K = V - 1 real classes (the padding
    symbol is not a class) the smoothed target at a position with reference y is

        q_k = (1 - alpha) * [k = y] + alpha * u_k,   u_k = 1 / (V - 1) for k != pad,  u_pad = 0,

    so, summing over positions i whose target is not `ignore_index`,

        loss = sum_i -sum_k q_k log p_ik
             = sum_i (1 - alpha) * (-log p_i,y_i) + alpha / (V - 1) * (-sum_{k != pad} log p_ik)
        nll  = sum_i -log p_i,y_i

    The uniform term comes from the row sum of log-probabilities (as fairseq's
    `label_smoothed_nll_loss` does), so no (..., V) target tensor is built. Padding positions add
    exactly zero to both sums and to the gradient; alpha = 0 gives loss == nll exactly.

    Convention: `F.cross_entropy(label_smoothing=alpha)` spreads alpha over all V classes, padding
    included (q_k = (1 - alpha) [k = y] + alpha / V); here padding gets no mass.
    """
    return _LabelSmoothedNLL.apply(lprobs, target, float(alpha), int(ignore_index))


class _LabelSmoothedNLL(torch.autograd.Function):
    """The formula of `label_smoothed_nll_loss`, with a hand-written backward.

    d loss / d log p_ik = -q_ik and d nll / d log p_ik = -[k = y_i] at kept positions, 0 at padding:
    one (..., V) fill and one scatter, where autograd's own graph (gather, sum, index, where) would make
    several (..., V) passes. This keeps the loss within the cost of F.cross_entropy (scripts/bench_loss.py).
    """

    @staticmethod
    def forward(ctx, lprobs, target, alpha, ignore_index):
        keep = target != ignore_index  # (...)
        safe_target = target.masked_fill(~keep, 0)
        zero = lprobs.new_zeros(())
        nll = torch.where(keep, -lprobs.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1), zero).sum()
        V = lprobs.size(-1)
        if alpha == 0.0:
            loss = nll.clone()
        else:
            smooth = -(lprobs.sum(-1) - lprobs[..., ignore_index])  # -sum_{k != pad} log p_k, (...)
            loss = (1.0 - alpha) * nll + (alpha / (V - 1)) * torch.where(keep, smooth, zero).sum()
        ctx.save_for_backward(safe_target, keep)
        ctx.alpha, ctx.ignore_index, ctx.shape, ctx.dtype = alpha, ignore_index, lprobs.shape, lprobs.dtype
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss, grad_nll):
        safe_target, keep = ctx.saved_tensors
        alpha, V = ctx.alpha, ctx.shape[-1]
        # -alpha/(V-1) on every real class, 0 on the padding class and on padding positions ...
        grad = torch.empty(ctx.shape, dtype=ctx.dtype, device=safe_target.device)
        grad.fill_(-alpha / (V - 1) * grad_loss)
        grad[..., ctx.ignore_index] = 0.0
        grad[~keep] = 0.0
        # ... then the one-hot part at y: -(1 - alpha) from the loss, -1 from the nll.
        onehot = keep.to(ctx.dtype) * (-(1.0 - alpha) * grad_loss - grad_nll)  # (...)
        grad.scatter_add_(-1, safe_target.unsqueeze(-1), onehot.unsqueeze(-1))
        return grad, None, None, None


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
