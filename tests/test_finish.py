"""The final stages (golf/trainer/finish.py): order and format of the lines, sizes, and what each stage scores."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from golf.logparse.parser import parse_text
from golf.trainer import finish
from golf.trainer.artifact import load_artifact
from golf.trainer.bpb import build_luts_from_pieces
from golf.trainer.evaluate import evaluate_plain
from golf.trainer.hparams import Hyperparameters
from golf.trainer.model import GPT, CastedLinear
from golf.trainer.runtime import Runtime

CPU = torch.device("cpu")
SEQ = 32


def luts():  # type: ignore[no-untyped-def]
    pieces = [("control", "<pad>"), ("control", "<s>"), ("control", "</s>"), ("unknown", "<unk>")]
    pieces += [("normal", ("\u2581" if i % 3 else "") + "ab"[i % 2] * (1 + i % 5)) for i in range(4, 1024)]
    return build_luts_from_pieces(pieces, 1024)


def tiny(**knobs: object) -> Hyperparameters:
    # MODEL_DIM 128 with MLP_MULT 5: the MLP matrices (128x640) and the embedding (1024x128) are quantized,
    # the attention matrices (128x128) stay fp16
    values: dict[str, object] = {"NUM_LAYERS": 2, "MODEL_DIM": 128, "MLP_MULT": 5, "NUM_HEADS": 4,
                                 "NUM_KV_HEADS": 2, "TRAIN_SEQ_LEN": SEQ, "TRAIN_BATCH_TOKENS": 4 * SEQ,
                                 "VAL_BATCH_SIZE": 4 * SEQ, "EVAL_BATCH_SEQS": 4, "TTT_CHUNK_TOKENS": 128,
                                 "TTT_BATCH_SEQS": 2, "TTT_EPOCHS": 1, "TTT_LR": 0.01}
    values.update(knobs)
    return Hyperparameters.resolve(values=values)


def model_for(hp: Hyperparameters) -> GPT:
    torch.manual_seed(0)
    model = GPT(hp)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def val_stream() -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    toks = torch.randint(4, 1024, (SEQ * 12 + 1,), generator=gen)
    toks[::50] = 1
    return toks


class FakeLoader:
    """Stands in for the training stream: random batches of the training shape."""

    def __init__(self) -> None:
        self.calls = 0
        self.gen = torch.Generator().manual_seed(3)

    def next_batch(self, global_tokens: int, seq_len: int, accum: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        x = torch.randint(0, 1024, (global_tokens // (accum * seq_len), seq_len + 1), generator=self.gen)
        return x[:, :-1], x[:, 1:]


def run(hp: Hyperparameters, capsys: pytest.CaptureFixture[str], loader: object = None) -> tuple[list[str], dict]:
    model = model_for(hp)
    results = finish.final_stages(model, model.token_losses, hp, Runtime(CPU), val_stream(), luts(), loader)
    return capsys.readouterr().out.splitlines(), results


def _value(lines: list[str], pattern: str) -> str:
    found = [m.group(1) for line in lines if (m := re.match(pattern, line))]
    assert len(found) == 1, (pattern, lines)
    return found[0]


def test_stage_lines_sizes_and_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    hp = tiny(MATRIX_BITS=6, COMPRESSOR="lzma", EVAL_STRIDE=16, TTT_ENABLED=1, CLIP_SEARCH=1)
    lines, results = run(hp, capsys)
    labels = [line.split()[0] for line in lines]
    expected_order = ["pre_quant", "pre_quant_exact", "Serialized", "Code", "Total", "bytes_breakdown",
                      "final_int6_lzma_roundtrip", "final_int6_lzma_roundtrip_exact", "final_int6_sliding_window",
                      "final_int6_sliding_window_exact", "ttt_sliding:start", "legal_ttt", "legal_ttt_exact",
                      "ttt_time:", "total_eval_time:"]
    positions = [next(i for i, lab in enumerate(labels) if lab.startswith(e)) for e in expected_order]
    assert positions == sorted(positions)

    artifact = tmp_path / "final_model.int6.ptz"
    model_bytes = int(_value(lines, r"^Serialized model int6\+lzma: (\d+) bytes$"))
    code_bytes = int(_value(lines, r"^Code size: (\d+) bytes \(.+\)$"))
    total = int(_value(lines, r"^Total submission size int6\+lzma: (\d+) bytes$"))
    assert model_bytes == artifact.stat().st_size and total == model_bytes + code_bytes
    breakdown = dict(re.findall(r"(\w+):(\d+)", _value(lines, r"^bytes_breakdown (.*)$")))
    assert sum(map(int, breakdown.values())) == total and int(breakdown["code"]) == code_bytes
    assert int(breakdown["mlp"]) > 0 and int(breakdown["attention"]) > 0 and int(breakdown["other"]) == 0

    # the roundtrip line scores exactly what the file holds, evaluated independently on a fresh model
    fresh = GPT(hp)
    fresh.load_state_dict(load_artifact(artifact))
    ref = evaluate_plain(fresh.token_losses, val_stream(), luts(), SEQ, 4, Runtime(CPU))
    assert f"final_int6_lzma_roundtrip_exact val_loss:{ref.val_loss:.8f} val_bpb:{ref.val_bpb:.8f}" in lines
    assert results["post_quant"].val_loss == pytest.approx(ref.val_loss, rel=1e-12)
    assert results["pre_quant"].val_loss != results["post_quant"].val_loss  # 6-bit weights do change the score

    # golf's own parser reads the stages and the breakdown back
    parsed = parse_text("\n".join(lines))
    assert set(parsed.stages) == {"pre_quant", "post_quant", "sliding", "post_ttt"}
    assert parsed.final_stage == "post_ttt"
    assert parsed.stages["post_ttt"].val_bpb == pytest.approx(results["post_ttt"].val_bpb, abs=1e-8)
    assert parsed.bytes_breakdown == {k: int(v) for k, v in breakdown.items()}
    assert parsed.total_bytes == total and parsed.quant_label == "int6+lzma"
    assert parsed.non_record_reason is None


def test_baseline_labels_and_no_optional_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    lines, results = run(tiny(), capsys)
    assert any(line.startswith("Serialized model int8+zlib: ") for line in lines)
    assert any(line.startswith("final_int8_zlib_roundtrip_exact ") for line in lines)
    assert (tmp_path / "final_model.int8.ptz").exists()
    assert set(results) == {"pre_quant", "post_quant"}
    assert not any("sliding" in line or "ttt" in line or "non_record" in line for line in lines)


def test_gptq_calibrates_on_training_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    hp = tiny(USE_GPTQ=1, GPTQ_CALIBRATION_BATCHES=2, MATRIX_BITS=5)
    loader = FakeLoader()
    lines, _ = run(hp, capsys, loader)
    model = GPT(hp)
    quantized_linears = sum(1 for m in model.modules() if isinstance(m, CastedLinear) and m.weight.numel() > 65536)
    assert _value(lines, r"^gptq:calibrated (\d+) layers in [\d.]+s$") == str(quantized_linears + 1)  # + the head
    assert loader.calls == 2 * 8  # two training batches of 8 micro-steps (one process)
    assert re.search(r"gptq:5 rounded:0", "\n".join(lines))


def test_pre_quant_ttt_is_non_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    hp = tiny(TTT_PRE_QUANT=1, TTT_LR=0.001)
    assert hp.non_record_reason and "TTT_PRE_QUANT" in hp.non_record_reason
    lines, results = run(hp, capsys)
    assert [line for line in lines if line.startswith("non_record:")] == [f"non_record: {hp.non_record_reason}"]
    assert any(line.startswith("ttt_pre_quant:done optimizer=adamw") for line in lines)
    # the artifact holds the adapted weights: the same artifact without TTT scores differently
    adapted = load_artifact(tmp_path / "final_model.int8.ptz")
    finish.final_stages(model_for(tiny()), model_for(tiny()).token_losses, tiny(), Runtime(CPU), val_stream(),
                        luts(), None)
    plain = load_artifact(tmp_path / "final_model.int8.ptz")
    assert not torch.equal(adapted["blocks.0.mlp.fc.weight"], plain["blocks.0.mlp.fc.weight"])
    assert parse_text("\n".join(lines)).non_record_reason == hp.non_record_reason
    assert "post_ttt" not in results


def test_adapt_first_is_non_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    hp = tiny(TTT_ENABLED=1, TTT_MODE="adapt_first", EVAL_STRIDE=16)
    assert hp.non_record_reason and "adapt_first" in hp.non_record_reason
    lines, results = run(hp, capsys)
    assert [line for line in lines if line.startswith("non_record:")] == [f"non_record: {hp.non_record_reason}"]
    assert any(line.startswith("final_int8_ttt_exact ") for line in lines)
    assert not any(line.startswith("legal_ttt") for line in lines)
    assert results["post_ttt"].val_loss != results["sliding"].val_loss
    parsed = parse_text("\n".join(lines))
    assert parsed.final_stage == "post_ttt" and parsed.non_record_reason == hp.non_record_reason


def test_stages_score_real_weights_not_fake_quantized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    hp = tiny(QAT_ENABLED=1, MATRIX_BITS=4)
    model = model_for(hp)
    model.set_qat(True)
    ref = evaluate_plain(model_for(hp).token_losses, val_stream(), luts(), SEQ, 4, Runtime(CPU))  # QAT off
    results = finish.final_stages(model, model.token_losses, hp, Runtime(CPU), val_stream(), luts(), None)
    assert results["pre_quant"].val_loss == pytest.approx(ref.val_loss, rel=1e-12)
    assert all(float(m.qat_on) == 0.0 for m in model.modules() if isinstance(m, CastedLinear))
