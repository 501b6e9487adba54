"""The run store: runs.db (SQLite via sqlmodel)."""

from golf.store.db import RunNotFound, Store, resolve_db_path, run_to_dict
from golf.store.models import METRIC_FIELDS, STATUSES, Run, Step

__all__ = ["METRIC_FIELDS", "STATUSES", "Run", "RunNotFound", "Step", "Store", "resolve_db_path", "run_to_dict"]
