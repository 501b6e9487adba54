"""Specs: inheritance, validation errors (one line, exit 2, nothing recorded), CLI overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from golf.errors import GolfError
from golf.spec import apply_overrides, deep_merge, load_spec, parse_sets
from golf.trainer.hparams import Hyperparameters
from golf_cli.main import app

runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- loading and inheritance ----------------------------------------------------------------------------------------

def test_minimal_spec_takes_the_documented_defaults(workdir: Path) -> None:
    spec = load_spec(write(workdir / "specs" / "a.yaml", "name: a\n"))
    assert spec.name == "a"
    assert spec.nproc == 1
    assert spec.seeds == (1337,)
    assert spec.data.kind == "sample"
    assert spec.env == {}
    assert spec.bundled and spec.trainer is None
    assert spec.tags == () and spec.labels == {} and spec.reported == {}


def test_extends_chain_deep_merges_with_the_child_winning(workdir: Path) -> None:
    write(workdir / "specs" / "base" / "root.yaml", """
name: root
description: root spec
seeds: [1, 2, 3]
tags: [a, b]
env: {NUM_LAYERS: 9, MODEL_DIM: 512, MLP_MULT: 2}
labels: {"XSA_LAST_N=4": "XSA on 4"}
reported: {val_bpb: 1.3, pr: 10}
""")
    write(workdir / "specs" / "base" / "mid.yaml", """
extends: root.yaml
name: mid
env: {NUM_LAYERS: 11, XSA_LAST_N: 4}
reported: {val_bpb: 1.2}
""")
    leaf = write(workdir / "specs" / "leaf.yaml", """
extends: base/mid.yaml
name: leaf
seeds: [7]
tags: [c]
env: {MLP_MULT: 3}
labels: {"MLP_MULT=3": "3x MLP"}
""")
    spec = load_spec(leaf)
    assert spec.name == "leaf"
    assert spec.description == "root spec"  # inherited through two levels
    assert spec.env == {"NUM_LAYERS": 11, "MODEL_DIM": 512, "MLP_MULT": 3, "XSA_LAST_N": 4}
    assert spec.seeds == (7,)  # lists are replaced, not concatenated
    assert spec.tags == ("c",)
    assert spec.labels == {"XSA_LAST_N=4": "XSA on 4", "MLP_MULT=3": "3x MLP"}
    assert spec.reported == {"val_bpb": 1.2, "pr": 10}


def test_child_data_replaces_the_parents_data_entirely(workdir: Path) -> None:
    write(workdir / "base.yaml", "name: base\ndata: {variant: sp1024}\n")
    spec = load_spec(write(workdir / "child.yaml", "extends: base.yaml\nname: c\ndata: {path: somewhere}\n"))
    assert spec.data.kind == "path"
    assert spec.data.path == (workdir / "somewhere").absolute()
    assert spec.data.variant is None


def test_deep_merge_semantics() -> None:
    base = {"a": 1, "m": {"x": 1, "n": {"p": 1, "q": 2}}, "l": [1, 2]}
    child = {"m": {"n": {"q": 3}, "y": 2}, "l": [3]}
    assert deep_merge(base, child) == {"a": 1, "m": {"x": 1, "y": 2, "n": {"p": 1, "q": 3}}, "l": [3]}
    assert base["m"]["n"] == {"p": 1, "q": 2}  # inputs untouched


@pytest.mark.parametrize("files, entry", [
    ({"a.yaml": "name: a\nextends: b.yaml\n", "b.yaml": "name: b\nextends: a.yaml\n"}, "a.yaml"),
    ({"a.yaml": "name: a\nextends: a.yaml\n"}, "a.yaml"),
    ({"a.yaml": "name: a\nextends: b.yaml\n", "b.yaml": "extends: c.yaml\n", "c.yaml": "extends: b.yaml\n"}, "a.yaml"),
])
def test_extends_cycles_are_rejected(workdir: Path, files: dict[str, str], entry: str) -> None:
    for name, text in files.items():
        write(workdir / name, text)
    with pytest.raises(GolfError, match="extends cycle"):
        load_spec(workdir / entry)


def test_yaml_off_stays_text_and_means_off(workdir: Path) -> None:
    # YAML 1.1 would read `off` as False and RECUR_LAYERS=0 would then mean "repeat layer 0"
    spec = load_spec(write(workdir / "a.yaml", "name: a\nenv: {XSA_LAST_N: off, RECUR_LAYERS: off, COMPILE: true}\n"))
    assert spec.env == {"XSA_LAST_N": "off", "RECUR_LAYERS": "off", "COMPILE": True}
    hp = Hyperparameters.resolve(values=spec.env)
    assert hp.xsa_last_n == 0 and hp.recur_layers == () and hp.compile is True


def test_resolved_spec_round_trips(workdir: Path, tiny_data: Path) -> None:
    trainer = write(workdir / "t" / "train_gpt.py", "print('hi')\n")
    spec = load_spec(write(workdir / "specs" / "a.yaml", f"""
