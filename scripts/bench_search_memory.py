"""Benchmark: does beam search's memory estimate hold? Peak memory of one batch's search against
`nmt.search.search_bytes_per_sentence` times the batch, at each beam size, each in a fresh process.

    python scripts/bench_search_memory.py --checkpoint RUN_DIR [--beams 4 8 16 32] [--batch-size 64]
        [--data-dir DIR] [--split test_2016_flickr] [--json OUT]

Each beam size runs in a process of its own: it loads the model, prepares its CPU copy (`for_cpu_search`),
encodes the split's `--batch-size` longest sources, searches one short source (the libraries' lazy set-up),
notes its resident memory, then searches that one batch
(`translate_many`, T = 1) and reads the process's peak resident memory (`ru_maxrss`). The growth is what the
search held at its peak beyond the loaded model and inputs; `nmt.search.check_search_size` lowers a batch so
that its estimate stays within half of the machine's memory, so the estimate must not be below the growth.
glibc's defaults are kept (no `setup_cpu`): a large freed block goes back to the system, so memory freed
before the search cannot hide the search's own. Exit 0: the estimate holds at every beam; 1: not.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_bytes() -> int:
    """This process's resident memory now (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one(args) -> dict:
    """The measurement of one beam size, in this process."""
    import torch

    from nmt.checkpoint import load_model, read_run_config
    from nmt.data import read_text_pairs
    from nmt.evaluate import encode_for_model
    from nmt.search import search_bytes_per_sentence, translate_many
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _, sp = load_model(args.checkpoint)
    model.eval()
    tcfg = read_run_config(args.checkpoint)[0]
    if args.data_dir:
        import dataclasses
        tcfg = dataclasses.replace(tcfg, data_dir=args.data_dir, train_src=None, train_tgt=None, valid_src=None,
                                   valid_tgt=None)
    sources, _ = read_text_pairs(tcfg, args.split)
    ids = encode_for_model(sp, sources, model.cfg.max_positions)
    longest = sorted(ids, key=len, reverse=True)[: args.batch_size]  # one batch: the longest sources
    fast = model.for_cpu_search()
    translate_many(fast, longest[-1:], [(args.one, 1.0)], batch_size=1, prepack=False)  # lazy set-up, not search
    before = rss_bytes()
    t0 = time.perf_counter()
    hyps = translate_many(fast, longest, [(args.one, 1.0)], batch_size=args.batch_size, prepack=False)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    estimate = search_bytes_per_sentence(model, args.one, model.cfg.max_positions) * len(longest)
    growth = max(peak - before, 0)
    return {"beam": args.one, "sentences": len(longest), "longest_source": len(longest[0]),
            "longest_hypothesis": max(len(h.ids) for h in hyps[args.one, 1.0]), "seconds": seconds,
            "peak_growth_bytes": growth, "estimate_bytes": estimate, "growth_over_estimate": growth / estimate,
            "holds": growth <= estimate}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run directory or checkpoint file")
    p.add_argument("--beams", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--data-dir", help="the Multi30k directory (default: the run's)")
    p.add_argument("--split", default="test_2016_flickr")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", type=Path)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure this beam in this process
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(args)))
        return 0
    rows = []
    for beam in args.beams:
        cmd = [sys.executable, __file__, "--checkpoint", args.checkpoint, "--batch-size", str(args.batch_size),
               "--split", args.split, "--threads", str(args.threads), "--one", str(beam)]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:  # the child's own error, its last line (e.g. "RUN: checkpoint not found")
            last = (res.stderr.strip().splitlines() or ["(no error output)"])[-1]
            print(f"bench_search_memory: beam {beam}: {last}", file=sys.stderr)
            return 2
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"{'beam':>4}  {'sentences':>9}  {'peak growth (MiB)':>17}  {'estimate (MiB)':>14}  {'growth / est.':>13}  "
          f"{'seconds':>7}")
    for r in rows:
        print(f"{r['beam']:>4}  {r['sentences']:>9}  {r['peak_growth_bytes'] / 2**20:>17.1f}  "
              f"{r['estimate_bytes'] / 2**20:>14.1f}  {r['growth_over_estimate']:>13.3f}  {r['seconds']:>7.1f}")
    ok = all(r["holds"] for r in rows)
    print("the estimate holds at every beam" if ok else "the estimate is BELOW the measured growth at some beam")
    if args.json:
        import torch
        command = "python scripts/bench_search_memory.py " + " ".join(argv or sys.argv[1:])
        args.json.write_text(json.dumps({"command": command, "torch": torch.__version__, "rows": rows}, indent=2)
                             + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
