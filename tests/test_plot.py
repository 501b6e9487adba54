"""`golf plot`: the figure's data is the store's (each seed's curve, the mean ± std band, the ablation deltas)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from golf.analysis.ablation import ablation_rows
from golf.analysis.figures import ablation_bars, ablation_figure, curve_sets, curves_figure
from golf.analysis.groups import resolve_refs
from golf.store import Run, Store
from golf_cli.main import app

runner = CliRunner()
CURVES = {  # seed -> {step: val_bpb}; seed 3 also logged step 50, which the others did not
    1: {0: 4.10, 100: 2.00, 200: 1.60},
    2: {0: 4.12, 100: 2.10, 200: 1.64},
    3: {0: 4.08, 50: 3.0, 100: 1.96, 200: 1.59},
}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "runs.db"
    store = Store(path)
    for seed, curve in CURVES.items():
        store.create_run(Run(id=f"b{seed}ase", name=f"base-s{seed}", spec_name="base", group_hash="a" * 16,
                             seed=seed, status="completed", final_bpb=curve[200], final_loss=curve[200] * 1.7,
                             config={"MLP_MULT": "2.0", "SEED": str(seed)}))
        store.upsert_steps(f"b{seed}ase", {s: {"val_bpb": v, "train_loss": v + 1} for s, v in curve.items()})
    for seed, bpb in ((1, 1.55), (2, 1.57), (3, 1.54)):
        store.create_run(Run(id=f"x{seed}mlp", name=f"mlp3-s{seed}", spec_name="mlp3", group_hash="b" * 16,
                             seed=seed, status="completed", final_bpb=bpb, final_loss=bpb * 1.7,
                             config={"MLP_MULT": "3.0", "SEED": str(seed)}))
        store.upsert_steps(f"x{seed}mlp", {0: {"val_bpb": 4.1}, 200: {"val_bpb": bpb}})
    return path


def test_curves_are_the_stored_curves_with_a_seed_band(db: Path) -> None:
    reader = Store(db, readonly=True)
    groups = resolve_refs(reader, ["base", "mlp3"])
    steps = reader.step_records(r for g in groups for r in g.run_ids)
    sets = curve_sets(groups, steps)
    fig = curves_figure(sets)
    lines = {line.get_gid(): line for line in fig.axes[0].get_lines()}
    for seed, curve in CURVES.items():
        line = lines[f"seed:base:{seed}"]
        assert list(line.get_xdata()) == sorted(curve) and list(line.get_ydata()) == [curve[s] for s in sorted(curve)]
    mean = lines["mean:base"]
    assert list(mean.get_xdata()) == [0, 100, 200]  # only the steps every seed logged
    expected = [statistics.fmean(CURVES[k][s] for k in CURVES) for s in (0, 100, 200)]
    assert list(mean.get_ydata()) == pytest.approx(expected)
    band = next(c for c in fig.axes[0].collections if c.get_gid() == "band:base")
    top = max(v[1] for v in band.get_paths()[0].vertices if abs(v[0] - 200) < 1e-9)
    assert top == pytest.approx(expected[2] + statistics.stdev(CURVES[k][200] for k in CURVES))
    assert "base (3 seeds" in mean.get_label()


def test_ablation_bars_are_the_table_deltas(db: Path) -> None:
    groups = resolve_refs(db, ["base", "mlp3"])
    rows = ablation_rows(groups[0], groups[1:])
    bars = ablation_bars(rows)
    delta = statistics.fmean([1.55, 1.57, 1.54]) - statistics.fmean([c[200] for c in CURVES.values()])
    assert len(bars) == 1 and bars[0].delta == pytest.approx(delta) and bars[0].change == "MLP_MULT 2.0→3.0"
    fig = ablation_figure(bars, "t")
    patches = [p for p in fig.axes[0].patches]
    assert [p.get_width() for p in patches] == pytest.approx([delta])
    caps = [c for c in fig.axes[0].containers if hasattr(c, "errorbar")][0].errorbar  # the ± std whiskers
    segment = caps.lines[2][0].get_segments()[0]
    assert abs(segment[1][0] - segment[0][0]) / 2 == pytest.approx(bars[0].std)


def test_cli_writes_png_and_svg(db: Path, tmp_path: Path) -> None:
    png = tmp_path / "curves.png"
    result = runner.invoke(app, ["plot", "base", "mlp3", "--out", str(png), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "ablation.svg"
    result = runner.invoke(app, ["plot", "base", "mlp3", "--ablation", "--out", str(svg), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert svg.read_text().lstrip().startswith("<?xml") and "MLP_MULT" in svg.read_text()


def test_cli_errors_leave_nothing(db: Path, tmp_path: Path) -> None:
    bad = runner.invoke(app, ["plot", "base", "--out", str(tmp_path / "c.jpg"), "--db", str(db)])
    assert bad.exit_code == 2 and ".png or .svg" in bad.stderr
    none = runner.invoke(app, ["plot", "base", "--metric", "val_loss", "--out", str(tmp_path / "c.png"),
                               "--db", str(db)])
    assert none.exit_code == 2 and "no val_loss logged" in none.stderr
    one = runner.invoke(app, ["plot", "base", "--ablation", "--out", str(tmp_path / "a.png"), "--db", str(db)])
    assert one.exit_code == 2 and "at least one variant" in one.stderr
    assert list(tmp_path.glob("*.png")) == [] and list(tmp_path.glob(".*")) == []
