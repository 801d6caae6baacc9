"""Cost-aware acquisition interface.

An acquisition scores candidate queries ``X`` (``n x d`` GP inputs, a mixture plus the
fidelity it would be run at) given the predicted cost of each; the optimiser maximises it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor

__all__ = ["CostAwareAcquisition"]


class CostAwareAcquisition(ABC):
    """Value of running each candidate, per unit of its cost."""

    @abstractmethod
    def __call__(self, X: Tensor, cost: Tensor) -> Tensor:
        """Score ``n x d`` queries with ``n`` predicted costs; returns ``n`` scores."""
