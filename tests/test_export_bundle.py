"""The one-file trainer: golf/trainer/*.py flattened into one train_gpt.py (golf.trainer.onefile)."""

from __future__ import annotations

import ast
import base64
import lzma
import re
import sys
import types
from pathlib import Path

import brotli
import pytest

from golf.export.readme import required_packages
from golf.export.secrets import find_secrets, is_secret_name, redact
from golf.trainer import source as trainer_source
from golf.trainer.codebytes import shipped_code
from golf.trainer.hparams import KNOBS, Hyperparameters
from golf.trainer.onefile import (
    NOT_BAKED,
    BundleError,
    baked_knobs,
    build_trainer_file,
    unpack_source,
    unpacked_source,
)

TRAINER = Path(trainer_source.__file__).resolve().parent
SECTION = re.compile(r"^# -{40} (\w+)\.py$", re.MULTILINE)


def top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def sibling_imports(path: Path) -> set[str]:
    """The trainer modules a file imports relatively (read independently of the bundler)."""
    deps = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            deps.update([node.module] if node.module else [a.name for a in node.names])
    return deps


def baked_literal(text: str) -> dict[str, str]:
    for node in ast.parse(text).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "BAKED_DEFAULTS":
            return ast.literal_eval(node.value)  # type: ignore[arg-type]
    raise AssertionError("no BAKED_DEFAULTS")


# -- the real trainer --------------------------------------------------------------------------------------------

def test_current_trainer_bundles_into_one_valid_file() -> None:
    text = build_trainer_file()
    tree = ast.parse(text)
    # every module but the package's entry files and the builder itself (onefile.py is not part of what it builds)
    modules = sorted(p.stem for p in TRAINER.glob("*.py") if p.name not in ("__init__.py", "__main__.py", "onefile.py"))
    sections = SECTION.findall(text)
    assert "def build_trainer_file" not in text
    assert sorted(sections) == modules
    # every module comes after the siblings it imports
    position = {name: i for i, name in enumerate(sections)}
    for name in modules:
        for dep in sibling_imports(TRAINER / f"{name}.py"):
            assert position[dep] < position[name], (dep, name)
    # one namespace holds every module's top-level definitions
    names = top_level_names(tree)
    for name in modules:
        missing = top_level_names(ast.parse((TRAINER / f"{name}.py").read_text())) - names
        assert not missing, (name, missing)
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in imports if n.level], "relative imports left"
    futures = [n for n in imports if n.module == "__future__"]
    assert len(futures) == 1 and tree.body[1] is futures[0]  # once, right after the docstring
    loaded = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    loaded += [n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module]
    assert loaded and not [m for m in loaded if m.split(".")[0] == "golf"]
    assert re.search(r"^BUNDLED = True$", text, re.MULTILINE) and "BUNDLED = False" not in text
    assert text.endswith('if __name__ == "__main__":\n    sys.exit(main())\n')
    assert "finish.final_stages" not in text and "final_stages(" in text  # `from . import finish` inlined
    assert baked_literal(text) == {}


def test_build_is_deterministic_and_source_counts_it() -> None:
    config = Hyperparameters.resolve(values={"NUM_LAYERS": 3, "RUN_ID": "abc"}).as_env()
    first = build_trainer_file(pack="lzma", baked=config)
    assert build_trainer_file(pack="lzma", baked=config) == first
    # the trainer logs the size of exactly this file
    size, how = shipped_code("lzma", config)
    assert size == len(first.encode("utf-8")) and "pack=lzma" in how


def test_baked_knobs_are_the_runs_without_run_id_and_with_challenge_paths() -> None:
    config = Hyperparameters.resolve(values={
        "NUM_LAYERS": 11, "SEED": 42, "RUN_ID": "r1", "VOCAB_SIZE": 8192,
        "DATA_PATH": "/home/me/golf/data/sample/datasets/sample_sp1024",
        "TOKENIZER_PATH": "/home/me/golf/data/sample/tokenizers/sample_1024_bpe.model"}).as_env()
    baked = baked_literal(build_trainer_file(baked=config))
    assert not set(NOT_BAKED) & set(baked)
    assert baked["DATA_PATH"] == "./data/datasets/fineweb10B_sp8192"
    assert baked["TOKENIZER_PATH"] == "./data/tokenizers/fineweb_8192_bpe.model"
    assert baked["NUM_LAYERS"] == "11" and baked["SEED"] == "42"
    expected_order = [k.name for k in KNOBS if k.name not in NOT_BAKED]
    assert list(baked) == expected_order
    # a run on the challenge's own layout keeps its dataset (e.g. a CaseOps variant), made relative
    challenge = baked_knobs({"DATA_PATH": "/data/pg/data/datasets/fineweb10B_sp8192_caseops",
                             "TOKENIZER_PATH": "/data/pg/data/tokenizers/fineweb_8192_bpe_caseops.model",
                             "VOCAB_SIZE": "8192"})
    assert challenge["DATA_PATH"] == "./data/datasets/fineweb10B_sp8192_caseops"
    assert challenge["TOKENIZER_PATH"] == "./data/tokenizers/fineweb_8192_bpe_caseops.model"


