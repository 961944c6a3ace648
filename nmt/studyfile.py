"""The study file: studies/NAME.toml, read with tomllib and validated in one place (`load_study`).

A study names its data, its models (how each is trained, with which seeds), what to evaluate, and its claims.
`python -m nmt.study run FILE` trains the runs that are missing and writes results/NAME/. Every key is
checked before anything is trained: an unknown key, a missing field or a bad value stops with the key's path
and what is allowed (a StudyError, exit 2). studies/main.toml is the main job; copy a file to start another.

    name = "main"                         # results/NAME (letters, digits, - and _)
    [data]    pair = "en-de"              # a Multi30k pair; or dir = "DIR" (that layout); or the files
              train = ["a.en", "a.de"], valid = [...], test = {NAME = ["src", "ref"]}
    [defaults] preset = "cpu", seeds = [1, 2, 3], flags = {}     # for every model
    [[models]] name = "hard", label = "hard targets", alpha = 0.0     # + smoothing, confidence_penalty,
               teacher = "NAME" (+ distill = {kind, beta, temperature}), pair, preset, seeds, flags
    [evaluate] beam = 4, test_sets = ["test_2016_flickr"] or "all", sweep = "0.7:1.6:0.1", sweep_seeds,
               baseline = "hard", inference = [{labels, bins, eos}, ...], beams = [1, 2, 4, ...]
    [margins]  bleu_beam = 0.5, ece_forced = 0.005, ...    # equivalence margins, written before the runs
    [[claims]] claim = "ECE(LS) < ECE(hard)", metric = "ece_forced", a = "ls", b = "hard",
               direction = "less" | "greater" | "equivalent" (+ margin, else [margins]'s),
               family = "primary" | "secondary", source = "paper" | "study", pool = "blocks" | "general"

A model in a claim is its name (at T = 1) or {model = NAME, temperature = "fitted"}; a pooled claim's a and b are
lists (one pair of models per block). Holm adjusts within a family. Every BLEU or chrF ordering claim needs its
equivalence companion (the same metric, models and test set, direction "equivalent"), so that "inconclusive" can
be told apart from "no difference worth the name" (`nmt.stats`).
"""
from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from nmt.config import MAX_SEED, PRESETS, DecodeConfig, ModelConfig, TrainConfig, parse_grid
from nmt.errors import StudyError, UsageError
from nmt.metrics import CLAIMABLE
from nmt.names import is_name
from nmt.stats import FAMILIES, POOLS

MAX_SEEDS = 1000  # seeds of one model in a study

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
METRICS = CLAIMABLE  # the metrics a claim may name (nmt.metrics)
SMOOTHING = ("uniform", "unigram", "masked", "unigram-noeos")
DISTILL_KINDS = ("token", "sequence")
LABELLERS = ("ter", "ter-wang", "edit")
# Flags a study may not set per model: the runner sets them from the model's own keys.
RUNNER_FLAGS = {"run_dir", "seed", "alpha", "smoothing", "confidence_penalty", "teacher", "distill_beta",
                "distill_temperature", "distill_kind", "src_lang", "tgt_lang", "data_dir", "train_src", "train_tgt",
                "valid_src", "valid_tgt", "tokenizer", "device", "threads"}




@dataclass(frozen=True)
class Distill:
    kind: str = "token"  # token-level (Kim & Rush 2016 Sec. 3.1) or sequence-level (their Sec. 3.2)
    beta: float = 0.5
    temperature: float = 1.0


@dataclass(frozen=True)
class ModelSpec:
    """A model of a study: its identity is these fields (never its label, which is display only)."""
    name: str
    label: str
    alpha: float = 0.0
    smoothing: str = "uniform"
    confidence_penalty: float = 0.0
    teacher: Optional[str] = None
    distill: Optional[Distill] = None
    pair: str = "en-de"
    preset: str = "cpu"
    seeds: tuple = (1,)
    flags: tuple = ()  # ((flag name, value), ...) sorted: extra nmt.train settings

    @property
    def src(self) -> str:
        return self.pair.split("-")[0]

    @property
    def tgt(self) -> str:
        return self.pair.split("-")[1]

    @property
    def variant(self) -> str:
        """hard, uniform, unigram, masked or cp (confidence penalty), for tables."""
        if self.confidence_penalty:
            return "cp"
        return "hard" if self.alpha == 0 else self.smoothing


