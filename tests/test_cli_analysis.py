"""compare, ablation-table and leaderboard through the CLI, in every format, with numbers checked independently."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from golf.store import Run, Store
from golf_cli.main import app

runner = CliRunner()
MINUS = "\u2212"

BASE_BPB = [1.1230, 1.1235, 1.1228]
BASE_NATS = [1.8960, 1.8968, 1.8956]
XSA_BPB = [1.1205, 1.1209, 1.1203]  # −0.0025 bpb...
XSA_NATS = [1.8918, 1.8925, 1.8914]  # ...−0.0042 nats: significant, but under 0.005 nats
BIG_BPB = [1.1150, 1.1153, 1.1149]
BIG_NATS = [1.8824, 1.8829, 1.8822]  # −0.0136 nats: passes the record rule


def add_group(store: Store, spec: str, group_hash: str, bpbs: list[float], nats: list[float],
              config: dict[str, str], **extra: Any) -> None:
    for seed, (bpb, loss) in zip((1337, 42, 2025), zip(bpbs, nats, strict=True), strict=False):
        run = store.create_run(Run(
            id=f"{spec[:6]}{seed}", name=f"{spec}-s{seed}", spec_name=spec, group_hash=group_hash, seed=seed,
            status="completed", config={**config, "SEED": str(seed)}, final_bpb=bpb, final_loss=loss,
            final_stage="sliding", sliding_bpb=bpb, sliding_loss=loss, post_quant_bpb=bpb + 0.008,
            pre_quant_bpb=bpb + 0.015, total_bytes=15_900_000 + seed, step_avg_ms=84.5, steps=7100,
            train_time_ms=600_040.0, eval_time_ms=79_000.0, peak_mem_mib=20862, **extra))
        store.upsert_steps(run.id, {s: {"train_loss": 4.0 / (1 + s / 100) + bpb} for s in range(0, 1000, 100)})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "runs.db"
    store = Store(path)
    add_group(store, "base", "a1b2c3d4e5f60718", BASE_BPB, BASE_NATS, {"NUM_LAYERS": "11", "XSA_LAST_N": "4"})
    add_group(store, "xsa-all", "b1b2c3d4e5f60718", XSA_BPB, XSA_NATS, {"NUM_LAYERS": "11", "XSA_LAST_N": "11"})
    add_group(store, "bigger", "c1b2c3d4e5f60718", BIG_BPB, BIG_NATS, {"NUM_LAYERS": "12", "XSA_LAST_N": "4"})
    store.create_run(Run(id="huge1", name="huge-s1", spec_name="huge", group_hash="d1b2c3d4e5f60718", seed=1,
                         status="completed", final_bpb=1.10, final_loss=1.85, total_bytes=16_100_000,
                         train_time_ms=650_000.0, non_record_reason="TTT_MODE=adapt_first trains on validation"))
    return path


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def welch_less_p(a: list[float], b: list[float]) -> float:
    """One-sided Welch p (H1: mean a < mean b) by the textbook formulas and Student's t."""
    va, vb = statistics.variance(a), statistics.variance(b)
    se2 = va / len(a) + vb / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(se2)
    df = se2 ** 2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    return float(sps.t.cdf(t, df))


