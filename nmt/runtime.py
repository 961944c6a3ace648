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
