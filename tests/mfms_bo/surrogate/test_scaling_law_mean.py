"""The scaling-law mean: a loss that follows a power law in size and steps is extrapolated
beyond the ladder, where the linear mean keeps falling as steeply as over the ladder."""

from __future__ import annotations

import pytest
import torch

from mfms_bo.recommend import objective_prediction
from mfms_bo.space import FidelitySpace, MixtureSpace, SearchSpace
from mfms_bo.surrogate import MFMSGP, SurrogateConfig
from mfms_bo.surrogate.kernels import ScalingLawMean, build_mean

LADDER = (10e6, 30e6, 100e6)
TARGET = 1e9  # ten times the largest size run


def law_loss(W: torch.Tensor, m: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return (2.0 + 3.0 * (m / 1e7) ** -0.35 + 1.0 * (z / 1000) ** -0.5
            + 0.3 * (W[:, 0] - 0.6) ** 2)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace(MixtureSpace(("a", "b")),
                       FidelitySpace(LADDER, 1000, 8000, TARGET, checkpoints=4))


def _data(space: SearchSpace) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    W = space.mixtures.sample(30, g)
    m = torch.tensor(LADDER, dtype=torch.float64).repeat(10)
    z = torch.tensor([1000.0, 2000.0, 4000.0, 8000.0], dtype=torch.float64).repeat(8)[:30]
    y = law_loss(W, m, z) * torch.exp(0.002 * torch.randn(30, generator=g,
                                                           dtype=torch.float64))
    return space.encode(W, m, z), torch.log(y)


def _target_error(space: SearchSpace, mean: str) -> tuple[float, bool]:
    X, y = _data(space)
    gp = MFMSGP.fit(X, y, seed=0, config=SurrogateConfig(mean=mean))
    W = torch.tensor([[0.6, 0.4], [0.2, 0.8]], dtype=torch.float64)
    truth = law_loss(W, torch.full((2,), TARGET, dtype=torch.float64),
                     torch.full((2,), 8000.0, dtype=torch.float64))
    pred = objective_prediction(gp, space.target_inputs(W), transform=torch.exp)
    error = float((pred.mean / truth - 1).abs().max())
    covered = bool(((pred.lower <= truth) & (truth <= pred.upper)).all())
    return error, covered


def test_a_power_law_is_extrapolated_tenfold_in_size(space: SearchSpace) -> None:
    law_error, law_covered = _target_error(space, "scaling_law")
    linear_error, _ = _target_error(space, "linear")
    assert law_error < 0.03 and law_covered, law_error
    assert law_error < linear_error / 2, (law_error, linear_error)


def test_the_law_is_kept_in_the_objective_units() -> None:
    """The law's parameters are losses, not standardised units: the same parameters under
    another standardisation give the same log loss."""
    a = build_mean("additive", 2, "scaling_law", offset=1.0, scale=0.5)
    b = build_mean("additive", 2, "scaling_law", offset=0.2, scale=2.0)
    assert isinstance(a, ScalingLawMean) and isinstance(b, ScalingLawMean)
    a.start_from(torch.log(torch.tensor([2.5, 3.0, 4.0], dtype=torch.float64)))
    b.load_state_dict({k: v for k, v in a.state_dict().items() if k.startswith("raw_")},
                      strict=False)
    x = torch.rand(5, 4, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(a(x) * 0.5 + 1.0, b(x) * 2.0 + 0.2)
    with pytest.raises(ValueError, match="mean"):
        SurrogateConfig(mean="cubic")


def test_the_law_s_own_uncertainty_widens_what_the_data_do_not_pin(space: SearchSpace) -> None:
    """Ten times beyond the largest size the fitted law's uncertainty is a large share of
    the interval (about as much variance as the GP's own, depending on where the fit lands
    with the installed packages); at the largest size run, the data pin the level and it
    adds next to nothing. Both mixtures get the same addition at one fidelity, so rankings
    leave it out."""
    X, y = _data(space)
    gp = MFMSGP.fit(X, y, seed=0, config=SurrogateConfig(mean="scaling_law"))
    W = torch.tensor([[0.6, 0.4], [0.2, 0.8]], dtype=torch.float64)
    far = space.target_inputs(W)
    near = space.encode(W, torch.full((2,), LADDER[-1], dtype=torch.float64),
                        torch.full((2,), 8000.0, dtype=torch.float64))
    (_, v_far), (_, v_far_plain) = gp.predict(far), gp.predict(far, law_uncertainty=False)
    (_, v_near), (_, v_near_plain) = gp.predict(near), gp.predict(near, law_uncertainty=False)
    assert (v_far > 1.5 * v_far_plain).all(), (v_far, v_far_plain)
    assert (v_near - v_near_plain < 0.05 * (v_far - v_far_plain)).all()
    assert torch.allclose(v_far - v_far_plain, (v_far - v_far_plain).mean(), rtol=0.2)
