"""Does the ladder show how a simulated problem's optimum moves with scale?

For each ladder size and the target (at the target's steps), the optimal mixture, and how
far the target's optimal mixture is from the best there (its relative excess loss). Where
that excess shrinks along the ladder and crosses zero beyond it, the shift is visible in
the ladder's data as a trend of the mixture effect in log size, and a surrogate that
extrapolates that trend can find the target's optimum without a run at the target size.
Where the optimum moves only beyond the ladder with no trend on it, no strategy can.

    python bench/optimum_drift.py [--suite standard|easy] [--problem NAME ...]
"""

from __future__ import annotations

import argparse

import numpy as np

from mfms_bo.bench.problems.simulated import SimulatedProblem
from mfms_bo.bench.suites import simulated_suite_problems


def drift_rows(problem: SimulatedProblem) -> list[dict[str, object]]:
    """One row per ladder size and the target: the optimum there and the target
    optimum's relative excess loss there (%)."""
    z = problem.steps[1]
    w_target = problem.optimal_mixture()
    v_target = np.array([[w_target[d] for d in problem.domains]])
    rows = []
    for m in sorted({*problem.model_sizes, problem.target_model_size}):
        w_m = problem.optimal_mixture(m, z)
        v_m = np.array([[w_m[d] for d in problem.domains]])
        best = float(problem.objective(v_m, m, z)[0])
        rows.append({"size": m, "optimum": w_m,
                     "target_optimum_excess_pct":
                         100.0 * (float(problem.objective(v_target, m, z)[0]) / best - 1.0)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", choices=("standard", "easy"), default="standard")
    ap.add_argument("--problem", action="append", default=None)
    args = ap.parse_args()
    try:
        problems = simulated_suite_problems(args.suite, args.problem)
    except ValueError as exc:
        ap.error(str(exc))
    for name, problem in problems.items():
        print(f"\n{name} (target {problem.target_model_size / 1e6:g}M, steps {problem.steps[1]})")
        print("| size | optimal mixture | target optimum's excess loss there |")
        print("|---|---|---|")
        for r in drift_rows(problem):
            mix = ", ".join(f"{d} {v:.2f}" for d, v in r["optimum"].items() if v >= 0.005)
            print(f"| {r['size'] / 1e6:g}M | {mix} | {r['target_optimum_excess_pct']:+.2f}% |")


if __name__ == "__main__":
    main()
