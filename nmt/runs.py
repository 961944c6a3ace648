"""A study's runs: where each model and seed is trained, whether it is done, and training what is missing.

Each (model, seed) of a study has one run directory, named from its identity, never from its label:

    RUNS/PAIR/PRESET/NAME_seedS      e.g. runs/en-de/cpu/hard_seed1, runs/en-de/cpu/uniform0.1_seed2

NAME is `hard`, or the smoothing prior and alpha (`uniform0.1`, `unigram0.1`, `masked0.1`), `cp` and beta
for the confidence penalty, a student's `kd-token-b0.5-T1-from-` (or `kd-sequence-from-`) plus its teacher's
name, and the extra flags sorted (`+max-epochs3`). Two studies that name the same model share its runs. A
directory that holds a run trained with other settings is refused (`check_matches`), never retrained over.

Launchers: `local` trains one run after another here (`python -m nmt.train`, resumed where interrupted);
`slurm` submits each as a job through submitit (pre-empted jobs are requeued and resume); `submitit-local`
is the same code path on submitit's local executor (what the tests run).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nmt import seqkd
from nmt.checkpoint import read_run_config
from nmt.config import PRESET_MINUTES, TOKEN_DISTILL_FACTOR, UsageError, flag
from nmt.data import find_data_dir, split_files
from nmt.studyfile import ModelSpec, Study, StudyError, train_configs

log = logging.getLogger("nmt.runs")

LAUNCHERS = ("local", "slurm", "submitit-local")
# Settings that may differ between a run and the study's model without making it another model.
NOT_IDENTITY = {"run_dir", "device", "threads", "log_every", "save_every_steps", "fit_temperature", "num_proc", "amp",
                "data_dir", "teacher", "tokenizer", "hub", "train_src", "train_tgt", "valid_src", "valid_tgt"}


@dataclass(frozen=True)
class PlannedRun:
    model: str  # the study's model name
    seed: int
    dir: Path
    status: str  # "done", "interrupted" (resumable), "new"
    minutes: float | None  # the preset's estimate for a whole run


def model_dir_name(spec: ModelSpec, study: Study) -> str:
    if spec.teacher:
        d = spec.distill
        # a sequence-level student has no beta or T: plain NLL on its teacher's translations
        how = "sequence" if d.kind == "sequence" else f"token-b{d.beta:g}-T{d.temperature:g}"
        name = f"kd-{how}-from-{model_dir_name(study.model(spec.teacher), study)}"
    elif spec.confidence_penalty:
        name = f"cp{spec.confidence_penalty:g}" + (f"-{spec.smoothing}{spec.alpha:g}" if spec.alpha else "")
    else:
        name = "hard" if spec.alpha == 0 else f"{spec.smoothing}{spec.alpha:g}"
    flags = [f"{k.replace('_', '-')}{str(v).lower() if isinstance(v, bool) else v}" for k, v in spec.flags]
    if len(flags) > 2:  # many settings: a short hash of them (config.json says them all)
        import hashlib
        flags = ["flags" + hashlib.sha256(repr(spec.flags).encode()).hexdigest()[:8]]
    return name + "".join("+" + f for f in flags)


def run_dir(study: Study, spec: ModelSpec, seed: int, runs_root) -> Path:
    return Path(runs_root) / spec.pair / spec.preset / f"{model_dir_name(spec, study)}_seed{seed}"


def run_id(d) -> Path:
    """PAIR/PRESET/RUN of a run directory: where its small files lie under a results directory's runs/."""
    return Path(*Path(d).parts[-3:])


def run_status(d: Path) -> str:
    log_file = d / "log.jsonl"
    if log_file.is_file() and any(json.loads(x).get("event") == "done" for x in log_file.read_text().splitlines()
                                  if x.strip().startswith("{")):
        return "done"
    return "interrupted" if (d / "checkpoint_last.pt").is_file() else "new"


def plan(study: Study, runs_root) -> list:
    """Every (model, seed) of the study with its directory and status; teachers before their students."""
    out = []
    for spec in sorted(study.models, key=lambda m: m.teacher is not None):
        for seed in spec.seeds:
            d = run_dir(study, spec, seed, runs_root)
            status = run_status(d)
            if status != "new" or (d / "config.json").is_file():
                check_matches(study, spec, seed, d)
            out.append(PlannedRun(spec.name, seed, d, status, estimated_minutes(spec)))
    return out


