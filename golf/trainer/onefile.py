"""The one-file `train_gpt.py`: golf/trainer/*.py inlined into one self-contained script.

The challenge counts the bytes of ONE train_gpt.py that must run from inside the record folder, so the bundled
trainer package is flattened: modules in dependency order (from their relative imports), the relative-import lines
removed (`from . import m` becomes plain names: `m.f` → `f`), `from __future__ import annotations` once at the top,
stdlib and third-party imports kept where they are, `BAKED_DEFAULTS` filled with the run's knobs (the env still
overrides them), `BUNDLED = True`, and the package's `__main__` entry point as the file's main guard. Two modules
binding one top-level name differently would silently shadow each other in one namespace: that fails loudly.

Packed (`pack="lzma"|"brotli"`), the file is a self-extracting wrapper around the same text, as the challenge's
later records ship it: `import lzma as L,base64 as B` + `exec(L.decompress(B.b85decode("...")))`. exec at module
level runs in the wrapper's globals, so `__name__` and `__file__` stay the shipped file's (its size is the code).

The output depends only on the trainer sources, `pack` and the baked knobs, and is deterministic: golf builds it
when it plans a run (kept as runs/<id>/train_gpt.py, which export-record ships), and the trainer builds it once per
run (codebytes.py) to log the code bytes a record of that run would ship. This module lives in the trainer package
so that both can use it without an import cycle, but is not part of the file it writes.
"""

from __future__ import annotations

import ast
import base64
import heapq
import io
import json
import re
import tokenize
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from . import source as trainer_source
from .hparams import KNOBS, KNOBS_BY_NAME, Hyperparameters, KnobError

PACKS = ("none", "lzma", "brotli")
PACKAGE = "golf.trainer"
ENTRY_FILE = "__main__.py"  # the package's entry point: becomes the file's main guard
SKIPPED_FILES = ("__init__.py", ENTRY_FILE, Path(__file__).name)  # the builder is not part of what it builds
NOT_BAKED = ("RUN_ID", "EVAL_ONLY_PATH")  # a fresh uuid per run; a re-score's input: never a record's knobs
CHALLENGE_DATASET = "./data/datasets/fineweb10B_sp{vocab}"
CHALLENGE_TOKENIZER = "./data/tokenizers/fineweb_{vocab}_bpe.model"
_CHALLENGE_DATASET_NAME = re.compile(r"fineweb10B_[A-Za-z0-9_]+")
_CHALLENGE_TOKENIZER_NAME = re.compile(r"fineweb_[A-Za-z0-9_]+\.(model|json)")
_LZMA_HEAD = "import lzma as L,base64 as B\nexec(L.decompress(B.b85decode(\"{}\")))\n"
_BROTLI_HEAD = "import brotli as R,base64 as B\nexec(R.decompress(B.b85decode(\"{}\")))\n"
_PACKED = re.compile(r'import (lzma|brotli) as \w,base64 as B\nexec\(\w\.decompress\(B\.b85decode\("([^"]*)"\)\)\)\n')


class BundleError(ValueError):
    """The trainer package cannot be flattened into one file (a clash, a cycle, an unsupported import); one line.
    golf's callers report it as a GolfError."""


# -- the package's modules ----------------------------------------------------------------------------------------

@dataclass
class Module:
    """One trainer module, parsed: what it imports from its siblings and which top-level names it binds."""

    name: str
    text: str
    tree: ast.Module
    deps: set[str] = field(default_factory=set)
    # top-level name -> what binds it: ("def", module) for a definition, ("import", target) for an import
    bindings: dict[str, tuple[str, str]] = field(default_factory=dict)
    sibling_aliases: dict[str, str] = field(default_factory=dict)  # `from . import m as a`: a -> m
    removed: list[tuple[int, int, list[str]]] = field(default_factory=list)  # (first line, last line, replacement)

    @property
    def filename(self) -> str:
        return f"{self.name}.py"


def trainer_dir() -> Path:
    return Path(trainer_source.__file__).resolve().parent


