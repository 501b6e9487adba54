"""Record folders for the challenge: the one-file trainer (`bundle`) and `golf export-record` (`record`).

Kept import-light: the trainer imports golf.export.bundle once per run to count its code bytes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_trainer_file", "export_record"]


def __getattr__(name: str) -> Any:
    if name == "build_trainer_file":
        from golf.export.bundle import build_trainer_file

        return build_trainer_file
    if name == "export_record":
        from golf.export.record import export_record

        return export_record
    raise AttributeError(name)
