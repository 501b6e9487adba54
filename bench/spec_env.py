"""Print a spec's knobs as `export KEY=VALUE` lines (follows `extends`), for shell scripts on a GPU box.

    eval "$(python bench/spec_env.py specs/pr549.yaml)"
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml


def knobs(path: Path) -> dict[str, object]:
    spec = yaml.safe_load(path.read_text())
    env: dict[str, object] = {}
    if spec.get("extends"):
        env.update(knobs(path.parent / spec["extends"]))
    env.update(spec.get("env") or {})
    return env


if __name__ == "__main__":
    for key, value in knobs(Path(sys.argv[1])).items():
        print(f"export {key}={shlex.quote(str(value))}")
