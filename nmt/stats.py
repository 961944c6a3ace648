"""Verdicts from per-seed differences: paired t over seeds, TOST with a margin, pooling by blocks, power, and
Holm's adjustment within a claim's family.

A claim compares two models of one study, a and b, on one metric. Models of the same seed share their seed
(initialisation, dropout, batch order), so the test is paired: d_s = metric(a, seed s) - metric(b, seed s)
for each seed s both have, n of them, mean d, standard deviation s_d, standard error se = s_d / sqrt(n),
df = n - 1.

Pooled claims (one pair of models per block, e.g. per language pair or test set) have units "BLOCK:seed"; the
blocks differ far more than the seeds do, so they are never treated as one population:
- pool "blocks" (fixed effect): estimate = mean of the B block means; pooled within-block variance
  s_p^2 = sum_b sum_s (d_bs - mean_b)^2 / df with df = sum_b (n_b - 1); se = s_p sqrt(sum_b 1 / n_b) / B.
  Heterogeneity: one-way ANOVA of the differences by block (`scipy.stats.f_oneway`), F with (B - 1, N - B) df.
  Where its p < 0.05 the effect differs by block and the per-block claims are the verdicts that stand.
- pool "general" ("pairs in general", a different question): a t over the B block means, df = B - 1.

With an estimate, its se and df:
- direction "less" (a < b) or "greater" (a > b): the 95% interval d +- t(0.975, df) se and the two-sided p of
  d / se (for one block this is `scipy.stats.ttest_rel`).
    holds:         the interval excludes 0 on the claimed side;
    contradicted:  it excludes 0 on the other side;
    inconclusive:  it contains 0.
  Power: the minimal detectable effect (mde) is the |difference| that a two-sided t test at level L detects
  with probability 0.8: the noncentrality nc with P(|T| > t(1 - L/2, df)) = 0.8 for T ~ noncentral t(df, nc),
  times se. `mde` at L = 0.05; `mde_holm` at L = 0.05 / m, the level the first of the m tested claims of its
  family must meet under Holm (the most it could need).
- direction "equivalent" (|a - b| < margin), the margin written in the study before it runs: TOST (two one-
  sided tests, Schuirmann 1987) at 5% each, i.e. the 90% interval d +- t(0.95, df) se, and
  p = max(p_lower, p_upper) with p_lower = P(t > (d + margin) / se), p_upper = P(t < (d - margin) / se).
    holds:         the interval lies inside (-margin, +margin);
    contradicted:  it lies wholly outside it;
    inconclusive:  it straddles a bound.
- One seed (df = 0): no interval; every claim is "inconclusive (one seed)".
- Holm (1979) within a family ("primary": the paper's claims as written before the runs; "secondary": every
  other metric): p_holm of the i-th smallest of the family's m p-values is max over j <= i of
  min(1, (m - j + 1) p_(j)). `verdict_holm` applies the same rules at the adjusted level: holds / contradicted
  need p_holm < 0.05 as well as the interval's side.

Distributions come from scipy.stats (t, chi, norm, f_oneway), the power integral from scipy.integrate.quad and
the root from scipy.optimize.brentq.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Optional, Union

DIRECTIONS = ("less", "greater", "equivalent")
FAMILIES = ("primary", "secondary")
POOLS = ("blocks", "general")
LEVEL = 0.05  # 95% intervals for orderings; TOST at 5% on each side (a 90% interval)
POWER = 0.8  # the power a minimal detectable effect is stated at
HETEROGENEITY_LEVEL = 0.05
TESTS = {(None, False): "paired t", (None, True): "TOST", ("blocks", False): "blocked t",
         ("blocks", True): "blocked TOST",
         ("general", False): "t over block means", ("general", True): "TOST over block means"}

TREND_TEST = "t over per-seed slopes"  # a trend claim's test: a paired t on each seed's least-squares slope

ModelSide = Union[dict, list]  # {"model": name, "t_kind": "1" | "fitted"}, or a pooled claim's list of them


@dataclass
class Heterogeneity:
    """One-way ANOVA of a pooled claim's differences by block: F, its p and (between, within) df."""
    f: Optional[float]
    p: Optional[float]
    df: list

    @property
    def differs(self) -> bool:
        return self.p is not None and self.p < HETEROGENEITY_LEVEL


