"""Proposal latency: one ``MFMSBO.propose`` call with 100 to 2,000 completed trials.

The targets: under 2 s at 300 trials x 8 checkpoints and under 3 s at 2,000, k = 5, on 2
cores.
The history comes from the simulated problem ``sim-k5`` with random mixtures and fidelities
(the GP sees 800 / 2,400 observations). We time a cold call (first fit, no warm start) and
the two kinds of call a running study makes: a warm-started hyperparameter refit (every
``refit_growth`` = 5% of new trials) and a conditioning-only call in between. The baseline,
in the same run, is the exact GP path: conditioning on every point, fitting on up to 1,000,
refitting every call; it is skipped above ``--exact-max-trials`` (its Cholesky factor of
16,000 observations alone takes 2 GB and minutes).

    python bench/latency.py [--sizes 300,1000,2000] [--json bench/results/latency.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from mfms_bo.bench.harness import random_history
from mfms_bo.bench.problem import search_space_of
from mfms_bo.bench.problems import simulated_problems
from mfms_bo.strategies import MFMSBO
from mfms_bo.strategies.bo import FIT_METADATA_KEY
from mfms_bo.trials import TrialResult


def make_history(n_trials: int, seed: int = 0) -> list[TrialResult]:
    return random_history(simulated_problems()["sim-k5"], n_trials, seed)


def time_propose(history: list[TrialResult], surrogate: dict | None, repeats: int,
                 n: int = 1, n_pending: int = 0, options: dict | None = None
                 ) -> dict[str, float]:
    """Cold call, then ``repeats`` calls of each kind a running study makes: a warm-started
    hyperparameter refit (every ``refit_growth`` of new trials) and a conditioning-only call
    (one more trial, previous hyperparameters). Each call sees a different history so no
    cache can answer it. ``n > 1`` asks for a batch and ``n_pending`` keeps the last trials
    of ``history`` running (fantasised in), as a server does when several workers poll at
    once. ``options`` are further options of the strategy (``surrogate`` merged under the
    caps given here)."""
    space = search_space_of(simulated_problems()["sim-k5"])
    opts = dict(options or {})
    surrogate = {**opts.pop("surrogate", {}), **(surrogate or {})} or None
    strat = MFMSBO(space, seed=0, surrogate=surrogate, **opts)
    pending = [t.spec for t in history[len(history) - n_pending:]]
    history = history[: len(history) - n_pending]
    t = time.perf_counter()
    first = strat.propose(history[:-repeats - 1], pending, n)
    cold = time.perf_counter() - t
    record = first[0].metadata[FIT_METADATA_KEY]
    refit, condition = [], []
    for r in range(repeats):
        # The history carries the fit record a proposal leaves: one made at a single trial
        # forces the periodic (warm-started) refit, the refit's own then allows none.
        hist = _with_record(history[: len(history) - repeats + r], {**record, "trials": 1})
        t = time.perf_counter()
        out = strat.propose(hist, pending, n)
        refit.append(time.perf_counter() - t)
        assert len(out) == n
        t = time.perf_counter()
        strat.propose(_with_record(hist, out[0].metadata[FIT_METADATA_KEY]) + [history[-1]],
                      pending, n)  # one more trial: no refit
        condition.append(time.perf_counter() - t)
    every = max(1, math.ceil(strat.config.refit_growth * len(history)))
    med_r, med_c = statistics.median(refit), statistics.median(condition)
    return {"n": n, "pending": n_pending, "cold_s": cold, "refit_median_s": med_r,
            "refit_max_s": max(refit), "condition_median_s": med_c,
            "condition_max_s": max(condition), "refit_every_trials": every,
            "amortised_s": (med_r + (every - 1) * med_c) / every}


def tradeoff(n_trials: int, caps: list[tuple[int, int]], seed: int = 0) -> list[dict]:
    """Accuracy against cost of the two caps that bound a proposal's work, on one
    ``n_trials`` history of sim-k5: for each ``(max_fit_points, max_condition_points)``, the
    time of a cold hyperparameter fit plus conditioning, and the held-out quality at the
    target fidelity (RMSE over the truth's spread, Spearman, 90% coverage on 500 fresh
    mixtures). Why these two: every other step of a proposal scales with the candidates
    scored, not with the history, so they decide how a study of 2,000 trials behaves."""
    import numpy as np

    from mfms_bo.recommend import objective_prediction
    from mfms_bo.strategies import training_data
    from mfms_bo.surrogate import MFMSGP, SurrogateConfig

    problem = simulated_problems()["sim-k5"]
    space = search_space_of(problem)
    X, y, groups = training_data(make_history(n_trials, seed), space)
    y = torch.log(y)
    W = space.mixtures.sample(500, torch.Generator().manual_seed(10_000 + seed))
    truth = problem.objective(W.numpy(), problem.target_model_size, problem.steps[1])
    ranks = np.argsort(np.argsort(truth))
    rows = []
    for fit_cap, cond_cap in caps:
        t = time.perf_counter()
        gp = MFMSGP.fit(X, y, groups, SurrogateConfig(max_fit_points=fit_cap,
                                                      max_condition_points=cond_cap),
                        seed=seed)
        fit_s = time.perf_counter() - t
        pred = objective_prediction(gp, space.target_inputs(W), transform=torch.exp)
        mean = pred.mean.numpy()
        inside = (pred.lower.numpy() <= truth) & (truth <= pred.upper.numpy())
        rows.append({"trials": n_trials, "observations": int(X.shape[0]),
                     "max_fit_points": fit_cap, "max_condition_points": cond_cap,
                     "fit_and_condition_s": fit_s,
                     "rmse_over_std": float(np.sqrt(np.mean((mean - truth) ** 2)) / truth.std()),
                     "spearman": float(np.corrcoef(np.argsort(np.argsort(mean)), ranks)[0, 1]),
                     "coverage90": float(inside.mean())})
    return rows


def _with_record(history: list[TrialResult], record: dict) -> list[TrialResult]:
    """``history`` whose last trial's spec carries the surrogate fit ``record``."""
    last = history[-1]
    spec = replace(last.spec, metadata={**last.spec.metadata, FIT_METADATA_KEY: record})
    return [*history[:-1], replace(last, spec=spec)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="100,300")
    ap.add_argument("--batch", type=int, default=4,
                    help="also time a batch of this many proposals with as many pending "
                         "trials, at the largest size (0: skip)")
    ap.add_argument("--acquisition", default="kg", help="mfms-bo's acquisition option")
    ap.add_argument("--options", default="{}",
                    help='further mfms-bo options as JSON, e.g. \'{"bundle": true}\'')
    ap.add_argument("--exact-max-trials", type=int, default=300,
                    help="time the exact-GP baseline only up to this many trials")
    ap.add_argument("--tradeoff", type=int, default=0,
                    help="also tabulate accuracy against fit time of the fit/condition caps "
                         "on a history of this many trials (0: skip)")
    args = ap.parse_args()
    options = {**json.loads(args.options), "acquisition": args.acquisition}
    torch.set_num_threads(2)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        hist = make_history(n)
        ours = time_propose(hist, None, args.repeats, options=options)
        exact = None
        if n <= args.exact_max_trials:
            exact = time_propose(hist, {"max_fit_points": 1000, "max_condition_points": 20_000,
                                        "refit_growth": 0.0}, 1, options=options)
        rows.append({"trials": n, "observations": sum(len(h.measurements) for h in hist),
                     "mfms_bo": ours, "exact_gp": exact,
                     "speedup": exact["refit_median_s"] / ours["amortised_s"] if exact else None})
    print("| trials | observations | cold (s) | refit propose median / max (s) | "
          "conditioning-only propose median / max (s) | refit every | amortised (s) | "
          "exact GP, refit every call (s) | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o = r["mfms_bo"]
        print(f"| {r['trials']} | {r['observations']} | {o['cold_s']:.2f} | "
              f"{o['refit_median_s']:.2f} / {o['refit_max_s']:.2f} | "
              f"{o['condition_median_s']:.2f} / {o['condition_max_s']:.2f} | "
              f"{o['refit_every_trials']} trials | {o['amortised_s']:.2f} | "
              + (f"{r['exact_gp']['refit_median_s']:.2f} | {r['speedup']:.1f}x |"
                 if r["exact_gp"] else "not run | - |"))
    batch = None
    if args.batch > 0:
        n = max(int(s) for s in args.sizes.split(","))
        batch = time_propose(make_history(n), None, args.repeats, n=args.batch,
                             n_pending=args.batch, options=options)
        print(f"\nbatch of {batch['n']} with {batch['pending']} pending, {n} trials: "
              f"refit median / max {batch['refit_median_s']:.2f} / {batch['refit_max_s']:.2f} s, "
              f"conditioning-only {batch['condition_median_s']:.2f} / "
              f"{batch['condition_max_s']:.2f} s")
    trade = None
    if args.tradeoff > 0:
        default = MFMSBO(search_space_of(simulated_problems()["sim-k5"])).config
        caps = sorted({(default.max_fit_points, c) for c in (300, 600, 1200, 2400, 4800)}
                      | {(f, default.max_condition_points) for f in (128, 256, 512, 1024)})
        trade = tradeoff(args.tradeoff, caps)
        print(f"\nfit/condition caps on {args.tradeoff} trials (default "
              f"{default.max_fit_points} / {default.max_condition_points}):")
        print("| max_fit_points | max_condition_points | fit + condition (s) | RMSE / std at "
              "target | Spearman | 90% coverage |")
        print("|---|---|---|---|---|---|")
        for r in trade:
            print(f"| {r['max_fit_points']} | {r['max_condition_points']} | "
                  f"{r['fit_and_condition_s']:.2f} | {r['rmse_over_std']:.3f} | "
                  f"{r['spearman']:.3f} | {r['coverage90']:.2f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "batch": batch,
                                               "tradeoff": trade}, indent=1))


if __name__ == "__main__":
    main()
