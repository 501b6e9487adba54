"""`golf rm`: which runs a set of references names (validated before anything is deleted), then deleting them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golf.errors import GolfError


@dataclass
class Removal:
    runs: list[dict[str, Any]]
    folders: dict[str, Path] = field(default_factory=dict)  # run id -> its folder (--files)


@dataclass
class Removed:
    rows: int = 0
    folders: int = 0
    problems: list[str] = field(default_factory=list)


def plan_removal(refs: Sequence[str], db: str | os.PathLike[str] | None, with_files: bool = False) -> Removal:
    """Every run the references name: a run by id/prefix/name, else every run of the experiment/group/spec."""
    from golf.analysis.groups import Group, resolve_run_or_group
    from golf.store import Store

    store = Store(db, readonly=True)
    chosen: dict[str, dict[str, Any]] = {}
    for ref in refs:
        named = resolve_run_or_group(store, ref)
        if isinstance(named, Group):
            found = [dict(r) for r in named.runs]
        else:
            found = store.records("id = ?", (named.id,))
        for record in found:
            chosen.setdefault(record["id"], record)
    running = [r["name"] for r in chosen.values() if r.get("status") == "running"]
    if running:
        raise GolfError(f"{', '.join(running)}: still running; stop it first (a running run is never removed)")
    removal = Removal(runs=sorted(chosen.values(), key=lambda r: str(r.get("started_at"))))
    if with_files:
        for run in removal.runs:
            folder = Path(run["run_dir"]) if run.get("run_dir") else None
            # only golf's own layout (runs/<id>/): never a folder a run merely pointed at (an ingested record)
            if folder is not None and folder.name == run["id"] and folder.is_dir() and run.get("source") == "golf":
                removal.folders[run["id"]] = folder
    return removal


def remove(removal: Removal, db: str | os.PathLike[str] | None) -> Removed:
    from golf.store import Store

    store = Store(db)
    done = Removed()
    for run in removal.runs:
        store.delete_run(run["id"])
        done.rows += 1
        folder = removal.folders.get(run["id"])
        if folder is None:
            continue
        try:
            shutil.rmtree(folder)
            done.folders += 1
        except OSError as exc:
            done.problems.append(f"{folder}: not deleted ({exc.strerror}); its row is gone")
    return done
