"""The ablation report's verdicts (bench/ablation_report.py): Welch's t-test on the seeds' APs.

A claim is called held or reversed only at a two-sided p below 0.05; these checks pin the p-values to
Student's t table and the verdicts to hand-computed cases, so that a lenient rule cannot creep back.
"""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # the report imports its siblings by name
from ablation_report import claims_table, two_sided_p, verdict  # noqa: E402


@pytest.mark.parametrize(
    ("t", "df"),
    [(12.7062, 1), (4.3027, 2), (2.7764, 4), (2.2622, 9), (2.0423, 30), (1.9600, 1e7)],  # t at 0.975, by df
)
def test_p_at_the_table_quantiles_is_five_percent(t, df):
    assert two_sided_p(t, df) == pytest.approx(0.05, abs=2e-5)
    assert two_sided_p(-t, df) == pytest.approx(0.05, abs=2e-5)  # two-sided: the sign does not matter


def test_p_against_the_cauchy_distribution():
    assert two_sided_p(0.0, 3) == 1.0
    assert two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-9)  # Cauchy: P(|T| >= 1) = 1/2
    assert two_sided_p(1000.0, 1) == pytest.approx(2 / math.pi * math.atan(1e-3), rel=1e-4)  # far out: steps stay small


def test_verdicts():
    # 3 seeds a side, s = 0.01 on each: se = sqrt(2 * 0.01^2 / 3) = 0.008165, df = 4.
    diff, se, p, said = verdict([0.50, 0.52, 0.51], [0.40, 0.41, 0.42])
    assert (round(diff, 6), round(se, 6), said) == (0.1, 0.008165, "**holds**")
    assert p == pytest.approx(2.55e-4, rel=1e-2)  # t = 12.25 at 4 degrees of freedom
    assert verdict([0.40, 0.41, 0.42], [0.50, 0.52, 0.51])[3] == "**reversed**"
    # t = 2.45 at df 4: past the normal approximation's 2 standard errors, short of the t table's 2.78.
    diff, se, p, said = verdict([0.52, 0.53, 0.54], [0.50, 0.51, 0.52])
    assert 2 < diff / se < 2.7764 and said == "within the noise" and 0.05 < p < 0.1
    assert verdict([0.5], [0.4, 0.41])[3] == "not judged (fewer than 2 seeds)"
    assert verdict([0.5, 0.5], [0.4, 0.4])[1:] == (0.0, 0.0, "**holds**")  # no spread: the difference is exact
    assert verdict([0.5, 0.5], [0.5, 0.5])[3] == "within the noise"


def test_claims_table_sorts_the_claims_by_verdict():
    def runs(*aps):
        return [{"metrics": {"AP": ap}} for ap in aps]

    by_variant = {"a": runs(0.50, 0.52, 0.51), "b": runs(0.50, 0.53, 0.51), "c": runs(0.40, 0.41, 0.42), "d": [], "e": runs(0.60, 0.61, 0.62)}
    lines = claims_table(by_variant)
    rows = [line for line in lines if line.startswith("| ") and "(a) >" in line]
    assert [row.rsplit("|", 2)[1].strip() for row in rows] == ["**holds**", "within the noise", "not run yet", "**reversed**"]
    assert lines[-1] == (
        "**In short**, on this data: holds: VFNet over FCOS/ATSS (+0.100 AP, p < 0.001); within the noise: Varifocal Loss "
        "over focal loss (-0.003 AP, p 0.770); not run yet: star DCN over plain convs; reversed: box refinement (-0.100 AP, p < 0.001)."
    )
