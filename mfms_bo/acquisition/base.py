"""Cost-aware acquisition interface.

An acquisition scores candidate queries ``X`` (``n x d`` GP inputs, a mixture plus the
fidelity it would be run at) given the predicted cost of each; the optimiser maximises it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["CostAwareAcquisition", "ModelAveragedAcquisition"]


class CostAwareAcquisition(ABC):
    """Value of running each candidate, per unit of its cost."""

    @abstractmethod
    def __call__(self, X: Tensor, cost: Tensor) -> Tensor:
        """Score ``n x d`` queries with ``n`` predicted costs; returns ``n`` scores."""


class ModelAveragedAcquisition(CostAwareAcquisition):
    """Weighted average of one acquisition per surrogate of an ensemble.

    Why average the acquisition and not score one moment-matched GP: KG and EI are
    nonlinear in the posterior, and a mixture of a "small runs transfer" and a "they do
    not" hypothesis is bimodal in what a cheap run would reveal; averaging keeps each
    hypothesis's value of that run (integrated acquisition, Snoek et al. 2012).
    """

    def __init__(self, parts: list[CostAwareAcquisition], weights: Tensor) -> None:
        if not parts or len(parts) != weights.numel():
            raise ValueError("ModelAveragedAcquisition: need one weight per acquisition")
        self.parts = parts
        self.weights = weights.to(torch.float64).reshape(-1)

    def __call__(self, X: Tensor, cost: Tensor) -> Tensor:
        total = self.weights[0] * self.parts[0](X, cost)
        for w, acq in zip(self.weights[1:], self.parts[1:], strict=True):
            total = total + w * acq(X, cost)
        return total
