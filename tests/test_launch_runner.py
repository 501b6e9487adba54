"""The launcher end to end with fake community trainers (real torchrun, real store): what the trainer prints is
what the run row and its curve say; crashes, kills, divergence and Ctrl-C are recorded as such."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from golf.launch import execute, plan_runs
from golf.spec import load_spec
from golf.store import Store
from golf_cli.main import app

runner = CliRunner()

# What the fake trainer prints, and so what the store must hold.
STEPS = [  # step, train_loss, train_time_ms, step_avg_ms
    (1, 6.9370, 24, 24.05), (2, 6.1012, 49, 24.50), (3, 5.5001, 75, 25.00), (4, 5.0123, 100, 25.00),
]
VALS = [  # step, val_loss, val_bpb, train_time_ms, step_avg_ms
    (0, 6.9400, 4.1100, 0, 0.01), (4, 4.9876, 2.9540, 100, 25.00),
]
MODEL_BYTES, CODE_BYTES = 15_815_847, 47_642
FINAL_LOSS, FINAL_BPB = 4.99123456, 2.95612345


def trainer_script(extra_end: str = "", pause_after_steps: str = "") -> str:
    lines = ['print("Hyperparameters:")', 'print("  train_batch_tokens: 8192")', 'print("model_params:26993756")']
    lines.append(f'print("step:0/4 val_loss:{VALS[0][1]:.4f} val_bpb:{VALS[0][2]:.4f} train_time:0ms '
                 f'step_avg:{VALS[0][4]:.2f}ms")')
    for step, loss, t, avg in STEPS:
        lines.append(f'print("step:{step}/4 train_loss:{loss:.4f} train_time:{t}ms step_avg:{avg:.2f}ms", '
                     'flush=True)')
    lines.append(pause_after_steps)
    step, loss, bpb, t, avg = VALS[1]
    lines += [
        f'print("step:{step}/4 val_loss:{loss:.4f} val_bpb:{bpb:.4f} train_time:{t}ms step_avg:{avg:.2f}ms")',
        'print("peak memory allocated: 512 MiB reserved: 600 MiB")',
        'open("final_model.pt", "wb").write(b"raw")',
        'time.sleep(0.05)',
        'open("final_model.int8.ptz", "wb").write(b"q" * 7)',
        f'print("Serialized model int8+zlib: {MODEL_BYTES} bytes (payload:17178912 raw_torch:17224025 '
        'payload_ratio:3.91x)")',
        f'print("Code size: {CODE_BYTES} bytes")',
        f'print("Total submission size int8+zlib: {MODEL_BYTES + CODE_BYTES} bytes")',
        f'print("final_int8_zlib_roundtrip val_loss:{FINAL_LOSS:.4f} val_bpb:{FINAL_BPB:.4f} eval_time:1401ms")',
        f'print("final_int8_zlib_roundtrip_exact val_loss:{FINAL_LOSS:.8f} val_bpb:{FINAL_BPB:.8f}")',
        extra_end,
    ]
    head = textwrap.dedent("""\
        import json, os, sys, time
        json.dump({"env": dict(os.environ), "cwd": os.getcwd()}, open("trainer_env.json", "w"))
        open(os.path.join(os.environ["FAKE_DIR"], "trainer.pid"), "w").write(str(os.getpid()))
        """)
    return head + "\n".join(line for line in lines if line) + "\n"


def make_spec(workdir: Path, data: Path, script: str, name: str = "fake", seeds: str = "[1337]") -> Path:
    (workdir / "train_fake.py").write_text(script, encoding="utf-8")
    spec = workdir / f"{name}.yaml"
    spec.write_text(f"name: {name}\ntrainer: train_fake.py\nseeds: {seeds}\ndata: {{path: {data}}}\n"
                    f"env: {{FAKE_DIR: {workdir}, MY_KNOB: 7}}\ntags: [fake]\nreported: {{val_bpb: 1.5}}\n",
                    encoding="utf-8")
    return spec


def show_json(db: Path, ref: str) -> dict:
    result = runner.invoke(app, ["show", ref, "--format", "json", "--db", str(db)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_run_records_what_the_trainer_printed(workdir: Path, tiny_data: Path, db: Path) -> None:
    spec = make_spec(workdir, tiny_data, trainer_script())
    result = runner.invoke(app, ["run", str(spec), "--db", str(db), "--tag", "extra"])
    assert result.exit_code == 0, result.output
    assert "step:3/4 train_loss:5.5001" in result.stdout  # the log is echoed (not a TTY here)

    data = show_json(db, "fake-s1337")
    assert data["status"] == "completed" and data["exit_code"] == 0
    assert data["seed"] == 1337 and data["tags"] == ["fake", "extra"]
    assert data["final_bpb"] == FINAL_BPB and data["final_loss"] == FINAL_LOSS
    assert data["post_quant_bpb"] == FINAL_BPB and data["final_stage"] == "post_quant"
    assert data["model_bytes"] == MODEL_BYTES and data["code_bytes"] == CODE_BYTES
    assert data["total_bytes"] == MODEL_BYTES + CODE_BYTES
    assert data["steps"] == 4 and data["iterations"] == 4
    assert data["step_avg_ms"] == 25.0 and data["train_time_ms"] == 100.0
    assert data["tokens_per_s"] == pytest.approx(8192 / 0.025)
    assert data["peak_mem_mib"] == 512 and data["peak_mem_reserved_mib"] == 600
    assert data["model_params"] == 26993756 and data["quant_label"] == "int8+zlib"
    assert data["reported_bpb"] == 1.5 and data["malformed_lines"] == 0
    assert "bytes_breakdown" in data

    expected_curve = {s: {"train_loss": loss, "train_time_ms": float(t), "step_avg_ms": avg}
                      for s, loss, t, avg in STEPS}
    for s, loss, bpb, t, avg in VALS:
        expected_curve.setdefault(s, {}).update(val_loss=loss, val_bpb=bpb, train_time_ms=float(t), step_avg_ms=avg)
    got = {row["step"]: {k: v for k, v in row.items() if k != "step" and v is not None} for row in data["curve"]}
    assert got == expected_curve

    run_dir = Path(data["run_dir"])
    assert run_dir == (workdir / "runs" / data["id"]).absolute()
    assert data["artifact_path"] == str(run_dir / "final_model.int8.ptz")  # the newest final_model.*
    log = Path(data["log_path"]).read_text()
    assert f"final_int8_zlib_roundtrip_exact val_loss:{FINAL_LOSS:.8f} val_bpb:{FINAL_BPB:.8f}" in log
    assert log.index("step:1/4") < log.index("step:4/4 train_loss")
    run_spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert run_spec["seeds"] == [1337] and run_spec["env"]["MY_KNOB"] == 7
    assert run_spec["trainer"] == str((workdir / "train_fake.py").resolve())

    # provenance
    assert data["host"] == socket.gethostname()
    assert data["python_version"] == platform.python_version()
    assert data["trainer"] == str((workdir / "train_fake.py").resolve())
    assert data["config"] == {"FAKE_DIR": str(workdir), "MY_KNOB": "7", "SEED": "1337"}
    assert data["spec"]["name"] == "fake" and data["spec_name"] == "fake"
    assert data["pid"] == os.getpid() and data["nproc"] == 1
    assert data["git_commit"] is None and data["git_dirty"] is None  # the test's folder is not a git tree
    assert data["ended_at"] >= data["started_at"]

    # what the trainer saw: its env, its cwd
    seen = json.loads((run_dir / "trainer_env.json").read_text())
    assert Path(seen["cwd"]) == run_dir
    env = seen["env"]
    assert env["SEED"] == "1337" and env["MY_KNOB"] == "7" and env["RUN_ID"] == data["id"]
    assert env["NCCL_NVLS_ENABLE"] == "0" and env["PYTHONUNBUFFERED"] == "1"
    assert env["DATA_PATH"] == str(tiny_data.absolute())
    assert env["TOKENIZER_PATH"] == str((tiny_data.parent.parent / "tokenizers" / "fineweb_1024_bpe.model").resolve())

    listed = json.loads(runner.invoke(app, ["ls", "--format", "json", "--db", str(db)]).stdout)
    assert [r["id"] for r in listed] == [data["id"]]


def test_seeds_make_one_run_each_in_one_group(workdir: Path, tiny_data: Path, db: Path) -> None:
    spec = make_spec(workdir, tiny_data, trainer_script(), seeds="[1, 2]")
    result = runner.invoke(app, ["run", str(spec), "--db", str(db), "--seed", "5", "--seed", "6"])
    assert result.exit_code == 0, result.output
    runs = Store(db).list_runs()
    assert sorted(r.name for r in runs) == ["fake-s5", "fake-s6"]
    assert sorted(r.seed for r in runs) == [5, 6]
    assert len({r.group_hash for r in runs}) == 1 and len({r.id for r in runs}) == 2
    assert {r.config["SEED"] for r in runs} == {"5", "6"}


def test_trainer_crash_is_failed_and_golf_exits_nonzero(workdir: Path, tiny_data: Path, db: Path) -> None:
    spec = make_spec(workdir, tiny_data, trainer_script(extra_end='sys.exit(3)'))
    result = runner.invoke(app, ["run", str(spec), "--db", str(db)])
    assert result.exit_code == 1
    run = Store(db).list_runs()[0]
    assert run.status == "failed" and run.exit_code != 0
    assert run.final_bpb == FINAL_BPB  # what was parsed is kept


def test_one_failed_seed_fails_the_command_but_the_others_run(workdir: Path, tiny_data: Path, db: Path) -> None:
    script = trainer_script(extra_end='sys.exit(1 if os.environ["SEED"] == "1" else 0)')
    result = runner.invoke(app, ["run", str(make_spec(workdir, tiny_data, script, seeds="[1, 2]")), "--db", str(db)])
    assert result.exit_code == 1
    assert {r.seed: r.status for r in Store(db).list_runs()} == {1: "failed", 2: "completed"}


def test_trainer_that_cannot_start_is_failed(workdir: Path, tiny_data: Path, db: Path) -> None:
    plan = plan_runs(load_spec(make_spec(workdir, tiny_data, trainer_script())), Store(db))[0]
    plan.argv = [str(workdir / "no-such-python"), *plan.argv[1:]]
    run = execute(plan, Store(db), live=False)
    assert run.status == "failed" and run.stop_reason.startswith("launch failed")
    assert "cannot start" in Path(run.log_path).read_text()


def test_killed_trainer_is_failed(workdir: Path, tiny_data: Path, db: Path) -> None:
    script = trainer_script(pause_after_steps="time.sleep(120)")
    plan = plan_runs(load_spec(make_spec(workdir, tiny_data, script)), Store(db))[0]
    pid_file = workdir / "trainer.pid"

    def kill_trainer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if pid_file.exists() and pid_file.read_text().strip():
                time.sleep(0.5)
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_trainer, daemon=True)
    killer.start()
    started = time.monotonic()
    run = execute(plan, Store(db), live=False)
    assert time.monotonic() - started < 60
    assert run.status == "failed"
    assert run.exit_code not in (0, None)
    assert run.steps == 4  # parsed before the kill, kept
    assert {s.step for s in Store(db).steps(run.id)} == {0, 1, 2, 3, 4}


def test_divergence_is_recorded_as_diverged(workdir: Path, tiny_data: Path, db: Path) -> None:
    script = textwrap.dedent("""\
        import sys
        print("step:1/9 train_loss:6.9000 train_time:10ms step_avg:10.00ms")
        print("step:2/9 train_loss:nan train_time:20ms step_avg:10.00ms")
        print("diverged: train loss is nan at step 2")
        sys.exit(1)
        """)
    result = runner.invoke(app, ["run", str(make_spec(workdir, tiny_data, script)), "--db", str(db)])
    assert result.exit_code == 1
    data = show_json(db, "fake-s1337")
    assert data["status"] == "diverged" and data["stop_reason"] == "diverged"
    assert [row["step"] for row in data["curve"]] == [1, 2]
    assert data["curve"][1]["train_loss"] is None  # nan is stored, and written to JSON as null


def test_nan_loss_alone_is_diverged_even_with_exit_zero(workdir: Path, tiny_data: Path, db: Path) -> None:
    script = 'print("step:1/9 train_loss:nan train_time:10ms step_avg:10.00ms")\n'
    result = runner.invoke(app, ["run", str(make_spec(workdir, tiny_data, script)), "--db", str(db)])
    assert result.exit_code == 1
    assert Store(db).list_runs()[0].status == "diverged"


def test_sigint_to_golf_interrupts_and_keeps_everything(workdir: Path, tiny_data: Path, db: Path) -> None:
    script = textwrap.dedent("""\
        import os, time
        open(os.path.join(os.environ["FAKE_DIR"], "trainer.pid"), "w").write(str(os.getpid()))
        for s in range(1, 10000):
            print(f"step:{s}/10000 train_loss:{7 - s / 1000:.4f} train_time:{s * 50}ms step_avg:50.00ms", flush=True)
            time.sleep(0.05)
        """)
    spec = make_spec(workdir, tiny_data, script)
    proc = subprocess.Popen([sys.executable, "-m", "golf_cli.main", "run", str(spec), "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        stored = 0
        while time.monotonic() < deadline and stored < 5:  # the store is updated while the run goes on
            time.sleep(0.5)
            if db.exists():
                runs = Store(db).list_runs()
                stored = len(Store(db).steps(runs[0].id)) if runs else 0
        assert stored >= 5, "steps never reached the store during the run"
        assert Store(db).list_runs()[0].status == "running"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out.decode()[-2000:]
    run = Store(db).list_runs()[0]
    assert run.status == "interrupted" and run.stop_reason == "SIGINT"
    assert run.ended_at is not None
    logged = [line for line in Path(run.log_path).read_text().splitlines() if line.startswith("step:")]
    steps = Store(db).steps(run.id)
    assert len(steps) == len(logged) >= 5  # every step line that reached the log is in the store
    assert [s.step for s in steps] == [int(line.split(":")[1].split("/")[0]) for line in logged]
    assert run.steps == steps[-1].step
    trainer_pid = int((workdir / "trainer.pid").read_text())
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(trainer_pid, 0)  # the trainer did not outlive golf


def test_stale_running_rows_are_marked_failed(workdir: Path, db: Path) -> None:
    from golf.store import Run

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = Store(db)
    store.create_run(Run(id="r1", name="orphan", status="running", pid=dead.pid, host=socket.gethostname()))
    store.create_run(Run(id="r2", name="alive", status="running", pid=os.getpid(), host=socket.gethostname()))
    listed = json.loads(runner.invoke(app, ["ls", "--format", "json", "--db", str(db)]).stdout)
    status = {r["name"]: r["status"] for r in listed}
    assert status == {"orphan": "failed", "alive": "running"}
