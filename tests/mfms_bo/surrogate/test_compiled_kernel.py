"""The plain-torch kernel evaluator must agree with GPyTorch on fitted kernels."""

from __future__ import annotations

import pytest
import torch
from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel

from mfms_bo.surrogate.kernels import (
    KERNEL_DESIGNS,
    PowerDecayKernel,
    SharedFractionKernel,
    build_kernel,
    compile_kernel,
)


def _randomise(kernel: torch.nn.Module, g: torch.Generator) -> None:
    for module in kernel.modules():
        if isinstance(module, (MaternKernel, RBFKernel)):
            module.lengthscale = 0.1 + torch.rand(module.lengthscale.shape, generator=g,
                                                  dtype=torch.float64)
        if isinstance(module, ScaleKernel):
            module.outputscale = 0.2 + torch.rand((), generator=g, dtype=torch.float64)
        if isinstance(module, SharedFractionKernel):
            module._set_fraction(0.05 + 0.9 * torch.rand((), generator=g, dtype=torch.float64))
        if isinstance(module, PowerDecayKernel):
            module._set_rate(0.2 + 2.0 * torch.rand((), generator=g, dtype=torch.float64))


@pytest.mark.parametrize("design", KERNEL_DESIGNS)
@pytest.mark.parametrize("k", [3, 8])
def test_compiled_kernel_matches_gpytorch(design: str, k: int) -> None:
    g = torch.Generator().manual_seed(k)
    kernel = build_kernel(design, k).to(torch.float64)
    _randomise(kernel, g)
    a = torch.rand(37, k + 2, generator=g, dtype=torch.float64)
    b = torch.rand(23, k + 2, generator=g, dtype=torch.float64)
    fn = compile_kernel(kernel)
    assert fn is not None
    with torch.no_grad():
        full = kernel(a, b).to_dense()
        diag = kernel(a[:23], b, diag=True).to_dense()
    torch.testing.assert_close(fn(a, b, False), full, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(fn(a[:23], b, True), diag, rtol=1e-9, atol=1e-12)
    # Identical rows: distance zero, kernel equals the total output scale.
    torch.testing.assert_close(fn(a, a, True), kernel(a, a, diag=True).to_dense())


@pytest.mark.parametrize("nu", [0.5, 1.5, 2.5])
def test_compiled_matern_without_active_dims(nu: float) -> None:
    kernel = MaternKernel(nu=nu, ard_num_dims=4).to(torch.float64)
    kernel.lengthscale = torch.tensor([[0.3, 0.7, 1.1, 0.5]], dtype=torch.float64)
    x = torch.rand(11, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(compile_kernel(kernel)(x, x, False), kernel(x, x).to_dense())


def test_unknown_kernel_type_falls_back() -> None:
    from gpytorch.kernels import PeriodicKernel

    assert compile_kernel(ScaleKernel(PeriodicKernel())) is None


@pytest.mark.parametrize("design", KERNEL_DESIGNS)
def test_compiled_kernel_on_a_grid_with_repeated_rows(design: str) -> None:
    """Acquisition grids repeat mixtures across fidelities; the deduplicating path must give
    the same matrix as the direct one."""
    k = 5
    g = torch.Generator().manual_seed(3)
    kernel = build_kernel(design, k).to(torch.float64)
    _randomise(kernel, g)
    W = torch.rand(40, k, generator=g, dtype=torch.float64)
    F = torch.rand(6, 2, generator=g, dtype=torch.float64)
    grid = torch.cat([W.repeat(6, 1), F.repeat_interleave(40, 0)], dim=1)  # 240 rows
    train = torch.rand(150, k + 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        expected = kernel(train, grid).to_dense()
    torch.testing.assert_close(compile_kernel(kernel)(train, grid, False), expected,
                               rtol=1e-9, atol=1e-12)


def test_distinct_rows_is_exact_even_on_key_collisions() -> None:
    from mfms_bo.surrogate.kernels import _distinct_rows

    x = torch.tensor([[0.2, 0.3], [0.1, 0.4], [0.2, 0.3], [0.0, 0.0]], dtype=torch.float64)
    u, inv = _distinct_rows(x)
    assert u.shape[0] == 3
    assert torch.equal(u[inv], x)
    # Two different rows with the same projection key: nothing may be merged wrongly.
    proj = torch.linspace(1.0, 2.0, 2, dtype=torch.float64) + 0.123456789
    a = torch.tensor([1.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0, float(a @ proj / proj[1])], dtype=torch.float64)
    y = torch.stack([a, b, a])
    u, inv = _distinct_rows(y)
    assert torch.equal(u[inv], y)


def test_power_decay_is_a_power_law_coefficient() -> None:
    """``exp(-r u) exp(-r u')``: the covariance of ``a * N^-alpha`` with a random
    coefficient ``a``, so a mixture effect seen at two sizes is extrapolated along the
    same power law (the ratio of covariances depends on the size difference only)."""
    kernel = PowerDecayKernel(column=1).to(torch.float64)
    kernel._set_rate(0.7)
    x = torch.tensor([[0.3, 0.0], [0.3, 0.5], [0.9, 1.0], [0.1, 1.6]], dtype=torch.float64)
    with torch.no_grad():
        K = kernel(x, x).to_dense()
    u = x[:, 1]
    torch.testing.assert_close(K, torch.exp(-0.7 * (u[:, None] + u[None, :])))
    assert torch.linalg.matrix_rank(K) == 1