FRONTIER_KNOBS = {
    "NUM_LAYERS": 11, "NUM_LOOPS": 2, "LOOP_START": 3, "LOOP_END": 5, "ENABLE_LOOPING_AT": 0.35,
    "LOOP_PHASE2_AT": 0.5, "PARALLEL_RESIDUAL": 1, "PARALLEL_START_LAYER": 8, "PARALLEL_FINAL_LANE": "mean",
    "SKIP_GATES_ENABLED": 1, "SPARSE_ATTN_GATE_ENABLED": 1, "SPARSE_ATTN_GATE_SCALE": 0.5,
    "SPARSE_ATTN_GATE_INIT_STD": 0.01, "GATE_WINDOW": 10, "SMEAR_GATE_ENABLED": 1, "SMEAR_GATE_WIDTH": 9,
    "USE_POLAR_EXPRESS": 1, "MIN_LR": 0.1, "WD_TAPER_START_FRAC": 0.7, "WD_TAPER_FINAL_MULT": 0.5,
    "TRAIN_LOADER": "shuffled", "FUSED_CE_ENABLED": 1,
}


def test_the_frontier_knobs_travel_in_the_one_file_trainer() -> None:
    config = Hyperparameters.resolve(values=FRONTIER_KNOBS).as_env()
    text = build_trainer_file(baked=config)
    baked = baked_literal(text)
    assert {k: baked[k] for k in FRONTIER_KNOBS} == {k: config[k] for k in FRONTIER_KNOBS}
    module = types.ModuleType("train_gpt_shipped")  # dataclasses look their module up in sys.modules
    sys.modules[module.__name__] = module
    try:
        exec(compile(text, "train_gpt.py", "exec"), module.__dict__)  # the shipped file alone, no golf package
    finally:
        del sys.modules[module.__name__]
    shipped = module.Hyperparameters.resolve()
    assert shipped.as_env() == config  # it reproduces the run with no env var set
    model = module.GPT(shipped)
    model.set_recurrence(True)
    assert model.order == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]


def test_baking_rejects_what_the_trainer_would_reject() -> None:
    with pytest.raises(BundleError, match="HF_TOKEN"):
        build_trainer_file(baked={"HF_TOKEN": "x"})
    with pytest.raises(BundleError, match="NUM_LAYERS"):
        build_trainer_file(baked={"NUM_LAYERS": "two"})
    with pytest.raises(BundleError, match="pack"):
        build_trainer_file(pack="zip")


@pytest.mark.parametrize("pack", ["lzma", "brotli"])
def test_packed_file_is_a_wrapper_around_the_unpacked_one(pack: str) -> None:
    config = {"NUM_LAYERS": "4"}
    plain = build_trainer_file(baked=config)
    packed = build_trainer_file(pack=pack, baked=config)
    head, body, _ = packed.split('"')
    module = {"lzma": "L", "brotli": "R"}[pack]
    assert head == f"import {pack} as {module},base64 as B\nexec({module}.decompress(B.b85decode("
    blob = base64.b85decode(body)
    inner = lzma.decompress(blob) if pack == "lzma" else brotli.decompress(blob)
    assert inner.decode("utf-8") == plain
    assert unpack_source(packed) == plain and unpack_source(plain) == plain
    assert len(packed) < len(plain) / 2


# -- flattening rules, on small fake packages ---------------------------------------------------------------------

def fake_package(tmp_path: Path, **modules: str) -> Path:
    folder = tmp_path / "pkg"
    folder.mkdir(parents=True)
    base = {
        "__init__": "",
        "__main__": "import sys\n\nfrom golf.trainer.train import main\n\nsys.exit(main())\n",
        "hparams": "BAKED_DEFAULTS: dict[str, str] = {}\n",
        "source": "BUNDLED = False\n",
        "train": "import sys\n\nfrom .hparams import BAKED_DEFAULTS\n\n\n"
                 "def main() -> int:\n    return len(BAKED_DEFAULTS)\n",
    }
    base.update(modules)
    for name, text in base.items():
        (folder / f"{name}.py").write_text(text)
    return folder


def test_fake_package_flattens_and_runs(tmp_path: Path) -> None:
    folder = fake_package(
        tmp_path,
        helpers='"""Helpers."""\n\nfrom __future__ import annotations\n\nfrom .hparams import BAKED_DEFAULTS as B\n\n'
                "def twice(x: int) -> int:\n    return 2 * x + len(B)\n",
        train="import sys\n\nfrom . import helpers\nfrom .hparams import BAKED_DEFAULTS\n\n\n"
              "def main() -> int:\n    print(helpers.twice(len(BAKED_DEFAULTS)))\n    return 0\n",
    )
    text = unpacked_source({"A": "1", "B": "2"}, folder)
    assert SECTION.findall(text) == ["hparams", "helpers", "source", "train"]
    assert "B = BAKED_DEFAULTS" in text and "helpers.twice" not in text
    namespace: dict[str, object] = {"__name__": "bundle"}
    exec(compile(text, "train_gpt.py", "exec"), namespace)
    assert namespace["BUNDLED"] is True
    assert namespace["twice"](3) == 8  # type: ignore[operator]  # 2*3 + len(B) with B the baked dict


