"""SDClip (golf/trainer/sdclip.py) and LQER (golf/trainer/lqer.py), alone and inside the artifact."""

from __future__ import annotations

import dataclasses
import lzma
import re

import numpy as np
import pytest
import torch

from golf.trainer import artifact as A
from golf.trainer import lqer as L
from golf.trainer.hparams import Hyperparameters
from golf.trainer.sdclip import sdclip_importance_factor, sdclip_row_clip

# The records' k and bits per group (#1855's log: matrix 12.85, mlp 11.5, attention 13.0 at int6; embeddings 14.0
# at int7)
RECORD_K = {"other": (12.85, 6), "mlp": (11.5, 6), "attention": (13.0, 6), "embeddings": (14.0, 7)}


def _artifact_cfg(**changes: object) -> A.ArtifactConfig:
    """The default knobs' artifact config with `changes`."""
    return dataclasses.replace(A.ArtifactConfig.from_hp(Hyperparameters.resolve()), **changes)  # type: ignore[arg-type]



def _heavy_tailed(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Student-t (3 degrees of freedom) entries: a bulk plus rare large outliers, like trained weights."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_t(3, size=(rows, cols)).astype(np.float32) * 0.02)


def _mse(w: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> float:
    return float((w - q * scale.float()[:, None]).square().mean())


def test_sdclip_clip_is_k_unbiased_standard_deviations() -> None:
    w = _heavy_tailed(8, 300, seed=0)
    clip = sdclip_row_clip(w, 12.85)
    expected = 12.85 * np.std(w.numpy().astype(np.float64), axis=1, ddof=1)
    assert np.allclose(clip.numpy(), expected, rtol=1e-5)


def _codes_bytes(q: torch.Tensor) -> int:
    return len(lzma.compress(q.to(torch.int8).numpy().tobytes(), preset=9))


def _numpy_sdclip_mse(w: np.ndarray, k: float, bits: int) -> float:
    """SDClip computed apart: clip = k·std (ddof 1), step = clip/qmax as fp16 rounded up, round and clamp."""
    qmax = 2 ** (bits - 1) - 1
    want = (k * w.astype(np.float64).std(axis=1, ddof=1) / qmax).astype(np.float32)
    step = want.astype(np.float16)
    step = np.where(step.astype(np.float32) < want, np.nextafter(step, np.float16(65504)), step).astype(np.float32)
    q = np.clip(np.round(w / step[:, None]), -qmax, qmax)
    return float(np.mean((w - q * step[:, None]).astype(np.float64) ** 2))


@pytest.mark.parametrize("group", sorted(RECORD_K))
def test_sdclip_against_plain_rounding_per_group_at_the_records_k(group: str) -> None:
    """At the records' k the clip (about 13 std) lies beyond most rows' max, so SDClip's step is coarser than the
    plain clip's at the same bits: more error, far fewer bytes. Its gain is at equal bytes: at b bits it is smaller
    than plain rounding at b bits and more accurate than plain rounding at b - 1 bits."""
    k, bits = RECORD_K[group]
    w = _heavy_tailed(256, 512, seed=0)
    sd_q, sd_s = A.quantize_rows(w, bits, quantiles=(), clips=[sdclip_row_clip(w, k)])
    sd_err, sd_bytes = _mse(w, sd_q, sd_s), _codes_bytes(sd_q)
    assert sd_err == pytest.approx(_numpy_sdclip_mse(w.numpy(), k, bits), rel=1e-6)
    same_q, same_s = A.quantize_rows(w, bits)  # the baseline's clip (quantile 0.9999984: about the row max)
    fewer_q, fewer_s = A.quantize_rows(w, bits - 1)
    same_err, same_bytes = _mse(w, same_q, same_s), _codes_bytes(same_q)
    fewer_err, fewer_bytes = _mse(w, fewer_q, fewer_s), _codes_bytes(fewer_q)
    print(f"{group}: k={k} int{bits}: sdclip mse {sd_err:.3e} {sd_bytes} B | plain int{bits} mse {same_err:.3e} "
          f"{same_bytes} B | plain int{bits - 1} mse {fewer_err:.3e} {fewer_bytes} B")
    assert sd_err > same_err and sd_bytes < 0.85 * same_bytes
    assert sd_err < 0.95 * fewer_err


def test_hessian_form_widens_important_rows_and_lambda_zero_is_plain() -> None:
    w = torch.tensor([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0]])
    h = torch.diag(torch.tensor([3.0, 1.0, 3.0, 1.0]))  # columns 0 and 2 carry 3x the input energy
    # by hand: d = [1.5, .5, 1.5, .5]; importance = mean(|w| d) = [.75, .25] / mean .5 = [1.5, .5]
    factor = sdclip_importance_factor(w, h, 0.2)
    assert torch.allclose(factor, torch.tensor([1.1, 0.9]))
    assert torch.equal(sdclip_row_clip(w, 3.0, h, 0.0), sdclip_row_clip(w, 3.0))
    assert torch.allclose(sdclip_row_clip(w, 3.0, h, 0.2), sdclip_row_clip(w, 3.0) * torch.tensor([1.1, 0.9]))


def test_artifact_config_uses_sdclip_per_group_and_search_adds_quantiles() -> None:
    w = _heavy_tailed(300, 256, seed=3)
    cfg = _artifact_cfg(clip_sigmas={"embeddings": 0.0, "attention": 13.0, "mlp": 0.0, "other": 0.0})
    assert cfg.clip_quantiles("attention") == () and len(cfg.extra_clips("blocks.0.attn.c_q.weight", w, None)) == 1
    assert cfg.clip_quantiles("mlp") == (A.DEFAULT_CLIP_QUANTILE,) and cfg.extra_clips("blocks.0.mlp.fc.weight", w,
                                                                                         None) == []
    entries = {e.name: e for e in A.quantize_state({"blocks.0.attn.c_q.weight": w}, cfg)[0]}
    expected = A.row_scales(sdclip_row_clip(w, 13.0), 2 ** 7 - 1)  # 8 bits by default
    assert torch.equal(entries["blocks.0.attn.c_q.weight"].scale, expected)


def test_gptq_with_sdclip_uses_the_sdclip_scales() -> None:
    w = _heavy_tailed(64, 128, seed=4)
    x = torch.randn(512, 128)
    h = x.T @ x
    q, scale = A.gptq_quantize(w, h, 6, quantiles=(), clips=[sdclip_row_clip(w, 12.85)])
    assert torch.equal(scale, A.row_scales(sdclip_row_clip(w, 12.85), 31))
    # GPTQ still lowers the output error against rounding at the same scales
    q_round = torch.clamp(torch.round(w / scale.float()[:, None]), -31, 31)

    def out_err(codes: torch.Tensor) -> float:
        d = codes * scale.float()[:, None] - w
        return float(((d @ h) * d).sum())

    assert out_err(q) < out_err(q_round)


# ---------------------------------------------------------------------------------------------- LQER
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("bits", [4, 6])
def test_factor_quantization_is_within_half_a_step(asym: bool, bits: int) -> None:
    x = torch.randn(4, 203) * torch.tensor([[1.0], [0.1], [3.0], [0.01]])
    f = L.quantize_factor(x, bits, asym, group=64)
    back = f.dequantize()
    if asym:
        assert f.scale.shape == (4, 4) and f.zero is not None and f.zero.shape == (4, 4)
        step = f.scale.float().repeat_interleave(64, dim=1)[:, :203]
        assert int(f.codes.min()) >= -(2 ** (bits - 1)) and int(f.codes.max()) <= 2 ** (bits - 1) - 1
    else:
        assert f.scale.shape == (4,) and f.zero is None
        step = f.scale.float()[:, None].expand_as(x)
    # within half a step, plus the fp16 offset's rounding (at most a part in 2^11 of the group's values)
    assert torch.all((back - x).abs() <= step / 2 + x.abs().amax(dim=1, keepdim=True) * 2.0 ** -10)


def test_error_factors_are_the_best_low_rank_approximation() -> None:
    gen = torch.Generator().manual_seed(5)
    u = torch.linalg.qr(torch.randn(50, 50, generator=gen)).Q
    v = torch.linalg.qr(torch.randn(40, 40, generator=gen)).Q
    s = torch.tensor([10.0, 5.0, 2.0, 1.0] + [0.1] * 36)
    e = u[:, :40] @ torch.diag(s) @ v.T
    a, b = L.error_factors(e, 3)
    assert a.shape == (3, 50) and b.shape == (3, 40)
    residual = float((e - a.T @ b).square().sum())
    assert residual == pytest.approx(float(s[3:].square().sum()), rel=1e-4)  # Eckart-Young: the rest of σ²


def test_worst_tensors_order() -> None:
    assert L.worst_tensors({"a": 1.0, "b": 3.0, "c": 3.0, "d": 2.0}, 3) == ["b", "c", "d"]


@pytest.mark.parametrize("asym", [False, True])
def test_lqer_lowers_the_error_of_the_tensors_it_picks(asym: bool) -> None:
    state = {
        "blocks.0.mlp.fc.weight": _heavy_tailed(384, 256, seed=6) * 3.0,  # the largest error
        "blocks.0.attn.c_q.weight": _heavy_tailed(300, 256, seed=7),
        "bigram.proj.weight": _heavy_tailed(300, 240, seed=8) * 0.5,  # the smallest: not picked with top_k=2
    }
    plain_cfg = _artifact_cfg(group_bits={"embeddings": 8, "attention": 4, "mlp": 3, "other": 4})
    cfg = _artifact_cfg(group_bits=plain_cfg.group_bits,
                        lqer=L.LQERSettings(rank=4, top_k=2, factor_bits=4, asym=asym, group=64))
    plain_entries, _ = A.quantize_state(state, plain_cfg)
    entries, stats = A.quantize_state(state, cfg)
    plain, corrected = A.dequantize_state(plain_entries), A.dequantize_state(entries)

    def err(name: str, dq: dict[str, torch.Tensor]) -> float:
        return float((state[name] - dq[name]).square().sum())

    errors = {n: err(n, plain) for n in state}
    picked = sorted(errors, key=errors.get, reverse=True)[:2]  # type: ignore[arg-type]
    assert stats.lqer == sorted(picked) and "lqer:" in stats.line()
    for name in picked:
        # an exact rank-4 fit would remove the top four σ² of the error; the 4-bit factors keep most of that gain
        sigma = torch.linalg.svdvals(state[name] - plain[name])
        gain = errors[name] - err(name, corrected)
        assert gain > 0.7 * float(sigma[:4].square().sum()), name
    assert torch.equal(corrected["bigram.proj.weight"], plain["bigram.proj.weight"])  # not picked: untouched
    factors = [e for e in entries if e.group == "lqer"]
    assert sorted(e.name for e in factors) == sorted(n + s for n in picked for s in A.LQER_SUFFIXES)


def test_lqer_bytes_are_in_the_breakdown_which_sums_to_the_total(tmp_path) -> None:  # type: ignore[no-untyped-def]

    state = {"blocks.0.mlp.fc.weight": _heavy_tailed(384, 256, seed=9),
             "blocks.0.attn.c_q.weight": _heavy_tailed(300, 256, seed=10)}
    cfg = _artifact_cfg(group_bits={"embeddings": 8, "attention": 5, "mlp": 5, "other": 5}, compressor="lzma",
                        lqer=L.LQERSettings(rank=4, top_k=1, factor_bits=4, asym=True, group=64))
    entries, _ = A.quantize_state(state, cfg)
    art = A.pack(entries, cfg)
    factor_payload = A.group_payloads(entries, False)["lqer"]
    # rank 4 x (384 + 256) int8 codes, + fp16 scale and offset per 64 values: 4 x (6 + 4) groups x 2 x 2 bytes
    assert len(factor_payload) == 4 * (384 + 256) + 4 * (6 + 4) * 4
    assert art.sections["lqer"] == len(A.compress(factor_payload, "lzma")) > 0
    fields = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", A.breakdown_line(art, code_bytes=777))}
    assert fields["lqer"] == art.sections["lqer"] and sum(fields.values()) == art.size + 777
    # the file reads back to the corrected weights, bit for bit
    path = tmp_path / "m.ptz"
    A.write_atomic(path, art.blob)
    loaded = A.load_artifact(path)
    direct = A.dequantize_state(entries)
    assert set(loaded) == set(state) and all(torch.equal(loaded[n], direct[n]) for n in state)


def test_final_stages_with_sdclip_lqer_and_pergroup(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """The knobs reach the artifact: the lqer section is in the breakdown, which the parser reads and which sums to
    the total; the file scores what it holds."""

    from golf.logparse.parser import parse_text
    from tests.test_finish import _value, run, tiny

    monkeypatch.chdir(tmp_path)
    hp = tiny(MATRIX_BITS=6, MATRIX_CLIP_SIGMAS=12.85, MLP_CLIP_SIGMAS=11.5, EMBED_CLIP_SIGMAS=14.0, EMBED_BITS=7,
              LQER_ENABLED=1, LQER_TOP_K=2, LQER_ASYM_ENABLED=1, COMPRESSOR="pergroup", BYTE_SHUFFLE=1)
    lines, results = run(hp, capsys)
    total = int(_value(lines, r"^Total submission size int6\+pergroup-shuffle: (\d+) bytes$"))
    breakdown = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", _value(lines, r"^bytes_breakdown (.*)$"))}
    assert breakdown["lqer"] > 0 and sum(breakdown.values()) == total
    assert re.search(r"^quantized: .* lqer:\S+", "\n".join(lines), re.M)
    parsed = parse_text("\n".join(lines))
    assert parsed.bytes_breakdown == breakdown and parsed.total_bytes == total
    assert parsed.stages["post_quant"].val_bpb == pytest.approx(results["post_quant"].val_bpb, abs=1e-8)
    assert (tmp_path / "final_model.int6.ptz").stat().st_size == total - breakdown["code"]


def test_self_generated_calibration_sequences(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """GPTQ_CALIB_SEQS: BOS-started samples of the model, reproducible by seed; GPTQ then reads no training data,
    and the calibration time is logged against the training clock."""
    from golf.trainer import finish
    from golf.trainer.runtime import Runtime
    from golf.trainer.selfcalib import BOS_ID, generate_sequences, rank_share
    from tests.test_finish import CPU, FakeLoader, luts, model_for, tiny, val_stream

    hp = tiny(USE_GPTQ=1, MATRIX_BITS=6, GPTQ_CALIB_SEQS=3)
    model = model_for(hp).eval()
    first = generate_sequences(model, 3, 8, 2, torch.device("cpu"), seed=7)
    again = generate_sequences(model, 3, 8, 2, torch.device("cpu"), seed=7)
    assert [tuple(b.shape) for b in first] == [(2, 8), (1, 8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(bool((b[:, 0] == BOS_ID).all()) and int(b.max()) < hp.vocab_size for b in first)
    assert [rank_share(10, r, 4) for r in range(4)] == [3, 3, 2, 2]

    monkeypatch.chdir(tmp_path)
    loader = FakeLoader()
    model = model_for(hp)
    finish.final_stages(model, model.token_losses, hp, Runtime(CPU), val_stream(), luts(), loader, train_ms=1234.0)
    lines = capsys.readouterr().out.splitlines()
    assert loader.calls == 0  # no training batch was read
    assert sum(line.startswith("gptq:calibrated ") for line in lines) == 1
    assert sum(line.startswith("gptq:self_generated seqs:3 seq_len:32 time:") for line in lines) == 1
    budget = [line for line in lines if line.startswith("train_budget: ")]
    gptq_ms = int(re.search(r"gptq_time:(\d+)ms", budget[0]).group(1))  # type: ignore[union-attr]
    assert f"total:{1234 + gptq_ms}ms" in budget[0] and "train_time:1234ms" in budget[0]