@dataclass
class Claim:
    """One claim of a study and its verdict, as comparison.json stores it (`recompute` checks it)."""
    claim: str  # its sentence, e.g. "ECE(LS) < ECE(hard)"
    metric: str  # a metric of the registry (nmt.metrics), e.g. "ece_forced"
    a: ModelSide  # the model on the left: {"model": study name, "t_kind": "1" or "fitted"}; pooled: a list
    b: ModelSide
    direction: str  # what the claim says of a - b: less, greater, equivalent
    differences: list  # per-unit a - b, in unit order
    seeds: list  # the units paired: seeds, or for a pooled claim "BLOCK:seed" (BLOCK: the a-side model)
    test: str  # a value of TESTS
    estimate: Optional[float]  # mean difference (pooled: mean of the block means)
    ci: Optional[list]  # [low, high]: 95% (orderings) or 90% (TOST); None with one seed
    p: Optional[float]
    n: int
    margin: Optional[float] = None
    verdict: str = "inconclusive"
    p_holm: Optional[float] = None
    verdict_holm: str = "inconclusive"
    source: str = "paper"  # where the claim comes from: the paper, or the study's own question
    test_set: str = ""
    family: str = "primary"  # the Holm family: primary or secondary
    pool: Optional[str] = None  # pooled claims: "blocks" or "general"
    df: Optional[int] = None
    se: Optional[float] = None  # the estimate's standard error (None with one seed)
    heterogeneity: Optional[Heterogeneity] = None  # pooled claims with more than one block
    mde: Optional[float] = None  # orderings: the minimal detectable effect at 5% (power 0.8)
    mde_holm: Optional[float] = None  # the same at 5% / m, m the tested claims of the family
    ci_two_level: Optional[list] = None  # the hierarchical bootstrap's interval (seeds, then sentences)
    test_sets: Optional[list] = None  # a claim pooled over test sets: its blocks (units "TESTSET:seed")
    x: Optional[list] = None  # a trend claim: each a-side model's alpha (b is []); differences are per-seed slopes

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Claim":
        """A claim as `to_dict` wrote it (its fields are this class's; the caller has validated the values)."""
        h = d.get("heterogeneity")
        return cls(**{**d, "heterogeneity": None if h is None else Heterogeneity(**h)})


def _t():
    from scipy import stats
    return stats.t


def t_quantile(q: float, df: int) -> float:
    return float(_t().ppf(q, df))


def mean_se(d: list) -> tuple:
    """(mean, standard error of the mean) of the differences (se None for one value)."""
    m = statistics.fmean(d)
    return m, (statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else None)


def interval_test(direction: str, m: float, se: float, df: int, margin: Optional[float] = None) -> tuple:
    """(interval, p) of an estimate `m` with standard error `se` on `df` degrees of freedom: the 95% interval and
    two-sided p for an ordering, TOST's 90% interval and p against +-margin for an equivalence. A zero spread
    gives the point as its interval and p = 0 (or 1 when nothing is shown)."""
    equivalent = direction == "equivalent"
    if se == 0:
        return [m, m], ((0.0 if abs(m) < margin else 1.0) if equivalent else (1.0 if m == 0 else 0.0))
    t = _t()
    if equivalent:
        half = t_quantile(1 - LEVEL, df) * se
        p_lower = float(t.sf((m + margin) / se, df))  # H0: mean <= -margin
        p_upper = float(t.sf((margin - m) / se, df))  # H0: mean >= +margin
        return [m - half, m + half], max(p_lower, p_upper)
    half = t_quantile(1 - LEVEL / 2, df) * se
    return [m - half, m + half], min(1.0, 2 * float(t.sf(abs(m) / se, df)))


def paired_t(d: list) -> tuple:
    """(estimate, 95% interval, two-sided p) of the mean of `d` (n >= 2)."""
    m, se = mean_se(d)
    return (m, *interval_test("less", m, se, len(d) - 1))


def tost(d: list, margin: float) -> tuple:
    """(estimate, 90% interval, p) of two one-sided tests against +-margin (n >= 2)."""
    m, se = mean_se(d)
    return (m, *interval_test("equivalent", m, se, len(d) - 1, margin))


def blocked(groups: list) -> tuple:
    """(estimate, se, df) of differences in fixed blocks: the mean of the block means, the pooled within-block
    variance (df = sum of n_b - 1) and se = s_p sqrt(sum 1 / n_b) / B. se is None where df = 0."""
    means = [statistics.fmean(g) for g in groups]
    est = statistics.fmean(means)
    df = sum(len(g) - 1 for g in groups)
    if df == 0:
        return est, None, 0
    ss = sum((x - m) ** 2 for g, m in zip(groups, means) for x in g)
    se = math.sqrt(ss / df * sum(1 / len(g) for g in groups)) / len(groups)
    return est, se, df


