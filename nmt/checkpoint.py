"""Checkpoints: atomic saves, loading that never runs code, validated configs, weight averaging.

A checkpoint is a dict of tensors and plain data only: "model" (state dict), "model_config" and "train_config"
(dicts), "tokenizer_sha256", "step", "epoch", "valid" (metrics at that point), "format" (FORMAT), and for a
smoothing prior other than uniform "prior" (a length-V tensor); checkpoint_last.pt also holds what resuming
needs ("optimizer", "scheduler", "rng" as tensors and lists, "batch_pos", "best_nll", "bad_epochs",
"epoch_checkpoints").

Every load uses `torch.load(weights_only=True)`, which refuses anything but tensors and plain containers: a
file that holds an object whose unpickling would run code is refused with one line, and nothing runs.
Checkpoints of earlier nmt versions that stored numpy's RNG state as an array (checkpoint_last.pt) are refused
the same way; `nmt.train --resume --trust-checkpoint-code` loads such a file once, knowingly, and the next
save writes the safe format.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from nmt.config import ModelConfig, model_config_from, train_config_from
from nmt.errors import CheckpointError, DataError, UsageError
from nmt.files import read_json
from nmt.model import Transformer
from nmt.tokenizer import load_tokenizer

FORMAT = 2  # 2: weights_only-safe (numpy RNG state as plain data); 1: nmt 0.2's




def save_atomic(obj, path) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename: a kill never leaves half a file. A
    failed write (disk full) raises OSError naming `path`, which is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a full disk as a RuntimeError
        errno = getattr(e, "errno", None) or 28
        why = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise OSError(errno, f"cannot write ({why})", str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


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


UNSAFE_HINT = ("loading it could run code. If it is an older nmt's checkpoint_last.pt that you trust, resume it once "
               "with: python -m nmt.train --run-dir RUN --resume --trust-checkpoint-code")


def load(path, map_location="cpu", trust_code: bool = False) -> dict:
    """The checkpoint dict, loaded with weights_only=True (never runs code); configs validated. `trust_code`
    (nmt.train --trust-checkpoint-code only) allows the full unpickler for an older file the user trusts."""
    p = resolve(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=not trust_code)
    except Exception as e:  # noqa: BLE001 - truncated file, not a torch file, a refused object, ...
        text = str(e)
        if "GLOBAL" in text or "global" in text:  # an object the safe unpickler does not allow: refused
            raise CheckpointError(f"{p}: refused: it holds objects other than tensors and plain data; "
                                  f"{UNSAFE_HINT}") from None
        raise CheckpointError(f"{p}: not a readable checkpoint ({type(e).__name__}: {text.splitlines()[0][:200]})") \
            from None
    check_fields(ckpt, p)
    fmt = ckpt.get("format", 1)
    if not (isinstance(fmt, int) and not isinstance(fmt, bool) and fmt >= 1):
        raise CheckpointError(f"{p}: format {fmt!r}: expected a whole number >= 1 (an nmt checkpoint's format)")
    if fmt > FORMAT:
        raise CheckpointError(f"{p}: format {ckpt['format']}, written by a newer nmt (this one reads up to {FORMAT})")
    ckpt["path"] = str(p)
    return ckpt


def check_fields(ckpt, p) -> None:
    """An nmt checkpoint: a dict with a state dict, a valid model_config and train_config."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or "model_config" not in ckpt:
        raise CheckpointError(f"{p}: not an nmt checkpoint (no model weights / model_config)")
    model_config_of(ckpt, p)
    try:
        train_config_from(ckpt.get("train_config"), where=f"{p}: train_config")
    except UsageError as e:
        raise CheckpointError(str(e)) from None


def read_run_config(run_dir) -> tuple:
    """(TrainConfig, ModelConfig, the whole dict) of RUN/config.json ("train_config" / "model_config"; nmt 0.2
    wrote "train" / "model"). Errors name the file and the key (UsageError)."""
    path = Path(run_dir) / "config.json"
    cfg = read_json(path, "run config (config.json)")
    train = cfg.get("train_config", cfg.get("train"))
    model = cfg.get("model_config", cfg.get("model"))
    return (train_config_from(train, where=f"{path}: train_config"),
            model_config_from(model, where=f"{path}: model_config"), cfg)


