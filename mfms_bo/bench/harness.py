"""Benchmark harness: strategies x problems x seeds under a cost budget.

Each run is sequential (one trial at a time): propose, evaluate on the problem, pay its cost,
then score the strategy's *current recommendation* by the problem's noise-free objective at
the target. Every strategy runs until the cost budget is spent (the last trial may overshoot
it); ``max_trials`` is only a safety net, and a run it stops is marked ``capped`` so that a
table never compares a capped run with a finished one silently. A strategy that proposes
nothing more (``uniform``, an exhausted pool) keeps its recommendation to the end.

Strategies never see the problem: they get the history of trials (specs, noisy learning
curves, costs) and, when they plan around it (``Strategy.uses_budget``), the budget. Scoring
(:mod:`mfms_bo.bench.metrics`, :mod:`mfms_bo.bench.report`) happens on the recorded curve.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfms_bo.bench.problem import Problem, search_space_of
from mfms_bo.strategies import STRATEGIES, make_strategy
from mfms_bo.trials import Measurement, TrialResult, TrialSpec

__all__ = ["RunResult", "TrialRecord", "run_one", "run_benchmark", "default_budget",
           "load_problem", "random_history", "reference_mixture", "start_cost",
           "evaluate_trial", "strategy_options"]


@dataclass
class TrialRecord:
    """One trial as an outside tool needs it to recompute any metric: what was run, what it
    cost, and what the strategy recommended after it (with that mixture's true objective)."""

    mixture: dict[str, float]
    model_size: float
    steps: int
    cost: float
    cumulative_cost: float
    recommendation: dict[str, float] | None
    true_objective: float | None
    #: The strategy's 90% credible interval of the recommendation's target objective (model
    #: based strategies only): with ``true_objective`` it measures calibration.
    interval: list[float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"mixture": self.mixture, "model_size": self.model_size, "steps": self.steps,
                "cost": self.cost, "cumulative_cost": self.cumulative_cost,
                "recommendation": self.recommendation, "true_objective": self.true_objective,
                "interval": self.interval}


@dataclass
class RunResult:
    """One strategy x problem x seed. ``curve`` is ``[[cumulative_cost, true_objective]]`` of
    the current recommendation (a point at cost 0 when the strategy recommends before any
    trial); ``uniform_gap`` and ``start_cost`` travel with the run so that every metric can
    be recomputed from the run alone."""

    problem: str
    strategy: str
    seed: int
    optimum: float | None
    curve: list[list[float]]
    trials: list[TrialRecord]
    seconds: float
    propose_seconds: float
    budget: float = math.inf
    capped: bool = False
    uniform_gap: float = math.nan
    start_cost: float = math.nan

    @property
    def n_trials(self) -> int:
        return len(self.trials)

    @property
    def spent(self) -> float:
        return self.trials[-1].cumulative_cost if self.trials else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"problem": self.problem, "strategy": self.strategy, "seed": self.seed,
                "optimum": self.optimum, "budget": self.budget, "capped": self.capped,
                "uniform_gap": self.uniform_gap, "start_cost": self.start_cost,
                "curve": self.curve, "trials": [t.to_json() for t in self.trials],
                "seconds": self.seconds, "propose_seconds": self.propose_seconds}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunResult:
        trials = [TrialRecord(**t) for t in d.get("trials", [])]
        return cls(d["problem"], d["strategy"], int(d["seed"]), d["optimum"],
                   [list(p) for p in d["curve"]], trials, float(d.get("seconds", 0.0)),
                   float(d.get("propose_seconds", 0.0)), float(d.get("budget", math.inf)),
                   bool(d.get("capped", False)), float(d.get("uniform_gap", math.nan)),
                   float(d.get("start_cost", math.nan)))


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


def reference_mixture(problem: Problem) -> dict[str, float]:
    """The mixture a user holds without any search: the ``uniform`` strategy's recommendation
    (the uniform mixture, or the pool member nearest to it)."""
    rec = make_strategy("uniform", search_space_of(problem)).recommend([])
    assert rec is not None
    return dict(rec.mixture)


def uniform_gap(problem: Problem) -> float:
    """Relative gap of :func:`reference_mixture` at the target (nan without an optimum)."""
    opt = problem.optimum()
    if opt is None:
        return math.nan
    return (problem.true_objective(reference_mixture(problem)) - opt) / abs(opt)


def start_cost(problem: Problem) -> float:
    """The cheapest run's cost: where the log-cost axis of the plot and the log-gap area
    start (nothing can be learnt for less)."""
    return float(min(problem.cost(m, problem.steps[0]) for m in problem.model_sizes))


