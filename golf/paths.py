"""Where the run store lives. Standard library only: read-only commands resolve it without importing sqlmodel."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = "runs.db"


def resolve_db_path(cli_value: str | os.PathLike[str] | None = None) -> Path:
    """--db PATH, else $GOLF_DB, else ./runs.db."""
    return Path(cli_value or os.environ.get("GOLF_DB") or DEFAULT_DB)
