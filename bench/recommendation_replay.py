"""Recommendation rules compared on the same searches.

``mfms-bo``'s proposals never read its recommendation, so the trials of a saved benchmark run
(``mfms bench --json``) are exactly what any other recommendation rule would have seen.
This replays each run's history (the problem's losses are regenerated from the run's seed),
fits the surrogate every ``--every`` trials, and scores each rule's recommendation by the
problem's true objective: settle cost, final gap and the largest rise after first coming
within 1%, per problem, median over seeds. A counterfactual on one set of searches, so the
comparison is paired. Each fit's hyperparameters travel in the next trial's spec, as in a
live study, so the replayed surrogate refits on the strategy's own schedule.

    python bench/recommendation_replay.py bench/results/standard.json \\
        [--problem scale-k6-extrap] [--risks 0,0.5,1,2] [--relative-risks 1,2] \\
        [--incumbent-risks 1,2] [--every 4] [--workers 2] \\
        [--options '{"surrogate": {"mean": "scaling_law"}}']

``--options`` must be the strategy's options of the saved runs (what ``mfms bench
--options`` gave it): the surrogate is rebuilt from them and from the problem's own
options for the strategy (a table's held-out transfer prior), as the harness built it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from mfms_bo.bench.harness import evaluate_trial, load_problem, strategy_options
from mfms_bo.bench.metrics import cost_to_settle, final_gap, largest_rise
from mfms_bo.bench.problem import search_space_of
from mfms_bo.recommend import recommend_from_surrogate
from mfms_bo.strategies import make_strategy
from mfms_bo.trials import TrialResult, TrialSpec

#: How a rule's ``sd`` is taken: at the target alone, of the difference from the best
#: mixture run so far, or of the difference from the rule's own previous recommendation.
MODES = ("absolute", "best_run", "incumbent")


def replay(run: dict[str, Any], rules: list[tuple[float, str]], every: int,
           options: dict[str, Any] | None = None) -> list[list]:
    """Each rule's curve ``[[cost, true objective]]`` on one run's trials, with the
    surrogate the run had (``options``: the strategy's options the run was made with).

    A rule is ``(risk, mode)``: :func:`recommend_from_surrogate`'s ``risk`` and which
    ``sd`` it takes (:data:`MODES`): with ``incumbent``, a new mixture replaces the previous
    recommendation only where the model is sure it is better (hysteresis).
    Each fit's hyperparameters are recorded in the newest trial's spec, as the live
    strategy records them in its proposals, so the next fit warm-starts from them and
    re-optimises on the strategy's own schedule."""
    torch.set_num_threads(1)
    problem = load_problem(run["problem"])
    space = search_space_of(problem)
    strategy = make_strategy(run["strategy"], space, seed=run["seed"],
                             options=strategy_options(problem, run["strategy"], options))
    curves: list[list] = [[] for _ in rules]
    history: list[TrialResult] = []
    last = len(run["trials"]) - 1
    fit_record: dict[str, Any] = {}
    incumbents: list[torch.Tensor | None] = [None for _ in rules]
    for i, t in enumerate(run["trials"]):
        spec = TrialSpec(t["mixture"], t["model_size"], t["steps"],
                         space.fidelities.checkpoint_steps(t["steps"]), metadata=fit_record)
        history.append(evaluate_trial(problem, spec, run["seed"] * 100_000 + i))
        if i % every and i != last:
            continue
        fit = strategy.fit_surrogate(history)  # type: ignore[attr-defined]
        if fit is None:
            continue
        fit_record = strategy.fit_metadata(fit)  # type: ignore[attr-defined]
        ran = torch.tensor([[float(r.spec.mixture.get(d, 0.0)) for d in space.mixtures.domains]
                            for r in history], dtype=torch.float64).unique(dim=0)
        for j, (risk, mode) in enumerate(rules):
            g = torch.Generator().manual_seed(run["seed"] + 17)
            reference = {"absolute": None, "best_run": ran, "incumbent": incumbents[j]}[mode]
            rec = recommend_from_surrogate(fit.model, strategy.model_space,  # type: ignore
                                           generator=g, transform=torch.exp, risk=risk,
                                           reference=reference)
            incumbents[j] = torch.tensor([[rec.mixture[d] for d in space.mixtures.domains]],
                                         dtype=torch.float64)
            curves[j].append([t["cumulative_cost"], float(problem.true_objective(rec.mixture))])
    return curves


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", help="a JSON written by mfms bench --json")
    ap.add_argument("--strategy", default="mfms-bo")
    ap.add_argument("--problem", action="append", default=None)
    ap.add_argument("--risks", default="0,0.5,1,2",
                    help="risks of mean + risk * sd at the target")
    ap.add_argument("--relative-risks", default="",
                    help="risks with sd that of the difference from the best mixture run")
    ap.add_argument("--incumbent-risks", default="",
                    help="risks with sd that of the difference from the last recommendation")
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--options", default=None,
                    help="JSON: the strategy's options the runs were made with")
    args = ap.parse_args()
    options = json.loads(args.options) if args.options else None
    rules = [(float(x), "absolute") for x in args.risks.split(",") if x.strip()]
    rules += [(float(x), "best_run") for x in args.relative_risks.split(",") if x.strip()]
    rules += [(float(x), "incumbent") for x in args.incumbent_risks.split(",") if x.strip()]
    with open(args.runs) as f:
        saved = json.load(f)["runs"]
    runs = [r for r in saved if r["strategy"] == args.strategy
            and (not args.problem or r["problem"] in args.problem)]
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        curves = list(pool.map(replay, runs, [rules] * len(runs), [args.every] * len(runs),
                               [options] * len(runs)))
    rows = []
    for prob in dict.fromkeys(r["problem"] for r in runs):
        mine = [(r, c) for r, c in zip(runs, curves, strict=True) if r["problem"] == prob]
        for j, (risk, mode) in enumerate(rules):
            settle = [cost_to_settle(c[j], r["optimum"], 0.005) / r["budget"] * 100
                      for r, c in mine]
            final = [100 * final_gap(c[j], r["optimum"]) for r, c in mine]
            rise = [100 * x for x in (largest_rise(c[j], r["optimum"]) for r, c in mine)
                    if not math.isnan(x)]
            rows.append({"problem": prob, "risk": risk, "mode": mode,
                         "seeds": len(mine), "settle_pct": statistics.median(settle),
                         "settle_pct_per_seed": settle,
                         "final_gap_pct": statistics.median(final),
                         "worst_rise_pct": max(rise, default=math.nan)})
    print(f"| problem | risk | settle 0.5% (% of budget, median) | final gap (%, median) | "
          f"worst rise after 1% (% points) |  ({args.strategy}, fit every {args.every} trials)")
    print("|---|---|---|---|---|")
    for r in rows:
        settle = "never" if math.isinf(r["settle_pct"]) else f"{r['settle_pct']:.2g}"
        rule = f"{r['risk']:g}" + {"absolute": "", "best_run": " from the best run",
                                   "incumbent": " from the incumbent"}[r["mode"]]
        print(f"| {r['problem']} | {rule} | {settle} | {r['final_gap_pct']:.3f} | "
              f"{r['worst_rise_pct']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1,
                      default=lambda x: "inf" if x == math.inf else None)


if __name__ == "__main__":
    main()