name: a
nproc: auto
seeds: [1, 2]
data: {{path: {tiny_data}}}
trainer: ../t/train_gpt.py
env: {{ANY_THING: 3}}
tags: [x]
reported: {{val_bpb: 1.1, pr: 5}}
"""))
    assert spec.trainer == trainer.resolve()
    again = load_spec(write(workdir / "elsewhere" / "b.yaml", spec.to_yaml()))
    assert again.to_dict() == spec.to_dict()


# -- overrides ------------------------------------------------------------------------------------------------------

def test_apply_overrides(workdir: Path) -> None:
    spec = load_spec(write(workdir / "a.yaml", "name: a\nseeds: [1]\ntags: [t]\nenv: {NUM_LAYERS: 4}\n"))
    out = apply_overrides(spec, seeds=[5, 6], sets=parse_sets(["NUM_LAYERS=6", "MODEL_DIM=256", "NUM_LAYERS=7"]),
                          nproc="auto", name="exp", tags=["u", "t"], data="sample")
    assert out.seeds == (5, 6)
    assert out.env == {"NUM_LAYERS": "7", "MODEL_DIM": "256"}
    assert out.nproc == "auto" and out.run_name == "exp" and out.tags == ("t", "u")
    assert spec.env == {"NUM_LAYERS": 4} and spec.seeds == (1,)  # the loaded spec is not modified


def test_data_override_drops_the_specs_data_paths(workdir: Path) -> None:
    text = "name: a\nenv: {DATA_PATH: /x, TOKENIZER_PATH: /x.model, NUM_LAYERS: 3}\n"
    spec = load_spec(write(workdir / "a.yaml", text))
    assert apply_overrides(spec, data="sample").env == {"NUM_LAYERS": 3}
    kept = apply_overrides(spec, data="sample", sets={"TOKENIZER_PATH": "/y.model"})
    assert kept.env == {"NUM_LAYERS": 3, "TOKENIZER_PATH": "/y.model"}


# -- errors through the CLI: exit 2, one line, no run recorded -------------------------------------------------------

ERROR_CASES = [
    ("name: x\nsedes: [1]\n", "specs/x.yaml: unknown key 'sedes'; did you mean 'seeds'?"),
    ("name: x\nenv: {XSA_LAST: 3}\n", "specs/x.yaml: env.XSA_LAST: unknown knob; did you mean XSA_LAST_N?"),
    ("name: x\nenv: {NUM_LAYERS: many}\n", "specs/x.yaml: env.NUM_LAYERS: NUM_LAYERS='many' is not valid: expected "
                                           "an integer"),
    ("name: x\nenv: {NUM_LAYERS: 0}\n", "specs/x.yaml: env.NUM_LAYERS: NUM_LAYERS='0' is out of range"),
    ("name: x\nenv: {COMPRESSOR: zip}\n", "env.COMPRESSOR: COMPRESSOR='zip' is not valid: expected one of zlib"),
    ("name: x\nenv: {NUM_LAYERS: null}\n", "specs/x.yaml: env.NUM_LAYERS: expected a value"),
    ("name: x\nenv: [NUM_LAYERS]\n", "specs/x.yaml: env: expected a mapping"),
    ("name: x\nenv: {SEED: 3}\n", "specs/x.yaml: env.SEED: set seeds with `seeds:`"),
    ("name: x\nenv: {MODEL_DIM: 100, NUM_HEADS: 8}\n", "specs/x.yaml: MODEL_DIM=100 must be divisible by NUM_HEADS=8"),
    ("name: x\nseeds: [1, one]\n", "specs/x.yaml: seeds: expected non-negative integers"),
    ("name: x\nseeds: [1, 1]\n", "specs/x.yaml: seeds: seed listed twice"),
    ("name: x\nnproc: 0\n", "specs/x.yaml: nproc: expected a positive integer or auto"),
    ("name: x\ndata: samples\n", "specs/x.yaml: data: 'samples' is not valid"),
    ("name: x\ndata: {varient: sp1024}\n", "specs/x.yaml: data: unknown key 'varient'; did you mean 'variant'?"),
    ("name: x\ndata: {variant: spx}\n", "specs/x.yaml: data.variant: 'spx' is not valid"),
    ("nproc: 1\n", "specs/x.yaml: name: required"),
    ("name: two words\n", "specs/x.yaml: name: 'two words' must be"),
    ('name: "ok\\n"\n', "specs/x.yaml: name: 'ok\\n' must be letters"),
    ("name: x\nenv: {NUM_LAYERS: 1e1}\n", "env.NUM_LAYERS: NUM_LAYERS='1e1' is not valid: expected an integer in [1,"),
    ("name: x\nenv: {NUM_LAYERS: 10.0}\n", "env.NUM_LAYERS: NUM_LAYERS='10.0' is not valid: expected an integer"),
    ("name: x\nenv: {NUM_LAYERS: 99999999999999999999}\n", "NUM_LAYERS='99999999999999999999' is out of range"),
    ("name: x\nenv: {MODEL_DIM: 100000000}\n", "MODEL_DIM='100000000' is out of range: expected an integer in [8,"),
    ("name: x\nseeds: [99999999999999999999]\n", "seeds: SEED='99999999999999999999' is out of range"),
    ("name: x\ntrainer: nope/train_gpt.py\n", "specs/x.yaml: trainer: nope/train_gpt.py not found"),
    ("name: x\nextends: missing.yaml\n", "specs/x.yaml: extends: missing.yaml not found"),
    ("name: x\nenv: {A: 1\n", "specs/x.yaml: invalid YAML at line"),
    ("name: x\nenv: {}\nenv: {}\n", "specs/x.yaml: line 3: duplicate key 'env'"),
    ("- name\n", "specs/x.yaml: expected a mapping of keys"),
    ("name: x\nreported: {val_bpb: low}\n", "specs/x.yaml: reported.val_bpb: expected a number"),
    ("name: x\ntags: {a: 1}\n", "specs/x.yaml: tags: expected a list of words"),
]


def run_cli(args: list[str]) -> tuple[int, str, str]:
    result = runner.invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


def assert_rejected(code: int, stderr: str, expected: str, db: Path) -> None:
    assert code == 2, stderr
    assert stderr.count("\n") == 1, f"not one line: {stderr!r}"
    assert stderr.startswith("golf: error: ")
    assert expected in stderr
    if db.exists():
        from golf.store import Store

        assert Store(db).list_runs() == []
    assert not Path("runs").exists()  # nothing launched


@pytest.mark.parametrize("text, expected", ERROR_CASES)
def test_bad_specs_are_rejected_with_one_line(workdir: Path, db: Path, text: str, expected: str) -> None:
    write(workdir / "specs" / "x.yaml", text)
    code, _, stderr = run_cli(["run", "specs/x.yaml", "--db", str(db)])
    assert_rejected(code, stderr, expected, db)


def test_missing_spec_file(workdir: Path, db: Path) -> None:
    code, _, stderr = run_cli(["run", "specs/x.yaml", "--db", str(db)])
    assert_rejected(code, stderr, "specs/x.yaml: file not found", db)


def test_error_in_a_parent_names_the_parent_file(workdir: Path, db: Path) -> None:
    write(workdir / "specs" / "base.yaml", "name: base\nenv: {TTT_EPOCH: 3}\n")
    write(workdir / "specs" / "x.yaml", "extends: base.yaml\nname: x\n")
    code, _, stderr = run_cli(["run", "specs/x.yaml", "--db", str(db)])
    assert_rejected(code, stderr, "specs/base.yaml: env.TTT_EPOCH: unknown knob; did you mean TTT_EPOCHS?", db)


@pytest.mark.parametrize("args, expected", [
    (["--set", "XSA_LAST=1"], "--set XSA_LAST=1: unknown knob; did you mean XSA_LAST_N?"),
    (["--set", "NUM_LAYERS=x"], "--set NUM_LAYERS=x: NUM_LAYERS='x' is not valid"),
    (["--set", "NUM_LAYERS"], "--set NUM_LAYERS: expected KEY=VALUE"),
    (["--set", "NUM_HEADS=3"], "specs/x.yaml: MODEL_DIM=512 must be divisible by NUM_HEADS=3 (with --set)"),
    (["--data", "no/such/dir"], "--data no/such/dir: not a folder"),
    (["--nproc", "two"], "--nproc two: expected a positive integer or auto"),
    (["--name", "a b"], "--name 'a b': use letters"),
    (["--name", "ok\n"], "--name 'ok\\n': use letters"),
    (["--set", "NUM_LAYERS=1e1"], "--set NUM_LAYERS=1e1: NUM_LAYERS='1e1' is not valid: expected an integer"),
    (["--seed", "99999999999999999999"], "--seed: SEED='99999999999999999999' is out of range"),
    (["--nnodes", "2"], "--nnodes > 1 needs --rdzv-endpoint"),
    (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1"], "--node-rank 2: expected 0..1"),
])
def test_bad_overrides_are_rejected(workdir: Path, db: Path, args: list[str], expected: str) -> None:
    write(workdir / "specs" / "x.yaml", "name: x\ndata: {variant: sp1024}\n")
    code, _, stderr = run_cli(["run", "specs/x.yaml", "--db", str(db), "--dry-run", *args])
    assert_rejected(code, stderr, expected, db)
    code, _, stderr = run_cli(["run", "specs/x.yaml", "--db", str(db), *args])
    assert_rejected(code, stderr, expected, db)


def test_data_folder_without_a_unique_tokenizer(workdir: Path, db: Path, tiny_data: Path) -> None:
    write(workdir / "specs" / "x.yaml", "name: x\n")
    tokenizers = tiny_data.parent.parent / "tokenizers"
    (tokenizers / "fineweb_1024_bpe.model").unlink()
    code, _, stderr = run_cli(["run", "specs/x.yaml", "--db", str(db), "--data", str(tiny_data)])
    assert_rejected(code, stderr, "no tokenizer (*.model) in", db)
    (tokenizers / "a_4096_bpe.model").write_bytes(b"a")
    (tokenizers / "b_8192_bpe.model").write_bytes(b"b")
    code, _, stderr = run_cli(["run", "specs/x.yaml", "--db", str(db), "--data", str(tiny_data)])
    assert_rejected(code, stderr, "several tokenizers in", db)


def test_variant_data_not_fetched_points_at_golf_data_fetch(workdir: Path, db: Path) -> None:
    write(workdir / "specs" / "x.yaml", "name: x\ndata: {variant: sp4096}\n")
    code, _, stderr = run_cli(["run", "specs/x.yaml", "--db", str(db)])
    assert code == 2
    assert "data/datasets/fineweb10B_sp4096 not found; run `golf data fetch --variant sp4096`" in stderr
    assert not Path("runs").exists()


def test_environment_variable_that_looks_like_a_knob(workdir: Path, db: Path, tiny_data: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write(workdir / "specs" / "x.yaml", "name: x\n")
    monkeypatch.setenv("MUON_MOMENTUMS", "0.9")
    code, _, stderr = run_cli(["run", "specs/x.yaml", "--db", str(db), "--data", str(tiny_data)])
    assert_rejected(code, stderr, "your environment has unknown knob MUON_MOMENTUMS; did you mean MUON_MOMENTUM?",
                    db)


def test_community_trainer_env_is_not_checked_against_the_knobs(workdir: Path) -> None:
    write(workdir / "train_gpt.py", "")
    spec = load_spec(write(workdir / "x.yaml", "name: x\ntrainer: train_gpt.py\nenv: {XSA_LAST: 3, SEED: 4}\n"))
    assert spec.env == {"XSA_LAST": 3, "SEED": 4}
    assert not spec.bundled