@dataclass(frozen=True)
class ModelRef:
    """One row group of a study: a model at T = 1 or at its fitted temperature."""
    model: str
    t_kind: str = "1"  # "1" or "fitted": the row's `t_kind`

    def to_dict(self) -> dict:
        return {"model": self.model, "t_kind": self.t_kind}


@dataclass(frozen=True)
class ClaimSpec:
    """A claim: a against b by `metric`, paired over seeds. Pooled (a and b lists of the same length, e.g. one
    model per language pair): paired over every (a[i], b[i], seed) unit, one difference each."""
    claim: str
    metric: str
    a: "ModelRef | tuple"
    b: "ModelRef | tuple"
    direction: str
    margin: Optional[float] = None
    source: str = "paper"
    test_set: Optional[str] = None  # default: the study's first test set
    family: str = "primary"  # the Holm family (nmt.stats.FAMILIES)
    pool: Optional[str] = None  # a pooled claim: "blocks" (fixed effect) or "general" (a t over block means)
    test_sets: tuple = ()  # pooled over these test sets, each a block (the same a and b on each)
    x: tuple = ()  # a trend claim: a is its models (b is ()), x their alphas; judged on per-seed slopes


@dataclass(frozen=True)
class InferenceProtocol:
    """How inference ECE is computed: the labeller, the bins, EOS in or out."""
    labeller: str = "ter"
    bins: int = 15
    eos: str = "include"


@dataclass(frozen=True)
class EvaluateSpec:
    beam: int = 4
    test_sets: tuple = ("test_2016_flickr",)  # ("all",): every {split}.{src,tgt}.gz pair of the data directory
    sweep: tuple = ()
    sweep_seeds: str = "all"  # "all" or "first"
    greedy: bool = True
    baseline: Optional[str] = None  # the model every row's paired bootstrap compares with (same seed)
    inference: tuple = (InferenceProtocol(), InferenceProtocol("ter-wang", 20, "exclude"))
    beams: tuple = ()  # a beam-size sweep, at T = 1 and the fitted T
    n_bins: int = 15
    batch_size: int = 64
    decoders: tuple = ()  # sampling decoders evaluated besides beam and greedy: "epsilon", "mbr"
    samples: int = 32  # mbr: candidates per sentence
    epsilon: float = 0.02  # epsilon and mbr: the sampler's epsilon
    seed: int = 0  # epsilon and mbr: the sampler's seed
    sweep_test_sets: str = "all"  # the temperature and beam sweeps on "all" test sets or the "first" only
    oracle_temperature: bool = False  # per row, the T fitted on that test set's references (a diagnostic)


@dataclass(frozen=True)
class DataSpec:
    dir: Optional[str] = None
    train: Optional[tuple] = None  # (source file, target file)
    valid: Optional[tuple] = None
    test: tuple = ()  # ((name, source file, reference file), ...)


@dataclass(frozen=True)
class Study:
    name: str
    path: str
    description: str
    data: DataSpec
    models: tuple
    evaluate: EvaluateSpec
    claims: tuple
    runs: str = "runs"
    slurm: tuple = ()  # ((key, value), ...) for the SLURM launcher

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)


# -- validation helpers ------------------------------------------------------------------------------

