"""Kernel and mean designs for the MFMS-GP over ``[w_1..w_k, s(log m), s(log z)]``.

Two designs, compared in ``bench/README.md``:

* ``"seed"`` - the MFMS-BO paper's choice (namkoong-lab/data-recipes): one scaled product of
  RBF kernels over the mixture block, log model size and log steps, with a linear mean.
* ``"additive"`` - ours: ``s1 * Matern(w) * Matern(m, z) + s2 * Matern(m, z)`` with a linear
  mean in the fidelities. The fidelity-only term carries the shared scaling trend (every
  mixture gets better with size and steps), so the product term only has to model *how the
  mixture effect changes with scale*; that is what decides the target optimum and it is
  small next to the trend, which a single product kernel must fit with one amplitude.
"""

from __future__ import annotations

import torch
from gpytorch.kernels import Kernel, MaternKernel, RBFKernel, ScaleKernel
from gpytorch.means import LinearMean, Mean
from gpytorch.priors import GammaPrior
from torch import Tensor

__all__ = ["KERNEL_DESIGNS", "build_kernel", "build_mean", "ColumnLinearMean"]

KERNEL_DESIGNS = ("additive", "seed")


class ColumnLinearMean(Mean):
    """Linear mean over a subset of input columns (the fidelities), constant elsewhere."""

    def __init__(self, columns: list[int]) -> None:
        super().__init__()
        self.columns = list(columns)
        self.inner = LinearMean(input_size=len(self.columns))

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x[..., self.columns])


def _lengthscale_prior() -> GammaPrior:
    # Inputs live in [0, 1]; this prior keeps lengthscales in roughly [0.1, 2] without
    # forbidding longer ones, the same choice BoTorch made before its dim-scaled priors.
    return GammaPrior(3.0, 6.0)


def build_kernel(design: str, k: int) -> Kernel:
    """Covariance module for ``k`` mixture coordinates plus two fidelity columns."""
    w_dims = tuple(range(k))
    f_dims = (k, k + 1)
    if design == "seed":
        kw = RBFKernel(active_dims=w_dims, lengthscale_prior=_lengthscale_prior())
        km = RBFKernel(active_dims=(k,), lengthscale_prior=_lengthscale_prior())
        kz = RBFKernel(active_dims=(k + 1,), lengthscale_prior=_lengthscale_prior())
        return ScaleKernel(kw * km * kz, outputscale_prior=GammaPrior(2.0, 0.15))
    if design == "additive":
        kw = MaternKernel(
            nu=2.5, ard_num_dims=k, active_dims=w_dims, lengthscale_prior=_lengthscale_prior()
        )
        kf = MaternKernel(
            nu=2.5, ard_num_dims=2, active_dims=f_dims, lengthscale_prior=_lengthscale_prior()
        )
        kf_trend = MaternKernel(
            nu=2.5, ard_num_dims=2, active_dims=f_dims, lengthscale_prior=_lengthscale_prior()
        )
        return ScaleKernel(kw * kf, outputscale_prior=GammaPrior(2.0, 0.15)) + ScaleKernel(
            kf_trend, outputscale_prior=GammaPrior(2.0, 0.15)
        )
    raise ValueError(f"unknown kernel design {design!r}; choose from {KERNEL_DESIGNS}")


def build_mean(design: str, k: int) -> Mean:
    """Mean module: linear in every input (seed) or in the fidelities only (additive)."""
    if design == "seed":
        return LinearMean(input_size=k + 2)
    if design == "additive":
        return ColumnLinearMean([k, k + 1])
    raise ValueError(f"unknown kernel design {design!r}; choose from {KERNEL_DESIGNS}")


def initial_lengthscales(kernel: Kernel, value: float = 0.5) -> None:
    """Start every lengthscale at ``value`` (priors' modes sit near 0.33)."""
    for module in kernel.modules():
        if isinstance(module, (MaternKernel, RBFKernel)):
            module.lengthscale = torch.full_like(module.lengthscale, value)
