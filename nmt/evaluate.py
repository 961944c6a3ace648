"""Evaluating one model on one set of sentences: text to ids, search, BLEU / chrF, teacher-forced and
inference calibration, the validation temperature. The library behind `python -m nmt.decode`,
`python -m nmt.study` and `nmt.Translator`.

One rule turns text into ids everywhere (`tokenizer.encode_lines`: EOS appended, an empty line stays empty), and
evaluation truncates a line longer than the model's `max_positions` with a warning naming file and line
(`encode_for_model`). One set fits the temperature, in training and at decoding: the validation split's
non-empty pairs, so encoded (`validation_batches`).
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from nmt.calibration import (
    T_RANGE,
    ForcedMetrics,
    bootstrap_interval,
    fit_temperature,
    inference_calibration,
    inference_labels,
    teacher_forced_at,
)
from nmt.config import DecodeConfig, parse_temperature, train_config_from
from nmt.data import collate, make_batches, pad_ids, read_text_pairs
from nmt.errors import DataError
from nmt.evidence import forced_in_corpus_order
from nmt.files import read_json
from nmt.mbr import mbr
from nmt.search import Hypothesis, sample, translate_many
from nmt.tokenizer import EOS, encode_lines

log = logging.getLogger("nmt.evaluate")


def encode_for_model(sp, lines, max_positions: int, name: str = "input") -> list:
    """Ids with EOS (`tokenizer.encode_lines`); a line longer than the model's positions is truncated to them,
    with a warning naming it. An empty line stays empty."""
    ids = encode_lines(sp, lines)
    for i, x in enumerate(ids):
        if len(x) > max_positions:
            log.warning("%s:%d: %d tokens, truncated to the model's %d positions", name, i + 1, len(x),
                        max_positions)
            ids[i] = x[:max_positions - 1] + [EOS]
    return ids


def eval_batches(sp, src_lines, ref_lines, max_positions: int, device, max_tokens: int = 4096, names=("source",
                                                                                                   "reference"),
                 with_order: bool = False):
    """Teacher-forcing batches (src, tgt_in, tgt_out) of the pairs of an evaluation set whose sides are both
    non-empty, in input order within length-sorted batches (for NLL / ECE / fitting the temperature). With
    `with_order`, (batches, order): order[i] is the corpus index of the i-th sentence of the batches."""
    src = encode_for_model(sp, src_lines, max_positions, names[0])
    ref = encode_for_model(sp, ref_lines, max_positions, names[1])
    keep = [i for i, (s, r) in enumerate(zip(src, ref)) if s and r]
    src_len, tgt_len = [len(src[i]) for i in keep], [len(ref[i]) for i in keep]
    plan = make_batches(src_len, tgt_len, max(max_tokens, max(src_len + tgt_len)), seed=0) if keep else []
    batches = [collate({"src_ids": [src[keep[j]] for j in idx], "tgt_ids": [ref[keep[j]] for j in idx]}, device)
               for idx in plan]
    return (batches, [keep[j] for idx in plan for j in idx]) if with_order else batches


def validation_batches(tcfg, sp, max_positions: int, device) -> list:
    """The one validation set that fits T: the val split's non-empty pairs, truncated to the model."""
    src, ref = read_text_pairs(tcfg, "val")
    return eval_batches(sp, src, ref, max_positions, device, names=("val source", "val reference"))


def fitted_temperature(model, ckpt: dict, sp, device, batches=None) -> dict:
    """The fit of T on the validation set for this checkpoint: read from the run's temperature.json
    ({checkpoint name: fit}, validated), or, where it has none, fitted on `validation_batches` (or `batches`) in
    memory and said so. A run directory is never written here: training writes temperature.json."""
    path = Path(ckpt["path"])
    store = path.parent / "temperature.json"
    fits = read_json(store, "temperature file") if store.is_file() else {}
    if path.name in fits:
        fit = fits[path.name]
        t = fit.get("temperature") if isinstance(fit, dict) else None
        if not (isinstance(t, (int, float)) and not isinstance(t, bool) and T_RANGE[0] <= t <= T_RANGE[1]):
            raise DataError(f"{store}: {path.name}: temperature {t!r}: expected a number in "
                            f"[{T_RANGE[0]:g}, {T_RANGE[1]:g}] (the fit's search range)")
        return fit
    log.info("no fitted temperature for %s in %s: fitting it on the validation set (in memory; the run directory "
             "is not written)", path.name, store)
    if batches is None:
        batches = validation_batches(train_config_from(ckpt["train_config"]), sp, model.cfg.max_positions, device)
    return fit_temperature(model, batches)


