"""Minimum-Bayes-risk selection (Kumar & Byrne 2004; over samples as pseudo-references, Eikema & Aziz 2020,
Freitag et al. 2023): among N candidate translations of one source, the one with the highest expected utility
against the others,

    pick = argmax_i (1 / (N - 1)) sum_{j != i} u(c_i, c_j),

u a sentence-level metric of a hypothesis against one reference (chrF by default, sacrebleu's; BLEU with
effective order as an option). Duplicated candidates count as separate samples, so a frequent translation
gathers support; ties go to the first candidate. The expected utility of the pick is MBR's sentence confidence.
"""
from __future__ import annotations

from dataclasses import dataclass

UTILITIES = ("chrf", "bleu")


@dataclass(frozen=True)
class MBRChoice:
    index: int  # the chosen candidate
    expected: list  # each candidate's expected utility against the others (None with one candidate)


def sentence_utility(name: str):
    """u(hypothesis, reference) -> float: sacrebleu's sentence chrF or BLEU (effective order)."""
    import sacrebleu
    if name == "chrf":
        metric = sacrebleu.metrics.CHRF()
    elif name == "bleu":
        metric = sacrebleu.metrics.BLEU(effective_order=True)
    else:
        raise ValueError(f"MBR utility {name!r}: expected one of {', '.join(UTILITIES)}")
    return lambda hyp, ref: metric.sentence_score(hyp, [ref]).score


def utility_matrix(candidates: list, utility: str = "chrf", plain: bool = False) -> list:
    """U[i][j] = u(c_i, c_j): candidate i scored against candidate j as the reference (the diagonal unused).
    chrF goes through `chrf_matrix` (each candidate's n-grams counted once); `plain` (or BLEU) scores every
    pair with sacrebleu's sentence_score, the reference the fast path is tested against."""
    if utility == "chrf" and not plain:
        return chrf_matrix(candidates)
    u = sentence_utility(utility)
    n = len(candidates)
    return [[None if i == j else u(candidates[i], candidates[j]) for j in range(n)] for i in range(n)]


def chrf_matrix(candidates: list) -> list:
    """sacrebleu's sentence chrF (chrF2, character 6-grams, whitespace removed) of every ordered pair of
    candidates, each candidate's character n-grams counted once. Per order k, with C (N, G) the candidates'
    counts of the order's G distinct n-grams, the pair (i, j) has the statistics [hyp, ref, match] =
    [|c_i|_k if |c_j|_k > 0 else 0, |c_j|_k, sum_g min(C_ig, C_jg)], sacrebleu's own, from which sacrebleu's
    `_compute_f_score` gives the score; `f_scores` computes that formula on all pairs at once, in the same
    order of floating-point operations: equal to `sentence_score` pair by pair (tests/test_search.py)."""
    import numpy as np
    import sacrebleu
    from sacrebleu.metrics.helpers import extract_all_char_ngrams
    metric = sacrebleu.metrics.CHRF()
    assert metric.word_order == 0, "chrf_matrix covers character n-grams only (chrF, not chrF++)"
    grams = [extract_all_char_ngrams(metric._preprocess_segment(c), metric.char_order, metric.whitespace)
             for c in candidates]  # per candidate, one Counter per order
    n = len(candidates)
    stats = np.zeros((n, n, 3 * metric.char_order), dtype=np.int64)  # (N, N, 3 orders): [hyp, ref, match]
    for k in range(metric.char_order):
        index = {g: i for i, g in enumerate(sorted({g for c in grams for g in c[k]}))}
        counts = np.zeros((n, len(index)), dtype=np.int64)  # (N, G)
        for i, c in enumerate(grams):
            for g, m in c[k].items():
                counts[i, index[g]] = m
        total = counts.sum(1)  # (N,)
        stats[:, :, 3 * k] = np.where(total[None, :] > 0, total[:, None], 0)
        stats[:, :, 3 * k + 1] = total[None, :]
        stats[:, :, 3 * k + 2] = np.minimum(counts[:, None, :], counts[None, :, :]).sum(-1)  # (N, 1, G), (1, N, G)
    scores = f_scores(stats, metric.char_order, metric.beta ** 2)
    return [[None if i == j else float(scores[i, j]) for j in range(n)] for i in range(n)]


def f_scores(stats, orders: int, factor: float):
    """sacrebleu's chrF from [hyp, ref, match] statistics (..., 3 * orders), without eps smoothing: the mean
    precision P and recall R over the orders where hypothesis and reference both have n-grams, then
    100 (1 + beta^2) P R / (beta^2 P + R), 0 where P + R = 0. Accumulated order by order, as sacrebleu does."""
    import numpy as np
    stats = stats.astype(np.float64)
    p_sum = r_sum = np.zeros(stats.shape[:-1])
    used = np.zeros(stats.shape[:-1])
    for k in range(orders):
        hyp, ref, match = stats[..., 3 * k], stats[..., 3 * k + 1], stats[..., 3 * k + 2]
        ok = (hyp > 0) & (ref > 0)
        p_sum = p_sum + np.where(ok, match / np.where(ok, hyp, 1), 0.0)
        r_sum = r_sum + np.where(ok, match / np.where(ok, ref, 1), 0.0)
        used = used + ok
    with np.errstate(invalid="ignore", divide="ignore"):
        p, r = np.where(used > 0, p_sum / np.maximum(used, 1), 0.0), np.where(used > 0, r_sum / np.maximum(used, 1),
                                                                               0.0)
        score = (1 + factor) * p * r
        score = score / ((factor * p) + r)
    return np.where(p + r != 0, 100 * score, 0.0)


def select(U: list) -> MBRChoice:
    """The MBR choice from a utility matrix (list of rows): each row's mean off the diagonal, the first maximum."""
    n = len(U)
    if n == 0:
        raise ValueError("MBR needs at least one candidate")
    if n == 1:
        return MBRChoice(0, [None])
    expected = [sum(U[i][j] for j in range(n) if j != i) / (n - 1) for i in range(n)]
    return MBRChoice(max(range(n), key=lambda i: (expected[i], -i)), expected)


def mbr(candidates: list, utility: str = "chrf") -> MBRChoice:
    """`select` over the candidates' utility matrix."""
    return select(utility_matrix(candidates, utility))
