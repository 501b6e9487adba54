"""Depth recurrence: which physical layer runs at each virtual position, and when extra passes switch on.

The records' convention (NUM_LOOPS, LOOP_START, LOOP_END, ENABLE_LOOPING_AT): NUM_LOOPS counts the EXTRA passes
over layers LOOP_START..LOOP_END (inclusive), so NUM_LOOPS=2 runs that segment three times. With LOOP_PHASE2_AT
the switch is progressive: one extra pass from ENABLE_LOOPING_AT, all NUM_LOOPS from LOOP_PHASE2_AT. The virtual
stack splits into a U-Net encoder (the first half, rounded down) and decoder (the rest).
"""

from __future__ import annotations

from dataclasses import dataclass

from .loglines import layer_loop_line


def layer_order(num_layers: int, loop_start: int, loop_end: int, extra_passes: int) -> list[int]:
    """Physical layer per virtual position: the segment loop_start..loop_end repeated `extra_passes` more times."""
    order = list(range(num_layers))
    if extra_passes <= 0:
        return order
    segment = order[loop_start:loop_end + 1]
    return order[:loop_end + 1] + segment * extra_passes + order[loop_end + 1:]


def encoder_decoder(order: list[int]) -> tuple[list[int], list[int]]:
    """The U-Net halves of a virtual stack: skips connect encoder outputs to decoder inputs, last in first out."""
    n_enc = len(order) // 2
    return order[:n_enc], order[n_enc:]


@dataclass(frozen=True)
class LoopPlan:
    """When and how far the segment repeats. Progress is the fraction of training done (steps or time)."""

    num_layers: int
    num_loops: int  # extra passes at full depth (0: no recurrence)
    loop_start: int
    loop_end: int
    enable_at: float  # progress at which the first extra pass(es) switch on (0: from the first step)
    phase2_at: float = 0.0  # > 0: one extra pass from enable_at, all num_loops from phase2_at
    enable_step: int = 0  # golf's RECUR_START_STEP: also switch on at this step (0: unused)

    @property
    def enabled(self) -> bool:
        return self.num_loops > 0

    @property
    def progressive(self) -> bool:
        return self.enabled and self.phase2_at > 0 and self.num_loops > 1

    def passes_at(self, step: int, progress: float) -> int:
        """Extra passes that should be active at this step / progress."""
        if not self.enabled:
            return 0
        by_frac = self.enable_at > 0 and progress >= self.enable_at
        by_step = self.enable_step > 0 and step >= self.enable_step
        if (self.enable_at > 0 or self.enable_step > 0) and not (by_frac or by_step):
            return 0
        if self.progressive and progress < self.phase2_at:
            return 1
        return self.num_loops

    @property
    def initial_passes(self) -> int:
        """Extra passes at step 0 (recurrence with no start condition is on from the first step)."""
        return self.passes_at(0, 0.0)

    @property
    def phases(self) -> list[int]:
        """Every number of extra passes the run goes through, in order (each needs its compiled graph)."""
        if not self.enabled:
            return [0]
        out = [self.initial_passes]
        for passes in ([1] if self.progressive else []) + [self.num_loops]:
            if passes > out[-1]:
                out.append(passes)
        return out

    def order(self, extra_passes: int) -> list[int]:
        return layer_order(self.num_layers, self.loop_start, self.loop_end, extra_passes)

    @property
    def longest(self) -> int:
        return len(self.order(self.num_loops))

    def switch_line(self, extra_passes: int, step: int, progress: float) -> str:
        """The records' log line for a switch (`layer_loop:enabled`, or `layer_loop:phase1/2` when progressive)."""
        enc, dec = encoder_decoder(self.order(extra_passes))
        if self.progressive:
            label = "phase1" if extra_passes < self.num_loops else "phase2"
        else:
            label = "enabled"
        return layer_loop_line(label, step, progress, enc, dec)
