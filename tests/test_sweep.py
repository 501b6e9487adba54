"""golf sweep / golf queue end to end with a fake trainer: every cell a real `golf run` process recording itself in
a real store, the trainer a tiny script (GOLF_LAUNCHER=direct: python instead of torchrun) that sleeps and prints
golf-format lines, and writes down when it ran and on which lane."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from golf.errors import GolfError
from golf.store import Store
from golf_cli.main import app

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent

FAKE_TRAINER = textwrap.dedent("""\
    import json, os, time
    knob, seed = os.environ["MY_KNOB"], int(os.environ["SEED"])
    out = os.path.join(os.environ["FAKE_DIR"], "launches.jsonl")
    def note(event):
        with open(out, "a") as f:
            f.write(json.dumps({"event": event, "knob": knob, "seed": seed, "t": time.time(),
                                "lane": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}) + "\\n")
    note("start")
    print("step:1/2 train_loss:6.0000 train_time:10ms step_avg:10.00ms", flush=True)
    if knob == "stall":
        time.sleep(60)
    time.sleep(float(os.environ["SLEEP_S"]))
    bpb = 2.0 - 0.01 * (0 if knob == "stall" else int(knob)) + 0.001 * seed
    print(f"step:2/2 val_loss:{bpb * 1.69:.4f} val_bpb:{bpb:.4f} train_time:20ms step_avg:10.00ms")
    print("Total submission size int8+zlib: 400000 bytes")
    print(f"final_int8_zlib_roundtrip_exact val_loss:{bpb * 1.69:.8f} val_bpb:{bpb:.8f}", flush=True)
    note("end")
    """)


@pytest.fixture
def fake(workdir: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A spec of the fake trainer in the test's folder; cells see 4 fake GPUs and start it without torchrun."""
    (workdir / "train_fake.py").write_text(FAKE_TRAINER, encoding="utf-8")
    (workdir / "fake.yaml").write_text(
        f"name: fake\ntrainer: train_fake.py\nseeds: [1, 2]\ndata: {{path: {tiny_data}}}\n"
        f"env: {{FAKE_DIR: {workdir}, MY_KNOB: 0, SLEEP_S: 1}}\n", encoding="utf-8")
    monkeypatch.setenv("GOLF_LAUNCHER", "direct")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    return workdir


def launches(work: Path) -> list[dict[str, Any]]:
    path = work / "launches.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def cells(db: Path, sweep_id: str | None = None) -> list[dict[str, Any]]:
    from golf.launch.queue import cells_of, sweeps

    store = Store(db, readonly=True)
    sweep_id = sweep_id or sweeps(store)[-1]["id"]
    return cells_of(store, sweep_id)


def golf_process(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "golf_cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def wait_for(condition: Any, timeout: float = 40.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_eight_cells_on_four_lanes_take_two_cell_times_and_never_share_a_lane(fake: Path, db: Path) -> None:
    started = time.monotonic()
    result = runner.invoke(app, ["sweep", "fake.yaml", "--vary", "MY_KNOB=1,2,3", "--set", "SLEEP_S=2",
                                 "--lanes", "auto", "--db", str(db)])
    wall = time.monotonic() - started
    assert result.exit_code == 0, result.output
    rows = cells(db)
    assert len(rows) == 8 and all(c["state"] == "completed" and not c["reused"] for c in rows)
    # seed-major: seed 1's base and its three variants, then seed 2's
    assert [(c["seed"], c["step"]) for c in rows] == [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3)]
    cell_time = sum((c["ended_at"] - c["started_at"]).total_seconds() for c in rows) / len(rows)
    # from the first cell's start to the last one's end: two rounds of four (sequential would be eight)
    spread = (max(c["ended_at"] for c in rows) - min(c["started_at"] for c in rows)).total_seconds()
    assert spread < 3.2 * cell_time, (spread, cell_time)
    assert wall < 4 * cell_time, (wall, cell_time)  # the whole command: planning 8 cells and the table too
    # never two cells on one lane: the queue's intervals and the trainers' own
    by_lane: dict[str, list[tuple[Any, Any]]] = {}
    for c in rows:
        by_lane.setdefault(c["lane"], []).append((c["started_at"], c["ended_at"]))
    assert sorted(by_lane) == ["0", "1", "2", "3"]
    for spans in by_lane.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
    events = launches(fake)
    trained: dict[str, list[tuple[float, float]]] = {}
    for start in (e for e in events if e["event"] == "start"):
        end = next(e for e in events if e["event"] == "end" and e["pid"] == start["pid"])
        trained.setdefault(start["lane"], []).append((start["t"], end["t"]))
    assert sum(len(v) for v in trained.values()) == 8
    for spans in trained.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
    # each cell's run is recorded, found by its cell id, and the ablation table is printed
    store = Store(db, readonly=True)
    for c in rows:
        run = store.get(c["run_id"])
        assert run is not None and run.cell_id == c["id"] and run.status == "completed"
        assert run.group_hash == c["group_hash"] and run.seed == c["seed"]
        assert run.config["MY_KNOB"] == (c["sets"].get("MY_KNOB") or "0")
    assert "ablation against fake" in result.stdout and "MY_KNOB" in result.stdout


