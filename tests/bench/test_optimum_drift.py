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


def test_the_bench_scripts_pick_simulated_problems_by_suite_and_name():
    """``simulated_suite_problems``: the suite's simulated problems, a named subset in the
    order given, and a clear error naming what is known for a wrong suite or name."""
    from mfms_bo.bench.suites import simulated_suite_problems

    assert list(simulated_suite_problems("standard")) == list(hard_simulated_problems())
    picked = simulated_suite_problems("standard", ["scale-k8-extrap", "scale-k4"])
    assert list(picked) == ["scale-k8-extrap", "scale-k4"]
    assert "sim-k3" in simulated_suite_problems("easy")
    with pytest.raises(ValueError, match=r"unknown problem\(s\) \['sim-k3'\] in the standard"):
        simulated_suite_problems("standard", ["sim-k3"])
    with pytest.raises(ValueError, match="unknown suite 'hard'"):
        simulated_suite_problems("hard")