def load_modules(folder: Path | None = None) -> tuple[list[Module], tuple[str, str]]:
    """The package's modules (name order) and its entry point (module, function)."""
    folder = folder or trainer_dir()
    modules = []
    for path in sorted(folder.glob("*.py")):
        if path.name in SKIPPED_FILES:
            if path.name == "__init__.py" and path.read_text(encoding="utf-8").strip():
                raise BundleError(f"{path}: the bundler expects an empty __init__.py (its code would be lost)")
            continue
        text = path.read_text(encoding="utf-8")
        try:
            tree = ast.parse(text, filename=str(path))
        except SyntaxError as exc:
            raise BundleError(f"{path}:{exc.lineno}: {exc.msg}") from None
        modules.append(Module(name=path.stem, text=text, tree=tree))
    entry = _entry_point(folder / ENTRY_FILE)
    _analyse(modules)
    return modules, entry


def _entry_point(path: Path) -> tuple[str, str]:
    """(module, function) that the package's __main__.py runs: `from golf.trainer.<module> import <function>`."""
    if not path.is_file():
        raise BundleError(f"{path}: the trainer package has no entry point")
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + ".") and node.names:
            return node.module.removeprefix(PACKAGE + "."), node.names[0].name  # type: ignore[union-attr]
    raise BundleError(f"{path}: expected `from {PACKAGE}.<module> import <function>`")


def _analyse(modules: list[Module]) -> None:
    names = {m.name for m in modules}
    for module in modules:
        for node in module.tree.body:
            _top_level(module, node, names)
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ImportFrom) and node.level and node not in module.tree.body:
                raise BundleError(f"{module.filename}:{node.lineno}: relative import inside a block; the bundler "
                                  "only inlines top-level `from .x import y` lines")


def _top_level(module: Module, node: ast.stmt, siblings: set[str]) -> None:
    """Record what one top-level statement binds, and plan the removal of sibling and __future__ imports."""
    where = f"{module.filename}:{node.lineno}"
    if isinstance(node, ast.ImportFrom) and node.level:
        if node.level > 1:
            raise BundleError(f"{where}: import from outside the trainer package")
        replacement: list[str] = []
        if node.module is None:  # from . import finish [as f]
            for alias in node.names:
                if alias.name not in siblings:
                    raise BundleError(f"{where}: no trainer module {alias.name}")
                module.deps.add(alias.name)
                module.sibling_aliases[alias.asname or alias.name] = alias.name
        else:
            if node.module not in siblings:
                raise BundleError(f"{where}: no trainer module {node.module}")
            module.deps.add(node.module)
            for alias in node.names:
                if alias.name == "*":
                    raise BundleError(f"{where}: `import *` from a sibling cannot be bundled")
                if alias.asname and alias.asname != alias.name:
                    replacement.append(f"{alias.asname} = {alias.name}")
                    module.bindings[alias.asname] = ("def", module.name)
        module.removed.append((node.lineno, node.end_lineno or node.lineno, replacement))
        return
    if isinstance(node, ast.ImportFrom) and node.module == "__future__":
        module.removed.append((node.lineno, node.end_lineno or node.lineno, []))
        return
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        target_module = node.module if isinstance(node, ast.ImportFrom) else None
        if (target_module or "").split(".")[0] == "golf" or any(
                a.name.split(".")[0] == "golf" for a in node.names if isinstance(node, ast.Import)):
            raise BundleError(f"{where}: top-level import of golf; the shipped file cannot import golf")
        for alias in node.names:
            if isinstance(node, ast.Import):
                bound = alias.asname or alias.name.split(".")[0]
                target = alias.name if alias.asname else alias.name.split(".")[0]
            else:
                bound = alias.asname or alias.name
                target = _canonical_import(target_module or "", alias.name)
            module.bindings[bound] = ("import", target)
        return
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        module.bindings[node.name] = ("def", module.name)
        return
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
        targets = [node.target]
    elif isinstance(node, (ast.With, ast.AsyncWith)):
        targets = [item.optional_vars for item in node.items if item.optional_vars is not None]
    for target in targets:
        for name in ast.walk(target):
            if isinstance(name, ast.Name):
                module.bindings[name.id] = ("def", module.name)
    for block in ("body", "orelse", "finalbody"):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for child in getattr(node, block, []) or []:
                _top_level(module, child, siblings)
    for handler in getattr(node, "handlers", []) or []:
        if handler.name:
            module.bindings[handler.name] = ("def", module.name)
        for child in handler.body:
            _top_level(module, child, siblings)


