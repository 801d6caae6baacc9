"""Tests for mfms_bo.trials: loss validation and the weighted objective."""

from __future__ import annotations

import pytest

from mfms_bo.errors import ValidationError
from mfms_bo.trials import Measurement, TrialResult, TrialSpec, objective_of, validate_losses

DOMAINS = ("web", "code", "math")


def test_validate_losses_accepts_partial_reports():
    out = validate_losses({"web": 2, "code": "1.5"}, DOMAINS)
    assert out == {"web": 2.0, "code": 1.5}
    assert all(isinstance(v, float) for v in out.values())
    assert validate_losses({"math": 0.0}, DOMAINS) == {"math": 0.0}


@pytest.mark.parametrize(
    "losses, match",
    [
        ({}, "losses: at least one"),
        ({"web": float("nan")}, r"losses\['web'\]: must be finite"),
        ({"web": 1.0, "code": float("inf")}, r"losses\['code'\]: must be finite"),
        ({"web": float("-inf")}, r"losses\['web'\]: must be finite"),
        ({"math": -0.1}, r"losses\['math'\]: must be >= 0"),
        ({"web": 1.0, "books": 2.0}, "losses: unknown domain 'books'"),
        ({"web": "abc"}, r"losses\['web'\]: not a number"),
        ({"web": None}, r"losses\['web'\]: not a number"),
        ({"web": [1.0]}, r"losses\['web'\]: not a number"),
    ],
)
def test_validate_losses_rejects(losses, match):
    with pytest.raises(ValidationError, match=match):
        validate_losses(losses, DOMAINS)


def test_objective_of_weighted_sum():
    losses = {"web": 2.0, "code": 1.0, "math": 4.0}
    assert objective_of(losses, {"web": 0.5, "code": 0.5}) == pytest.approx(1.5)
    assert objective_of(losses, {"web": 0.25, "code": 0.25, "math": 0.5}) == pytest.approx(2.75)


def test_objective_of_missing_domain():
    assert objective_of({"web": 2.0}, {"web": 0.5, "code": 0.5}) is None
    # A zero-weight domain may be missing.
    assert objective_of({"web": 2.0}, {"web": 1.0, "code": 0.0}) == pytest.approx(2.0)


def test_trial_result_last_step():
    spec = TrialSpec({"web": 1.0}, 1e7, 100, (50, 100))
    r = TrialResult(spec, (Measurement(100, {"web": 1.0}), Measurement(50, {"web": 2.0})))
    assert r.last_step == 100 and r.completed and r.cost is None
    assert TrialResult(spec, ()).last_step == 0
