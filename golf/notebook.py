"""The notebook API: the run store as pandas DataFrames (`golf.runs()`, `golf.steps(...)`).

pandas is imported inside the functions, so `import golf` and `golf --help` stay fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os

    import pandas as pd

KNOB_PREFIX = "knob."  # a knob's column: knob.NUM_LAYERS (the run's config, typed for the bundled trainer's knobs)


def runs(db: str | os.PathLike[str] | None = None, **filters: Any) -> pd.DataFrame:
    """One row per run, newest first: every field of the store (stages, sizes, times, group_hash, provenance), each
    knob of the run's config as a `knob.<NAME>` column (ints, floats, bools, tuples for the bundled trainer's knobs;
    text for a community trainer's env), and each key of a dict field as `<field>.<key>` (bytes_breakdown.mlp).

    `filters` keep the rows whose column equals the value (any of them, for a list, tuple or set); a knob is named
    with or without its prefix: `golf.runs(status="completed", NUM_LAYERS=11)`."""
    import pandas as pd

    from golf.store import Store, run_to_dict

    store = Store(db, create=False)
    frame = pd.DataFrame([_flat(run_to_dict(run)) for run in store.list_runs()])
    return _filtered(frame, filters)


def steps(run_or_group: str, db: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The curves of one run (an id, unique id prefix or name) or of a group (`group:<hash>`, a group_hash, or a
    spec name: every run launched from it): one row per logged step, with run_id, name and seed columns."""
    import pandas as pd

    from golf.store import Step, Store

    store = Store(db, create=False)
    chosen = _runs_of(store, run_or_group)
    by_run = store.steps_for([run.id for run in chosen])
    fields = list(Step.model_fields)
    rows = [{"run_id": run.id, "name": run.name, "seed": run.seed, **{f: getattr(s, f) for f in fields}}
            for run in chosen for s in by_run.get(run.id, [])]
    columns = ["run_id", "name", "seed", *[f for f in fields if f != "run_id"]]
    return pd.DataFrame(rows, columns=columns)


def _flat(row: Mapping[str, Any]) -> dict[str, Any]:
    from golf.trainer.hparams import KNOBS_BY_NAME, KnobError

    out: dict[str, Any] = {}
    for key, value in row.items():
        if key == "config":
            for name, text in (value or {}).items():
                knob = KNOBS_BY_NAME.get(name)
                try:
                    out[KNOB_PREFIX + name] = knob.parse(text) if knob is not None else text
                except KnobError:  # a value an older trainer accepted: keep its text
                    out[KNOB_PREFIX + name] = text
        elif isinstance(value, dict) and key != "spec":
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _filtered(frame: pd.DataFrame, filters: Mapping[str, Any]) -> pd.DataFrame:
    from golf.errors import GolfError

    for key, wanted in filters.items():
        column = key if key in frame.columns else KNOB_PREFIX + key
        if column not in frame.columns:
            if frame.empty:
                return frame
            raise GolfError(f"golf.runs({key}=...): no column {key!r}; columns are the store's fields and "
                            f"{KNOB_PREFIX}<KNOB>")
        values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        frame = frame[frame[column].isin(values)]
    return frame.reset_index(drop=True)


def _runs_of(store: Any, ref: str) -> list[Any]:
    """A group's runs for `group:<hash>`; else the run `ref` names; else the runs of that group_hash or spec."""
    from golf.errors import GolfError
    from golf.store import RunNotFound

    if ref.startswith("group:"):
        found = list(store.runs_where(group_hash=ref.removeprefix("group:")))
    else:
        try:
            return [store.resolve_run(ref)]
        except RunNotFound:
            found = list(store.runs_where(group_hash=ref)) or list(store.runs_where(spec_name=ref))
    if not found:
        raise GolfError(f"golf.steps({ref!r}): no run, group or spec of that name")
    return found