def test_compare_json_deltas_p_values_and_verdicts(db: Path) -> None:
    result = invoke("compare", "base", "xsa-all", "bigger", "--format", "json", "--db", str(db))
    assert result.exit_code == 0, result.output
    base, xsa, big = json.loads(result.stdout)
    assert base["is_base"] and base["verdict"] == "base" and base["delta_bpb"] is None
    assert base["n"] == 3 and base["metrics"]["final_bpb"]["mean"] == pytest.approx(statistics.fmean(BASE_BPB))
    assert base["metrics"]["final_bpb"]["std"] == pytest.approx(statistics.stdev(BASE_BPB))
    # only the knobs that differ (not SEED)
    assert base["params"] == {"NUM_LAYERS": "11", "XSA_LAST_N": "4"}
    assert xsa["params"] == {"NUM_LAYERS": "11", "XSA_LAST_N": "11"}

    assert xsa["delta_bpb"] == pytest.approx(statistics.fmean(XSA_BPB) - statistics.fmean(BASE_BPB))
    assert xsa["delta_nats"] == pytest.approx(statistics.fmean(XSA_NATS) - statistics.fmean(BASE_NATS))
    assert xsa["delta_bpb_std"] == pytest.approx(math.sqrt(statistics.variance(XSA_BPB) / 3 +
                                                           statistics.variance(BASE_BPB) / 3))
    assert xsa["p_value"] == pytest.approx(welch_less_p(XSA_BPB, BASE_BPB), rel=1e-6)
    assert xsa["p_value_vs_threshold"] == pytest.approx(welch_less_p([x + 0.005 for x in XSA_NATS], BASE_NATS),
                                                        rel=1e-6)
    # ≥ 0.0025 bpb lower at p < 0.01, but only 0.0042 nats: the record rule (nats) is not met
    assert xsa["p_value"] < 0.01 and xsa["verdict"] == "fail"
    assert big["verdict"] == "pass" and big["p_value_vs_threshold"] < 0.01
    assert big["delta_nats"] == pytest.approx(statistics.fmean(BIG_NATS) - statistics.fmean(BASE_NATS))


def test_compare_rule_is_configurable(db: Path) -> None:
    result = invoke("compare", "base", "xsa-all", "--min-delta-nats", "0.002", "--format", "json", "--db", str(db))
    assert json.loads(result.stdout)[1]["verdict"] == "pass"


def test_compare_table_md_and_csv(db: Path) -> None:
    table = invoke("compare", "base", "xsa-all", "--db", str(db))
    assert table.exit_code == 0, table.output
    delta = statistics.fmean(XSA_BPB) - statistics.fmean(BASE_BPB)
    p = welch_less_p(XSA_BPB, BASE_BPB)
    expected = f"xsa-all {MINUS}{abs(delta):.4f} ± "
    assert expected in table.stdout and f"p={p:.2g}" in table.stdout
    assert "XSA_LAST_N" in table.stdout and "NUM_LAYERS" not in table.stdout  # only what differs

    md = invoke("compare", "base", "xsa-all", "--format", "md", "--db", str(db))
    lines = md.stdout.splitlines()
    assert lines[0] == "|  |  | base (base) | xsa-all |"
    assert "| params | XSA_LAST_N | 4 | 11 |" in lines
    assert any(line.startswith("| vs base | Δ final_bpb | base | " + MINUS) for line in lines)
    assert f"- {expected}" in md.stdout

    out = invoke("compare", "base", "xsa-all", "--all-params", "--format", "csv", "--db", str(db))
    rows = list(csv.reader(io.StringIO(out.stdout)))
    assert rows[0] == ["", "", "base (base)", "base (base) std", "base (base) n", "xsa-all", "xsa-all std",
                       "xsa-all n"]
    by_field = {r[1]: r for r in rows[1:]}
    assert by_field["NUM_LAYERS"][2:] == ["11", "", "", "11", "", ""]  # --all-params shows agreeing knobs too
    assert by_field["verdict"][2:] == ["base", "", "", "fail", "", ""]
    # raw numbers in separate columns, not "1.1231 ± 0.0004 (3)"
    mean, std, n = (float(v) for v in by_field["final bpb"][2:5])
    assert math.isclose(mean, statistics.fmean(BASE_BPB), rel_tol=1e-9)
    assert math.isclose(std, statistics.stdev(BASE_BPB), rel_tol=1e-6) and n == 3
    assert by_field["max bytes vs 16,000,000"][2] == str(15_900_000 + 2025)
    delta = float(by_field["Δ final_bpb"][5])
    assert math.isclose(delta, statistics.fmean(XSA_BPB) - statistics.fmean(BASE_BPB), rel_tol=1e-6)