def evaluate_trial(problem: Problem, spec: TrialSpec, seed: int) -> TrialResult:
    """Run ``spec`` on ``problem``: its noisy learning curve and its cost, as a completed
    trial. The one place a benchmark turns a proposal into a result (the harness, the
    latency benchmarks and the strategy tests all go through it)."""
    points = problem.evaluate(dict(spec.mixture), spec.model_size, spec.steps, seed=seed)
    return TrialResult(spec, tuple(Measurement(s, dict(v)) for s, v in points),
                       cost=float(problem.cost(spec.model_size, spec.steps)))


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, merging nested dicts (``surrogate``) key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def strategy_options(problem: Problem, strategy: str,
                     options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options ``strategy`` runs ``problem`` with: the problem's own for it
    (``strategy_options``, e.g. a table's held-out prior) under ``options``, key by key."""
    return _merged(getattr(problem, "strategy_options", {}).get(strategy, {}), options or {})


def run_one(problem: Problem, strategy: str, seed: int, budget: float,
            max_trials: int = 2000, options: dict[str, Any] | None = None) -> RunResult:
    """One strategy on one problem until the budget is spent (``max_trials``: a safety net
    that marks the run ``capped``). Budget-planning strategies get ``budget`` as an option,
    and a problem may give a strategy options of its own (``strategy_options``, e.g. a
    table's held-out prior), which ``options`` override key by key."""
    torch.manual_seed(seed)
    space = search_space_of(problem)
    opts = strategy_options(problem, strategy, options)
    cls = STRATEGIES.get(strategy)
    if cls is not None and cls.uses_budget:
        opts.setdefault("budget", float(budget))
    strat = make_strategy(strategy, space, seed=seed, options=opts)
    history: list[TrialResult] = []
    spent = 0.0
    curve: list[list[float]] = []
    trials: list[TrialRecord] = []
    t0 = time.perf_counter()
    t_prop = 0.0
    rec = strat.recommend(history)
    if rec is not None:  # a no-search baseline recommends before any trial
        curve.append([0.0, float(problem.true_objective(rec.mixture))])
    while spent < budget and len(history) < max_trials:
        tp = time.perf_counter()
        specs = strat.propose(history, [], 1)
        t_prop += time.perf_counter() - tp
        if not specs:
            break
        spec = specs[0]
        result = evaluate_trial(problem, spec, seed * 100_000 + len(history))
        cost = float(result.cost)  # type: ignore[arg-type]
        spent += cost
        history.append(result)
        tp = time.perf_counter()
        rec = strat.recommend(history)
        t_prop += time.perf_counter() - tp
        value = float(problem.true_objective(rec.mixture)) if rec is not None else None
        if value is not None:
            curve.append([spent, value])
        interval = list(rec.interval) if rec is not None and rec.interval else None
        trials.append(TrialRecord(dict(spec.mixture), float(spec.model_size), int(spec.steps),
                                  cost, spent, dict(rec.mixture) if rec else None, value,
                                  interval))
    capped = spent < budget and len(history) >= max_trials
    return RunResult(problem.name, strategy, seed, problem.optimum(), curve, trials,
                     time.perf_counter() - t0, t_prop, float(budget), capped,
                     uniform_gap(problem), start_cost(problem))


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
        spec = TrialSpec(space.mixtures.to_dict(W[i]), m, z,
                         space.fidelities.checkpoint_steps(z))
        out.append(evaluate_trial(problem, spec, seed * 1000 + i))
    return out


def _run_job(args: tuple) -> RunResult:
    ref, strategy, seed, budget, max_trials, options = args
    torch.set_num_threads(1)
    return run_one(load_problem(ref), strategy, seed, budget, max_trials, options)


def run_benchmark(problems: Sequence[str], strategies: Sequence[str], seeds: int,
                  budget: float | None = None, workers: int = 1, max_trials: int = 2000,
                  options: dict[str, dict[str, Any]] | None = None,
                  progress: bool = True, first_seed: int = 0,
                  on_run: Callable[[RunResult], None] | None = None
                  ) -> list[RunResult]:
    """All combinations, seeds ``first_seed .. first_seed + seeds - 1`` (more seeds for a
    table already run: each run depends on its seed alone); ``budget`` None =
    :func:`default_budget` per problem.

    Every job goes to the pool at once, so a slow problem's last runs do not leave workers
    idle, and results come back in job order. Every problem is loaded before the first run,
    so a bad reference fails at once. ``on_run`` gets each run as it finishes (``mfms bench
    --json`` saves them, so a suite stopped after an hour keeps that hour's runs)."""
    jobs = []
    for ref in problems:
        problem = load_problem(ref)
        b = budget if budget is not None else default_budget(problem)
        for s in strategies:
            for seed in range(first_seed, first_seed + seeds):
                jobs.append((ref, s, seed, b, max_trials, (options or {}).get(s)))
    out: list[RunResult] = []
    def finished(r: RunResult) -> None:
        out.append(r)
        if progress:
            _report(r, len(out), len(jobs))
        if on_run is not None:
            on_run(r)

    if workers <= 1:
        for j in jobs:
            finished(_run_job(j))
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for r in ex.map(_run_job, jobs):
                finished(r)
    return out


def _report(r: RunResult, i: int, n: int) -> None:
    last = r.curve[-1][1] if r.curve else float("nan")
    gap = (last / r.optimum - 1) * 100 if r.optimum else float("nan")
    cap = " (capped by max_trials)" if r.capped else ""
    print(f"[{i}/{n}] {r.problem:22s} {r.strategy:10s} seed {r.seed}: {r.n_trials} trials, "
          f"{r.spent / r.budget:.0%} of budget{cap}, final gap {gap:.2f}%, {r.seconds:.0f}s",
          file=sys.stderr, flush=True)
