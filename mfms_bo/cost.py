"""Cost of a trial: a params x steps prior refined by what runs really cost.

Training cost is close to ``6 * params * tokens`` FLOPs, so ``cost(m, z) = c * m * z`` with
one unknown rate ``c`` (seconds per parameter-step) is the prior. Observed costs set the
global rate (their geometric mean) and a per-size rate (shrunk towards the global one with
``prior_strength`` pseudo-observations), so that sizes that run less efficiently than the
FLOP count says (small models are often overhead-bound) get their own rate.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mfms_bo.errors import ValidationError

__all__ = ["CostModel"]


class CostModel:
    """``cost(m, z) = rate(m) * m * z``; rates learned from observed costs.

    Args:
        rate: prior cost per parameter-step (any unit, e.g. GPU-seconds).
        fixed_cost: per-trial overhead (start-up, evaluation) added to every prediction.
        prior_strength: pseudo-observations of the global rate behind each size's rate.
    """

    def __init__(self, rate: float = 1.0, fixed_cost: float = 0.0,
                 prior_strength: float = 1.0) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValidationError("cost rate must be a positive finite number")
        if not (math.isfinite(fixed_cost) and fixed_cost >= 0):
            raise ValidationError("fixed_cost must be >= 0")
        self.prior_log_rate = math.log(rate)
        self.fixed_cost = float(fixed_cost)
        self.prior_strength = float(prior_strength)
        self._sizes: dict[float, list[float]] = {}

    def observe(self, model_size: float, steps: float, cost: float) -> None:
        """Record that a run of ``model_size`` for ``steps`` steps cost ``cost``."""
        if not (math.isfinite(cost) and cost > 0):
            raise ValidationError(f"cost: must be a positive finite number, got {cost}")
        if model_size <= 0 or steps <= 0:
            raise ValidationError("cost: model_size and steps must be positive")
        net = max(cost - self.fixed_cost, 1e-12 * cost)
        self._sizes.setdefault(float(model_size), []).append(
            math.log(net / (float(model_size) * float(steps)))
        )

    def _global_log_rate(self) -> float:
        # The prior rate is a unit-free guess (1 per parameter-step by default): once any run
        # reports a cost, the observed rates set the scale, or an unrun size would inherit
        # a rate off by the unit conversion (GPU-hours per parameter-step is ~1e-12).
        logs = [v for vs in self._sizes.values() for v in vs]
        if not logs:
            return self.prior_log_rate
        return sum(logs) / len(logs)

    def log_rate(self, model_size: float) -> float:
        """Posterior log-rate for one size: its own runs shrunk towards the global rate."""
        g = self._global_log_rate()
        own = self._sizes.get(float(model_size), [])
        s = self.prior_strength
        return (s * g + sum(own)) / (s + len(own))

    def predict(self, model_size: Tensor | float, steps: Tensor | float) -> Tensor:
        """Predicted cost of runs (broadcasting tensors of sizes and steps)."""
        m = torch.as_tensor(model_size, dtype=torch.float64)
        z = torch.as_tensor(steps, dtype=torch.float64)
        m, z = torch.broadcast_tensors(m, z)
        # A candidate grid repeats a handful of ladder sizes thousands of times: work out
        # each distinct size's rate once (a per-element loop was 6% of a batch proposal).
        sizes, inverse = torch.unique(m.reshape(-1), return_inverse=True)
        rates = torch.tensor([math.exp(self.log_rate(float(v))) for v in sizes.tolist()],
                             dtype=torch.float64)
        return self.fixed_cost + rates[inverse].reshape(m.shape) * m * z
