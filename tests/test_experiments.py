"""Experiment names (`golf run --name`, a spec's `name:`) as references; ls/leaderboard filters; `golf rm`."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from golf.store import Run, Store
from golf_cli.main import app

runner = CliRunner()
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)

TRAINER = """\
    import os
    bpb = 2.0 - 0.01 * int(os.environ.get("LAYERS", "1")) + 0.0001 * int(os.environ["SEED"])
    print("step:4/4 val_loss:4.0 val_bpb:3.0 train_time:100ms step_avg:25.00ms", flush=True)
    print("final_int8_zlib_roundtrip_exact val_loss:%.8f val_bpb:%.8f" % (bpb * 1.6, bpb))
    """


def invoke(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def test_name_makes_an_experiment_that_every_command_resolves(workdir: Path, tiny_data: Path, db: Path) -> None:
    (workdir / "train_fake.py").write_text(textwrap.dedent(TRAINER))
    spec = workdir / "base.yaml"
    spec.write_text(f"name: base\ntrainer: train_fake.py\nseeds: [1, 2]\ndata: {{path: {tiny_data}}}\n"
                    "env: {LAYERS: 1}\n")
    assert invoke("run", str(spec), "--db", str(db))[0] == 0
    code, _, err = invoke("run", str(spec), "--set", "LAYERS=3", "--name", "deeper", "--db", str(db))
    assert code == 0, err
    runs = Store(db).list_runs()
    assert {r.name: r.experiment for r in runs} == {"base-s1": "base", "base-s2": "base", "deeper-s1": "deeper",
                                                    "deeper-s2": "deeper"}
    assert {r.spec_name for r in runs} == {"base"}  # one spec, two experiments: `base` alone is not ambiguous
    code, out, err = invoke("compare", "base", "deeper", "--format", "json", "--db", str(db))
    assert code == 0, err
    items = json.loads(out)
    assert [(i["label"], i["n"]) for i in items] == [("base", 2), ("deeper", 2)]
    assert items[1]["delta_bpb"] == pytest.approx(-0.02)
    code, out, _ = invoke("ablation-table", "base", "deeper", "--format", "md", "--db", str(db))
    assert code == 0 and "| Base: base |" in out and "LAYERS 1→3" in out
    # show: an experiment of several seeds is its seeds side by side, with the stages' mean ± std
    code, out, _ = invoke("show", "deeper", "--db", str(db))
    assert code == 0 and "deeper-s1" in out and "deeper-s2" in out and "2 of 2 seeds completed" in out
    code, out, _ = invoke("show", "deeper-s1", "--format", "json", "--db", str(db))
    assert json.loads(out)["experiment"] == "deeper"
    # ls shows the experiment and the group
    code, out, _ = invoke("ls", "--format", "csv", "--db", str(db))
    header = out.splitlines()[0].split(",")
    assert "experiment" in header and "group" in header


def add(store: Store, name: str, experiment: str, group: str, hours: int, bpb: float = 1.2,
        tags: tuple[str, ...] = (), status: str = "completed", **fields: object) -> None:
    store.create_run(Run(id=name.replace("-", "") + "x", name=name, spec_name="smoke", experiment=experiment,
                         group_hash=group * 16, seed=1, status=status, started_at=T0 + timedelta(hours=hours),
                         final_bpb=bpb, final_loss=bpb * 1.7, tags=list(tags),
                         config={"MLP_MULT": "3.0" if group == "b" else "2.0", "SEED": "1"}, **fields))


def test_one_name_for_two_configs_lists_them_newest_first(db: Path) -> None:
    store = Store(db)
    add(store, "smoke-s1", "smoke", "a", 0)
    add(store, "smoke-s1-2", "smoke", "b", 5)
    code, _, err = invoke("compare", "smoke", "smoke-s1", "--db", str(db))
    assert code == 2 and err.count("\n") == 1
    assert "'smoke' is ambiguous (newest first)" in err
    assert err.index("group bbbbbbbb") < err.index("group aaaaaaaa")  # the newest first
    assert "MLP_MULT=3.0" in err and "MLP_MULT=2.0" in err  # told apart by what differs
    assert "group:HASH" in err and "--name" in err


def test_ls_and_leaderboard_filters(db: Path) -> None:
    store = Store(db)
    add(store, "a-s1", "a", "a", 0, 1.30, tags=("xsa",))
    add(store, "b-s1", "b", "b", 1, 1.20, tags=("bench",))
    add(store, "c-s1", "c", "c", 2, 1.25, tags=("xsa", "wip"), status="failed")
    def names(*args: str) -> list[str]:
        code, out, err = invoke("ls", *args, "--format", "json", "--db", str(db))
        assert code == 0, err
        return [r["name"] for r in json.loads(out)]

    assert names("--tag", "xsa") == ["c-s1", "a-s1"]
    assert names("--tag", "xsa", "--tag", "wip") == ["c-s1"]
    assert names("--exclude-tag", "bench") == ["c-s1", "a-s1"]
    assert names("--spec", "b") == ["b-s1"] and names("--status", "failed") == ["c-s1"]
    board = json.loads(invoke("leaderboard", "--format", "json", "--db", str(db))[1])
    assert [r["label"] for r in board] == ["a"]  # bench hidden by default; failed runs never ranked
    board = json.loads(invoke("leaderboard", "--with-bench", "--format", "json", "--db", str(db))[1])
    assert [r["label"] for r in board] == ["b", "a"]
    board = json.loads(invoke("leaderboard", "--tag", "nope", "--format", "json", "--db", str(db))[1])
    assert board == []


def test_rm_asks_first_and_removes_rows_and_folders(db: Path, tmp_path: Path) -> None:
    store = Store(db)
    folders = {}
    for i, name in enumerate(("x-s1", "x-s2", "y-s1")):
        folder = tmp_path / "runs" / (name.replace("-", "") + "x")
        folder.mkdir(parents=True)
        (folder / "train.log").write_text("log")
        folders[name] = folder
        add(store, name, name[0], name[0], i, run_dir=str(folder))
    store.upsert_steps("xs1x", {1: {"train_loss": 5.0}})
    code, _, err = invoke("rm", "x", "--db", str(db), input="n\n")
    assert code == 1 and "nothing removed" in err and len(Store(db).list_runs()) == 3
    code, out, err = invoke("rm", "x", "--db", str(db), input="y\n")
    assert code == 0 and "removed 2 run(s)" in out and "x-s1" in err and "x-s2" in err
    assert [r.name for r in Store(db).list_runs()] == ["y-s1"] and Store(db).steps("xs1x") == []
    assert folders["x-s1"].is_dir()  # without --files the folders stay
    code, out, _ = invoke("rm", "y-s1", "--yes", "--files", "--db", str(db))
    assert code == 0 and not folders["y-s1"].exists() and Store(db).list_runs() == []
    add(store, "z-s1", "z", "z", 9, status="running", pid=1)
    code, _, err = invoke("rm", "z-s1", "--yes", "--db", str(db))
    assert code == 2 and "still running" in err and len(Store(db).list_runs()) == 1
    code, _, err = invoke("rm", "nope", "--yes", "--db", str(db))
    assert code == 2 and err.count("\n") == 1


def test_one_run_of_an_experiment_by_its_name(db: Path) -> None:
    from golf.analysis.groups import resolve_one_run
    from golf.errors import GolfError

    store = Store(db)
    add(store, "c-ttt0-s1337", "c-ttt0", "c", 0)
    add(store, "two-s1", "two", "t", 1)
    add(store, "two-s2", "two", "t", 2)
    assert resolve_one_run(store, "c-ttt0").name == "c-ttt0-s1337"  # what golf eval and golf show take
    assert resolve_one_run(store, "two-s2").name == "two-s2"
    with pytest.raises(GolfError, match=r"'two' is experiment two of 2 runs \(two-s1, two-s2\); name one of them"):
        resolve_one_run(store, "two")
    code, out, _ = invoke("show", "c-ttt0", "--format", "json", "--db", str(db))
    assert code == 0 and json.loads(out)["name"] == "c-ttt0-s1337"


def test_run_or_group_reference_resolves_runs_first(db: Path) -> None:
    """The one resolver behind show, eval and rm: a run (by id, prefix or name), else the group it names."""
    from golf.analysis.groups import Group, resolve_run_or_group
    from golf.store import RunNotFound

    store = Store(db)
    add(store, "lone-s1", "solo", "s", 0)
    add(store, "pair-s1", "pair", "p", 1)
    add(store, "pair-s2", "pair", "p", 2)
    pair_s1 = resolve_run_or_group(store, "pair-s1")
    assert isinstance(pair_s1, Run) and pair_s1.experiment == "pair"
    by_prefix = resolve_run_or_group(store, pair_s1.id[:6])
    assert isinstance(by_prefix, Run) and by_prefix.id == pair_s1.id
    solo = resolve_run_or_group(store, "solo")  # an experiment of one seed is that run
    assert isinstance(solo, Run) and solo.name == "lone-s1"
    pair = resolve_run_or_group(store, "pair")
    assert isinstance(pair, Group) and pair.kind == "experiment" and sorted(r["name"] for r in pair.runs) == [
        "pair-s1", "pair-s2"]
    with pytest.raises(RunNotFound, match=r"^no run with id or name 'pair-s'; similar: pair-s1, pair-s2$"):
        resolve_run_or_group(store, "pair-s")
