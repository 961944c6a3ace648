"""Speed levers chosen by measuring them on the machine at hand, on the model's own shapes.

Two levers, each an alternative to a default that is always correct:

- `search_kernels`: the beam search's linear maps prepacked for oneDNN (`packed`, `Transformer.for_cpu_search`)
  or torch's own (`plain`, the model as trained). Both give the same hypotheses, so `auto` may choose.
- `amp` (training on the CPU): bf16 autocast (`bf16`) or float32 (`fp32`). bf16 changes the numbers, so it is
  taken only where asked: `--amp bf16`, or `--amp auto` (which the study presets never use).

The rule (`choose`): the lever is taken only where it measured at least MARGIN faster than the default, each
option timed in alternating rounds, its best round kept (`time_options`). A product is not a step: what is timed
is what is decided (a few search steps; a few training updates). The choice and its timings are cached per (CPU
model, CPU flags, torch version, threads, model shape, lever) in `cache_dir()/levers.json`, read back only
after validation (a malformed or implausible entry is measured again, never trusted), and recorded where it
matters: the run's config (amp) and the study's provenance (search kernels).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("nmt.levers")

MARGIN = 0.03  # a lever must measure at least 3% faster than its default to be taken
ROUNDS = 3
MAX_ENTRIES = 256  # levers.json keeps the newest entries only
MAX_CACHE_BYTES = 1 << 20
LEVERS = {"search_kernels": ("plain", "packed"), "amp": ("fp32", "bf16")}  # lever: (default, alternative)
_given: dict = {}  # lever -> "auto" or an option, set once per process by a command's flag (`set_given`)
_memo: dict = {}  # cache key -> LeverChoice, for this process


@dataclass(frozen=True)
class LeverChoice:
    lever: str
    choice: str
    seconds: dict  # option -> best seconds measured ({} when the option was given)
    source: str  # "measured", "cached" or "given"

    @property
    def speedup(self) -> float | None:
        """The default's time over the choice's (1.0 when the default was chosen; None when nothing was timed)."""
        default = LEVERS[self.lever][0]
        if not self.seconds:
            return None
        return self.seconds[default] / self.seconds[self.choice]

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "speedup": self.speedup}


def choose(lever: str, seconds: dict, margin: float = MARGIN) -> str:
    """The option to use from measured best times {option: seconds}: the alternative where it took at most
    1 / (1 + margin) of the default's time, else the default."""
    default, alternative = LEVERS[lever]
    return alternative if seconds[alternative] * (1 + margin) <= seconds[default] else default


