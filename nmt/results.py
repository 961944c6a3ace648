"""Typed results of a study: a Row per (model, seed, temperature, test set), aggregates over seeds, claims,
and reading a comparison.json back, validated (it may have come from someone else: nothing in it is trusted
or run).

comparison.json: {"format": 2, "meta": {...}, "signatures": {...}, "rows": [Row], "aggregate": [...],
"claims": [Claim], "sweep": [...], "beam_sweep": [...]}. reliability.json: {"format": 1, "panels": [{"model",
"test_set", "t_kind", "temperature", "calibration": {"ece", "n", "accuracy", "confidence", "bins": [...]}}]}, the
bins behind the reliability diagrams.

Reading back trusts only the rows, each value validated (a number, finite, where a number belongs): the
aggregates are recomputed from them and every claim is judged again (`nmt.claims.check`); a stored aggregate
or claim that differs from what its rows give is refused, naming the entry.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Optional, Union

from nmt.errors import DataError
from nmt.files import read_json
from nmt.metrics import REGISTRY
from nmt.names import check_name

FORMAT = 2
RELIABILITY_FORMAT = 1
CALIBRATION_KEYS = ("ece", "n", "accuracy", "confidence")
BIN_KEYS = ("lo", "hi", "count", "accuracy", "confidence")


# A row's identity and description, then one field per metric of the registry and one per interval (nmt.metrics).
IDENTITY = [("model", str), ("label", str), ("seed", int), ("t_kind", str), ("temperature", float),
            ("test_set", str)]
DESCRIPTION = [("variant", str, "hard"), ("alpha", float, 0.0), ("pair", str, "en-de"), ("checkpoint", str, "")]
METRIC_FIELDS = [m.name for m in REGISTRY if m.name != "temperature"]
INTERVAL_FIELDS = [m.interval for m in REGISTRY if m.interval]
NUMERIC = ["temperature"] + METRIC_FIELDS + [m.interval for m in REGISTRY if m.interval and m.half_width]

Row = make_dataclass(
    "Row", IDENTITY + DESCRIPTION + [(k, Optional[float], None) for k in METRIC_FIELDS]
    + [(k, Optional[Union[float, list]], None) for k in INTERVAL_FIELDS]
    + [("signatures", dict, field(default_factory=dict))],
    namespace={"group": property(lambda self: (self.test_set, self.model, self.t_kind),
                                 doc="(test set, model, t_kind): the rows an Aggregate averages over seeds")})
Row.__module__ = __name__
Row.__doc__ = ("The numbers of one model (study name `model`; `label` is for display only), seed, temperature kind "
               "`t_kind` (\"1\" or \"fitted\"; `temperature` is its value) and test set: one field per metric of "
               "nmt.metrics.REGISTRY and per interval, None where not measured.")
ROW_FIELDS = {f.name for f in dataclasses.fields(Row)}


def row_from(d: dict, where: str) -> Row:
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected a table, not {type(d).__name__}")
    unknown = sorted(set(d) - ROW_FIELDS)
    missing = sorted(k for k in ("model", "label", "seed", "t_kind", "temperature", "test_set") if k not in d)
    if unknown or missing:
        raise DataError(f"{where}: " + "; ".join(x for x in (f"unknown keys {', '.join(unknown)}" if unknown else "",
                                                            f"missing {', '.join(missing)}" if missing else "") if x))
    for k in NUMERIC:
        v = d.get(k)
        if v is not None and not _finite(v):
            raise DataError(f"{where}.{k}: {v!r}: expected a finite number or null")
    for k in INTERVAL_FIELDS:
        v = d.get(k)
        if v is not None and not (_finite(v) or (isinstance(v, list) and len(v) == 2 and all(map(_finite, v)))):
            raise DataError(f"{where}.{k}: {v!r}: expected a half-width, [low, high] or null")
    for k, kind in (("model", str), ("label", str), ("t_kind", str), ("test_set", str), ("seed", int)):
        if not isinstance(d[k], kind) or isinstance(d[k], bool):
            raise DataError(f"{where}.{k}: {d[k]!r}: expected a {'whole number' if kind is int else 'string'}")
    check_name(d["model"], f"{where}.model")
    check_name(d["test_set"], f"{where}.test_set")
    if d["t_kind"] not in ("1", "fitted"):
        raise DataError(f"{where}.t_kind: {d['t_kind']!r}: expected \"1\" or \"fitted\"")
    return Row(**d)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class Aggregate:
    """A model at one temperature kind on one test set, over its seeds: mean, std (None for one seed), n."""
    model: str
    label: str
    t_kind: str
    test_set: str
    n: int
    seeds: list
    mean: dict  # metric -> mean
    std: dict  # metric -> std or None
    per_seed: dict  # metric -> [values, in seed order]


def aggregate(rows: list, order: list) -> list:
    """Aggregates of `rows` grouped by (test set, model, T kind), in the study's model order (`order`)."""
    groups = {}
    for r in rows:
        groups.setdefault(r.group, []).append(r)
    key = lambda g: (g[0], order.index(g[1]) if g[1] in order else len(order), g[2] != "1")  # noqa: E731
    out = []
    for g in sorted(groups, key=key):
        rs = sorted(groups[g], key=lambda r: r.seed)
        mean, std, per = {}, {}, {}
        for k in NUMERIC:
            vals = [getattr(r, k) for r in rs if getattr(r, k) is not None]
            if vals and not k.endswith("_p"):
                mean[k] = statistics.fmean(vals)
                std[k] = statistics.stdev(vals) if len(vals) > 1 else None
            if vals:
                per[k] = vals
        out.append(Aggregate(rs[0].model, rs[0].label, rs[0].t_kind, rs[0].test_set, len(rs), [r.seed for r in rs],
                             mean, std, per))
    return out


