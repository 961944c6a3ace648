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


def utility_matrix(candidates: list, utility: str = "chrf") -> list:
    """U[i][j] = u(c_i, c_j): candidate i scored against candidate j as the reference (the diagonal unused)."""
    u = sentence_utility(utility)
    n = len(candidates)
    return [[None if i == j else u(candidates[i], candidates[j]) for j in range(n)] for i in range(n)]


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