def _canonical_import(module: str, name: str) -> str:
    """`module:name`, with typing's aliases of collections.abc (typing.Callable, ...) read as the abc itself:
    either binding serves the other's uses (annotations and subscripting), so they do not clash."""
    import collections.abc

    if module == "typing" and name in collections.abc.__all__:
        module = "collections.abc"
    return f"{module}:{name}"


def dependency_order(modules: list[Module]) -> list[Module]:
    """Modules after everything they import (Kahn's algorithm; ties by name, so the order is stable)."""
    by_name = {m.name: m for m in modules}
    waiting = {m.name: set(m.deps) for m in modules}
    users: dict[str, set[str]] = {m.name: set() for m in modules}
    for m in modules:
        for dep in m.deps:
            users[dep].add(m.name)
    ready = [name for name, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order: list[Module] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(by_name[name])
        for user in sorted(users[name]):
            waiting[user].discard(name)
            if not waiting[user]:
                heapq.heappush(ready, user)
    if len(order) != len(modules):
        cycle = sorted(name for name, deps in waiting.items() if deps)
        raise BundleError(f"trainer modules import each other in a cycle: {', '.join(cycle)}")
    return order


def check_clashes(modules: Iterable[Module]) -> None:
    """Fail when two modules bind one top-level name to different things (they would share one namespace)."""
    seen: dict[str, tuple[tuple[str, str], str]] = {}
    clashes = []
    for module in modules:
        for name, binding in sorted(module.bindings.items()):
            first = seen.get(name)
            if first is None:
                seen[name] = (binding, module.name)
            elif first[0] != binding or binding[0] == "def":
                clashes.append(f"{name} ({first[1]}.py, {module.name}.py)")
    if clashes:
        raise BundleError("trainer modules bind the same top-level names, which one file cannot hold: "
                          + "; ".join(clashes) + " — rename one of each (e.g. with a module prefix)")


def check_sibling_names(modules: Iterable[Module]) -> None:
    """Every `from .m import x` names something m defines at top level."""
    by_name = {m.name: m for m in modules}
    for module in by_name.values():
        for node in module.tree.body:
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                defined = by_name[node.module].bindings
                for alias in node.names:
                    if alias.name not in defined:
                        raise BundleError(f"{module.filename}:{node.lineno}: {node.module}.py defines no "
                                          f"top-level {alias.name}")


# -- rewriting ----------------------------------------------------------------------------------------------------

def _strip_sibling_attributes(module: Module, by_name: Mapping[str, Module]) -> str:
    """`finish.final_stages(...)` → `final_stages(...)` for `from . import finish` (one namespace now)."""
    if not module.sibling_aliases:
        return module.text
    tokens = list(tokenize.generate_tokens(io.StringIO(module.text).readline))
    cuts: list[tuple[int, int, int]] = []  # (row, start col, end col) to delete
    significant = [t for t in tokens if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT,
                                                       tokenize.INDENT, tokenize.DEDENT)]
    removed_lines = {line for first, last, _ in module.removed for line in range(first, last + 1)}
    for i, tok in enumerate(significant):
        if tok.type != tokenize.NAME or tok.string not in module.sibling_aliases or tok.start[0] in removed_lines:
            continue
        before = significant[i - 1] if i else None
        if before is not None and before.string == ".":
            continue  # `x.finish` is someone else's attribute
        dot = significant[i + 1] if i + 1 < len(significant) else None
        attr = significant[i + 2] if i + 2 < len(significant) else None
        if dot is None or dot.string != "." or attr is None or attr.type != tokenize.NAME:
            raise BundleError(f"{module.filename}:{tok.start[0]}: module {tok.string} is used other than as "
                              f"`{tok.string}.name`; the bundler cannot inline that")
        sibling = by_name[module.sibling_aliases[tok.string]]
        if attr.string not in sibling.bindings:
            raise BundleError(f"{module.filename}:{tok.start[0]}: {sibling.filename} defines no top-level "
                              f"{attr.string}")
        if dot.start[0] != tok.start[0]:
            raise BundleError(f"{module.filename}:{tok.start[0]}: `{tok.string}.` split across lines")
        cuts.append((tok.start[0], tok.start[1], dot.end[1]))
    lines = module.text.splitlines(keepends=True)
    for row, start, end in sorted(cuts, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:start] + line[end:]
    return "".join(lines)