def resolve_temperature(value, model, ckpt, sp, device) -> float:
    """--temperature: a number, or 'auto' for the validation-fitted T of this checkpoint."""
    t = parse_temperature(value)
    return t if t is not None else float(fitted_temperature(model, ckpt, sp, device)["temperature"])


def search(model, src_ids, dcfg: DecodeConfig, jobs, progress=None):
    """{(beam, T): hypotheses} for every (beam, T) of `jobs`, each source encoded once for all of them
    (`search.translate_many`); dcfg gives the length penalty, limits, batch size and precision."""
    with search_precision(model, dcfg):
        return translate_many(model, src_ids, jobs, batch_size=dcfg.batch_size, length_penalty=dcfg.length_penalty,
                              max_len_a=dcfg.max_len_a, max_len_b=dcfg.max_len_b,
                              max_positions=model.cfg.max_positions, min_len=dcfg.min_len, progress=progress,
                              prepack=False if dcfg.dtype == "bfloat16" else None)


def search_precision(model, dcfg: DecodeConfig):
    """The search's precision: nothing for float32; bf16 autocast on the model's device for bfloat16 (the
    prepacked linear maps are float32, so a bf16 search uses torch's own)."""
    import contextlib
    if dcfg.dtype != "bfloat16":
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)


def decode_hypotheses(model, sp, src_ids, dcfg: DecodeConfig, temperature: float, progress=None) -> list:
    """One Hypothesis per source with dcfg's decoder: beam search (`search`), or a sampling decoder
    (`sampled`), in dcfg's precision."""
    if dcfg.decoder == "beam":
        return search(model, src_ids, dcfg, [(dcfg.beam, temperature)], progress)[dcfg.beam, temperature]
    with search_precision(model, dcfg):
        return sampled(model, sp, src_ids, dcfg, temperature, progress)


def sampled(model, sp, src_ids, dcfg: DecodeConfig, temperature: float, progress=None) -> list:
    """sample: one ancestral sample; epsilon: one epsilon sample; mbr: the MBR choice (chrF, `nmt.mbr`) among
    dcfg.samples epsilon samples. Sentences go in batches of dcfg.batch_size sentences (each with all its
    draws: batch_size x samples rows); batch k draws with seed dcfg.seed + k, so the same seed, input and batch
    size give the same translations."""
    n = dcfg.samples if dcfg.decoder == "mbr" else 1
    eps = dcfg.epsilon if dcfg.decoder in ("epsilon", "mbr") else 0.0
    device = next(model.parameters()).device
    out = [Hypothesis(tokens=[]) for _ in src_ids]
    todo = [i for i, s in enumerate(src_ids) if s and s != [EOS]]
    for k, start in enumerate(range(0, len(todo), dcfg.batch_size)):
        idx = todo[start:start + dcfg.batch_size]
        draws = sample(model, pad_ids([src_ids[i] for i in idx], device), samples=n, epsilon=eps,
                       temperature=temperature, seed=dcfg.seed + k, max_len_a=dcfg.max_len_a,
                       max_len_b=dcfg.max_len_b, max_positions=model.cfg.max_positions, min_len=dcfg.min_len)
        for i, cands in zip(idx, draws):
            if n == 1:
                out[i] = cands[0]
            else:  # the pick, scored by its expected utility (chrF against the other candidates, 0-100)
                choice = mbr([sp.decode(h.ids) for h in cands])
                out[i] = dataclasses.replace(cands[choice.index], score=choice.expected[choice.index])
        if progress is not None:
            progress.update(len(idx))
    return out


def corpus_bleu(texts, ref_lines) -> float:
    """sacrebleu's corpus BLEU alone (what the sweep and greedy columns report; chrF costs more)."""
    import sacrebleu
    return sacrebleu.metrics.BLEU().corpus_score(texts, [ref_lines]).score


