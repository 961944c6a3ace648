"""Process set-up shared by training, decoding and the benchmarks: device, threads, seeds, allocator."""
from __future__ import annotations

import ctypes
import random

import numpy as np
import torch


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_cpu(threads: int = 0) -> None:
    """Threads, and keep freed memory in the process: glibc serves every allocation above 32 MB with a fresh
    mmap and unmaps it on free, so each (B x T x V) logits-sized tensor of every step would pay its page
    faults again. mmap off (M_MMAP_MAX = 0) and a 2 GB trim threshold keep that memory in the process (its
    peak), which a training or decoding run reuses every step anyway. docs/design.md has the timings."""
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap'ed chunks
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: do not hand freed heap back
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def cpu_bf16_flags() -> list:
    """This CPU's bf16 flags among avx512_bf16, amx_bf16, amx_tile (/proc/cpuinfo; [] where it cannot be read)."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})


def check_cpu_amp(amp: str) -> None:
    """Refuse (UsageError) an --amp the CPU cannot run: fp16 anywhere, bf16 without bf16 units. Cheap (the flags
    only), so that training refuses before it writes anything."""
    from nmt.errors import UsageError
    if amp == "fp16":
        raise UsageError("--amp fp16: not on the CPU (expected bf16, auto or none)")
    if amp == "bf16" and not cpu_bf16_flags():
        raise UsageError("--amp bf16: this CPU has no bf16 units (no avx512_bf16 / amx_bf16 flag); expected none "
                         "or auto")


def autocast_for(amp: str, device, mcfg=None):
    """(autocast context, gradient scaler or None, precision record) for --amp on this device.

    CUDA: bf16 where the GPU supports it, else fp16 with a gradient scaler ("auto"), or what was asked.
    CPU: bf16 autocast where the CPU has bf16 units: "bf16" is refused without them (UsageError), and "auto"
    takes it only where a few training updates of this model shape (`mcfg`) measured faster in bf16 than in
    float32 (`nmt.levers.training_amp`; the products alone are no guide: 3.7x faster in bf16 on an AMX CPU
    whose updates ran 0.97x, docs/benchmarks.md); `mcfg` is the model's config, which that measurement needs.
    The loss and the optimizer state stay in float32 either way. The record (precision, and the lever's choice
    with its timings) goes into the run's config: bf16 changes the numbers."""
    import contextlib

    if amp == "none":
        return contextlib.nullcontext(), None, {"precision": "fp32", "amp": amp}
    if device.type == "cuda":
        bf16 = amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported())
        dtype = torch.bfloat16 if bf16 else torch.float16
        scaler = None if bf16 else torch.amp.GradScaler("cuda")
        return torch.autocast("cuda", dtype=dtype), scaler, {"precision": "bf16" if bf16 else "fp16", "amp": amp}
    check_cpu_amp(amp)
    if not cpu_bf16_flags():  # "auto" without bf16 units: nothing to measure
        return contextlib.nullcontext(), None, {"amp": amp, "precision": "fp32", "lever": None}
    from nmt.levers import training_amp
    lever = training_amp(mcfg, amp)
    record = {"amp": amp, "lever": lever.to_json(), "precision": "bf16" if lever.choice == "bf16" else "fp32"}
    if lever.choice == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16), None, record
    return contextlib.nullcontext(), None, record
