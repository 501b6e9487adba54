"""Which runs a listing shows: `--tag`, `--exclude-tag`, `--spec`, `--status`, one meaning for ls and leaderboard."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_HAS_TAG = "EXISTS (SELECT 1 FROM json_each(run.tags) WHERE json_each.value = ?)"


@dataclass(frozen=True)
class RunFilter:
    tags: Sequence[str] = field(default_factory=tuple)  # every one of these
    exclude_tags: Sequence[str] = field(default_factory=tuple)  # none of these
    specs: Sequence[str] = field(default_factory=tuple)  # spec or experiment name is one of these
    statuses: Sequence[str] = field(default_factory=tuple)

    @property
    def active(self) -> bool:
        return bool(self.tags or self.exclude_tags or self.specs or self.statuses)

    def sql(self, has_experiment: bool = True) -> tuple[str, list[Any]]:
        """A WHERE clause on the `run` table, and its parameters (`has_experiment`: an older store may lack it)."""
        where, params = ["1"], []
        for tag in self.tags:
            where.append(_HAS_TAG)
            params.append(tag)
        for tag in self.exclude_tags:
            where.append(f"NOT {_HAS_TAG}")
            params.append(tag)
        if self.specs:
            marks = ",".join("?" * len(self.specs))
            if has_experiment:
                where.append(f"(spec_name IN ({marks}) OR experiment IN ({marks}))")
                params += [*self.specs, *self.specs]
            else:
                where.append(f"spec_name IN ({marks})")
                params += list(self.specs)
        if self.statuses:
            where.append(f"status IN ({','.join('?' * len(self.statuses))})")
            params += list(self.statuses)
        return " AND ".join(where), params

    def matches(self, run: Any) -> bool:
        get = run.get if isinstance(run, Mapping) else lambda k: getattr(run, k, None)
        tags = set(get("tags") or [])
        return (all(t in tags for t in self.tags) and not any(t in tags for t in self.exclude_tags)
                and (not self.specs or get("spec_name") in self.specs or get("experiment") in self.specs)
                and (not self.statuses or get("status") in self.statuses))