def test_a_killed_sweep_resumes_and_reruns_nothing_completed(fake: Path, db: Path) -> None:
    sweep = golf_process("sweep", "fake.yaml", "--vary", "MY_KNOB=1,2", "--set", "SLEEP_S=2.5", "--lanes", "2",
                         "--db", str(db))
    try:
        def second_pair_running() -> bool:
            if not db.exists():
                return False
            try:
                rows = cells(db)
            except (GolfError, IndexError):  # the store or the sweep not written yet
                return False
            running = [c for c in rows if c["state"] == "running"]
            starts = {(e["knob"], e["seed"]) for e in launches(fake) if e["event"] == "start"}
            done = sum(c["state"] == "completed" for c in rows)
            return done >= 2 and len(running) == 2 and all(c["job_id"] for c in running) and len(starts) == 4
        wait_for(second_pair_running, what="the second pair of cells")
        sweep.send_signal(signal.SIGKILL)
        sweep.wait(10)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    before = {c["id"]: c["state"] for c in cells(db)}
    assert sorted(before.values()) == ["completed", "completed", "queued", "queued", "running", "running"]

    listed = runner.invoke(app, ["queue", "--db", str(db), "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)[0]["state"] == "stopped"  # its golf is gone

    result = runner.invoke(app, ["sweep", "resume", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "2 cells reattached" in result.output
    rows = cells(db)
    assert all(c["state"] == "completed" for c in rows)
    starts = [(e["knob"], e["seed"]) for e in launches(fake) if e["event"] == "start"]
    assert sorted(starts) == sorted({(k, s) for k in ("0", "1", "2") for s in (1, 2)})  # each cell once
    assert [c["attempts"] for c in rows] == [1] * 6
    # resuming a finished sweep launches nothing
    again = runner.invoke(app, ["sweep", "resume", "--db", str(db)])
    assert again.exit_code == 0 and "no sweep with cells left" in again.output
    assert len(launches(fake)) == 12


def test_a_stalled_cell_is_stopped_and_the_sweep_goes_on(fake: Path, db: Path) -> None:
    spec = fake / "fake.yaml"
    spec.write_text(spec.read_text() + "stall_timeout: 1.5\n", encoding="utf-8")
    result = runner.invoke(app, ["ablate", str(spec), "--vary", "MY_KNOB=stall,1", "--seeds", "1", "--lanes", "3",
                                 "--db", str(db)])
    assert result.exit_code == 1, result.output
    rows = cells(db)
    assert [(c["sets"].get("MY_KNOB", "0"), c["state"]) for c in rows] == \
        [("0", "completed"), ("stall", "stalled"), ("1", "completed")]
    store = Store(db, readonly=True)
    stalled = store.get(rows[1]["run_id"])
    assert stalled is not None and stalled.status == "stalled" and "no output for 1.5 s" in str(stalled.stop_reason)
    assert (rows[1]["ended_at"] - rows[1]["started_at"]) < timedelta(seconds=30)  # not the trainer's 60 s sleep
    # --retry-failed queues the stalled cell again (it stalls again), the completed ones are kept
    retried = runner.invoke(app, ["sweep", "resume", "--retry-failed", "--db", str(db)])
    assert retried.exit_code == 1 and "1 cells retried" in retried.output
    assert [c["attempts"] for c in cells(db)] == [1, 2, 1]


def test_queue_lists_and_cancel_stops_queued_and_running_cells(fake: Path, db: Path) -> None:
    sweep = golf_process("sweep", "fake.yaml", "--vary", "MY_KNOB=1", "--set", "SLEEP_S=30", "--lanes", "1",
                         "--db", str(db))
    try:
        def first_running() -> Any:
            try:
                rows = cells(db)
            except (GolfError, IndexError):
                return None
            return rows if rows[0]["job_id"] and launches(fake) else None
        rows = wait_for(first_running, what="the first cell")
        sweep_id = rows[0]["sweep_id"]
        listed = runner.invoke(app, ["queue", "--db", str(db), "--format", "json"])
        assert listed.exit_code == 0, listed.output
        [row] = json.loads(listed.stdout)
        assert (row["sweep"], row["state"], row["running"], row["queued"]) == (sweep_id, "running", 1, 3)
        of_sweep = runner.invoke(app, ["queue", sweep_id[:5], "--db", str(db), "--format", "json"])
        assert [c["state"] for c in json.loads(of_sweep.stdout)] == ["running", "queued", "queued", "queued"]

        one = runner.invoke(app, ["queue", "cancel", f"{sweep_id}.2", "--db", str(db)])
        assert one.exit_code == 0 and f"cancelled 1 cells: {sweep_id}.2" in one.output
        assert [c["state"] for c in cells(db)] == ["running", "queued", "cancelled", "queued"]
        whole = runner.invoke(app, ["queue", "cancel", sweep_id, "--db", str(db)])
        assert whole.exit_code == 0 and "cancelled 3 cells" in whole.output
        out, _ = sweep.communicate(timeout=30)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 1, out.decode()
    rows = cells(db)
    assert [c["state"] for c in rows] == ["cancelled"] * 4
    run = Store(db, readonly=True).get(rows[0]["run_id"])
    assert run is not None and run.status == "interrupted"  # the running cell was stopped, and recorded
    assert len([e for e in launches(fake) if e["event"] == "start"]) == 1  # the cancelled ones never started
    missing = runner.invoke(app, ["queue", "cancel", "nope", "--db", str(db)])
    assert missing.exit_code == 2 and "no sweep or cell 'nope'" in missing.output


def test_slurm_cells_through_submitits_local_executor(fake: Path, db: Path) -> None:
    pytest.importorskip("submitit")
    result = runner.invoke(app, ["sweep", "fake.yaml", "--vary", "MY_KNOB=1", "--seeds", "1", "--executor", "slurm",
                                 "--slurm-cluster", "local", "--slurm-time", "5", "--lanes", "2", "--db", str(db)])
    assert result.exit_code == 0, result.output
    rows = cells(db)
    assert [c["state"] for c in rows] == ["completed", "completed"] and {c["executor"] for c in rows} == {"slurm"}
    store = Store(db, readonly=True)
    assert [store.get(c["run_id"]).cell_id for c in rows] == [c["id"] for c in rows]  # type: ignore[union-attr]
    from golf.launch.queue import sweeps

    [sweep] = sweeps(store)
    assert sweep["options"]["executor_options"]["cluster"] == "local"  # what resume builds the executor from
    assert sweep["options"]["executor_options"]["time"] == 5
    wrong = runner.invoke(app, ["sweep", "fake.yaml", "--vary", "MY_KNOB=1", "--slurm-time", "5", "--db", str(db)])
    assert wrong.exit_code == 2 and "--slurm-time: a Slurm option; add --executor slurm" in wrong.output


def test_bad_lanes_are_one_line_and_write_nothing(fake: Path, db: Path) -> None:
    for argv, message in ((["sweep", "fake.yaml", "--vary", "MY_KNOB=1", "--lanes", "two"],
                           "golf: error: --lanes two: expected a positive integer or auto (one lane per visible GPU)"),
                          (["ablate", "fake.yaml", "--vary", "MY_KNOB=1", "--lanes", "5"],
                           "golf: error: --lanes 5: only 4 GPUs visible (0,1,2,3); use --lanes auto or fewer"),
                          (["sweep", "fake.yaml", "--vary", "MY_KNOB=1", "--executor", "pbs"],
                           "golf: error: --executor pbs: expected one of local, slurm")):
        result = runner.invoke(app, [*argv, "--db", str(db)])
        assert result.exit_code == 2 and result.output.strip() == message, result.output
    assert not db.exists() and not (fake / "runs").exists()


def test_lanes_follow_the_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from golf.launch.sweep import lane_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert lane_gpus("auto") == (3, ["4", "5", "6"])
    assert lane_gpus("2") == (2, ["4", "5"])
    with pytest.raises(GolfError, match=r"--lanes 4: only 3 GPUs visible \(4,5,6\)"):
        lane_gpus("4")
    with pytest.raises(GolfError, match="--lanes 0: expected a positive integer or auto"):
        lane_gpus("0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert lane_gpus("auto") == (1, ["0"])  # CPU: one lane
    assert lane_gpus("2") == (2, ["0", "1"])


def test_executor_by_name() -> None:
    from golf.launch.executor import executor_named
    from golf.launch.lanes import LocalLanesExecutor

    assert isinstance(executor_named("local"), LocalLanesExecutor)
    with pytest.raises(GolfError, match="--executor pbs: expected one of local, slurm"):
        executor_named("pbs")
    try:
        import golf.launch.slurm  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(GolfError, match="--executor slurm: not available"):
            executor_named("slurm")


class _Job:
    def __init__(self, name: str, log: list[tuple[str, str, str]]) -> None:
        self.job_id, self.polls, self.log = name, 0, log

    def poll(self) -> int | None:
        self.polls += 1
        if self.polls < 3:
            return None
        self.log.append(("end", self.job_id, ""))
        return 0

    def cancel(self) -> None:
        pass


class _FakeExecutor:
    name, pins_gpus = "fake", True

    def __init__(self) -> None:
        self.log: list[tuple[str, str, str]] = []

    def submit(self, cell: Any) -> _Job:
        self.log.append(("start", cell.cell_id, cell.env["CUDA_VISIBLE_DEVICES"]))
        assert "--rdzv-endpoint" in cell.argv
        return _Job(cell.cell_id, self.log)

    def reattach(self, job_id: str) -> None:
        return None


def test_cells_needing_two_gpus_are_packed_onto_free_pairs(db: Path) -> None:
    from golf.launch.queue import create_sweep
    from golf.launch.sweep import Scheduler

    store = Store(db)
    cells_in = [dict(id=f"s1.{i}", sweep_id="s1", position=i, step=0, spec_name="x", spec_path="x.yaml",
                     argv=["true"], seed=i, group_hash=f"g{i}", gpus=2 if i < 4 else 3, log_path=str(db.parent / "l"))
                for i in range(5)]
    create_sweep(store, dict(id="s1", name="x", lanes=4, gpu_ids=["0", "1", "2", "3"], steps=[]), cells_in)
    executor = _FakeExecutor()
    Scheduler(store, "s1", executor, poll_s=0.001).run()
    busy: dict[str, str] = {}
    most = 0
    for kind, cid, lane in executor.log:
        if kind == "start":
            for gpu in lane.split(","):
                assert gpu not in busy, (cid, gpu, busy)  # never two cells on one GPU
                busy[gpu] = cid
            most = max(most, len(set(busy.values())))
        else:
            busy = {g: c for g, c in busy.items() if c != cid}
    starts = [(cid, lane) for kind, cid, lane in executor.log if kind == "start"]
    assert starts == [("s1.0", "0,1"), ("s1.1", "2,3"), ("s1.2", "0,1"), ("s1.3", "2,3"), ("s1.4", "0,1,2")]
    assert most == 2


def test_the_new_tables_are_added_to_an_old_store(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "runs.db"
    shutil.copyfile(Path(__file__).parent / "fixtures" / "runs_schema_v1.db", path)
    Store(path)
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    run_columns = {r[1] for r in conn.execute("PRAGMA table_info(run)")}
    conn.close()
    assert {"sweep", "cell"} <= tables and "cell_id" in run_columns


def test_the_status_line_counts_cells_and_estimates_from_finished_ones() -> None:
    from datetime import datetime, timezone

    from golf.launch.sweep_view import eta_s, status_text

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    at = t0 + timedelta(seconds=100)

    def cell(state: str, start: float | None = None, took: float | None = None, **extra: Any) -> dict[str, Any]:
        began = t0 + timedelta(seconds=start) if start is not None else None
        ended = began + timedelta(seconds=took) if began is not None and took is not None else None
        return {"state": state, "started_at": began, "ended_at": ended, "lane": None, **extra}

    rows = [cell("completed", 0, 40), cell("failed", 0, 60), cell("completed", 0, 1, reused=True),
            cell("running", 80, lane="0"), cell("running", 40, lane="1"), cell("queued"), cell("queued")]
    # mean of the cells that ran here: 50 s (the reused one took no time); queued 2 x 50, running 50-20 + 0 left
    assert eta_s(rows, lanes=2, at=at) == pytest.approx((2 * 50 + 30 + 0) / 2)
    assert eta_s([cell("queued")], lanes=2) is None
    text = status_text("ab12", rows, 2)
    assert text.startswith("sweep ab12: 2 queued, 2 running, 2 completed, 1 failed · lanes 0 1 · ETA ")


def test_resume_follows_a_live_cell_whose_job_id_was_never_written(db: Path) -> None:
    from golf.launch.queue import create_sweep
    from golf.launch.sweep import prepare_resume
    from golf.store import Run
    from golf.store.models import now

    store = Store(db)
    create_sweep(store, dict(id="s2", name="x", lanes=1, gpu_ids=["0"], steps=[], state="interrupted"),
                 [dict(id="s2.0", sweep_id="s2", position=0, step=0, spec_name="x", spec_path="x.yaml", seed=1,
                       group_hash="g", state="running", log_path=str(db.parent / "l"))])
    store.create_run(Run(id="r1", name="x-s1", status="running", heartbeat_at=now(), cell_id="s2.0", seed=1))
    report = prepare_resume(store, "s2", _FakeExecutor())
    assert report.reattached == ["s2.0"] and report.requeued == []
    handle = report.handles["s2.0"]
    assert handle.poll() is None  # its run beats: still running
    store.update_run("r1", status="completed", exit_code=0)
    assert handle.poll() == 0
    store.update_run("r1", status="running", heartbeat_at=now() - timedelta(minutes=5))  # its golf died too
    assert prepare_resume(store, "s2", _FakeExecutor()).requeued == ["s2.0"]
