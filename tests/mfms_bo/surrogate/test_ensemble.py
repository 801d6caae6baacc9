"""Tests for mfms_bo.surrogate.ensemble: averaging over the size lengthscale."""

from __future__ import annotations

import math

import pytest
import torch
from gpytorch.priors import GammaPrior

from mfms_bo.acquisition import ModelAveragedAcquisition
from mfms_bo.surrogate import MFMSGP, SurrogateConfig, SurrogateEnsemble, size_lengthscale_ensemble

NOISE_SD = 0.005


def _mixtures(n: int, g: torch.Generator) -> torch.Tensor:
    e = -torch.log(torch.rand(n, 3, generator=g, dtype=torch.float64))
    return e / e.sum(-1, keepdim=True)


def _runs(sizes: list[float], n_per_size: int, flip: bool, seed: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs at the given scaled sizes; the mixture effect keeps its sign across sizes
    (``flip=False``) or reverses between the smallest and the largest (``flip=True``)."""
    g = torch.Generator().manual_seed(seed)
    parts_X, parts_y = [], []
    for s in sizes:
        W = _mixtures(n_per_size, g)
        z = torch.rand(n_per_size, 1, generator=g, dtype=torch.float64)
        X = torch.cat([W, torch.full((n_per_size, 1), s, dtype=torch.float64), z], -1)
        sign = (1.0 - 2.0 * s) if flip else 1.0
        f = 2.0 - 0.5 * s - 0.2 * z[:, 0] + sign * 0.3 * (W[:, 0] - 0.4)
        parts_X.append(X)
        parts_y.append(f + NOISE_SD * torch.randn(n_per_size, generator=g, dtype=torch.float64))
    return torch.cat(parts_X), torch.cat(parts_y)


def _weight_of(model: MFMSGP | SurrogateEnsemble, lengthscale: float) -> float:
    if isinstance(model, MFMSGP):
        return 1.0 if math.isclose(model.size_lengthscale(), lengthscale, rel_tol=0.1) else 0.0
    return sum(float(w) for ls, w in zip(model.size_lengthscales(), model.weights, strict=True)
               if math.isclose(ls, lengthscale, rel_tol=1e-6))


@pytest.fixture(scope="module")
def one_size_gp() -> MFMSGP:
    X, y = _runs([0.0], 30, flip=False, seed=0)
    return MFMSGP.fit(X, y, config=SurrogateConfig(maxiter=60))


def test_log_marginal_likelihood_matches_the_gaussian_density(one_size_gp):
    gp = one_size_gp
    with torch.no_grad():
        K = gp._k(gp.train_X, gp.train_X) + gp.noise * torch.eye(gp.train_X.shape[0],
                                                                 dtype=torch.float64)
        mean = gp._m(gp.train_X)
        y = (gp.train_y - gp.y_mean) / gp.y_std
        expected = torch.distributions.MultivariateNormal(mean, K).log_prob(y)
    assert gp.log_marginal_likelihood() == pytest.approx(float(expected), rel=1e-6, abs=1e-6)


def test_with_size_lengthscale_changes_only_that_lengthscale(one_size_gp):
    gp = one_size_gp
    before = {k: v.clone() for k, v in gp.hyperparameters().items()}
    alt = gp.with_size_lengthscale(1.7)
    assert alt.size_lengthscale() == pytest.approx(1.7)
    assert gp.size_lengthscale() != pytest.approx(1.7)  # the original is untouched
    changed = [k for k, v in alt.hyperparameters().items() if not torch.equal(v, before[k])]
    assert len(changed) == 1 and "lengthscale" in changed[0]


def test_data_at_one_size_leave_the_prior_in_charge(one_size_gp):
    # Mixtures compared at one size say little about how effects carry across sizes: every
    # value keeps weight, in about the proportions of the lengthscale prior.
    ens = size_lengthscale_ensemble(one_size_gp, [0.6, 1.0])
    assert isinstance(ens, SurrogateEnsemble) and len(ens.members) == 3
    assert float(ens.weights.min()) > 0.03
    prior = GammaPrior(3.0, 6.0)
    ratio = float((prior.log_prob(torch.tensor(0.6)) - prior.log_prob(torch.tensor(1.0))).exp())
    observed = _weight_of(ens, 0.6) / _weight_of(ens, 1.0)
    assert 0.5 * ratio < observed < 2.0 * ratio


def test_size_lengthscale_log_prior_reads_the_factor_prior(one_size_gp):
    alt = one_size_gp.with_size_lengthscale(0.8)
    expected = float(GammaPrior(3.0, 6.0).log_prob(torch.tensor(0.8)))
    assert alt.size_lengthscale_log_prior() == pytest.approx(expected)


def test_evidence_settles_the_lengthscale_once_sizes_disagree():
    # Effects that reverse between the smallest and the largest size rule out a long
    # lengthscale (which says they keep their sign).
    X, y = _runs([0.0, 0.5, 1.0], 20, flip=True, seed=1)
    gp = MFMSGP.fit(X, y, config=SurrogateConfig(maxiter=60))
    ens = size_lengthscale_ensemble(gp, [0.6, 1.0, 3.0])
    assert _weight_of(ens, 3.0) == 0.0  # pruned
    assert _weight_of(ens, 1.0) < 0.05
    # Effects that keep their sign favour the long values over the short fitted one.
    X, y = _runs([0.0, 0.5, 1.0], 20, flip=False, seed=1)
    gp = MFMSGP.fit(X, y, config=SurrogateConfig(maxiter=60))
    with torch.no_grad():
        short = gp.with_size_lengthscale(0.15)
    ens = size_lengthscale_ensemble(short, [1.0, 3.0])
    assert _weight_of(ens, 0.15) < 0.05


def test_ensemble_predicts_the_mixture_moments(one_size_gp):
    ens = size_lengthscale_ensemble(one_size_gp, [0.6, 1.0])
    g = torch.Generator().manual_seed(5)
    W = _mixtures(20, g)
    X = torch.cat([W, torch.ones(20, 2, dtype=torch.float64)], -1)  # the target
    mean, var = ens.predict(X)
    parts = [m.predict(X) for m in ens.members]
    w = ens.weights
    expected_mean = sum(wi * m for wi, (m, _) in zip(w, parts, strict=True))
    assert torch.allclose(mean, expected_mean)
    assert torch.allclose(ens.predict_mean(X), expected_mean)
    within = sum(wi * v for wi, (_, v) in zip(w, parts, strict=True))
    assert torch.all(var >= within - 1e-12)  # between-member spread adds variance


def test_fantasize_keeps_weights_and_collapses_variance(one_size_gp):
    ens = size_lengthscale_ensemble(one_size_gp, [0.6, 1.0])
    x = torch.tensor([[0.2, 0.3, 0.5, 1.0, 1.0]], dtype=torch.float64)
    fant = ens.fantasize(x)
    assert torch.equal(fant.weights, ens.weights)
    assert float(fant.predict(x)[1][0]) < 0.1 * float(ens.predict(x)[1][0])
    assert ens.fantasize(torch.zeros(0, 5, dtype=torch.float64)) is ens


def test_seed_design_and_empty_grid_return_the_gp_itself():
    X, y = _runs([0.0], 15, flip=False, seed=2)
    seed_gp = MFMSGP.fit(X, y, config=SurrogateConfig(kernel="seed", maxiter=30))
    assert size_lengthscale_ensemble(seed_gp, [1.0]) is seed_gp
    assert seed_gp.with_size_lengthscale(1.0) is None
    gp = MFMSGP.fit(X, y, config=SurrogateConfig(maxiter=30))
    assert size_lengthscale_ensemble(gp, []) is gp


def test_model_averaged_acquisition_is_the_weighted_sum():
    X = torch.rand(7, 5, dtype=torch.float64)
    cost = torch.rand(7, dtype=torch.float64) + 0.5

    class Const:
        def __init__(self, c: float) -> None:
            self.c = c

        def __call__(self, X: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
            return self.c * X[:, 0] / cost

    acq = ModelAveragedAcquisition([Const(1.0), Const(3.0)],
                                   torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert torch.allclose(acq(X, cost), 2.5 * X[:, 0] / cost)


@pytest.mark.parametrize("bad", [[0.0], [-1.0], [float("nan")], ["long"], [True], 1.0])
def test_size_lengthscale_grid_is_validated(bad):
    with pytest.raises(ValueError, match="size_lengthscale_grid"):
        SurrogateConfig(size_lengthscale_grid=bad)


def test_size_lengthscale_grid_needs_the_additive_design():
    with pytest.raises(ValueError, match="additive"):
        SurrogateConfig(kernel="seed", size_lengthscale_grid=(1.0,))
    assert SurrogateConfig(size_lengthscale_grid=[0.6, 1]).size_lengthscale_grid == (0.6, 1.0)
