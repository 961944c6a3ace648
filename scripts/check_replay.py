"""Does today's code train a finished run as it was trained? A replay of its first updates, compared exactly.

    python scripts/check_replay.py RUN_DIR [--steps N] [--work DIR] [--json OUT]

Trains RUN_DIR's saved config again (same corpus, its own tokenizer reused, same seed and precision) for the
first N updates (default: one epoch) in a fresh directory under --work, and compares, as floats and exactly,
every training line of the two log.jsonl files up to update N (loss, NLL, learning rate) and, when N is a whole
epoch, the validation after it (loss, NLL, accuracy, ECE). A study may reuse a run trained by older code only
when this says identical (the variants study reuses the main study's hard and uniform runs).

With the linear schedule N must lie within the warm-up: after it the learning rate depends on the run's full
length, which a shorter replay does not have. Exit 0: identical; 1: a difference (printed); 2: bad input.
"""
import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from nmt.checkpoint import read_run_config  # noqa: E402
from nmt.errors import (
    DataError,  # noqa: E402
    UsageError,  # noqa: E402
)

TRAIN_KEYS = ("loss", "nll", "lr")
VALID_KEYS = ("loss", "nll", "accuracy", "ece")


def log_events(run_dir: Path) -> list:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        raise UsageError(f"{path}: missing (expected a run directory with its log)")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise UsageError(f"{path}:{i}: not a JSON line") from None
    return out


def replay_config(run_dir: Path, steps: int, work: Path):
    """The run's (TrainConfig, ModelConfig) for a replay of `steps` updates into `work`; a UsageError when the
    replay could not reproduce those updates."""
    tcfg, mcfg, saved = read_run_config(run_dir)
    amp = tcfg.amp
    if "precision" in saved:
        amp = saved["precision"].get("amp", amp)  # what the run chose, not what "auto" would choose here
    elif amp == "auto":
        amp = "none"  # nmt 0.2's auto was float32 on the CPU
    if tcfg.lr_schedule == "linear" and steps > tcfg.warmup_steps:
        raise UsageError(f"--steps {steps}: the run's linear schedule depends on its full length after the warm-up; "
                         f"expected at most {tcfg.warmup_steps}")
    if tcfg.teacher:
        raise UsageError(f"{run_dir}: a distilled student; replay its teacher instead")
    tcfg = dataclasses.replace(tcfg, run_dir=str(work), max_steps=steps, tokenizer=str(run_dir), amp=amp,
                               fit_temperature=False, average_last=0, patience=0, save_every_steps=0)
    return tcfg, mcfg


def first_epoch_steps(events) -> int:
    valid = [e for e in events if e.get("event") == "valid" and e.get("epoch") == 1]
    if not valid:
        raise UsageError("the run logged no validation after epoch 1: pass --steps")
    return int(valid[0]["step"])


def compare(old: list, new: list, steps: int) -> tuple:
    """(differences as lines, lines compared): every training line up to `steps`, and the validation at
    `steps` where the run has one (when `steps` ends an epoch)."""
    def pick(events, kind):
        return {e["step"]: e for e in events if e.get("event") == kind and e.get("step", 0) <= steps}
    a_valid = {s: e for s, e in pick(old, "valid").items() if s == steps}
    b_valid = {s: e for s, e in pick(new, "valid").items() if s in a_valid}
    diffs, compared = [], 0
    for kind, keys, a, b in (("train", TRAIN_KEYS, pick(old, "train"), pick(new, "train")),
                             ("valid", VALID_KEYS, a_valid, b_valid)):
        for step in sorted(set(a) | set(b)):
            if step not in a or step not in b:
                diffs.append(f"{kind} at update {step}: only in the {'run' if step in a else 'replay'}")
                continue
            compared += 1
            for k in keys:
                if a[step].get(k) != b[step].get(k):
                    diffs.append(f"{kind} at update {step}: {k} {a[step].get(k)!r} (run) != "
                                 f"{b[step].get(k)!r} (replay)")
    if not compared:
        diffs.append(f"nothing to compare: the run logged no training line within its first {steps} updates")
    return diffs, compared


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--steps", type=int, help="updates to replay (default: the first epoch)")
    p.add_argument("--work", type=Path, help="where the replay's run directory goes (default: a temporary one)")
    p.add_argument("--json", type=Path, help="also write the verdict here")
    args = p.parse_args(argv)
    from nmt.train import train
    try:
        old = log_events(args.run_dir)
        steps = args.steps if args.steps is not None else first_epoch_steps(old)
        if steps < 1:
            raise UsageError(f"--steps {steps}: expected a whole number >= 1")
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            work = Path(tmp) / "replay"
            tcfg, mcfg = replay_config(args.run_dir, steps, work)
            work.mkdir()
            train(tcfg, mcfg, resuming=False)
            diffs, compared = compare(old, log_events(work), steps)
    except (UsageError, DataError) as e:  # a bad run directory, or its corpus missing or changed
        print(f"check_replay: {e}", file=sys.stderr)
        return 2
    from nmt.experiment import git_state
    verdict = {"run": str(args.run_dir), "steps": steps, "lines_compared": compared, "identical": not diffs,
               "differences": diffs, "command": "python scripts/check_replay.py " + " ".join(argv or sys.argv[1:]),
               "torch": torch.__version__, **git_state()}
    if diffs:
        print(f"{args.run_dir}: the first {steps} updates DIFFER:\n  " + "\n  ".join(diffs))
    else:
        print(f"{args.run_dir}: the first {steps} updates are identical ({compared} logged lines: "
              f"{', '.join(TRAIN_KEYS)} of training, {', '.join(VALID_KEYS)} of validation)")
    if args.json:
        args.json.write_text(json.dumps(verdict, indent=2) + "\n")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
