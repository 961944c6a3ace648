"""python -m nmt.decode: translate with greedy or beam search; BLEU, chrF and token-level ECE.

  python -m nmt.decode --checkpoint RUN_DIR --beam 4            # the corpus's test split, with metrics
  python -m nmt.decode --checkpoint RUN_DIR --input src.txt --references ref.txt
  echo "A dog runs." | python -m nmt.decode --checkpoint RUN_DIR --input -     # a filter: stdout = hypotheses
  python -m nmt.decode --beam 4                                   # no checkpoint: the study's comparison
                                                                  # (after scripts/train.sh; see nmt.study)

A run directory stands for its checkpoint_avg.pt, else checkpoint_best.pt. Hypotheses are written one
per line in input order, detokenized; with references, the metrics are printed as a table (each with
its signature) and written as JSON beside the hypotheses.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from nmt import checkpoint as ckpt_io
from nmt.calibration import fit_temperature, inference_calibration, teacher_forced
from nmt.config import DecodeConfig, TrainConfig, add_arguments, from_arguments
from nmt.data import DataError, collate, encode_texts, make_batches, read_text, read_text_pairs
from nmt.model import EOS
from nmt.runtime import pick_device, setup_cpu
from nmt.search import translate

log = logging.getLogger("nmt.decode")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m nmt.decode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", help="checkpoint file or run directory (repeat to compare "
                                                          "several); none: the models of scripts/train.sh")
    p.add_argument("--input", help="source text file, or - for stdin (default: the --split of the corpus)")
    p.add_argument("--references", help="reference file for --input (enables BLEU / ECE)")
    p.add_argument("--output", help="hypotheses file, or - for stdout (default: RUN/eval/SPLIT.beamK.T.txt)")
    p.add_argument("--spm", help="tokenizer to use instead of the run directory's spm.model")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--results", default="results", help="comparison mode: where tables and figures go")
    p.add_argument("--runs", default="runs", help="comparison mode: where scripts/train.sh put its runs")
    p.add_argument("--sweep", default="0.7:1.6:0.1", help="comparison mode: temperature grid, start:stop:step or "
                                                          "a,b,c; 'none' to skip (default: %(default)s)")
    add_arguments(p, DecodeConfig)
    return p.parse_args(argv)


# -- temperatures ------------------------------------------------------------------------------

def eval_batches(sp, src_lines, ref_lines, max_len, device, max_tokens=4096):
    """Teacher-forcing batches of the non-empty pairs of an evaluation set (for NLL / ECE / fitting)."""
    pairs = [(s, r) for s, r in zip(src_lines, ref_lines) if s.strip() and r.strip()]
    rows = encode_texts(sp, [s for s, _ in pairs], [r for _, r in pairs], max_len=max_len)
    src_len = [len(x) for x in rows["src_ids"]]
    tgt_len = [len(x) for x in rows["tgt_ids"]]
    for idx in make_batches(src_len, tgt_len, max(max_tokens, max(src_len + tgt_len)), seed=0):
        yield collate({k: [rows[k][i] for i in idx] for k in rows}, device)


def resolve_temperature(value: str, model, ckpt, sp, device) -> float:
    """A number, or 'auto': the temperature fitted on the validation set for this checkpoint, read from the
    run's temperature.json ({checkpoint name: fit}); fitted (and stored) when missing."""
    if value != "auto":
        try:
            t = float(value)
        except ValueError:
            raise DataError(f"--temperature must be a positive number or 'auto', not {value!r}") from None
        if not t > 0:
            raise DataError(f"--temperature must be positive, not {t}")
        return t
    path = Path(ckpt["path"])
    store = path.parent / "temperature.json"
    fits = json.loads(store.read_text()) if store.is_file() else {}
    if path.name not in fits:
        log.info("no fitted temperature for %s: fitting it on the validation set", path.name)
        tcfg = TrainConfig(**ckpt["train_config"])
        src, ref = read_text_pairs(tcfg, "val")
        fits[path.name] = fit_temperature(model, eval_batches(sp, src, ref, model.cfg.max_positions, device))
        ckpt_io.write_json_atomic(fits, store)
    return float(fits[path.name]["temperature"])


