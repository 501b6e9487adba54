"""Figures for record READMEs (matplotlib, headless): validation curves with seed bands, ablation Δ bars.

The data each figure draws is computed first (`curve_sets`, `ablation_bars`), so tests check what is plotted
against the store, not pixels. matplotlib is imported only here, with the Agg backend (no display needed).
"""

from __future__ import annotations

import io
import os
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golf.analysis.groups import Group
from golf.errors import GolfError

FIGURE_FORMATS = ("png", "svg")
CURVE_METRICS = ("val_bpb", "val_loss", "train_loss")


@dataclass
class SeedCurve:
    seed: int | None
    run_id: str
    steps: list[int]
    values: list[float]


@dataclass
class CurveSet:
    """One group's curves: each seed's, and the mean ± std band over the steps every seed logged."""

    label: str
    seeds: list[SeedCurve]
    band_steps: list[int]
    band_mean: list[float]
    band_std: list[float]  # 0 with one seed


def curve_sets(groups: Sequence[Group], steps: Mapping[str, Sequence[Mapping[str, Any]]],
               metric: str = "val_bpb") -> list[CurveSet]:
    if metric not in CURVE_METRICS:
        raise GolfError(f"--metric {metric}: expected one of {', '.join(CURVE_METRICS)}")
    out = []
    for group in groups:
        seeds = []
        for run in group.scored_runs:
            points = [(int(row["step"]), float(row[metric])) for row in steps.get(run["id"], [])
                      if row.get(metric) is not None]
            if points:
                seeds.append(SeedCurve(run.get("seed"), run["id"], [p[0] for p in points], [p[1] for p in points]))
        common = sorted(set.intersection(*(set(c.steps) for c in seeds))) if seeds else []
        by_step = [{s: v for s, v in zip(c.steps, c.values, strict=True)} for c in seeds]
        mean = [statistics.fmean(d[s] for d in by_step) for s in common]
        std = [statistics.stdev(d[s] for d in by_step) if len(by_step) > 1 else 0.0 for s in common]
        out.append(CurveSet(group.label, seeds, common, mean, std))
    if not any(c.seeds for c in out):
        hint = "; try --metric train_loss" if metric != "train_loss" else ""
        raise GolfError(f"no {metric} logged for {', '.join(g.label for g in groups)}{hint}")
    return out


def curves_figure(sets: Sequence[CurveSet], metric: str = "val_bpb") -> Any:
    """One line per seed (thin), the mean over seeds (thick) inside its ± std band, per group."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, curves in enumerate(sets):
        color = colors[i % len(colors)]
        for seed in curves.seeds:
            ax.plot(seed.steps, seed.values, color=color, alpha=0.35, linewidth=0.9,
                    label=f"_seed {seed.seed}", gid=f"seed:{curves.label}:{seed.seed}")
        if len(curves.seeds) > 1 and curves.band_steps:
            ax.fill_between(curves.band_steps, [m - s for m, s in zip(curves.band_mean, curves.band_std, strict=True)],
                            [m + s for m, s in zip(curves.band_mean, curves.band_std, strict=True)],
                            color=color, alpha=0.18, linewidth=0, gid=f"band:{curves.label}")
        if curves.band_steps:
            n = len(curves.seeds)
            last = curves.band_mean[-1]
            ax.plot(curves.band_steps, curves.band_mean, color=color, linewidth=2.0, gid=f"mean:{curves.label}",
                    label=f"{curves.label} ({n} seed{'s' if n != 1 else ''}, {last:.4f} at the end)")
    _zoom_late(ax, sets)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by step (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _zoom_late(ax: Any, sets: Sequence[CurveSet]) -> None:
    """The first evaluations (near the unigram entropy) would flatten the part of the curves that differs."""
    values = [(s, v) for c in sets for seed in c.seeds for s, v in zip(seed.steps, seed.values, strict=True)]
    last = max(s for s, _ in values)
    late = [v for s, v in values if s >= 0.2 * last] or [v for _, v in values]
    low, high = min(v for _, v in values), max(late)
    if high > low:
        ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))


@dataclass
class AblationBar:
    change: str
    delta: float
    std: float | None
    n: int


def ablation_bars(rows: Sequence[Mapping[str, Any]]) -> list[AblationBar]:
    """The variants' Δ bpb (and its std) from `golf.analysis.ablation.ablation_rows`, base row left out."""
    bars = [AblationBar(str(r["change"]), float(r["delta_bpb"]), r.get("delta_bpb_std"), int(r.get("n") or 0))
            for r in rows if r.get("vs") is not None and r.get("delta_bpb") is not None]
    if not bars:
        raise GolfError("no variant has a Δ bpb to plot (do the groups have completed runs?)")
    return bars


def ablation_figure(bars: Sequence[AblationBar], title: str) -> Any:
    """Horizontal bars of Δ bpb (negative = better), ± the std of the difference as error bars."""
    plt = _pyplot()
    height = max(2.2, 0.5 * len(bars) + 1.4)
    fig, ax = plt.subplots(figsize=(7.5, height), dpi=120)
    ys = list(range(len(bars)))[::-1]  # first change on top
    errors = [b.std if b.std is not None else 0.0 for b in bars]
    colors = ["#2a9d55" if b.delta < 0 else "#c0392b" for b in bars]
    ax.barh(ys, [b.delta for b in bars], xerr=errors, color=colors, capsize=4, gid="deltas")
    ax.set_yticks(ys, [b.change for b in bars], fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    for y, bar in zip(ys, bars, strict=True):
        ax.annotate(f"{bar.delta:+.4f}".replace("-", "\u2212"), (bar.delta, y), xytext=(4 if bar.delta >= 0 else -4, 0),
                    textcoords="offset points", ha="left" if bar.delta >= 0 else "right", va="center", fontsize=7)
    ax.set_xlabel("Δ bpb against the base (lower is better; bars: ± std of the difference)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def figure_bytes(fig: Any, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes, without a creation date (the same runs give the same file)."""
    if fmt not in FIGURE_FORMATS:
        raise GolfError(f"figure format {fmt!r}: expected one of {', '.join(FIGURE_FORMATS)}")
    plt = _pyplot()
    buf = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    with plt.rc_context({"svg.hashsalt": "golf", "svg.fonttype": "none"}):
        fig.savefig(buf, format=fmt, metadata=metadata)
    plt.close(fig)
    return buf.getvalue()


def save_figure(fig: Any, out: Path) -> Path:
    """Write to `out` (.png or .svg) through a temporary file, so a failure leaves nothing half-written."""
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise GolfError(f"--out {out}: expected a .png or .svg file name")
    if not out.parent.is_dir():
        raise GolfError(f"--out {out}: folder {out.parent} does not exist")
    data = figure_bytes(fig, fmt)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: GPU boxes and CI have no display
    import matplotlib.pyplot as plt

    return plt
