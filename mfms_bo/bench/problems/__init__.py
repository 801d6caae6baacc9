"""Benchmark problems: simulated ones and pool-based ones built from published run tables."""

from __future__ import annotations

from mfms_bo.bench.problem import Problem
from mfms_bo.bench.problems.simulated import SimulatedProblem, make_simulated, simulated_problems
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
    "make_simulated",
    "mixinglaws_problem",
    "regmix_problem",
    "simulated_problems",
    "table_problems",
]


def all_problems() -> dict[str, Problem]:
    """Every shipped problem by name."""
    return {**simulated_problems(), **table_problems()}
