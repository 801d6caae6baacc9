"""Held-out prediction error at the target fidelity, per kernel design.

For each simulated problem and seed: run ``n_trials`` random trials (random mixtures, random
sizes on the ladder, random steps; every checkpoint observed), fit the MFMS-GP with each
kernel design, and predict the noise-free target objective of 500 fresh random mixtures.
Reports RMSE (relative to the spread of the true values), Spearman rank correlation, and
the true gap of the GP's recommended mixture. Same data for every design, so the
comparison is paired.

    python bench/surrogate_accuracy.py [--json bench/results/surrogate_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from mfms_bo.bench.harness import random_history
from mfms_bo.bench.problem import search_space_of
from mfms_bo.bench.problems import simulated_problems
from mfms_bo.recommend import recommend_from_surrogate
from mfms_bo.strategies import training_data
from mfms_bo.surrogate import KERNEL_DESIGNS, MFMSGP, SurrogateConfig


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def evaluate(name: str, seed: int, n_trials: int) -> dict[str, dict[str, float]]:
    problem = simulated_problems()[name]
    space = search_space_of(problem)
    hist = random_history(problem, n_trials, seed)
    X, y, groups = training_data(hist, space)
    Wt = space.mixtures.sample(500, torch.Generator().manual_seed(10_000 + seed))
    truth = problem.objective(Wt.numpy(), problem.target_model_size, problem.steps[1])
    out = {}
    for design in KERNEL_DESIGNS:
        gp = MFMSGP.fit(X, y, groups, SurrogateConfig(kernel=design), seed=seed)
        mean, _ = gp.predict(space.target_inputs(Wt))
        pred = mean.numpy()
        rec = recommend_from_surrogate(gp, space, generator=torch.Generator().manual_seed(1))
        gap = problem.true_objective(rec.mixture) / problem.optimum() - 1
        out[design] = {"rmse_over_std": float(np.sqrt(np.mean((pred - truth) ** 2))
                                               / truth.std()),
                       "spearman": _spearman(pred, truth), "rec_gap_pct": 100 * gap}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for name in simulated_problems():
        res = [evaluate(name, s, args.trials) for s in range(args.seeds)]
        for design in KERNEL_DESIGNS:
            rows.append({"problem": name, "kernel": design, **{
                k: statistics.median(r[design][k] for r in res)
                for k in ("rmse_over_std", "spearman", "rec_gap_pct")}})
    print(f"| problem | kernel | RMSE / std at target | Spearman | gap of recommendation |"
          f"  ({args.trials} random trials, median of {args.seeds} seeds)")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['problem']} | {r['kernel']} | {r['rmse_over_std']:.2f} | "
              f"{r['spearman']:.2f} | {r['rec_gap_pct']:.2f}% |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
