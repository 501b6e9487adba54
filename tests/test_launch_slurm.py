"""The Slurm executor (golf.launch.slurm): cells through submitit's local executor (real jobs: exit codes, logs,
job ids, cancel, reattach by job id; a sweep's `golf run` cells are test_sweep_slurm.py's), the Slurm side against
stand-in sbatch, sacct and scancel (the #SBATCH lines, the job id, scancel), and the options' validation."""

from __future__ import annotations

import os
import signal
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("submitit")

from golf.errors import GolfError  # noqa: E402
from golf.launch.executor import CellLaunch  # noqa: E402
from golf.launch.slurm import NO_EXIT_CODE, SlurmExecutor, SlurmOptions, make_executor, run_cell  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def local(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> SlurmExecutor:
    """Submitit's local executor in the test's folder; its jobs import this checkout's golf."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    return make_executor({"cluster": "local", "time": 5})


def wait_code(handle: object, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = handle.poll()  # type: ignore[attr-defined]
        if code is not None:
            return code
        time.sleep(0.1)
    raise AssertionError("the cell did not end")


def wait_text(path: Path, text: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never said {text!r}")


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_two_cells_run_as_local_jobs_with_their_env_logs_and_exit_codes(local: SlurmExecutor, workdir: Path) -> None:
    cells = [CellLaunch(f"s1.{k}", py(f"""\
                 import os, pathlib
                 pathlib.Path("marker{k}").write_text(os.environ["CELL_TAG"] + " " + os.getcwd())
                 print("cell {k} ran", flush=True)
                 raise SystemExit({k * 3})"""), workdir / "cells" / f"c{k}.log", gpus=1, env={"CELL_TAG": f"tag{k}"})
             for k in range(2)]
    handles = [local.submit(c) for c in cells]  # both submitted before either is waited for
    assert [wait_code(h) for h in handles] == [0, 3]
    for k, cell in enumerate(cells):
        assert (workdir / f"marker{k}").read_text() == f"tag{k} {workdir}"
        assert cell.log_path.read_text() == f"cell {k} ran\n"
    ids = [h.job_id for h in handles]
    assert all(i.isdigit() for i in ids) and len(set(ids)) == 2
    again = make_executor({"cluster": "local"})  # a later golf: the codes come from the jobs' result files
    assert [again.reattach(i).poll() for i in ids] == [0, 3]  # type: ignore[union-attr]
    assert again.reattach("999999999") is None and again.reattach("x") is None


def test_a_sleeping_cell_is_cancelled_and_a_running_one_reattached(local: SlurmExecutor, workdir: Path) -> None:
    log = workdir / "cells" / "sleep.log"
    handle = local.submit(CellLaunch("s1.0", py("""\
        import os, signal, sys, time
        open("child.pid", "w").write(str(os.getpid()))
        def stop(*_):  # like golf run: stopping its trainer and recording the run takes a while
            time.sleep(1.5)
            print("stopped", flush=True)
            sys.exit(143)
        signal.signal(signal.SIGTERM, stop)
        print("sleeping", flush=True)
        time.sleep(120)"""), log))
    wait_text(log, "sleeping")
    reattached = make_executor({"cluster": "local"}).reattach(handle.job_id)
    assert reattached is not None and reattached.poll() is None and handle.poll() is None
    reattached.cancel()  # what `golf queue cancel` does from another golf
    # the job waited for the cell to stop and returned its code (no job killed before its golf run recorded)
    assert wait_code(handle, 30) == 143 and wait_code(reattached, 30) == 143
    assert log.read_text() == "sleeping\nstopped\n"
    pid = int((workdir / "child.pid").read_text())
    assert not Path(f"/proc/{pid}").exists()
    handle.cancel()  # an ended cell: nothing to do
    assert handle.poll() == 143


def test_a_cells_own_store_is_copied_into_the_sweeps_when_its_job_ends(local: SlurmExecutor, workdir: Path) -> None:
    """Compute nodes never write the sweep's runs.db (SQLite's WAL is one host's): the job's golf run writes a store
    of its own, which the submitting golf copies in once the job has ended (a taken name gets the next free one)."""
    from golf.store import Run, Store

    db = workdir / "runs.db"
    Store(db).create_run(Run(id="old111", name="x-s1", status="completed"))
    writer = py("""\
        import sys
        from golf.store import Run, Store
        db = sys.argv[sys.argv.index("--db") + 1]
        print(db, flush=True)
        store = Store(db)
        store.create_run(Run(id="new222", name="x-s1", status="completed", final_bpb=1.25, cell_id="s3.0"))
        store.upsert_steps("new222", {1: {"train_loss": 6.5}, 2: {"train_loss": 6.25, "val_bpb": 1.3}})""")
    log = workdir / "cells" / "w.log"
    handle = local.submit(CellLaunch("s3.0", [*writer, "run", "x.yaml", "--db", str(db)], log))
    assert wait_code(handle) == 0, log.read_text()
    cell_db = Path(log.read_text().strip())
    assert cell_db.parent == local.folder / "cells" and cell_db.name.startswith("s3.0.")
    store = Store(db, readonly=True)
    assert sorted((r.id, r.name, r.final_bpb, r.cell_id) for r in store.list_runs()) == [
        ("new222", "x-s1-2", 1.25, "s3.0"), ("old111", "x-s1", None, None)]
    assert [(s.step, s.train_loss, s.val_bpb) for s in store.steps("new222")] == [(1, 6.5, None), (2, 6.25, 1.3)]
    from golf.launch.slurm import record_cell_runs

    assert record_cell_runs(cell_db, db) == ["new222"]  # again: the same row, not a second one
    assert len(Store(db, readonly=True).list_runs()) == 2 and len(store.steps("new222")) == 2
    later = make_executor({"cluster": "local"}).reattach(handle.job_id)  # a later golf knows the job's stores
    assert later is not None and later.stores == handle.stores and later.poll() == 0


def test_multi_node_tasks_join_the_first_nodes_rendezvous(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Node 1 of a 2-node job: its golf run gets --nnodes/--node-rank/--rdzv-endpoint and MASTER_ADDR of node 0,
    and writes its own log and store beside the cell's."""
    import golf.launch.slurm

    monkeypatch.setattr(golf.launch.slurm, "_job_nodes", lambda: (2, 1, "node-a"))
    before = signal.getsignal(signal.SIGTERM)
    log = workdir / "cell.log"
    code = run_cell(py("import os, sys; print(sys.argv[1:], os.environ['MASTER_ADDR'], os.environ['MASTER_PORT'])")
                    + ["run", "x.yaml", "--db", str(workdir / "c.db")], {}, str(log), str(workdir), rdzv_port=29555)
    assert code == 0 and not log.exists()
    assert (workdir / "cell.log.node1").read_text() == (
        "['run', 'x.yaml', '--nnodes', '2', '--node-rank', '1', '--rdzv-endpoint', 'node-a:29555', "
        f"'--db', '{workdir / 'c.db.node1'}'] node-a 29555\n")  # node 0's store has the run; this node's its own
    assert signal.getsignal(signal.SIGTERM) == before  # the job's handlers are put back


def fake_slurm(bin_dir: Path, state: str = "RUNNING", refuse: str = "") -> None:
    """sbatch copies the submission file and prints a job id; sacct reports `state`; scancel records its args."""
    bin_dir.mkdir(exist_ok=True)
    scripts = {
        "sbatch": f'{"echo " + repr(refuse) + " >&2; exit 1" if refuse else ""}\n'
                  f'cp "$1" {bin_dir}/submitted.sh\necho "Submitted batch job 4242"\n',
        "sacct": f'printf "JobID|State|NodeList\\n4242|{state}|node-a\\n"\n',
        "scancel": f'echo "$@" >> {bin_dir}/scancelled\n',
        "srun": "exit 1\n",  # submitit looks for it; the jobs never start here
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_jobs_get_the_options_as_sbatch_lines_and_are_cancelled_by_id(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from submitit.core.utils import cloudpickle_dump

    bin_dir = workdir / "bin"
    fake_slurm(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    spec_keys = {"partition": "h200", "time": 90, "account": "golfers", "cpus-per-task": 16,
                 "additional_parameters": {"qos": "high"}}
    executor = SlurmExecutor(SlurmOptions.from_mapping(spec_keys).merged({"time": 45, "partition": None}))
    handle = executor.submit(CellLaunch("s9.3", ["golf", "run", "a.yaml"], workdir / "c.log", gpus=2))
    assert handle.job_id == "4242"
    sbatch = (bin_dir / "submitted.sh").read_text()
    for line in ("#SBATCH --partition=h200", "#SBATCH --time=45", "#SBATCH --account=golfers",
                 "#SBATCH --cpus-per-task=16", "#SBATCH --gpus-per-node=2", "#SBATCH --qos=high",
                 "#SBATCH --job-name=golf-s9.3", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1"):
        assert line in sbatch.splitlines(), (line, sbatch)
    assert handle.poll() is None  # sacct: RUNNING, no result yet
    handle.cancel()
    assert (bin_dir / "scancelled").read_text().split() == ["4242"]
    # the job's end, as submitit's job body leaves it: its result pickled beside it
    cloudpickle_dump(("success", 3), executor.folder / "4242_0_result.pkl")
    assert handle.poll() == 3
    later = make_executor({"partition": "h200"})
    assert later.reattach("4242").poll() == 3  # type: ignore[union-attr]
    assert later.reattach("5555") is None  # never submitted from this folder


def test_a_slurm_job_that_ended_without_a_result_and_a_refused_one(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import golf.launch.slurm

    bin_dir = workdir / "bin"
    fake_slurm(bin_dir, state="CANCELLED")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(golf.launch.slurm, "RESULT_GRACE_S", 0.0)
    handle = make_executor({}).submit(CellLaunch("s1.0", ["golf", "run", "a.yaml"], workdir / "c.log"))
    assert handle.poll() == NO_EXIT_CODE
    fake_slurm(bin_dir, refuse="sbatch: error: invalid partition specified: nope")
    with pytest.raises(GolfError, match=r"^cell s1.1: submitting its job failed: sbatch: error: invalid partition "
                                        r"specified: nope$"):
        make_executor({"partition": "nope"}).submit(CellLaunch("s1.1", ["golf"], workdir / "d.log"))


def test_options_are_validated_with_one_line_naming_the_key(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = SlurmOptions.from_mapping({"cpus-per-task": "8", "time": 30, "mem_gb": "64", "account": None})
    assert (options.cpus_per_task, options.time, options.mem_gb, options.account) == (8, 30, 64.0, None)
    cell = CellLaunch("s2.5", ["golf"], workdir / "x.log", gpus=4)
    assert options.parameters(cell) == {"name": "golf-s2.5", "timeout_min": 30, "nodes": 1, "tasks_per_node": 1,
                                        "gpus_per_node": 4, "cpus_per_task": 8, "mem_gb": 64.0}
    bad = [({"partiton": "gpu"}, "slurm.partiton: unknown key; did you mean 'partition'? valid keys: partition, "),
           ({"time": 0}, "slurm.time: 0: expected a whole number >= 1 (minutes)"),
           ({"nodes": 1.5}, "slurm.nodes: 1.5: expected a whole number >= 1"),
           ({"rdzv_port": 70000}, "slurm.rdzv_port: 70000: expected a whole number 1..65535"),
           ({"cluster": "pbs"}, "slurm.cluster: 'pbs': expected one of slurm, local"),
           ({"additional_parameters": ["qos=high"]}, "slurm.additional_parameters: expected a mapping"),
           ({"mem_gb": -1}, "slurm.mem_gb: -1: expected a positive number of GB")]
    for keys, message in bad:
        with pytest.raises(GolfError) as err:
            SlurmOptions.from_mapping(keys)
        assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    monkeypatch.setenv("PATH", str(workdir))  # no sbatch here
    with pytest.raises(GolfError, match="sbatch and srun not on PATH"):
        make_executor({"partition": "gpu"})


def test_a_specs_slurm_keys_are_validated_and_the_flags_win(workdir: Path) -> None:
    from golf.spec import load_spec, spec_from_dict

    base = workdir / "base.yaml"
    base.write_text("name: base\nslurm: {partition: h200, time: 30, additional_parameters: {qos: high}}\n")
    child = workdir / "child.yaml"
    child.write_text("name: child\nextends: base.yaml\nslurm: {time: 90, cpus-per-task: 12}\n")
    spec = load_spec(child)
    assert spec.slurm == {"partition": "h200", "time": 90, "cpus_per_task": 12,
                          "additional_parameters": {"qos": "high"}}
    assert spec_from_dict(spec.to_dict()).slurm == spec.slurm  # the run row's spec keeps them
    options = SlurmOptions.from_mapping(spec.slurm).merged({"time": 20, "account": None, "job-name": "abl"})
    assert (options.partition, options.time, options.cpus_per_task, options.account, options.job_name) == (
        "h200", 20, 12, None, "abl")
    bad = workdir / "bad.yaml"
    bad.write_text("name: bad\nslurm: {partiton: h200}\n")
    with pytest.raises(GolfError) as err:
        load_spec(bad)
    assert str(err.value).startswith("bad.yaml: slurm.partiton: unknown key; did you mean 'partition'?")


def test_the_flags_over_the_spec_keys_make_the_options_a_sweep_stores(workdir: Path) -> None:
    from golf.launch.slurm import sweep_options
    from golf_cli.options import slurm_flags

    spec_keys = {"partition": "h200", "time": 30, "additional_parameters": {"qos": "low", "constraint": "h200"}}
    flags = slurm_flags(time=45, account="golfers", params=["qos=high", "exclusive=user"], cluster="local")
    stored = sweep_options(spec_keys, flags)
    assert stored == {"partition": "h200", "time": 45, "cpus_per_task": None, "mem_gb": None, "account": "golfers",
                      "job_name": None, "nodes": 1, "rdzv_port": 29400, "folder": "runs/submitit", "cluster": "local",
                      "additional_parameters": {"qos": "high", "constraint": "h200", "exclusive": "user"}}
    import json

    executor = make_executor(json.loads(json.dumps(stored)), cwd=workdir)  # what `golf sweep resume` reads back
    assert executor.options == SlurmOptions.from_mapping(stored) and executor.folder == workdir / "runs/submitit"
    for flags, message in [({"params": ["qos"]}, "--slurm-param 'qos': expected KEY=VALUE"),
                           ({"time": 0}, "--slurm-time: 0: expected a whole number >= 1 (minutes)"),
                           ({"cluster": "pbs"}, "--slurm-cluster: 'pbs': expected one of slurm, local")]:
        with pytest.raises(GolfError) as err:
            sweep_options(spec_keys, slurm_flags(**flags))  # type: ignore[arg-type]
        assert str(err.value).startswith(message), str(err.value)


def test_without_submitit_the_executor_is_one_line_before_anything_runs(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now fails as if it were not installed
    with pytest.raises(GolfError, match=r"^--executor slurm: needs the submitit package \(pip install "
                                        r"'golf\[slurm\]'\)$"):
        make_executor({"cluster": "local"})