def model_config_of(ckpt: dict, p) -> ModelConfig:
    """The checkpoint's ModelConfig; an unknown key or a bad value is named with the file and key, not a flag."""
    try:
        return model_config_from(ckpt.get("model_config"), where=f"{p}: model_config")
    except UsageError as e:
        raise CheckpointError(str(e)) from None


def check_shapes(cfg: ModelConfig, state: dict, p) -> None:
    """The state dict's shapes say the model's size: embed.weight is (vocab_size, d_model), the layers are
    numbered 0..n-1 on each side, a feed-forward input is (d_ff, d_model). A config that disagrees is refused
    before a model of its size is built (a crafted config cannot make the loader allocate what the file lacks)."""
    def layers(side: str) -> int:
        idx = {k.split(".")[1] for k in state if k.startswith(side + ".") and k.split(".")[1].isdigit()}
        return len(idx)
    embed, fc1 = state.get("embed.weight"), state.get("encoder.0.ffn.fc1.weight")
    have = {"vocab_size": None if embed is None else embed.shape[0],
            "d_model": None if embed is None else embed.shape[-1],
            "encoder_layers": layers("encoder"), "decoder_layers": layers("decoder"),
            "d_ff": None if fc1 is None else fc1.shape[0]}
    for name, n in have.items():
        if n != getattr(cfg, name):
            raise CheckpointError(f"{p}: model_config.{name} is {getattr(cfg, name)}, but the weights say {n}: the "
                                  f"config and the weights disagree")


def load_model(path, device="cpu", spm_path=None):
    """(model in eval mode, checkpoint dict, SentencePiece processor). The tokenizer is the run directory's
    spm.model (or `spm_path`) and must have the hash the checkpoint was trained with."""
    ckpt = load(path)
    cfg = model_config_of(ckpt, ckpt["path"])
    check_shapes(cfg, ckpt["model"], ckpt["path"])
    model = Transformer(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError) as e:  # missing / unexpected keys, shapes that do not match model_config
        first = str(e).splitlines()
        detail = " ".join(x.strip() for x in first[:3])[:300]
        raise CheckpointError(f"{ckpt['path']}: the weights do not match its model_config ({detail})") from None
    model.to(device).eval()
    spm_path = Path(spm_path) if spm_path else Path(ckpt["path"]).parent / "spm.model"
    try:
        sp = load_tokenizer(spm_path, expected_sha256=ckpt.get("tokenizer_sha256"))
    except DataError as e:
        raise CheckpointError(str(e)) from None
    if sp.get_piece_size() != model.cfg.vocab_size:
        raise CheckpointError(f"{spm_path}: {sp.get_piece_size()} pieces, the model has {model.cfg.vocab_size}")
    return model, ckpt, sp


def run_files(ckpt_path) -> set:
    """The files of the run a checkpoint was loaded from, which no output may replace: its checkpoints, tokenizer,
    configs and logs (resolved paths)."""
    run = Path(ckpt_path).resolve().parent
    names = ("config.json", "spm.model", "log.jsonl", "temperature.json", "checkpoint_last.pt", "checkpoint_best.pt",
             "checkpoint_avg.pt", "nmt.json", "model.bin")
    return {Path(ckpt_path).resolve()} | {run / n for n in names} | set(run.glob("checkpoint_epoch*.pt"))


def average(paths) -> dict:
    """Element-wise mean of the weights of several checkpoints of one run (Vaswani et al. 2017, Sec. 6.1)."""
    ckpts = [load(p) for p in paths]
    avg = {k: sum(c["model"][k].double() for c in ckpts) / len(ckpts) for k in ckpts[0]["model"]}
    out = {k: v for k, v in ckpts[-1].items() if k not in ("model", "path", "valid")}
    out["model"] = {k: v.to(ckpts[0]["model"][k].dtype) for k, v in avg.items()}
    out["averaged"] = [str(p) for p in paths]
    return out


# -- random generators, saved with the last checkpoint so that a resumed run continues bit-identically --

def rng_state(device) -> dict:
    """Every generator's state as tensors and plain data (loadable with weights_only=True)."""
    import random

    import numpy as np
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    import random

    import numpy as np
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    else:  # an older checkpoint (--trust-checkpoint-code): numpy's own tuple
        np.random.set_state(n)
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
