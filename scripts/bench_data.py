"""How corpus preparation scales: time per stage and peak memory for N-pair corpora.

    python scripts/bench_data.py                       # N = 30k, 300k, 1M (Multi30k train repeated)
    python scripts/bench_data.py --sizes 30000,300000 --out results/bench/data.json

Each N runs in a fresh process: write the N-pair corpus as plain text (not timed), then the stages of
`python -m nmt.train`'s preparation, each timed: reading into Arrow (`load_pairs`), SentencePiece training
(`train_tokenizer`, its 2M-sentence sampling cap as in training), encoding and filtering (`encode_pairs`),
the length columns (`lengths`) and the token-budget batches (`make_batches`). Peak memory is the process's
maximum resident set (and that of the encoding workers, for large corpora). The goal: time grows no faster
than N, and 1M pairs take at most 2.5 minutes on two cores.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_corpus(n: int, src: Path, tgt: Path, data_dir) -> None:
    """N pairs: Multi30k's training pairs repeated (and cut) to N, one sentence a line."""
    sys.path.insert(0, str(ROOT))
    from nmt.config import TrainConfig
    from nmt.data import iter_lines, split_files
    s_path, t_path = split_files(TrainConfig(data_dir=data_dir), "train")
    pairs = [(s, t) for (_, s), (_, t) in zip(iter_lines(s_path), iter_lines(t_path))]
    with open(src, "w") as fs, open(tgt, "w") as ft:
        for i in range(n):
            s, t = pairs[i % len(pairs)]
            fs.write(s + "\n")
            ft.write(t + "\n")


def one_size(n: int, data_dir) -> dict:
    """The stages for one N, in this process (called in a child)."""
    sys.path.insert(0, str(ROOT))
    from nmt.config import TrainConfig
    from nmt.data import encode_pairs, lengths, load_pairs, make_batches
    from nmt.runtime import setup_cpu
    from nmt.tokenizer import train_tokenizer
    setup_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src, tgt = tmp / "train.en", tmp / "train.de"
        write_corpus(n, src, tgt, data_dir)
        cfg = TrainConfig(train_src=str(src), train_tgt=str(tgt), valid_src=str(src), valid_tgt=str(tgt))
        times = {}
        t = time.perf_counter()
        ds = load_pairs(cfg, "train", cache_dir=str(tmp / "cache"))
        times["read into Arrow"] = time.perf_counter() - t
        t = time.perf_counter()
        train_tokenizer(ds, 8000, tmp / "spm.model", seed=1)
        times["SentencePiece training"] = time.perf_counter() - t
        t = time.perf_counter()
        enc, _ = encode_pairs(ds, tmp / "spm.model", max_len=128)
        times["encode + filter"] = time.perf_counter() - t
        t = time.perf_counter()
        src_len, tgt_len = lengths(enc)
        times["lengths"] = time.perf_counter() - t
        t = time.perf_counter()
        batches = make_batches(src_len, tgt_len, 2500, seed=1)
        times["batches"] = time.perf_counter() - t
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kb_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"pairs": n, "seconds": times, "total_seconds": sum(times.values()), "batches": len(batches),
            "peak_rss_mb": kb / 1024, "peak_rss_workers_mb": kb_children / 1024}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="30000,300000,1015000", help="comma-separated N (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="Multi30k directory (default: as nmt.train finds it)")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(one_size(args.child, args.data_dir)))
        return 0
    try:
        sizes = [int(x) for x in args.sizes.split(",")]
    except ValueError:
        print(f"error: --sizes {args.sizes!r}: expected comma-separated whole numbers", file=sys.stderr)
        return 2
    rows = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--child", str(n)] + (["--data-dir", args.data_dir] if args.data_dir else [])
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    stages = list(rows[0]["seconds"])
    print("| pairs | " + " | ".join(stages) + " | total (s) | s per 100k pairs | peak RSS (MB) | workers (MB) |")
    print("|" + "---|" * (len(stages) + 5))
    for r in rows:
        print(f"| {r['pairs']:,} | " + " | ".join(f"{r['seconds'][s]:.2f}" for s in stages)
              + f" | {r['total_seconds']:.1f} | {100_000 * r['total_seconds'] / r['pairs']:.2f} | "
                f"{r['peak_rss_mb']:.0f} | {r['peak_rss_workers_mb']:.0f} |")
    if args.out:
        import torch
        out = {"command": "python scripts/bench_data.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "rows": rows}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
