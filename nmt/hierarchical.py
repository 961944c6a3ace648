"""The two-level (hierarchical) bootstrap of a claim: seeds, then sentences within each seed's test set.

A claim's verdict rests on the seed-level t interval (`nmt.stats`), which sees only seed-to-seed noise. This
interval also lets the test set's sampling noise in. One resample r of R:
  for each block (one for an unpooled claim), draw its units (seeds) with replacement; for each drawn unit,
  draw the test set's S sentences with replacement (weights w ~ Multinomial(S, 1/S), the same w for the a and
  b rows of that unit: the comparison stays paired); the unit's difference is metric(a; w) - metric(b; w);
  the resample's estimate is the mean over blocks of the mean over the block's drawn units.
The interval is the percentile interval of the R estimates at the claim's level (95% for an ordering, 90% for
an equivalence), numpy seed 12345. It stands beside the verdict; it does not make it.

A metric is computed from per-sentence sufficient statistics summed under the weights (`SentenceStats`):
sacrebleu's BLEU and chrF statistics of the hypotheses, each sentence's NLL and tokens, each sentence's
count / confidence / correct per ECE bin from the per-token evidence (`nmt.evidence`). With every weight 1 each
gives the row's own value (tested).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from nmt.calibration import bin_index, ece_of_bins

SUPPORTED = ("bleu_beam", "chrf", "test_nll", "ece_forced", "ece_forced_noeos", "ece_inference")
RESAMPLES = 1000
SEED = 12345


@dataclass
class SentenceStats:
    """A row's per-sentence statistics (S, k) and the metric of summed statistics: (R, k) -> (R,)."""
    stats: np.ndarray
    score: Callable[[np.ndarray], np.ndarray]

    def value(self) -> float:
        return float(self.score(self.stats.sum(0, keepdims=True))[0])


def _sacrebleu(metric_cls, hyps: list, refs: list) -> SentenceStats:
    m = metric_cls()
    stats = np.asarray(m._extract_corpus_statistics(hyps, [refs]), dtype=np.float64)  # (S, k)
    return SentenceStats(stats, lambda summed: np.array([m._compute_score_from_stats(list(s)).score
                                                         for s in summed]))


def ece_bins(tokens, keep: np.ndarray, correct: np.ndarray, n_bins: int) -> np.ndarray:
    """(S, M * 3): per sentence and bin, the count, confidence sum and correct sum of the kept tokens."""
    sent = tokens.sentence_ids()[keep]
    conf = tokens.confidence[keep].astype(np.float64)
    idx = sent * n_bins + bin_index(torch.from_numpy(conf), n_bins).numpy()  # (N,): sentence-major bin
    out = np.zeros((len(tokens.counts) * n_bins, 3))
    np.add.at(out, idx, np.stack([np.ones_like(conf), conf, correct[keep].astype(np.float64)], 1))
    return out.reshape(len(tokens.counts), n_bins * 3)


def _ece(bins: np.ndarray, n_bins: int) -> SentenceStats:
    return SentenceStats(bins, lambda summed: ece_of_bins(summed.reshape(len(summed), n_bins, 3)))


def sentence_stats(metric: str, hyps: list, refs: list, ev, n_bins: int, protocol=None) -> Optional[SentenceStats]:
    """The per-sentence statistics of `metric` for one row (None for a metric this bootstrap does not cover, or
    a row without the evidence it needs). `protocol`: the study's first inference protocol (labels, bins, eos)."""
    from sacrebleu.metrics import BLEU, CHRF
    if metric == "bleu_beam":
        return _sacrebleu(BLEU, hyps, refs)
    if metric == "chrf":
        return _sacrebleu(CHRF, hyps, refs)
    if ev is None or metric not in SUPPORTED:
        return None
    f = ev.forced
    if metric == "test_nll":
        stats = np.stack([ev.forced_nll, f.counts.astype(np.float64)], 1)
        return SentenceStats(stats, lambda s: s[:, 0] / np.maximum(s[:, 1], 1))
    if metric in ("ece_forced", "ece_forced_noeos"):
        keep = np.ones_like(f.eos) if metric == "ece_forced" else ~f.eos
        return _ece(ece_bins(f, keep, f.correct["forced"], n_bins), n_bins)
    inf = ev.inference
    if protocol is None or protocol.labeller not in inf.correct:
        return None
    keep = np.ones_like(inf.eos) if protocol.eos == "include" else ~inf.eos
    return _ece(ece_bins(inf, keep, inf.correct[protocol.labeller], protocol.bins), protocol.bins)


def interval(stats_a: dict, stats_b: dict, units: list, level: float, resamples: int = RESAMPLES,
             seed: int = SEED) -> Optional[list]:
    """The two-level percentile interval of a claim's estimate (module docstring); `stats_a` / `stats_b`:
    {unit: SentenceStats} of its two sides, `units` its paired units ("BLOCK:seed" for a pooled claim).
    None when a unit lacks its statistics or there are fewer than two units."""
    from nmt.stats import block_of
    if len(units) < 2 or any(stats_a.get(u) is None or stats_b.get(u) is None for u in units):
        return None
    rng = np.random.RandomState(seed)
    blocks = {}
    for u in units:
        blocks.setdefault(block_of(u) if isinstance(u, str) else "", []).append(u)
    estimates = np.zeros(resamples)
    for members in blocks.values():
        n_sent = len(stats_a[members[0]].stats)  # a block's units share its test set
        if any(len(stats_a[u].stats) != n_sent or len(stats_b[u].stats) != n_sent for u in members):
            return None
        drawn = rng.randint(len(members), size=(resamples, len(members)))  # (R, n_b): the unit in each slot
        block_sum = np.zeros(resamples)
        for slot in range(len(members)):  # each drawn copy of a unit gets its own draw of sentences
            w = rng.multinomial(n_sent, np.full(n_sent, 1.0 / n_sent), size=resamples).astype(np.float64)  # (R, S)
            for j, u in enumerate(members):
                rows = drawn[:, slot] == j  # (R,): the resamples that put unit u in this slot
                if rows.any():
                    a, b = stats_a[u], stats_b[u]
                    block_sum[rows] += a.score(w[rows] @ a.stats) - b.score(w[rows] @ b.stats)
        estimates += block_sum / len(members)
    estimates /= len(blocks)
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(estimates, tail)), float(np.percentile(estimates, 100 - tail))]
