"""The SLURM launcher against a real scheduler: a one-node cluster (scripts/slurm_cluster.sh start) that `sinfo`
reaches. Skipped, with the reason, where none answers. Every training here is the toy model of a few seconds."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONF = Path(os.environ.get("NMT_SLURM_DIR", "/var/tmp/nmt-slurm")) / "slurm.conf"
# A run long enough to be requeued after its first checkpoint: 12 epochs of ~8 updates, a checkpoint at each end.
FLAGS = ('flags = { max_steps = 100, max_epochs = 12, max_tokens = 250, vocab_size = 64, max_train_len = 60, '
         'd_model = 32, n_heads = 2, encoder_layers = 1, decoder_layers = 1, d_ff = 64, max_positions = 64 }')


def slurm_env() -> dict | None:
    """The environment that reaches a SLURM cluster (SLURM_CONF as set, else the cluster script's), or None."""
    env = dict(os.environ)
    if "SLURM_CONF" not in env and DEFAULT_CONF.is_file():
        env["SLURM_CONF"] = str(DEFAULT_CONF)
    if shutil.which("sinfo") is None:
        return None
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env, timeout=15,
                             check=False)
    except subprocess.TimeoutExpired:
        return None
    return env if res.returncode == 0 and res.stdout.strip() else None


@pytest.fixture(scope="module")
def cluster():
    env = slurm_env()
    if env is None:
        pytest.skip("no SLURM cluster answers sinfo (start one: scripts/slurm_cluster.sh start)")
    return env


def slurm_study(path: Path, data_dir: Path, seeds: str = "[1]", models: tuple = ("hard", "ls")) -> Path:
    body = {"hard": '[[models]]\nname = "hard"\n', "ls": '[[models]]\nname = "ls"\nalpha = 0.1\n'}
    path.write_text(f'name = "{path.stem}"\n[data]\ndir = "{data_dir}"\n[defaults]\npreset = "smoke"\nseeds = {seeds}\n'
                    f'{FLAGS}\n\n' + "\n".join(body[m] for m in models) +
                    '\n[slurm]\npartition = "debug"\ncpus_per_task = 1\nmem_gb = 1\ntimeout_min = 20\n')
    return path


def run_study(f: Path, runs: Path, env: dict, launcher: str = "slurm", **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nmt.study", "run", str(f), "--runs", str(runs), "--results",
                           str(runs / "results"), "--launcher", launcher, "--train-only"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False, **kw)


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoint_last.pt", weights_only=True)["model"]


