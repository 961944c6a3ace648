"""Property-based fuzzing (Hypothesis): study files, a committed results JSON, evaluation-cache entries and model
configs, generated inside and outside their schemas. For each: a valid result (exit 0), or one line and exit 2 -
never a traceback, never a file written outside the named folders, never a non-finite number in a table. A fixed
seed (derandomize) and a bounded number of examples keep it to seconds."""
from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
NAMEISH = st.one_of(st.sampled_from(["hard", "ls", "x", "../x", "a/b", "", "train", "test_2016_flickr", "ls.", "é"]),
                    TEXT)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                   NAMEISH)
JSONISH = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(NAMEISH, inner, max_size=4)), max_leaves=12)


def toml_value(v) -> str:
    """A TOML literal for the generated values (TOML has no null: None becomes a string)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if -2**63 <= v < 2**63 else json.dumps(str(v))
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps("none" if v is None else str(v))


def mostly(valid, junk=SCALAR):
    """Valid values three times out of four, so that checks deep in the file are reached too."""
    return st.one_of(valid, valid, valid, junk)


MODEL = st.fixed_dictionaries({"name": mostly(st.sampled_from(["hard", "ls", "ls02"]), NAMEISH)}, optional={
    "alpha": mostly(st.sampled_from([0.0, 0.1, 0.2]), st.one_of(st.floats(allow_nan=True), st.integers(-3, 3), TEXT)),
    "smoothing": mostly(st.sampled_from(["uniform", "unigram", "masked", "unigram-noeos"]),
                        st.sampled_from(["zipf", "", "../x"])),
    "confidence_penalty": mostly(st.sampled_from([0.0, 0.1]), st.floats(allow_nan=True)),
    "seeds": mostly(st.lists(st.integers(1, 5), min_size=1, max_size=3, unique=True),
                    st.lists(st.integers(-5, 2**64), max_size=3)),
    "flags": st.dictionaries(st.sampled_from(["max_tokens", "hub", "d_model", "lr", "max_steps", "bogus", "threads"]),
                             mostly(st.sampled_from([1, 64, 0.001]), SCALAR), max_size=3),
    "junk": SCALAR})
STUDY = st.fixed_dictionaries({"name": mostly(st.just("fz"), NAMEISH),
                               "models": st.lists(MODEL, min_size=1, max_size=3)}, optional={
    "defaults": st.fixed_dictionaries({}, optional={
        "preset": mostly(st.just("smoke"), st.sampled_from(["cpu", "nope", "../x"])),
        "seeds": mostly(st.lists(st.integers(1, 5), min_size=1, max_size=3, unique=True),
                        st.lists(st.integers(-5, 2**64), max_size=3))}),
    "evaluate": st.fixed_dictionaries({}, optional={
        "test_sets": mostly(st.just(["test_2016_flickr"]), st.lists(NAMEISH, max_size=3)),
        "beam": mostly(st.integers(1, 5)), "sweep": mostly(st.sampled_from(["none", "0.8,1.25"]))}),
    "slurm": st.dictionaries(st.sampled_from(["partition", "timeout_min", "mem_gb", "cpus_per_task", "qos", "x"]),
                             mostly(st.sampled_from(["debug", 20, 2]), SCALAR), max_size=3),
    "claims": st.lists(st.dictionaries(st.sampled_from(["claim", "metric", "a", "b", "direction", "family", "trend",
                                                        "margin", "pool"]),
                                       mostly(st.sampled_from(["hard", "ls", "ece_forced", "less", "primary"])),
                                       max_size=6), max_size=2)})


def study_toml(d: dict, data_dir: Path) -> str:
    out = [f"name = {toml_value(d['name'])}", "[data]", f"dir = {json.dumps(str(data_dir))}"]
    for table in ("defaults", "evaluate", "slurm"):
        if table in d:
            out += [f"[{table}]"] + [f"{k} = {toml_value(v)}" for k, v in d[table].items()]
    for m in d["models"]:
        out += ["[[models]]"] + [f"{k} = {toml_value(v)}" for k, v in m.items()]
    for c in d.get("claims", []):
        out += ["[[claims]]"] + [f"{k} = {toml_value(v)}" for k, v in c.items()]
    return "\n".join(out) + "\n"


def files_under(path: Path) -> set:
    return {p for p in path.rglob("*")}


def one_error_line(err: str) -> None:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err[-2000:]


@settings(FUZZ, max_examples=150)
@given(STUDY)
def test_fuzzed_study_files_validate_or_fail_with_one_line(tmp_path_factory, toy_multi30k, data):
    from nmt.study import main as study
    box = tmp_path_factory.mktemp("fuzz")
    f = box / "s.toml"
    f.write_text(study_toml(data, toy_multi30k), encoding="utf-8")
    before, outside = files_under(box), files_under(box.parent) - files_under(box)
    import contextlib
    import io
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = study(["run", str(f), "--runs", str(box / "runs"), "--results", str(box / "r"), "--dry-run"])
    assert rc in (0, 2), (rc, err.getvalue()[-2000:])
    if rc == 2:
        one_error_line(err.getvalue())
    assert files_under(box) == before  # --dry-run writes nothing, not even --runs
    assert files_under(box.parent) - files_under(box) == outside


ROW_FIELDS = ["seed", "temperature", "test_nll", "accuracy", "ece_forced", "ece_inference", "bleu_beam", "chrf",
              "bleu_ci", "model", "t_kind", "test_set"]
# half the time a row's field (the numbers a table shows), else any node of the file
MUTATION = st.one_of(st.tuples(st.tuples(st.just(3), st.integers(0, 50), st.sampled_from(ROW_FIELDS)).map(list),
                               st.one_of(st.floats(allow_nan=True, allow_infinity=True), JSONISH)),
                     st.tuples(st.lists(st.integers(0, 50), min_size=1, max_size=5), JSONISH))


def mutate(obj, path: list, value):
    """`obj` with the node reached by following `path` (indices taken modulo each container's size) replaced."""
    node = obj
    for depth, i in enumerate(path):
        if not isinstance(node, (dict, list)) or not node:
            break
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        k = i if isinstance(node, dict) and i in node else keys[hash(i) % len(keys)] if isinstance(i, str) \
            else keys[i % len(keys)]
        if depth == len(path) - 1 or not isinstance(node[k], (dict, list)) or not node[k]:
            node[k] = value
            return obj
        node = node[k]
    return obj


@settings(FUZZ, max_examples=60)
@given(MUTATION)
def test_a_fuzzed_results_json_is_rebuilt_or_refused_and_never_shows_a_nonfinite_number(tmp_path_factory, mutation):
    """results/bf16 (its rows: no claims) with one node replaced; --from-results rebuilds comparison.md from the
    validated rows (exit 0, no nan or inf in it) or refuses with one line (exit 2)."""
    import contextlib
    import io

    from nmt.study import main as study
    box = tmp_path_factory.mktemp("fuzzres")
    d = box / "bf16"
    shutil.copytree(ROOT / "results" / "bf16", d, ignore=shutil.ignore_patterns("*.png", "hyps", "runs", ".lock"))
    data = json.loads((d / "comparison.json").read_text())
    (d / "comparison.json").write_text(json.dumps(mutate(data, *mutation), allow_nan=True))
    before = files_under(box)
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = study(["--from-results", str(d)])
    assert rc in (0, 2), (rc, err.getvalue()[-2000:])
    if rc == 2:
        one_error_line(err.getvalue())
    else:
        assert not re.search(r"(?<![\w.])-?(nan|inf)(?![\w])", out.getvalue(), re.IGNORECASE), out.getvalue()[-2000:]
    assert files_under(box) == before


@FUZZ
@given(st.one_of(JSONISH, st.fixed_dictionaries({"format": st.just(3), "key": st.just("k"), "rows": JSONISH,
                                                  "sweep": JSONISH, "beam_sweep": JSONISH, "panels": JSONISH,
                                                  "hyps": JSONISH, "references": JSONISH, "digest": TEXT})))
def test_a_fuzzed_cache_entry_is_used_only_when_intact(tmp_path_factory, entry):
    from nmt import evalcache
    cache = tmp_path_factory.mktemp("cache")
    (cache / "hard.seed1.json").write_text(json.dumps(entry, allow_nan=True))
    assert evalcache.load(cache, "hard", 1, "k") is None  # malformed, or not the digest of its content


@FUZZ
@given(st.dictionaries(st.sampled_from(["vocab_size", "d_model", "n_heads", "encoder_layers", "decoder_layers", "d_ff",
                                        "max_positions", "dropout", "junk"]), SCALAR, max_size=8))
def test_a_fuzzed_model_config_is_a_bounded_config_or_a_usage_error(cfg):
    from nmt.config import MODEL_LIMITS, model_config_from
    from nmt.errors import UsageError
    try:
        m = model_config_from(cfg, "x")
    except UsageError as e:
        assert str(e).startswith("x") or "expected" in str(e)
        return
    for k, hi in MODEL_LIMITS.items():
        assert 1 <= getattr(m, k) <= hi
    floats = [getattr(m, f.name) for f in dataclasses.fields(m) if isinstance(getattr(m, f.name), float)]
    assert all(math.isfinite(x) for x in floats)