class _Checker:
    def __init__(self, path):
        self.path = str(path)

    def fail(self, key: str, msg: str):
        raise StudyError(f"{self.path}: {key}: {msg}")

    def table(self, value, key: str, allowed: dict, required=()) -> dict:
        """`value` must be a table with keys from `allowed` ({key: description}) and all of `required`."""
        if not isinstance(value, dict):
            self.fail(key, f"expected a table, not {type(value).__name__}")
        for k in value:
            if k not in allowed:
                self.fail(f"{key}.{k}" if key else k, f"unknown key (allowed: {', '.join(allowed)})")
        for k in required:
            if k not in value:
                self.fail(f"{key}.{k}" if key else k, f"missing (expected {allowed[k]})")
        return value

    def typed(self, value, key: str, kinds, what: str):
        if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            self.fail(key, f"{value!r}: expected {what}")
        if not isinstance(value, kinds):
            self.fail(key, f"{value!r}: expected {what}")
        return value

    def number(self, value, key: str, lo=None, hi=None, lo_open=False, hi_open=False, what="a number"):
        self.typed(value, key, (int, float), what)
        ok = math.isfinite(value) and (lo is None or (value > lo if lo_open else value >= lo)) and \
            (hi is None or (value < hi if hi_open else value <= hi))
        if not ok:
            self.fail(key, f"{value!r}: expected {what}")
        return float(value)

    def name(self, value, key: str) -> str:
        """A name that becomes part of paths (results/NAME, hyps/NAME.seed...): `nmt.names`' rule as well."""
        self.typed(value, key, str, "a name")
        if not NAME_RE.match(value) or not is_name(value):
            self.fail(key, f"{_short(value)}: expected 1-100 letters, digits, '.', '-' and '_' (no '..')")
        return value

    def choice(self, value, key: str, choices) -> str:
        if value not in choices:
            self.fail(key, f"{value!r}: expected one of {', '.join(map(str, choices))}")
        return value

    def seeds(self, value, key: str) -> tuple:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_SEEDS or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in value):
            self.fail(key, f"{_short(value)}: expected a list of 1 to {MAX_SEEDS} whole numbers in [0, {MAX_SEED}]")
        if len(set(value)) != len(value):
            self.fail(key, f"{value!r}: a seed is listed twice")
        return tuple(value)

    def pair(self, value, key: str) -> str:
        from nmt.data import LANGS
        self.typed(value, key, str, "a language pair such as en-de")
        parts = value.split("-")
        if len(parts) != 2 or parts[0] not in LANGS or parts[1] not in LANGS or parts[0] == parts[1]:
            self.fail(key, f"{value!r}: expected SRC-TGT with two different languages of {', '.join(LANGS)}")
        return value


TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} | {f.name for f in dataclasses.fields(ModelConfig)}


def _flags(ck: _Checker, value, key: str) -> tuple:
    ck.table(value, key, {k: "" for k in sorted(TRAIN_FIELDS - RUNNER_FLAGS)})
    for k, v in value.items():
        ck.typed(v, f"{key}.{k}", (int, float, str, bool), "a number, string or boolean")
    return tuple(sorted(value.items()))


def train_configs(spec: ModelSpec):
    """The TrainConfig and ModelConfig that `nmt.train` builds for this model (validated by their classes)."""
    values = {**PRESETS[spec.preset], **dict(spec.flags), "alpha": spec.alpha, "src_lang": spec.src,
              "tgt_lang": spec.tgt}
    if spec.smoothing != "uniform":
        values["smoothing"] = spec.smoothing
    if spec.confidence_penalty:
        values["confidence_penalty"] = spec.confidence_penalty
    if spec.teacher and spec.distill.kind == "token":  # a sequence-level student trains on plain NLL
        values["distill_beta"], values["distill_temperature"] = spec.distill.beta, spec.distill.temperature
    tnames = {f.name for f in dataclasses.fields(TrainConfig)}
    mnames = {f.name for f in dataclasses.fields(ModelConfig)}
    return (TrainConfig(**{k: v for k, v in values.items() if k in tnames}),
            ModelConfig(**{k: v for k, v in values.items() if k in mnames}))


MODEL_KEYS = {"name": "a name", "label": "the name shown in tables", "alpha": "a number in [0, 1)",
              "smoothing": "uniform, unigram, masked or unigram-noeos", "confidence_penalty": "a number >= 0",
              "teacher": "the name of another model", "distill": "a table {kind, beta, temperature}",
              "pair": "a language pair", "preset": "a preset", "seeds": "a list of seeds",
              "flags": "a table of nmt.train settings"}


