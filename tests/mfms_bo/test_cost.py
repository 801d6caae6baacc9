"""Tests for mfms_bo.cost.CostModel: the params x steps prior and learned per-size rates."""

from __future__ import annotations

import math

import pytest
import torch

from mfms_bo.cost import CostModel
from mfms_bo.errors import ValidationError


def test_prior_proportional_to_params_times_steps():
    cm = CostModel(rate=2e-9)
    m = torch.tensor([1e7, 1e8, 1e9, 1e8])
    z = torch.tensor([100.0, 100.0, 1000.0, 5000.0])
    pred = cm.predict(m, z)
    assert pred.dtype == torch.float64 and pred.shape == (4,)
    rates = pred / (m.double() * z.double())
    assert torch.allclose(rates, torch.full((4,), 2e-9, dtype=torch.float64), rtol=1e-12, atol=0)
    # Broadcasting a scalar size against many steps; plain floats work too.
    assert cm.predict(1e8, torch.tensor([1.0, 2.0])).shape == (2,)
    assert float(cm.predict(1e8, 10.0)) == pytest.approx(2e-9 * 1e9)


def test_fixed_cost_is_added():
    cm = CostModel(rate=1.0, fixed_cost=5.0)
    assert float(cm.predict(2.0, 3.0)) == pytest.approx(11.0)
    cm.observe(2.0, 3.0, 5.0 + 6.0 * 4.0)  # net cost follows rate 4
    assert float(cm.predict(2.0, 3.0)) > 11.0


def test_learns_rate_for_observed_size_and_moves_others_towards_global():
    prior, r = 1e-9, 3e-8
    cm = CostModel(rate=prior)
    m1, m2 = 1e8, 4e8
    before_other = float(cm.predict(m2, 1000.0))
    errors = []
    for i in range(1, 201):
        z = 100.0 * i
        cm.observe(m1, z, r * m1 * z)
        errors.append(abs(float(cm.predict(m1, 1000.0)) / (r * m1 * 1000.0) - 1.0))
    # The own-size prediction converges to r * m * z (monotonically, from the prior side).
    assert errors[-1] < 0.05
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:], strict=False))
    # An unobserved size uses the global rate, which has moved from the prior towards r.
    other = float(cm.predict(m2, 1000.0))
    assert before_other < other <= r * m2 * 1000.0 * (1 + 1e-9)
    assert math.exp(cm.log_rate(m2)) == pytest.approx(math.exp(cm._global_log_rate()))
    assert other / (r * m2 * 1000.0) > 0.9


def test_per_size_rates_differ():
    cm = CostModel(rate=1.0)
    for _ in range(50):
        cm.observe(10.0, 10.0, 2.0 * 100.0)  # rate 2 at size 10
        cm.observe(100.0, 10.0, 8.0 * 1000.0)  # rate 8 at size 100
    r10 = float(cm.predict(10.0, 1.0)) / 10.0
    r100 = float(cm.predict(100.0, 1.0)) / 100.0
    assert r10 == pytest.approx(2.0, rel=0.1) and r100 == pytest.approx(8.0, rel=0.1)
    assert r10 < r100


@pytest.mark.parametrize("cost", [float("nan"), 0.0, -1.0, float("inf"), float("-inf")])
def test_bad_costs_rejected(cost):
    cm = CostModel()
    with pytest.raises(ValidationError, match="cost"):
        cm.observe(1e7, 100.0, cost)


@pytest.mark.parametrize("size, steps", [(0.0, 100.0), (-1e7, 100.0), (1e7, 0.0), (1e7, -3.0)])
def test_bad_fidelities_rejected(size, steps):
    with pytest.raises(ValidationError, match="cost"):
        CostModel().observe(size, steps, 1.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": 0.0}, {"rate": -1.0}, {"rate": float("nan")}, {"fixed_cost": -1.0},
     {"fixed_cost": float("inf")}],
)
def test_bad_configuration_rejected(kwargs):
    with pytest.raises(ValidationError):
        CostModel(**kwargs)


def test_unobserved_smaller_size_predicted_cheaper_with_default_prior():
    cm = CostModel()  # what Strategy._cost_model builds
    rate = 1e-12
    for z in (500, 1000, 2000, 4000):
        cm.observe(60e6, z, rate * 60e6 * z)
    assert float(cm.predict(20e6, 1000)) < float(cm.predict(60e6, 1000))


def test_predict_on_a_grid_matches_one_size_at_a_time() -> None:
    cm = CostModel(fixed_cost=0.5)
    cm.observe(1e6, 100, 3.0)
    cm.observe(4e6, 100, 20.0)
    m = torch.tensor([[1e6, 4e6, 9e6], [4e6, 1e6, 1e6]], dtype=torch.float64)
    z = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    grid = cm.predict(m, z)
    assert grid.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert float(grid[i, j]) == pytest.approx(float(cm.predict(float(m[i, j]),
                                                                       float(z[j]))))
