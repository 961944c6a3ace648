"""A study's runs: where each model and seed is trained, whether it is done, and training what is missing.

Each (model, seed) of a study has one run directory, named from its identity, never from its label:

    RUNS/PAIR/PRESET/NAME_seedS      e.g. runs/en-de/cpu/hard_seed1, runs/en-de/cpu/uniform0.1_seed2

NAME is `hard`, or the smoothing prior and alpha (`uniform0.1`, `unigram0.1`, `masked0.1`), `cp` and beta
for the confidence penalty, a student's `kd-token-b0.5-T1-from-` (or `kd-sequence-from-`) plus its teacher's
name, and the extra flags sorted (`+max-epochs3`). Two studies that name the same model share its runs. A
directory that holds a run trained with other settings is refused (`check_matches`), never retrained over.

Launchers: `local` trains one run after another here (`python -m nmt.train`, resumed where interrupted);
`slurm` submits each as a job through submitit (pre-empted or requeued jobs resume from checkpoint_last.pt; each
trains on the CPUs SLURM gave it); `submitit-local` is the same code path on submitit's local executor. The tests
run both: tests/test_slurm.py against a one-node cluster (scripts/slurm_cluster.sh start).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nmt import seqkd
from nmt.checkpoint import read_run_config
from nmt.config import PRESET_MINUTES, TOKEN_DISTILL_FACTOR, flag
from nmt.data import find_data_dir, split_files
from nmt.errors import DataError, StudyError, UsageError
from nmt.names import check_name, is_name
from nmt.studyfile import ModelSpec, Study, train_configs

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
    if len(flags) > 2 or not all(is_name(f) for f in flags):  # many settings, or a value that is no name (a hub
        # id's '/'): a short hash of them (config.json says them all)
        import hashlib
        flags = ["flags" + hashlib.sha256(repr(spec.flags).encode()).hexdigest()[:8]]
    return name + "".join("+" + f for f in flags)


def run_dir(study: Study, spec: ModelSpec, seed: int, runs_root) -> Path:
    """RUNS/PAIR/PRESET/NAME_seedS, each part a checked name (no separator, no '..'): a path inside RUNS (which
    may hold symbolic links a user made, say to another disk)."""
    parts = [check_name(x, f"{study.path}: run directory of {spec.name} seed {seed}")
             for x in (spec.pair, spec.preset, f"{model_dir_name(spec, study)}_seed{seed}")]
    return Path(runs_root).joinpath(*parts)


def run_id(d) -> Path:
    """PAIR/PRESET/RUN of a run directory: where its small files lie under a results directory's runs/."""
    return Path(*Path(d).parts[-3:])


def run_status(d: Path) -> str:
    """"done" (its log says so), "interrupted" (checkpoint_last.pt, no "done") or "new". A killed run can leave
    a truncated last line in log.jsonl: that line is no event; an unreadable line before it is a StudyError."""
    log_file = d / "log.jsonl"
    if log_file.is_file():
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        for i, line in enumerate(lines, start=1):
            try:
                event = json.loads(line) if line.strip() else {}
            except ValueError:
                if i == len(lines):  # the line a kill cut short
                    break
                raise StudyError(f"{log_file}:{i}: not a JSON line (a damaged log; the run's other files may "
                                 f"be intact: move the log aside to train it again)") from None
            if isinstance(event, dict) and event.get("event") == "done":
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


