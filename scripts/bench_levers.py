"""Benchmark: the speed levers' calibration at first use (`nmt.levers`): for a preset's model shape, what
`--search-kernels auto` and `--amp auto` choose on this machine, the times they measured, and what the
calibration cost, in a fresh cache directory (so nothing is read back).

    python scripts/bench_levers.py [--preset cpu] [--threads 2] [--json out.json]
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from nmt import levers
from nmt.config import PRESETS, ModelConfig
from nmt.model import Transformer
from nmt.runtime import cpu_bf16_flags, setup_cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    setup_cpu(args.threads)
    fields = set(ModelConfig.__dataclass_fields__)
    cfg = ModelConfig(**{k: v for k, v in PRESETS[args.preset].items() if k in fields})
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    out = {"preset": args.preset, "threads": args.threads, "machine": levers.machine(), "bf16_flags": cpu_bf16_flags()}
    with tempfile.TemporaryDirectory() as d:
        os.environ["NMT_CACHE_DIR"] = d
        for name, decide in (("search_kernels", lambda: levers.search_kernels(model)),
                             ("amp", lambda: levers.training_amp(cfg, "auto"))):
            t0 = time.perf_counter()
            c = decide()
            out[name] = {**c.to_json(), "calibration_s": time.perf_counter() - t0}
            secs = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in c.seconds.items())
            print(f"{name:15s} chose {c.choice:6s} (best of {levers.ROUNDS}: {secs}; default / choice "
                  f"{c.speedup:.3f}) in {out[name]['calibration_s']:.2f} s", file=sys.stderr)
    print(f"({out['machine']['cpu']}, bf16 flags {out['bf16_flags'] or 'none'}, torch {torch.__version__}, "
          f"{args.threads} threads, the {args.preset} preset's shape)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