def time_options(runs: dict, rounds: int = ROUNDS) -> dict:
    """{option: best seconds of `rounds`}: each of runs {option: callable} once untimed (warm-up), then the
    options in turn, round after round, so that a drift in the machine's speed touches all of them alike."""
    for run in runs.values():
        run()
    best = {name: math.inf for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


# -- the cache ----------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """$NMT_CACHE_DIR, else $XDG_CACHE_HOME/nmt, else ~/.cache/nmt."""
    if os.environ.get("NMT_CACHE_DIR"):
        return Path(os.environ["NMT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nmt"


def machine() -> dict:
    """What a timing depends on besides the model: the CPU's model name and flags, torch, the threads."""
    name, flags = "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not name:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return {"cpu": name, "flags_sha256": hashlib.sha256(flags.encode()).hexdigest(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def cache_key(lever: str, shape: dict) -> str:
    return hashlib.sha256(json.dumps({"lever": lever, "shape": shape, **machine()}, sort_keys=True).encode()
                          ).hexdigest()


def _entries(path: Path) -> dict | None:
    """levers.json as {key: entry}: {} where there is none, None where it is over MAX_CACHE_BYTES, not JSON or
    not an object."""
    try:
        if not path.is_file():
            return {}
        if path.stat().st_size > MAX_CACHE_BYTES:
            return None
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return entries if isinstance(entries, dict) else None


def read_cached(path: Path, key: str, lever: str) -> LeverChoice | None:
    """The entry for `key` in levers.json, validated; None (and a warning) for anything malformed: a file over
    MAX_CACHE_BYTES, not a JSON object, an unknown option, times not finite and positive, or a choice the times
    do not support."""
    entries = _entries(path)
    if entries is None:
        log.warning("%s: not a levers cache; measuring again", path)
        return None
    entry = entries.get(key)
    if entry is None:
        return None
    seconds = entry.get("seconds") if isinstance(entry, dict) else None
    ok = (isinstance(seconds, dict) and set(seconds) == set(LEVERS[lever])
          and all(isinstance(v, float) and math.isfinite(v) and 0 < v < 3600 for v in seconds.values())
          and entry.get("choice") == choose(lever, seconds))
    if not ok:
        log.warning("%s: entry %s is malformed or its choice does not follow from its times; measuring again",
                    path, key[:12])
        return None
    return LeverChoice(lever, entry["choice"], seconds, "cached")


def write_cached(path: Path, key: str, choice: LeverChoice) -> None:
    """Add the entry (the newest MAX_ENTRIES kept); a cache that cannot be written is only a warning."""
    from nmt.files import write_json_atomic
    entries = {k: v for k, v in (_entries(path) or {}).items() if k != key}  # a malformed file is replaced
    entries[key] = {"choice": choice.choice, "seconds": choice.seconds}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(dict(list(entries.items())[-MAX_ENTRIES:]), path)
    except OSError as e:
        log.warning("%s: the levers cache cannot be written (%s); the choice holds for this process", path, e)


# -- deciding ----------------------------------------------------------------------------------------------

def set_given(lever: str, value: str) -> None:
    """A command's flag: "auto" (measure, or read the cache) or one of the lever's options."""
    from nmt.errors import UsageError
    if value != "auto" and value not in LEVERS[lever]:
        raise UsageError(f"--{lever.replace('_', '-')} {value!r}: expected auto, {' or '.join(LEVERS[lever])}")
    _given[lever] = value


def decide(lever: str, shape: dict, runs, given: str = None) -> LeverChoice:
    """The lever's option for this machine and `shape`: the given one, else the cached choice, else measured
    now (`runs()` -> {option: callable}, timed by `time_options`) and cached."""
    given = given or _given.get(lever, "auto")
    if given != "auto":
        _memo["given", lever] = LeverChoice(lever, given, {}, "given")
        return _memo["given", lever]
    key = cache_key(lever, shape)
    if key in _memo:
        return _memo[key]
    path = cache_dir() / "levers.json"
    found = read_cached(path, key, lever)
    if found is None:
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):  # the models built to be timed leave the global RNG as it was
            seconds = time_options(runs())
        found = LeverChoice(lever, choose(lever, seconds), seconds, "measured")
        log.info("%s: %s (%s) measured in %.1f s", lever, found.choice,
                 ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in seconds.items()), time.perf_counter() - t0)
        write_cached(path, key, found)
    _memo[key] = found
    return found


def chosen() -> dict:
    """The levers decided in this process, for provenance: {lever: [LeverChoice.to_json()]}."""
    out = {}
    for c in _memo.values():
        out.setdefault(c.lever, []).append(c.to_json())
    return out


def model_shape(cfg) -> dict:
    return {k: getattr(cfg, k) for k in ("d_model", "n_heads", "encoder_layers", "decoder_layers", "d_ff",
                                         "vocab_size")}


def search_kernels(model) -> LeverChoice:
    """`search_kernels` for this model: a few beam-search steps (16 sentences of 12 random pieces, beam 4,
    8 tokens each) with the prepacked copy and with the model as it is."""
    from nmt.model import can_prepack
    if not can_prepack(model):
        return LeverChoice("search_kernels", "plain", {}, "given")

    def runs():
        from nmt.search import beam_search
        g = torch.Generator().manual_seed(0)
        src = torch.randint(4, model.cfg.vocab_size, (16, 12), generator=g)  # (B, S): no special pieces
        packed = model.for_cpu_search()

        def search(m):
            return lambda: beam_search(m, src, beam=4, max_len_a=0, max_len_b=8, min_len=7)
        return {"plain": search(model), "packed": search(packed)}
    return decide("search_kernels", model_shape(model.cfg), runs)


def trainer(mcfg, bf16: bool):
    """A fresh model of `mcfg` and its optimizer (AdamW, fused); returns step(batch): one update on batch (src,
    tgt), each (B, T + 1), under bf16 autocast or not, with a float32 cross-entropy."""
    from nmt.model import Transformer
    model = Transformer(mcfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step(batch):
        src, tgt = batch
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(src, tgt[:, :-1])  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tgt[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def training_amp(mcfg, given: str) -> LeverChoice:
    """`amp` for training this model shape on the CPU: a few updates (`trainer`) on 32 random sentence pairs of
    16 pieces, float32 against bf16 autocast, each on its own fresh model."""
    def runs():
        g = torch.Generator().manual_seed(0)
        batch = torch.randint(4, mcfg.vocab_size, (2, 32, 16), generator=g)  # (2, B, T): no special pieces
        steps = {name: trainer(mcfg, bf16) for name, bf16 in (("fp32", False), ("bf16", True))}
        return {name: (lambda step=step: step(batch)) for name, step in steps.items()}
    return decide("amp", model_shape(mcfg), runs, given={"auto": "auto", "bf16": "bf16", "none": "fp32"}[given])
