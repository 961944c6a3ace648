"""The metric registry: one entry per number a study's row carries, in the order comparison.md shows them.

An entry says how the metric is titled and printed, which row field holds its interval, whether a claim may
name it, and whether the README's headline table shows it. `results.Row`'s fields, the validation of a row read
back, the aggregates over seeds, the study file's allowed claim metrics, the report's columns and the claims'
digits all come from here, so a new metric is this one entry plus the code that computes it
(`nmt.experiment.make_row`). docs/design.md shows an example.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Metric:
    name: str  # the Row field, and the name study files and comparison.json use
    title: str  # the column's title
    fmt: str  # how a value is printed
    interval: Optional[str] = None  # the Row field of its 95% interval (one seed), if any
    claimable: bool = True  # a claim may name it
    headline: bool = False  # the README's table shows it
    column: bool = True  # comparison.md's tables show it
    half_width: bool = False  # its interval is one number (a 95% half-width), not [low, high]

    def claim_fmt(self) -> str:
        """A difference of this metric: signed, with the metric's own digits."""
        return "{:+" + self.fmt[2:]


REGISTRY = [
    Metric("temperature", "T", "{:.3f}", claimable=False),
    Metric("oracle_temperature", "oracle T", "{:.3f}", claimable=False),  # fitted on the test set: a diagnostic
    Metric("val_nll", "val NLL", "{:.3f}", headline=True),
    Metric("test_nll", "test NLL", "{:.3f}", "test_nll_ci", headline=True),
    Metric("accuracy", "token acc", "{:.4f}"),
    Metric("entropy", "entropy", "{:.3f}"),
    Metric("ece_forced", "ECE (forced)", "{:.4f}", "ece_forced_ci", headline=True),
    Metric("ece_forced_floor", "ECE floor", "{:.4f}", claimable=False, headline=True),
    Metric("ece_forced_debiased", "debiased", "{:.4f}"),
    Metric("ece_forced_eos", "ECE EOS", "{:.4f}"),
    Metric("ece_forced_noeos", "ECE no EOS", "{:.4f}"),
    Metric("smece_forced", "smooth ECE", "{:.4f}"),
    Metric("ece_inference", "ECE (inference)", "{:.4f}", "ece_inference_ci", headline=True),
    Metric("ece_inference_wang", "ECE (inf., Wang)", "{:.4f}", "ece_inference_wang_ci", headline=True),
    Metric("bleu_beam", "BLEU beam", "{:.2f}", "bleu_ci", headline=True, half_width=True),
    Metric("bleu_p", "p (BLEU)", "{:.3f}", claimable=False),
    Metric("bleu_greedy", "BLEU greedy", "{:.2f}", headline=True),
    Metric("chrf", "chrF", "{:.2f}", "chrf_ci", headline=True, half_width=True),
    Metric("chrf_p", "p (chrF)", "{:.3f}", claimable=False),
    Metric("length_ratio", "length ratio", "{:.3f}", column=False),
    # the sampling decoders, where the study names them ([evaluate] decoders): BLEU and chrF of one epsilon sample
    # and of MBR over epsilon samples; how well each decoder's sentence confidence predicts sentence chrF
    Metric("bleu_epsilon", "BLEU epsilon", "{:.2f}"),
    Metric("chrf_epsilon", "chrF epsilon", "{:.2f}"),
    Metric("bleu_mbr", "BLEU MBR", "{:.2f}"),
    Metric("chrf_mbr", "chrF MBR", "{:.2f}"),
    Metric("confidence_spearman_beam", "ρ(conf, chrF) beam", "{:.3f}"),
    Metric("confidence_spearman_mbr", "ρ(conf, chrF) MBR", "{:.3f}"),
    Metric("sentence_ece_beam", "sentence ECE beam", "{:.4f}"),
    Metric("sentence_ece_mbr", "sentence ECE MBR", "{:.4f}"),
    # kept in the rows (comparison.json), not shown in the tables and not claimed
    Metric("test_ppl", "test ppl", "{:.2f}", claimable=False, column=False),
    Metric("mce_forced", "MCE (forced)", "{:.4f}", claimable=False, column=False),
    Metric("ece_inference_debiased", "debiased (inf.)", "{:.4f}", claimable=False, column=False),
    Metric("ece_inference_floor", "ECE floor (inf.)", "{:.4f}", claimable=False, column=False),
    Metric("inference_accuracy", "accuracy (inf.)", "{:.4f}", claimable=False, column=False),
    Metric("ece_inference_wang_floor", "ECE floor (inf., Wang)", "{:.4f}", claimable=False, column=False),
]
BY_NAME = {m.name: m for m in REGISTRY}
CLAIMABLE = tuple(m.name for m in REGISTRY if m.claimable)


def claim_format(metric: str) -> str:
    """How a claim's difference on `metric` is printed (a metric outside the registry: 4 places)."""
    return BY_NAME[metric].claim_fmt() if metric in BY_NAME else "{:+.4f}"
