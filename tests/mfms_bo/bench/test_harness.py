"""Tests for mfms_bo.bench.harness and report: runs, budget stopping, summaries, JSON, plot,
problem loading."""

from __future__ import annotations

import json
import math
import textwrap

import pytest

from mfms_bo.bench.harness import (
    RunResult,
    TrialRecord,
    _merged,
    default_budget,
    load_problem,
    run_one,
)
from mfms_bo.bench.problem import Problem
from mfms_bo.bench.report import (
    format_problems,
    format_table,
    read_json,
    summarize,
    write_json,
    write_plot,
)


def _rr(strategy: str, seed: int, curve: list[list[float]], optimum: float | None = 1.0,
        problem: str = "p") -> RunResult:
    return RunResult(problem, strategy, seed, optimum, curve, [], 0.1, 0.05, budget=10.0,
                     uniform_gap=0.05, start_cost=0.5)


# -- run_one -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_run(sim_problem) -> RunResult:
    budget = 5 * sim_problem.cost(60e6, 4000)
    return run_one(sim_problem, "random", seed=0, budget=budget)


def test_run_one_random(random_run, sim_problem):
    r = random_run
    assert (r.problem, r.strategy, r.seed) == ("t", "random", 0)
    assert r.n_trials == 5 == len(r.curve)  # random always runs the largest size, max steps
    costs = [c for c, _ in r.curve]
    assert all(b >= a for a, b in zip(costs, costs[1:], strict=False))
    assert costs[-1] == pytest.approx(5 * sim_problem.cost(60e6, 4000))
    assert r.optimum == pytest.approx(sim_problem.optimum())
    for _, v in r.curve:
        assert math.isfinite(v) and v >= r.optimum - 1e-9  # no mixture beats the optimum
    assert r.seconds >= r.propose_seconds >= 0


def test_run_one_is_reproducible(sim_problem, random_run):
    again = run_one(sim_problem, "random", seed=0, budget=5 * sim_problem.cost(60e6, 4000))
    assert again.curve == random_run.curve


def test_a_problem_gives_options_of_its_own_under_the_callers():
    from mfms_bo.bench.problems.tables import HELD_OUT_TRANSFER_PRIOR, table_problems

    for name, problem in table_problems().items():
        for strategy in ("mfms-bo", "mf-bo", "sf-bo"):
            own = problem.strategy_options[strategy]  # type: ignore[attr-defined]
            assert own == {"surrogate": {"transfer_prior": HELD_OUT_TRANSFER_PRIOR[name]}}
    base = {"surrogate": {"transfer_prior": 0.9}, "n_init": 3}
    assert _merged(base, {"surrogate": {"maxiter": 5}, "n_init": 4}) == {
        "surrogate": {"transfer_prior": 0.9, "maxiter": 5}, "n_init": 4}
    assert _merged(base, {"surrogate": {"transfer_prior": 0.5}})["surrogate"] == {
        "transfer_prior": 0.5}
    assert base == {"surrogate": {"transfer_prior": 0.9}, "n_init": 3}  # not modified


def test_default_budget(sim_problem):
    assert default_budget(sim_problem) == pytest.approx(15 * sim_problem.cost(60e6, 4000))


# -- budget-only stopping -------------------------------------------------------------------
def test_run_one_spends_the_budget_and_records_every_trial(sim_problem):
    budget = 3.5 * sim_problem.cost(60e6, 4000)
    r = run_one(sim_problem, "random", seed=2, budget=budget)
    assert r.n_trials == 4 and not r.capped  # the last trial overshoots, then it stops
    assert r.spent == pytest.approx(4 * sim_problem.cost(60e6, 4000)) and r.budget == budget
    cum = 0.0
    for t, (c, v) in zip(r.trials, r.curve, strict=True):
        cum += t.cost
        assert t.cumulative_cost == pytest.approx(cum) == c
        assert t.model_size == 60e6 and t.steps == 4000
        assert set(t.mixture) == set(sim_problem.domains)
        assert t.recommendation is not None and t.true_objective == v
        assert sim_problem.true_objective(t.recommendation) == v
    assert math.isfinite(r.uniform_gap) and r.uniform_gap > 0
    assert r.start_cost == pytest.approx(sim_problem.cost(20e6, 500))


def test_run_one_marks_a_run_the_safety_cap_stopped(sim_problem):
    r = run_one(sim_problem, "random", seed=1, budget=1e9, max_trials=3)
    assert r.n_trials == 3 and r.capped


def test_a_no_search_strategy_is_scored_from_cost_zero(sim_problem):
    r = run_one(sim_problem, "uniform", seed=0, budget=sim_problem.cost(60e6, 4000))
    assert r.n_trials == 0 and not r.capped
    uniform = {d: 1 / 3 for d in sim_problem.domains}
    assert r.curve == [[0.0, pytest.approx(sim_problem.true_objective(uniform))]]
    assert r.uniform_gap == pytest.approx(r.curve[0][1] / r.optimum - 1)