def heterogeneity(groups: list) -> Optional[Heterogeneity]:
    """One-way ANOVA of the differences by block (scipy.stats.f_oneway); None for one block or no spread at all
    within blocks (nothing to compare the blocks' spread with)."""
    from scipy.stats import f_oneway
    k, n = len(groups), sum(len(g) for g in groups)
    if k < 2 or n - k < 1:
        return None
    within = sum((x - statistics.fmean(g)) ** 2 for g in groups for x in g)
    if within == 0:
        return Heterogeneity(None, None, [k - 1, n - k])
    res = f_oneway(*groups)
    return Heterogeneity(float(res.statistic), float(res.pvalue), [k - 1, n - k])


def mde(se: Optional[float], df: int, level: float = LEVEL, power: float = POWER) -> Optional[float]:
    """The minimal detectable effect of a two-sided t test (see the module docstring); None where df = 0."""
    if se is None or df < 1:
        return None
    if se == 0:
        return 0.0
    from scipy.optimize import brentq
    crit = t_quantile(1 - level / 2, df)

    def shortfall(nc):
        return t_power(nc, crit, df) - power
    hi = 1.0
    while shortfall(hi) < 0:
        hi *= 2
    return brentq(shortfall, 0.0, hi, xtol=1e-10) * se


def t_power(nc: float, crit: float, df: int) -> float:
    """P(|T| > crit) for T ~ noncentral t(df, nc), as an integral over S = sqrt(V / df), V ~ chi^2(df):
    int [Phi(nc - crit s) + Phi(-nc - crit s)] f_S(s) ds, f_S(s) = 2 df s f_V(df s^2) (scipy's nct tails give
    NaN far out, at small df). The integrand is plain math (erfc, lgamma): scipy's frozen distributions cost
    ~100 times more per point, and every claim's power calls this a few hundred times."""
    from scipy.integrate import quad
    half = df / 2
    log_norm = math.log(2 * df) - (half * math.log(2) + math.lgamma(half))

    def integrand(x: float) -> float:
        if x <= 0:
            return 0.0
        v = df * x * x
        density = math.exp(log_norm + math.log(x) + (half - 1) * math.log(v) - v / 2)
        return 0.5 * (math.erfc(-(nc - crit * x) / SQRT2) + math.erfc(-(-nc - crit * x) / SQRT2)) * density
    value, _ = quad(integrand, 0, math.inf, epsabs=1e-12, limit=200)
    return value


SQRT2 = math.sqrt(2.0)


def seeds_needed(sd: float, effect: float, level: float = LEVEL, power: float = POWER, most: int = 1000):
    """The fewest seeds n (>= 2) whose paired t test at `level` detects `effect` with probability `power`, given
    a standard deviation `sd` of the per-seed differences; None if more than `most` would be needed."""
    for n in range(2, most + 1):
        if mde(sd / math.sqrt(n), n - 1, level, power) <= effect:
            return n
    return None


def verdict_of(direction: str, ci, margin=None, p=None, level=None) -> str:
    """The three-way verdict of an interval (see the module docstring); with `level` (a significance level), p must
    be below it too."""
    if ci is None:
        return "inconclusive (one seed)"
    lo, hi = ci
    significant = level is None or (p is not None and p < level)
    if direction == "equivalent":
        if -margin < lo and hi < margin and significant:
            return "holds"
        if lo >= margin or hi <= -margin:  # evidence against equivalence: the TOST p does not speak to it
            return "contradicted"
        return "inconclusive"
    claimed_side = (hi < 0) if direction == "less" else (lo > 0)
    other_side = (lo > 0) if direction == "less" else (hi < 0)
    if claimed_side and significant:
        return "holds"
    if other_side and significant:
        return "contradicted"
    return "inconclusive"


def holm(pvalues: list) -> list:
    """Holm's step-down adjustment; None entries (no test) stay None and are not in the family."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(idx)
    out = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def block_of(unit) -> str:
    """The block of a pooled claim's unit "BLOCK:seed"."""
    return str(unit).rsplit(":", 1)[0]