def _replace_statement(module: Module, target: str, replacement: list[str]) -> None:
    """Plan the replacement of the top-level assignment to `target` (exactly one must exist)."""
    found = []
    for node in module.tree.body:
        names = []
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        if target in names:
            found.append(node)
    if len(found) != 1:
        raise BundleError(f"{module.filename}: expected one top-level assignment to {target}, found {len(found)}")
    node = found[0]
    module.removed.append((node.lineno, node.end_lineno or node.lineno, replacement))


def _module_body(module: Module, by_name: Mapping[str, Module]) -> str:
    lines = _strip_sibling_attributes(module, by_name).splitlines()
    for first, last, replacement in sorted(module.removed, reverse=True):
        lines[first - 1:last] = replacement
    text = "\n".join(lines).strip("\n")
    return re.sub(r"\n{4,}", "\n\n\n", text)  # removed import blocks leave runs of blank lines


def render_baked(baked: Mapping[str, str]) -> list[str]:
    if not baked:
        return ["BAKED_DEFAULTS: dict[str, str] = {}"]
    rows = [f"    {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in baked.items()]
    return ["BAKED_DEFAULTS: dict[str, str] = {", *rows, "}"]


# -- baked knobs --------------------------------------------------------------------------------------------------

def challenge_dataset_path(value: str | None, vocab: int | str) -> str:
    """The challenge's relative shard folder: the run's when it is one of the challenge's, else the default."""
    name = PurePath(value).name if value else ""
    if _CHALLENGE_DATASET_NAME.fullmatch(name):
        return f"./data/datasets/{name}"
    return CHALLENGE_DATASET.format(vocab=vocab)


def challenge_tokenizer_path(value: str | None, vocab: int | str) -> str:
    name = PurePath(value).name if value else ""
    if _CHALLENGE_TOKENIZER_NAME.fullmatch(name):
        return f"./data/tokenizers/{name}"
    return CHALLENGE_TOKENIZER.format(vocab=vocab)


def baked_knobs(config: Mapping[str, Any] | None) -> dict[str, str]:
    """A run's knobs as they go into the shipped file: registry order, RUN_ID dropped, data paths the challenge's
    relative ones (the record folder runs beside the challenge's ./data/). KnobError on a name or value the trainer
    would reject."""
    if not config:
        return {}
    unknown = sorted(set(config) - set(KNOBS_BY_NAME))
    if unknown:
        raise KnobError(f"cannot bake {', '.join(unknown)}: not knobs of the bundled trainer")
    out = {k.name: _text(config[k.name]) for k in KNOBS if k.name in config and k.name not in NOT_BAKED}
    vocab = out.get("VOCAB_SIZE", str(KNOBS_BY_NAME["VOCAB_SIZE"].default))
    if "DATA_PATH" in out:
        out["DATA_PATH"] = challenge_dataset_path(out["DATA_PATH"], vocab)
    if "TOKENIZER_PATH" in out:
        out["TOKENIZER_PATH"] = challenge_tokenizer_path(out["TOKENIZER_PATH"], vocab)
    Hyperparameters.resolve(values=out)  # the shipped file must start: reject what it would reject
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


# -- the file -----------------------------------------------------------------------------------------------------

def unpacked_source(baked: Mapping[str, str] | None = None, folder: Path | None = None) -> str:
    """The readable one-file trainer with `baked` (already normalized) as BAKED_DEFAULTS."""
    modules, (entry_module, entry_function) = load_modules(folder)
    by_name = {m.name: m for m in modules}
    for required in ("hparams", "source", entry_module):
        if required not in by_name:
            raise BundleError(f"the trainer package has no {required}.py")
    check_sibling_names(modules)
    check_clashes(modules)
    if by_name[entry_module].bindings.get(entry_function) != ("def", entry_module):
        raise BundleError(f"{entry_module}.py defines no top-level {entry_function} (the entry point)")
    _replace_statement(by_name["hparams"], "BAKED_DEFAULTS", render_baked(baked or {}))
    _replace_statement(by_name["source"], "BUNDLED", ["BUNDLED = True"])
    order = dependency_order(modules)
    header = [
        '"""Parameter Golf trainer, one file: generated by `golf export-record` from golf\'s bundled trainer',
        f"(golf {trainer_source.GOLF_VERSION}; package sources sha256 {trainer_source.code_hash()[:16]}; "
        f"modules {', '.join(m.name for m in order)}).",
        "",
        "Run from the record folder: torchrun --standalone --nproc_per_node=8 train_gpt.py",
        "Knobs are baked into BAKED_DEFAULTS below; any knob set in the environment overrides its baked value.",
        '"""',
        "",
        "from __future__ import annotations",
    ]
    parts = ["\n".join(header)]
    for module in order:
        parts.append(f"# {'-' * 40} {module.filename}\n\n{_module_body(module, by_name)}")
    sys_bound = any(m.bindings.get("sys") == ("import", "sys") for m in modules)
    footer = "" if sys_bound else "import sys\n\n"
    parts.append(f'{footer}if __name__ == "__main__":\n    sys.exit({entry_function}())')
    return "\n\n\n".join(parts) + "\n"


def pack_source(text: str, pack: str) -> str:
    """The self-extracting wrapper around `text` (pack "none": the text itself)."""
    data = text.encode("utf-8")
    if pack == "none":
        return text
    if pack == "lzma":
        import lzma

        blob = lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
        return _LZMA_HEAD.format(base64.b85encode(blob).decode("ascii"))
    if pack == "brotli":
        import brotli

        blob = brotli.compress(data, quality=11)
        return _BROTLI_HEAD.format(base64.b85encode(blob).decode("ascii"))
    raise BundleError(f"pack {pack!r}: expected one of {', '.join(PACKS)}")


def build_trainer_file(pack: str = "none", baked: Mapping[str, str] | None = None) -> str:
    """The shipped train_gpt.py: the bundled trainer with `baked` knobs (a run's config: normalized here, so the
    trainer's own count and the export agree), packed or not. Its UTF-8 length is the record's code bytes."""
    if pack not in PACKS:
        raise BundleError(f"pack {pack!r}: expected one of {', '.join(PACKS)}")
    try:
        knobs = baked_knobs(baked)
    except KnobError as exc:
        raise BundleError(str(exc)) from None
    return pack_source(unpacked_source(knobs), pack)


def unpack_source(shipped: str) -> str:
    """The readable text inside a packed train_gpt.py (the text itself when it is not packed)."""
    match = _PACKED.fullmatch(shipped)
    if match is None:
        return shipped
    blob = base64.b85decode(match.group(2))
    if match.group(1) == "lzma":
        import lzma

        return lzma.decompress(blob).decode("utf-8")
    import brotli

    return brotli.decompress(blob).decode("utf-8")


def pack_of(shipped: str) -> str:
    """How a one-file trainer is packed: lzma, brotli or none."""
    match = _PACKED.fullmatch(shipped)
    return match.group(1) if match else "none"


def baked_of(shipped: str) -> dict[str, str]:
    """The BAKED_DEFAULTS of a one-file trainer (packed or not): the knobs it runs with."""
    for node in ast.parse(unpack_source(shipped)).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and node.target.id == "BAKED_DEFAULTS" and node.value is not None:
            return {str(k): str(v) for k, v in ast.literal_eval(node.value).items()}
    raise BundleError("the file has no BAKED_DEFAULTS: not a one-file trainer of golf")