# -- report ----------------------------------------------------------------------------------
def _runs() -> list[RunResult]:
    return [
        _rr("mfms-bo", 0, [[1, 1.02], [2, 1.004], [3, 1.001]]),  # settles 0.5% at 2
        _rr("mfms-bo", 1, [[1, 1.003], [4, 1.02], [5, 1.003]]),  # first 1, settles 5
        _rr("random", 0, [[3, 1.2], [6, 1.004], [9, 1.003]]),  # 6
        _rr("random", 1, [[5, 1.5]]),  # never
        _rr("random", 2, [[9, 1.004], [10, 1.0]]),  # 9
        _rr("uniform", 0, [[0, 1.05]]),
    ]


def test_summarize_settle_first_hit_and_speedups():
    s = summarize(_runs())["p"]
    assert s["budget"] == 10.0 and s["uniform_gap"] == pytest.approx(0.05)
    assert s["bands"] == {"0.5pct": 0.005, "0.25pct": 0.0025, "u10": pytest.approx(0.005)}
    ours, rnd, uni = s["rows"]["mfms-bo"], s["rows"]["random"], s["rows"]["uniform"]
    assert ours["settle"]["0.5pct"][0] == 3.5 and ours["first_hit"]["0.5pct"][0] == 1.5
    assert rnd["settle"]["0.5pct"][0] == 9.0 and rnd["runs"] == 3
    assert uni["settle"]["0.5pct"][0] == math.inf
    assert ours["final_gap"][0] == pytest.approx(0.002)
    assert rnd["speedup_settle"]["0.5pct"][0] == pytest.approx(9.0 / 3.5)
    assert uni["speedup_settle"]["0.5pct"][0] == math.inf
    for row in s["rows"].values():
        for key in ("0.5pct", "0.25pct", "u10"):
            med, lo, hi = row["settle"][key]
            assert lo <= med <= hi or math.isinf(med)
    # The uniform line's log-gap is its own gap, the others' are lower.
    assert uni["mean_log_gap"][0] == pytest.approx(math.log10(0.05))
    assert ours["mean_log_gap"][0] < uni["mean_log_gap"][0]


def test_format_table_marks_capped_runs_and_never():
    runs = _runs()
    runs[2].capped = True
    table = format_table(summarize(runs))
    lines = table.splitlines()
    assert lines[0].startswith("| problem | strategy | settle 0.5%")
    assert "| p | random *1/3 |" in table and "stopped by `--max-trials`" in table
    uniform = next(line for line in lines if "| uniform |" in line)
    assert "never" in uniform
    ours = next(line for line in lines if "| mfms-bo |" in line)
    assert "| 35 [" in ours  # settle 0.5%: 3.5 of a budget of 10
    assert "p" in format_problems(summarize(runs))


def test_json_round_trip_holds_every_trial(tmp_path, sim_problem):
    r = run_one(sim_problem, "random", seed=0, budget=2 * sim_problem.cost(60e6, 4000))
    runs = [r, _rr("mfms-bo", 3, [[1.0, 1.2], [2.0, 1.1]], optimum=None)]
    path = tmp_path / "out" / "results.json"
    write_json(runs, path, command="mfms bench --suite easy", summary=summarize(runs))
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text  # strict JSON for outside tools
    data = json.loads(text)
    assert data["command"] == "mfms bench --suite easy" and "commit" in data
    import botorch
    import torch
    env = data["environment"]  # a rerun takes the same paths only on the same versions
    assert env["botorch"] == botorch.__version__ and env["torch"] == torch.__version__
    assert env["python"].count(".") == 2 and "scipy" in env and "gpytorch" in env
    assert {"problem", "strategy", "seed", "optimum", "curve", "trials"} <= set(data["runs"][0])
    trial = data["runs"][0]["trials"][0]
    assert {"mixture", "model_size", "steps", "cost", "recommendation"} <= set(trial)
    assert data["runs"][1]["optimum"] is None
    doc, back = read_json(path)
    assert back[0].curve == r.curve and back[0].trials == r.trials
    assert back[0].budget == r.budget and back[0].uniform_gap == pytest.approx(r.uniform_gap)
    assert summarize(back)["t"]["rows"]["random"]["settle"] == \
        summarize([r])["t"]["rows"]["random"]["settle"]


def test_plot_is_written(tmp_path):
    path = tmp_path / "gap.png"
    write_plot(_runs(), path)
    assert path.stat().st_size > 1000


# -- load_problem --------------------------------------------------------------------------
PROBLEM_SRC = textwrap.dedent('''
    class Tiny:
        name = "tiny"
        domains = ["x", "y"]
        model_sizes = [1e7, 3e7]
        steps = (100, 400)
        target_model_size = 3e7
        checkpoints = 2
        objective_weights = None
        candidates = None

        def evaluate(self, mixture, model_size, steps, seed):
            loss = 2.0 + (mixture["x"] - 0.3) ** 2 + 1e6 / model_size + 10.0 / steps
            return [(steps // 2, {"x": loss + 0.1, "y": loss + 0.1}),
                    (steps, {"x": loss, "y": loss})]

        def cost(self, model_size, steps):
            return model_size * steps / 1e10

        def true_objective(self, mixture):
            return 2.0 + (mixture["x"] - 0.3) ** 2

        def optimum(self):
            return 2.0


    PROBLEM = Tiny()


    def make():
        return Tiny()


    NOT_A_PROBLEM = 42
''')