@dataclass
class ModelEvaluation:
    """Every number of one model and seed, with what the results files need besides: evaluated
    (`experiment.evaluate_model`), resumed from `nmt.evalcache`, or reused from committed results."""
    rows: list  # [Row]: one per test set and temperature kind
    sweep: list = field(default_factory=list)  # temperature-sweep points
    beam_sweep: list = field(default_factory=list)  # beam-sweep points
    panels: dict = field(default_factory=dict)  # {(test set, t_kind): (T, calibration table)}: reliability diagrams
    hyps: dict = field(default_factory=dict)  # {(test set, t_kind): [hypothesis]}
    references: dict = field(default_factory=dict)  # {test set: [reference]}
    evidence: dict = field(default_factory=dict)  # {(test set, t_kind): nmt.evidence.Evidence}
    config_dir: Optional[Path] = None  # reused: the run's committed config directory
    origin: Optional[dict] = None  # reused: the results directory and the commit that evaluated it


@dataclass
class Comparison:
    """comparison.json, typed: what a study's evaluation gives and what `load_comparison` reads back. `meta` holds
    how it was made (study, decoding, provenance); the sweeps are their points as stored."""
    meta: dict
    signatures: dict
    rows: list  # [Row]
    aggregates: list  # [Aggregate], recomputed from the rows
    claims: list  # [nmt.stats.Claim]
    sweep: list = field(default_factory=list)  # temperature sweep points
    beam_sweep: list = field(default_factory=list)  # beam-size sweep points

    def to_json(self) -> dict:
        """The file's layout ("aggregate": the aggregates), ready for json.dumps."""
        from nmt.report import jsonable
        return jsonable({"format": FORMAT, "meta": self.meta, "signatures": self.signatures, "rows": self.rows,
                         "aggregate": self.aggregates, "claims": self.claims, "sweep": self.sweep,
                         "beam_sweep": self.beam_sweep})

    def aggregates_on(self, test_set: str) -> list:
        return [a for a in self.aggregates if a.test_set == test_set]

    @property
    def test_sets(self) -> list:
        return list(dict.fromkeys(a.test_set for a in self.aggregates))


def load_comparison(results_dir, check_claims: bool = True) -> Comparison:
    """comparison.json of a results directory as a Comparison: its rows validated, its aggregates recomputed from
    them and (with `check_claims`) its claims judged again on them and taken as judged; a DataError (exit 2)
    naming the file and the entry for anything malformed. Without `check_claims` the stored claims are not read
    (`claims` is empty: the caller judges them again)."""
    from nmt.errors import UsageError
    path = Path(results_dir) / "comparison.json"
    try:
        data = read_json(path, "comparison.json of a study")
    except UsageError as e:
        raise DataError(str(e)) from None
    if data.get("format") != FORMAT:
        raise DataError(f"{path}: format {data.get('format')!r}, expected {FORMAT} (written by this nmt's "
                        f"python -m nmt.study run)")
    for key, kind in (("meta", dict), ("signatures", dict), ("rows", list), ("claims", list)):
        if not isinstance(data.get(key), kind):
            raise DataError(f"{path}: {key}: expected a {'table' if kind is dict else 'list'}")
    rows = [row_from(r, f"{path}: rows[{i}]") for i, r in enumerate(data["rows"])]
    prov = data["meta"].get("provenance")
    if not isinstance(prov, dict):
        raise DataError(f"{path}: meta.provenance: expected a table")
    order = data["meta"].get("model_order")
    if not (isinstance(order, list) and all(isinstance(m, str) for m in order)):
        raise DataError(f"{path}: meta.model_order: expected a list of model names")
    for key in ("sweep", "beam_sweep"):
        if not isinstance(data.get(key, []), list):
            raise DataError(f"{path}: {key}: expected a list")
    claims = checked_claims(data["claims"], rows, path) if check_claims else []
    return Comparison(data["meta"], data["signatures"], rows, checked_aggregates(data.get("aggregate"), rows, order,
                                                                                  path),
                      claims, data.get("sweep", []), data.get("beam_sweep", []))