# -- one checkpoint ------------------------------------------------------------------------------

def source_and_references(args, dcfg: DecodeConfig, ckpt):
    """(source lines, reference lines or None, name of the data)."""
    if args.input:
        src = read_text(args.input)
        ref = read_text(args.references) if args.references else None
        if ref is not None and len(ref) != len(src):
            raise DataError(f"{args.references}: {len(ref)} lines, but {args.input} has {len(src)}")
        return src, ref, "stdin" if args.input == "-" else Path(args.input).name
    tcfg = TrainConfig(**ckpt["train_config"])
    src, ref = read_text_pairs(tcfg, dcfg.split)
    return src, ref, dcfg.split


def encode_sources(sp, lines, max_positions: int, name: str):
    """Ids with EOS; a line longer than the model's positions is truncated, with a warning naming it."""
    ids = []
    for i, x in enumerate(sp.encode(list(lines)), start=1):
        if len(x) + 1 > max_positions:
            log.warning("%s:%d: %d tokens, truncated to the model's %d positions", name, i, len(x) + 1, max_positions)
            x = x[:max_positions - 1]
        ids.append(x + [EOS] if x else [])
    return ids


def evaluate(model, ckpt, sp, src_lines, ref_lines, dcfg: DecodeConfig, temperature: float, device,
             name: str = "input", tf_cache: dict = None) -> dict:
    """Translate `src_lines`; with references, add BLEU / chrF / teacher-forced and inference calibration.

    Returns {"hypotheses": [str], "metrics": {...}}. `tf_cache` (a dict) lets callers that decode the same
    checkpoint several times (beam and greedy) reuse the teacher-forced figures."""
    import sacrebleu

    src_ids = encode_sources(sp, src_lines, model.cfg.max_positions, name)
    n_threads = torch.get_num_threads()
    bar = tqdm(total=len(src_ids), desc=f"beam {dcfg.beam}" if dcfg.beam > 1 else "greedy", unit="sent",
               file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)
    t0 = time.perf_counter()
    hyps = translate(model, src_ids, beam=dcfg.beam, batch_size=dcfg.batch_size, length_penalty=dcfg.length_penalty,
                     max_len_a=dcfg.max_len_a, max_len_b=dcfg.max_len_b, temperature=temperature,
                     max_positions=model.cfg.max_positions, min_len=dcfg.min_len, progress=bar)
    seconds = time.perf_counter() - t0
    bar.close()
    texts = [sp.decode(h.ids) for h in hyps]
    n_tok = sum(len(h.tokens) for h in hyps)
    m = {"checkpoint": ckpt["path"], "data": name, "sentences": len(src_lines), "beam": dcfg.beam,
         "temperature": temperature, "decode": dataclasses.asdict(dcfg), "alpha": ckpt["train_config"]["alpha"],
         "speed": {"seconds": seconds, "sentences_per_s": len(src_lines) / seconds, "tokens_per_s": n_tok / seconds,
                   "target_tokens": n_tok, "threads": n_threads, "device": str(device)}}
    if ref_lines is not None:
        bleu = sacrebleu.metrics.BLEU()
        chrf = sacrebleu.metrics.CHRF()
        b = bleu.corpus_score(texts, [ref_lines])
        c = chrf.corpus_score(texts, [ref_lines])
        m.update(bleu=b.score, bleu_signature=str(bleu.get_signature()), chrf=c.score,
                 chrf_signature=str(chrf.get_signature()), length_ratio=b.sys_len / max(b.ref_len, 1),
                 bleu_detail=str(b))
        cache = tf_cache if tf_cache is not None else {}
        key = (ckpt["path"], temperature, name)
        if key not in cache:
            cache[key] = teacher_forced(model, eval_batches(sp, src_lines, ref_lines, model.cfg.max_positions, device),
                                        temperature=temperature, n_bins=dcfg.n_bins)
        m["forced"] = cache[key]
        ref_ids = [x + [EOS] for x in sp.encode(list(ref_lines))]
        m["inference"] = inference_calibration([h.tokens for h in hyps], [h.token_probs for h in hyps], ref_ids,
                                               n_bins=dcfg.n_bins, temperature=temperature)
    return {"hypotheses": texts, "metrics": m}


