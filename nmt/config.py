"""One typed config per phase: ModelConfig, TrainConfig, DecodeConfig; the presets; validation.

Each field carries its help text, so the command-line flags are generated from the dataclasses
(`add_arguments` / `from_arguments`). Every config checks itself when it is built (`__post_init__`), so
a setting that cannot work is refused in one place, before anything is written, with the flag's name and
the range it allows. The resolved configs are saved in every checkpoint: decoding needs only `--checkpoint`.

Three lengths with three names: `max_train_len` (training pairs longer than this are filtered),
`max_positions` (the model's longest sequence; evaluation truncates to it), and `max_len_a`/`max_len_b`
(the search's longest hypothesis).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from nmt.errors import UsageError


def in_file(e: UsageError, where: str) -> str:
    """The error of a setting read from a file: 'FILE: section.key: value: expected ...'."""
    return f"{where}.{e.field}: {e.detail}" if getattr(e, "field", None) else f"{where}: {e}"


def _f(default: Any, help: str, **kw) -> Any:
    """A dataclass field with its command-line help text."""
    return field(default=default, metadata={"help": help, **kw})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _require(ok: bool, name: str, allowed: str, value) -> None:
    if not ok:
        raise UsageError(f"{flag(name)} {value!r}: expected {allowed}", field=name,
                         detail=f"{value!r}: expected {allowed}")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _whole(x) -> bool:
    """An int that is not a bool (True would pass as 1)."""
    return isinstance(x, int) and not isinstance(x, bool)


TEMPERATURES = (0.01, 100.0)  # --temperature: beyond these, logits / T overflow or every token ties
DECODERS = ("beam", "sample", "epsilon", "mbr")  # nmt.evaluate.decode_hypotheses
MAX_SEED = 2**32 - 1  # SentencePiece's seed is an unsigned 32-bit number
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")  # owner/dataset


# The largest model a config may describe (a crafted config must not allocate without a bound; a checkpoint's
# weights must also have the shapes its config says, `nmt.checkpoint.check_shapes`, before anything is built).
MODEL_LIMITS = {"vocab_size": 1_000_000, "d_model": 16_384, "n_heads": 256, "encoder_layers": 128,
                "decoder_layers": 128, "d_ff": 131_072, "max_positions": 8_192}


@dataclass
class ModelConfig:
    vocab_size: int = _f(8000, "size of the joint SentencePiece vocabulary (set from the tokenizer)")
    d_model: int = _f(256, "width of the model (embeddings, attention, residual stream)")
    n_heads: int = _f(4, "attention heads per layer")
    encoder_layers: int = _f(3, "encoder layers")
    decoder_layers: int = _f(3, "decoder layers")
    d_ff: int = _f(1024, "hidden width of the feed-forward blocks")
    dropout: float = _f(0.1, "dropout on embeddings and residual branches")
    activation_dropout: float = _f(0.0, "dropout on the feed-forward hidden layer (fairseq's default: 0)")
    attention_dropout: float = _f(0.0, "dropout on attention weights")
    max_positions: int = _f(256, "longest source or target sequence the model takes (tokens, EOS included); "
                                 "evaluation truncates longer lines to it, with a warning")

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_heads", "encoder_layers", "decoder_layers", "d_ff", "max_positions"):
            v = getattr(self, name)
            _require(_whole(v) and 1 <= v <= MODEL_LIMITS[name], name, f"a whole number in [1, {MODEL_LIMITS[name]}]",
                     v)
        _require(self.d_model % self.n_heads == 0, "d_model", f"a multiple of --n-heads {self.n_heads}", self.d_model)
        for name in ("dropout", "activation_dropout", "attention_dropout"):
            v = getattr(self, name)
            _require(_finite(v) and 0.0 <= v < 1.0, name, "a probability in [0, 1)", v)


@dataclass
class TrainConfig:
    run_dir: str = _f("runs/default", "run directory: config, tokenizer, checkpoints, log.jsonl")
    data_dir: Optional[str] = _f(None, "Multi30k task-1 layout {split}.{lang}.gz; default data/multi30k, "
                                       "else ../shared/data/multi30k")
    hub: Optional[str] = _f(None, "read the corpus from the Hugging Face hub instead, e.g. bentrevett/multi30k")
    train_src: Optional[str] = _f(None, "plain-text training source file (with --train-tgt, replaces --data-dir)")
    train_tgt: Optional[str] = _f(None, "plain-text training target file")
    valid_src: Optional[str] = _f(None, "plain-text validation source file")
    valid_tgt: Optional[str] = _f(None, "plain-text validation target file")
    src_lang: str = _f("en", "source language (en, de, fr, cs)")
    tgt_lang: str = _f("de", "target language (en, de, fr, cs)")
    vocab_size: int = _f(8000, "joint SentencePiece vocabulary size (trained on the training split only)")
    tokenizer: Optional[str] = _f(None, "reuse this SentencePiece model (a .model file or a run directory) "
                                        "instead of training one")
    max_train_len: int = _f(128, "training pairs with more tokens than this on either side are filtered (logged)")
    num_proc: int = _f(0, "processes for datasets.map when encoding (0: one per core for large corpora)")
    alpha: float = _f(0.0, "label smoothing alpha (Szegedy et al. 2016; Mueller et al. 2019): 0 = hard targets")
    smoothing: str = _f("uniform", "where the smoothing mass alpha goes: uniform (every non-padding piece), unigram "
                                   "(the target side's piece frequencies, Gao et al. 2020) or masked (uniform over the "
                                   "pieces the target side uses, Chen et al. 2022) or unigram-noeos (the unigram prior "
                                   "without end-of-sentence mass, renormalised)")
    confidence_penalty: float = _f(0.0, "confidence penalty beta (Pereyra et al. 2017): the loss minus beta times the "
                                        "entropy of each prediction; 0 = off")
    max_tokens: int = _f(4096, "token budget per batch and per process (under torchrun: per GPU, as in fairseq): "
                               "sentences x longest sequence <= max_tokens")
    update_freq: int = _f(1, "gradient accumulation: batches per optimizer update")
    lr: float = _f(1e-3, "peak learning rate (reached after warm-up)")
    warmup_steps: int = _f(1000, "linear warm-up updates to --lr, then the --lr-schedule decay")
    lr_schedule: str = _f("inverse_sqrt", "after warm-up: inverse_sqrt (lr * sqrt(warmup / step), Vaswani et al.) or "
                                          "linear (to 0 at the last update of --max-epochs / --max-steps)")
    adam_beta1: float = _f(0.9, "Adam beta1")
    adam_beta2: float = _f(0.98, "Adam beta2")
    adam_eps: float = _f(1e-9, "Adam epsilon")
    weight_decay: float = _f(0.0, "decoupled weight decay (AdamW)")
    clip_norm: float = _f(1.0, "gradient clipping by global norm (0: off)")
    max_epochs: int = _f(10, "stop after this many epochs")
    max_steps: int = _f(0, "stop after this many updates (0: no limit)")
    patience: int = _f(0, "early stopping: epochs without a better validation NLL (0: off)")
    average_last: int = _f(0, "average the weights of the last N epoch checkpoints into checkpoint_avg.pt "
                              "(0 or 1: off)")
    save_every_steps: int = _f(0, "also write checkpoint_last.pt every N updates (0: only at epoch ends)")
    seed: int = _f(1, "random seed: initialisation, dropout, batch order")
    device: str = _f("auto", "auto, cpu or cuda")
    threads: int = _f(0, "CPU threads for torch (0: torch's default)")
    amp: str = _f("none", "mixed precision: none (float32); bf16 (CUDA, or a CPU with bf16 units); fp16 (CUDA, with a "
                          "gradient scaler); auto: bf16 where the GPU supports it, else fp16, and on the CPU bf16 only "
                          "where a start-up check measures its products faster (the choice is recorded in config.json)")
    log_every: int = _f(50, "updates between training-loss lines in log.jsonl")
    fit_temperature: bool = _f(True, "fit the validation temperature of the final model when training ends")
    teacher: Optional[str] = _f(None, "distil from this checkpoint or run directory (its tokenizer is reused)")
    distill_beta: float = _f(0.5, "distillation: weight of the soft term, (1 - beta) CE + beta T^2 KL")
    distill_temperature: float = _f(1.0, "distillation: temperature of teacher and student in the soft term")

    def __post_init__(self):
        for name in ("vocab_size", "max_train_len", "max_tokens", "update_freq", "max_epochs", "log_every"):
            v = getattr(self, name)
            _require(_whole(v) and v >= 1, name, "a whole number >= 1", v)
        for name in ("max_steps", "patience", "average_last", "save_every_steps", "warmup_steps", "threads"):
            v = getattr(self, name)
            _require(_whole(v) and v >= 0, name, "a whole number >= 0", v)
        _require(_finite(self.lr) and self.lr > 0, "lr", "a positive finite learning rate", self.lr)
        _require(_whole(self.seed) and 0 <= self.seed <= MAX_SEED, "seed", f"a whole number in [0, {MAX_SEED}]",
                 self.seed)
        _require(self.hub is None or (isinstance(self.hub, str) and bool(HUB_ID.match(self.hub))
                                      and ".." not in self.hub), "hub", "a dataset id OWNER/NAME (letters, digits, "
                 "'.', '_', '-'; no '..')", self.hub)
        _require(_finite(self.alpha) and 0.0 <= self.alpha < 1.0, "alpha",
                 "a number in [0, 1) (at 1 the target carries no information)", self.alpha)
        for name in ("adam_beta1", "adam_beta2"):
            v = getattr(self, name)
            _require(_finite(v) and 0.0 <= v < 1.0, name, "a number in [0, 1)", v)
        for name in ("adam_eps", "weight_decay", "clip_norm"):
            v = getattr(self, name)
            _require(_finite(v) and v >= 0, name, "a finite number >= 0", v)
        _require(self.smoothing in SMOOTHING_PRIORS, "smoothing", ", ".join(SMOOTHING_PRIORS), self.smoothing)
        _require(_finite(self.confidence_penalty) and self.confidence_penalty >= 0, "confidence_penalty",
                 "a finite number >= 0", self.confidence_penalty)
        _require(self.amp in ("auto", "bf16", "fp16", "none"), "amp", "auto, bf16, fp16 or none", self.amp)
        _require(self.lr_schedule in ("inverse_sqrt", "linear"), "lr_schedule", "inverse_sqrt or linear",
                 self.lr_schedule)
        _require(_finite(self.distill_beta) and 0.0 <= self.distill_beta <= 1.0, "distill_beta", "a number in [0, 1]",
                 self.distill_beta)
        _require(_finite(self.distill_temperature) and self.distill_temperature > 0, "distill_temperature",
                 "a positive finite number", self.distill_temperature)
        if self.teacher and (self.alpha or self.confidence_penalty):
            raise UsageError("--teacher with --alpha or --confidence-penalty > 0: a distilled student trains without "
                             "smoothing here")


@dataclass
class DecodeConfig:
    beam: int = _f(4, "beam size (1: greedy); at most the vocabulary size")
    length_penalty: float = _f(1.0, "beam scores are log p(y|x) / len(y)^length_penalty (len counts EOS); in "
                                    "[-5, 5]")
    max_len_a: float = _f(1.5, "longest hypothesis: max_len_a * source_length + max_len_b tokens (EOS included)")
    max_len_b: int = _f(10, "see max_len_a")
    min_len: int = _f(0, "EOS is not allowed before this many tokens (the decoding benchmark forces equal "
                         "lengths with it); must not exceed the longest hypothesis")
    temperature: str = _f("1.0", "divide logits by T before the log-softmax at every step, T in [0.01, 100]; "
                                 "'auto' uses the temperature fitted on the validation set (temperature.json)")
    batch_size: int = _f(64, "sentences decoded together")
    n_bins: int = _f(15, "equal-width confidence bins for ECE")
    inference_bins: int = _f(15, "equal-width bins for inference ECE (Wang et al. 2020's scripts use 20)")
    inference_eos: str = _f("include", "inference ECE: include or exclude EOS positions (Wang et al. exclude them)")
    labeller: str = _f("ter", "how emitted tokens are labelled correct for inference ECE: ter (TER alignment with "
                              "shifts), ter-wang (the same, and the token after a missing reference word is wrong, "
                              "as in Wang et al. 2020's scripts) or edit (minimum edit distance, ties towards matches)")
    split: str = _f("test_2016_flickr", "corpus split to translate when no --input is given")
    decoder: str = _f("beam", "beam (beam search; --beam 1 is greedy), sample (ancestral sampling at T), epsilon (one "
                              "epsilon sample) or mbr (minimum Bayes risk by chrF over --samples epsilon samples)")
    samples: int = _f(32, "mbr: candidate translations drawn per sentence")
    epsilon: float = _f(0.02, "epsilon and mbr: pieces with probability below epsilon are never drawn (Hewitt et al. "
                              "2022); in (0, 1)")
    seed: int = _f(0, "sample, epsilon, mbr: the sampler's seed (the same seed, input and batch size give the same "
                      "translations)")
    dtype: str = _f("float32", "the search's precision: float32, or bfloat16 (autocast, torch's own linear maps; "
                               "on a CPU only with bf16 units): faster on some CPUs, not float32's hypotheses, and "
                               "its BLEU, chrF and inference-ECE signatures say search:bf16")

    def __post_init__(self):
        _require(self.decoder in DECODERS, "decoder", ", ".join(DECODERS), self.decoder)
        _require(self.dtype in ("float32", "bfloat16"), "dtype", "float32 or bfloat16", self.dtype)
        _require(_whole(self.samples) and 1 <= self.samples <= 1024, "samples", "a whole number in [1, 1024]",
                 self.samples)
        _require(_finite(self.epsilon) and 0 < self.epsilon < 1, "epsilon", "a number in (0, 1)", self.epsilon)
        _require(_whole(self.seed) and 0 <= self.seed <= MAX_SEED, "seed", f"a whole number in [0, {MAX_SEED}]",
                 self.seed)
        for name in ("beam", "batch_size", "n_bins", "inference_bins", "max_len_b"):
            v = getattr(self, name)
            lo = 0 if name == "max_len_b" else 1
            _require(_whole(v) and v >= lo, name, f"a whole number >= {lo}", v)
        _require(_whole(self.min_len) and self.min_len >= 0, "min_len", "a whole number >= 0", self.min_len)
        _require(_finite(self.max_len_a) and self.max_len_a >= 0, "max_len_a", "a finite number >= 0", self.max_len_a)
        _require(_finite(self.length_penalty) and abs(self.length_penalty) <= 5, "length_penalty",
                 "a number in [-5, 5]", self.length_penalty)
        _require(self.inference_eos in ("include", "exclude"), "inference_eos", "include or exclude",
                 self.inference_eos)
        _require(self.labeller in ("ter", "ter-wang", "edit"), "labeller", "ter, ter-wang or edit", self.labeller)
        parse_temperature(self.temperature)


SMOOTHING_PRIORS = ("uniform", "unigram", "masked", "unigram-noeos")


def parse_grid(spec: str) -> list:
    """'0.7:1.6:0.1' (start:stop:step, inclusive) or '0.8,1,1.2'; 'none' for no sweep."""
    if spec in ("", "none"):
        return []
    try:
        if ":" in spec:
            start, stop, step = (float(x) for x in spec.split(":"))
            if not (step > 0 and stop >= start):
                raise ValueError
            n = int(round((stop - start) / step)) + 1
            grid = [round(start + i * step, 6) for i in range(n)]
        else:
            grid = [float(x) for x in spec.split(",")]
    except ValueError:
        raise UsageError(f"--sweep {spec!r}: expected start:stop:step with step > 0, a,b,c, or none") from None
    if not all(0 < t < float("inf") for t in grid):
        raise UsageError(f"--sweep {spec!r}: temperatures must be positive and finite")
    return grid


def parse_temperature(value) -> Optional[float]:
    """'auto' -> None; else a positive finite T (a UsageError otherwise)."""
    if str(value) == "auto":
        return None
    try:
        t = float(value)
    except ValueError:
        raise UsageError(f"--temperature {value!r}: expected a positive number or 'auto'") from None
    _require(math.isfinite(t) and TEMPERATURES[0] <= t <= TEMPERATURES[1], "temperature",
             f"a number in [{TEMPERATURES[0]:g}, {TEMPERATURES[1]:g}] or 'auto'", value)
    return t


# Presets are data: the values `python -m nmt.train --preset NAME` starts from; flags override them.
PRESETS = {
    "cpu": dict(d_model=256, n_heads=4, encoder_layers=3, decoder_layers=3, d_ff=1024, dropout=0.1,
                vocab_size=8000, max_tokens=2500, lr=2e-3, warmup_steps=400, lr_schedule="linear", max_epochs=6,
                average_last=2),
    "gpu": dict(d_model=512, n_heads=8, encoder_layers=6, decoder_layers=6, d_ff=2048, dropout=0.3,
                vocab_size=8000, max_tokens=8192, lr=7e-4, warmup_steps=1000, max_epochs=40, patience=5,
                average_last=5, amp="auto"),
    "student": dict(d_model=128, n_heads=4, encoder_layers=2, decoder_layers=2, d_ff=512, dropout=0.1,
                    vocab_size=8000, max_tokens=2500, lr=8e-3, warmup_steps=400, lr_schedule="linear", max_epochs=6,
                    average_last=2),
    "smoke": dict(d_model=64, n_heads=2, encoder_layers=1, decoder_layers=1, d_ff=128, dropout=0.1,
                  vocab_size=1000, max_tokens=2000, lr=2e-3, warmup_steps=50, max_steps=100, max_epochs=1),
}
# Minutes a whole run of each preset takes on 2 CPU cores (docs/results.md); None: not measured.
PRESET_MINUTES = {"cpu": 15, "gpu": None, "student": 7, "smoke": 0.3}
# A token-level student runs its teacher's forward pass at every batch: 11.6 minutes against 6.5 alone
# (results/distill/README.md), so its estimate is the preset's times this.
TOKEN_DISTILL_FACTOR = 1.8
PRESET_NOTES = {
    "cpu": "the study's recipe on 2 CPU cores (docs/results.md has its minutes and scores)",
    "gpu": "a larger model for one GPU: its numbers are unmeasured until a GPU run exists",
    "student": "the distillation studies' student (1.95M parameters): the CPU recipe at d_model 128, 2+2 layers, its "
               "learning rate chosen on validation (docs/results.md)",
    "smoke": "a tiny model for a few updates: checks the pipeline in a minute; not a result",
}


def describe_presets() -> str:
    lines, w = [], max(map(len, PRESETS))
    for name, values in PRESETS.items():
        lines.append(f"  {name:{w}s} {PRESET_NOTES[name]}")
        lines.append(" " * (w + 3) + " ".join(f"{flag(k)} {v}" for k, v in values.items()))
    return "\n".join(lines)


# Older checkpoints saved these names; they load under the new ones.
LEGACY_NAMES = {"max_len": "max_train_len"}


def train_config_from(d: dict, where: str = None) -> TrainConfig:
    """A TrainConfig from a saved dict (config.json or a checkpoint), older field names included. With `where`
    (e.g. "RUN/config.json: train_config"), errors name that place and the key, not a flag."""
    try:
        if not isinstance(d, dict):
            raise UsageError(f"expected a table of training settings, not {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        values = {LEGACY_NAMES.get(k, k): v for k, v in d.items()}
        return TrainConfig(**{k: v for k, v in values.items() if k in known})
    except UsageError as e:
        if where is None:
            raise
        raise UsageError(in_file(e, where)) from None


def model_config_from(d: dict, where: str) -> ModelConfig:
    """A ModelConfig from a saved dict; an unknown key or a bad value is named with `where`."""
    if not isinstance(d, dict):
        raise UsageError(f"{where}: expected a table of model settings, not {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise UsageError(f"{where}: unknown keys {', '.join(unknown)} (expected {', '.join(sorted(known))})")
    try:
        return ModelConfig(**d)
    except UsageError as e:
        raise UsageError(in_file(e, where)) from None


def add_arguments(parser: argparse.ArgumentParser, cls, skip: tuple = ()) -> None:
    """Add one --flag per field of the dataclass `cls` (defaults and help from the fields)."""
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        help_text = f"{f.metadata.get('help', '')} (default: {f.default})"
        if f.type in ("bool", bool):
            group.add_argument(flag(f.name), dest=f.name, default=None,
                               action=argparse.BooleanOptionalAction, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            group.add_argument(flag(f.name), dest=f.name, type=kind, default=None, help=help_text)


def explicit_arguments(cls, args: argparse.Namespace) -> dict:
    """The fields of `cls` that were given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def from_arguments(cls, args: argparse.Namespace, base=None, preset: dict = None):
    """Build `cls` from parsed flags over `preset` over `base` (or the defaults); validated on construction."""
    values = dataclasses.asdict(base) if base is not None else {}
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in (preset or {}).items() if k in names})
    values.update(explicit_arguments(cls, args))
    return cls(**values)