def _model(ck: _Checker, m, key: str, defaults: dict) -> ModelSpec:
    ck.table(m, key, MODEL_KEYS, required=("name",))
    name = ck.name(m["name"], f"{key}.name")
    alpha = ck.number(m.get("alpha", 0.0), f"{key}.alpha", 0, 1, hi_open=True, what="a number in [0, 1)")
    smoothing = ck.choice(m.get("smoothing", "uniform"), f"{key}.smoothing", SMOOTHING)
    beta = ck.number(m.get("confidence_penalty", 0.0), f"{key}.confidence_penalty", 0, what="a finite number >= 0")
    preset = ck.choice(m.get("preset", defaults["preset"]), f"{key}.preset", sorted(PRESETS))
    seeds = ck.seeds(m["seeds"], f"{key}.seeds") if "seeds" in m else defaults["seeds"]
    pair = ck.pair(m["pair"], f"{key}.pair") if "pair" in m else defaults["pair"]
    flags = dict(defaults["flags"])
    flags.update(dict(_flags(ck, m.get("flags", {}), f"{key}.flags")))
    distill = None
    if "distill" in m:
        if "teacher" not in m:
            ck.fail(f"{key}.distill", "needs a teacher")
        d = ck.table(m["distill"], f"{key}.distill", {"kind": "token or sequence", "beta": "a number in [0, 1]",
                                                     "temperature": "a positive number"})
        distill = Distill(ck.choice(d.get("kind", "token"), f"{key}.distill.kind", DISTILL_KINDS),
                          ck.number(d.get("beta", 0.5), f"{key}.distill.beta", 0, 1, what="a number in [0, 1]"),
                          ck.number(d.get("temperature", 1.0), f"{key}.distill.temperature", 0, lo_open=True,
                                    what="a positive finite number"))
    teacher = ck.name(m["teacher"], f"{key}.teacher") if "teacher" in m else None
    if teacher and distill is None:
        distill = Distill()
    label = m.get("label", name)
    ck.typed(label, f"{key}.label", str, "a string")
    spec = ModelSpec(name, label, alpha, smoothing, beta, teacher, distill, pair, preset, seeds,
                     tuple(sorted(flags.items())))
    try:
        train_configs(spec)
    except UsageError as e:
        ck.fail(key, f"the model cannot be trained: {e}")
    return spec


def _ref(ck: _Checker, value, key: str, names) -> ModelRef:
    if isinstance(value, str):
        ref = ModelRef(value)
    else:
        ck.table(value, key, {"model": "a model's name", "t_kind": '"1" or "fitted"'}, required=("model",))
        ref = ModelRef(value["model"], ck.choice(str(value.get("t_kind", "1")), f"{key}.t_kind", ("1", "fitted")))
    if ref.model not in names:
        ck.fail(key, f"{ref.model!r}: not a model of this study (models: {', '.join(names)})")
    return ref


def _refs(ck: _Checker, value, key: str, names):
    """A model reference, or for a pooled claim a non-empty list of them (a tuple)."""
    if isinstance(value, list):
        if not value:
            ck.fail(key, "[]: expected a model, or a non-empty list of models (a pooled claim)")
        return tuple(_ref(ck, v, f"{key}[{i}]", names) for i, v in enumerate(value))
    return _ref(ck, value, key, names)


CLAIM_KEYS = {"claim": "its sentence", "metric": f"one of {', '.join(METRICS)}", "a": "a model (or a list: pooled)",
              "b": "a model (or a list, paired with a's)",
              "direction": "less, greater or equivalent",
              "margin": "a positive number (equivalent only; default: [margins] of the metric)",
              "family": "primary (the paper's claims) or secondary (every other metric)",
              "source": "paper or study", "test_set": "a test set of [evaluate]",
              "test_sets": "test sets of [evaluate] (pooled over them, each a block)",
              "pool": "blocks or general (pooled claims only)",
              "trend": "three or more models, in order (instead of a and b): the slope of the metric over their "
                       "alpha, per seed"}
# an ordering on these needs an equivalence companion
COMPANION_METRICS = ("bleu_beam", "bleu_greedy", "chrf", "bleu_epsilon", "chrf_epsilon", "bleu_mbr", "chrf_mbr")


def _margin(ck: _Checker, c, key: str, direction: str, margins: dict):
    if direction != "equivalent":
        if "margin" in c:
            ck.fail(f"{key}.margin", "only an equivalence claim has a margin")
        return None
    if "margin" in c:
        return ck.number(c["margin"], f"{key}.margin", 0, lo_open=True, what="a positive number")
    if c.get("metric") in margins:
        return margins[c["metric"]]
    ck.fail(f"{key}.margin", "missing: an equivalence claim needs its margin ([margins] or the claim's own), "
                             "written before the study runs")


def _trend(ck: _Checker, c, key: str, alphas: dict, test_sets) -> ClaimSpec:
    """A trend claim: `trend` lists three or more models; the metric's slope over their alpha, per seed."""
    for k in ("a", "b", "test_sets", "pool", "margin"):
        if k in c:
            ck.fail(f"{key}.{k}", "not in a trend claim (its models are `trend`, judged over seeds)")
    refs = _refs(ck, c["trend"], f"{key}.trend", list(alphas))
    if not isinstance(refs, tuple) or len(refs) < 3 or len({r.model for r in refs}) != len(refs):
        ck.fail(f"{key}.trend", "expected a list of three or more different models")
    x = tuple(float(alphas[r.model]) for r in refs)
    if len(set(x)) < 2:
        ck.fail(f"{key}.trend", f"the models' alphas {list(x)}: a slope needs at least two different ones")
    direction = ck.choice(c["direction"], f"{key}.direction", ("less", "greater"))
    test_set = c.get("test_set")
    if test_set is not None and "all" not in test_sets and test_set not in test_sets:
        ck.fail(f"{key}.test_set", f"{test_set!r}: not one of [evaluate].test_sets ({', '.join(test_sets)})")
    return ClaimSpec(c["claim"], ck.choice(c["metric"], f"{key}.metric", METRICS), refs, (), direction, None,
                     ck.choice(c.get("source", "paper"), f"{key}.source", ("paper", "study")), test_set,
                     ck.choice(c["family"], f"{key}.family", FAMILIES), None, (), x)


