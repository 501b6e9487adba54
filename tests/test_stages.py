"""The stage registry (golf/trainer/stages.py) and the places that iterate it."""

from __future__ import annotations

import pytest

from golf.trainer.stages import STAGES, final_stage, pre_ttt_stage, stage_of, trainer_labels


@pytest.mark.parametrize(("label", "stage"), [
    ("pre_quant", "pre_quant"), ("pre_quant_exact", "pre_quant"), ("DIAGNOSTIC post_ema", "pre_quant"),
    ("pre-quantization post-ema", "pre_quant"), ("post-prequant-ttt", "pre_quant"),
    ("diagnostic quantized", "post_quant"), ("quantized", "post_quant"), ("final_int8_zlib_roundtrip", "post_quant"),
    ("final_int6_roundtrip_exact", "post_quant"), ("final_int6_sliding_window", "sliding"),
    ("quantized_sliding_window", "sliding"), ("final_ngram_mix", "sliding"), ("legal_ttt", "post_ttt"),
    ("ttt_sliding:done", "post_ttt"), ("quantized_ttt_lora", "post_ttt"), ("final_int6_ttt_exact", "post_ttt"),
    ("step_avg", None), ("val", None),
])
def test_labels_map_to_stages_by_the_rules_order(label: str, stage: str | None) -> None:
    assert stage_of(label) == stage


def test_final_and_pre_ttt_scores_follow_precedence() -> None:
    assert final_stage({"pre_quant", "post_quant", "sliding", "post_ttt"}) == "post_ttt"
    assert final_stage({"post_quant", "pre_quant"}) == "post_quant"
    assert final_stage(set()) is None
    assert pre_ttt_stage({"pre_quant", "post_quant", "sliding", "post_ttt"}) == "sliding"
    assert pre_ttt_stage({"pre_quant", "post_quant", "post_ttt"}) == "post_quant"
    assert pre_ttt_stage({"pre_quant"}) is None


def test_trainer_labels_fill_quant_compressor_and_ttt_mode() -> None:
    assert trainer_labels("int6", "brotli", "legal_ttt") == {
        "pre_quant": "pre_quant", "post_quant": "final_int6_brotli_roundtrip",
        "sliding": "final_int6_sliding_window", "post_ttt": "legal_ttt"}
    assert trainer_labels("int8", "zlib", "final_int8_ttt")["post_ttt"] == "final_int8_ttt"


def test_every_consumer_lists_every_stage() -> None:
    from golf.analysis.compare import METRIC_ROWS
    from golf.analysis.groups import BPB_METRICS, SUMMARY_FIELDS
    from golf.export.readme import RESULT_COLUMNS
    from golf.launch.live import STAGE_ROWS, expected_stages
    from golf.store.models import Run

    columns = {c.name for c in Run.__table__.columns}  # type: ignore[attr-defined]
    for stage in STAGES:
        assert {stage.bpb_field, stage.loss_field} <= columns
        assert stage.bpb_field in {m.field for m in METRIC_ROWS}
        assert {stage.bpb_field, stage.loss_field} <= set(SUMMARY_FIELDS) and stage.bpb_field in BPB_METRICS
        assert stage.bpb_field in {key for _, key, _ in RESULT_COLUMNS}
        assert (stage.name, stage.live_label) in STAGE_ROWS
    assert expected_stages({}) == ["pre_quant", "post_quant"]
    assert expected_stages({"EVAL_STRIDE": "64", "TTT_ENABLED": "1"}) == [s.name for s in STAGES]
    assert expected_stages({"EVAL_STRIDE": "0", "TTT_ENABLED": "1"}) == ["pre_quant", "post_quant", "post_ttt"]
