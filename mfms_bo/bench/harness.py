"""Benchmark harness: strategies x problems x seeds under a cost budget.

Each run is sequential (one trial at a time): propose, evaluate on the problem, pay its cost,
then score the strategy's *current recommendation* by the problem's noise-free objective at
the target. Curves are ``[[cumulative_cost, true_objective], ...]``; the summary reports the
median cost to get within 0.5% / 1% of the optimum, and to the optimum itself (on a pool the
best candidate can be found exactly; on a continuous problem it never is), and the speed-up
of ``mfms-bo`` over each baseline as a ratio of those median costs, all from the same run.
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfms_bo.bench.problem import Problem, search_space_of
from mfms_bo.strategies import make_strategy
from mfms_bo.trials import Measurement, TrialResult, TrialSpec

__all__ = ["RunResult", "run_one", "run_benchmark", "summarize", "format_table",
           "default_budget", "load_problem", "cost_to_reach", "write_plot", "random_history"]


@dataclass
class RunResult:
    problem: str
    strategy: str
    seed: int
    optimum: float | None
    curve: list[list[float]]
    trials: int
    seconds: float
    propose_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"problem": self.problem, "strategy": self.strategy, "seed": self.seed,
                "optimum": self.optimum, "curve": self.curve, "trials": self.trials,
                "seconds": self.seconds, "propose_seconds": self.propose_seconds}


def default_budget(problem: Problem) -> float:
    """Budget in the problem's cost unit: 15 runs at the largest runnable size and the target
    steps (30 for pool problems, whose pools are larger than what 15 runs can sweep)."""
    runs = 30 if problem.candidates is not None else 15
    return runs * problem.cost(max(problem.model_sizes), problem.steps[1])


def load_problem(ref: str) -> Problem:
    """A shipped problem by name, or ``path/to/file.py:NAME`` (an object or a factory)."""
    from mfms_bo.bench.problems import all_problems

    shipped = all_problems()
    if ref in shipped:
        return shipped[ref]
    if ":" not in ref:
        raise ValueError(f"unknown problem {ref!r}; shipped: {sorted(shipped)}; "
                         "or give path/to/file.py:NAME")
    path, name = ref.rsplit(":", 1)
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load problem file {path!r}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    obj = getattr(mod, name)
    if callable(obj) and not isinstance(obj, Problem):
        obj = obj()
    if not isinstance(obj, Problem):
        raise ValueError(f"{ref}: object does not follow the Problem protocol (DESIGN §5)")
    return obj


def run_one(problem: Problem, strategy: str, seed: int, budget: float,
            max_trials: int = 400, options: dict[str, Any] | None = None) -> RunResult:
    """One strategy on one problem until the budget (or ``max_trials``) is spent."""
    torch.manual_seed(seed)
    space = search_space_of(problem)
    strat = make_strategy(strategy, space, seed=seed, options=options)
    history: list[TrialResult] = []
    spent = 0.0
    curve: list[list[float]] = []
    t0 = time.perf_counter()
    t_prop = 0.0
    while spent < budget and len(history) < max_trials:
        tp = time.perf_counter()
        specs = strat.propose(history, [], 1)
        t_prop += time.perf_counter() - tp
        if not specs:
            break
        spec = specs[0]
        points = problem.evaluate(dict(spec.mixture), spec.model_size, spec.steps,
                                  seed=seed * 100_000 + len(history))
        cost = float(problem.cost(spec.model_size, spec.steps))
        spent += cost
        history.append(TrialResult(spec, tuple(Measurement(s, dict(v)) for s, v in points),
                                   cost=cost))
        rec = strat.recommend(history)
        if rec is not None:
            curve.append([spent, float(problem.true_objective(rec.mixture))])
    return RunResult(problem.name, strategy, seed, problem.optimum(), curve, len(history),
                     time.perf_counter() - t0, t_prop)


def random_history(problem: Problem, n_trials: int, seed: int = 0) -> list[TrialResult]:
    """``n_trials`` completed trials at random mixtures, runnable sizes and steps: the
    unbiased data on which surrogate accuracy and proposal latency are measured."""
    space = search_space_of(problem)
    rng = np.random.default_rng(seed)
    W = space.mixtures.sample(n_trials, torch.Generator().manual_seed(seed))
    out = []
    for i in range(n_trials):
        m = float(rng.choice(problem.model_sizes))
        z = int(rng.integers(problem.steps[0], problem.steps[1] + 1))
        mix = space.mixtures.to_dict(W[i])
        pts = problem.evaluate(mix, m, z, seed=seed * 1000 + i)
        spec = TrialSpec(mix, m, z, space.fidelities.checkpoint_steps(z))
        out.append(TrialResult(spec, tuple(Measurement(s, v) for s, v in pts),
                               float(problem.cost(m, z))))
    return out


def _run_job(args: tuple) -> RunResult:
    ref, strategy, seed, budget, max_trials, options = args
    torch.set_num_threads(1)
    return run_one(load_problem(ref), strategy, seed, budget, max_trials, options)


def run_benchmark(problems: Sequence[str], strategies: Sequence[str], seeds: int,
                  budget: float | None = None, workers: int = 1, max_trials: int = 400,
                  options: dict[str, dict[str, Any]] | None = None,
                  progress: bool = True) -> list[RunResult]:
    """All combinations; ``budget`` None = :func:`default_budget` per problem."""
    jobs = []
    for ref in problems:
        b = budget if budget is not None else default_budget(load_problem(ref))
        for s in strategies:
            for seed in range(seeds):
                jobs.append((ref, s, seed, b, max_trials, (options or {}).get(s)))
    out: list[RunResult] = []
    if workers <= 1:
        for j in jobs:
            out.append(_run_job(j))
            if progress:
                _report(out[-1], len(out), len(jobs))
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for r in ex.map(_run_job, jobs):
                out.append(r)
                if progress:
                    _report(r, len(out), len(jobs))
    return out


def _report(r: RunResult, i: int, n: int) -> None:
    last = r.curve[-1][1] if r.curve else float("nan")
    gap = (last / r.optimum - 1) * 100 if r.optimum else float("nan")
    print(f"[{i}/{n}] {r.problem:22s} {r.strategy:10s} seed {r.seed}: {r.trials} trials, "
          f"final gap {gap:.2f}%, {r.seconds:.0f}s", file=sys.stderr, flush=True)


# Relative slack for "found the optimum": a pool's objective is a lookup, so the best
# candidate scores the optimum up to float rounding.
OPTIMUM_RTOL = 1e-9
_TARGETS = (("0.5pct", 0.005), ("1pct", 0.01), ("optimum", OPTIMUM_RTOL))


def cost_to_reach(curve: list[list[float]], optimum: float | None, eps: float) -> float:
    """First cumulative cost at which the recommendation is within ``eps`` (relative) of the
    optimum; ``inf`` if never."""
    if optimum is None:
        return math.inf
    for c, v in curve:
        if v <= optimum + eps * abs(optimum):
            return c
    return math.inf


def summarize(runs: Sequence[RunResult], reference: str = "mfms-bo") -> dict[str, Any]:
    """Per problem x strategy: median cost to 0.5% / 1% / the optimum, median final regret,
    speed-ups."""
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in runs:
        row = table.setdefault(r.problem, {}).setdefault(
            r.strategy, {"regret": [], **{key: [] for key, _ in _TARGETS}})
        for key, eps in _TARGETS:
            row[key].append(cost_to_reach(r.curve, r.optimum, eps))
        final = r.curve[-1][1] if r.curve else math.inf
        row["regret"].append(final - r.optimum if r.optimum is not None else math.nan)
    out: dict[str, Any] = {}
    for prob, rows in table.items():
        out[prob] = {}
        for strat, row in rows.items():
            out[prob][strat] = {
                **{f"median_cost_{key}": statistics.median(row[key]) for key, _ in _TARGETS},
                "median_final_regret": statistics.median(row["regret"]),
                "runs": len(row["regret"]),
            }
        ref = out[prob].get(reference)
        if ref is not None:
            for row in out[prob].values():
                for key, _ in _TARGETS:
                    a, b = ref[f"median_cost_{key}"], row[f"median_cost_{key}"]
                    row[f"speedup_{key}"] = _ratio(b, a)
    return out


def _ratio(baseline: float, ours: float) -> float:
    if math.isinf(ours):
        return math.nan if math.isinf(baseline) else 0.0
    return math.inf if math.isinf(baseline) else baseline / ours


def format_table(summary: dict[str, Any], budgets: dict[str, float] | None = None) -> str:
    """Markdown table; ``inf`` costs print as ``>budget``. The cost to the optimum itself is
    a column only when some strategy found it (a pool's best candidate); on continuous
    problems it would be ``>budget`` everywhere."""
    exact = any(not math.isinf(row.get("median_cost_optimum", math.inf))
                for rows in summary.values() for row in rows.values())
    head = "| problem | strategy | cost to 0.5% | cost to 1% | "
    head += "cost to optimum | " if exact else ""
    head += "final regret | mfms-bo speed-up (0.5%) | mfms-bo speed-up (1%) |"
    head += " mfms-bo speed-up (optimum) |" if exact else ""
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for prob, rows in summary.items():
        b = (budgets or {}).get(prob)
        for strat, row in rows.items():
            def c(v: float, b: float | None = b) -> str:
                if math.isinf(v):
                    return f">{b:.4g}" if b else "never"
                return f"{v:.4g}"

            def s(v: float | None) -> str:
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    return "-"
                return "inf" if math.isinf(v) else f"{v:.2f}x"

            line = (f"| {prob} | {strat} | {c(row['median_cost_0.5pct'])} | "
                    f"{c(row['median_cost_1pct'])} | ")
            line += f"{c(row['median_cost_optimum'])} | " if exact else ""
            line += (f"{row['median_final_regret']:.4f} | "
                     f"{s(row.get('speedup_0.5pct'))} | {s(row.get('speedup_1pct'))} |")
            line += f" {s(row.get('speedup_optimum'))} |" if exact else ""
            lines.append(line)
    return "\n".join(lines)


def write_json(runs: Sequence[RunResult], path: str | Path) -> None:
    """The schema outside tools score: ``{"runs": [{problem, strategy, seed, optimum, curve}]}``
    (plus trials and timings, which readers may ignore)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"runs": [r.to_json() for r in runs]}, indent=1))


def write_plot(runs: Sequence[RunResult], path: str | Path) -> None:
    """Best-so-far simple regret vs cumulative cost, median over seeds, one panel per problem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = sorted({r.problem for r in runs})
    fig, axes = plt.subplots(1, len(probs), figsize=(4.2 * len(probs), 3.4), squeeze=False)
    for ax, prob in zip(axes[0], probs, strict=True):
        for strat in sorted({r.strategy for r in runs if r.problem == prob}):
            rs = [r for r in runs if r.problem == prob and r.strategy == strat and r.curve]
            if not rs or rs[0].optimum is None:
                continue
            xs = sorted({c for r in rs for c, _ in r.curve})
            med = []
            for x in xs:
                vals = []
                for r in rs:
                    v = [val for c, val in r.curve if c <= x]
                    vals.append(min(v) - r.optimum if v else math.nan)  # type: ignore[operator]
                vals = [v for v in vals if not math.isnan(v)]
                med.append(statistics.median(vals) if vals else math.nan)
            ax.plot(xs, [max(m, 1e-5) for m in med], label=strat, drawstyle="steps-post")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(prob, fontsize=9)
        ax.set_xlabel("cumulative cost")
        ax.set_ylabel("simple regret at target")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
