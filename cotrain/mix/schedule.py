"""Step -> per-source target weights, from the phase list (constant, or a linear ramp into a phase).

Inside the first `ramp_steps` of a phase the weights move linearly from the previous phase's weights
to this phase's: at ramp offset i (0-based) the mix is prev + (cur - prev) * (i + 1) / (ramp_steps + 1),
so no step repeats the previous phase exactly and the step after the ramp is exactly the new phase.
After the last phase the last phase's weights continue.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from cotrain.mix.resolve import ResolvedPhase


@dataclass(frozen=True)
class Schedule:
    """The phase weights at any step, with ramps between phases."""

    phases: tuple[ResolvedPhase, ...]

    @property
    def starts(self) -> list[int]:
        out, at = [], 0
        for p in self.phases:
            out.append(at)
            at += p.steps
        return out

    def phase_index(self, step: int) -> int:
        return max(0, min(bisect_right(self.starts, step) - 1, len(self.phases) - 1))

    def weights_at(self, step: int) -> tuple[float, ...]:
        i = self.phase_index(step)
        phase = self.phases[i]
        offset = step - self.starts[i]
        if i == 0 or offset >= phase.ramp_steps or offset < 0:
            return phase.weights
        frac = (offset + 1) / (phase.ramp_steps + 1)
        prev = self.phases[i - 1].weights
        return tuple(p + (c - p) * frac for p, c in zip(prev, phase.weights))


def normalised(weights: Sequence[float]) -> list[float]:
    """The weights divided by their sum."""
    total = float(sum(weights))
    return [w / total for w in weights]
