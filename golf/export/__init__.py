"""Record folders for the challenge: `golf export-record` (`record`), shipping the one-file trainer that
golf.trainer.onefile builds (re-exported here as build_trainer_file). Kept import-light."""

from __future__ import annotations

from typing import Any

__all__ = ["build_trainer_file", "export_record"]


def __getattr__(name: str) -> Any:
    if name == "build_trainer_file":
        from golf.trainer.onefile import build_trainer_file

        return build_trainer_file
    if name == "export_record":
        from golf.export.record import export_record

        return export_record
    raise AttributeError(name)
