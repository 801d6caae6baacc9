"""The ``mfms`` command line: ``demo`` and ``bench`` (``serve`` and ``worker`` come with the
service and worker packages)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main"]

_QUICK_PROBLEMS = ["sim-k3", "mixinglaws-5mix"]
_ALL_STRATEGIES = "mfms-bo,random,hyperband,sf-bo,mf-bo"


def _cmd_demo(args: argparse.Namespace) -> int:
    """A full mixture search on a simulated problem, in process, with a line per trial."""
    import torch

    from mfms_bo.bench.harness import load_problem
    from mfms_bo.bench.problem import search_space_of
    from mfms_bo.strategies import make_strategy
    from mfms_bo.trials import Measurement, TrialResult

    torch.set_num_threads(max(1, torch.get_num_threads()))
    problem = load_problem(args.problem)
    space = search_space_of(problem)
    strategy = make_strategy(args.strategy, space, seed=args.seed)
    target_cost = problem.cost(max(problem.model_sizes), problem.steps[1])
    budget = args.budget if args.budget is not None else 6 * target_cost
    print(f"mfms demo: problem {problem.name} ({len(problem.domains)} domains, sizes "
          f"{[f'{m / 1e6:g}M' for m in problem.model_sizes]}, target "
          f"{problem.target_model_size / 1e6:g}M x {problem.steps[1]} steps), strategy "
          f"{args.strategy}, budget {budget:.4g} (= {budget / target_cost:.1f} full-size runs)")
    history: list[TrialResult] = []
    spent = 0.0
    rec = None
    t0 = time.perf_counter()
    while spent < budget and len(history) < args.max_trials:
        spec = strategy.propose(history, [], 1)[0]
        points = problem.evaluate(dict(spec.mixture), spec.model_size, spec.steps,
                                  seed=args.seed * 100_000 + len(history))
        cost = problem.cost(spec.model_size, spec.steps)
        spent += cost
        history.append(TrialResult(spec, tuple(Measurement(s, v) for s, v in points), cost))
        rec = strategy.recommend(history)
        mix = " ".join(f"{v:.2f}" for v in spec.mixture.values())
        pred = f"{rec.predicted_objective:.4f}" if rec and rec.predicted_objective else "-"
        print(f"trial {len(history):3d}  size {spec.model_size / 1e6:6g}M  steps "
              f"{spec.steps:6d}  cost {cost:8.3g}  spent {spent:8.4g}  w=[{mix}]  "
              f"recommended predicts {pred}", flush=True)
    if rec is None:
        print("no recommendation: nothing was observed", file=sys.stderr)
        return 1
    print()
    print(f"Recommended mixture for {rec.model_size / 1e6:g}M params x {rec.steps} steps:")
    for d, v in rec.mixture.items():
        print(f"  {d:>20s}  {v:.4f}")
    if rec.interval is not None:
        print(f"Predicted target loss: {rec.predicted_objective:.4f} "
              f"(90% interval {rec.interval[0]:.4f} .. {rec.interval[1]:.4f})")
    print(f"Cost spent: {spent:.4g} ({spent / target_cost:.2f} full-size runs), "
          f"{len(history)} trials, {time.perf_counter() - t0:.0f} s")
    true = problem.true_objective(rec.mixture)
    opt = problem.optimum()
    if opt is not None:
        print(f"True target loss of the recommendation: {true:.4f}; optimum {opt:.4f} "
              f"(gap {100 * (true / opt - 1):.2f}%)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from mfms_bo.bench.harness import (
        default_budget,
        format_table,
        load_problem,
        run_benchmark,
        summarize,
        write_json,
        write_plot,
    )

    problems = args.problem or (_QUICK_PROBLEMS if args.quick else
                                ["sim-k3", "sim-k5", "sim-k6-extrap", "sim-k8-extrap",
                                 "regmix-60m", "mixinglaws-5mix", "mixinglaws-redpajama"])
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 5)
    max_trials = args.max_trials if args.max_trials is not None else (30 if args.quick else 150)
    options = json.loads(args.options) if args.options else {}
    if args.quick:
        for s in ("mfms-bo", "mf-bo", "sf-bo"):
            options.setdefault(s, {}).setdefault("n_mixtures", 128)
    budgets = {}
    for ref in problems:
        p = load_problem(ref)
        b = args.budget if args.budget is not None else default_budget(p)
        budgets[p.name] = b * (0.5 if args.quick and args.budget is None else 1.0)
    t0 = time.perf_counter()
    runs = []
    for ref in problems:
        name = load_problem(ref).name
        runs += run_benchmark([ref], strategies, seeds, budgets[name], workers=args.workers,
                              max_trials=max_trials, options=options)
    summary = summarize(runs)
    print(format_table(summary, budgets))
    print(f"\n{len(runs)} runs in {time.perf_counter() - t0:.0f} s "
          f"(seeds {seeds}, max {max_trials} trials per run)")
    if args.json:
        write_json(runs, args.json)
        Path(args.json).with_suffix(".summary.json").write_text(
            json.dumps({"summary": summary, "budgets": budgets}, indent=1, default=str))
        print(f"wrote {args.json}")
    if args.plot:
        write_plot(runs, args.plot)
        print(f"wrote {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfms", description="Multi-fidelity, multi-scale BO of "
                                "pretraining data mixtures.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run a full mixture search on a simulated problem")
    d.add_argument("--problem", default="sim-k5", help="shipped name or file.py:NAME")
    d.add_argument("--strategy", default="mfms-bo")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--budget", type=float, default=None,
                   help="cost budget (default: 6 full-size runs)")
    d.add_argument("--max-trials", type=int, default=40)
    d.set_defaults(func=_cmd_demo)
    b = sub.add_parser("bench", help="compare strategies on benchmark problems")
    b.add_argument("--problem", action="append", help="repeatable; shipped name or file.py:NAME")
    b.add_argument("--strategies", default=_ALL_STRATEGIES)
    b.add_argument("--seeds", type=int, default=None)
    b.add_argument("--budget", type=float, default=None,
                   help="cost budget in the problem's unit (default per problem)")
    b.add_argument("--max-trials", type=int, default=None)
    b.add_argument("--workers", type=int, default=2, help="parallel processes")
    b.add_argument("--options", default=None,
                   help='JSON {strategy: {option: value}}, e.g. {"mfms-bo": {"acquisition": "ei"}}')
    b.add_argument("--json", default=None, help="write runs as JSON here")
    b.add_argument("--plot", default=None, help="write a PNG of regret vs cost here")
    b.add_argument("--quick", action="store_true", help="reduced run (< 5 min on 2 cores)")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
