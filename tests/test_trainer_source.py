"""The trainer's code identity: comments and docstrings do not change code_hash (nor any group_hash); code does."""

from __future__ import annotations

from pathlib import Path

import pytest

from golf.launch.plan import group_hash_of
from golf.trainer import source


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_comments_docstrings_and_blank_lines_leave_the_code_hash_and_group_hash(trainer_copy: Path) -> None:
    before = source.code_hash()
    model = trainer_copy / "model.py"
    _edit(model, "from __future__ import annotations\n",
          "from __future__ import annotations  # an edited comment ×² #\n# a new comment line\n\n\n")
    _edit(model, '"""', '"""Edited.\n\nThe module docstring, longer. ')
    after = source.code_hash()
    assert after == before
    assert group_hash_of("c" * 64, after) == group_hash_of("c" * 64, before)


@pytest.mark.parametrize("line", [
    "EXTRA = 1\n",  # a new statement
    'EXTRA = "#x"\n',  # a string literal holding a hash sign is code, not a comment
])
def test_a_code_change_changes_the_code_hash(trainer_copy: Path, line: str) -> None:
    model = trainer_copy / "model.py"
    model.write_text(model.read_text(encoding="utf-8") + '\nEXTRA = "#"\n', encoding="utf-8")
    before = source.code_hash()
    model.write_text(model.read_text(encoding="utf-8").replace('EXTRA = "#"\n', line), encoding="utf-8")
    assert source.code_hash() != before


def test_code_text_drops_only_comments_and_docstrings() -> None:
    text = ('"""Module doc."""\nimport os  # why\n\n\ndef f(x):\n    """Doc ×\n    more."""\n'
            '    s = "#kept"  # dropped ²\n    return x\n')
    assert source.code_text(text) == 'import os\ndef f(x):\n    s = "#kept"\n    return x\n'