def _claim(ck: _Checker, c, key: str, names, test_sets, margins: dict, alphas: dict = None) -> ClaimSpec:
    if isinstance(c, dict) and "trend" in c:
        ck.table(c, key, CLAIM_KEYS, required=("claim", "metric", "trend", "direction", "family"))
        ck.typed(c["claim"], f"{key}.claim", str, "a sentence")
        return _trend(ck, c, key, alphas or {}, test_sets)
    ck.table(c, key, CLAIM_KEYS, required=("claim", "metric", "a", "b", "direction", "family"))
    ck.typed(c["claim"], f"{key}.claim", str, "a sentence")
    direction = ck.choice(c["direction"], f"{key}.direction", ("less", "greater", "equivalent"))
    margin = _margin(ck, c, key, direction, margins)
    test_set = c.get("test_set")
    if test_set is not None and "all" not in test_sets and test_set not in test_sets:
        ck.fail(f"{key}.test_set", f"{test_set!r}: not one of [evaluate].test_sets ({', '.join(test_sets)})")
    a, b = (_refs(ck, c[side], f"{key}.{side}", names) for side in ("a", "b"))
    by_models = isinstance(a, tuple)
    if by_models != isinstance(b, tuple) or (by_models and len(a) != len(b)):
        ck.fail(f"{key}.b", "a pooled claim pairs a[i] with b[i]: expected a and b both lists, of the same length")
    if by_models and len({r.model for r in a}) != len(a):
        ck.fail(f"{key}.a", "a pooled claim's blocks are its a-side models: expected each model once")
    sets = _claim_test_sets(ck, c, key, test_sets, by_models)
    pooled = by_models or bool(sets)
    pool = c.get("pool", "blocks" if pooled else None)
    if pool is not None and not pooled:
        ck.fail(f"{key}.pool", "only a pooled claim (a and b lists) is pooled")
    pool = ck.choice(pool, f"{key}.pool", POOLS) if pooled else None
    return ClaimSpec(c["claim"], ck.choice(c["metric"], f"{key}.metric", METRICS), a, b, direction, margin,
                     ck.choice(c.get("source", "paper"), f"{key}.source", ("paper", "study")), test_set,
                     ck.choice(c["family"], f"{key}.family", FAMILIES), pool, sets)


def _claim_test_sets(ck: _Checker, c, key: str, test_sets, by_models: bool) -> tuple:
    """A claim's `test_sets` (pooled over them), checked: two or more of [evaluate]'s, not with `test_set`, not
    with models pooled as well."""
    if "test_sets" not in c:
        return ()
    sets = c["test_sets"]
    if not (isinstance(sets, list) and len(sets) >= 2 and all(isinstance(s, str) for s in sets)
            and len(set(sets)) == len(sets)):
        ck.fail(f"{key}.test_sets", f"{sets!r}: expected a list of two or more different test sets")
    if "test_set" in c or by_models:
        ck.fail(f"{key}.test_sets", "pooled over test sets: not with test_set, nor with a and b lists")
    for s in sets:
        if "all" not in test_sets and s not in test_sets:
            ck.fail(f"{key}.test_sets", f"{s!r}: not one of [evaluate].test_sets ({', '.join(test_sets)})")
    return tuple(sets)


SLURM_KEYS = {"partition": "a name", "account": "a name", "qos": "a name", "gpus_per_node": "a whole number >= 0",
              "cpus_per_task": "a whole number >= 1", "timeout_min": "a whole number of minutes >= 1",
              "mem_gb": "a positive number of GB"}