def estimated_minutes(spec: ModelSpec):
    """A whole run's minutes on 2 CPU cores: the preset's, more for a token-level student; None: unmeasured."""
    minutes = PRESET_MINUTES.get(spec.preset)
    if minutes is not None and spec.teacher and spec.distill.kind == "token":
        minutes = round(minutes * TOKEN_DISTILL_FACTOR, 1)
    return minutes


def train_arguments(study: Study, spec: ModelSpec, seed: int, runs_root) -> list:
    """The `python -m nmt.train` arguments of one run (without --resume)."""
    d = run_dir(study, spec, seed, runs_root)
    args = ["--preset", spec.preset, "--run-dir", str(d), "--seed", str(seed), "--alpha", f"{spec.alpha:g}",
            "--src-lang", spec.src, "--tgt-lang", spec.tgt]
    if spec.smoothing != "uniform":
        args += ["--smoothing", spec.smoothing]
    if spec.confidence_penalty:
        args += ["--confidence-penalty", f"{spec.confidence_penalty:g}"]
    data = study.data
    teacher = run_dir(study, study.model(spec.teacher), seed, runs_root) if spec.teacher else None
    if teacher and spec.distill.kind == "sequence":  # the teacher's translations as targets, plain NLL
        src, tgt, _ = seqkd.paths(teacher)
        valid = split_files(read_run_config(teacher)[0], "val")
        args += ["--train-src", str(src), "--train-tgt", str(tgt), "--valid-src", str(valid[0]),
                 "--valid-tgt", str(valid[1]), "--tokenizer", str(teacher)]
    elif data.train:
        args += ["--train-src", data.train[0], "--train-tgt", data.train[1], "--valid-src", data.valid[0],
                 "--valid-tgt", data.valid[1]]
    elif data.dir:
        args += ["--data-dir", data.dir]
    if teacher and spec.distill.kind == "token":
        args += ["--teacher", str(teacher), "--distill-beta", f"{spec.distill.beta:g}",
                 "--distill-temperature", f"{spec.distill.temperature:g}"]
    for k, v in spec.flags:
        if isinstance(v, bool):
            args.append(flag(k) if v else "--no-" + k.replace("_", "-"))
        else:
            args += [flag(k), str(v)]
    return args


def check_matches(study: Study, spec: ModelSpec, seed: int, d: Path) -> None:
    """A StudyError when the run in `d` was trained with settings other than the study's model."""
    try:
        tcfg, mcfg, raw = read_run_config(d)
    except UsageError as e:
        raise StudyError(f"{d}: cannot read the run's config ({e})") from None
    want_t, want_m = train_configs(spec)
    want_t = dataclasses.replace(want_t, seed=seed)
    diffs = [f"{k}: {getattr(tcfg, k)!r} there, {getattr(want_t, k)!r} here"
             for k in (f.name for f in dataclasses.fields(tcfg)) if k not in NOT_IDENTITY
             and getattr(tcfg, k) != getattr(want_t, k)]
    diffs += [f"{k}: {getattr(mcfg, k)!r} there, {getattr(want_m, k)!r} here"
              for k in (f.name for f in dataclasses.fields(mcfg)) if k != "vocab_size"
              and getattr(mcfg, k) != getattr(want_m, k)]
    precision = (raw.get("precision") or {}).get("precision", "fp32")
    want_precision = "fp32" if want_t.amp == "none" else precision  # auto / bf16: whatever the run recorded
    if precision != want_precision:
        diffs.append(f"precision: {precision} there, {want_precision} here")
    if not study.data.train and not tcfg.train_src:
        try:
            there, here = find_data_dir(tcfg.data_dir).resolve(), find_data_dir(study.data.dir).resolve()
        except Exception:  # noqa: BLE001 - a corpus that is gone: nothing to compare
            there = here = None
        if there != here:
            diffs.append(f"data directory: {there} there, {here} here")
    if diffs:
        raise StudyError(f"{d}: holds a run of other settings than model {spec.name!r} seed {seed} of {study.path} "
                         f"({'; '.join(diffs)}); move it away or give the study another runs directory")


def describe_plan(runs: list) -> str:
    """What `--dry-run` prints: each run, its status and the minutes it would take."""
    lines, total = [], 0.0
    for r in runs:
        todo = r.status != "done"
        est = "?" if r.minutes is None else f"{r.minutes:g}"
        if todo and r.minutes:
            total += r.minutes
        lines.append(f"  {r.status:11s} {r.model:16s} seed {r.seed}  {r.dir}" + (f"  ~{est} min" if todo else ""))
    n = sum(r.status != "done" for r in runs)
    unknown = any(r.minutes is None and r.status != "done" for r in runs)
    lines.append(f"{n} of {len(runs)} runs to train, about {total:g} minutes" + (" (and runs of unmeasured presets)"
                                                                                  if unknown else ""))
    return "\n".join(lines)


