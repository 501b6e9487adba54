"""`golf ls` and `golf show` over a store filled directly with known values."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from golf.store import Run, Store
from golf_cli.main import app

runner = CliRunner()
T0 = datetime(2026, 3, 20, 12, 0, tzinfo=timezone.utc)
BREAKDOWN = {"embeddings": 1_000_000, "attention": 5_000_000, "mlp": 9_000_000, "scalars": 200_000,
             "other": 100_000, "overhead": 20_000, "code": 47_642}
CURVE = {0: {"val_loss": 6.9, "val_bpb": 4.1, "train_time_ms": 0.0, "step_avg_ms": 0.01},
         100: {"train_loss": 3.5, "train_time_ms": 8000.0, "step_avg_ms": 80.0},
         200: {"train_loss": 2.9, "val_loss": 2.8, "val_bpb": 1.66, "train_time_ms": 16000.0, "step_avg_ms": 80.0}}


@pytest.fixture
def filled(db: Path) -> Path:
    store = Store(db)
    store.create_run(Run(id="aaa111", name="base-s1", seed=1, status="completed", started_at=T0, tags=["base"],
                         final_bpb=1.2244, final_stage="post_quant", total_bytes=sum(BREAKDOWN.values()),
                         model_bytes=sum(BREAKDOWN.values()) - 47_642, code_bytes=47_642, steps=200,
                         bytes_breakdown=BREAKDOWN, trainer="bundled", config={"NUM_LAYERS": "11", "SEED": "1"}))
    store.create_run(Run(id="aab222", name="base-s2", seed=2, status="failed", started_at=T0 + timedelta(hours=1),
                         tags=["base", "x"], exit_code=1))
    store.create_run(Run(id="bbb333", name="big-s1", seed=1, status="completed", started_at=T0 + timedelta(hours=2),
                         final_bpb=1.1, total_bytes=16_250_000, model_bytes=16_200_000, code_bytes=50_000))
    store.upsert_steps("aaa111", CURVE)
    return db


def invoke(args: list[str]) -> tuple[int, str, str]:
    result = runner.invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


def test_ls_json_newest_first_with_store_field_names(filled: Path) -> None:
    code, out, _ = invoke(["ls", "--format", "json", "--db", str(filled)])
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["big-s1", "base-s2", "base-s1"]
    assert rows[2]["final_bpb"] == 1.2244 and rows[2]["bytes_breakdown"] == BREAKDOWN
    assert rows[1]["status"] == "failed" and rows[1]["exit_code"] == 1
    assert set(rows[0]) == set(Run.model_fields)


@pytest.mark.parametrize("args, names", [
    (["--status", "completed"], ["big-s1", "base-s1"]),
    (["--tag", "base"], ["base-s2", "base-s1"]),
    (["--tag", "x"], ["base-s2"]),
    (["--limit", "1"], ["big-s1"]),
    (["--status", "completed", "--tag", "base"], ["base-s1"]),
])
def test_ls_filters(filled: Path, args: list[str], names: list[str]) -> None:
    code, out, _ = invoke(["ls", "--format", "json", "--db", str(filled), *args])
    assert code == 0
    assert [r["name"] for r in json.loads(out)] == names


def test_ls_csv_and_md(filled: Path) -> None:
    code, out, _ = invoke(["ls", "--format", "csv", "--db", str(filled), "--status", "completed"])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    # CSV carries raw numbers: no thousands separators, no padding to four decimals
    assert [(r["name"], r["bpb"], r["bytes"]) for r in rows] == [("big-s1", "1.1", "16250000"),
                                                                 ("base-s1", "1.2244", str(sum(BREAKDOWN.values())))]
    code, out, _ = invoke(["ls", "--format", "md", "--db", str(filled), "--limit", "1"])
    assert out.splitlines()[0].startswith("| id | name | experiment | status |")
    assert "| bbb333 | big-s1 |  | completed |" in out  # no experiment: a run stored before names existed


def test_ls_errors(filled: Path, tmp_path: Path) -> None:
    code, _, err = invoke(["ls", "--status", "complete", "--db", str(filled)])
    assert code == 2 and "--status complete: unknown status; did you mean completed?" in err
    code, _, err = invoke(["ls", "--db", str(tmp_path / "nope.db")])
    assert code == 2 and "no run store here" in err


def test_show_json_has_every_field_and_the_curve(filled: Path) -> None:
    code, out, _ = invoke(["show", "base-s1", "--format", "json", "--db", str(filled)])
    assert code == 0
    data = json.loads(out)
    assert set(Run.model_fields) <= set(data)
    assert data["id"] == "aaa111" and data["bytes_breakdown"] == BREAKDOWN
    assert data["started_at"].startswith("2026-03-20T")
    expected = [{"step": s, "train_loss": row.get("train_loss"), "val_loss": row.get("val_loss"),
                 "val_bpb": row.get("val_bpb"), "train_time_ms": row.get("train_time_ms"),
                 "step_avg_ms": row.get("step_avg_ms")} for s, row in sorted(CURVE.items())]
    assert data["curve"] == expected


def test_show_resolves_prefixes_and_reports_ambiguity(filled: Path) -> None:
    code, out, _ = invoke(["show", "bbb", "--format", "json", "--db", str(filled)])
    assert code == 0 and json.loads(out)["name"] == "big-s1"
    code, _, err = invoke(["show", "aa", "--db", str(filled)])
    assert code == 2 and "ambiguous" in err and "aaa111 (base-s1)" in err and err.count("\n") == 1
    code, _, err = invoke(["show", "nothing", "--db", str(filled)])
    assert code == 2 and "no run with id or name 'nothing'" in err
    code, out, _ = invoke(["show", "base-s2", "--format", "json", "--db", str(filled)])
    assert json.loads(out)["bytes_breakdown"] is None and json.loads(out)["curve"] == []


def _bytes_table(out: str) -> dict[str, list[str]]:
    section = out[out.index("bytes\n"):] if "bytes\n" in out else out
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) == 3 and cells[0] and cells[0] != "group":
            rows[cells[0]] = cells[1:]
    return rows


def test_show_bytes_breakdown_shares_and_headroom(filled: Path) -> None:
    code, out, _ = invoke(["show", "base-s1", "--bytes", "--db", str(filled)])
    assert code == 0
    rows = _bytes_table(out)
    total = sum(BREAKDOWN.values())
    for group, value in BREAKDOWN.items():
        assert rows[group] == [f"{value:,}", f"{100 * value / total:.2f}"]
    assert rows["total"] == [f"{total:,}", "100.00"]
    assert rows["headroom"] == [f"{16_000_000 - total:,}", f"{100 * (16_000_000 - total) / 16_000_000:.2f}"]
    assert "NUM_LAYERS" in out and "11" in out  # the non-default knob is listed


def test_show_bytes_over_the_cap_without_a_breakdown(filled: Path) -> None:
    code, out, _ = invoke(["show", "big-s1", "--bytes", "--db", str(filled)])
    assert code == 0
    rows = _bytes_table(out)
    assert rows["model"] == ["16,200,000", f"{100 * 16_200_000 / 16_250_000:.2f}"]
    assert rows["code"] == ["50,000", f"{100 * 50_000 / 16_250_000:.2f}"]
    assert rows["headroom"][0] == "-250,000"


def test_help_of_every_command_has_an_example() -> None:
    for args in (["run"], ["ls"], ["show"], ["data", "sample"], ["data", "fetch"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0
        assert "Example:" in result.stdout, args


def test_cli_import_stays_light() -> None:
    import subprocess
    import sys

    code = ("import sys, golf_cli.main; heavy = [m for m in ('torch', 'pandas', 'sqlmodel', 'golf.trainer.model', "
            "'numpy', 'golf.launch') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
