"""A study's claims judged on its rows: each claim's per-seed (or per block and seed) values are read off the
typed rows, `nmt.stats` gives the verdicts, Holm adjusts within each family.

The same function judges a fresh evaluation (`nmt.experiment`), re-judges committed rows under a study file's
claims (`python -m nmt.study judge FILE`) and checks a committed comparison.json (`check`): every stored claim
must be what its rows give, so that no verdict, interval or p-value in a table goes beyond its evidence.
"""
from __future__ import annotations

import math

from nmt.errors import DataError
from nmt.names import check_name
from nmt.stats import Claim, adjust, judge, slope
from nmt.studyfile import ClaimSpec, ModelRef

# the fields of a stored claim that its rows and the rules determine; compared to 1e-9 (relative) by `check`
CHECKED = ("differences", "seeds", "estimate", "ci", "p", "n", "verdict", "p_holm", "verdict_holm", "test", "df",
           "se", "mde", "mde_holm", "heterogeneity", "test_sets", "x")


def per_unit(rows: list, metric: str, test_set: str, ref: ModelRef, block: str = None) -> dict:
    """{seed: value} of one model at one T kind on one test set, or {"BLOCK:seed": value} for a pooled claim."""
    return {(r.seed if block is None else f"{block}:{r.seed}"): getattr(r, metric) for r in rows
            if r.model == ref.model and r.t_kind == ref.t_kind and r.test_set == test_set
            and getattr(r, metric) is not None}


def judge_one(c: ClaimSpec, rows: list, test_set: str) -> Claim:
    """One claim on the rows of `test_set` (before Holm)."""
    if c.x:  # a trend: per seed (every model has it), the least-squares slope of the metric over alpha
        per = [per_unit(rows, c.metric, test_set, ref) for ref in c.a]
        seeds = sorted(set.intersection(*(set(v) for v in per)))
        slopes = {sd: slope(list(c.x), [v[sd] for v in per]) for sd in seeds}
        return judge(c.claim, c.metric, [r.to_dict() for r in c.a], [], c.direction, slopes,
                     {sd: 0.0 for sd in seeds}, None, c.source, test_set, c.family, None, None, list(c.x))
    if c.test_sets:  # pooled over test sets: every (test set, seed) unit paired, the test set naming the block
        va, vb = {}, {}
        for name in c.test_sets:
            va.update(per_unit(rows, c.metric, name, c.a, name))
            vb.update(per_unit(rows, c.metric, name, c.b, name))
        sides = c.a.to_dict(), c.b.to_dict()
    elif isinstance(c.a, tuple):  # pooled: every (a[i], b[i], seed) unit paired, a[i]'s model naming the block
        va, vb = {}, {}
        for ra, rb in zip(c.a, c.b):
            va.update(per_unit(rows, c.metric, test_set, ra, ra.model))
            vb.update(per_unit(rows, c.metric, test_set, rb, ra.model))
        sides = [r.to_dict() for r in c.a], [r.to_dict() for r in c.b]
    else:
        va, vb = per_unit(rows, c.metric, test_set, c.a), per_unit(rows, c.metric, test_set, c.b)
        sides = c.a.to_dict(), c.b.to_dict()
    return judge(c.claim, c.metric, *sides, c.direction, va, vb, c.margin, c.source, test_set, c.family, c.pool,
                 c.test_sets or None)


def judge_claims(claims, rows: list) -> list:
    """Every claim (ClaimSpecs) with its verdict, Holm-adjusted within its family; a claim without a test set
    is judged on the first test set of the rows."""
    first = rows[0].test_set if rows else ""
    return adjust([judge_one(c, rows, "" if c.test_sets else c.test_set or first) for c in claims])


def _ref(d, where: str) -> ModelRef:
    # "temperature": the key's name in results written before it was called t_kind, as rows call it
    kind = d.get("t_kind", d.get("temperature")) if isinstance(d, dict) else None
    if not (kind in ("1", "fitted") and isinstance(d.get("model"), str)):
        raise DataError(f"{where}: expected {{\"model\": NAME, \"t_kind\": \"1\" or \"fitted\"}}")
    return ModelRef(d["model"], kind)


