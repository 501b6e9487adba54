"""Print a spec's knobs as `export KEY=VALUE` lines (follows `extends`), for shell scripts on a GPU box.

    eval "$(python bench/spec_env.py specs/pr549.yaml)"

What it prints is evaluated by a shell, so a key that is not an environment-variable name (`A;rm -rf ~`) is
refused (exit 2, nothing printed) and every value is quoted.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import yaml

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SpecEnvError(ValueError):
    pass


def knobs(path: Path) -> dict[str, object]:
    spec = yaml.safe_load(path.read_text()) or {}
    env: dict[str, object] = {}
    if spec.get("extends"):
        env.update(knobs(path.parent / spec["extends"]))
    env.update(spec.get("env") or {})
    return env


def export_lines(path: Path) -> list[str]:
    env = knobs(path)
    for key in env:
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise SpecEnvError(f"{path}: env key {key!r} is not an environment variable name "
                               "(letters, digits, _; not starting with a digit)")
    return [f"export {key}={shlex.quote(str(value))}" for key, value in env.items()]


if __name__ == "__main__":
    try:
        print("\n".join(export_lines(Path(sys.argv[1]))))
    except SpecEnvError as exc:
        print(f"spec_env: {exc}", file=sys.stderr)
        sys.exit(2)
