"""Benchmark: MBR's chrF utility matrix, the fast path (`nmt.mbr.chrf_matrix`: each candidate's n-grams counted
once, every pair scored in numpy) against the plain one (sacrebleu's sentence_score for every ordered pair).

Candidates are real sentences: the references of a test set, taken in consecutive groups of --samples (the
N x (N - 1) pairs MBR scores for one source sentence). Both paths alternate group by group, so that machine
noise hits both; the matrices must be equal. Prints the time per group and what 1,000 source sentences cost.

    python scripts/bench_mbr.py [--samples 32] [--groups 30] [--data-dir DIR] [--split test_2016_flickr]
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nmt.data import find_data_dir, read_text  # noqa: E402
from nmt.mbr import utility_matrix  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=32, help="candidates per source sentence (N)")
    p.add_argument("--groups", type=int, default=30, help="groups of N sentences timed")
    p.add_argument("--data-dir", help="a Multi30k-layout directory (default: data/multi30k or ../shared)")
    p.add_argument("--split", default="test_2016_flickr")
    p.add_argument("--lang", default="de")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    lines = read_text(find_data_dir(args.data_dir) / f"{args.split}.{args.lang}.gz")
    groups = [lines[i:i + args.samples] for i in range(0, args.samples * args.groups, args.samples)]
    if len(groups[-1]) < args.samples:
        print(f"error: --groups {args.groups} x --samples {args.samples} needs more than the {len(lines)} lines of "
              f"{args.split}.{args.lang}", file=sys.stderr)
        return 2
    utility_matrix(groups[0]), utility_matrix(groups[0], plain=True)  # imports and first-call costs
    fast, plain = [], []
    for g in groups:
        t0 = time.perf_counter()
        a = utility_matrix(g)
        t1 = time.perf_counter()
        b = utility_matrix(g, plain=True)
        t2 = time.perf_counter()
        if a != b:
            print("error: the fast and the plain chrF matrices differ", file=sys.stderr)
            return 1
        fast.append(t1 - t0)
        plain.append(t2 - t1)
    out = {"samples": args.samples, "groups": args.groups, "fast_ms": 1000 * statistics.median(fast),
           "plain_ms": 1000 * statistics.median(plain)}
    out["speedup"] = out["plain_ms"] / out["fast_ms"]
    print(f"chrF utility matrix, {args.samples} candidates ({args.samples * (args.samples - 1)} pairs), median of "
          f"{args.groups} groups: fast {out['fast_ms']:.1f} ms, plain {out['plain_ms']:.1f} ms "
          f"({out['speedup']:.1f}x); "
          f"1,000 sentences: {out['fast_ms']:.0f} s against {out['plain_ms']:.0f} s; matrices equal")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