def train_command(study: Study, spec: ModelSpec, seed: int, runs_root) -> list:
    return [sys.executable, "-m", "nmt.train", *train_arguments(study, spec, seed, runs_root)]


class TrainJob:
    """One run as a callable for submitit: trains (resuming when checkpoint_last.pt exists at start), and, when
    SLURM pre-empts it, asks to be requeued (`checkpoint`); the requeued call resumes."""

    def __init__(self, command: list, run_dir: str, cwd: str):
        self.command, self.run_dir, self.cwd = list(command), run_dir, cwd

    def __call__(self) -> int:
        cmd = self.command + (["--resume"] if (Path(self.run_dir) / "checkpoint_last.pt").is_file() else [])
        rc = subprocess.run(cmd, cwd=self.cwd).returncode
        if rc != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {rc}")
        return rc

    def checkpoint(self, *args, **kwargs):
        import submitit
        return submitit.helpers.DelayedSubmission(self)


def prepare_student(study: Study, spec: ModelSpec, seed: int, runs_root) -> None:
    """A sequence-level student needs its teacher's translations (`nmt.seqkd`): made once per teacher."""
    if spec.teacher and spec.distill.kind == "sequence":
        seqkd.teacher_targets(run_dir(study, study.model(spec.teacher), seed, runs_root))


def train_missing(study: Study, runs: list, runs_root, launcher: str = "local", slurm: dict = None) -> None:
    """Train every run of `runs` that is not done, with the launcher; a failed run stops the study (exit 2)."""
    todo = [r for r in runs if r.status != "done"]
    if not todo:
        return
    if launcher not in LAUNCHERS:
        raise UsageError(f"--launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    if launcher == "local":
        for stage in (False, True):  # teachers, then students
            for r in todo:
                spec = study.model(r.model)
                if (spec.teacher is not None) != stage:
                    continue
                prepare_student(study, spec, r.seed, runs_root)
                cmd = train_command(study, spec, r.seed, runs_root)
                cmd += ["--resume"] if (r.dir / "checkpoint_last.pt").is_file() else []
                log.info("training %s seed %d: %s", r.model, r.seed, " ".join(cmd[1:]))
                rc = subprocess.run(cmd).returncode
                if rc != 0:
                    raise StudyError(f"{r.dir}: training exited {rc} (its log: {r.dir / 'log.jsonl'}); start the "
                                     f"study again to resume it")
        return
    submit_all(study, todo, runs_root, launcher, slurm or {})


def submit_all(study: Study, todo: list, runs_root, launcher: str, slurm: dict) -> None:
    """Submit the runs through submitit (teachers first, each stage waited for), then wait for every job."""
    try:
        import submitit
    except ImportError:
        raise UsageError(f"--launcher {launcher}: needs submitit (pip install 'nmt[slurm]')") from None
    folder = Path(runs_root) / ".submitit" / study.name
    executor = submitit.AutoExecutor(folder=str(folder), cluster="local" if launcher == "submitit-local" else "slurm")
    params = dict(slurm)
    executor.update_parameters(timeout_min=int(params.pop("timeout_min", 60)), name=f"nmt-{study.name}",
                               **{(k if k in ("gpus_per_node", "cpus_per_task", "mem_gb") else f"slurm_{k}"): v
                                  for k, v in params.items()})
    for stage in (False, True):
        jobs = []
        for r in todo:
            spec = study.model(r.model)
            if (spec.teacher is not None) != stage:
                continue
            prepare_student(study, spec, r.seed, runs_root)  # here, before the job: the teacher's translations
            job = executor.submit(TrainJob(train_command(study, spec, r.seed, runs_root), str(r.dir), str(Path.cwd())))
            log.info("submitted %s seed %d: job %s", r.model, r.seed, job.job_id)
            jobs.append((r, job))
        for r, job in jobs:
            try:
                job.result()
            except Exception as e:  # noqa: BLE001 - submitit re-raises the job's failure
                raise StudyError(f"{r.dir}: job {job.job_id} failed ({str(e).strip().splitlines()[-1][:300]}); "
                                 f"its output: {folder}") from None
