"""Seed statistics: mean ± sample std, one-sided Welch tests, and the challenge's record rule.

Deltas are always `variant − base`, so an improvement is negative. The record rule is tested in nats
(val_loss), never in bpb: a variant passes when its mean loss is at least `min_delta_nats` below the base
AND a one-sided Welch test of H1 "variant loss < base loss − min_delta_nats" gives p < alpha.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# the challenge's limits, re-exported here for the checks and tables that test against them
from golf.trainer.limits import BYTES_CAP, TIME_BUDGET_S, TIME_SLACK_S  # noqa: F401

MINUS = "\u2212"


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (n−1; None below 2 values) and count of one metric over runs."""

    mean: float | None
    std: float | None
    n: int
    values: tuple[float, ...] = ()

    @property
    def sem2(self) -> float | None:
        """Squared standard error of the mean (s²/n), the Welch building block."""
        if self.std is None or self.n < 2:
            return None
        return self.std ** 2 / self.n

    @property
    def std_pop(self) -> float | None:
        """Population standard deviation (÷n), the convention many records' submission.json use; None below 2."""
        if self.std is None or self.n < 2:
            return None
        return self.std * math.sqrt((self.n - 1) / self.n)

    def as_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "std": self.std, "std_pop": self.std_pop, "n": self.n}


def summarize(values: Iterable[float | int | None]) -> Stat:
    """Stat of the finite values (None and NaN are left out)."""
    clean = tuple(float(v) for v in values if v is not None and math.isfinite(float(v)))
    if not clean:
        return Stat(None, None, 0, ())
    std = statistics.stdev(clean) if len(clean) >= 2 else None
    return Stat(statistics.fmean(clean), std, len(clean), clean)


@dataclass(frozen=True)
class Welch:
    statistic: float
    df: float
    p_value: float


def welch_less(variant: Sequence[float], base: Sequence[float], margin: float = 0.0) -> Welch | None:
    """One-sided Welch t-test of H1: mean(variant) < mean(base) − margin.

    Shifting the variant's values by +margin leaves both variances unchanged, so the two-sample test answers
    the shifted hypothesis exactly. None when a side has fewer than 2 values or both have zero variance.
    The statistic and the Welch–Satterthwaite df are two lines; the t distribution comes from scipy.special,
    which imports in half the time of scipy.stats (`golf compare` has a 1 s budget). Tests check the result
    against scipy.stats.ttest_ind(equal_var=False, alternative="less").
    """
    nv, nb = len(variant), len(base)
    if nv < 2 or nb < 2 or (len(set(variant)) == 1 and len(set(base)) == 1):
        return None
    from scipy.special import stdtr

    mv, mb = sum(variant) / nv + margin, sum(base) / nb
    sv = sum((x - mv + margin) ** 2 for x in variant) / (nv - 1) / nv
    sb = sum((x - mb) ** 2 for x in base) / (nb - 1) / nb
    statistic = (mv - mb) / math.sqrt(sv + sb)
    df = (sv + sb) ** 2 / (sv**2 / (nv - 1) + sb**2 / (nb - 1))
    p_value = float(stdtr(df, statistic))
    if not math.isfinite(p_value):
        return None
    return Welch(statistic=statistic, df=df, p_value=p_value)


@dataclass(frozen=True)
class Rule:
    """When a variant counts as better: by default the challenge's record rule (≥ 0.005 nats at p < 0.01)."""

    min_delta_nats: float = 0.005
    alpha: float = 0.01

    def describe(self) -> str:
        return (f"mean improvement ≥ {self.min_delta_nats:g} nats and one-sided Welch p < {self.alpha:g} "
                f"for H1: variant < base − {self.min_delta_nats:g} nats")


@dataclass(frozen=True)
class Delta:
    """A variant against a base on one bpb metric and its nats (val_loss) counterpart."""

    delta_bpb: float | None
    delta_bpb_std: float | None
    delta_nats: float | None
    delta_nats_std: float | None
    p_value: float | None  # one-sided Welch on the bpb metric, H1: variant lower
    p_value_vs_threshold: float | None  # one-sided Welch on nats, H1: variant < base − min_delta
    t_statistic: float | None
    df: float | None
    verdict: str  # pass | fail | n/a
    reason: str

    def as_dict(self) -> dict[str, float | str | None]:
        return {
            "delta_bpb": self.delta_bpb, "delta_bpb_std": self.delta_bpb_std,
            "delta_nats": self.delta_nats, "delta_nats_std": self.delta_nats_std,
            "p_value": self.p_value, "p_value_vs_threshold": self.p_value_vs_threshold,
            "t_statistic": self.t_statistic, "df": self.df,
            "verdict": self.verdict, "verdict_reason": self.reason,
        }


