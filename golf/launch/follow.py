"""A run's train.log printed, or followed as it grows (`golf logs -f`) from another terminal than the run's golf.

Following reads the file, never the trainer's pipe, and asks the store (read-only) whether the run is still
`running`: once it is not (finished, stopped, or its golf died: a reader sees a row without a fresh heartbeat as
failed), what is left in the file is printed and the follow ends. The runner writes every line before it updates
the row, so the lines read after the row changed are the last ones.
"""

from __future__ import annotations

import codecs
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from golf.errors import GolfError

POLL_S = 0.2  # how often a quiet file is looked at again, and the run's row with it
CHUNK = 1 << 16


def log_path_of(store: Any, run: Any) -> Path | None:
    """Where the run's log is, or will be: the recorded path (a running run's file may not exist yet), else
    runs/<id>/train.log beside the store."""
    found = store.log_file({"id": run.id, "log_path": run.log_path})
    if found is not None:
        return found
    return Path(run.log_path) if run.log_path else None


def last_lines(path: Path, n: int) -> tuple[str, int]:
    """The file's last `n` lines (all of them for a shorter file) and the byte offset where the file ended."""
    with open(path, "rb") as f:
        tail: deque[bytes] = deque(f, maxlen=n) if n > 0 else deque()
        end = f.tell()
    return b"".join(tail).decode("utf-8", errors="replace"), end


def follow(path: Path, still_running: Callable[[], bool], write: Callable[[str], None], offset: int = 0,
           poll_s: float = POLL_S, sleep: Callable[[float], None] = time.sleep) -> None:
    """Write the file from `offset` on as it grows, until `still_running()` is false and the file is drained.

    A file that does not exist yet is waited for while the run is running (the row is created before the log).
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    handle = None
    try:
        while True:
            if handle is None and path.exists():
                handle = open(path, "rb")  # noqa: SIM115 - closed in the finally below
                handle.seek(offset)
            if handle is not None:
                data = handle.read(CHUNK)
                if data:
                    write(decoder.decode(data))
                    continue  # drain before looking at the row again
            if not still_running():
                break
            sleep(poll_s)
        if handle is not None:  # the row changed after the last read: the runner's final lines come before it
            while data := handle.read(CHUNK):
                write(decoder.decode(data))
        rest = decoder.decode(b"", final=True)
        if rest:
            write(rest)
    finally:
        if handle is not None:
            handle.close()


def check_lines(n: int | None) -> None:
    if n is not None and n < 0:
        raise GolfError(f"-n {n}: expected a number of lines >= 0")
