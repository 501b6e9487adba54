"""Loss curves of several runs overlaid in the terminal (plotext)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from golf.analysis.groups import Group

Series = tuple[str, list[int], list[float]]


def group_keys(groups: Sequence[Group]) -> list[str]:
    """Short names for the legend: A, B, C... (labels can be long record folder names)."""
    return [chr(ord("A") + i) if i < 26 else f"G{i}" for i in range(len(groups))]


def curve_series(groups: Sequence[Group], steps: Mapping[str, Sequence[Mapping[str, Any]]],
                 column: str = "train_loss") -> list[Series]:
    """(legend, steps, values) per scored run that logged `column`; legends read `A s1337`."""
    series = []
    for key, group in zip(group_keys(groups), groups, strict=True):
        for run in group.scored_runs:
            points = [(row["step"], row[column]) for row in steps.get(run["id"], []) if row.get(column) is not None]
            if not points:
                continue
            seed = run.get("seed")
            legend = f"{key} s{seed}" if seed is not None else f"{key} {run['name']}"
            series.append((legend, [p[0] for p in points], [p[1] for p in points]))
    return series


def loss_curves(groups: Sequence[Group], steps: Mapping[str, Sequence[Mapping[str, Any]]],
                column: str = "train_loss", width: int | None = None, height: int = 25, color: bool = False) -> str:
    """The runs' `column` against step, one line per run, then the key of the legend's letters."""
    series = curve_series(groups, steps, column)
    if not series:
        return f"(no {column} curves logged for these runs)"
    # The first steps' losses (7–12 nats) would flatten the part of the curves that tells runs apart.
    late = [y for _, xs, ys in series for x, y in zip(xs, ys, strict=True) if x >= 0.05 * max(xs)]
    low, high = min(y for _, _, ys in series for y in ys), max(late or [1.0])
    ylim = (low - 0.02 * (high - low), high + 0.02 * (high - low)) if high > low else None
    if width is None:
        import shutil

        width = max(shutil.get_terminal_size((100, 25)).columns, 60)
    key = "  ".join(f"{k} = {g.label}" for k, g in zip(group_keys(groups), groups, strict=True))
    return _render(series, f"{column} by step", ylim, width, height, color) + "\n" + key


def _render(series: Sequence[Series], title: str, ylim: tuple[float, float] | None, width: int, height: int,
            color: bool) -> str:
    import plotext as plt

    figure = plt.figure  # plotext >= 6: signals drawn on a figure object
    figure.clear()
    for legend, xs, ys in series:
        signal = figure.signal(list(xs), list(ys))
        signal.label(legend)
        signal.lines()
        figure.draw(signal)
    if ylim:
        figure.ruler("y").lim(*ylim)
    figure.title(title)
    figure.label("step", "x")
    figure.plot_size(width, height)
    text = figure.build().string(colorless=not color)
    figure.clear()
    return text
