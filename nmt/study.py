"""python -m nmt.study: the comparison of label smoothing and temperature scaling (nmt.comparison).

  python -m nmt.study                                # the models of scripts/train.sh (runs/study.json)
  python -m nmt.study --runs runs --results results --sweep 0.7:1.6:0.1 --beam 4
  python -m nmt.study --checkpoint A --checkpoint B  # any models
  python -m nmt.study --from-results results         # comparison.md again, from comparison.json alone
  python -m nmt.study --from-results results --headline   # the README's table and the paper's claims

Writes to --results: comparison.md/.json (every number with its interval, signature and provenance),
temperature_sweep.csv/.png, reliability*.png, hyps/, runs/ (each run's config, log and temperature).
`python -m nmt.decode --beam 4` with no checkpoint runs the same study.
"""
from __future__ import annotations

import argparse
import logging
import sys

from nmt import checkpoint as ckpt_io
from nmt.comparison import lookup_run, parse_grid, read_manifest, rebuild, run_study, write_manifest
from nmt.config import DecodeConfig, UsageError, add_arguments, from_arguments
from nmt.data import DataError
from nmt.report import study_summary
from nmt.runtime import pick_device, setup_cpu


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m nmt.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", help="a model to compare (repeat); default: --runs")
    p.add_argument("--runs", default="runs", help="where scripts/train.sh wrote study.json (default: %(default)s)")
    p.add_argument("--results", default="results", help="where tables and figures go (default: %(default)s)")
    p.add_argument("--sweep", default="0.7:1.6:0.1", help="temperature grid, start:stop:step or a,b,c; 'none' to "
                                                          "skip (default: %(default)s)")
    p.add_argument("--from-results", metavar="DIR", help="print comparison.md rebuilt from DIR/comparison.json "
                                                         "and nothing else")
    p.add_argument("--headline", action="store_true", help="with --from-results: the README's table and the "
                                                           "paper's claims instead of comparison.md")
    p.add_argument("--record", nargs="+", metavar="RUN_DIR", help="write RUNS/study.json listing these trained "
                                                                 "runs (what scripts/train.sh does) and nothing else")
    p.add_argument("--lookup", nargs=2, type=float, metavar=("ALPHA", "SEED"), help="print the run directory of "
                                                                                   "RUNS/study.json with this alpha "
                                                                                   "and seed, and nothing else")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    add_arguments(p, DecodeConfig, skip=("temperature",))
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        args = parse_args(argv)
        if args.from_results:
            sys.stdout.write(rebuild(args.from_results, args.headline))
            return 0
        if args.lookup:
            print(lookup_run(args.runs, args.lookup[0], int(args.lookup[1])))
            return 0
        if args.record:
            print(f"study manifest: {write_manifest(args.runs, args.record)}")
            return 0
        dcfg = from_arguments(DecodeConfig, args)
        setup_cpu(args.threads)
        device = pick_device(args.device)
        paths = args.checkpoint or read_manifest(args.runs)
        data = run_study(paths, dcfg, parse_grid(args.sweep), args.results, device, argv=argv)
        print(study_summary(data, args.results))
        return 0
    except (DataError, ckpt_io.CheckpointError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
