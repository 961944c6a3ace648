"""Learning-rate schedules: the factor the base learning rate is multiplied by at each update (for LambdaLR).

The length of a schedule counts optimizer updates, not batches: with `--update-freq N` an epoch is
ceil(batches / N) updates (`updates_per_epoch`), so the linear schedule reaches 0 at the last update.
"""
from __future__ import annotations

import math

from nmt.config import TrainConfig


def inverse_sqrt(step: int, warmup: int) -> float:
    """LR factor: linear warm-up to 1 over `warmup` updates, then sqrt(warmup / step) (Vaswani et al. Sec. 5.3)."""
    step = step + 1
    return min(step / warmup, math.sqrt(warmup / step)) if warmup > 0 else 1.0 / math.sqrt(step)


def linear_decay(step: int, warmup: int, total: int) -> float:
    """LR factor: linear warm-up to 1 over `warmup` updates, then linearly down to 0 at update `total`
    (the budgeted-training schedule of Li et al. 2020)."""
    step = step + 1
    if step <= warmup:
        return step / warmup
    return max(0.0, (total - step) / max(total - warmup, 1))


def lr_factor(tcfg: TrainConfig, updates_per_epoch: int):
    """The schedule of `tcfg` as a function of the update number (for LambdaLR)."""
    if tcfg.lr_schedule == "linear":
        total = tcfg.max_steps or updates_per_epoch * tcfg.max_epochs
        if tcfg.max_steps:
            total = min(total, updates_per_epoch * tcfg.max_epochs)
        return lambda s: linear_decay(s, tcfg.warmup_steps, total)
    return lambda s: inverse_sqrt(s, tcfg.warmup_steps)