def test_compare_plot_draws_every_run(db: Path) -> None:
    result = invoke("compare", "base", "xsa-all", "--plot", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "train_loss by step" in result.stdout
    for label in ("A s1337", "A s42", "B s2025", "A = base", "B = xsa-all"):
        assert label in result.stdout


def test_compare_errors_are_one_line_exit_2(db: Path) -> None:
    unknown = invoke("compare", "base", "xsa_all", "--db", str(db))
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().count("\n") == 0 and "did you mean xsa-all" in unknown.stderr
    one = invoke("compare", "base", "--db", str(db))
    assert one.exit_code == 2 and "at least two" in one.stderr
    metric = invoke("compare", "base", "xsa-all", "--metric", "final_bp", "--db", str(db))
    assert metric.exit_code == 2 and "did you mean final_bpb" in metric.stderr
    fmt = invoke("compare", "base", "xsa-all", "--format", "yaml", "--db", str(db))
    assert fmt.exit_code == 2 and "--format yaml" in fmt.stderr


def test_ablation_table_every_format(db: Path) -> None:
    args = ["ablation-table", "base", "xsa-all", "bigger", "--label", "XSA_LAST_N=11=XSA on all 11 layers",
            "--db", str(db)]
    data = json.loads(invoke(*args, "--format", "json").stdout)
    assert [r["change"] for r in data] == ["Base: base", "XSA on all 11 layers (XSA_LAST_N=11)", "NUM_LAYERS 11→12"]
    assert data[1]["delta_bpb"] == pytest.approx(statistics.fmean(XSA_BPB) - statistics.fmean(BASE_BPB))
    assert data[1]["p_value"] == pytest.approx(welch_less_p(XSA_BPB, BASE_BPB), rel=1e-6)

    md = invoke(*args, "--format", "md").stdout.splitlines()
    assert md[0] == "| Change | Pre-TTT bpb | Post-TTT bpb | Δ pre-TTT | Δ post-TTT | Δ bytes | Δ ms/step | p | n |"
    delta = f"{MINUS}{abs(statistics.fmean(XSA_BPB) - statistics.fmean(BASE_BPB)):.4f}"
    assert md[3].startswith(f"| XSA on all 11 layers (XSA_LAST_N=11) | {statistics.fmean(XSA_BPB):.4f} | ")
    assert f"| {delta} | {delta} ± " in md[3]

    rows = list(csv.DictReader(io.StringIO(invoke(*args, "--format", "csv").stdout)))
    assert float(rows[2]["Δ post-TTT"]) == pytest.approx(statistics.fmean(BIG_BPB) - statistics.fmean(BASE_BPB))
    assert rows[0]["Δ post-TTT"] == ""

    table = invoke(*args).stdout
    assert "XSA on all 11 layers" in table and delta in table

    cumulative = invoke("ablation-table", "base", "xsa-all", "bigger", "--cumulative", "--format", "json",
                        "--db", str(db))
    rows_c = json.loads(cumulative.stdout)
    assert rows_c[2]["change"].startswith("+ NUM_LAYERS 11→12")  # against the row before (xsa-all)
    assert rows_c[2]["delta_bpb"] == pytest.approx(statistics.fmean(BIG_BPB) - statistics.fmean(XSA_BPB))


def test_a_non_record_run_is_marked_in_compare_ablation_table_and_ls(db: Path) -> None:
    reason = "TTT_MODE=adapt_first trains on validation"
    data = json.loads(invoke("compare", "base", "huge", "--format", "json", "--db", str(db)).stdout)
    assert [g["non_record_reason"] for g in data] == [None, reason]
    md = invoke("compare", "base", "huge", "--format", "md", "--db", str(db)).stdout
    assert f"|  | non-record | — | {reason} |" in md and f"; non-record: {reason})" in md
    assert "non-record" not in invoke("compare", "base", "xsa-all", "--format", "md", "--db", str(db)).stdout

    args = ["ablation-table", "base", "xsa-all", "huge", "--db", str(db)]
    rows = json.loads(invoke(*args, "--format", "json").stdout)
    assert [r["non_record_reason"] for r in rows] == [None, None, reason]
    md_rows = invoke(*args, "--format", "md").stdout.splitlines()[2:]
    assert [line.split(" | ")[0].endswith("(non-record)") for line in md_rows] == [False, False, True]
    by_change = {r["Change"]: r for r in csv.DictReader(io.StringIO(invoke(*args, "--format", "csv").stdout))}
    assert [r["non-record"] for r in by_change.values()] == ["", "", reason]

    listed = invoke("ls", "--format", "md", "--db", str(db)).stdout
    assert "| huge1 | huge-s1 |  | completed | 1 | 1.1000 | — (non-record) |" in listed
    assert "| sliding (non-record) |" not in listed
    by_id = {r["id"]: r for r in csv.DictReader(io.StringIO(invoke("ls", "--format", "csv", "--db", str(db)).stdout))}
    assert by_id["huge1"]["non_record_reason"] == reason and by_id["base1337"]["non_record_reason"] == ""
    assert by_id["base1337"]["stage"] == "sliding"


def test_leaderboard_every_format(db: Path) -> None:
    data = json.loads(invoke("leaderboard", "--format", "json", "--db", str(db)).stdout)
    assert [r["label"] for r in data] == ["huge", "bigger", "xsa-all", "base"]
    assert [r["rank"] for r in data] == [1, 2, 3, 4]
    huge, bigger = data[0], data[1]
    assert {"non-record", "over bytes", "over train time", "single seed"} <= set(huge["flags"])
    assert bigger["final_bpb"] == pytest.approx(statistics.fmean(BIG_BPB))
    assert bigger["final_bpb_std"] == pytest.approx(statistics.stdev(BIG_BPB))
    assert bigger["n"] == 3 and bigger["total_bytes"] == 15_900_000 + 2025 and bigger["flags"] == []

    md = invoke("leaderboard", "--format", "md", "--limit", "2", "--db", str(db)).stdout.splitlines()
    assert len(md) == 4
    assert md[3].startswith(f"| 2 | bigger | {statistics.fmean(BIG_BPB):.4f} ± {statistics.stdev(BIG_BPB):.4f} | 3 |")
    rows = list(csv.DictReader(io.StringIO(invoke("leaderboard", "--format", "csv", "--db", str(db)).stdout)))
    assert rows[0]["label" if "label" in rows[0] else "group / record"] == "huge"
    assert float(rows[1]["final_bpb"]) == pytest.approx(statistics.fmean(BIG_BPB))
    table = invoke("leaderboard", "--db", str(db)).stdout
    assert "16,100,000" in table and "over bytes" in table


def test_leaderboard_interleaves_official_records_and_survives_odd_files(db: Path, tmp_path: Path) -> None:
    track = tmp_path / "pg" / "records" / "track_10min_16mb"
    entries = {
        "2026-03-20_Int5": {"val_loss": 1.1427, "bytes_total": 15900000, "author": "x"},  # bpb written in val_loss
        "2026-04-27_LQER": {"val_bpb": 1.0611, "seeds": {"42": {"val_bpb": 1.0610}, "314": {"val_bpb": 1.0612}}},
        "2026-03-19_FP16": {"mean_val_bpb": 1.1300, "artifact_bytes": 16_000_001},
    }
    for name, body in entries.items():
        (track / name).mkdir(parents=True)
        (track / name / "submission.json").write_text(json.dumps(body))
    (track / "2026-03-21_Broken").mkdir()
    (track / "2026-03-21_Broken" / "submission.json").write_text("{oops")
    (track / "2026-03-22_NoScore").mkdir()
    (track / "2026-03-22_NoScore" / "submission.json").write_text(json.dumps({"val_loss": 2.07}))
    result = invoke("leaderboard", "--official", str(tmp_path / "pg"), "--format", "json", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "skipped 2 submission file(s)" in result.stderr
    data = json.loads(result.stdout)
    official = {r["label"]: r for r in data if r["source"] == "official"}
    assert set(official) == set(entries)
    assert official["2026-03-20_Int5"]["final_bpb"] == 1.1427
    assert official["2026-04-27_LQER"]["n"] == 2
    assert "over bytes" in official["2026-03-19_FP16"]["flags"]
    assert [r["final_bpb"] for r in data] == sorted(r["final_bpb"] for r in data)  # one ranking for all
    assert data[0]["label"] == "2026-04-27_LQER" and "official" in data[0]["flags"]
    # a track folder works as well as the checkout
    again = invoke("leaderboard", "--official", str(track), "--format", "json", "--db", str(db))
    assert len(json.loads(again.stdout)) == len(data)


def test_leaderboard_without_a_store_is_a_clear_error(tmp_path: Path) -> None:
    result = invoke("leaderboard", "--db", str(tmp_path / "none.db"))
    assert result.exit_code == 2 and "no run store here" in result.stderr
