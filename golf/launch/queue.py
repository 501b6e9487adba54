"""The sweep queue in runs.db (tables `sweep` and `cell` of golf.store.models): written whole before the first cell
launches, updated by the scheduler as cells start and end, read by `golf queue` and `golf sweep resume`.

Every state change of a cell is a conditional update (`WHERE state = <what it was>`), so the scheduler and a
`golf queue cancel` from another terminal never overwrite each other: a cancelled cell stays cancelled.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from golf.errors import GolfError
from golf.store import Store
from golf.store.db import STALE_AFTER_S
from golf.store.models import Cell, Sweep, now

# a cell's end state from its run row's status (golf run records it; the cell only reads it)
CELL_STATE_OF_RUN = {"completed": "completed", "stalled": "stalled", "failed": "failed", "diverged": "failed",
                     "interrupted": "failed"}
UNFINISHED = ("queued", "running")
RETRYABLE = ("failed", "stalled", "cancelled")  # rerun by `golf sweep resume --retry-failed`
_SWEEP = Sweep.__table__  # type: ignore[attr-defined]
_CELL = Cell.__table__  # type: ignore[attr-defined]


def new_sweep_id() -> str:
    return uuid.uuid4().hex[:8]


def cell_id(sweep_id: str, position: int) -> str:
    return f"{sweep_id}.{position}"


def create_sweep(store: Store, sweep: Mapping[str, Any], cells: Sequence[Mapping[str, Any]]) -> None:
    """The sweep and every one of its cells, `queued`, in one transaction (all or nothing)."""
    from sqlalchemy import insert

    row = Sweep(**{**sweep, "pid": os.getpid(), "host": socket.gethostname(), "heartbeat_at": now()})
    cell_rows = [Cell(**cell).model_dump() for cell in cells]
    with store.transaction() as conn:
        conn.execute(insert(_SWEEP), [row.model_dump()])
        if cell_rows:
            conn.execute(insert(_CELL), cell_rows)


def sweeps(store: Store) -> list[dict[str, Any]]:
    """Every sweep, oldest first."""
    return store.table_records("sweep", order="created_at, id")


def get_sweep(store: Store, sweep_id: str) -> dict[str, Any]:
    found = store.table_records("sweep", "id = ?", (sweep_id,))
    if not found:
        raise GolfError(f"no sweep {sweep_id!r} (`golf queue` lists them)")
    return found[0]


def cells_of(store: Store, sweep_id: str) -> list[dict[str, Any]]:
    """A sweep's cells in queue order."""
    return store.table_records("cell", "sweep_id = ?", (sweep_id,), order="position")


def update_sweep(store: Store, sweep_id: str, **fields: Any) -> None:
    from sqlalchemy import update

    with store.transaction() as conn:
        conn.execute(update(_SWEEP).where(_SWEEP.c.id == sweep_id).values(**fields))


def update_cell(store: Store, cell: str, was: str | Iterable[str] | None = None, **fields: Any) -> bool:
    """Set fields of a cell (only while its state is `was`, when given); whether the row changed."""
    from sqlalchemy import update

    query = update(_CELL).where(_CELL.c.id == cell)
    if was is not None:
        states = [was] if isinstance(was, str) else list(was)
        query = query.where(_CELL.c.state.in_(states))
    with store.transaction() as conn:
        return conn.execute(query.values(**fields)).rowcount > 0


def run_of_cell(store: Store, cell: str) -> dict[str, Any] | None:
    """The newest run a cell launched (golf run --cell records it)."""
    if "cell_id" not in store.columns["run"]:
        return None
    found = store.records("cell_id = ?", (cell,), order="started_at DESC, id DESC", limit=1)
    return found[0] if found else None


def sweep_alive(sweep: Mapping[str, Any], at: datetime | None = None) -> bool:
    """Whether a golf process is scheduling the sweep now: its pid on this host, else a recent heartbeat."""
    if sweep.get("state") != "running":
        return False
    pid = sweep.get("pid")
    if sweep.get("host") == socket.gethostname() and pid is not None:
        if pid == os.getpid():
            return False  # this process: resuming what it scheduled itself (tests), never a live other golf
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    beat = sweep.get("heartbeat_at")
    return beat is not None and ((at or now()) - beat).total_seconds() < STALE_AFTER_S


def resolve_ref(store: Store, ref: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(sweep, cell or None) for `golf queue cancel REF`: a sweep id or id prefix, a cell id (`<sweep>.<n>`)."""
    sweep_ref, dot, position = ref.partition(".")
    found = store.table_records("sweep", "id >= ? AND id < ?", (sweep_ref, sweep_ref + "\U0010ffff"))
    if not sweep_ref or not found:
        raise GolfError(f"no sweep or cell {ref!r} (`golf queue` lists sweeps, `golf queue SWEEP` their cells)")
    if len(found) > 1:
        ids = ", ".join(s["id"] for s in found[:8])
        raise GolfError(f"sweep {sweep_ref!r} is ambiguous: {ids}")
    sweep = found[0]
    if not dot:
        return sweep, None
    cell = next((c for c in cells_of(store, sweep["id"]) if c["id"] == cell_id(sweep["id"], _int(position))), None)
    if cell is None:
        raise GolfError(f"no cell {ref!r}: sweep {sweep['id']} has cells {sweep['id']}.0 to "
                        f"{sweep['id']}.{len(cells_of(store, sweep['id'])) - 1}")
    return sweep, cell


def cancel(store: Store, ref: str) -> list[str]:
    """Cancel a sweep (its queued and running cells) or one cell; the ids of the cells cancelled. The sweep's
    scheduler stops the running ones; with none alive (golf died, the cell lived on) they are stopped here."""
    from golf.launch.executor import executor_named

    sweep, only = resolve_ref(store, ref)
    targets = [only] if only is not None else cells_of(store, sweep["id"])
    targets = [c for c in targets if c["state"] in UNFINISHED]
    alive = sweep_alive(sweep)
    executors: dict[str, Any] = {}
    done = []
    for cell in targets:
        if not update_cell(store, cell["id"], was=cell["state"], state="cancelled", ended_at=now()):
            continue
        done.append(cell["id"])
        if cell["state"] == "running" and not alive and cell.get("job_id"):
            name = cell.get("executor") or "local"
            if name not in executors:
                executors[name] = executor_named(name, **_executor_options(sweep))
            handle = executors[name].reattach(cell["job_id"])
            if handle is not None:
                handle.cancel()
    if only is None:
        update_sweep(store, sweep["id"], state="cancelled", ended_at=now())
    return done


def _executor_options(sweep: Mapping[str, Any]) -> dict[str, Any]:
    """What the sweep's executor was built with (its options, and the folder its cells run in)."""
    options = dict((sweep.get("options") or {}).get("executor_options") or {})
    options.setdefault("cwd", sweep.get("cwd"))
    return options


def executor_of(sweep: Mapping[str, Any]) -> Any:
    from golf.launch.executor import executor_named

    return executor_named(sweep.get("executor") or "local", **_executor_options(sweep))


def counts(cells: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Cells per state, in the states' order."""
    from golf.store.models import CELL_STATES

    out = dict.fromkeys(CELL_STATES, 0)
    for cell in cells:
        out[cell["state"]] = out.get(cell["state"], 0) + 1
    return out


def _int(text: str) -> int:
    return int(text) if text.isdigit() else -1
