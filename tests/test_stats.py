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
