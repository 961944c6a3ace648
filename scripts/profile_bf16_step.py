"""Why a bf16 training update is or is not faster than float32 on this CPU: the CPU preset's model, random
batches of about --tokens target tokens (no data, no loss other than cross-entropy), two measurements:

1. first use of a shape against later uses: 15 batch shapes (T = 12..40 target pieces, B = tokens // T), three
   passes over them, float32 and bf16 alternating step by step; pass 1 meets every shape for the first time;
2. the profile of two updates of one fixed shape (B = tokens // 30, T = 30) in each precision, by operator.

    python scripts/profile_bf16_step.py [--tokens 2400] [--threads 2] [--json out.json]
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from nmt.config import PRESETS, ModelConfig
from nmt.levers import trainer
from nmt.runtime import setup_cpu


def first_use(cfg, tokens: int) -> list:
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(4, cfg.vocab_size, (2, tokens // T, T + 1), generator=g) for T in range(12, 42, 2)]
    steps = {bf16: trainer(cfg, bf16) for bf16 in (False, True)}
    warm = torch.randint(4, cfg.vocab_size, (2, tokens // 41, 42), generator=g)  # a shape outside the list
    steps[False](warm), steps[True](warm)
    out = []
    for p in (1, 2, 3):
        secs = {False: [], True: []}
        for i, b in enumerate(batches):
            for bf16 in ((False, True) if i % 2 == 0 else (True, False)):
                t0 = time.perf_counter()
                steps[bf16](b)
                secs[bf16].append(time.perf_counter() - t0)
        out.append({"pass": p, "fp32_s": sum(secs[False]), "bf16_s": sum(secs[True]),
                    "fp32_median_step_s": statistics.median(secs[False]),
                    "bf16_median_step_s": statistics.median(secs[True])})
    return out


def profile(cfg, tokens: int) -> dict:
    g = torch.Generator().manual_seed(1)
    batch = torch.randint(4, cfg.vocab_size, (2, tokens // 30, 31), generator=g)
    out = {}
    for bf16 in (False, True):
        step = trainer(cfg, bf16)
        step(batch), step(batch)
        with torch.profiler.profile() as prof:
            step(batch), step(batch)
        out["bf16" if bf16 else "fp32"] = {e.key: e.self_cpu_time_total / 2e3 for e in prof.key_averages()}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=2400)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    setup_cpu(args.threads)
    cfg = ModelConfig(**{k: v for k, v in PRESETS["cpu"].items() if k in ModelConfig.__dataclass_fields__})
    passes = first_use(cfg, args.tokens)
    for r in passes:
        print(f"pass {r['pass']}: fp32 {r['fp32_s']:.2f} s, bf16 {r['bf16_s']:.2f} s: bf16 "
              f"{r['fp32_s'] / r['bf16_s']:.2f}x (median update {r['fp32_median_step_s']:.3f} / "
              f"{r['bf16_median_step_s']:.3f} s)")
    prof = profile(cfg, args.tokens)
    f, b = prof["fp32"], prof["bf16"]
    top = sorted(set(f) | set(b), key=lambda k: -max(f.get(k, 0), b.get(k, 0)))[:12]
    print(f"{'operator (self time per update)':48s} {'fp32 ms':>8s} {'bf16 ms':>8s}")
    for k in top:
        name = k.removeprefix("aten::")
        print(f"{name[:48]:48s} {f.get(k, 0):8.1f} {b.get(k, 0):8.1f}")
    print(f"{'all':48s} {sum(f.values()):8.1f} {sum(b.values()):8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"passes": passes, "profile": prof, "tokens": args.tokens,
                                               "threads": args.threads, "torch": torch.__version__}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
