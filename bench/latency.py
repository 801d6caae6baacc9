"""Proposal latency: one ``MFMSBO.propose`` call with 100 and 300 completed trials.

Issue 2's target: under 2 s at 300 trials x 8 checkpoints, k = 5, on a 2-core machine.
The history comes from the simulated problem ``sim-k5`` with random mixtures and fidelities
(the GP sees 800 / 2,400 observations). We time a cold call (first fit, no warm start) and
warm calls (the hyperparameters of the previous proposal as the start, which is what a
running study does), and compare with the exact GP path (conditioning on every point and
fitting on up to 1,000) as the baseline in the same run.

    python bench/latency.py [--json bench/results/latency.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mfms_bo.bench.harness import random_history
from mfms_bo.bench.problem import search_space_of
from mfms_bo.bench.problems import simulated_problems
from mfms_bo.strategies import MFMSBO
from mfms_bo.trials import TrialResult


def make_history(n_trials: int, seed: int = 0) -> list[TrialResult]:
    return random_history(simulated_problems()["sim-k5"], n_trials, seed)


def time_propose(history: list[TrialResult], surrogate: dict | None, repeats: int
                 ) -> dict[str, float]:
    space = search_space_of(simulated_problems()["sim-k5"])
    strat = MFMSBO(space, seed=0, surrogate=surrogate)
    t = time.perf_counter()
    strat.propose(history, [], 1)
    cold = time.perf_counter() - t
    warm = []
    for r in range(repeats):
        strat._cache = None  # a new history each time: force a (warm-started) refit
        t = time.perf_counter()
        strat.propose(history[: len(history) - r - 1] + history[-1:], [], 1)
        warm.append(time.perf_counter() - t)
    return {"cold_s": cold, "warm_median_s": statistics.median(warm), "warm_max_s": max(warm)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="100,300")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        hist = make_history(n)
        ours = time_propose(hist, None, args.repeats)
        exact = time_propose(hist, {"max_fit_points": 1000, "max_condition_points": 100_000},
                             1)
        rows.append({"trials": n, "observations": sum(len(h.measurements) for h in hist),
                     "mfms_bo": ours, "exact_gp": exact,
                     "speedup_warm": exact["warm_median_s"] / ours["warm_median_s"]})
    print("| trials | observations | cold propose (s) | warm propose median (s) | "
          "exact-GP warm (s) | speed-up |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trials']} | {r['observations']} | {r['mfms_bo']['cold_s']:.2f} | "
              f"{r['mfms_bo']['warm_median_s']:.2f} | {r['exact_gp']['warm_median_s']:.2f} | "
              f"{r['speedup_warm']:.1f}x |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
