"""Where the target prediction goes wrong along one ``mfms-bo`` run: the level or the mixture.

Runs ``mfms-bo`` on a benchmark problem exactly as ``mfms bench`` does (one trial at a
time, its own warm-started fits), and at trials 10, 15, 22, ... (x1.5) predicts the target
objective of 300 fixed random mixtures with the fit the strategy holds. The log error of
each prediction splits into a part common to every mixture (*bias*: the level, which a
scaling trend sets) and the rest (*resid*: the mixture effect, which the ranking needs).
Against them: the mean predicted sd, the 90% coverage over the 300, and the interval of
the recommendation with its true value.

    python bench/calibration_trace.py scale-k8-extrap --seed 0 \\
        --options '{"bundle": true, "kernel": "transfer"}'
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from mfms_bo.bench.harness import (
    default_budget,
    evaluate_trial,
    load_problem,
    strategy_options,
)
from mfms_bo.bench.problem import search_space_of
from mfms_bo.strategies import make_strategy
from mfms_bo.surrogate.kernels import SharedFractionKernel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("problem")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--options", default="{}", help="mfms-bo options (JSON)")
    args = ap.parse_args()
    problem = load_problem(args.problem)
    space = search_space_of(problem)
    options = strategy_options(problem, "mfms-bo", json.loads(args.options))
    torch.manual_seed(args.seed)
    strategy = make_strategy("mfms-bo", space, seed=args.seed, options=options)
    fid = space.fidelities
    W = torch.tensor(np.random.default_rng(0).dirichlet(np.ones(space.k), 300))
    if space.candidates is not None:
        W = space.candidates
    truth = np.log([problem.true_objective(space.mixtures.to_dict(w)) for w in W])
    optimum = problem.optimum()
    budget, spent, history, report_at = default_budget(problem), 0.0, [], 10
    print("| trials | % budget | runs at the largest size | rho | bias | resid sd | "
          "predicted sd | coverage | recommendation: interval | true | gap |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    while spent < budget:
        spec = strategy.propose(history, [], 1)[0]
        result = evaluate_trial(problem, spec, args.seed * 100_000 + len(history))
        spent += float(result.cost)  # type: ignore[arg-type]
        history.append(result)
        if len(history) < report_at and spent < budget:
            continue
        report_at = int(report_at * 1.5)
        fit = strategy.fit_surrogate(history)
        assert fit is not None
        rho = [float(m.fraction.detach()) for m in fit.model.model.modules()
               if isinstance(m, SharedFractionKernel)]
        pred = strategy.predict(history, W, fid.target_model_size, fid.target_steps)
        assert pred is not None
        mean, lo, hi = (np.log(t.numpy()) for t in (pred.mean, pred.lower, pred.upper))
        err = mean - truth
        rec = strategy.recommend(history)
        assert rec is not None and rec.interval is not None
        true = problem.true_objective(rec.mixture)
        large = sum(1 for h in history if h.spec.model_size >= max(fid.model_sizes))
        print(f"| {len(history)} | {100 * spent / budget:.1f} | {large} | "
              f"{rho[0] if rho else float('nan'):.3f} | {err.mean():+.4f} | "
              f"{(err - err.mean()).std():.4f} | {((hi - lo) / 3.29).mean():.4f} | "
              f"{np.mean((truth >= lo) & (truth <= hi)):.2f} | "
              f"[{rec.interval[0]:.4f}, {rec.interval[1]:.4f}] | {true:.4f} | "
              f"{100 * (true / optimum - 1):.2f}% |", flush=True)


if __name__ == "__main__":
    main()
