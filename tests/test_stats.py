"""Verdicts: paired t over seeds, TOST with a margin, Holm; worked out by hand (df = 2 has a closed form:
F(t) = 1/2 + t / (2 sqrt(t^2 + 2)), so t(0.975, 2) = 4.302653, t(0.95, 2) = 2.919986)."""
import math

import pytest
from scipy import stats as sps

from nmt.stats import adjust, holm, judge, recompute

T975_2, T95_2 = 4.302653, 2.919986


def claim(d, direction="less", margin=None):
    return judge("c", "m", {"model": "a"}, {"model": "b"}, direction, dict(enumerate(d, 1)),
                 {s: 0.0 for s in range(1, len(d) + 1)}, margin)


def test_t_quantiles_by_hand():
    assert sps.t.ppf(0.975, 2) == pytest.approx(T975_2, abs=1e-6)
    assert sps.t.ppf(0.95, 2) == pytest.approx(T95_2, abs=1e-6)


def test_paired_t_at_three_seeds_by_hand():
    # d = 1, 2, 3: mean 2, sd 1, se 1/sqrt 3; interval 2 -+ 4.302653 / sqrt 3 = [-0.484138, 4.484138]
    c = claim([1.0, 2.0, 3.0], "greater")
    assert c.estimate == 2.0 and c.ci == pytest.approx([-0.484138, 4.484138], abs=1e-6)
    t = 2 / (1 / math.sqrt(3))
    assert c.p == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-9)  # 0.074180
    assert c.p == pytest.approx(sps.ttest_rel([1, 2, 3], [0, 0, 0]).pvalue, abs=1e-12)
    assert c.verdict == "inconclusive" and c.test == "paired t" and c.n == 3


@pytest.mark.parametrize("d, direction, verdict", [
    ([-3.0, -2.0, -4.0], "less", "holds"),  # [-5.484, -0.516]: below 0, as claimed
    ([3.0, 2.0, 4.0], "less", "contradicted"),  # above 0: the other way
    ([3.0, 2.0, 4.0], "greater", "holds"),
    ([-1.0, 1.0, 0.5], "less", "inconclusive"),
])
def test_three_way_verdicts(d, direction, verdict):
    assert claim(d, direction).verdict == verdict


def test_one_seed_is_inconclusive_whatever_the_difference():
    c = claim([-5.0], "less")
    assert c.verdict == "inconclusive (one seed)" and c.ci is None and c.p is None and c.estimate == -5.0


@pytest.mark.parametrize("margin, verdict", [(0.005, "holds"), (0.003, "inconclusive"), (0.0002, "contradicted")])
def test_tost_inside_straddling_and_outside_the_margin(margin, verdict):
    # d = 0.001, 0.002, 0.003: mean 0.002, se 0.001 / sqrt 3; 90% interval 0.002 -+ 2.919986 * 0.000577350
    c = claim([0.001, 0.002, 0.003], "equivalent", margin)
    assert c.ci == pytest.approx([0.000314145, 0.003685855], abs=1e-9) and c.test == "TOST"
    assert c.verdict == verdict
    se = 0.001 / math.sqrt(3)
    assert c.p == pytest.approx(max(sps.t.sf((0.002 + margin) / se, 2), sps.t.sf((margin - 0.002) / se, 2)))


def test_holm_on_a_small_list():
    # sorted 0.01, 0.03, 0.04 (m = 3): 3 x 0.01 = 0.03; 2 x 0.03 = 0.06; 1 x 0.04 = 0.04 -> kept at 0.06
    got = holm([0.01, 0.04, 0.03, None])
    assert got[:3] == pytest.approx([0.03, 0.06, 0.06]) and got[3] is None
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_holm_verdicts_and_recomputation():
    cs = adjust([claim([-3.0, -2.0, -4.0]), claim([-1.0, -1.1, -0.9])])
    assert all(c.p_holm >= c.p for c in cs)
    for c in cs:
        again = recompute(c.to_dict())
        assert (again.ci, again.p, again.verdict) == (c.ci, c.p, c.verdict)


# A table worked by hand: differences in three blocks of unequal size.
#   A: 1, 3 (mean 2)   B: 4, 6, 8 (mean 6)   C: 0, 2 (mean 1)
# blocked: estimate (2 + 6 + 1) / 3 = 3; within SS 2 + 8 + 2 = 12 on df 1 + 2 + 1 = 4, s_p^2 = 3;
#          se = sqrt(3 (1/2 + 1/3 + 1/2)) / 3 = 2/3; t(0.975, 4) = 2.776445: 3 -+ 1.850963
# ANOVA:   grand mean 24/7; SSB = (2 (10/7)^2 + 3 (18/7)^2 + 2 (17/7)^2) = 1750/49 on 2 df; MSW = 12/4 = 3;
#          F = (1750/98) / 3 = 5.952381
# general: a t over the means 2, 6, 1: sd sqrt(7), se sqrt(7/3) = 1.527525, df 2: 3 -+ 4.302653 x 1.527525
BLOCKS = {"A": [1.0, 3.0], "B": [4.0, 6.0, 8.0], "C": [0.0, 2.0]}