def test_two_modules_defining_one_name_fail_loudly(tmp_path: Path) -> None:
    folder = fake_package(tmp_path, model="def helper() -> int:\n    return 1\n",
                          optim="def helper() -> int:\n    return 2\n")
    with pytest.raises(BundleError, match=r"helper \(model\.py, optim\.py\)"):
        unpacked_source({}, folder)


def test_an_import_shadowing_a_definition_fails(tmp_path: Path) -> None:
    folder = fake_package(tmp_path, model="from typing import Any\n", optim="Any = 3\n")
    with pytest.raises(BundleError, match="Any"):
        unpacked_source({}, folder)


def test_equal_imports_and_typing_aliases_do_not_clash(tmp_path: Path) -> None:
    folder = fake_package(tmp_path, model="import torch\nfrom typing import Callable\n",
                          optim="import torch\nfrom collections.abc import Callable\n")
    assert "import torch" in unpacked_source({}, folder)


def test_cycles_and_unsupported_imports_fail(tmp_path: Path) -> None:
    cycle = fake_package(tmp_path, a="from .b import y\nx = 1\n", b="from .a import x\ny = 2\n")
    with pytest.raises(BundleError, match="cycle: a, b"):
        unpacked_source({}, cycle)
    for i, (module, hint) in enumerate([
        ("def f():\n    from .hparams import BAKED_DEFAULTS\n", "inside a block"),
        ("import golf.spec\n", "import of golf"),
        ("from .hparams import NOTHING\n", "defines no top-level NOTHING"),
        ("from . import hparams\nh = hparams\n", "used other than"),
    ]):
        folder = fake_package(tmp_path / str(i), extra=module)
        with pytest.raises(BundleError, match=hint):
            unpacked_source({}, folder)


# -- requirements and secrets ---------------------------------------------------------------------------------------

def test_requirements_follow_the_imports_and_the_config() -> None:
    text = unpack_source(build_trainer_file())
    assert required_packages(text, {"COMPRESSOR": "zlib"}, "none") == ["numpy", "sentencepiece", "torch"]
    assert "zstandard" in required_packages(text, {"COMPRESSOR": "zstd"}, "none")
    assert "brotli" in required_packages(text, {"COMPRESSOR": "zlib"}, "brotli")
    assert "brotli" in required_packages(text, {"COMPRESSOR": "brotli"}, "lzma")
    # FA4 only where the record's config asks for its kernels; auto falls back to SDPA without it
    assert "flash-attn-4" not in required_packages(text, {"ATTN_BACKEND": "auto"}, "none")
    assert "flash-attn-4" in required_packages(text, {"ATTN_BACKEND": "fa4"}, "none")
    # the fused CE's Triton kernels: imported lazily, needed only with the knob on
    assert "triton" in required_packages(text, {"FUSED_CE_ENABLED": "1"}, "none")
    assert "triton" not in required_packages(text, {"FUSED_CE_ENABLED": "0"}, "none")
    assert "triton" in required_packages(text, {"FUSED_CE_ENABLED": "0", "FUSED_MLP_ENABLED": "1"}, "none")
    assert "triton" not in required_packages(text, {"FUSED_MLP_ENABLED": "0"}, "none")


def test_secret_names_spare_the_knobs() -> None:
    assert is_secret_name("HF_TOKEN") and is_secret_name("WANDB_API_KEY") and is_secret_name("db_password")
    assert not is_secret_name("TOKENIZER_PATH") and not is_secret_name("TRAIN_BATCH_TOKENS")
    env = {"HF_TOKEN": "hf_abcdef123456", "SHORT_KEY": "1"}
    log = ("Running: HF_TOKEN=hf_abcdef123456 TOKENIZER_PATH=./tok.model torchrun x\n"
           "export AWS_SECRET_ACCESS_KEY='s3cr3t value'\n{'OPENAI_API_KEY': 'sk-zzz'}\n"
           "copied hf_abcdef123456 into the cache; chunk_tokens=32768 SHORT_KEY=1\n")
    out = redact(log, env)
    assert "hf_abcdef123456" not in out.text and "s3cr3t" not in out.text and "sk-zzz" not in out.text
    assert "TOKENIZER_PATH=./tok.model" in out.text and "chunk_tokens=32768" in out.text
    assert "AWS_SECRET_ACCESS_KEY='<redacted>'" in out.text
    assert sorted(out.names) == ["AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "HF_TOKEN", "OPENAI_API_KEY", "SHORT_KEY"]
    assert find_secrets(out.text, env) == []