def corpus_scores(texts, ref_lines) -> dict:
    """sacrebleu's BLEU and chrF of detokenized `texts`, with their signatures and the length ratio."""
    import sacrebleu
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    b, c = bleu.corpus_score(texts, [ref_lines]), chrf.corpus_score(texts, [ref_lines])
    return {"bleu": b.score, "bleu_signature": str(bleu.get_signature()), "chrf": c.score,
            "chrf_signature": str(chrf.get_signature()), "length_ratio": b.sys_len / max(b.ref_len, 1),
            "bleu_detail": str(b)}


def score(hyps, texts, ref_lines, ref_ids, dcfg: DecodeConfig, temperature: float) -> dict:
    """`corpus_scores` and the inference calibration of `hyps` against references."""
    labels = [inference_labels(h.tokens, r, dcfg.labeller) for h, r in zip(hyps, ref_ids)]
    bf16 = "bf16" if dcfg.dtype == "bfloat16" else ""
    inf = inference_calibration([h.tokens for h in hyps], [h.token_probs for h in hyps], labels,
                                n_bins=dcfg.inference_bins, temperature=temperature, labeller=dcfg.labeller,
                                eos=dcfg.inference_eos, search=bf16)
    scores = corpus_scores(texts, ref_lines)
    if bf16:  # sacrebleu's signatures, marked: these hypotheses are not float32's
        scores = {**scores, **{k: scores[k] + "|search:bf16" for k in ("bleu_signature", "chrf_signature")}}
    return {**scores, "inference": inf, "labels": labels}


def forced_metrics(model, sp, src_lines, ref_lines, temperature: float, dcfg: DecodeConfig, device, name: str,
                   intervals: bool = False) -> Optional[ForcedMetrics]:
    """Teacher-forced NLL / accuracy / ECE at T; with `intervals`, 95% bootstrap intervals over sentences."""
    return forced_metrics_at(model, sp, src_lines, ref_lines, [temperature], dcfg, device, name,
                             [temperature] if intervals else [])[temperature]


def forced_metrics_at(model, sp, src_lines, ref_lines, temperatures, dcfg: DecodeConfig, device, name: str,
                      intervals=(), confidences=()) -> dict:
    """{T: ForcedMetrics} from one forward pass over the pairs (`calibration.teacher_forced_at`); the
    temperatures in `intervals` also get 95% bootstrap intervals over sentences and the mean entropy, those in
    `confidences` keep every token's confidence (for `calibration.ece_floor`) and "evidence": the per-token
    evidence in corpus order (`nmt.evidence.forced_in_corpus_order`). None for every T when no pair has both
    sides non-empty."""
    batches, order = eval_batches(sp, src_lines, ref_lines, model.cfg.max_positions, device,
                                  names=(name, name + " ref"), with_order=True)
    if not batches:
        return {t: None for t in temperatures}
    res = teacher_forced_at(model, batches, temperatures, n_bins=dcfg.n_bins,
                            per_sentence=set(intervals) | set(confidences))
    for t in set(intervals) | set(confidences):
        f = res[t]
        per, f.per_sentence = f.per_sentence, None
        if t in intervals:
            f.intervals = {k: bootstrap_interval(per, k, dcfg.n_bins) for k in ("nll", "ece")}
        if t in confidences:
            f.evidence = forced_in_corpus_order(f, per, order, len(src_lines))
        else:
            f.confidences = f.correct = f.eos = None
    return res