def pooled(pool, direction="greater", margin=None):
    units = {f"{b}:{i}": x for b, xs in BLOCKS.items() for i, x in enumerate(xs, 1)}
    return judge("c", "m", [], [], direction, units, {u: 0.0 for u in units}, margin, pool=pool)


def test_blocked_estimate_df_and_heterogeneity_by_hand():
    c = pooled("blocks")
    assert c.test == "blocked t" and c.n == 7 and c.df == 4
    assert c.estimate == pytest.approx(3.0) and c.se == pytest.approx(2 / 3)
    assert c.ci == pytest.approx([3 - 2.776445 * 2 / 3, 3 + 2.776445 * 2 / 3], abs=1e-6)
    assert c.p == pytest.approx(2 * sps.t.sf(4.5, 4)) and c.verdict == "holds"
    h = c.heterogeneity
    assert h.f == pytest.approx(1750 / 98 / 3) and h.df == [2, 4]
    assert h.p == pytest.approx(sps.f.sf(1750 / 98 / 3, 2, 4))
    assert h.f == pytest.approx(sps.f_oneway(*BLOCKS.values()).statistic)
    assert h.differs is (h.p < 0.05)


def test_the_general_question_is_a_t_over_block_means():
    c = pooled("general")
    se = math.sqrt(7 / 3)
    assert c.test == "t over block means" and c.df == 2 and c.se == pytest.approx(se)
    assert c.ci == pytest.approx([3 - T975_2 * se, 3 + T975_2 * se], abs=1e-5) and c.verdict == "inconclusive"


def test_a_blocked_tost_uses_the_pooled_se_and_df():
    c = pooled("blocks", "equivalent", margin=5.0)
    half = sps.t.ppf(0.95, 4) * 2 / 3
    assert c.test == "blocked TOST" and c.ci == pytest.approx([3 - half, 3 + half])
    assert c.verdict == "holds" and c.mde is None  # power is stated for orderings


def test_minimal_detectable_effect():
    """80% power: for many degrees of freedom (z(0.975) + z(0.8)) se = 2.801585 se; at df = 2 the noncentral t
    needs far more; the power at the mde is 0.8 (scipy's noncentral t, where it is accurate)."""
    from nmt.stats import mde, seeds_needed, t_power
    assert mde(1.0, 5000) == pytest.approx(2.801585, abs=2e-3)
    d = mde(0.5, 5)
    assert sps.nct.sf(sps.t.ppf(0.975, 5), 5, d / 0.5) + sps.nct.cdf(-sps.t.ppf(0.975, 5), 5, d / 0.5) == \
        pytest.approx(0.8, abs=1e-6)
    assert t_power(d / 0.5, sps.t.ppf(0.975, 5), 5) == pytest.approx(0.8, abs=1e-9)
    for df, nc in ((2, 1.0), (2, 3.0), (10, 2.0), (30, 0.5)):  # the integral against scipy's tails, where they hold
        crit = sps.t.ppf(0.975, df)
        assert t_power(nc, crit, df) == pytest.approx(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc), abs=1e-9)
    assert mde(1.0, 2, 0.05 / 9) > mde(1.0, 2) > mde(1.0, 20)  # a stricter level or fewer seeds: a larger effect
    n = seeds_needed(1.0, 1.0)
    assert mde(1 / math.sqrt(n), n - 1) <= 1.0 < mde(1 / math.sqrt(n - 1), n - 2)
    c = claim([1.0, 2.0, 3.0], "greater")
    assert c.mde == pytest.approx(mde(1 / math.sqrt(3), 2))


def test_holm_runs_within_each_family():
    """The same p-values adjust less in two families of two than in one family of four."""
    ps = [claim(d) for d in ([-3.0, -2.0, -4.0], [-1.0, -1.1, -0.9], [-1.0, -2.0, -0.5], [-2.0, -2.1, -1.9])]
    together = [c.p_holm for c in adjust([claim(c.differences) for c in ps])]
    for c, family in zip(ps, ("primary", "secondary", "primary", "secondary")):
        c.family = family
    apart = adjust(ps)
    assert [c.p_holm for c in apart] != together
    primary = [c.p for c in apart if c.family == "primary"]
    assert [c.p_holm for c in apart if c.family == "primary"] == pytest.approx(holm(primary))
    assert all(c.mde_holm > c.mde for c in apart)
