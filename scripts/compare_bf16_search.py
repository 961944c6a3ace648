"""How far a bf16 search (`python -m nmt.decode --dtype bfloat16`) lands from float32's: per model, the
hypotheses that are identical, BLEU, chrF and inference ECE (TER labels) of each, and the seconds of each
search (beam 4, test_2016_flickr, T = 1, torch's own linear maps for both), the two alternating.

    python scripts/compare_bf16_search.py RUN [RUN ...] [--json out.json]
"""
import argparse
import json
import sys
import time
from pathlib import Path

from nmt import levers
from nmt.checkpoint import load_model
from nmt.config import DecodeConfig, TrainConfig
from nmt.data import read_text_pairs
from nmt.evaluate import decode_hypotheses, encode_for_model, score
from nmt.runtime import setup_cpu
from nmt.tokenizer import encode_lines


def compare(run: str, src, ref) -> dict:
    model, ckpt, sp = load_model(run)
    src_ids = encode_for_model(sp, src, model.cfg.max_positions, "test_2016_flickr")
    ref_ids = encode_lines(sp, ref)
    out = {"run": run}
    for dtype in ("float32", "bfloat16"):
        dcfg = DecodeConfig(dtype=dtype)
        t0 = time.perf_counter()
        hyps = decode_hypotheses(model, sp, src_ids, dcfg, 1.0)
        seconds = time.perf_counter() - t0
        texts = [sp.decode(h.ids) for h in hyps]
        s = score(hyps, texts, ref, ref_ids, dcfg, 1.0)
        out[dtype] = {"seconds": seconds, "bleu": s["bleu"], "chrf": s["chrf"], "ece_inference": s["inference"].ece,
                      "bleu_signature": s["bleu_signature"], "texts": texts}
    a, b = out["float32"].pop("texts"), out["bfloat16"].pop("texts")
    out["identical"] = sum(x == y for x, y in zip(a, b))
    out["sentences"] = len(a)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    setup_cpu(args.threads)
    levers.set_given("search_kernels", "plain")  # the two searches differ in precision only
    src, ref = read_text_pairs(TrainConfig(data_dir=args.data_dir), "test_2016_flickr")
    rows = [compare(r, src, ref) for r in args.runs]
    print(f"{'run':40s} {'identical':>10s} {'BLEU fp32':>9s} {'bf16':>6s} {'chrF fp32':>9s} {'bf16':>6s} "
          f"{'ECE inf fp32':>12s} {'bf16':>7s} {'s fp32':>7s} {'bf16':>6s}")
    for r in rows:
        f, b = r["float32"], r["bfloat16"]
        print(f"{r['run'][-40:]:40s} {r['identical']:5d}/{r['sentences']:<4d} {f['bleu']:9.2f} {b['bleu']:6.2f} "
              f"{f['chrf']:9.2f} {b['chrf']:6.2f} {f['ece_inference']:12.4f} {b['ece_inference']:7.4f} "
              f"{f['seconds']:7.1f} {b['seconds']:6.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
