"""Tables fit the terminal: rendered through the CLI at 80, 100 and 160 columns, numbers whole, text cut with an
ellipsis, the least important columns hidden first; md/csv/json never depend on the width."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

import golf.output
from golf.output import Col, render
from golf.store import Run, Store
from golf.table_fit import fit, is_number
from golf_cli.main import app

runner = CliRunner()
T0 = datetime(2026, 3, 20, 12, 0, tzinfo=timezone.utc)
LONG = "xsa-all-layers-with-partial-rope-and-bigram-hash"


@pytest.fixture
def store_db(tmp_path: Path) -> Path:
    db = tmp_path / "runs.db"
    store = Store(db)
    for i, (spec, bpb) in enumerate([("base", [1.2243652, 1.2251]), (LONG, [1.1937111, 1.1941])]):
        for j, seed in enumerate((1337, 42)):
            store.create_run(Run(
                id=f"r{i}{j}abcdef", name=f"{spec}-s{seed}", spec_name=spec, group_hash=f"{i}" * 16, seed=seed,
                status="completed", started_at=T0 + timedelta(hours=2 * i + j), tags=["bench", "xsa", "long-tag"],
                final_bpb=bpb[j], final_loss=bpb[j] * 1.69, final_stage="post_quant", post_quant_bpb=bpb[j],
                total_bytes=15_939_048 + 1000 * i + j, steps=7100 + j, step_avg_ms=84.52, train_time_ms=600_040.0,
                eval_time_ms=79_000.0, config={"XSA_LAST_N": str(4 + 7 * i), "SEED": str(seed)}))
    return db


def invoke(args: list[str], columns: int | None) -> tuple[int, str, str]:
    env = {"COLUMNS": str(columns)} if columns else {}
    result = runner.invoke(app, args, env=env)
    return result.exit_code, result.stdout, result.stderr


def numbers_in(text: str) -> list[str]:
    return re.findall(r"\d[\d,]*\.?\d*", text)


@pytest.mark.parametrize("width", [80, 100, 160])
def test_ls_fits_without_breaking_numbers(store_db: Path, width: int) -> None:
    code, out, err = invoke(["ls", "--db", str(store_db)], width)
    assert code == 0, err
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width
    # every run's bpb and bytes appear whole on a line (no `15,939,0│48`)
    for line_of_bytes in ("15,939,048", "15,940,049", "1.2244", "1.1937"):
        assert any(line_of_bytes in line for line in lines), (line_of_bytes, out)
    body = "\n".join(lines)
    # the long name does not fit whole: cut with an ellipsis, never folded; the least important columns went first
    assert LONG + "-s1337" not in body and "xsa-all-layers" in body and "…" in body
    assert lines[-1].startswith(f"(hidden to fit {width} columns: ") and "bytes" not in lines[-1]
    if width == 160:
        assert "ms/step" in body and "steps" in body  # a wide terminal hides only the least important
    assert "completed" in body  # status is never hidden


@pytest.mark.parametrize("width", [80, 100, 160])
def test_compare_and_leaderboard_fit(store_db: Path, width: int) -> None:
    for args in (["compare", "base", LONG], ["leaderboard"]):
        code, out, err = invoke([*args, "--db", str(store_db)], width)
        assert code == 0, err
        table = [line for line in out.splitlines() if line[:1] in "┃│┏┡└"]
        assert table and max(len(line) for line in table) <= width, out
    code, out, _ = invoke(["compare", "base", LONG, "--db", str(store_db)], width)
    mean = (1.2243652 + 1.2251) / 2
    assert f"{mean:.4f} ± " in out  # a stage's mean ± std stays on one line


def test_machine_formats_never_depend_on_width(store_db: Path) -> None:
    for fmt in ("md", "csv", "json"):
        for args in (["ls"], ["compare", "base", LONG], ["leaderboard"]):
            narrow = invoke([*args, "--format", fmt, "--db", str(store_db)], 80)[1]
            wide = invoke([*args, "--format", fmt, "--db", str(store_db)], 160)[1]
            assert narrow == wide, (fmt, args)
    rows = list(csv.DictReader(io.StringIO(invoke(["ls", "--format", "csv", "--db", str(store_db)], 80)[1])))
    assert rows[0]["bytes"] == "15940049" and rows[0]["name"] == f"{LONG}-s42" and rows[0]["tags"]


def test_columns_picks_in_order_and_unknown_is_one_line(store_db: Path) -> None:
    code, out, _ = invoke(["ls", "--columns", "name,bytes", "--format", "csv", "--db", str(store_db)], 80)
    assert code == 0 and out.splitlines()[0] == "name,bytes"
    code, out, _ = invoke(["ls", "--columns", "tags", "--columns", "id", "--db", str(store_db)], 80)
    assert code == 0 and "long-tag" in out and "hidden" not in out  # picked columns are never hidden
    code, _, err = invoke(["ls", "--columns", "bpbb", "--db", str(store_db)], 80)
    assert code == 2 and err.count("\n") == 1 and "did you mean bpb" in err


def test_piped_without_a_terminal_is_plain(store_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(golf.output, "terminal_width", lambda: None)
    code, out, _ = invoke(["ls", "--db", str(store_db)], None)
    assert code == 0 and f"{LONG}-s1337" in out and "hidden" not in out


def test_terminal_width_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("COLUMNS", "93")
    assert golf.output.terminal_width() == 93
    monkeypatch.delenv("COLUMNS")

    def no_tty(*_args: object) -> int:
        raise OSError("no tty")

    monkeypatch.setattr(os, "open", no_tty)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert golf.output.terminal_width() is None


def test_fit_rules_by_hand() -> None:
    headers = ["name", "bytes", "note"]
    cells = [["a-very-long-name-indeed", "15,939,048", "x" * 30]]
    # natural widths 23, 10, 30 → 63 + 3·3 + 1 = 73 wide
    assert fit(headers, cells, [0, 1, 2], None).widths == {0: 23, 1: 10, 2: 30}
    layout = fit(headers, cells, [0, 1, 2], 73)
    assert layout.hidden == [] and layout.widths == {0: 23, 1: 10, 2: 30}
    layout = fit(headers, cells, [0, 1, 2], 50)  # note (priority 2) goes; name gets the rest
    assert layout.hidden == [2] and layout.widths == {0: 23, 1: 10}
    layout = fit(headers, cells, [0, 0, 0], 30)  # nothing may go: numbers keep their width, text is cut
    assert layout.widths[1] == 10 and layout.cell("15,939,048", 1) == "15,939,048"
    assert layout.cell(cells[0][0], 0).endswith("…") and len(layout.cell(cells[0][0], 0)) == layout.widths[0]
    # an empty column goes before any other, even one that may never be hidden
    assert fit(["a", "empty", "n"], [["x" * 20, "", "1"]], [0, 0, 5], 30).hidden == [1]
    assert is_number("−0.0025 ± 0.0003, p=0.00042") and is_number("—") and not is_number("xsa-s1")
    assert is_number("15,939,048 (60,952 left)") and is_number("2026-12-02 03:37")
    assert not is_number("2 seeds (1, 2) — records usually show 3")


def test_render_width_is_a_limit() -> None:
    rows = [{"a": "word " * 20, "n": 123456789.0}]
    cols = [Col("a"), Col("n", fmt=lambda v: f"{v:,.0f}", justify="right")]
    for width in (30, 50, 120):
        text = render(rows, cols, width=width)
        assert max(len(line) for line in text.splitlines()) <= width
        assert "123,456,789" in text
    assert json.loads(render(rows, cols, "json"))[0]["n"] == 123456789.0