def same_weights(a: Path, b: Path) -> bool:
    x, y = weights(a), weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def events(run: Path) -> list:
    return [json.loads(line)["event"] for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def jobs_of(name: str, env: dict) -> list:
    res = subprocess.run(["squeue", "-h", "--name", f"nmt-{name}", "-o", "%i %T"], capture_output=True, text=True,
                         env=env, check=False)
    return [line.split() for line in res.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def local_runs(toy_multi30k, tmp_path_factory, cluster):
    """The reference: seed 1 of both models and seed 2 of hard targets, trained one after another here (the local
    launcher), on one
    thread as each job of one CPU is (threads change the order of float sums: the weights would differ)."""
    d = tmp_path_factory.mktemp("local")
    env = {**cluster, "OMP_NUM_THREADS": "1"}
    for seeds, models in (("[1]", ("hard", "ls")), ("[2]", ("hard",))):
        res = run_study(slurm_study(d / "slurmtoy.toml", toy_multi30k, seeds, models), d / "runs", env, "local")
        assert res.returncode == 0, res.stderr[-3000:]
    return d / "runs" / "en-de" / "smoke"


@pytest.mark.slurm
@pytest.mark.slow
def test_each_training_is_a_slurm_job_and_its_weights_equal_the_local_launchers(local_runs, toy_multi30k, tmp_path,
                                                                                  cluster):
    f = slurm_study(tmp_path / "slurmtoy.toml", toy_multi30k)
    res = run_study(f, tmp_path / "runs", cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "submitted hard seed 1: job " in res.stderr and "submitted ls seed 1: job " in res.stderr
    job = res.stderr.split("submitted hard seed 1: job ")[1].split()[0]
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=cluster,
                           check=False).stdout
    assert "JobName=nmt-slurmtoy" in shown and "BatchHost=" in shown, shown  # a batch job SLURM ran
    runs = sorted((tmp_path / "runs/en-de/smoke").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert same_weights(run, local_runs / run.name), run.name


@pytest.mark.slurm
@pytest.mark.slow
def test_a_requeued_job_resumes_from_its_checkpoint_bit_identical(local_runs, toy_multi30k, tmp_path, cluster):
    """Pre-emption: `scontrol requeue` after the first checkpoint stops the training (SIGTERM: it saves where it
    is), SLURM starts the same job again, it resumes from checkpoint_last.pt and ends on the weights of the run
    that was never interrupted."""
    f = slurm_study(tmp_path / "requeued.toml", toy_multi30k, models=("hard",))
    run = tmp_path / "runs/en-de/smoke" / next(local_runs.glob("hard*_seed1")).name
    proc = subprocess.Popen([sys.executable, "-m", "nmt.study", "run", str(f), "--runs", str(tmp_path / "runs"),
                             "--launcher", "slurm", "--train-only"], cwd=ROOT, env=cluster, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ((run / "log.jsonl").is_file() and "checkpoint" in events(run)):
            assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint before the run ended"
            time.sleep(0.05)
        (job, _), = jobs_of("requeued", cluster)
        subprocess.run(["scontrol", "requeue", job], check=True, env=cluster)
        # a requeued job, once pending again, waits two minutes before it may start: let it start now
        while jobs_of("requeued", cluster) != [[job, "PENDING"]]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, env=cluster)
        _, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    ev = events(run)
    assert "interrupted" in ev and "resume" in ev and ev[-1] != "interrupted", ev
    assert ev.index("checkpoint") < ev.index("interrupted") < ev.index("resume")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert next(e for e in log if e["event"] == "interrupted")["signal"] == "SIGTERM"
    assert same_weights(run, local_runs / run.name)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_failing_job_ends_the_study_with_the_trainings_own_error(toy_multi30k, tmp_path, cluster):
    """A corrupt corpus: the job fails, the study exits 2 naming the training's error, it does not hang."""
    data = tmp_path / "data"
    shutil.copytree(toy_multi30k, data)
    (data / "train.de.gz").write_bytes(b"this is not gzip")
    f = slurm_study(tmp_path / "broken.toml", data, models=("hard",))
    res = run_study(f, tmp_path / "runs", cluster)
    assert res.returncode == 2, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert "failed" in last and "train.de.gz" in last, last


@pytest.mark.slurm
@pytest.mark.slow
def test_scancel_ends_the_waiting_study_and_the_same_command_resumes(local_runs, toy_multi30k, tmp_path, cluster):
    """Seed 1 is done; the study's seed-2 job is cancelled while it waits: it exits 2 saying so (no hang), seed
    1's run is untouched, and the same command trains what is missing, to the local launcher's weights."""
    runs = tmp_path / "runs"
    f1 = slurm_study(tmp_path / "one.toml", toy_multi30k, models=("hard",))
    assert run_study(f1, runs, cluster).returncode == 0
    done = {p.name: (p / "checkpoint_last.pt").read_bytes() for p in (runs / "en-de/smoke").iterdir()}
    f = slurm_study(tmp_path / "cancelled.toml", toy_multi30k, seeds="[1, 2]", models=("hard",))
    proc = subprocess.Popen([sys.executable, "-m", "nmt.study", "run", str(f), "--runs", str(runs), "--launcher",
                             "slurm", "--train-only"], cwd=ROOT, env=cluster, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not jobs_of("cancelled", cluster):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        subprocess.run(["scancel", "--name", "nmt-cancelled"], check=True, env=cluster)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 2 and "without a result (cancelled or killed)" in err, err[-3000:]
    assert {p: (runs / "en-de/smoke" / p / "checkpoint_last.pt").read_bytes() for p in done} == done
    res = run_study(f, runs, cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "submitted hard seed 1" not in res.stderr and "submitted hard seed 2" in res.stderr
    for run in (runs / "en-de/smoke").iterdir():
        assert same_weights(run, local_runs / run.name), run.name


def test_the_slurm_cluster_script_refuses_what_it_cannot_do(tmp_path):
    """scripts/slurm_cluster.sh: an unknown action, or start as another user than root, is one line and exit 2."""
    script = ROOT / "scripts" / "slurm_cluster.sh"
    env = {**os.environ, "NMT_SLURM_DIR": str(tmp_path / "cluster")}
    res = subprocess.run(["bash", str(script), "restart"], capture_output=True, text=True, env=env, check=False)
    assert res.returncode == 2 and "usage: scripts/slurm_cluster.sh start|stop|status (got 'restart')" in res.stderr
    res = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True, env=env, check=False)
    assert res.returncode == 1 and "munged: not running" in res.stdout  # nothing of its own runs in that folder
    if os.geteuid() != 0:
        res = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, env=env, check=False)
        assert res.returncode == 2 and "start needs root" in res.stderr and not (tmp_path / "cluster").exists()
