"""Seed statistics, the one-sided Welch test and the record rule (nats, not bpb), checked against hand computations."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from golf.analysis.stats import (
    Rule,
    Stat,
    compare_stats,
    delta_std,
    delta_text,
    mean_std_text,
    signed,
    summarize,
    welch_less,
)


def test_summarize_uses_the_sample_std() -> None:
    stat = summarize([1.0, 2.0, 3.0, 4.0, None, float("nan")])
    assert stat.n == 4
    assert stat.mean == pytest.approx(2.5)
    # Σ(x − 2.5)² = 2.25 + 0.25 + 0.25 + 2.25 = 5; sample variance 5/3
    assert stat.std == pytest.approx(math.sqrt(5 / 3))
    assert summarize([1.2]).std is None
    assert summarize([]).mean is None


def test_welch_matches_a_hand_computed_case() -> None:
    # a = [1, 2, 3]: mean 2, s² = 1.  b = [4, 5, 6, 7]: mean 5.5, s² = 5/3.
    # se² = 1/3 + (5/3)/4 = 0.75;  t = (2 − 5.5) / sqrt(0.75) = −4.041452
    # Welch–Satterthwaite: df = 0.75² / ((1/3)²/2 + (5/12)²/3) = 0.5625 / (0.0555556 + 0.0578704) = 4.959184
    result = welch_less([1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0])
    assert result is not None
    assert result.statistic == pytest.approx(-4.041452, abs=1e-6)
    assert result.df == pytest.approx(4.959184, abs=1e-6)
    # one-sided, H1: mean(a) < mean(b): the lower tail of Student's t
    assert result.p_value == pytest.approx(sps.t.cdf(-4.041452, 4.959184), rel=1e-5)
    assert 0.004 < result.p_value < 0.006


def test_welch_with_a_margin_tests_the_shifted_hypothesis() -> None:
    variant = [2.060, 2.062, 2.058]
    base = [2.070, 2.071, 2.069, 2.070]
    margin = 0.005
    mv, mb = sum(variant) / 3, sum(base) / 4
    vv = sum((x - mv) ** 2 for x in variant) / 2
    vb = sum((x - mb) ** 2 for x in base) / 3
    se2 = vv / 3 + vb / 4
    t = (mv + margin - mb) / math.sqrt(se2)
    df = se2 ** 2 / ((vv / 3) ** 2 / 2 + (vb / 4) ** 2 / 3)
    result = welch_less(variant, base, margin=margin)
    assert result is not None
    assert result.statistic == pytest.approx(t, rel=1e-9)
    assert result.df == pytest.approx(df, rel=1e-9)
    assert result.p_value == pytest.approx(sps.t.sf(-t, df), rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_welch_agrees_with_scipy_stats_ttest_ind(seed: int) -> None:
    import random

    rng = random.Random(seed)
    variant = [rng.gauss(2.0, 0.01) for _ in range(rng.randint(2, 6))]
    base = [rng.gauss(2.01, 0.02) for _ in range(rng.randint(2, 6))]
    for margin in (0.0, 0.005):
        ours = welch_less(variant, base, margin=margin)
        ref = sps.ttest_ind([v + margin for v in variant], base, equal_var=False, alternative="less")
        assert ours is not None
        assert ours.statistic == pytest.approx(float(ref.statistic), rel=1e-9)
        assert ours.df == pytest.approx(float(ref.df), rel=1e-9)
        assert ours.p_value == pytest.approx(float(ref.pvalue), rel=1e-7)


def test_welch_needs_two_values_a_side() -> None:
    assert welch_less([1.0], [1.0, 2.0]) is None
    assert welch_less([1.0, 1.0], [1.0, 1.0]) is None  # zero variance both sides: no test


def _stats(values: list[float]) -> Stat:
    return summarize(values)


def test_rule_is_in_nats_not_bpb_a_big_bpb_delta_with_a_small_nats_delta_fails() -> None:
    # bpb improves by 0.006 (≥ 0.005) but the loss only by 0.004 nats (< 0.005): the record rule is not met.
    base_bpb, var_bpb = _stats([1.1200, 1.1201, 1.1199]), _stats([1.1140, 1.1141, 1.1139])
    base_nats, var_nats = _stats([1.9000, 1.9001, 1.8999]), _stats([1.8960, 1.8961, 1.8959])
    delta = compare_stats(base_bpb, var_bpb, base_nats, var_nats, Rule())
    assert delta.delta_bpb == pytest.approx(-0.006)
    assert delta.delta_nats == pytest.approx(-0.004)
    assert delta.p_value is not None and delta.p_value < 0.001  # plainly lower...
    assert delta.verdict == "fail"  # ...but not by 0.005 nats
    assert "0.0040 nats < 0.005" in delta.reason


def test_rule_passes_on_nats_even_when_the_bpb_delta_is_below_the_threshold() -> None:
    # bpb improves by only 0.003 but the loss by 0.007 nats, tightly: the rule is met.
    base_bpb, var_bpb = _stats([1.1200, 1.1201, 1.1199]), _stats([1.1170, 1.1171, 1.1169])
    base_nats, var_nats = _stats([1.9000, 1.9001, 1.8999]), _stats([1.8930, 1.8931, 1.8929])
    delta = compare_stats(base_bpb, var_bpb, base_nats, var_nats, Rule())
    assert delta.delta_bpb == pytest.approx(-0.003)
    assert delta.delta_nats == pytest.approx(-0.007)
    assert delta.verdict == "pass"
    # the threshold test is the plain test of variant + 0.005 against base
    shifted = sps.ttest_ind([v + 0.005 for v in var_nats.values], base_nats.values, equal_var=False,
                            alternative="less")
    assert delta.p_value_vs_threshold == pytest.approx(float(shifted.pvalue))
    assert delta.p_value_vs_threshold < 0.01


def test_rule_fails_when_the_mean_clears_the_threshold_but_not_significantly() -> None:
    base_nats = _stats([1.900, 1.890, 1.910])
    var_nats = _stats([1.890, 1.880, 1.900])  # 0.010 better on average, but noisy
    delta = compare_stats(base_nats, var_nats, base_nats, var_nats, Rule())
    assert delta.delta_nats == pytest.approx(-0.010)
    assert delta.p_value_vs_threshold is not None and delta.p_value_vs_threshold >= 0.01
    assert delta.verdict == "fail"
    # a looser rule (the 2026-04 progression rule: p < 0.25, no minimum) accepts it
    loose = compare_stats(base_nats, var_nats, base_nats, var_nats, Rule(min_delta_nats=0.0, alpha=0.25))
    assert loose.verdict == "pass"


def test_single_runs_give_deltas_but_no_test() -> None:
    delta = compare_stats(_stats([1.12]), _stats([1.11]), _stats([1.90]), _stats([1.88]))
    assert delta.delta_bpb == pytest.approx(-0.01)
    assert delta.p_value is None and delta.delta_bpb_std is None
    assert delta.verdict == "n/a"


def test_delta_std_is_the_welch_standard_error() -> None:
    a, b = _stats([1.0, 2.0, 3.0]), _stats([4.0, 5.0, 6.0, 7.0])
    assert delta_std(a, b) == pytest.approx(math.sqrt(1 / 3 + (5 / 3) / 4))


def test_text_uses_a_true_minus_sign() -> None:
    assert signed(-0.002) == "\u22120.0020"
    assert signed(0.0012) == "+0.0012"
    assert signed(-0.00001) == "0.0000"
    assert delta_text(-0.002, 0.0004, 0.003) == "\u22120.0020 ± 0.0004, p=0.003"
    assert delta_text(-0.002, None, None) == "\u22120.0020"
    assert mean_std_text(_stats([1.0, 2.0, 3.0])) == "2.0000 ± 1.0000 (3)"
    assert mean_std_text(_stats([])) == "—"
