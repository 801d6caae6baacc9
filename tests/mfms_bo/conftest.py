"""Shared fixtures for the mfms_bo unit tests: small spaces and a tiny simulated problem."""

from __future__ import annotations

import pytest
import torch

from mfms_bo.space import FidelitySpace, MixtureSpace, SearchSpace

SIZES = (20e6, 60e6, 150e6)

# The GPs here are tiny (<= 40 points): intra-op threads only add overhead, and on a busy
# 2-core machine they oversubscribe it (a 40-point fit went from ~0.3 s to ~10 s).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_global_rng() -> None:
    """GP fits draw their linear mean's start from torch's global RNG: pin it per test so
    results don't depend on which tests ran before."""
    torch.manual_seed(0)


@pytest.fixture
def mixtures3() -> MixtureSpace:
    return MixtureSpace(("a", "b", "c"))


@pytest.fixture
def fidelities() -> FidelitySpace:
    return FidelitySpace(model_sizes=SIZES, steps_min=500, steps_max=4000,
                         target_model_size=400e6, checkpoints=4)


@pytest.fixture
def space3(mixtures3: MixtureSpace, fidelities: FidelitySpace) -> SearchSpace:
    return SearchSpace(mixtures3, fidelities)


@pytest.fixture(scope="session")
def sim_problem():
    """The small simulated problem the strategy and harness tests share (k = 3, two sizes)."""
    from mfms_bo.bench.problems.simulated import make_simulated

    return make_simulated("t", k=3, seed=1, model_sizes=[20e6, 60e6], target_model_size=60e6,
                          steps=(500, 4000), checkpoints=4)


def _assert_on_simplex(W, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None,
                       tol: float = 1e-9) -> None:
    """Rows of ``W`` sum to one, are non-negative and (optionally) inside ``[lo, hi]``."""
    W = torch.as_tensor(W, dtype=torch.float64)
    W = W.reshape(-1, W.shape[-1])
    assert torch.all((W.sum(-1) - 1.0).abs() <= tol), W.sum(-1)
    assert torch.all(W >= -tol), W.min()
    if lo is not None:
        assert torch.all(W >= lo - tol), (W - lo).min()
    if hi is not None:
        assert torch.all(W <= hi + tol), (W - hi).max()


@pytest.fixture
def on_simplex():
    """``on_simplex(W, lo=None, hi=None, tol=1e-9)`` asserts every row is a feasible mixture."""
    return _assert_on_simplex
