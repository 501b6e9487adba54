"""The newest records (../shared/fixtures/records-frontier: #1736, #1787 with its TTT-only re-evaluations in
ttt_pr1767/, #1855) and the main-record fixtures, ingested: every submission's val_bpb is re-derived from the logs
by the stage ingest names, eval-only logs are children of their training runs, eval times are the records' and
golf's, and both std conventions are there. Expected values are read from the files here with plain regexes."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from golf.analysis.groups import resolve_ref
from golf.analysis.stats import summarize
from golf.ingest import ingest_paths
from golf.ingest.grouping import equals_reported
from golf.store import Store

SHARED = Path(__file__).resolve().parents[2] / "shared"
FRONTIER = SHARED / "fixtures" / "records-frontier"
RECORDS = SHARED / "fixtures" / "records"
pytestmark = pytest.mark.skipif(not FRONTIER.is_dir() or not RECORDS.is_dir(),
                                reason="../shared/fixtures is not available")
PR1787 = "2026-04-23_SP8192_CaseOps_SparseGate_QuantGate_Loop45_PhasedTTT_PolarNS_MinLR_FusedCE"
PR1855 = "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"
PR1736 = "2026-04-19_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT"
TS = r"(?:\d{10}\.\d{3} )?"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("frontier") / "runs.db")
    ingest_paths(store, [RECORDS, FRONTIER])
    return store


def folders() -> list[Path]:
    if not FRONTIER.is_dir() or not RECORDS.is_dir():
        return []
    return sorted([*RECORDS.iterdir(), *FRONTIER.iterdir()])


def last(pattern: str, text: str) -> str:
    hits = re.findall(rf"^{TS}{pattern}", text, re.MULTILINE)
    assert hits, pattern
    return hits[-1]


@pytest.mark.parametrize("folder", folders(), ids=lambda p: p.name[:40])
def test_the_submission_val_bpb_is_rederived_by_the_reported_stage(store: Store, folder: Path) -> None:
    reported = json.loads((folder / "submission.json").read_text())["val_bpb"]
    runs = [r for r in store.list_runs(source="ingested") if r.record_name == folder.name]
    marked = [r for r in runs if r.reported_stage is not None]
    assert marked, folder.name
    by_group: dict[str, list] = {}
    for run in marked:
        by_group.setdefault(run.group_hash, []).append(run)
    derived = []
    for group in by_group.values():
        stage = {r.reported_stage for r in group}.pop()
        values = [getattr(r, f"{stage}_bpb") for r in group]
        derived.append(statistics.fmean(values) if len(group) > 1 else values[0])
    assert any(equals_reported(value, reported) for value in derived), (folder.name, derived, reported)


def test_1787_eval_only_reruns_are_children_of_their_training_runs(store: Store) -> None:
    runs = [r for r in store.list_runs(source="ingested") if r.record_name == PR1787]
    evals = [r for r in runs if "ttt_pr1767" in r.source_path]
    trains = [r for r in runs if "ttt_pr1767" not in r.source_path]
    assert len(evals) == 3 and len(trains) == 3
    assert len({r.group_hash for r in trains}) == 1 and len({r.group_hash for r in evals}) == 1
    assert trains[0].group_hash != evals[0].group_hash
    by_artifact = {last(r"  quantized_model_path: (\S+)", Path(t.source_path).read_text()): t.id for t in trains}
    for run in evals:
        text = Path(run.source_path).read_text()
        assert "TTT_EVAL_ONLY=1" in text
        assert run.parent_id == by_artifact[last(r"  quantized_model_path: (\S+)", text)]
        assert run.reported_stage == "post_ttt" and run.final_stage == "post_ttt"
        assert run.post_ttt_bpb == float(last(r"quantized_ttt_phased val_loss:\S+ val_bpb:(\S+)", text))
        assert run.steps is None and run.parent_id is not None
    assert all(r.reported_stage is None and r.parent_id is None for r in trains)
    submission = json.loads((FRONTIER / PR1787 / "submission.json").read_text())
    assert round(statistics.fmean(r.post_ttt_bpb for r in evals), 5) == submission["val_bpb"]
    # the record, referred to by its folder's name, is the group its val_bpb comes from
    group = resolve_ref(store, PR1787)
    assert sorted(group.run_ids) == sorted(r.id for r in evals)


@pytest.mark.parametrize("folder", [PR1736, PR1787, PR1855])
def test_eval_time_the_records_way_and_golfs(store: Store, folder: str) -> None:
    for run in (r for r in store.list_runs(source="ingested") if r.record_name == folder):
        text = Path(run.source_path).read_text()
        ttt_ms = float(last(r"quantized_ttt_phased val_loss:\S+ val_bpb:\S+ eval_time:(\d+)ms", text))
        total_s = float(last(r"total_eval_time:([\d.]+)s", text))
        assert run.record_eval_time_ms == ttt_ms == run.ttt_time_ms  # the TTT loop only
        assert run.eval_time_ms == pytest.approx(total_s * 1000)  # golf's: every scoring pass after training
        assert run.compliance in (None, [])  # 3 seeds, under 600 s and 16 MB, score-first TTT


def test_1855_eval_time_mean_is_the_readmes_ttt_loop() -> None:
    texts = [p.read_text() for p in sorted((FRONTIER / PR1855).glob("train_seed*.log"))]
    loops = [float(last(r"quantized_ttt_phased val_loss:\S+ val_bpb:\S+ eval_time:(\d+)ms", t)) for t in texts]
    assert round(statistics.fmean(loops) / 1000) == 478  # frontier-techniques.md: "478 (TTT loop)"


@pytest.mark.parametrize(("folder", "written", "convention"), [(PR1855, 0.0009, "std_pop"), (PR1736, 0.0007, "std")])
def test_both_std_conventions_are_available(store: Store, folder: str, written: float, convention: str) -> None:
    submission = json.loads(((FRONTIER / folder) / "submission.json").read_text())
    assert submission["val_bpb_std"] == written
    runs = [r for r in store.list_runs(source="ingested") if r.record_name == folder]
    stat = summarize(r.final_bpb for r in runs)
    values = [r.final_bpb for r in runs]
    assert stat.std == pytest.approx(statistics.stdev(values))
    assert stat.std_pop == pytest.approx(statistics.pstdev(values))
    assert round(getattr(stat, convention), 4) == written


def test_show_and_leaderboard_carry_the_parent_the_reported_stage_and_both_eval_times(store: Store) -> None:
    from typer.testing import CliRunner

    from golf_cli.main import app

    runner = CliRunner()
    child = next(r for r in store.list_runs(source="ingested") if r.record_name == PR1787 and r.parent_id)
    shown = runner.invoke(app, ["show", "--db", str(store.path), child.id, "--format", "csv"])
    assert shown.exit_code == 0, shown.output
    assert f"eval of run,{child.parent_id}" in shown.stdout
    assert "reported_bpb,1.06335 (post_ttt)" in shown.stdout
    board = runner.invoke(app, ["leaderboard", "--db", str(store.path), "--format", "json", "--limit", "50"])
    rows = json.loads(board.stdout)
    row = next(r for r in rows if r["group_hash"] == child.group_hash)
    text = Path(child.source_path).read_text()
    assert row["record_eval_time_s"] * 1000 == max(
        float(last(r"quantized_ttt_phased val_loss:\S+ val_bpb:\S+ eval_time:(\d+)ms", Path(r.source_path).read_text()))
        for r in store.list_runs(source="ingested") if r.group_hash == child.group_hash)
    assert "TTT_EVAL_ONLY=1" in text and row["n"] == 3
    assert row["label"] == f"{PR1787} (eval-only re-runs)"
    training = next(r for r in rows if r["label"] == PR1787)
    assert training["n"] == 3 and training["group_hash"] != child.group_hash


def test_result_json_beside_a_log_is_checked_against_it(tmp_path: Path) -> None:
    import shutil

    source = FRONTIER / PR1787 / "ttt_pr1767"
    assert ingest_paths(Store(tmp_path / "a.db"), [source / "seed_42.log"]).warnings == []  # they agree
    copy = tmp_path / "seed_42.log"
    shutil.copy(source / "seed_42.log", copy)
    stated = json.loads((source / "seed_42_result.json").read_text())
    stated["post_ttt_val_bpb"] = 1.0641  # not what the log says
    (tmp_path / "seed_42_result.json").write_text(json.dumps(stated))
    warnings = ingest_paths(Store(tmp_path / "b.db"), [copy]).warnings
    assert warnings == [f"{tmp_path / 'seed_42_result.json'}: post_ttt_val_bpb 1.0641 but seed_42.log says 1.06400238"]
