"""The trainer's own code: what counts as code bytes and what identifies the trainer version.

Identity (code_hash) ignores comments, docstrings and blank lines, so that editing a comment keeps every group
and lets `ablate` reuse its cells; code bytes are always the exact bytes of the file a record ships.
"""

from __future__ import annotations

import ast
import hashlib
import io
import tokenize
from pathlib import Path

GOLF_VERSION = "0.1.0"  # golf's version, the one place it is written: pyproject.toml reads it, golf.__version__ is it

# Set to True by `golf export-record` in the one-file train_gpt.py, whose own bytes are the code bytes.
BUNDLED = False


def trainer_files() -> list[Path]:
    """The trainer package's modules, in name order (the code_hash order)."""
    return sorted(Path(__file__).resolve().parent.glob("*.py"))


def code_text(text: str) -> str:
    """Python source without its comments, docstrings, trailing spaces and blank lines: what the code does.

    Comments come from tokenize, docstrings from ast (the first string statement of a module, class or function);
    both are stable across Python versions, unlike a dump of the syntax tree."""
    lines = text.splitlines()
    spans = [(tok.start, tok.end) for tok in tokenize.generate_tokens(io.StringIO(text).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                end_line = first.end_lineno or first.lineno
                spans.append(((first.lineno, _char_col(lines[first.lineno - 1], first.col_offset)),
                              (end_line, _char_col(lines[end_line - 1], first.end_col_offset or 0))))
    for (row0, col0), (row1, col1) in sorted(spans, reverse=True):
        lines[row0 - 1:row1] = [lines[row0 - 1][:col0] + lines[row1 - 1][col1:]]
    return "\n".join(line.rstrip() for line in lines if line.strip()) + "\n"


def _char_col(line: str, byte_col: int) -> int:
    """ast counts columns in UTF-8 bytes, tokenize and str slicing in characters."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def code_hash() -> str:
    """sha256 of the trainer's code (code_text: comments and docstrings ignored): the package's modules, or the
    shipped one-file trainer itself."""
    digest = hashlib.sha256()
    if BUNDLED:
        import __main__

        digest.update(code_text(Path(getattr(__main__, "__file__", __file__)).read_text(encoding="utf-8")).encode())
        return digest.hexdigest()
    for path in trainer_files():
        digest.update(path.name.encode() + b"\0" + code_text(path.read_text(encoding="utf-8")).encode() + b"\0")
    return digest.hexdigest()