def format_metrics(m: dict) -> str:
    """A readable table of one evaluation."""
    sp = m["speed"]
    lines = [f"checkpoint  {m['checkpoint']}",
             f"data        {m['data']} ({m['sentences']} sentences), beam {m['beam']}, T = {m['temperature']:.4g}, "
             f"alpha = {m['alpha']}",
             f"speed       {sp['sentences_per_s']:.1f} sentences/s, {sp['tokens_per_s']:.0f} target tokens/s "
             f"({sp['device']}, {sp['threads']} threads, batch {m['decode']['batch_size']})"]
    if "bleu" in m:
        f, inf = m["forced"], m["inference"]
        lines += [f"BLEU        {m['bleu']:6.2f}   {m['bleu_signature']}",
                  f"chrF        {m['chrf']:6.2f}   {m['chrf_signature']}",
                  f"len ratio   {m['length_ratio']:6.3f}   hypothesis / reference",
                  f"NLL         {f['nll']:6.3f}   ppl {f['ppl']:.2f}, token accuracy {f['accuracy']:.4f} "
                  f"(teacher-forced, {f['tokens']} tokens)",
                  f"ECE         {f['ece']:6.4f}   {f['signature']}  (MCE {f['mce']:.4f})",
                  f"ECE EOS     {f['ece_eos']:6.4f}   {f['signature_eos']}",
                  f"ECE infer.  {inf['ece']:6.4f}   {inf['signature']}  ({inf['tokens']} emitted tokens, "
                  f"accuracy {inf['accuracy']:.4f})"]
    return "\n".join(lines)


def default_output(ckpt, name: str, dcfg: DecodeConfig, temperature: float) -> Path:
    d = Path(ckpt["path"]).parent / "eval"
    return d / f"{name}.{Path(ckpt['path']).stem}.beam{dcfg.beam}.T{round(temperature, 4)}.txt"


def decode_one(args, dcfg: DecodeConfig, device) -> int:
    model, ckpt, sp = ckpt_io.load_model(args.checkpoint[0], device, spm_path=args.spm)
    temperature = resolve_temperature(dcfg.temperature, model, ckpt, sp, device)
    src, ref, name = source_and_references(args, dcfg, ckpt)
    res = evaluate(model, ckpt, sp, src, ref, dcfg, temperature, device, name=name)
    to_stdout = args.output == "-" or (args.output is None and args.input == "-")
    if to_stdout:
        sys.stdout.write("".join(h + "\n" for h in res["hypotheses"]))
        sys.stdout.flush()
        print(format_metrics(res["metrics"]), file=sys.stderr)
        return 0
    out = Path(args.output) if args.output else default_output(ckpt, name, dcfg, temperature)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(h + "\n" for h in res["hypotheses"]))
    out.with_suffix(".json").write_text(json.dumps(res["metrics"], indent=2) + "\n")
    print(format_metrics(res["metrics"]))
    print(f"hypotheses  {out}\nmetrics     {out.with_suffix('.json')}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    dcfg = from_arguments(DecodeConfig, args)
    try:
        if dcfg.beam < 1 or dcfg.batch_size < 1 or dcfg.n_bins < 1:
            raise DataError("--beam, --batch-size and --n-bins must be positive")
        setup_cpu(args.threads)
        device = pick_device(args.device)
        if args.checkpoint and len(args.checkpoint) == 1:
            return decode_one(args, dcfg, device)
        from nmt.study import compare
        return compare(args, dcfg, device)
    except (DataError, ckpt_io.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