def _slurm(ck: _Checker, value) -> dict:
    """The [slurm] table, each value checked as submitit and sbatch will need it."""
    t = ck.table(value, "slurm", SLURM_KEYS)
    for k, v in t.items():
        whole = isinstance(v, int) and not isinstance(v, bool)
        ok = {"gpus_per_node": whole and 0 <= v <= 64, "cpus_per_task": whole and 1 <= v <= 1024,
              "timeout_min": whole and 1 <= v <= 525_600,
              "mem_gb": isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 65_536}.get(k, is_name(v))
        if not ok:
            ck.fail(f"slurm.{k}", f"{_short(v)}: expected {SLURM_KEYS[k]}")
    return t


def _short(value) -> str:
    """A value for an error line: its repr, cut at 80 characters."""
    r = repr(value)
    return r if len(r) <= 80 else r[:77] + "..."


def _sides(c: ClaimSpec) -> tuple:
    """What a claim compares, whatever its direction: (metric, test set(s), pooling, {a side, b side})."""
    side = (lambda r: r) if not isinstance(c.a, tuple) else tuple
    return c.metric, c.test_set, c.test_sets, c.pool, frozenset((side(c.a), side(c.b)))


def _companions(ck: _Checker, claims: list) -> None:
    """Every BLEU / chrF ordering has an equivalence claim on the same metric, models, test set and pooling."""
    equivalences = {_sides(c) for c in claims if c.direction == "equivalent"}
    for i, c in enumerate(claims):
        if c.x:  # a trend: a slope, not an ordering of two models
            continue
        if c.metric in COMPANION_METRICS and c.direction != "equivalent" and _sides(c) not in equivalences:
            ck.fail(f"claims[{i}]", f"{c.claim!r}: an ordering on {c.metric} needs its equivalence companion (the "
                                    "same metric, models, test set and pooling, direction = \"equivalent\" at "
                                    "the study's margin): without it an inconclusive verdict says nothing")


def _margins(ck: _Checker, value) -> dict:
    ck.table(value, "margins", {m: "a positive number" for m in METRICS})
    return {m: ck.number(v, f"margins.{m}", 0, lo_open=True, what="a positive number") for m, v in value.items()}


EVALUATE_KEYS = {"beam": "a beam size", "test_sets": 'a list of splits, or "all"', "sweep": "start:stop:step or a list",
                 "sweep_seeds": "all or first", "greedy": "true or false", "baseline": "a model's name",
                 "inference": "a list of {labels, bins, eos}", "beams": "a list of beam sizes",
                 "n_bins": "bins of the teacher-forced ECE", "batch_size": "sentences searched together",
                 "decoders": 'a list of "epsilon", "mbr"', "samples": "mbr's candidates per sentence",
                 "epsilon": "the sampler's epsilon", "seed": "the sampler's seed",
                 "sweep_test_sets": "all or first", "oracle_temperature": "true or false"}
SAMPLING_DECODERS = ("epsilon", "mbr")


def parse_test_sets(value: str, flag: str = "--test-sets") -> tuple:
    """--test-sets: "all" (every {split}.{src,tgt}.gz pair of the data directory beyond train and val) or a
    comma-separated list of split names -> ("all",) or the names; a UsageError for anything else."""
    names = [s.strip() for s in value.split(",")]
    if value.strip() == "all":
        return ("all",)
    bad = [n for n in names if not n or n == "all" or "/" in n or "." in n or n in ("train", "val")]
    if bad:
        raise UsageError(f"{flag} {value!r}: expected \"all\" or a comma-separated list of test split names such "
                         f"as test_2016_flickr,test_2018_flickr (not train, val, paths or file names)")
    return tuple(dict.fromkeys(names))


def with_test_sets(study: Study, value) -> Study:
    """The study with its [evaluate] test_sets replaced by --test-sets `value` (None: unchanged). A claim on a
    test set left out is refused, as the file's own check would."""
    if value is None:
        return study
    sets = parse_test_sets(value)
    for i, c in enumerate(study.claims):
        for name in (c.test_set,) + c.test_sets if c.test_set else c.test_sets:
            if "all" not in sets and name not in sets:
                raise UsageError(f"--test-sets {value}: claims[{i}] is judged on {name}, which is not among them")
    return dataclasses.replace(study, evaluate=dataclasses.replace(study.evaluate, test_sets=sets))


