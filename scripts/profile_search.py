"""Where a beam-search step spends its time on this CPU: `torch.profiler` over the library's search (the linear
maps `nmt.levers.search_kernels` chooses here) on the first --batches batches of test_2016_flickr, under the rules
of scripts/bench_decode.py (beam 4, batches of 64 sorted by length, exactly --length steps each), one untimed pass
first. Each operator's self CPU time and its share of all of them; the products (addmm, mm, bmm, matmul) summed.

    python scripts/profile_search.py --checkpoint RUN [--batches 6] [--threads 2] [--json out.json]
"""
import argparse
import json
import sys
from pathlib import Path

import torch

from nmt.checkpoint import load_model
from nmt.config import TrainConfig
from nmt.data import pad_ids, read_text_pairs
from nmt.levers import search_kernels
from nmt.runtime import setup_cpu
from nmt.search import beam_search
from nmt.tokenizer import encode_lines

PRODUCTS = ("aten::addmm", "aten::mm", "aten::bmm", "mkldnn::_linear_pointwise")


def op_times(model, batches: list, beam: int, length: int) -> dict:
    """{operator: self CPU milliseconds} over one search of every batch, after an untimed one."""
    def run():
        for src in batches:
            beam_search(model, src, beam=beam, max_len_a=0, max_len_b=length, min_len=length - 1)
    run()
    with torch.profiler.profile() as prof:
        run()
    return {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--length", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)
    setup_cpu(args.threads)
    model, _, sp = load_model(args.checkpoint)
    kernels = search_kernels(model).choice
    searcher = model.for_cpu_search() if kernels == "packed" else model
    src, _ = read_text_pairs(TrainConfig(data_dir=args.data_dir), "test_2016_flickr")
    ids = sorted((x for x in encode_lines(sp, src) if x), key=len)
    batches = [pad_ids(ids[i:i + args.batch_size]) for i in range(0, len(ids), args.batch_size)][:args.batches]
    ms = op_times(searcher, batches, args.beam, args.length)
    total = sum(ms.values())
    products = sum(v for k, v in ms.items() if k in PRODUCTS)
    print(f"{'operator (self CPU time)':40s} {'ms':>8s} {'share':>6s}")
    for k in sorted(ms, key=lambda k: -ms[k])[:15]:
        print(f"{k[:40]:40s} {ms[k]:8.1f} {ms[k] / total:6.1%}")
    print(f"{'the products (' + ', '.join(x.split('::')[1] for x in PRODUCTS) + ')':40s} {products:8.1f} "
          f"{products / total:6.1%}")
    print(f"{'all':40s} {total:8.1f}  ({sum(b.size(0) for b in batches)} sentences, kernels {kernels})")
    if args.json:
        Path(args.json).write_text(json.dumps({"ms": ms, "total_ms": total, "products_ms": products,
                                               "search_kernels": kernels, "torch": torch.__version__,
                                               "args": vars(args)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
