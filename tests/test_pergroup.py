"""Per-group compression (golf/trainer/pergroup.py), its codecs (compressors.py) and COMPRESSOR=pergroup artifacts."""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from golf.trainer import artifact as A
from golf.trainer import compressors as C
from golf.trainer import pergroup as P
from golf.trainer.hparams import Hyperparameters
from golf.trainer.lqer import LQERSettings

_BLOBS = [b"", b"a", bytes(range(256)) * 40,
          np.random.default_rng(0).integers(-31, 32, 20_000, dtype=np.int8).tobytes()]


def _artifact_cfg(**changes: object) -> A.ArtifactConfig:
    """The default knobs' artifact config with `changes`."""
    return dataclasses.replace(A.ArtifactConfig.from_hp(Hyperparameters.resolve()), **changes)  # type: ignore[arg-type]



@pytest.mark.parametrize("codec", C.CODECS)
def test_every_codec_round_trips_bit_exactly(codec: str) -> None:
    if not C.codec_available(codec):
        pytest.skip(f"{codec} is not installed here")
    for data in _BLOBS:
        assert C.decompress(C.compress(data, codec), codec) == data


def _clustered(rows: int, cols: int, seed: int) -> np.ndarray:
    """Rows drawn around a few centres, shuffled: a similarity order can bring each cluster together."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(-20, 21, size=(6, cols))
    labels = rng.integers(0, 6, size=rows)
    noise = rng.integers(-2, 3, size=(rows, cols))
    return np.clip(centres[labels] + noise, -31, 31).astype(np.int8)


def test_similarity_order_is_a_permutation_that_chains_neighbours() -> None:
    codes = _clustered(300, 64, seed=1)
    order = P.similarity_order(codes)
    assert sorted(order.tolist()) == list(range(300)) and order[0] == 0

    def path_length(o: np.ndarray) -> float:
        x = codes[o].astype(np.float64)
        return float(np.square(np.diff(x, axis=0)).sum())

    assert path_length(order) < 0.3 * path_length(np.arange(300))
    # greedy: from each row the chain goes to the nearest row not yet visited (on every column here: cols < 128)
    x = codes.astype(np.float64)
    for i in range(0, 299, 37):
        rest = order[i + 1:]
        dist = np.square(x[rest] - x[order[i]]).sum(axis=1)
        assert dist[0] == dist.min()


@pytest.mark.parametrize("layout", P.LAYOUTS)
def test_layouts_round_trip(layout: str) -> None:
    mats = [_clustered(300, 48, seed=2), _clustered(17, 48, seed=3)]
    pieces = [P.Piece(m.nbytes, "role", *m.shape) for m in mats]
    raw = P._pg_layout(mats, layout)
    extra = sum(m.shape[0] * 2 for m in mats) if layout == "sorted_t" else 0  # uint16 row orders
    assert len(raw) == sum(m.nbytes for m in mats) + extra
    assert P._pg_unlayout(raw, pieces, layout) == [m.tobytes() for m in mats]


def test_pergroup_streams_round_trip_and_each_takes_its_smallest_codec() -> None:
    a, b = _clustered(256, 64, seed=4), _clustered(256, 64, seed=5)
    c = np.random.default_rng(6).integers(-7, 8, size=(128, 40), dtype=np.int8)
    rest = np.random.default_rng(7).standard_normal(300).astype(np.float16).tobytes()
    payloads = [a.tobytes(), c.tobytes(), b.tobytes(), rest]
    pieces = [P.Piece(a.nbytes, "fc", 256, 64), P.Piece(c.nbytes, "proj", 128, 40), P.Piece(b.nbytes, "fc", 256, 64),
              P.Piece(len(rest))]
    blob, table = P.pergroup_encode(payloads, pieces)
    assert [t[0] for t in table] == ["fc", "proj", "rest"] and sum(t[3] for t in table) == len(blob)
    whole = min(len(C.compress(b"".join(payloads), name)) for name in C.CODECS if C.codec_available(name))
    assert len(blob) < whole  # split streams won here (else the section would be one `all` stream)
    assert P.pergroup_decode(blob, table, pieces) == b"".join(payloads)
    available = [c for c in C.CODECS if C.codec_available(c)]
    fc_raw = P._pg_layout([a, b], P.LAYOUTS[table[0][2]])
    assert table[0][3] == min(len(C.compress(fc_raw, name)) for name in available)
    assert C.CODECS[table[0][1]] in available
    # the clustered stream gains from its similarity order; its layout was chosen on a fast codec's sizes
    sizes = {lay: P._pg_fast_size(P._pg_layout([a, b], lay)) for lay in P.LAYOUTS}
    assert P.LAYOUTS[table[0][2]] == min(sizes, key=sizes.get)  # type: ignore[arg-type]


def _state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(8)
    state = {f"blocks.{i}.mlp.fc.weight": torch.randn(384, 192, generator=gen) * 0.05 for i in range(2)}
    state.update({f"blocks.{i}.attn.c_q.weight": torch.randn(320, 256, generator=gen) * 0.05 for i in range(2)})
    state["tok_emb.weight"] = torch.randn(1024, 80, generator=gen) * 0.02
    state["blocks.0.attn_scale"] = torch.randn(64, generator=gen)
    state["blocks.0.attn.c_k.weight"] = torch.randn(32, 64, generator=gen)  # small: fp16
    return state


def _cfg(compressor: str, **kw: object) -> A.ArtifactConfig:
    return _artifact_cfg(group_bits={"embeddings": 8, "attention": 6, "mlp": 5, "other": 6}, compressor=compressor,
                         **kw)


@pytest.mark.parametrize("shuffle", [False, True])
def test_pergroup_container_round_trips_bit_exactly(shuffle: bool) -> None:
    lqer = LQERSettings(rank=2, top_k=2, factor_bits=4, asym=True, group=32)
    cfg = _cfg("pergroup", byte_shuffle=shuffle, lqer=lqer)
    entries, _ = A.quantize_state(_state(), cfg)
    art = A.pack(entries, cfg)
    assert A.artifact_format(art.blob) == (2, "pergroup")
    assert sum(art.sections.values()) + art.overhead == art.size and art.sections["lqer"] > 0
    back = {e.name: e for e in A.unpack(art.blob)}
    assert set(back) == {e.name for e in entries}
    for e in entries:
        b = back[e.name]
        assert (b.group, b.shape, b.bits, b.qgroup) == (e.group, e.shape, e.bits, e.qgroup)
        assert torch.equal(b.data, e.data)
        for attr in ("scale", "zero"):
            mine, theirs = getattr(e, attr), getattr(b, attr)
            assert (mine is None) == (theirs is None) and (mine is None or torch.equal(mine, theirs))
    assert A.compressor_label("pergroup", 0, shuffle) == ("pergroup-shuffle" if shuffle else "pergroup")


def test_pergroup_is_no_larger_than_any_single_codec_on_the_code_groups() -> None:
    entries, _ = A.quantize_state(_state(), _cfg("zlib"))
    pergroup = A.pack(entries, _cfg("pergroup")).sections
    for codec in C.COMPRESSORS:
        if C.codec_available(codec):
            single = A.pack(entries, _cfg(codec)).sections
            for group in ("attention", "mlp", "embeddings"):
                # streams per role with their best layout and codec, or the whole payload by its best codec
                assert pergroup[group] <= single[group], (codec, group)


def test_a_section_stored_whole_decodes() -> None:
    rng = np.random.default_rng(9)
    a = rng.integers(-3, 4, size=(8, 8), dtype=np.int8)
    rest = rng.standard_normal(8).astype(np.float16).tobytes()
    pieces = [P.Piece(a.nbytes, "fc", 8, 8), P.Piece(len(rest))]
    blob = C.compress(a.tobytes() + rest, "lzma")
    table = [[P.WHOLE_STREAM, C.CODECS.index("lzma"), 0, len(blob)]]
    assert P.pergroup_decode(blob, table, pieces) == a.tobytes() + rest
    with pytest.raises(ValueError, match="does not match"):
        P.pergroup_decode(blob, table, pieces[:1])


@pytest.fixture(scope="module")
def bundled() -> Iterator[types.ModuleType]:
    """The one-file train_gpt.py that export-record ships, loaded as a module (not run)."""
    from golf.trainer.onefile import build_trainer_file

    module = types.ModuleType("golf_bundled_trainer")
    module.__file__ = "train_gpt.py"
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        exec(compile(build_trainer_file(pack="lzma"), "train_gpt.py", "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[module.__name__]


def test_the_one_file_trainer_decodes_its_own_pergroup_artifact(bundled: types.ModuleType, tmp_path: Path) -> None:
    state = _state()
    cfg_kw = {"group_bits": {"embeddings": 8, "attention": 6, "mlp": 5, "other": 6}, "compressor": "pergroup",
              "byte_shuffle": True}
    lqer = bundled.LQERSettings(rank=2, top_k=1, factor_bits=4, asym=True, group=32)
    cfg = dataclasses.replace(bundled.ArtifactConfig.from_hp(bundled.Hyperparameters.resolve()), **cfg_kw, lqer=lqer)
    entries, _ = bundled.quantize_state(state, cfg)
    path = tmp_path / "final_model.int6.ptz"
    bundled.write_atomic(path, bundled.pack(entries, cfg).blob)
    own = bundled.load_artifact(path)
    package = A.load_artifact(path)  # and golf's package reads the same file to the same tensors
    assert set(own) == set(state) == set(package)
    assert all(torch.equal(own[n], package[n]) for n in state)
    direct = A.dequantize_state(A.unpack(path.read_bytes()))
    assert all(torch.equal(own[n], direct[n]) for n in state)


def test_codecs_run_at_once_and_pick_what_one_after_another_picks() -> None:
    """best_codec's threads change only the time: the same codec and bytes as trying the codecs in a row (ties go
    to the first in CODECS either way), on a clustered stream and on incompressible bytes."""
    for raw in (_clustered(256, 64, seed=11).tobytes(), np.random.default_rng(12).bytes(4096)):
        concurrent, serial = P.best_codec(raw, concurrent=True), P.best_codec(raw)
        assert concurrent == serial
        sizes = {c: len(C.compress(raw, c)) for c in C.CODECS if C.codec_available(c)}
        assert len(concurrent[1]) == min(sizes.values())
        assert concurrent[0] == next(c for c in sizes if sizes[c] == min(sizes.values()))