def _evaluate(ck: _Checker, e, names) -> EvaluateSpec:
    ck.table(e, "evaluate", EVALUATE_KEYS)
    d = EvaluateSpec()
    beam = e.get("beam", d.beam)
    if not isinstance(beam, int) or isinstance(beam, bool) or beam < 1:
        ck.fail("evaluate.beam", f"{beam!r}: expected a whole number >= 1")
    sets = e.get("test_sets", list(d.test_sets))
    if sets == "all":
        sets = ["all"]
    if not isinstance(sets, list) or not sets or not all(is_name(s) and s not in ("train", "val") for s in sets):
        ck.fail("evaluate.test_sets", f"{_short(sets)}: expected a non-empty list of test split names (letters, "
                                      f"digits, '.', '_', '+', '-'; no '/', no '..', not train or val), or \"all\"")
    sweep = e.get("sweep", "none")
    try:
        grid = parse_grid(sweep) if isinstance(sweep, str) else [float(x) for x in sweep]
        if not all(0 < t < math.inf for t in grid):
            raise UsageError("temperatures must be positive and finite")
    except (UsageError, TypeError, ValueError) as err:
        ck.fail("evaluate.sweep", f"{sweep!r}: {err}")
    protocols = []
    for i, p in enumerate(e.get("inference", [dataclasses.asdict(x) for x in d.inference])):
        k = f"evaluate.inference[{i}]"
        ck.table(p, k, {"labeller": ", ".join(LABELLERS), "bins": "a whole number >= 1",
                        "eos": "include or exclude"})
        bins = p.get("bins", 15)
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
            ck.fail(f"{k}.bins", f"{bins!r}: expected a whole number >= 1")
        protocols.append(InferenceProtocol(ck.choice(p.get("labeller", "ter"), f"{k}.labeller", LABELLERS), bins,
                                           ck.choice(p.get("eos", "include"), f"{k}.eos", ("include", "exclude"))))
    if not protocols:
        ck.fail("evaluate.inference", "expected at least one protocol")
    beams = e.get("beams", [])
    if not isinstance(beams, list) or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in beams):
        ck.fail("evaluate.beams", f"{beams!r}: expected a list of whole numbers >= 1")
    baseline = e.get("baseline")
    if baseline is not None and baseline not in names:
        ck.fail("evaluate.baseline", f"{baseline!r}: not a model of this study (models: {', '.join(names)})")
    for k in ("n_bins", "batch_size"):
        v = e.get(k, getattr(d, k))
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            ck.fail(f"evaluate.{k}", f"{v!r}: expected a whole number >= 1")
    greedy = e.get("greedy", True)
    ck.typed(greedy, "evaluate.greedy", bool, "true or false")
    return EvaluateSpec(beam, tuple(sets), tuple(grid), ck.choice(e.get("sweep_seeds", "all"), "evaluate.sweep_seeds",
                                                                  ("all", "first")), greedy, baseline,
                        tuple(protocols), tuple(beams), e.get("n_bins", d.n_bins), e.get("batch_size", d.batch_size),
                        *_sampling(ck, e, d), *_shift(ck, e))


def _sampling(ck: _Checker, e: dict, d: EvaluateSpec) -> tuple:
    """(decoders, samples, epsilon, seed) of [evaluate], each checked as `python -m nmt.decode` checks its flag."""
    decoders = e.get("decoders", [])
    if not (isinstance(decoders, list) and all(x in SAMPLING_DECODERS for x in decoders)
            and len(set(decoders)) == len(decoders)):
        ck.fail("evaluate.decoders", f"{decoders!r}: expected a list of distinct names among "
                                     f"{', '.join(SAMPLING_DECODERS)} (beam and greedy are always evaluated)")
    values = {k: e.get(k, getattr(d, k)) for k in ("samples", "epsilon", "seed")}
    try:
        DecodeConfig(**values)
    except UsageError as err:
        ck.fail(f"evaluate.{err.field}", err.detail)
    return tuple(decoders), values["samples"], values["epsilon"], values["seed"]


def _shift(ck: _Checker, e: dict) -> tuple:
    """(sweep_test_sets, oracle_temperature) of [evaluate]: where the sweeps run, and the per-test-set T."""
    oracle = e.get("oracle_temperature", False)
    ck.typed(oracle, "evaluate.oracle_temperature", bool, "true or false")
    return ck.choice(e.get("sweep_test_sets", "all"), "evaluate.sweep_test_sets", ("all", "first")), oracle