def check_corpora(study: Study) -> None:
    """Every corpus the study's trainings will read is there (train and val of each pair, or the study's own
    files): a StudyError naming the study file and the missing file, before any training starts."""
    from nmt.config import TrainConfig
    data = study.data
    if data.train:
        files = [*data.train, *(data.valid or ())]
    else:
        files = []
        for spec in study.models:
            if dict(spec.flags).get("hub") or spec.teacher and spec.distill.kind == "sequence":
                continue  # read from the hub, or made from the teacher's translations
            cfg = TrainConfig(data_dir=data.dir, src_lang=spec.src, tgt_lang=spec.tgt)
            try:
                files += [*split_files(cfg, "train"), *split_files(cfg, "val")]
            except DataError as e:
                raise StudyError(f"{study.path}: {e}") from None
    for f in files:
        if not Path(f).is_file():
            raise StudyError(f"{study.path}: {f}: not found (a corpus file its trainings need)")


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
    recorded = raw.get("precision") or {}
    precision = recorded.get("precision", "fp32") if isinstance(recorded, dict) else None
    if precision not in ("fp32", "bf16", "fp16"):
        raise StudyError(f"{d / 'config.json'}: precision {precision!r}: expected fp32, bf16 or fp16")
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
    """One run as a callable for submitit: trains (resuming when checkpoint_last.pt exists at start). When the
    scheduler stops the job (requeue, pre-emption, time limit, scancel: SIGTERM), the training saves
    checkpoint_last.pt and exits 143; the job then ends without a result, so that a requeued job resumes and
    the waiting study sees a cancelled one (`wait_job`). On SIGUSR2 submitit calls `checkpoint`, which requeues
    the same call. A failed training raises with its own last error line."""

    def __init__(self, command: list, run_dir: str, cwd: str):
        self.command, self.run_dir, self.cwd = list(command), run_dir, cwd

    def __call__(self) -> int:
        cmd = self.command + (["--resume"] if (Path(self.run_dir) / "checkpoint_last.pt").is_file() else [])
        cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
        if cpus.isdigit() and "--threads" not in cmd:  # the CPUs SLURM gave the job, not every core of its node
            cmd += ["--threads", cpus]
        rc, last = run_forwarding_stderr(cmd, self.cwd)
        if rc in STOPPED or rc < 0:
            print(f"{self.run_dir}: training stopped by a signal (exit {rc}); the scheduler requeues or ends this "
                  f"job", file=sys.stderr, flush=True)
            raise SystemExit(rc)  # not an Exception: submitit writes no result, the requeued job resumes
        if rc != 0:
            raise RuntimeError(f"{self.run_dir}: training exited {rc}: {last or 'no error line'}")
        return rc

    def checkpoint(self, *args, **kwargs):
        import submitit
        return submitit.helpers.DelayedSubmission(self)


STOPPED = (130, 143)  # nmt.train's exits after SIGINT / SIGTERM, checkpoint_last.pt saved


def run_forwarding_stderr(cmd: list, cwd: str) -> tuple[int, str]:
    """Run `cmd`, its stderr passed through line by line; its exit status and its last non-empty stderr line."""
    last = ""
    with subprocess.Popen(cmd, cwd=cwd, stderr=subprocess.PIPE, text=True, errors="replace") as proc:
        for line in proc.stderr:  # universal newlines: a progress bar's \r ends a line too
            sys.stderr.write(line)
            if line.strip():
                last = line.strip()[:300]
    return proc.returncode, last


def prepare_student(study: Study, spec: ModelSpec, seed: int, runs_root) -> None:
    """A sequence-level student needs its teacher's translations (`nmt.seqkd`): made once per teacher."""
    if spec.teacher and spec.distill.kind == "sequence":
        seqkd.teacher_targets(run_dir(study, study.model(spec.teacher), seed, runs_root))


def train_missing(study: Study, runs: list, runs_root, launcher: str = "local", slurm: dict | None = None) -> None:
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
                rc = subprocess.run(cmd, check=False).returncode
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
            wait_job(job, r, folder, launcher == "slurm")


# squeue's states of a job that is still on its way (any other state, or none, means it ended)
ON_ITS_WAY = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
              "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "PREEMPTED"}


def slurm_state(job_id: str) -> str:
    """The job's state as squeue says it ("" when squeue no longer knows the job)."""
    res = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True, check=False)
    return res.stdout.strip().split("\n")[0] if res.returncode == 0 else ""


def wait_job(job, r: PlannedRun, folder: Path, slurm: bool, poll_s: float = 2.0, grace_s: float = 10.0) -> None:
    """Wait for one job's result; a failed job is a StudyError with the training's own error line. On SLURM the
    queue is watched too: a job that left it without a result (cancelled, killed, timed out) is reported, not
    waited for forever (without accounting, submitit cannot see it)."""
    ended_at = None
    while not job.done():
        if slurm:
            state = slurm_state(job.job_id)
            if state in ON_ITS_WAY:
                ended_at = None
            elif ended_at is None:
                ended_at = time.monotonic()
            elif time.monotonic() - ended_at > grace_s:  # the result file is written before the job ends
                raise StudyError(f"{r.dir}: job {job.job_id} ended {state or 'and left the queue'} without a result "
                                 f"(cancelled or killed); run the same command again to resume it. Its output: "
                                 f"{folder}")
        time.sleep(poll_s)
    try:
        job.result()
    except Exception as e:  # noqa: BLE001 - submitit re-raises the job's failure
        raise StudyError(f"job {job.job_id} failed: {error_line(str(e))[:400]}; its output: {folder}") from None


def error_line(failure: str) -> str:
    """The job's own error from submitit's failure text: the last line of the traceback it quotes between two
    rules of dashes (the whole text's last line where there are none)."""
    parts = failure.split("-" * 22)
    lines = [x.strip() for x in (parts[1] if len(parts) >= 3 else failure).splitlines() if x.strip()]
    return lines[-1] if lines else "no error line"