def evaluate(model, ckpt, sp, src_lines, ref_lines, dcfg: DecodeConfig, temperature: float, device,
             name: str = "input") -> dict:
    """Translate `src_lines`; with references, add BLEU / chrF / teacher-forced and inference calibration.

    Returns {"hypotheses": [str], "hyps": [Hypothesis], "metrics": {...}}. Metrics that are not defined
    (no reference, or no non-empty pair) are None."""
    src_ids = encode_for_model(sp, src_lines, model.cfg.max_positions, name)
    what = dcfg.decoder if dcfg.decoder != "beam" else f"beam {dcfg.beam}" if dcfg.beam > 1 else "greedy"
    bar = tqdm(total=len(src_ids), desc=what, unit="sent", file=sys.stderr, leave=False, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)
    t0 = time.perf_counter()
    hyps = decode_hypotheses(model, sp, src_ids, dcfg, temperature, progress=bar)
    seconds = time.perf_counter() - t0
    bar.close()
    texts = [sp.decode(h.ids) for h in hyps]
    n_tok = sum(len(h.tokens) for h in hyps)
    m = {"checkpoint": ckpt["path"], "data": name, "sentences": len(src_lines), "beam": dcfg.beam,
         "temperature": temperature, "decode": dataclasses.asdict(dcfg), "alpha": ckpt["train_config"]["alpha"],
         "speed": {"seconds": seconds, "sentences_per_s": len(src_lines) / max(seconds, 1e-9),
                   "tokens_per_s": n_tok / max(seconds, 1e-9), "target_tokens": n_tok,
                   "threads": torch.get_num_threads(), "device": str(device)}}
    if ref_lines is not None:
        m.update(metrics_against(model, sp, hyps, texts, src_lines, ref_lines, dcfg, temperature, device, name))
    return {"hypotheses": texts, "hyps": hyps, "metrics": m}


def metrics_against(model, sp, hyps, texts, src_lines, ref_lines, dcfg, temperature, device, name):
    """The reference-based metrics of one search output; None where not defined (empty input or references)."""
    ref_ids = encode_lines(sp, ref_lines)
    if not any(ref_ids) or not any(h.tokens for h in hyps):
        log.warning("%s: no non-empty hypothesis/reference: BLEU, chrF and ECE are not defined", name)
        return {"bleu": None, "chrf": None, "forced": None, "inference": None}
    out = score(hyps, texts, ref_lines, ref_ids, dcfg, temperature)
    out["forced"] = forced_metrics(model, sp, src_lines, ref_lines, temperature, dcfg, device, name)
    return out


def format_metrics(m: dict) -> str:
    """A readable table of one evaluation."""
    sp = m["speed"]
    lines = [f"checkpoint  {m['checkpoint']}",
             f"data        {m['data']} ({m['sentences']} sentences), beam {m['beam']}, T = {m['temperature']:.4g}, "
             f"alpha = {m['alpha']}",
             f"speed       {sp['sentences_per_s']:.1f} sentences/s, {sp['tokens_per_s']:.0f} target tokens/s "
             f"({sp['device']}, {sp['threads']} threads, batch {m['decode']['batch_size']})"]
    if m.get("bleu") is not None:
        f, inf = m["forced"], m["inference"]
        lines += [f"BLEU        {m['bleu']:6.2f}   {m['bleu_signature']}",
                  f"chrF        {m['chrf']:6.2f}   {m['chrf_signature']}",
                  f"len ratio   {m['length_ratio']:6.3f}   hypothesis / reference"]
        if f is not None:
            lines += [f"NLL         {f.nll:6.3f}   ppl {f.ppl:.2f}, token accuracy {f.accuracy:.4f} "
                      f"(teacher-forced, {f.tokens} tokens)",
                      f"ECE         {f.ece:6.4f}   {f.signature}  (MCE {f.mce:.4f})",
                      f"ECE EOS     {f.ece_eos:6.4f}   {f.signature_eos}"]
        if inf is not None:
            lines.append(f"ECE infer.  {inf.ece:6.4f}   {inf.signature}  ({inf.tokens} emitted tokens, "
                         f"accuracy {inf.accuracy:.4f})")
    elif "bleu" in m:
        lines.append("metrics     not defined: no non-empty hypothesis or reference")
    return "\n".join(lines)


def token_records(sp, hyps, labels=None) -> list:
    """One dict per sentence for the per-token JSONL: the pieces (EOS as </s>), each piece's probability, the
    sentence's log-probability and score, and the inference-ECE labels used (when there were references)."""
    out = []
    for i, h in enumerate(hyps):
        rec = {"line": i + 1, "pieces": [sp.id_to_piece(t) for t in h.tokens], "ids": h.tokens,
               "token_probs": h.token_probs, "logprob": h.logprob, "score": h.score}
        if labels is not None:
            rec["correct"] = labels[i]
        out.append(rec)
    return out

