"""Quantization, GPTQ, pruning, compression and the artifact container (golf/trainer/artifact.py)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from golf.trainer import artifact as A
from golf.trainer.hparams import Hyperparameters, KnobError
from golf.trainer.model import GPT
from golf.trainer.runtime import Runtime


def artifact_cfg(**changes: object) -> A.ArtifactConfig:
    """The default knobs' artifact config with `changes`."""
    return dataclasses.replace(A.ArtifactConfig.from_hp(Hyperparameters.resolve()), **changes)  # type: ignore[arg-type]


def _matrix(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen) * 0.05
    w[::7, 3] *= 40.0  # a few outliers per row group: clipping has something to decide
    return w


# ---------------------------------------------------------------------------------------------- rounding
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8, 12])
def test_unclipped_rows_stay_within_half_a_step(bits: int) -> None:
    w = _matrix(48, 200, seed=bits)
    q, scale = A.quantize_rows(w, bits, quantiles=(1.0,))
    qmax = 2 ** (bits - 1) - 1
    rowmax = w.abs().amax(dim=1)
    s = scale.float()
    # the stored fp16 scale is rowmax/qmax, rounded up to the next fp16 value at most
    assert scale.dtype == torch.float16
    assert torch.all(s * qmax >= rowmax)
    assert torch.all(s <= (rowmax / qmax) * (1 + 2.0 ** -9))
    assert torch.equal(q, q.round()) and q.abs().max() <= qmax
    err = (w - q * s[:, None]).abs()
    assert torch.all(err <= s[:, None] / 2 + 1e-7)


@pytest.mark.parametrize("bits", [5, 6, 8])
def test_clipped_rows_are_exact_to_half_a_step_below_the_clip(bits: int) -> None:
    w = _matrix(32, 300, seed=1)
    q, scale = A.quantize_rows(w, bits)  # the baseline's 0.9999984 quantile clip
    qmax = 2 ** (bits - 1) - 1
    s = scale.float()[:, None]
    inside = w.abs() <= qmax * s
    err = (w - q * s).abs()
    assert torch.all(err[inside] <= (s.expand_as(w)[inside] / 2) + 1e-7)
    clipped = ~inside
    assert torch.all(q[clipped].abs() == qmax)


def test_row_quantile_is_torch_quantile() -> None:
    w = _matrix(16, 97, seed=2).abs()
    srt = w.sort(dim=1).values
    for qt in (0.0, 0.5, 0.999, 0.9999984, 1.0):
        assert torch.allclose(A.row_quantile(srt, qt), torch.quantile(w, qt, dim=1), rtol=1e-6, atol=0)


def test_clip_search_keeps_each_rows_lowest_error() -> None:
    w = _matrix(40, 256, seed=3)
    bits = 4
    qmax = 2 ** (bits - 1) - 1
    q, scale = A.quantize_rows(w, bits, quantiles=A.CLIP_SEARCH_QUANTILES)
    chosen = (q * scale.float()[:, None] - w).square().sum(dim=1)
    # independent: every candidate clip from torch.quantile, plain rounding, error per row
    errs = []
    for qt in A.CLIP_SEARCH_QUANTILES:
        clip = torch.quantile(w.abs(), qt, dim=1)
        s = (clip / qmax).half().float()
        s = torch.where(s * qmax < clip, torch.nextafter(s.half(), torch.tensor(65504.0).half()).float(), s)
        qq = torch.clamp(torch.round(w / s[:, None]), -qmax, qmax)
        errs.append((qq * s[:, None] - w).square().sum(dim=1))
    best = torch.stack(errs).min(dim=0).values
    assert torch.allclose(chosen, best, rtol=1e-5, atol=1e-9)
    assert torch.all(chosen <= errs[-1] + 1e-9)  # never worse than no clipping


