"""Benchmark: each loss of the smoothing family against F.cross_entropy(label_smoothing=alpha, ignore_index=pad).

Forward + backward from the same logits (log-softmax included on our side), each variant alternating with
cross_entropy so that machine noise hits both; median of the repeats. Variants: uniform (today's), unigram and
masked priors, the confidence penalty (beta 0.1). Goal: each within 10% of cross_entropy.

    python scripts/bench_loss.py [--rows 1024 4096] [--vocab 8000] [--repeats 30] [--json out.json]
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from nmt.loss import confidence_penalty_loss, label_smoothed_nll_loss, smoothing_prior
from nmt.runtime import setup_cpu


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1024, 4096], help="target tokens (N)")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args()
    setup_cpu(args.threads)
    results = []
    for n in args.rows:
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(n, args.vocab, generator=g, requires_grad=True)
        target = torch.randint(1, args.vocab, (n,), generator=g)
        target[: n // 20] = 0  # some padding positions
        counts = torch.randint(0, 50, (args.vocab,), generator=g).double()  # a target side using most pieces
        counts[torch.randperm(args.vocab, generator=g)[: args.vocab // 3]] = 0.0  # a third never used
        variants = {"uniform": {}, "unigram": {"prior": smoothing_prior("unigram", counts, 0).float()},
                    "masked": {"prior": smoothing_prior("masked", counts, 0).float()},
                    "confidence penalty": {"confidence_penalty": 0.1}}

        def ce():
            loss = F.cross_entropy(logits, target, label_smoothing=args.alpha, ignore_index=0, reduction="sum")
            loss.backward()
            logits.grad = None

        for name, kw in variants.items():
            alpha = 0.0 if "confidence_penalty" in kw else args.alpha

            def ours():
                if "confidence_penalty" in kw:  # from the logits, as nmt.objective calls it
                    loss, _ = confidence_penalty_loss(logits, target, kw["confidence_penalty"], 0)
                else:
                    loss, _ = label_smoothed_nll_loss(F.log_softmax(logits, -1), target, alpha, 0, **kw)
                loss.backward()
                logits.grad = None

            times = {"ours": [], "cross_entropy": []}
            for _ in range(3):
                ours(), ce()  # warm-up
            for _ in range(args.repeats):
                for key, fn in (("ours", ours), ("cross_entropy", ce)):
                    t0 = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            results.append({"variant": name, "rows": n, "vocab": args.vocab, "ours_ms": med["ours"],
                            "cross_entropy_ms": med["cross_entropy"], "ratio": med["ours"] / med["cross_entropy"]})
    print(f"{'variant':>18}  {'N x V':>14}  {'ours (ms)':>10}  {'F.cross_entropy (ms)':>20}  {'ours / F.ce':>11}")
    for r in results:
        print(f"{r['variant']:>18}  {r['rows']:>6} x {r['vocab']:<6}  {r['ours_ms']:>10.1f}  "
              f"{r['cross_entropy_ms']:>20.1f}  {r['ratio']:>11.3f}")
    print(f"(forward + backward, median of {args.repeats}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
