"""python -m nmt.study: run a study file, or rebuild a study's tables from its committed results.

  python -m nmt.study run studies/main.toml             # train what is missing, evaluate, write results/main/
  python -m nmt.study run studies/main.toml --dry-run   # what would be trained, and the minutes it would take
  python -m nmt.study run studies/main.toml --launcher slurm    # each training a SLURM job (submitit)
  python -m nmt.study run studies/main.toml --no-train  # evaluate the runs there are; refuse if any is missing
  python -m nmt.study run studies/pairs.toml --partial  # evaluate the runs trained so far; name the others
  python -m nmt.study run studies/distill.toml --partial --reuse results/distill   # and keep the committed
                                                        # evaluations of runs whose checkpoints are gone
  python -m nmt.study --from-results results/main       # comparison.md again, from comparison.json alone
  python -m nmt.study --from-results results/main --headline    # the README's table and the claims
  python -m nmt.study --from-results results/variants --figures /tmp/fig   # every figure again, from its files
  python -m nmt.study --from-results results/main --plan bleu_beam=0.5      # seeds a claim needs for an effect
  python -m nmt.study judge studies/pairs.toml          # the file's claims judged again on results/pairs' rows
  python -m nmt.study --checkpoint A --checkpoint B     # any models side by side, no claims

`run` reads and validates the whole file first (an unknown key, a missing field or a bad value: exit 2, nothing
trained), trains each missing run (`nmt.runs`: finished runs are skipped, interrupted ones resumed, one lock per
run), evaluates every run (`nmt.experiment`; an interrupted evaluation, run again, resumes after the last run it
finished: `nmt.evalcache`) and writes --results (default results/NAME): comparison.md/.json,
figures, hypotheses, each run's config/log/temperature, provenance. Runs live in --runs (default: the study's
`runs`, else runs/), best outside the checkout.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from nmt import cli, evalcache, levers
from nmt.adhoc import adhoc_study
from nmt.claims import seeds_plan
from nmt.errors import UsageError
from nmt.experiment import decode_config, evaluate_study, rebuild, redraw_figures, rejudge, write_results
from nmt.metrics import CLAIMABLE
from nmt.report import claims_markdown, jsonable, study_summary
from nmt.results import load_comparison
from nmt.runs import LAUNCHERS, check_corpora, check_matches, describe_plan, plan, train_missing
from nmt.runtime import pick_device, setup_cpu
from nmt.studyfile import load_study, with_test_sets


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m nmt.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", choices=["run", "judge"],
                   help="run FILE: train what is missing, evaluate, report; judge FILE: the file's claims judged "
                        "again on the rows its results directory holds (nothing evaluated)")
    p.add_argument("file", nargs="?", help="the study file (studies/NAME.toml)")
    p.add_argument("--runs", help="where the runs are kept (default: the study's `runs`, else runs)")
    p.add_argument("--results", help="where tables and figures go (default: results/NAME)")
    p.add_argument("--launcher", choices=LAUNCHERS, default="local", help="local (one run after another), slurm "
                                                                          "(submitit), submitit-local (submitit's "
                                                                          "local executor)")
    p.add_argument("--dry-run", action="store_true", help="list what would be trained, with estimated minutes")
    p.add_argument("--no-train", action="store_true", help="evaluate only; a missing run is an error")
    p.add_argument("--train-only", action="store_true", help="train what is missing and stop: no test set is read "
                                                             "(for settings chosen on validation first)")
    p.add_argument("--partial", action="store_true", help="evaluate only the runs trained so far (nothing is "
                                                          "trained); the results name the missing ones")
    p.add_argument("--reuse", metavar="DIR", help="with --partial or --no-train: a run not trained here (its "
                   "checkpoint gone) keeps the evaluation DIR's committed results hold for it (same settings and "
                   "model, checked); the provenance lists them")
    p.add_argument("--beam", type=int, help="override the study's beam size")
    p.add_argument("--test-sets", help='override the study\'s test sets: "all" (every {split}.{src,tgt}.gz pair '
                                       'of the data directory beyond train and val) or a comma-separated list')
    p.add_argument("--checkpoint", action="append", help="without a study file: a model to compare (repeat)")
    p.add_argument("--from-results", metavar="DIR", help="print comparison.md rebuilt from DIR/comparison.json")
    p.add_argument("--headline", action="store_true", help="with --from-results: the README's table and claims")
    p.add_argument("--figures", metavar="OUT", help="with --from-results: redraw every figure into OUT (the sweeps "
                                                    "from comparison.json, the diagrams from reliability.json)")
    p.add_argument("--plan", action="append", metavar="METRIC=EFFECT",
                   help="with --from-results: the seeds each ordering claim on METRIC would need to detect EFFECT "
                        "with 80%% power, from its observed spread (repeat for several metrics)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    cli.add_search_kernels(p)
    return p.parse_args(argv)


def run_file(args, argv) -> int:
    study = with_test_sets(load_study(args.file), args.test_sets)
    if args.beam is not None:
        if args.beam < 1:
            raise UsageError(f"--beam {args.beam}: expected a whole number >= 1")
        study = dataclasses.replace(study, evaluate=dataclasses.replace(study.evaluate, beam=args.beam))
    runs_root = Path(args.runs or study.runs)
    planned = plan(study, runs_root)
    if args.dry_run:
        print(f"study {study.name} ({args.file}): runs in {runs_root}/\n{describe_plan(planned)}")
        return 0
    if args.train_only and (args.no_train or args.partial):
        raise UsageError("--train-only: not with --no-train or --partial (they evaluate without training)")
    reused = reusable(study, planned, args)
    missing = [r for r in planned if r.status != "done" and (r.model, r.seed) not in reused]
    if args.partial:
        done = [r for r in planned if r.status == "done" or (r.model, r.seed) in reused]
        if not done:
            raise UsageError(f"--partial: none of the {len(planned)} runs of {args.file} is trained yet")
        return evaluate_and_write(study, done, args, argv, missing, reused)
    if missing and args.no_train:
        raise UsageError(f"--no-train: {len(missing)} runs are not trained, e.g. {missing[0].dir} (drop --no-train "
                         f"to train them)")
    if args.no_train:
        return evaluate_and_write(study, planned, args, argv, (), reused)
    if missing:
        check_corpora(study)  # before any training starts: a corpus that is not there is the study file's error
    train_missing(study, planned, runs_root, args.launcher, dict(study.slurm))
    if args.train_only:
        print(f"study {study.name}: trained; nothing evaluated (--train-only)\n{describe_plan(plan(study, runs_root))}")
        return 0
    return evaluate_and_write(study, plan(study, runs_root), args, argv)


def reusable(study, planned, args) -> dict:
    """--reuse DIR: {(model, seed): committed evaluation} of the runs not trained here that DIR holds."""
    if not args.reuse:
        return {}
    if not (args.partial or args.no_train):
        raise UsageError("--reuse: only with --partial or --no-train (it stands in for runs that are not trained "
                         "here)")
    if not (Path(args.reuse) / "comparison.json").is_file():
        raise UsageError(f"--reuse {args.reuse}: no comparison.json there (expected a study's results directory)")
    todo = [r for r in planned if r.status != "done"]
    reused = evalcache.from_results(args.reuse, study, decode_config(study), todo)
    for r in todo:
        if (r.model, r.seed) in reused:
            check_matches(study, study.model(r.model), r.seed, reused[r.model, r.seed].config_dir)
    return reused


def evaluate_and_write(study, planned, args, argv, missing=(), reused=None) -> int:
    setup_cpu(args.threads)
    levers.set_given("search_kernels", args.search_kernels)
    device = pick_device(args.device)
    out = Path(args.results or Path("results") / study.name)
    cache = out / evalcache.CACHE_DIR  # an interrupted evaluation resumes from here (nmt.evalcache)
    result = evaluate_study(study, planned, device, argv, missing, cache_dir=cache, reused=reused)
    saved = write_results(result, out)
    evalcache.clear(cache)
    print(study_summary(saved, out))
    return 0


def plan_claims(results_dir, specs: list) -> list:
    """--plan METRIC=EFFECT ...: the seeds each ordering claim needs (nmt.claims.seeds_plan)."""
    effects = {}
    for spec in specs:
        metric, _, value = spec.partition("=")
        try:
            effect = float(value)
        except ValueError:
            effect = float("nan")
        if metric not in CLAIMABLE or not (effect > 0 and effect < float("inf")):
            raise UsageError(f"--plan {spec}: expected METRIC=EFFECT, METRIC one of {', '.join(CLAIMABLE)} and "
                             f"EFFECT a positive number")
        effects[metric] = effect
    return seeds_plan(jsonable(load_comparison(results_dir).claims), effects)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)

    def body():
        args = parse_args(argv)
        if args.figures and not args.from_results:
            raise UsageError("--figures: only with --from-results DIR (the figures are redrawn from its files)")
        if args.from_results and args.figures:
            written = redraw_figures(args.from_results, args.figures)
            print("\n".join(map(str, written)) if written else f"{args.from_results}: no figure to draw")
            return 0
        if args.from_results and args.plan:
            print("\n".join(plan_claims(args.from_results, args.plan)) or "no ordering claim on those metrics")
            return 0
        if args.plan:
            raise UsageError("--plan: only with --from-results DIR (the spread comes from its claims)")
        if args.from_results:
            sys.stdout.write(rebuild(args.from_results, args.headline))
            return 0
        if args.command == "judge":
            if not args.file:
                raise UsageError("judge: expected a study file, e.g. python -m nmt.study judge studies/main.toml")
            study = load_study(args.file)
            saved = rejudge(study, args.results or Path("results") / study.name, argv)
            sys.stdout.write(claims_markdown(saved.claims))
            return 0
        if args.command == "run":
            if not args.file:
                raise UsageError("run: expected a study file, e.g. python -m nmt.study run studies/main.toml")
            return run_file(args, argv)
        if args.checkpoint:
            study, planned = adhoc_study(args.checkpoint, args.beam)
            study = with_test_sets(study, args.test_sets)
            return evaluate_and_write(study, planned, args, argv)
        raise UsageError("expected `run FILE`, --from-results DIR or --checkpoint (see --help)")
    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