def groups_of(units: list, d: list) -> list:
    """The differences grouped by block, blocks in order of first appearance."""
    groups = {}
    for u, x in zip(units, d):
        groups.setdefault(block_of(u), []).append(x)
    return list(groups.values())


def estimate_of(d: list, units: list, pool: Optional[str]) -> tuple:
    """(estimate, se, df, heterogeneity) of the differences, by the claim's pooling."""
    if pool is None:
        m, se = mean_se(d)
        return m, se, len(d) - 1, None
    groups = groups_of(units, d)
    if pool == "blocks":
        return (*blocked(groups), heterogeneity(groups))
    m, se = mean_se([statistics.fmean(g) for g in groups])
    return m, se, len(groups) - 1, heterogeneity(groups)


def slope(x: list, y: list) -> float:
    """The least-squares slope of y on x: sum((x_i - mean x)(y_i - mean y)) / sum((x_i - mean x)^2)."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((u - mx) * (v - my) for u, v in zip(x, y)) / sum((u - mx) ** 2 for u in x)


def judge(claim: str, metric: str, a, b, direction: str, per_seed_a: dict, per_seed_b: dict,
          margin: float = None, source: str = "paper", test_set: str = "", family: str = "primary",
          pool: Optional[str] = None, test_sets: Optional[list] = None, x: Optional[list] = None) -> Claim:
    """A Claim from each model's per-unit values ({seed: value}, or {"BLOCK:seed": value} for a pooled claim);
    only units both have are paired, in sorted order."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}: expected one of {', '.join(DIRECTIONS)}")
    if direction == "equivalent" and not (margin and margin > 0):
        raise ValueError("an equivalence claim needs a positive margin")
    if family not in FAMILIES or pool not in (None, *POOLS):
        raise ValueError(f"family {family!r} / pool {pool!r}: expected one of {FAMILIES} / {POOLS}")
    units = sorted(set(per_seed_a) & set(per_seed_b))
    d = [per_seed_a[s] - per_seed_b[s] for s in units]
    if x is not None and (direction == "equivalent" or pool is not None):
        raise ValueError("a trend claim is an ordering (less or greater) over seeds, not pooled")
    test = TREND_TEST if x is not None else TESTS[pool, direction == "equivalent"]
    c = Claim(claim, metric, a, b, direction, d, units, test, None, None, None, len(d), margin, source=source,
              test_set=test_set, family=family, pool=pool, test_sets=list(test_sets) if test_sets else None,
              x=list(x) if x is not None else None)
    if not d:
        c.verdict = c.verdict_holm = "not measured (no runs)"
        return c
    c.estimate, c.se, c.df, c.heterogeneity = estimate_of(d, units, pool)
    if c.se is not None:
        c.ci, c.p = interval_test(direction, c.estimate, c.se, c.df, margin)
        if direction != "equivalent":
            c.mde = mde(c.se, c.df)
    c.verdict = verdict_of(direction, c.ci, margin)
    return c


def adjust(claims: list) -> list:
    """Holm-adjust the p-values within each family (in place), give each its verdict at that level and each
    ordering its minimal detectable effect at the family's Holm level."""
    for family in FAMILIES:
        members = [c for c in claims if c.family == family]
        tested = sum(1 for c in members if c.p is not None)
        for c, ph in zip(members, holm([c.p for c in members])):
            c.p_holm = ph
            c.verdict_holm = verdict_of(c.direction, c.ci, c.margin, ph, LEVEL) if c.ci is not None else c.verdict
            if c.mde is not None:
                c.mde_holm = mde(c.se, c.df, LEVEL / tested)
    return claims


def recompute(d: dict) -> Claim:
    """A stored claim (comparison.json) recomputed from its `differences` alone, before Holm (`recompute_all`
    adjusts a whole list): the check that every interval, p-value and verdict follows from the per-unit values."""
    per_a = {s: x for s, x in zip(d["seeds"], d["differences"])}
    return judge(d["claim"], d["metric"], d["a"], d["b"], d["direction"], per_a, {s: 0.0 for s in d["seeds"]},
                 d.get("margin"), d.get("source", "paper"), d.get("test_set", ""), d.get("family", "primary"),
                 d.get("pool"), d.get("test_sets"), d.get("x"))


def recompute_all(claims: list) -> list:
    """Every stored claim of a study recomputed from its differences and Holm-adjusted within its family."""
    return adjust([recompute(c) for c in claims])
