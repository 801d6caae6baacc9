"""``mfms bench``: strategies x problems x seeds under a cost budget, and the report. Uses the
library only; :mod:`mfms_cli.main` adds it next to ``serve``, ``worker``, ``demo``, ``db``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["add_bench_command"]

_GP_STRATEGIES = ("mfms-bo", "mf-bo", "sf-bo")
# Spelled out rather than read from ``mfms_bo.strategies.STRATEGIES``: importing that loads
# torch and BoTorch, seconds that every ``mfms`` call (worker, study, db) would pay just to
# build the parser. tests/mfms_cli/test_bench.py keeps the two lists equal.
_ALL_STRATEGIES = [*_GP_STRATEGIES, "random", "hyperband", "uniform", "screen", "regmix", "tpe",
                   "dehb"]
# Strategies that run through an optional package (the `peers` extra).
_NEEDS = {"regmix": "lightgbm", "tpe": "optuna", "dehb": "dehb"}


def _available(strategies: list[str]) -> tuple[list[str], list[str]]:
    """``(runnable, skipped)``: strategies whose optional package is missing are skipped."""
    import importlib.util

    ok = [s for s in strategies if s not in _NEEDS or importlib.util.find_spec(_NEEDS[s])]
    return ok, [s for s in strategies if s not in ok]


def _non_negative_int(text: str) -> int:
    """A seed: an integer from 0 (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _merged_runs(paths: list[str]) -> tuple[list[Any], str | None]:
    """The runs of several ``--json`` files as one table, and the commit they share.

    Seeds run apart (``--first-seed``) join into one table; a run that two files both hold
    (same problem, strategy and seed) would count twice, most likely two configurations
    under one strategy name, so it is refused. Files from different commits or package
    versions join with a warning naming each: their runs may have taken different paths."""
    import sys

    from mfms_bo.bench.report import read_json

    runs: list[Any] = []
    seen: dict[tuple[str, str, int], str] = {}
    commits: dict[str, str | None] = {}
    environments: dict[str, str] = {}
    for path in paths:
        doc, file_runs = read_json(path)
        print(f"runs from {path}: commit {doc.get('commit')}, command: {doc.get('command')}")
        commits[path] = doc.get("commit")
        environments[path] = json.dumps(doc.get("environment"), sort_keys=True)
        for r in file_runs:
            key = (r.problem, r.strategy, r.seed)
            if key in seen:
                raise SystemExit(f"mfms bench: {r.problem} x {r.strategy} x seed {r.seed} is in "
                                 f"both {seen[key]} and {path}; join runs of one "
                                 "configuration only")
            seen[key] = path
        runs += file_runs
    if len(set(commits.values())) > 1:
        print("warning: the runs come from different commits: "
              + ", ".join(f"{p} {c}" for p, c in commits.items()), file=sys.stderr)
    if len(set(environments.values())) > 1:
        print("warning: the runs come from different package versions (see each file's "
              "'environment')", file=sys.stderr)
    shared = set(commits.values())
    commit = shared.pop() if len(shared) == 1 else ",".join(sorted(str(c) for c in shared))
    return runs, commit


def _cmd_bench(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from mfms_bo.bench.harness import run_benchmark
    from mfms_bo.bench.report import (
        RunsWriter,
        format_convergence,
        format_headline,
        format_problems,
        format_table,
        git_commit,
        summarize,
        write_json,
        write_plot,
    )
    from mfms_bo.bench.suites import suite_problems

    argv = getattr(args, "argv", None)
    command = "mfms " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    # The code that runs is the code at the start: later commits must not be credited.
    commit = git_commit(Path(__file__).parent)
    if args.from_json:
        runs, commit = _merged_runs(args.from_json)
    else:
        problems = list(args.problem or [])
        for name in args.suite or ([] if problems else ["standard"]):
            problems += suite_problems(name)
        problems = list(dict.fromkeys(problems))
        wanted = ([s.strip() for s in args.strategies.split(",") if s.strip()]
                  if args.strategies else list(_ALL_STRATEGIES))
        strategies, skipped = _available(wanted)
        if skipped:
            print(f"skipping {', '.join(skipped)}: pip install 'mfms-bo[peers]'",
                  file=sys.stderr)
        seeds = args.seeds if args.seeds is not None else (2 if args.quick else 10)
        options = json.loads(args.options) if args.options else {}
        if args.quick:  # fewer candidate mixtures per proposal: ~2x faster GP strategies
            for s in _GP_STRATEGIES:
                options.setdefault(s, {}).setdefault("n_mixtures", 128)
        t0 = time.perf_counter()
        # Saved as runs finish, without a summary: a stopped suite keeps them, and `--from`
        # reports on them or joins them with the rest run later.
        writer = RunsWriter(args.json, command=command, commit=commit) if args.json else None
        runs = run_benchmark(problems, strategies, seeds, args.budget, workers=args.workers,
                             first_seed=args.first_seed, max_trials=args.max_trials,
                             options=options, on_run=writer.add if writer else None)
        seed_range = (f"{args.first_seed}-{args.first_seed + seeds - 1}" if args.first_seed
                      else str(seeds))
        print(f"{len(runs)} runs in {time.perf_counter() - t0:.0f} s (seeds {seed_range}, "
              f"safety cap {args.max_trials} trials per run)", file=sys.stderr)
    summary = summarize(runs)
    report = (f"{format_problems(summary)}\n\n{format_headline(summary)}\n\n"
              f"{format_table(summary)}\n\n{format_convergence(summary)}\n\n"
              "Costs: % of the problem's budget, median over seeds [bootstrap 90% interval]. "
              "Final gap: % above the optimum. Speed-up: the strategy's median settle cost "
              "over mfms-bo's (above 1: mfms-bo is cheaper).\n")
    print(report)
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(report)
        print(f"wrote {args.report}")
    if args.json:
        write_json(runs, args.json, command=command, summary=summary, commit=commit)
        print(f"wrote {args.json}")
    if args.plot:
        write_plot(runs, args.plot)
        print(f"wrote {args.plot}")
    return 0


def add_bench_command(sub: argparse._SubParsersAction) -> None:
    """Register ``bench`` on a subcommand parser (the ``mfms`` CLI composes it)."""
    b = sub.add_parser("bench", help="compare strategies on benchmark problems",
                       description="Run strategies x problems x seeds until each run's cost "
                       "budget is spent; report the cost to settle near the optimum.")
    b.add_argument("--suite", action="append",
                   help="named problem set: standard (default) or easy; repeatable")
    b.add_argument("--problem", action="append", help="repeatable; shipped name or file.py:NAME")
    b.add_argument("--strategies", default=None,
                   help=f"comma-separated (default: {','.join(_ALL_STRATEGIES)}, skipping "
                   "those whose optional package is missing)")
    b.add_argument("--seeds", type=int, default=None, help="default 10 (2 with --quick)")
    b.add_argument("--first-seed", type=_non_negative_int, default=0,
                   help="run seeds FIRST_SEED .. FIRST_SEED + SEEDS - 1 (default 0): more "
                   "seeds for a table already run")
    b.add_argument("--budget", type=float, default=None,
                   help="cost budget in the problem's unit (default per problem)")
    b.add_argument("--max-trials", type=int, default=2000,
                   help="safety cap per run; a run it stops is marked in the table")
    b.add_argument("--workers", type=int, default=2, help="parallel processes")
    b.add_argument("--options", default=None,
                   help='JSON {strategy: {option: value}}, e.g. {"mfms-bo": {"acquisition": "ei"}}')
    b.add_argument("--json", default=None,
                   help="write the runs (every trial) as JSON here, after each run")
    b.add_argument("--from", dest="from_json", action="append", default=None,
                   help="report on the runs of a JSON written by --json instead of running; "
                   "repeatable, to join seeds run apart (--first-seed); with --json, write "
                   "the joined runs")
    b.add_argument("--report", default=None, help="write the markdown tables here")
    b.add_argument("--plot", default=None, help="write a PNG of the gap vs cost here")
    b.add_argument("--quick", action="store_true",
                   help="2 seeds and cheaper proposals for the GP strategies")
    b.set_defaults(func=_cmd_bench)
