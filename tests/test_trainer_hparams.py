"""The typed knob registry: Hyperparameters' fields are the knobs, KNOBS is derived from them."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from golf.trainer import hparams
from golf.trainer.hparams import KNOBS, KNOBS_BY_NAME, Hyperparameters, KnobError

PYTHON_TYPE = {"bool": bool, "int": int, "float": float, "str": str, "ints": tuple}


def test_every_field_is_one_typed_knob_and_the_registry_follows_the_fields() -> None:
    fields = dataclasses.fields(Hyperparameters)
    hints = typing.get_type_hints(Hyperparameters)
    assert [f.name.upper() for f in fields] == [k.name for k in KNOBS]
    for f, knob in zip(fields, KNOBS, strict=True):
        assert f.default == knob.default, knob.name
        assert (typing.get_origin(hints[f.name]) or hints[f.name]) is PYTHON_TYPE[knob.kind], knob.name
        assert isinstance(knob.default, PYTHON_TYPE[knob.kind]), knob.name
        assert knob.help and knob.group, knob.name


def test_resolved_values_have_their_field_types() -> None:
    hp = Hyperparameters.resolve(values={"NUM_LAYERS": "11", "MLP_MULT": "3", "VE_LAYERS": "1,2", "COMPILE": "0"})
    assert (hp.num_layers, hp.mlp_mult, hp.ve_layers, hp.compile) == (11, 3.0, (1, 2), False)
    assert type(hp.num_layers) is int and type(hp.mlp_mult) is float and type(hp.compile) is bool


def test_an_alias_sets_its_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hparams, "KNOB_ALIASES", {"N_LAYER": "NUM_LAYERS"})
    assert Hyperparameters.resolve(env={"N_LAYER": "5"}).num_layers == 5
    assert hparams.parse_overrides({"N_LAYER": "5"}) == {"NUM_LAYERS": 5}
    assert not hparams.looks_like_knob("N_LAYER")
    with pytest.raises(KnobError, match="NUM_LAYERS"):
        hparams.parse_overrides({"N_LAYER": "five"})


def test_a_field_of_an_unsupported_type_fails_at_import() -> None:
    @dataclasses.dataclass
    class Bad:
        ratio: complex = hparams.knob(1j, "help", "model")

    with pytest.raises(TypeError, match="ratio"):
        hparams._knob_of(dataclasses.fields(Bad)[0])


def test_knob_metadata_reaches_the_registry() -> None:
    knob = KNOBS_BY_NAME["MATRIX_BITS"]
    assert (knob.kind, knob.default, knob.group, knob.minimum, knob.maximum) == ("int", 8, "quant", 2, 8)
    assert KNOBS_BY_NAME["COMPRESSOR"].choices == ("zlib", "zstd", "lzma", "brotli", "pergroup")
    assert KNOBS_BY_NAME["XSA_LAST_N"].off == 0


@pytest.mark.parametrize("name, text, message", [
    ("NUM_LAYERS", "1e1", "NUM_LAYERS='1e1' is not valid: expected an integer in [1, 1024]"),
    ("NUM_LAYERS", "10.0", "is not valid: expected an integer"),
    ("NUM_LAYERS", "99999999999999999999", "NUM_LAYERS='99999999999999999999' is out of range"),
    ("MODEL_DIM", "100000000", "MODEL_DIM='100000000' is out of range: expected an integer in [8, 65536]"),
    ("SEED", "12345678901234567891", "SEED='12345678901234567891' is out of range: expected an integer in [0,"),
    ("VE_LAYERS", "1,2.0", "VE_LAYERS='1,2.0' is not valid"),
    ("MLP_MULT", "nan", "MLP_MULT='nan' is not valid"),
    ("MATRIX_LR", "inf", "MATRIX_LR='inf' is not valid"),
])
def test_integers_are_parsed_as_integers_within_bounds(name: str, text: str, message: str) -> None:
    with pytest.raises(KnobError) as err:
        Hyperparameters.resolve(values={name: text})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_integers_keep_every_digit() -> None:
    hp = Hyperparameters.resolve(values={"SEED": "4294967295", "TRAIN_BATCH_TOKENS": "2_147_482_624",
                                         "TRAIN_SEQ_LEN": "1024", "ITERATIONS": 999_999_999})
    assert (hp.seed, hp.train_batch_tokens, hp.iterations) == (4294967295, 2147482624, 999999999)
    assert hp.format("SEED") == "4294967295"


def test_every_integer_knob_has_both_bounds() -> None:
    unbounded = [k.name for k in KNOBS if k.kind == "int" and (k.minimum is None or k.maximum is None)]
    assert unbounded == []


def test_every_knob_is_read_by_name_so_a_grep_finds_its_uses() -> None:
    """Each knob is read as `hp.<field>` in the trainer, is a field of the model's own ModelConfig, or is mapped
    onto other knobs when they resolve (`kw["<field>"]`); no knob
    name is built at run time (`getattr(hp, f"ttt_{name}")` would hide its uses from a search)."""
    import re
    from pathlib import Path

    from golf.trainer.model import ModelConfig

    folder = Path(hparams.__file__).parent
    sources = "\n".join(p.read_text() for p in folder.glob("*.py") if p.name != "hparams.py")
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    # an older spelling of a technique is read once, where resolve() maps it onto the records' knobs
    mapped = set(re.findall(r'kw\["(\w+)"\]', (folder / "hparams.py").read_text()))
    unread = [k.name for k in KNOBS if k.attr not in model_fields | mapped
              and not re.search(rf"\bhp\.{k.attr}\b", sources)]
    assert unread == []
    assert not re.search(r"getattr\(hp, f[\"']", sources)
    assert model_fields <= {f.name for f in dataclasses.fields(Hyperparameters)}


def test_the_challenge_limits_are_written_once() -> None:
    """16,000,000 and 600 appear as number literals only in golf/trainer/limits.py (prose may quote them)."""
    import io
    import tokenize
    from pathlib import Path

    from golf.trainer.limits import BYTES_CAP, TRAIN_BUDGET_S

    root = Path(hparams.__file__).resolve().parents[2]
    hits = []
    for path in [*root.joinpath("golf").rglob("*.py"), *root.joinpath("golf_cli").rglob("*.py")]:
        if path.name == "limits.py":
            continue
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if tok.type == tokenize.NUMBER and tok.string.replace("_", "") in ("16000000", "600", "600.0"):
                hits.append(f"{path.relative_to(root)}:{tok.start[0]}")
    assert hits == []
    assert KNOBS_BY_NAME["MAX_WALLCLOCK_SECONDS"].default == TRAIN_BUDGET_S and BYTES_CAP == 16_000_000