def delta_std(base: Stat, variant: Stat) -> float | None:
    """Standard deviation of the difference of means: sqrt(s1²/n1 + s2²/n2); None when a side has n < 2."""
    a, b = base.sem2, variant.sem2
    if a is None or b is None:
        return None
    return math.sqrt(a + b)


def compare_stats(base_bpb: Stat, variant_bpb: Stat, base_nats: Stat, variant_nats: Stat,
                  rule: Rule = Rule(), note: str | None = None) -> Delta:
    """Deltas, p-values and the verdict of `variant` against `base` under `rule` (`note` joins the reason)."""
    d_bpb = _diff(base_bpb, variant_bpb)
    d_nats = _diff(base_nats, variant_nats)
    plain = welch_less(variant_bpb.values, base_bpb.values)
    threshold = welch_less(variant_nats.values, base_nats.values, margin=rule.min_delta_nats)
    verdict, reason = _verdict(base_nats, variant_nats, d_nats, threshold, rule)
    if note:
        reason = f"{reason}; {note}"
    return Delta(
        delta_bpb=d_bpb, delta_bpb_std=delta_std(base_bpb, variant_bpb),
        delta_nats=d_nats, delta_nats_std=delta_std(base_nats, variant_nats),
        p_value=plain.p_value if plain else None,
        p_value_vs_threshold=threshold.p_value if threshold else None,
        t_statistic=threshold.statistic if threshold else None,
        df=threshold.df if threshold else None,
        verdict=verdict, reason=reason,
    )


def _diff(base: Stat, variant: Stat) -> float | None:
    if base.mean is None or variant.mean is None:
        return None
    return variant.mean - base.mean


def _verdict(base: Stat, variant: Stat, d_nats: float | None, test: Welch | None, rule: Rule) -> tuple[str, str]:
    if d_nats is None:
        return "n/a", "no val_loss (nats) on one side"
    if base.n < 2 or variant.n < 2:
        return "n/a", f"needs ≥ 2 runs on each side (n={base.n} vs {variant.n})"
    improvement = -d_nats
    if improvement < rule.min_delta_nats:
        return "fail", f"improvement {improvement:.4f} nats < {rule.min_delta_nats:g}".replace("-", MINUS)
    if test is None:
        return "n/a", "zero variance on both sides"
    if test.p_value >= rule.alpha:
        return "fail", f"{p_phrase(test.p_value)} ≥ {rule.alpha:g} for Δ < {MINUS}{rule.min_delta_nats:g} nats"
    return "pass", (f"improvement {improvement:.4f} nats ≥ {rule.min_delta_nats:g}, "
                    f"{p_phrase(test.p_value)} < {rule.alpha:g}")


# -- text -------------------------------------------------------------------------------------------------------

def signed(value: float, digits: int = 4) -> str:
    """`+0.0012` / `−0.0034` with a true minus sign, as the records' tables write deltas."""
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        text = f"{0:.{digits}f}"  # no "−0.0000"
    return text.replace("-", MINUS)


def spread(value: float, digits: int = 4) -> str:
    """A standard deviation: fixed decimals, or two significant digits when it is smaller than that."""
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def p_text(p: float) -> str:
    if p < 1e-4:
        return "<0.0001"
    return f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def p_phrase(p: float) -> str:
    """`p=0.003`, or `p<0.0001`."""
    text = p_text(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def mean_std_text(stat: Stat, digits: int = 4, fmt: str | None = None) -> str:
    """`1.1228 ± 0.0004 (3)`; `1.1228 (1)` for one run; `—` for none."""
    if stat.mean is None:
        return "—"
    pattern = fmt or f"{{:.{digits}f}}"
    text = pattern.format(stat.mean)
    if stat.std is not None:
        text += " ± " + (pattern.format(stat.std) if fmt else spread(stat.std, digits))
    return f"{text} ({stat.n})"


def delta_text(delta: float | None, std: float | None, p: float | None, digits: int = 4) -> str:
    """`−0.0020 ± 0.0004, p=0.003` (std and p only where there are ≥ 2 runs a side)."""
    if delta is None:
        return "—"
    text = signed(delta, digits)
    if std is not None:
        text += " ± " + spread(std, digits)
    if p is not None:
        text += ", " + p_phrase(p)
    return text
