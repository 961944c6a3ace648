"""What a training update minimises, on one batch: the model's log-probabilities at the non-padding target
positions, and the loss of `nmt.loss` on them (label smoothing with its prior, the confidence penalty, or
distillation from a teacher). Used by `python -m nmt.train` and `scripts/bench_train.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from nmt.loss import confidence_penalty_loss, distillation_loss, label_smoothed_nll_loss
from nmt.tokenizer import PAD


@dataclass
class Objective:
    alpha: float = 0.0
    prior: Optional[torch.Tensor] = None  # (V,) smoothing prior; None: uniform
    confidence_penalty: float = 0.0
    teacher: Optional[torch.nn.Module] = None  # token-level distillation from its logits
    distill_beta: float = 0.0
    distill_temperature: float = 1.0


def loss_on_batch(net, src, tgt_in, tgt_out, objective: Objective):
    """(loss, nll), summed over the target tokens of one batch. The output projections run only at non-padding
    positions (`keep`); losses are taken in float32 (bf16 logits under autocast are promoted first)."""
    keep = tgt_out != PAD  # (B, T)
    logits = net(src, tgt_in, keep=keep)  # (N, V)
    o = objective
    if o.teacher is None and o.confidence_penalty:
        return confidence_penalty_loss(logits.float(), tgt_out[keep], o.confidence_penalty, PAD, alpha=o.alpha,
                                       prior=o.prior)
    lprobs = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    if o.teacher is None:
        return label_smoothed_nll_loss(lprobs, tgt_out[keep], o.alpha, PAD, prior=o.prior)
    with torch.no_grad():
        teacher_logits = o.teacher(src, tgt_in, keep=keep)  # (N, V)
    return distillation_loss(lprobs, teacher_logits, tgt_out[keep], o.distill_beta, o.distill_temperature, PAD,
                             student_logits=logits)
