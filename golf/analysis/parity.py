"""Data-parallel parity: a run on N GPUs against the same run (spec, seed, global batch) on fewer.

More ranks change only the order of floating-point sums, so the curves must agree to that noise; the step time
gives the scaling efficiency. `bench/rank_parity.py` prints this for two logs.
"""

from __future__ import annotations

from golf.logparse import ParsedRun


def rank_parity(one: ParsedRun, many: ParsedRun) -> dict:
    """Per-step train-loss and val_bpb differences, stage differences and scaling of `many` against `one`."""
    world_one, world_many = int(one.config.get("world_size", 1)), int(many.config.get("world_size", 1))
    steps = sorted(s for s in one.curve if "train_loss" in one.curve[s] and "train_loss" in many.curve.get(s, {}))
    loss_diffs = {s: many.curve[s]["train_loss"] - one.curve[s]["train_loss"] for s in steps}
    val_steps = sorted(s for s in one.curve if "val_bpb" in one.curve[s] and "val_bpb" in many.curve.get(s, {}))
    stages = {
        name: {"one": one.stages[name].val_bpb, "many": many.stages[name].val_bpb,
               "diff": many.stages[name].val_bpb - one.stages[name].val_bpb}
        for name in one.stages if name in many.stages
    }
    speedup = efficiency = None
    if one.step_avg_ms and many.step_avg_ms:
        speedup = one.step_avg_ms / many.step_avg_ms
        efficiency = speedup / (world_many / world_one)
    return {
        "world_sizes": [world_one, world_many],
        "steps_compared": len(steps),
        "train_loss_max_abs_diff": max((abs(d) for d in loss_diffs.values()), default=None),
        "train_loss_mean_abs_diff": sum(abs(d) for d in loss_diffs.values()) / len(steps) if steps else None,
        "train_loss": {s: [one.curve[s]["train_loss"], many.curve[s]["train_loss"]] for s in steps},
        "val_bpb": {s: [one.curve[s]["val_bpb"], many.curve[s]["val_bpb"]] for s in val_steps},
        "stages": stages,
        "step_avg_ms": [one.step_avg_ms, many.step_avg_ms],
        "speedup": speedup,
        "scaling_efficiency": efficiency,
        "ttt_time_ms": [one.ttt_time_ms, many.ttt_time_ms],
        "eval_time_ms": [one.eval_time_ms, many.eval_time_ms],
    }
