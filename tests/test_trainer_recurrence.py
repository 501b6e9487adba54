"""Depth recurrence: the records' layer order, encoder/decoder split and switch schedule."""

from __future__ import annotations

from golf.trainer.recurrence import LoopPlan, encoder_decoder, layer_order


def test_two_extra_passes_run_the_segment_three_times() -> None:
    # NUM_LOOPS counts extra passes (the records' convention): 3,4,5 three times, 17 virtual layers
    assert layer_order(11, 3, 5, 2) == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert layer_order(11, 3, 5, 0) == list(range(11))
    assert layer_order(11, 4, 5, 1) == [0, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 10]


def test_encoder_decoder_split_matches_the_records_log_line() -> None:
    # pr1493's log: loop_warmup:enabled encoder:[0, 1, 2, 3, 4, 5, 3, 4] decoder:[5, 3, 4, 5, 6, 7, 8, 9, 10]
    enc, dec = encoder_decoder(layer_order(11, 3, 5, 2))
    assert enc == [0, 1, 2, 3, 4, 5, 3, 4]
    assert dec == [5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert encoder_decoder(list(range(11))) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10])


def test_switch_at_a_fraction_and_the_log_line() -> None:
    plan = LoopPlan(num_layers=11, num_loops=2, loop_start=3, loop_end=5, enable_at=0.35)
    assert plan.initial_passes == 0 and plan.phases == [0, 2] and plan.longest == 17
    assert plan.passes_at(100, 0.349) == 0 and plan.passes_at(101, 0.35) == 2
    assert plan.switch_line(2, 2018, 0.35) == ("layer_loop:enabled step:2018 frac:0.350 "
                                               "encoder:[0, 1, 2, 3, 4, 5, 3, 4] decoder:[5, 3, 4, 5, 6, 7, 8, 9, 10]")


def test_progressive_second_phase() -> None:
    plan = LoopPlan(num_layers=11, num_loops=2, loop_start=3, loop_end=5, enable_at=0.35, phase2_at=0.55)
    assert plan.phases == [0, 1, 2]
    assert [plan.passes_at(0, f) for f in (0.1, 0.35, 0.54, 0.55, 0.9)] == [0, 1, 1, 2, 2]
    assert plan.switch_line(1, 7, 0.4) == ("layer_loop:phase1 step:7 frac:0.400 encoder:[0, 1, 2, 3, 4, 5, 3] "
                                           "decoder:[4, 5, 6, 7, 8, 9, 10]")
    assert plan.switch_line(2, 9, 0.6).startswith("layer_loop:phase2 step:9")


def test_start_conditions() -> None:
    always = LoopPlan(num_layers=6, num_loops=1, loop_start=2, loop_end=3, enable_at=0.0)
    assert always.initial_passes == 1 and always.phases == [1]
    by_step = LoopPlan(num_layers=6, num_loops=1, loop_start=2, loop_end=3, enable_at=0.0, enable_step=50)
    assert by_step.passes_at(49, 0.9) == 0 and by_step.passes_at(50, 0.0) == 1
    off = LoopPlan(num_layers=6, num_loops=0, loop_start=2, loop_end=3, enable_at=0.5)
    assert off.phases == [0] and off.passes_at(10**6, 1.0) == 0


def test_the_switch_lines_parse_back_as_the_records_event() -> None:
    from golf.logparse.events import match_event

    plan = LoopPlan(num_layers=11, num_loops=2, loop_start=3, loop_end=5, enable_at=0.35, phase2_at=0.6)
    for passes, step, frac in ((1, 70, 0.35), (2, 120, 0.6)):
        matched = match_event(plan.switch_line(passes, step, frac))
        assert matched is not None and matched[0].name == "layer_loop"
        assert matched[1] == {"layer_loop_step": step, "layer_loop_frac": frac}
