"""Checkpoints: atomic writes, loading with clear errors, tokenizer check, weight averaging, the run-directory lock.

A checkpoint is a dict: "model" (state dict), "model_config" and "train_config" (dicts), "tokenizer_sha256",
"step", "epoch", "valid" (metrics at that point); checkpoint_last.pt also holds what resuming needs
("optimizer", "scheduler", "rng", "batch_pos", "best_nll", "bad_epochs", "epoch_checkpoints").
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import torch

from nmt.config import ModelConfig, UsageError
from nmt.data import DataError, load_tokenizer
from nmt.model import Transformer

VERSION = 1


class CheckpointError(Exception):
    pass


def save_atomic(obj, path) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename: a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # disk full, read-only folder, ...: say which file; `path` itself is untouched
        raise OSError(e.errno, f"cannot write ({e.strerror or e})", str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename: readers see the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(obj, path) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def resolve(path) -> Path:
    """A checkpoint file, or a run directory: its checkpoint_avg.pt if training averaged, else checkpoint_best.pt."""
    p = Path(path)
    if p.is_dir():
        for name in ("checkpoint_avg.pt", "checkpoint_best.pt"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: no checkpoint_avg.pt or checkpoint_best.pt in this run directory")
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    return p


def load(path, map_location="cpu") -> dict:
    p = resolve(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated file, not a torch file, ...
        raise CheckpointError(f"{p}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise CheckpointError(f"{p}: not an nmt checkpoint (no model weights / model_config)")
    ckpt["path"] = str(p)
    return ckpt


def load_model(path, device="cpu", spm_path=None):
    """(model in eval mode, checkpoint dict, SentencePiece processor). The tokenizer is the run directory's
    spm.model (or `spm_path`) and must have the hash the checkpoint was trained with."""
    ckpt = load(path)
    model = Transformer(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    spm_path = Path(spm_path) if spm_path else Path(ckpt["path"]).parent / "spm.model"
    try:
        sp = load_tokenizer(spm_path, expected_sha256=ckpt.get("tokenizer_sha256"))
    except DataError as e:
        raise CheckpointError(str(e)) from None
    if sp.get_piece_size() != model.cfg.vocab_size:
        raise CheckpointError(f"{spm_path}: {sp.get_piece_size()} pieces, the model has {model.cfg.vocab_size}")
    return model, ckpt, sp


def average(paths) -> dict:
    """Element-wise mean of the weights of several checkpoints of one run (Vaswani et al. 2017, Sec. 6.1)."""
    ckpts = [load(p) for p in paths]
    avg = {k: sum(c["model"][k].double() for c in ckpts) / len(ckpts) for k in ckpts[0]["model"]}
    out = {k: v for k, v in ckpts[-1].items() if k not in ("model", "path", "valid")}
    out["model"] = {k: v.to(ckpts[0]["model"][k].dtype) for k, v in avg.items()}
    out["averaged"] = [str(p) for p in paths]
    return out


class RunLock:
    """An exclusive OS lock (flock) on RUN_DIR/.lock, held while one process writes the run; released when
    it exits, however it exits. A second process is refused with the holder's PID (a UsageError)."""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / ".lock"
        self.fd = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(f"{self.path.parent}: another process (PID {holder}) is writing this run; wait for it "
                             f"to end, or choose another --run-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None
