"""Benchmark problems (simulated and pool-based) and the harness that compares strategies."""

from mfms_bo.bench.problem import Problem, search_space_of

__all__ = ["Problem", "search_space_of"]