def _data(ck: _Checker, d, base: Path) -> tuple:
    """(DataSpec, default pair)."""
    ck.table(d, "data", {"pair": "a language pair such as en-de", "dir": "a Multi30k-layout directory",
                         "train": "[source file, target file]", "valid": "[source file, target file]",
                         "test": "a table NAME = [source file, reference file]"})
    pair = ck.pair(d.get("pair", "en-de"), "data.pair")

    def files(key):
        v = d.get(key)
        if v is None:
            return None
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)):
            ck.fail(f"data.{key}", f"{v!r}: expected [source file, target file]")
        return tuple(str((base / x)) for x in v)

    train, valid = files("train"), files("valid")
    if (train is None) != (valid is None):
        ck.fail("data.valid" if train else "data.train", "own files need both train and valid")
    if train and "dir" in d:
        ck.fail("data.dir", "give a directory or own files, not both")
    test = []
    if "test" in d:
        ck.table(d["test"], "data.test", {k: "" for k in d["test"]})
        for name, v in d["test"].items():
            if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)):
                ck.fail(f"data.test.{name}", f"{v!r}: expected [source file, reference file]")
            test.append((name, str(base / v[0]), str(base / v[1])))
    directory = d.get("dir")
    if directory is not None:
        ck.typed(directory, "data.dir", str, "a directory")
        directory = str(base / directory)
    return DataSpec(directory, train, valid, tuple(test)), pair


STUDY_KEYS = {"name": "the study's name", "description": "one paragraph", "runs": "where runs are kept",
              "data": "a table", "defaults": "a table {preset, seeds, flags}", "models": "a list of models",
              "evaluate": "a table", "margins": "a table METRIC = margin", "claims": "a list of claims",
              "slurm": "a table of SLURM resources"}


def load_study(path) -> Study:
    """Read and validate a study file; a StudyError names the key and what it allows."""
    path = Path(path)
    ck = _Checker(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudyError(f"{path}: study file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StudyError(f"{path}: not a TOML file ({e})") from None
    ck.table(raw, "", STUDY_KEYS, required=("name", "models"))
    name = ck.name(raw["name"], "name")
    base = path.parent.parent if path.parent.name == "studies" else path.parent  # paths relative to the project
    data, pair = _data(ck, raw.get("data", {}), base)
    dflt = ck.table(raw.get("defaults", {}), "defaults", {"preset": "a preset", "seeds": "a list of seeds",
                                                          "flags": "a table of nmt.train settings"})
    defaults = {"preset": ck.choice(dflt.get("preset", "cpu"), "defaults.preset", sorted(PRESETS)),
                "seeds": ck.seeds(dflt["seeds"], "defaults.seeds") if "seeds" in dflt else (1,),
                "flags": dict(_flags(ck, dflt.get("flags", {}), "defaults.flags")), "pair": pair}
    models_raw = raw["models"]
    if not isinstance(models_raw, list) or not models_raw:
        ck.fail("models", "expected a non-empty list of [[models]] tables")
    models = [_model(ck, m, f"models[{i}]", defaults) for i, m in enumerate(models_raw)]
    names = [m.name for m in models]
    for i, n in enumerate(names):
        if n in names[:i]:
            ck.fail(f"models[{i}].name", f"{n!r}: two models have this name")
    for i, m in enumerate(models):
        if m.teacher is not None:
            if m.teacher not in names or m.teacher == m.name:
                ck.fail(f"models[{i}].teacher", f"{m.teacher!r}: expected another model of this study")
            if m.alpha:
                ck.fail(f"models[{i}].alpha", "a distilled student trains without smoothing here")
            t = models[names.index(m.teacher)]
            if not set(m.seeds) <= set(t.seeds) or t.pair != m.pair:
                ck.fail(f"models[{i}].seeds", f"teacher seed s distils student seed s: {m.teacher} lacks some seeds "
                                              "or has another pair")
    evaluate = _evaluate(ck, raw.get("evaluate", {}), names)
    margins = _margins(ck, raw.get("margins", {}))
    alphas = {m.name: m.alpha for m in models}
    claims = [_claim(ck, c, f"claims[{i}]", names, evaluate.test_sets, margins, alphas)
              for i, c in enumerate(raw.get("claims", []))]
    _companions(ck, claims)
    description = raw.get("description", "")
    ck.typed(description, "description", str, "a string")
    runs = raw.get("runs", "runs")
    ck.typed(runs, "runs", str, "a directory")
    slurm = _slurm(ck, raw.get("slurm", {}))
    return Study(name, str(path), description, data, tuple(models), evaluate, tuple(claims), runs,
                 tuple(sorted(slurm.items())))
