"""Transfer across size: a synthetic problem whose optimum moves with model size.

The loss is a power law in size plus a quadratic bowl around an optimum that slides from
``A`` at the smallest size to ``B`` at the target, so a small run ranks mixtures differently
from the target. Most runs are small; four are at the target size.
"""

from __future__ import annotations

import math

import pytest
import torch

from mfms_bo.recommend import objective_prediction, recommend_from_surrogate
from mfms_bo.space import FidelitySpace, MixtureSpace, SearchSpace
from mfms_bo.surrogate import MFMSGP, SurrogateConfig
from mfms_bo.surrogate.kernels import TRANSFER_PRIOR_STRENGTH, SharedFractionKernel, beta_with_mode

LADDER = (10e6, 30e6, 100e6, 300e6)
A = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
B = torch.tensor([0.15, 0.25, 0.6], dtype=torch.float64)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace(MixtureSpace(("a", "b", "c")),
                       FidelitySpace(LADDER, 1000, 1000, LADDER[-1], checkpoints=1))


def moving_loss(W: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    s = (torch.log(m) - math.log(LADDER[0])) / (math.log(LADDER[-1]) - math.log(LADDER[0]))
    opt = (1 - s).unsqueeze(-1) * A + s.unsqueeze(-1) * B
    return 2.0 + 3.0 * (m / 1e6) ** -0.3 + 1.5 * ((W - opt) ** 2).sum(-1)


def _history(space: SearchSpace, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """40 runs: 36 at the three small sizes, 4 at the target size; log loss, 0.3% noise."""
    g = torch.Generator().manual_seed(seed)
    W = space.mixtures.sample(40, g)
    m = torch.cat([torch.tensor(LADDER[:3], dtype=torch.float64).repeat(12),
                   torch.full((4,), LADDER[-1], dtype=torch.float64)])
    y = moving_loss(W, m) * torch.exp(0.003 * torch.randn(40, generator=g, dtype=torch.float64))
    X = space.encode(W, m, torch.full((40,), 1000.0, dtype=torch.float64))
    return X, torch.log(y)


def test_target_interval_covers_at_its_nominal_rate(space):
    """The 90% interval of the target loss holds the truth for about 90% of mixtures (no
    over-confidence), and is not so wide that it says nothing (median width under half
    the spread of the true target losses)."""
    coverage, widths = [], []
    for seed in range(4):
        X, y = _history(space, seed)
        gp = MFMSGP.fit(X, y, config=SurrogateConfig(), seed=seed)
        T = space.mixtures.sample(300, torch.Generator().manual_seed(100 + seed))
        truth = moving_loss(T, torch.full((300,), LADDER[-1], dtype=torch.float64))
        pred = objective_prediction(gp, space.target_inputs(T), transform=torch.exp)
        coverage.append(float(((pred.lower <= truth) & (truth <= pred.upper)).double().mean()))
        widths.append(float((pred.upper - pred.lower).median() / (truth.max() - truth.min())))
    assert sum(coverage) / len(coverage) >= 0.8, coverage
    assert sorted(widths)[len(widths) // 2] < 0.5, widths


def test_one_small_run_does_not_pull_the_recommendation_to_a_corner(space):
    """A small run at a corner mixture adds what it measured, nothing more: the
    recommendation stays where the target-size data put it, and stays near the optimum."""
    X, y = _history(space, 0)
    gp = MFMSGP.fit(X, y, config=SurrogateConfig(), seed=0)
    before = recommend_from_surrogate(gp, space, generator=torch.Generator().manual_seed(1),
                                      transform=torch.exp)
    corner = torch.tensor([[0.02, 0.02, 0.96]], dtype=torch.float64)
    small = torch.tensor([LADDER[0]], dtype=torch.float64)
    x_new = space.encode(corner, small, torch.tensor([1000.0], dtype=torch.float64))
    gp2 = MFMSGP.fit(torch.cat([X, x_new]), torch.cat([y, torch.log(moving_loss(corner, small))]),
                     config=SurrogateConfig(), seed=0)
    after = recommend_from_surrogate(gp2, space, generator=torch.Generator().manual_seed(1),
                                     transform=torch.exp)
    w_before = torch.tensor([before.mixture[d] for d in "abc"], dtype=torch.float64)
    w_after = torch.tensor([after.mixture[d] for d in "abc"], dtype=torch.float64)
    assert float((w_after - corner[0]).abs().sum()) > 0.5, after.mixture
    assert float((w_after - w_before).abs().sum()) < 0.1, (before.mixture, after.mixture)
    target = torch.tensor([LADDER[-1]], dtype=torch.float64)
    gap = float(moving_loss(w_after.unsqueeze(0), target) / moving_loss(B.unsqueeze(0), target))
    assert gap - 1 < 0.01


C = torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64)


def jumping_loss(W: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Small and mid sizes share the optimum ``A``; at the target it is ``C``, a jump no
    drift linear in log size explains."""
    opt = torch.where((m >= LADDER[-1]).unsqueeze(-1), C, A)
    return 2.0 + 3.0 * (m / 1e6) ** -0.3 + 1.5 * ((W - opt) ** 2).sum(-1)


def _shared_share(space: SearchSpace, n_large: int, prior: float) -> float:
    g = torch.Generator().manual_seed(0)
    W = space.mixtures.sample(24 + n_large, g)
    m = torch.cat([torch.tensor(LADDER[:3], dtype=torch.float64).repeat(8),
                   torch.full((n_large,), LADDER[-1], dtype=torch.float64)])
    y = jumping_loss(W, m) * torch.exp(0.003 * torch.randn(W.shape[0], generator=g,
                                                           dtype=torch.float64))
    X = space.encode(W, m, torch.full((W.shape[0],), 1000.0, dtype=torch.float64))
    gp = MFMSGP.fit(X, torch.log(y), seed=0,
                    config=SurrogateConfig(kernel="transfer", transfer_prior=prior))
    (share,) = [float(k.fraction.detach()) for k in gp.model.modules()
                if isinstance(k, SharedFractionKernel)]
    return share


def test_the_shared_share_follows_its_prior_until_large_runs_disagree(space):
    """With one large run the data cannot tell a shared mixture effect from a free one, so
    the prior leads, without claiming full transfer; a dozen large runs whose optimum is
    elsewhere pull the share down."""
    low, high = _shared_share(space, 1, 0.3), _shared_share(space, 1, 0.92)
    assert low < 0.6 and 0.85 < high < 0.99, (low, high)
    assert _shared_share(space, 12, 0.92) < 0.92 - 0.15


def test_the_prior_mode_is_the_given_share():
    """The fit is MAP, so the prior's mode is the value it keeps when the data are silent; a
    Beta given by its mean 0.92 would have its mode at 1 (full transfer)."""
    a, b = beta_with_mode(0.92, TRANSFER_PRIOR_STRENGTH)
    assert b > 1 and (a - 1) / (a + b - 2) == pytest.approx(0.92)
    assert a + b == pytest.approx(TRANSFER_PRIOR_STRENGTH)
    with pytest.raises(ValueError, match="mode"):
        beta_with_mode(1.0, 6.0)
    with pytest.raises(ValueError, match="transfer_prior"):
        SurrogateConfig(kernel="transfer", transfer_prior=1.0)
