"""Tests for mfms_bo.surrogate.mfms_gp: fitting, prediction, covariance, fantasies, thinning."""

from __future__ import annotations

import pytest
import torch

from mfms_bo.surrogate import KERNEL_DESIGNS, MFMSGP, SurrogateConfig, thin_observations
from mfms_bo.surrogate.kernels import build_kernel, build_mean, initial_lengthscales

NOISE_SD = 0.005


def _dirichlet(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    e = -torch.log(torch.rand(n, k, generator=g, dtype=torch.float64))
    return e / e.sum(-1, keepdim=True)


def _truth(X: torch.Tensor) -> torch.Tensor:
    return 2.0 + 0.5 * X[:, 0] - 0.3 * X[:, -2] - 0.2 * X[:, -1]


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.cat([_dirichlet(n, 3, g), torch.rand(n, 2, generator=g, dtype=torch.float64)], -1)
    f = _truth(X)
    return X, f, f + NOISE_SD * torch.randn(n, generator=g, dtype=torch.float64)


@pytest.fixture(scope="module", params=KERNEL_DESIGNS)
def fitted(request) -> tuple[str, MFMSGP, torch.Tensor, torch.Tensor]:
    X, _, y = _data(40, seed=0)
    torch.manual_seed(0)  # module-scoped: runs before the per-test seeding fixture
    gp = MFMSGP.fit(X, y, config=SurrogateConfig(kernel=request.param, maxiter=60))
    return request.param, gp, X, y


def test_fit_recovers_smooth_function(fitted):
    _, gp, _, _ = fitted
    Xt, ft, _ = _data(200, seed=1)
    mean, var = gp.predict(Xt)
    assert mean.shape == (200,) and var.shape == (200,)
    rmse = float(((mean - ft) ** 2).mean().sqrt())
    assert rmse < 0.2 * float(ft.std())
    # The GP is calibrated enough that most errors lie within 3 predictive sds.
    z = (mean - ft).abs() / (var + gp.noise_variance).sqrt()
    assert float((z < 3).double().mean()) > 0.8


def test_variance_small_at_data_and_larger_far_away(fitted):
    _, gp, X, y = fitted
    m_in, v_in = gp.predict(X)
    assert torch.all(v_in > 0)
    assert float(v_in.max()) < 0.05 * float(y.var())
    assert float((m_in - y).abs().max()) < 5 * NOISE_SD + 0.01
    far = X.clone()
    far[:, -2:] += 3.0  # fidelities far outside the training box
    _, v_far = gp.predict(far)
    assert float(v_far.min()) > 10 * float(v_in.max())


def test_covariance_diagonal_matches_predict(fitted):
    _, gp, X, _ = fitted
    Xt, _, _ = _data(15, seed=2)
    C = gp.covariance(Xt, Xt)
    _, var = gp.predict(Xt)
    assert C.shape == (15, 15)
    assert torch.allclose(C.diagonal(), var, rtol=1e-6, atol=1e-10)
    assert torch.allclose(C, C.T, atol=1e-10)
    assert float(torch.linalg.eigvalsh(C).min()) > -1e-8 * float(var.max())
    C2 = gp.covariance(Xt[:4], X[:7])
    assert C2.shape == (4, 7)
    # Cross-covariance agrees with the joint matrix.
    joint = gp.covariance(torch.cat([Xt[:4], X[:7]]), torch.cat([Xt[:4], X[:7]]))
    assert torch.allclose(C2, joint[:4, 4:], atol=1e-10)


def test_whitened_matches_predict(fitted):
    _, gp, _, _ = fitted
    Xt, _, _ = _data(6, seed=3)
    mean, V, prior = gp.whitened(Xt)
    m2, v2 = gp.predict(Xt)
    assert torch.allclose(mean, m2)
    var = (prior - (V * V).sum(0)).clamp(min=1e-12) * gp.y_std**2
    assert torch.allclose(var, v2, rtol=1e-9, atol=1e-14)


def test_fantasize_collapses_variance_and_keeps_mean(fitted):
    _, gp, _, _ = fitted
    x = torch.tensor([[0.1, 0.1, 0.8, 0.5, 1.5], [0.3, 0.3, 0.4, 1.4, 0.2]],
                     dtype=torch.float64)
    m0, v0 = gp.predict(x)
    g2 = gp.fantasize(x)
    m1, v1 = g2.predict(x)
    assert torch.allclose(m1, m0, rtol=0, atol=1e-8)
    assert torch.all(v1 < 0.5 * v0)
    # Conditioning on one noisy observation leaves at most the noise variance.
    assert torch.all(v1 <= gp.noise_variance * 1.05 + 1e-12)
    # The original model is untouched and an empty fantasy is a no-op.
    assert torch.allclose(gp.predict(x)[1], v0)
    assert gp.fantasize(torch.zeros(0, 5, dtype=torch.float64)) is gp
    assert g2.train_X.shape[0] == gp.train_X.shape[0] + 2


def test_fantasize_factor_update_matches_a_full_refactorisation(fitted):
    _, gp, _, _ = fitted
    x = torch.tensor([[0.1, 0.1, 0.8, 0.5, 1.5], [0.3, 0.3, 0.4, 1.4, 0.2],
                      [0.3, 0.3, 0.4, 1.4, 0.2]], dtype=torch.float64)  # a repeated point too
    updated = gp.fantasize(x).fantasize(x[:1])
    X_all = torch.cat([gp.train_X, x, x[:1]])
    y_all = torch.cat([gp.train_y, gp.predict_mean(x), gp.predict_mean(x[:1])])
    full = MFMSGP(gp.model, X_all, y_all, gp.y_mean, gp.y_std)
    Xt, _, _ = _data(50, seed=7)
    (m_u, v_u), (m_f, v_f) = updated.predict(Xt), full.predict(Xt)
    assert torch.allclose(m_u, m_f, rtol=0, atol=1e-8)
    assert torch.allclose(v_u, v_f, rtol=1e-6, atol=1e-10)


def test_hyperparameters_warm_start(fitted):
    kernel, gp, X, y = fitted
    hp = gp.hyperparameters()
    assert hp and not any(k.startswith("train") for k in hp)
    warm = MFMSGP.fit(X, y, config=SurrogateConfig(kernel=kernel, warm_maxiter=1),
                      warm_start=hp)
    Xt, _, _ = _data(20, seed=4)
    assert torch.allclose(warm.predict(Xt)[0], gp.predict(Xt)[0], atol=0.02)


@pytest.mark.parametrize("kernel", KERNEL_DESIGNS)
def test_fit_is_deterministic_given_seed(kernel):
    X, _, y = _data(30, seed=7)
    Xt, _, _ = _data(20, seed=8)
    cfg = SurrogateConfig(kernel=kernel, maxiter=30)
    torch.manual_seed(1)
    a = MFMSGP.fit(X, y, config=cfg, seed=0).predict(Xt)[0]
    torch.manual_seed(2)
    b = MFMSGP.fit(X, y, config=cfg, seed=0).predict(Xt)[0]
    assert torch.allclose(a, b, atol=1e-6, rtol=0)


def test_fit_rejects_mismatched_or_empty():
    X = torch.rand(5, 5, dtype=torch.float64)
    with pytest.raises(ValueError):
        MFMSGP.fit(X, torch.rand(4, dtype=torch.float64))
    with pytest.raises(ValueError):
        MFMSGP.fit(X[:0], torch.rand(0, dtype=torch.float64))


def test_fit_constant_and_single_point():
    X, _, _ = _data(6, seed=5)
    gp = MFMSGP.fit(X, torch.full((6,), 3.0, dtype=torch.float64),
                    config=SurrogateConfig(maxiter=5))
    mean, var = gp.predict(X)
    assert torch.allclose(mean, torch.full((6,), 3.0, dtype=torch.float64), atol=0.02)
    assert torch.isfinite(var).all()
    gp1 = MFMSGP.fit(X[:1], torch.tensor([2.5], dtype=torch.float64),
                     config=SurrogateConfig(maxiter=5))
    assert torch.isfinite(gp1.predict(X)[0]).all()


def test_fit_thins_to_max_condition_points():
    g = torch.Generator().manual_seed(6)
    n_trials, per = 6, 8
    W = _dirichlet(n_trials, 3, g).repeat_interleave(per, 0)
    fid = torch.rand(n_trials, 1, generator=g, dtype=torch.float64).repeat_interleave(per, 0)
    z = torch.linspace(0.1, 1.0, per, dtype=torch.float64).repeat(n_trials).unsqueeze(-1)
    X = torch.cat([W, fid, z], -1)
    y = _truth(X)
    groups = torch.arange(n_trials).repeat_interleave(per)
    gp = MFMSGP.fit(X, y, groups, SurrogateConfig(max_condition_points=12, max_fit_points=12,
                                                  maxiter=5))
    assert gp.train_X.shape[0] <= 12
    # Every trial's last checkpoint survives.
    finals = X[per - 1::per]
    kept = {tuple(r) for r in gp.train_X.tolist()}
    assert all(tuple(r) in kept for r in finals.tolist())


def test_unknown_kernel_design():
    with pytest.raises(ValueError, match="kernel design"):
        build_kernel("nope", 3)
    with pytest.raises(ValueError, match="kernel design"):
        build_mean("nope", 3)


# -- thin_observations ---------------------------------------------------------------------
def test_thin_keeps_everything_under_cap():
    groups = torch.tensor([0, 0, 1, 1, 2])
    steps = torch.tensor([1.0, 2.0, 1.0, 2.0, 1.0])
    assert torch.equal(thin_observations(groups, steps, 5), torch.arange(5))
    assert torch.equal(thin_observations(groups, steps, 100), torch.arange(5))


@pytest.mark.parametrize("cap", [1, 3, 5, 10, 17, 40])
def test_thin_keeps_last_step_and_respects_cap(cap):
    g = torch.Generator().manual_seed(cap)
    sizes = [8, 3, 12, 1, 6]
    groups = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    steps = torch.cat([torch.randperm(s, generator=g).double() * 10 + 5 for s in sizes])
    perm = torch.randperm(groups.numel(), generator=g)  # groups interleaved, unordered steps
    groups, steps = groups[perm], steps[perm]
    keep = thin_observations(groups, steps, cap)
    assert keep.dtype == torch.long
    assert torch.equal(keep, torch.sort(keep).values)
    assert keep.unique().numel() == keep.numel()
    n_groups = len(sizes)
    assert keep.numel() <= max(cap, n_groups)
    for gi in range(n_groups):
        members = (groups == gi).nonzero().flatten()
        last = members[torch.argmax(steps[members])]
        assert int(last) in keep.tolist()
    if cap >= n_groups:
        assert keep.numel() <= cap
    if groups.numel() <= cap:
        assert keep.numel() == groups.numel()
        return
    # Same allowance per group: no group keeps more than cap // n_groups (at least 1).
    per = max(1, cap // n_groups)
    for gi in range(n_groups):
        assert int((groups[keep] == gi).sum()) <= per


def _one_size_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs at the smallest size only (scaled log size 0), steps across the range: the
    situation right after the initial design, where the size lengthscale of the mixture
    factor is not identified by the data."""
    g = torch.Generator().manual_seed(seed)
    W = _dirichlet(n, 3, g)
    z = torch.rand(n, 1, generator=g, dtype=torch.float64)
    X = torch.cat([W, torch.zeros(n, 1, dtype=torch.float64), z], -1)
    f = 2.0 + 0.3 * (W[:, 0] - 0.5) ** 2 - 0.2 * z[:, 0]
    return X, f + NOISE_SD * torch.randn(n, generator=g, dtype=torch.float64)


def _size_correlation(gp: MFMSGP) -> float:
    """Prior correlation of a mixture *difference* at the smallest size (scaled log size 0)
    with the same difference at the target (1), under the fitted hyperparameters: how much
    a small run's ranking says about the target's. Differences cancel the shared trend."""
    W = torch.tensor([[0.6, 0.2, 0.2], [0.2, 0.4, 0.4]], dtype=torch.float64)
    def at(size: float) -> torch.Tensor:
        return torch.cat([W, torch.full((2, 1), size, dtype=W.dtype),
                          torch.ones(2, 1, dtype=W.dtype)], -1)
    X = torch.cat([at(0.0), at(1.0)])
    K = gp._k(X, X)
    d = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]], dtype=K.dtype)
    C = d @ K @ d.T
    return float(C[0, 1] / (C[0, 0] * C[1, 1]).sqrt())


def test_transfer_prior_sets_the_unidentified_size_lengthscale():
    kernel = build_kernel("additive", 3, transfer_lengthscale=0.8)
    initial_lengthscales(kernel)
    mixture_factor = kernel.kernels[0].base_kernel.kernels[1]
    assert mixture_factor.lengthscale.shape == (1, 2)
    assert float(mixture_factor.lengthscale.detach()[0, 0]) == pytest.approx(0.8)
    assert float(mixture_factor.lengthscale.detach()[0, 1]) == pytest.approx(0.5)  # steps: generic


def test_transfer_prior_lets_small_runs_inform_the_target_size():
    X, y = _one_size_data(30, seed=3)
    generic = MFMSGP.fit(X, y, config=SurrogateConfig(maxiter=60))
    transfer = MFMSGP.fit(X, y, config=SurrogateConfig(maxiter=60, transfer_lengthscale=1.0))
    # With the generic prior the smallest size and the target share almost nothing; with
    # the transfer prior half the mixture effect carries over (Matern-5/2 at distance 1
    # and lengthscale 1 is 0.52).
    assert _size_correlation(generic) < 0.2
    assert _size_correlation(transfer) > 0.4


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "long"])
def test_transfer_lengthscale_is_validated(bad):
    with pytest.raises(ValueError, match="transfer_lengthscale"):
        SurrogateConfig(transfer_lengthscale=bad)


def test_transfer_lengthscale_needs_the_additive_design():
    with pytest.raises(ValueError, match="additive"):
        SurrogateConfig(kernel="seed", transfer_lengthscale=1.0)