@pytest.fixture
def problem_file(tmp_path):
    path = tmp_path / "mfms_test_user_problem.py"
    path.write_text(PROBLEM_SRC)
    return path


@pytest.mark.parametrize("name", ["PROBLEM", "make", "Tiny"])
def test_load_problem_from_file(problem_file, name):
    p = load_problem(f"{problem_file}:{name}")
    assert isinstance(p, Problem)
    assert p.name == "tiny" and p.domains == ["x", "y"]


def test_loaded_problem_runs(problem_file):
    p = load_problem(f"{problem_file}:PROBLEM")
    r = run_one(p, "random", seed=0, budget=3 * p.cost(3e7, 400))
    assert r.n_trials == 3 and r.optimum == 2.0
    assert all(v >= 2.0 for _, v in r.curve)


def test_load_problem_errors(problem_file):
    with pytest.raises(ValueError, match="Problem protocol"):
        load_problem(f"{problem_file}:NOT_A_PROBLEM")
    with pytest.raises(AttributeError):
        load_problem(f"{problem_file}:MISSING")
    with pytest.raises(ValueError, match="unknown problem"):
        load_problem("no-such-problem")


def test_load_shipped_problem():
    p = load_problem("sim-k3")
    assert isinstance(p, Problem) and p.name == "sim-k3"


# -- every strategy: the budget, and nothing but the history ------------------------------
class _Watched:
    """A problem that fails the test if a strategy (not the harness) asks for the truth."""

    def __init__(self, problem) -> None:
        self._p = problem

    def __getattr__(self, name: str):
        return getattr(self._p, name)

    def _check(self) -> None:
        import inspect

        callers = [f.filename for f in inspect.stack()[2:]]
        leaks = [c for c in callers if "mfms_bo/strategies" in c.replace("\\", "/")]
        assert not leaks, f"a strategy looked at the true objective: {leaks[0]}"

    def true_objective(self, mixture):
        self._check()
        return self._p.true_objective(mixture)

    def optimum(self):
        self._check()
        return self._p.optimum()


@pytest.mark.parametrize("name", sorted(__import__("mfms_bo.strategies").strategies.STRATEGIES))
def test_every_strategy_stops_at_the_budget_and_sees_only_the_history(name, sim_problem):
    from tests.mfms_bo.strategies.test_strategies import GP_OPTIONS, GP_STRATEGIES, PEER_PACKAGES

    if name in PEER_PACKAGES:
        pytest.importorskip(PEER_PACKAGES[name])
    budget = 3 * sim_problem.cost(60e6, 4000)
    problem = _Watched(sim_problem)
    r = run_one(problem, name, seed=0, budget=budget,  # type: ignore[arg-type]
                options=dict(GP_OPTIONS) if name in GP_STRATEGIES else None)
    assert not r.capped
    if r.trials:
        # Only the last trial may cross the budget.
        assert r.trials[-2].cumulative_cost < budget if len(r.trials) > 1 else True
        assert r.spent <= budget + r.trials[-1].cost
        assert r.spent >= budget or name in ("screen", "regmix", "hyperband")
    assert r.curve, "every strategy recommends something by the end"


def test_convergence_table_reports_rise_coverage_and_the_geometric_mean():
    from mfms_bo.bench.report import format_convergence

    runs = _runs()
    # mfms-bo seed 0 recommends with 90% intervals: two hold the truth, one does not.
    runs[0].trials = [TrialRecord({"a": 1.0}, 1.0, 1, 1.0, float(c), {"a": 1.0}, v, iv)
                      for (c, v), iv in zip(runs[0].curve,
                                            [[1.0, 1.1], [1.01, 1.1], [0.9, 1.01]], strict=True)]
    s = summarize(runs)["p"]["rows"]["mfms-bo"]
    assert s["coverage90"] == {"inside": 2, "total": 3}
    # Seed 0 never rises after reaching 1%; seed 1 goes 0.3% -> 2%.
    assert s["rise_after_1pct"]["runs"] == 2
    assert s["rise_after_1pct"]["max"] == pytest.approx(0.017)
    text = format_convergence(summarize(runs))
    row = text.splitlines()[2]
    assert row.startswith("| p | 2/2 | 0.85 / 1.70 | 0.67 (3 recommendations) | random: 2.6x [")
    assert "Geometric mean of mfms-bo's speed-up" in text and "2.57x" in text


def test_headline_names_the_cheapest_other_strategy():
    from mfms_bo.bench.report import format_headline

    text = format_headline(summarize(_runs()))
    row = text.splitlines()[2]
    assert row.startswith("| p | 5.00 | 35 [")
    assert "random: 90 [" in row and "| 2.6x [" in row