def spec_of(d: dict, where: str) -> ClaimSpec:
    """The definition of a stored claim (what it compares, how), validated; its numbers are not read."""
    from nmt.metrics import CLAIMABLE
    from nmt.stats import DIRECTIONS, FAMILIES, POOLS
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected a claim table")
    for key, ok, what in (("claim", isinstance(d.get("claim"), str), "a string"),
                          ("metric", d.get("metric") in CLAIMABLE, f"one of {', '.join(CLAIMABLE)}"),
                          ("direction", d.get("direction") in DIRECTIONS, f"one of {', '.join(DIRECTIONS)}"),
                          ("family", d.get("family") in FAMILIES, f"one of {', '.join(FAMILIES)}"),
                          ("pool", d.get("pool") in (None, *POOLS), f"null or one of {', '.join(POOLS)}"),
                          ("test_set", isinstance(d.get("test_set"), str), "a test set's name"),
                          ("source", d.get("source") in ("paper", "study"), "paper or study")):
        if not ok:
            raise DataError(f"{where}.{key}: {d.get(key)!r}: expected {what}")
    margin = d.get("margin")
    if d["direction"] == "equivalent" and not (isinstance(margin, (int, float)) and not isinstance(margin, bool)
                                               and math.isfinite(margin) and margin > 0):
        raise DataError(f"{where}.margin: {margin!r}: expected a positive number")
    sets = d.get("test_sets")
    if sets is not None and not (isinstance(sets, list) and len(sets) >= 2 and d["pool"] is not None):
        raise DataError(f"{where}.test_sets: {sets!r}: expected a list of two or more test sets (a pooled claim)")
    for i, name in enumerate(sets or ()):
        check_name(name, f"{where}.test_sets[{i}]")
    pooled = d["pool"] is not None and not sets
    if d.get("x") is not None:  # a trend claim: a lists its models, x their alphas, b is empty
        x = d["x"]
        if not (isinstance(x, list) and isinstance(d.get("a"), list) and len(x) == len(d["a"]) >= 3
                and d.get("b") == [] and d["pool"] is None and d["direction"] != "equivalent"
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in x)):
            raise DataError(f"{where}: a trend claim: expected a list of three or more models in a, their finite "
                            f"alphas in x, b empty, an ordering direction, no pooling")
        a = tuple(_ref(v, f"{where}.a[{i}]") for i, v in enumerate(d["a"]))
        return ClaimSpec(d["claim"], d["metric"], a, (), d["direction"], None, d["source"], d["test_set"],
                         d["family"], None, (), tuple(float(v) for v in x))
    if pooled:
        if not (isinstance(d.get("a"), list) and isinstance(d.get("b"), list) and d["a"]
                and len(d["a"]) == len(d["b"])):
            raise DataError(f"{where}: a pooled claim: expected a and b lists of the same length")
        a = tuple(_ref(x, f"{where}.a[{i}]") for i, x in enumerate(d["a"]))
        b = tuple(_ref(x, f"{where}.b[{i}]") for i, x in enumerate(d["b"]))
    else:
        a, b = _ref(d.get("a"), f"{where}.a"), _ref(d.get("b"), f"{where}.b")
    return ClaimSpec(d["claim"], d["metric"], a, b, d["direction"], margin if d["direction"] == "equivalent" else None,
                     d["source"], d["test_set"], d["family"], d["pool"], tuple(sets or ()))


def same(x, y) -> bool:
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))
    if isinstance(x, float) or isinstance(y, float):
        return (isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool)
                and not isinstance(y, bool) and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12))
    return x == y


def check(stored: list, rows: list, where: str) -> list:
    """The stored claims of a comparison.json judged again on its (validated) rows; a DataError naming the first
    claim and field whose stored value differs from what the rows and the rules give. Returns the Claims."""
    from nmt.report import jsonable
    if not isinstance(stored, list):
        raise DataError(f"{where}: claims: expected a list")
    specs = [spec_of(d, f"{where}: claims[{i}]") for i, d in enumerate(stored)]
    again = adjust([judge_one(s, rows, s.test_set) for s in specs])
    for i, (d, c) in enumerate(zip(stored, again)):
        fresh = jsonable(c.to_dict())
        for key in CHECKED:
            if not same(d.get(key), fresh[key]):
                raise DataError(f"{where}: claims[{i}] ({d['claim']!r}).{key}: stored {d.get(key)!r}, but its rows "
                                f"give {fresh[key]!r}: the file was edited, or made by another version")
    return again


def _sd(c: dict) -> float:
    """The standard deviation behind a claim's standard error: of the per-seed differences, or pooled within
    blocks for a blocked claim (per seed of a block)."""
    from nmt.stats import groups_of
    if c.get("pool") == "blocks":
        groups = groups_of(c["seeds"], c["differences"])
        return c["se"] * len(groups) / math.sqrt(sum(1 / len(g) for g in groups))
    n = len(groups_of(c["seeds"], c["differences"])) if c.get("pool") == "general" else c["n"]
    return c["se"] * math.sqrt(n)


def seeds_plan(claims: list, effects: dict) -> list:
    """For each ordering claim on a metric of `effects` ({metric: effect}), the seeds (per block, for a blocked
    claim; blocks, for a t over block means) it would need to detect that effect with 80% power, at 5% and at
    its family's Holm level, from its observed spread. Lines of text."""
    from nmt.metrics import claim_format
    from nmt.stats import LEVEL, seeds_needed
    lines = []
    for family in ("primary", "secondary"):
        members = [c for c in claims if c.get("family") == family]
        m = sum(1 for c in members if c.get("p") is not None)
        for c in members:
            if c["metric"] not in effects or c["direction"] == "equivalent" or c.get("se") is None:
                continue
            effect, f = effects[c["metric"]], claim_format(c["metric"])
            sd = _sd(c)
            unit = {"blocks": "seeds per block", "general": "blocks"}.get(c.get("pool"), "seeds")
            n0, n1 = seeds_needed(sd, effect), seeds_needed(sd, effect, LEVEL / max(m, 1))
            lines.append(f"{c['claim']} [{c['test_set']}]: sd {f.format(sd)[1:]}, n = {c['n']}; to detect "
                         f"±{effect:g} with 80% power: {n0 or '>1000'} {unit} at 5%, {n1 or '>1000'} at the {family} "
                         f"family's Holm level (5% / {m})")
    return lines
