"""Tests for mfms_bo.surrogate.mfms_gp: fitting, prediction, covariance, fantasies, thinning."""

from __future__ import annotations

import pytest
import torch

from mfms_bo.surrogate import KERNEL_DESIGNS, MFMSGP, SurrogateConfig, thin_observations
from mfms_bo.surrogate.kernels import build_kernel, build_mean

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
    _, var = gp.predict(Xt, law_uncertainty=False)  # the GP part, as covariance
    assert C.shape == (15, 15)
    assert torch.allclose(C.diagonal(), var, rtol=1e-6, atol=1e-10)
    assert torch.allclose(C, C.T, atol=1e-10)
    assert float(torch.linalg.eigvalsh(C).min()) > -1e-8 * float(var.max())
    C2 = gp.covariance(Xt[:4], X[:7])
    assert C2.shape == (4, 7)
    # Cross-covariance agrees with the joint matrix.
    joint = gp.covariance(torch.cat([Xt[:4], X[:7]]), torch.cat([Xt[:4], X[:7]]))
    assert torch.allclose(C2, joint[:4, 4:], atol=1e-10)


def test_posterior_points_match_predict_and_covariance(fitted):
    _, gp, X, _ = fitted
    Xt, _, _ = _data(6, seed=3)
    pts = gp.posterior_points(Xt)
    m2, v2 = gp.predict(Xt, law_uncertainty=False)  # the GP part, as the points
    assert torch.allclose(pts.mean, m2)
    assert torch.allclose(pts.var, v2, rtol=1e-9, atol=1e-14)
    other = gp.posterior_points(X[:5])
    assert torch.allclose(pts.covariance(other), gp.covariance(Xt, X[:5]), atol=1e-12)
    # Paired rows are the diagonal of the cross-covariance; select picks (and repeats) rows.
    picked = other.select(torch.tensor([4, 0, 0, 1, 2, 3]))
    full = gp.covariance(Xt, X[torch.tensor([4, 0, 0, 1, 2, 3])])
    assert torch.allclose(pts.paired_covariance(picked), full.diagonal(), atol=1e-12)
    assert torch.allclose(pts.paired_covariance(pts), pts.var, rtol=1e-9, atol=1e-12)


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
