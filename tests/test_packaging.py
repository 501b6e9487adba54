"""pyproject.toml: every declared dependency has a job in golf, py.typed ships, the version is written once."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import golf

REPO = Path(__file__).resolve().parent.parent
IMPORT_NAME = {"pyyaml": "yaml", "huggingface_hub": "huggingface_hub"}  # distribution -> module, where they differ

tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")


def _project() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_declared_dependency_is_imported_by_golf() -> None:
    sources = "\n".join(p.read_text() for d in ("golf", "golf_cli") for p in (REPO / d).rglob("*.py"))
    unused = []
    for requirement in _project()["project"]["dependencies"]:
        dist = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()  # type: ignore[union-attr]
        module = IMPORT_NAME.get(dist, dist.replace("-", "_"))
        if not re.search(rf"^\s*(import|from) {module}\b", sources, re.MULTILINE):
            unused.append(dist)
    assert unused == []


def test_py_typed_ships_and_the_version_has_one_source() -> None:
    project = _project()
    assert (REPO / "golf" / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["golf"]
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    module, _, name = attr.rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name) == golf.__version__
    written = [p for p in (REPO / "golf").rglob("*.py") if re.search(r'^\w*VERSION\w* = "\d', p.read_text(), re.M)]
    assert [p.relative_to(REPO).as_posix() for p in written] == ["golf/trainer/source.py"]


def _golf_imports(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "golf"}


@pytest.mark.parametrize("room, forbidden", [
    ("golf/trainer", ("golf.export", "golf.launch", "golf.analysis", "golf.store", "golf.spec", "golf.errors")),
    ("golf/analysis", ("golf.launch",)),  # rows in, rows out: starting runs is golf.launch.ablate's
])
def test_rooms_import_no_room_above_them(room: str, forbidden: tuple[str, ...]) -> None:
    """Even inside functions: the trainer reaches only its own package; analysis never starts runs."""
    bad = [f"{path.relative_to(REPO)}: {name}" for path in sorted((REPO / room).glob("*.py"))
           for name in sorted(_golf_imports(path)) if name.startswith(forbidden)]
    assert bad == []
