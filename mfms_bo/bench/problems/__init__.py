"""Benchmark problems: simulated ones and pool-based ones built from published run tables."""

from __future__ import annotations

from mfms_bo.bench.problem import Problem
from mfms_bo.bench.problems.simulated import (
    SimulatedProblem,
    difficulty,
    hard_simulated_problems,
    make_scale_problem,
    make_simulated,
    simulated_problems,
)
from mfms_bo.bench.problems.tables import (
    TableProblem,
    mixinglaws_problem,
    regmix_problem,
    table_problems,
)

__all__ = [
    "Problem",
    "SimulatedProblem",
    "TableProblem",
    "all_problems",
    "difficulty",
    "hard_simulated_problems",
    "make_scale_problem",
    "make_simulated",
    "mixinglaws_problem",
    "regmix_problem",
    "simulated_problems",
    "table_problems",
]


def all_problems() -> dict[str, Problem]:
    """Every shipped problem by name: the easy ``sim-*`` and the hard ``scale-*`` simulated
    ones, then the pool-based tables."""
    return {**simulated_problems(), **hard_simulated_problems(), **table_problems()}
