"""Fault injection, full disks: a real, small tmpfs (mounted in a private user + mount namespace, so no root and
no trace outside the test) under runs/ or under runs.db. Each case copies what golf left out of the namespace and
checks the exit code, the row, the steps and the log."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from faultkit import REPO, logged_steps, write_spec

from golf.store import Store


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a user namespace here")


def in_small_tmpfs(mount: Path, size: str, script: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `script` (sh) with a fresh tmpfs of `size` mounted at `mount`, visible to that script only."""
    mount.mkdir(parents=True, exist_ok=True)
    body = f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mount))} && {script}"
    return subprocess.run(["unshare", "-Urm", "sh", "-c", body], capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def golf_run(spec: Path, db: Path) -> str:
    return shlex.join([sys.executable, "-m", "golf_cli.main", "run", str(spec), "--db", str(db)])


def chatty_trainer(lines: int, width: int = 1000) -> str:
    """Prints `lines` step lines padded to `width` bytes as fast as it can, then exits 0."""
    return textwrap.dedent(f"""\
        import os
        pad = "-" * {width}  # not letters: the parser scans runs of letters for `name:` fields
        for s in range(1, {lines} + 1):
            print(f"step:{{s}}/{lines} train_loss:{{7 - s / 10000:.4f}} train_time:{{s}}ms step_avg:1.00ms {{pad}}")
        """)


def test_runs_folder_filling_up_stops_the_run_as_failed(workdir: Path, tiny_data: Path, db: Path) -> None:
    small, out = workdir / "small", workdir / "out"
    spec = write_spec(workdir, tiny_data, chatty_trainer(lines=5000))  # ~5 MB into a 256 KiB disk
    out.mkdir()
    result = in_small_tmpfs(small, "256k", f"cd {small} && {golf_run(spec, db)}; echo rc=$? > {out}/rc; "
                                           f"cp -r {small}/runs {out}/")
    assert (out / "rc").read_text().strip() == "rc=1", result.stdout[-3000:] + result.stderr[-3000:]
    assert "cannot write" in result.stdout and "No space left on device" in result.stdout
    run = Store(db).list_runs()[0]
    assert run.status == "failed" and run.stop_reason == "cannot write train.log (No space left on device)"
    copied = out / "runs" / run.id / "train.log"
    logged = logged_steps(copied)
    stored = [s.step for s in Store(db).steps(run.id)]
    assert 0 < len(logged) < 5000 and stored[:len(logged)] == logged  # nothing of the log missing from the store
    assert copied.stat().st_size > 200_000  # the log got everything until the disk was full


def test_runs_folder_full_before_launch_is_exit_2_and_nothing_written(workdir: Path, tiny_data: Path,
                                                                      db: Path) -> None:
    small, out = workdir / "small", workdir / "out"
    spec = write_spec(workdir, tiny_data, chatty_trainer(lines=3))
    out.mkdir()
    fill = f"dd if=/dev/zero of={small}/fill bs=4096 2>/dev/null; "
    result = in_small_tmpfs(small, "64k", f"{fill}cd {small} && {golf_run(spec, db)}; echo rc=$? > {out}/rc; "
                                          f"ls -A {small} > {out}/left")
    assert (out / "rc").read_text().strip() == "rc=2", result.stdout[-3000:] + result.stderr[-3000:]
    error = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error) == 1 and "cannot write the run folder (No space left on device)" in error[0], error
    assert (out / "left").read_text().split() in (["fill"], ["fill", "runs"])  # no run folder inside runs/
    assert not db.exists() or Store(db).list_runs() == []


def test_runs_db_disk_filling_up_delays_the_rows_and_loses_none(workdir: Path, tiny_data: Path) -> None:
    small, out = workdir / "small", workdir / "out"
    db = small / "runs.db"
    # the trainer fills runs.db's disk at step 5 and frees it 2.5 s later
    script = textwrap.dedent(f"""\
        import os, time
        for s in range(1, 61):
            print(f"step:{{s}}/60 train_loss:{{7 - s / 1000:.4f}} train_time:{{s}}ms step_avg:1.00ms", flush=True)
            if s == 5:
                fd = os.open("{small}/fill", os.O_WRONLY | os.O_CREAT)
                try:
                    while os.write(fd, b"0" * 4096):
                        pass
                except OSError:
                    os.close(fd)
            if s == 30:
                os.remove("{small}/fill")
            time.sleep(0.1)
        print("final_int8_zlib_roundtrip_exact val_loss:2.00000000 val_bpb:1.20000000")
        """)
    spec = write_spec(workdir, tiny_data, script)
    out.mkdir()
    create = shlex.join([sys.executable, "-c", f"from golf.store import Store; Store({str(db)!r})"])
    result = in_small_tmpfs(small, "1m", f"{create} && cd {workdir} && {golf_run(spec, db)}; echo rc=$? > {out}/rc; "
                                         f"cp {small}/runs.db* {out}/")
    assert (out / "rc").read_text().strip() == "rc=0", result.stdout[-3000:] + result.stderr[-3000:]
    assert "runs.db unavailable (database or disk is full)" in result.stdout
    assert "runs.db is back" in result.stdout
    store = Store(out / "runs.db")
    run = store.list_runs()[0]
    assert run.status == "completed" and run.final_bpb == 1.2
    assert [s.step for s in store.steps(run.id)] == logged_steps(Path(run.log_path)) == list(range(1, 61))
