"""RUN_OR_GROUP resolution and seed-group aggregation."""

from __future__ import annotations

import statistics
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from golf.analysis.groups import resolve_ref
from golf.errors import GolfError
from golf.store import Run, Store

_ids = count()


def add_run(store: Store, **fields: Any) -> Run:
    n = next(_ids)
    defaults: dict[str, Any] = {"id": f"r{n:04d}aa", "name": f"run-{n}", "status": "completed"}
    return store.create_run(Run(**{**defaults, **fields}))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "runs.db")
    for seed, bpb, loss in ((1, 1.120, 1.900), (2, 1.122, 1.903), (3, 1.121, 1.902)):
        add_run(s, id=f"base{seed}", name=f"base-s{seed}", spec_name="base", group_hash="aaaa1111" + "0" * 8,
                seed=seed, final_bpb=bpb, final_loss=loss, sliding_bpb=bpb + 0.01, post_quant_bpb=bpb + 0.02,
                config={"NUM_LAYERS": "9", "SEED": str(seed), "RUN_ID": f"base{seed}", "DATA_PATH": f"/d{seed}"})
    # a failed run in the base group: never part of its metrics
    add_run(s, id="base9", name="base-s9", spec_name="base", group_hash="aaaa1111" + "0" * 8, seed=9,
            status="failed", final_bpb=0.5, config={"NUM_LAYERS": "9", "SEED": "9"})
    for seed, bpb in ((1, 1.118), (2, 1.117)):
        add_run(s, id=f"xsa{seed}", name=f"xsa-s{seed}", spec_name="xsa", group_hash="bbbb2222" + "0" * 8,
                seed=seed, final_bpb=bpb, final_loss=bpb * 1.69, config={"NUM_LAYERS": "11", "SEED": str(seed)})
    # one spec name, two groups (the spec was edited between runs)
    add_run(s, id="chg1", name="chg-s1", spec_name="changed", group_hash="cccc3333" + "0" * 8, seed=1, final_bpb=1.2)
    add_run(s, id="chg2", name="chg-s1-2", spec_name="changed", group_hash="cccc4444" + "0" * 8, seed=1,
            final_bpb=1.3)
    for seed, bpb in ((42, 1.0808), (314, 1.0810)):
        add_run(s, id=f"rec{seed}", name=f"2026-04-09_X-s{seed}", source="ingested", record_name="2026-04-09_X",
                group_hash="dddd5555" + "0" * 8, seed=seed, final_bpb=bpb)
    return s


def test_run_id_and_run_name_name_one_run(store: Store) -> None:
    for ref in ("base2", "base-s2", "run:base2"):
        group = resolve_ref(store, ref)
        assert group.kind == "run" and group.run_ids == ["base2"] and group.label == "base-s2"


def test_spec_name_is_its_group_over_completed_runs(store: Store) -> None:
    group = resolve_ref(store, "base")
    assert group.kind == "spec" and group.label == "base" and group.group_hash == "aaaa1111" + "0" * 8
    assert len(group.runs) == 4  # the failed run belongs to the group...
    assert sorted(group.run_ids) == ["base1", "base2", "base3"]  # ...but not to its metrics
    stat = group.stat("final_bpb")
    assert stat.n == 3
    assert stat.mean == pytest.approx(statistics.fmean([1.120, 1.122, 1.121]))
    assert stat.std == pytest.approx(statistics.stdev([1.120, 1.122, 1.121]))
    # pre-TTT: the sliding-window score where there is one
    assert group.stat("pre_ttt_bpb").mean == pytest.approx(1.131)


def test_group_hash_prefix_and_record_name(store: Store) -> None:
    group = resolve_ref(store, "bbbb22")
    assert group.kind == "group" and group.label == "xsa" and group.n == 2
    record = resolve_ref(store, "2026-04-09_X")
    assert record.kind == "record" and record.n == 2 and record.record_name == "2026-04-09_X"
    assert record.stat("final_bpb").mean == pytest.approx(1.0809)


def test_a_spec_spanning_two_groups_is_ambiguous_and_lists_the_hashes(store: Store) -> None:
    with pytest.raises(GolfError) as err:
        resolve_ref(store, "changed")
    message = str(err.value)
    assert "ambiguous" in message and "cccc3333" in message and "cccc4444" in message
    assert "\n" not in message
    assert resolve_ref(store, "cccc4444").run_ids == ["chg2"]


def test_unknown_and_short_references_fail_with_suggestions(store: Store) -> None:
    with pytest.raises(GolfError, match=r"no run, experiment, group, spec or record named 'bsae'.*did you mean base"):
        resolve_ref(store, "bsae")
    # run names are matched exactly (ids and group hashes by prefix): a name prefix is unknown, with suggestions
    with pytest.raises(GolfError, match=r"named 'base-s'; did you mean .*base-s1"):
        resolve_ref(store, "base-s")
    with pytest.raises(GolfError, match="at least 4 characters"):
        resolve_ref(store, "aaa")


def test_config_drops_seed_and_paths_and_marks_disagreement(store: Store) -> None:
    group = resolve_ref(store, "base")
    assert group.config() == {"NUM_LAYERS": "9"}
    assert "SEED" in group.config(identity_only=False)
    assert group.config(identity_only=False)["SEED"] == "(varies)"


def test_reader_reuses_completed_runs_only(store: Store) -> None:
    reader = Store(store.path, readonly=True)
    assert reader.completed_run_id("aaaa1111" + "0" * 8, 2) == "base2"
    assert reader.completed_run_id("aaaa1111" + "0" * 8, 9) is None  # failed
    assert reader.completed_run_id("aaaa1111" + "0" * 8, 77) is None


def test_missing_store_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(GolfError, match="no run store here"):
        Store(tmp_path / "nope.db", readonly=True)
