"""How far a bf16 search (`python -m nmt.decode --dtype bfloat16`) lands from float32's: per model, the
hypotheses that are identical, BLEU, chrF and inference ECE (TER labels) of each, and the seconds of each
search (beam 4, test_2016_flickr, T = 1, torch's own linear maps for both), the two alternating.

    python scripts/compare_bf16_search.py RUN [RUN ...] [--json out.json]
    python scripts/compare_bf16_search.py RUN [RUN ...] --against one-thread [--json out.json]

`--against one-thread` compares instead the float32 search on --threads threads with the same search on one
thread: what each process computes when batches are searched in forked processes, one thread each (the
arrangement `scripts/bench_decode.py --systems nmt-processes` times). Beside identical texts it counts the
hypotheses whose every token probability and score are bit-identical, and the largest difference of a token
probability among hypotheses with the same pieces.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

from nmt import levers
from nmt.checkpoint import load_model
from nmt.config import DecodeConfig, TrainConfig
from nmt.data import read_text_pairs
from nmt.evaluate import decode_hypotheses, encode_for_model, score
from nmt.runtime import setup_cpu
from nmt.tokenizer import encode_lines


def compare(run: str, src, ref, against: str, threads: int) -> dict:
    model, ckpt, sp = load_model(run)
    src_ids = encode_for_model(sp, src, model.cfg.max_positions, "test_2016_flickr")
    ref_ids = encode_lines(sp, ref)
    out, hyps = {"run": run}, {}
    for name in ("float32", against):
        dcfg = DecodeConfig(dtype="bfloat16" if name == "bfloat16" else "float32")
        torch.set_num_threads(1 if name == "one-thread" else threads)
        t0 = time.perf_counter()
        hyps[name] = decode_hypotheses(model, sp, src_ids, dcfg, 1.0)
        seconds = time.perf_counter() - t0
        texts = [sp.decode(h.ids) for h in hyps[name]]
        s = score(hyps[name], texts, ref, ref_ids, dcfg, 1.0)
        out[name] = {"seconds": seconds, "bleu": s["bleu"], "chrf": s["chrf"], "ece_inference": s["inference"].ece,
                     "bleu_signature": s["bleu_signature"], "texts": texts}
    torch.set_num_threads(threads)
    a, b = out["float32"].pop("texts"), out[against].pop("texts")
    out["identical"] = sum(x == y for x, y in zip(a, b))
    out["sentences"] = len(a)
    if against == "one-thread":
        pairs = [(x, y) for x, y in zip(hyps["float32"], hyps[against]) if x.tokens == y.tokens]
        out["bit_identical"] = sum(x.token_probs == y.token_probs and x.score == y.score for x, y in pairs)
        out["max_prob_difference"] = max((abs(p - q) for x, y in pairs for p, q in zip(x.token_probs, y.token_probs)),
                                         default=0.0)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--against", choices=("bfloat16", "one-thread"), default="bfloat16")
    p.add_argument("--json")
    args = p.parse_args()
    setup_cpu(args.threads)
    levers.set_given("search_kernels", "plain")  # the two searches differ in precision or threads only
    src, ref = read_text_pairs(TrainConfig(data_dir=args.data_dir), "test_2016_flickr")
    rows = [compare(r, src, ref, args.against, args.threads) for r in args.runs]
    o = "bf16" if args.against == "bfloat16" else "1 thr"
    print(f"{'run':40s} {'identical':>10s} {'BLEU fp32':>9s} {o:>6s} {'chrF fp32':>9s} {o:>6s} "
          f"{'ECE inf fp32':>12s} {o:>7s} {'s fp32':>7s} {o:>6s}")
    for r in rows:
        f, b = r["float32"], r[args.against]
        print(f"{r['run'][-40:]:40s} {r['identical']:5d}/{r['sentences']:<4d} {f['bleu']:9.2f} {b['bleu']:6.2f} "
              f"{f['chrf']:9.2f} {b['chrf']:6.2f} {f['ece_inference']:12.4f} {b['ece_inference']:7.4f} "
              f"{f['seconds']:7.1f} {b['seconds']:6.1f}" + (f"  bit-identical {r['bit_identical']}, largest "
                                                        f"probability difference {r['max_prob_difference']:.2e}"
                                                        if "bit_identical" in r else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
