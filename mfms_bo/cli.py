"""The library's command: ``bench``. The ``mfms`` command (``server.cli``) adds it next to
``serve``, ``worker``, ``demo`` and ``db``; the library itself stays free of web code."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["main"]

_QUICK_PROBLEMS = ["sim-k3", "mixinglaws-5mix"]
_ALL_STRATEGIES = "mfms-bo,random,hyperband,sf-bo,mf-bo"


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


def add_bench_command(sub: argparse._SubParsersAction) -> None:
    """Register ``bench`` on a subcommand parser (the ``mfms`` CLI composes it)."""
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfms-bench", description="Benchmark mixture-search "
                                "strategies (library only; `mfms` has the full CLI).")
    add_bench_command(p.add_subparsers(dest="command", required=True))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
