"""Per-token evidence of a row, committed beside its results: what forced and inference ECE are computed from,
so that a new calibration metric can be computed from the committed files, without the checkpoints.

One file per (model, seed, test set, T kind): results/NAME/evidence/MODEL.seedS.TESTSET.TKIND.npz, a compressed
numpy archive of plain arrays (read with allow_pickle=False: loading never runs code), every sentence in corpus
order:
  forced_confidence (N,) float32   the top-1 probability at each reference position (teacher forcing)
  forced_correct, forced_eos       (N,) bits (np.packbits): top-1 equals the reference; the position is EOS
  forced_counts (S,) uint16        the positions of each sentence (0: a pair with an empty side, left out)
  forced_nll (S,) float64          each sentence's summed NLL
  inference_confidence (M,) float32, inference_eos (M,) bits, inference_counts (S,) uint16: the emitted tokens
  inference_correct_LABELLER (M,) bits   the correctness labels of each labeller the study uses
`load` checks every name, dtype and shape against the others and bounds the sizes before anything is used.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nmt.errors import DataError

MAX_BYTES = 64 * 2 ** 20  # one evidence file (a test set of a few thousand sentences is well under 1 MB)
MAX_TOKENS = 5_000_000
LABELLERS = ("ter", "ter-wang", "edit")


@dataclass
class TokenEvidence:
    """Tokens of one row, sentence after sentence in corpus order."""
    confidence: np.ndarray  # (N,) float32
    eos: np.ndarray  # (N,) bool
    counts: np.ndarray  # (S,) int: tokens of each sentence
    correct: dict = field(default_factory=dict)  # {labeller or "forced": (N,) bool}

    def sentence_ids(self) -> np.ndarray:
        """(N,) the sentence of each token."""
        return np.repeat(np.arange(len(self.counts)), self.counts)


@dataclass
class Evidence:
    forced: TokenEvidence
    forced_nll: np.ndarray  # (S,) float64
    inference: TokenEvidence


def forced_in_corpus_order(res: dict, per: dict, order: list, n_sentences: int) -> tuple:
    """(TokenEvidence, per-sentence NLL) from `teacher_forced_at`'s arrays, which run sentence after sentence in
    batch order; `order[i]` is the corpus index of the i-th sentence of that order."""
    counts = np.asarray(per["tokens"], dtype=np.int64)  # (n,) in batch order
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    corpus = np.argsort(np.asarray(order), kind="stable")  # batch positions in corpus order
    take = np.concatenate([np.arange(starts[i], starts[i] + counts[i]) for i in corpus]) if len(corpus) else \
        np.zeros(0, dtype=np.int64)
    full_counts, nll = np.zeros(n_sentences, dtype=np.int64), np.zeros(n_sentences)
    full_counts[np.asarray(order)] = counts
    nll[np.asarray(order)] = per["nll"]
    ev = TokenEvidence(np.asarray(res.confidences, dtype=np.float32)[take], np.asarray(res.eos)[take],
                       full_counts, {"forced": np.asarray(res.correct)[take]})
    return ev, nll


def inference_of(hyps, labels: dict) -> TokenEvidence:
    """The emitted tokens of `hyps` (corpus order) with each labeller's labels ({labeller: [[bool]]})."""
    from nmt.tokenizer import EOS
    conf = np.array([p for h in hyps for p in h.token_probs], dtype=np.float32)
    eos = np.array([t == EOS for h in hyps for t in h.tokens], dtype=bool)
    counts = np.array([len(h.tokens) for h in hyps], dtype=np.int64)
    return TokenEvidence(conf, eos, counts, {k: np.array([bool(x) for lab in v for x in lab], dtype=bool)
                                            for k, v in labels.items()})


def save(path, ev: Evidence) -> None:
    """One evidence file, written atomically."""
    from nmt.files import write_bytes_atomic
    arrays = {"forced_confidence": ev.forced.confidence.astype(np.float32),
              "forced_correct": np.packbits(ev.forced.correct["forced"]), "forced_eos": np.packbits(ev.forced.eos),
              "forced_counts": ev.forced.counts.astype(np.uint16), "forced_nll": ev.forced_nll.astype(np.float64),
              "inference_confidence": ev.inference.confidence.astype(np.float32),
              "inference_eos": np.packbits(ev.inference.eos), "inference_counts": ev.inference.counts.astype(np.uint16)}
    for k, v in ev.inference.correct.items():
        arrays[f"inference_correct_{k}"] = np.packbits(v)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes_atomic(Path(path), buf.getvalue())


def _array(z, name: str, where: str, dtype, length=None) -> np.ndarray:
    if name not in z.files:
        raise DataError(f"{where}: {name}: missing")
    a = z[name]
    if a.dtype != np.dtype(dtype) or a.ndim != 1 or (length is not None and a.size != length):
        raise DataError(f"{where}: {name}: {a.dtype} of shape {a.shape}, expected {np.dtype(dtype)} of length "
                        f"{'any' if length is None else length}")
    return a


def _bits(z, name: str, where: str, n: int) -> np.ndarray:
    return np.unpackbits(_array(z, name, where, np.uint8, (n + 7) // 8), count=n).astype(bool)


def _tokens(z, prefix: str, where: str, n_sentences=None) -> TokenEvidence:
    counts = _array(z, f"{prefix}_counts", where, np.uint16, n_sentences).astype(np.int64)
    n = int(counts.sum())
    if n > MAX_TOKENS:
        raise DataError(f"{where}: {n} tokens, more than the {MAX_TOKENS} an evidence file may hold")
    conf = _array(z, f"{prefix}_confidence", where, np.float32, n)
    if not (np.isfinite(conf).all() and (conf >= 0).all() and (conf <= 1).all()):
        raise DataError(f"{where}: {prefix}_confidence: expected probabilities in [0, 1]")
    return TokenEvidence(conf, _bits(z, f"{prefix}_eos", where, n), counts)


def load(path) -> Evidence:
    """An evidence file, validated (names, dtypes, shapes, sizes, values); a DataError naming what is wrong."""
    path = Path(path)
    where = str(path)
    if path.stat().st_size > MAX_BYTES:
        raise DataError(f"{where}: larger than the {MAX_BYTES} bytes an evidence file may have")
    try:
        with np.load(path, allow_pickle=False) as z:
            if any(zipfile.ZipFile(path).getinfo(n + ".npy").file_size > 4 * MAX_TOKENS + 1024 for n in z.files):
                raise DataError(f"{where}: an array larger than {MAX_TOKENS} tokens")
            forced = _tokens(z, "forced", where)
            forced.correct["forced"] = _bits(z, "forced_correct", where, forced.confidence.size)
            nll = _array(z, "forced_nll", where, np.float64, forced.counts.size)
            inference = _tokens(z, "inference", where, forced.counts.size)
            for name in z.files:
                if name.startswith("inference_correct_"):
                    labeller = name[len("inference_correct_"):]
                    if labeller not in LABELLERS:
                        raise DataError(f"{where}: {name}: unknown labeller (expected one of {', '.join(LABELLERS)})")
                    inference.correct[labeller] = _bits(z, name, where, inference.confidence.size)
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{where}: not an evidence file of nmt ({type(e).__name__}: {e})") from None
    if not np.isfinite(nll).all():
        raise DataError(f"{where}: forced_nll: expected finite numbers")
    return Evidence(forced, nll, inference)


def file_name(model: str, seed: int, test_set: str, t_kind: str) -> str:
    return f"{model}.seed{seed}.{test_set}.{t_kind}.npz"