def checked_claims(stored: list, rows: list, path) -> list:
    """The stored claims judged again on `rows` (`nmt.claims.check`: a DataError where a stored number differs),
    with the hierarchical bootstrap's interval each stored (from the hypotheses: checked to be two numbers)."""
    from nmt.claims import check
    claims = check(stored, rows, str(path))
    for i, (d, c) in enumerate(zip(stored, claims)):
        ci = d.get("ci_two_level")
        if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(map(_finite, ci))):
            raise DataError(f"{path}: claims[{i}].ci_two_level: {ci!r}: expected [low, high] or null")
        c.ci_two_level = ci
    return claims


def checked_aggregates(stored, rows: list, order: list, path) -> list:
    """The Aggregates recomputed from the rows; a DataError if the stored ones differ."""
    from nmt.claims import same
    from nmt.report import jsonable
    aggregates = aggregate(rows, order)
    fresh = jsonable(aggregates)
    if not same(stored, fresh):
        bad = next((i for i, (x, y) in enumerate(zip(stored or [], fresh)) if not same(x, y)), min(len(stored or []),
                                                                                                   len(fresh)))
        raise DataError(f"{path}: aggregate[{bad}]: differs from the mean, std and values of its rows (the file "
                        f"was edited, or made by another version)")
    return aggregates


def calibration_table(cal, where: str) -> dict:
    """The fields the reliability diagrams read, each checked to be a number; a DataError naming the field."""
    if not isinstance(cal, dict) or not isinstance(cal.get("bins"), list) or not cal["bins"]:
        raise DataError(f"{where}: expected a calibration table with bins")
    number = (int, float)
    for i, b in enumerate(cal["bins"]):
        if not isinstance(b, dict) or not all(isinstance(b.get(k), number) and not isinstance(b.get(k), bool)
                                              for k in BIN_KEYS):
            raise DataError(f"{where}.bins[{i}]: expected {', '.join(BIN_KEYS)} as numbers")
    if not all(isinstance(cal.get(k), number) and not isinstance(cal.get(k), bool) for k in CALIBRATION_KEYS):
        raise DataError(f"{where}: expected {', '.join(CALIBRATION_KEYS)} as numbers")
    return cal


def reliability_json(panels: dict) -> dict:
    """reliability.json's content from {(model, test set, t_kind): (T, calibration)}: only the drawn fields."""
    return {"format": RELIABILITY_FORMAT, "panels": [
        {"model": m, "test_set": name, "t_kind": kind, "temperature": t,
         "calibration": {**{k: cal[k] for k in CALIBRATION_KEYS},
                         "bins": [{k: b[k] for k in BIN_KEYS} for b in cal["bins"]]}}
        for (m, name, kind), (t, cal) in panels.items()]}


def load_reliability(results_dir):
    """reliability.json back as {(model, test set, t_kind): (T, calibration)}, validated; None when the results
    directory has none (results written before it existed)."""
    from nmt.errors import UsageError
    path = Path(results_dir) / "reliability.json"
    if not path.exists():
        return None
    try:
        data = read_json(path, "reliability.json of a study")
    except UsageError as e:
        raise DataError(str(e)) from None
    if data.get("format") != RELIABILITY_FORMAT or not isinstance(data.get("panels"), list):
        raise DataError(f"{path}: expected format {RELIABILITY_FORMAT} with a list of panels")
    out = {}
    for i, p in enumerate(data["panels"]):
        where = f"{path}: panels[{i}]"
        if not (isinstance(p, dict) and all(isinstance(p.get(k), str) for k in ("model", "test_set", "t_kind"))
                and isinstance(p.get("temperature"), (int, float)) and not isinstance(p.get("temperature"), bool)):
            raise DataError(f"{where}: expected model, test_set, t_kind (strings) and temperature (a number)")
        check_name(p["model"], f"{where}.model")
        check_name(p["test_set"], f"{where}.test_set")
        out[p["model"], p["test_set"], p["t_kind"]] = (float(p["temperature"]),
                                                      calibration_table(p.get("calibration"), where + ".calibration"))
    return out
