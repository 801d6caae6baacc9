"""``bench/optimum_drift.py``: how a simulated problem's optimum moves along its ladder."""

from __future__ import annotations

import pytest

from mfms_bo.bench.problems.simulated import hard_simulated_problems


def test_the_target_optimum_is_best_at_the_target_only(optimum_drift):
    """The last row is the target, where its own optimum has no excess; on the ladder,
    where the optimum moves with scale, the target's optimum is worse than each size's own,
    and its excess shrinks as the size nears the target."""
    problem = hard_simulated_problems()["scale-k4"]
    rows = optimum_drift.drift_rows(problem)
    sizes = [r["size"] for r in rows]
    assert sizes == sorted({*problem.model_sizes, problem.target_model_size})
    excess = [r["target_optimum_excess_pct"] for r in rows]
    assert excess[-1] == pytest.approx(0.0, abs=1e-6)
    assert all(e > 0.0 for e in excess[:-1])
    assert excess[:-1] == sorted(excess[:-1], reverse=True)
    for r in rows:
        assert sum(r["optimum"].values()) == pytest.approx(1.0)