# ---------------------------------------------------------------------------------------------- GPTQ
def _correlated_inputs(n: int, cols: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, cols // 8, generator=gen)
    mix = torch.randn(cols // 8, cols, generator=gen)
    return latent @ mix + 0.05 * torch.randn(n, cols, generator=gen)


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_gptq_beats_rounding_on_correlated_inputs(bits: int) -> None:
    x = _correlated_inputs(2048, 128)
    w = _matrix(64, 128, seed=4)
    h = x.T @ x
    q_r, s_r = A.quantize_rows(w, bits)
    q_g, s_g = A.gptq_quantize(w, h, bits, block_size=32)
    err_round = (x @ w.T - x @ (q_r * s_r.float()[:, None]).T).norm()
    err_gptq = (x @ w.T - x @ (q_g * s_g.float()[:, None]).T).norm()
    assert err_gptq < 0.8 * err_round
    qmax = 2 ** (bits - 1) - 1
    assert torch.equal(q_g, q_g.round()) and q_g.abs().max() <= qmax


def test_gptq_with_clip_search_picks_the_best_candidate_per_row() -> None:
    x = _correlated_inputs(1024, 64, seed=5)
    w = _matrix(24, 64, seed=6)
    h = x.T @ x
    q, s = A.gptq_quantize(w, h, 4, A.CLIP_SEARCH_QUANTILES, block_size=16)

    def out_err(qq: torch.Tensor, ss: torch.Tensor) -> torch.Tensor:
        return (x @ (qq * ss.float()[:, None] - w).T).square().sum(dim=0)

    singles = [out_err(*A.gptq_quantize(w, h, 4, (qt,), block_size=16)) for qt in A.CLIP_SEARCH_QUANTILES]
    best = torch.stack(singles).min(dim=0).values
    assert torch.allclose(out_err(q, s), best, rtol=1e-4, atol=1e-6)


def test_gptq_block_size_does_not_change_the_result() -> None:
    # blocks only reorganise the same error propagation
    x = _correlated_inputs(512, 64, seed=7)
    w = _matrix(16, 64, seed=8)
    h = x.T @ x
    q1, _ = A.gptq_quantize(w, h, 5, block_size=64)
    q2, _ = A.gptq_quantize(w, h, 5, block_size=7)
    assert (q1 != q2).float().mean() < 0.01  # float reassociation may flip a rare tie


def test_batched_gptq_equals_one_matrix_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = []
    for i, rows in enumerate((24, 40, 8)):
        x = _correlated_inputs(512, 64, seed=20 + i)
        w = _matrix(rows, 64, seed=30 + i)
        keep = A.prune_mask(w, 0.2) if i == 1 else None
        jobs.append(A.GPTQJob(w, x.T @ x, keep))
    singles = [A.gptq_quantize(j.weight, j.hessian, 4, A.CLIP_SEARCH_QUANTILES, 16, 0.01, j.keep) for j in jobs]
    for cap in (A.GPTQ_BATCH_ELEMENTS, 1):  # one batch, then one matrix per batch
        monkeypatch.setattr(A, "GPTQ_BATCH_ELEMENTS", cap)
        batched = A.gptq_quantize_many(jobs, 4, A.CLIP_SEARCH_QUANTILES, 16, 0.01)
        for (q1, s1), (q2, s2), job in zip(singles, batched, jobs, strict=True):
            assert q2.shape == job.weight.shape and torch.equal(s1, s2)
            assert (q1 != q2).float().mean() < 0.01  # same sweep; float reassociation may flip a rare tie
    assert torch.all(batched[1][0][~jobs[1].keep] == 0)  # type: ignore[operator]


def test_gptq_survives_a_singular_hessian() -> None:
    x = _correlated_inputs(16, 64)  # rank 16 < 64 columns; no damping: H is singular
    w = _matrix(8, 64)
    q, s = A.gptq_quantize(w, x.T @ x, 6, damp=0.0)
    assert torch.isfinite(q).all() and torch.isfinite(s.float()).all()
    assert (w - q * s.float()[:, None]).abs().max() < 0.5 * float(w.abs().max())


# ---------------------------------------------------------------------------------------------- pruning
def test_prune_mask_zeroes_exactly_the_smallest() -> None:
    w = _matrix(10, 50, seed=9)
    keep = A.prune_mask(w, 0.3)
    assert keep is not None and int((~keep).sum()) == 150
    assert w.abs()[~keep].max() <= w.abs()[keep].min()
    assert A.prune_mask(w, 0.0) is None


def test_pruning_applies_to_large_matrices_only_and_survives_gptq() -> None:
    gen = torch.Generator().manual_seed(0)
    state = {
        "blocks.0.mlp.fc.weight": torch.randn(300, 256, generator=gen),  # 76,800 > 65,536: pruned
        "blocks.0.attn.c_q.weight": torch.randn(64, 64, generator=gen),  # small: untouched
        "blocks.0.attn_scale": torch.randn(64, generator=gen),
    }
    cfg = artifact_cfg(prune_ratio=0.25, use_gptq=True, group_bits={"embeddings": 8, "attention": 6, "mlp": 6,
                                                                          "other": 6})
    x = _correlated_inputs(1024, 256)
    entries, stats = A.quantize_state(state, cfg, {"blocks.0.mlp.fc.weight": x.T @ x})
    out = A.dequantize_state(entries)
    fc = out["blocks.0.mlp.fc.weight"]
    smallest = ~A.prune_mask(state["blocks.0.mlp.fc.weight"], 0.25)  # type: ignore[operator]
    assert torch.all(fc[smallest] == 0)
    assert stats.pruned == 1 and stats.gptq == 1
    assert torch.allclose(out["blocks.0.attn.c_q.weight"], state["blocks.0.attn.c_q.weight"].half().float())


# ---------------------------------------------------------------------------------------------- compression
_BLOBS = [b"", b"a", bytes(range(256)) * 40, torch.randint(-31, 32, (5000,), dtype=torch.int8).numpy().tobytes()]


@pytest.mark.parametrize("compressor", A.COMPRESSORS)
def test_every_compressor_round_trips(compressor: str) -> None:
    for level in (0, 1, A.STRONGEST_LEVEL[compressor]):
        for data in _BLOBS:
            assert A.decompress(A.compress(data, compressor, level), compressor, level) == data


@pytest.mark.parametrize("itemsize", [1, 2, 4])
def test_byte_shuffle_round_trips_and_splits_planes(itemsize: int) -> None:
    data = bytes(range(256)) * itemsize
    shuffled = A.shuffle_bytes(data, itemsize)
    assert A.unshuffle_bytes(shuffled, itemsize) == data
    n = len(data) // itemsize
    for plane in range(itemsize):  # plane p holds byte p of every element, in element order
        assert shuffled[plane * n:(plane + 1) * n] == data[plane::itemsize]


def test_compress_level_limits() -> None:
    assert A.compress_level("zlib", 0) == 9 and A.compress_level("lzma", 6) == 6
    with pytest.raises(KnobError, match="COMPRESS_LEVEL=12"):
        A.compress_level("zlib", 12)


# ---------------------------------------------------------------------------------------------- container
def _mixed_state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    return {
        "tok_emb.weight": torch.randn(1024, 80, generator=gen) * 0.02,  # embeddings, quantized
        "blocks.0.attn.c_q.weight": torch.randn(300, 256, generator=gen) * 0.05,  # attention, quantized
        "blocks.0.attn.c_k.weight": torch.randn(32, 64, generator=gen),  # attention, small: fp16
        "blocks.0.mlp.fc.weight": torch.randn(384, 256, generator=gen) * 0.05,  # mlp, quantized
        "bigram.proj.weight": torch.randn(400, 200, generator=gen),  # other, quantized
        "blocks.0.attn_scale": torch.randn(64, generator=gen),  # scalars, fp32
        "skip_weights": torch.randn(2, 64, generator=gen),  # scalars (control), fp32
        "bigram.scale": torch.tensor(0.05),  # 0-d scalar
    }


def _cfg(compressor: str = "zlib", shuffle: bool = False, level: int = 0) -> A.ArtifactConfig:
    return artifact_cfg(group_bits={"embeddings": 8, "attention": 6, "mlp": 5, "other": 12},
                        compressor=compressor, level=level, byte_shuffle=shuffle)


@pytest.mark.parametrize("compressor", A.COMPRESSORS)
@pytest.mark.parametrize("shuffle", [False, True])
def test_container_round_trips_bit_exactly(compressor: str, shuffle: bool) -> None:
    entries, _ = A.quantize_state(_mixed_state(), _cfg())
    art = A.pack(entries, _cfg(compressor, shuffle))
    back = {e.name: e for e in A.unpack(art.blob)}
    assert set(back) == {e.name for e in entries}
    for e in entries:
        b = back[e.name]
        assert (b.group, b.shape, b.bits) == (e.group, e.shape, e.bits)
        assert b.data.dtype == e.data.dtype and torch.equal(b.data, e.data)
        assert (b.scale is None) == (e.scale is None)
        if e.scale is not None:
            assert torch.equal(b.scale, e.scale)


def test_storage_kinds_per_tensor() -> None:
    entries = {e.name: e for e in A.quantize_state(_mixed_state(), _cfg())[0]}
    assert entries["tok_emb.weight"].data.dtype == torch.int8 and entries["tok_emb.weight"].bits == 8
    assert entries["blocks.0.attn.c_q.weight"].bits == 6
    assert entries["blocks.0.mlp.fc.weight"].bits == 5
    assert entries["bigram.proj.weight"].data.dtype == torch.int16 and entries["bigram.proj.weight"].bits == 12
    assert entries["blocks.0.attn.c_k.weight"].data.dtype == torch.float16
    assert entries["blocks.0.attn_scale"].data.dtype == torch.float32
    assert entries["skip_weights"].data.dtype == torch.float32
    fp16_embed = artifact_cfg(group_bits={"embeddings": 16, "attention": 8, "mlp": 8, "other": 8})
    emb = {e.name: e for e in A.quantize_state(_mixed_state(), fp16_embed)[0]}["tok_emb.weight"]
    assert emb.scale is None and emb.data.dtype == torch.float16


@pytest.mark.parametrize("compressor,shuffle", [("zlib", False), ("lzma", True), ("brotli", False),
                                                ("zstd", True)])
def test_breakdown_is_exact(compressor: str, shuffle: bool) -> None:
    cfg = _cfg(compressor, shuffle)
    entries, _ = A.quantize_state(_mixed_state(), cfg)
    art = A.pack(entries, cfg)
    payloads = A.group_payloads(entries, shuffle)
    for group in A.GROUPS:
        expected = len(A.compress(payloads[group], compressor)) if payloads[group] else 0
        assert art.sections[group] == expected
    assert sum(art.sections.values()) + art.overhead == art.size == len(art.blob)
    line = A.breakdown_line(art, code_bytes=1234)
    fields = dict(re.findall(r"(\w+):(\d+)", line))
    assert list(fields) == ["embeddings", "attention", "mlp", "scalars", "other", "lqer", "overhead", "code"]
    assert sum(int(v) for v in fields.values()) == art.size + 1234


def test_group_payload_holds_every_array_once() -> None:
    entries, _ = A.quantize_state(_mixed_state(), _cfg())
    payloads = A.group_payloads(entries, shuffle=False)
    for group in A.GROUPS:
        expected = 0
        for e in entries:
            if e.group == group:
                expected += e.data.numel() * e.data.element_size()
                expected += 0 if e.scale is None else e.scale.numel() * 2
        assert len(payloads[group]) == expected


def test_artifact_file_gives_the_dequantized_tensors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = _mixed_state()
    entries, _ = A.quantize_state(state, _cfg())
    path = tmp_path / "final_model.mixed.ptz"
    A.write_atomic(path, A.pack(entries, _cfg("brotli", True)).blob)
    loaded = A.load_artifact(path)
    for e in entries:
        ref = e.data.float() if e.scale is None else e.data.float() * e.scale.float()[:, None]
        assert loaded[e.name].dtype == torch.float32
        assert torch.equal(loaded[e.name], ref.reshape(state[e.name].shape))
    # and the dequantized weights are close to the originals (within half a step where quantized)
    for e in entries:
        if e.scale is not None:
            step = e.scale.float()[:, None]
            inside = state[e.name].abs() <= (2 ** (e.bits - 1) - 1) * step
            diff = (loaded[e.name] - state[e.name]).abs()
            assert torch.all(diff[inside] <= step.expand_as(diff)[inside] / 2 + 1e-6)


def test_unpack_rejects_other_files() -> None:
    with pytest.raises(ValueError, match="not a golf artifact"):
        A.unpack(b"PK\x03\x04" + bytes(20))


# ---------------------------------------------------------------------------------------------- roles and labels
def _hp(**values: object) -> Hyperparameters:
    base = {"NUM_LAYERS": 2, "MODEL_DIM": 64, "NUM_HEADS": 4, "NUM_KV_HEADS": 2, "TRAIN_SEQ_LEN": 32,
            "TRAIN_BATCH_TOKENS": 256}
    base.update(values)
    return Hyperparameters.resolve(values=base)


def test_every_parameter_lands_in_its_group() -> None:
    model = GPT(_hp(BIGRAM_VOCAB_SIZE=64, VE_ENABLED=1, VE_LAYERS="0,1", TIE_EMBEDDINGS=0, GATED_ATTENTION=1))
    groups = {name: A.tensor_group(name, p) for name, p in model.named_parameters()}
    for name, group in groups.items():
        if name in ("tok_emb.weight", "lm_head.weight", "bigram.embed.weight", "ve.embed.weight"):
            assert group == "embeddings", name
        elif name.endswith((".c_q.weight", ".c_k.weight", ".c_v.weight", ".attn.proj.weight")):
            assert group == "attention", name
        elif ".mlp." in name:
            assert group == "mlp", name
        elif name in ("bigram.proj.weight", "ve.proj.weight"):
            assert group == "other", name
        else:  # vectors, gains, mixes, skip weights, the attention gate: control tensors
            assert group == "scalars", name


def test_labels() -> None:
    assert A.quant_label(_hp()) == "int8"
    assert A.quant_label(_hp(MATRIX_BITS=6)) == "int6"
    assert A.quant_label(_hp(MATRIX_BITS=6, MLP_BITS=5)) == "mixed_int5_int6"
    assert A.quant_label(_hp(MATRIX_BITS=6, EMBED_BITS=8)) == "int6"  # embeddings are not in the label
    assert A.compressor_label("zlib", 0, False) == "zlib"
    assert A.compressor_label("zlib", 6, False) == "zlib-6"
    assert A.compressor_label("zstd", 0, False) == "zstd-22"
    assert A.compressor_label("lzma", 0, False) == "lzma"
    assert A.compressor_label("lzma", 6, False) == "lzma-6"
    assert A.compressor_label("brotli", 0, True) == "brotli-shuffle"


def test_gptq_reserve_line() -> None:
    assert A.gptq_reserve_line(_hp()) is None
    assert A.gptq_reserve_line(_hp(GPTQ_RESERVE_SECONDS=12, MAX_WALLCLOCK_SECONDS=600)) == \
        "gptq:reserving 12s, effective=588000ms"


# ---------------------------------------------------------------------------------------------- calibration
def test_hessians_are_input_gram_matrices() -> None:
    hp = _hp(MODEL_DIM=128, MLP_MULT=5, NUM_HEADS=4, NUM_KV_HEADS=2)  # fc: 128x640 and the embedding quantize
    torch.manual_seed(0)
    model = GPT(hp)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    cfg = A.ArtifactConfig.from_hp(hp)
    batches = [torch.randint(0, 1024, (2, 32)) for _ in range(3)]
    hessians = A.collect_hessians(model, batches, cfg, Runtime(torch.device("cpu")))
    assert set(hessians) == {f"blocks.{i}.mlp.{n}.weight" for i in (0, 1) for n in ("fc", "proj")} | {
        "tok_emb.weight"}
    # independent: capture the fc inputs with a plain hook, and the final hidden state directly
    seen: list[torch.Tensor] = []
    handle = model.blocks[1].mlp.fc.register_forward_hook(lambda m, a, o: seen.append(a[0].detach().clone()))
    with torch.no_grad():
        hidden = [model.hidden(b) for b in batches]
    handle.remove()
    x = torch.cat([s.reshape(-1, s.size(-1)) for s in seen])
    assert torch.allclose(hessians["blocks.1.mlp.fc.weight"], x.T @ x, rtol=1e-4, atol=1e-4)
    h = torch.cat([t.reshape(-1, t.size(-1)) for t in hidden])
    assert torch.allclose(hessians["tok_emb.weight"], h.T @ h, rtol=1e-4, atol=1e-4)


def test_shared_inputs_get_the_same_hessian() -> None:
    hp = _hp(MODEL_DIM=288, NUM_HEADS=4, NUM_KV_HEADS=4, MLP_MULT=1)  # c_q, c_k, c_v: 288x288 > 65,536
    model = GPT(hp)
    cfg = A.ArtifactConfig.from_hp(hp)
    hessians = A.collect_hessians(model, [torch.randint(0, 1024, (1, 16))], cfg, Runtime(torch.device("cpu")))
    hq, hk, hv = (hessians[f"blocks.0.attn.{n}.weight"] for n in ("c_q", "c_k", "c_v"))
    assert torch.equal(hq, hk) and torch.equal(hq, hv)
    assert hq is not hk  # separate accumulators
