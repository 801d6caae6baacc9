"""What a strategy asks for and what comes back: trial specs, measurements, results.

These are plain frozen dataclasses so that the server, the workers and the benchmark harness
can hand them to strategies without any ORM or HTTP types leaking into the library.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mfms_bo.errors import ValidationError

__all__ = ["TrialSpec", "Measurement", "TrialResult", "objective_of", "validate_losses"]


@dataclass(frozen=True)
class TrialSpec:
    """One training run to perform: mixture ``w`` at model size ``m`` for ``steps`` steps.

    ``checkpoints`` are the steps at which the run must report per-domain validation losses;
    ``metadata`` carries strategy bookkeeping (e.g. Hyperband bracket and rung) so that
    strategies can be rebuilt from the history alone after a restart.
    """

    mixture: Mapping[str, float]
    model_size: float
    steps: int
    checkpoints: tuple[int, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Measurement:
    """Per-domain validation losses of a run at one step, and what the run had cost by
    then (GPU-seconds; None when not reported)."""

    step: int
    losses: Mapping[str, float]
    cost: float | None = None


@dataclass(frozen=True)
class TrialResult:
    """A finished or partially finished trial as the strategies see it.

    ``completed`` is False for a failed or abandoned run whose partial learning curve still
    informs the surrogate. ``cost`` is what the run really cost (GPU-seconds or the problem's
    unit); None when unknown.
    """

    spec: TrialSpec
    measurements: tuple[Measurement, ...]
    cost: float | None = None
    completed: bool = True

    @property
    def last_step(self) -> int:
        return max((m.step for m in self.measurements), default=0)


def validate_losses(losses: Mapping[str, float], domains: Sequence[str]) -> dict[str, float]:
    """Check a per-domain loss report: known domains, finite non-negative numbers.

    Missing domains are allowed (a partial report) but at least one domain must be present.
    """
    if not losses:
        raise ValidationError("losses: at least one domain loss is required")
    known = set(domains)
    out: dict[str, float] = {}
    for name, value in losses.items():
        if name not in known:
            raise ValidationError(f"losses: unknown domain {name!r}; known: {sorted(known)}")
        try:
            v = float(value)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"losses[{name!r}]: not a number: {value!r}") from exc
        if not math.isfinite(v):
            raise ValidationError(f"losses[{name!r}]: must be finite, got {v}")
        if v < 0:
            raise ValidationError(f"losses[{name!r}]: must be >= 0, got {v}")
        out[name] = v
    return out


def objective_of(
    losses: Mapping[str, float], weights: Mapping[str, float]
) -> float | None:
    """Weighted objective of one report, or None if a weighted domain is missing."""
    total = 0.0
    for name, w in weights.items():
        if w == 0.0:
            continue
        if name not in losses:
            return None
        total += w * float(losses[name])
    return total
