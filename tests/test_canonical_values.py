"""One written form for knob values (labels, tables, ablations), warnings for comparisons that measure nothing,
and `golf show --format md|csv`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from typer.testing import CliRunner

from golf.analysis.ablation import change_text
from golf.knobs import canonical_change, canonical_value
from golf.store import Run, Store
from golf_cli.main import app

runner = CliRunner()


def test_canonical_values() -> None:
    assert canonical_value("MLP_MULT", "3") == "3.0" == canonical_value("MLP_MULT", 3)
    assert canonical_value("XSA_LAST_N", "11") == "11" and canonical_value("COMPILE", "true") == "1"
    assert canonical_value("MY_TRAINERS_KNOB", "3") == "3" and canonical_value("MLP_MULT", None) is None
    assert canonical_change("MLP_MULT=3") == "MLP_MULT=3.0"


def test_labels_and_changes_read_the_same_whatever_was_typed() -> None:
    # `--vary MLP_MULT=3` (typed) and the stored 3.0 give one text; `--label MLP_MULT=3=...` names both
    assert change_text("MLP_MULT", "2.0", "3") == change_text("MLP_MULT", "2.0", "3.0") == "MLP_MULT 2.0→3.0"
    labels = {"MLP_MULT=3": "3x MLP"}
    assert change_text("MLP_MULT", "2.0", "3.0", labels) == "3x MLP (MLP_MULT=3.0)"


def add(store: Store, spec: str, group: str, mlp: str, bpbs: list[float]) -> None:
    for seed, bpb in zip((1, 2, 3), bpbs, strict=False):
        store.create_run(Run(id=f"{spec}{seed}x", name=f"{spec}-s{seed}", spec_name=spec, group_hash=group * 16,
                             seed=seed, status="completed", final_bpb=bpb, final_loss=bpb * 1.7, sliding_bpb=bpb,
                             config={"MLP_MULT": mlp, "SEED": str(seed)}, total_bytes=1000, steps=10))


def test_ablation_table_label_matches_a_stored_float(db: Path) -> None:
    store = Store(db)
    add(store, "base", "a", "2.0", [1.30, 1.31, 1.29])
    add(store, "mlp", "b", "3.0", [1.20, 1.21, 1.19])
    result = runner.invoke(app, ["ablation-table", "base", "mlp", "--label", "MLP_MULT=3=three-x MLP",
                                 "--format", "md", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "| three-x MLP (MLP_MULT=3.0) |" in result.stdout
    compare = runner.invoke(app, ["compare", "base", "mlp", "--format", "md", "--db", str(db)])
    assert "| params | MLP_MULT | 2.0 | 3.0 |" in compare.stdout  # the same form in both tables


def test_comparing_a_group_with_itself_warns(db: Path) -> None:
    store = Store(db)
    add(store, "base", "a", "2.0", [1.30, 1.31, 1.29])
    add(store, "mlp", "b", "3.0", [1.20, 1.21, 1.19])
    same = runner.invoke(app, ["compare", "base", "group:aaaa", "--db", str(db)])
    assert same.exit_code == 0 and "warning: 'base' and 'group:aaaa' are the same runs" in same.stderr
    other = runner.invoke(app, ["compare", "base", "mlp", "--db", str(db)])
    assert "degenerate" not in other.stderr
    table = runner.invoke(app, ["ablation-table", "base", "base", "--db", str(db)])
    assert "degenerate" in table.stderr


def test_vary_equal_to_the_base_warns(workdir: Path, tiny_data: Path) -> None:
    spec = workdir / "base.yaml"
    spec.write_text(f"name: base\nseeds: [1]\ndata: {{path: {tiny_data}}}\nenv: {{MLP_MULT: 3}}\n")
    result = runner.invoke(app, ["ablate", str(spec), "--vary", "MLP_MULT=3.0,4", "--dry-run", "--db", "runs.db"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--vary MLP_MULT=3.0: the same configuration as base" in warnings[0]


def test_show_md_and_csv(db: Path) -> None:
    store = Store(db)
    store.create_run(Run(id="r1abc", name="x-s1", seed=1, status="completed", final_bpb=1.2345678,
                         final_stage="post_quant", total_bytes=15_123_456, steps=100, iterations=100))
    md = runner.invoke(app, ["show", "x-s1", "--format", "md", "--db", str(db)])
    assert md.exit_code == 0, md.output
    assert "### run" in md.stdout and "| id | r1abc |" in md.stdout and "### results" in md.stdout
    out = runner.invoke(app, ["show", "x-s1", "--format", "csv", "--bytes", "--db", str(db)])
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    values = {(r["section"], r["field"]): r["value"] for r in rows}
    assert values[("run", "id")] == "r1abc" and values[("results", "total_bytes")] == "15123456"
    assert values[("bytes", "headroom")] == str(16_000_000 - 15_123_456)
    bad = runner.invoke(app, ["show", "x-s1", "--format", "yaml", "--db", str(db)])
    assert bad.exit_code == 2 and "table, md, csv, json" in bad.stderr
