"""Tests for mfms_bo.bench.harness: one run, cost-to-reach, summaries, JSON, problem loading."""

from __future__ import annotations

import json
import math
import textwrap

import pytest

from mfms_bo.bench.harness import (
    RunResult,
    cost_to_reach,
    default_budget,
    format_table,
    load_problem,
    run_one,
    summarize,
    write_json,
)
from mfms_bo.bench.problem import Problem


def _rr(strategy: str, seed: int, curve: list[list[float]], optimum: float | None = 1.0,
        problem: str = "p") -> RunResult:
    return RunResult(problem, strategy, seed, optimum, curve, len(curve), 0.1, 0.05)


# -- run_one -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_run(sim_problem) -> RunResult:
    budget = 5 * sim_problem.cost(60e6, 4000)
    return run_one(sim_problem, "random", seed=0, budget=budget)


def test_run_one_random(random_run, sim_problem):
    r = random_run
    assert (r.problem, r.strategy, r.seed) == ("t", "random", 0)
    assert r.trials == 5 == len(r.curve)  # random always runs the largest size, max steps
    costs = [c for c, _ in r.curve]
    assert all(b >= a for a, b in zip(costs, costs[1:], strict=False))
    assert costs[-1] == pytest.approx(5 * sim_problem.cost(60e6, 4000))
    assert r.optimum == pytest.approx(sim_problem.optimum())
    for _, v in r.curve:
        assert math.isfinite(v) and v >= r.optimum - 1e-9  # no mixture beats the optimum
    assert r.seconds >= r.propose_seconds >= 0


def test_run_one_stops_at_max_trials(sim_problem):
    r = run_one(sim_problem, "random", seed=1, budget=1e9, max_trials=3)
    assert r.trials == 3 and len(r.curve) == 3


def test_run_one_is_reproducible(sim_problem, random_run):
    again = run_one(sim_problem, "random", seed=0, budget=5 * sim_problem.cost(60e6, 4000))
    assert again.curve == random_run.curve


def test_default_budget(sim_problem):
    assert default_budget(sim_problem) == pytest.approx(15 * sim_problem.cost(60e6, 4000))


# -- cost_to_reach / summarize -------------------------------------------------------------
def test_cost_to_reach():
    curve = [[1.0, 1.5], [2.0, 1.02], [3.0, 1.008], [5.0, 1.004], [8.0, 1.0]]
    assert cost_to_reach(curve, 1.0, 0.01) == 3.0
    assert cost_to_reach(curve, 1.0, 0.005) == 5.0
    assert cost_to_reach(curve, 1.0, 0.0) == 8.0
    assert cost_to_reach(curve, 1.0, 0.6) == 1.0
    assert cost_to_reach(curve, 0.5, 0.01) == math.inf  # never within 1%
    assert cost_to_reach([], 1.0, 0.01) == math.inf
    assert cost_to_reach(curve, None, 0.01) == math.inf
    # Relative to |optimum| for negative objectives; the threshold itself counts.
    assert cost_to_reach([[1.0, -1.9], [2.0, -1.98]], -2.0, 0.01) == 2.0


def test_summarize_medians_and_speedups():
    runs = [
        _rr("mfms-bo", 0, [[1, 1.02], [2, 1.004], [3, 1.0]]),  # 0.5%: 2, 1%: 2
        _rr("mfms-bo", 1, [[1, 1.009], [4, 1.003]]),  # 0.5%: 4, 1%: 1
        _rr("random", 0, [[3, 1.2], [6, 1.008], [9, 1.004]]),  # 9, 6
        _rr("random", 1, [[5, 1.5]]),  # never
        _rr("random", 2, [[9, 1.008], [12, 1.0]]),  # 12, 9
        _rr("hyperband", 0, [[2, 1.3]]),  # never
    ]
    s = summarize(runs)
    assert set(s) == {"p"} and set(s["p"]) == {"mfms-bo", "random", "hyperband"}
    ours, rnd, hb = s["p"]["mfms-bo"], s["p"]["random"], s["p"]["hyperband"]
    assert ours["median_cost_0.5pct"] == 3.0 and ours["median_cost_1pct"] == 1.5
    assert ours["runs"] == 2 and ours["median_final_regret"] == pytest.approx(0.0015)
    assert rnd["median_cost_0.5pct"] == 12.0 and rnd["median_cost_1pct"] == 9.0
    assert rnd["runs"] == 3 and rnd["median_final_regret"] == pytest.approx(0.004)
    assert rnd["speedup_0.5pct"] == pytest.approx(4.0) and rnd["speedup_1pct"] == 6.0
    assert ours["speedup_0.5pct"] == 1.0
    assert hb["median_cost_1pct"] == math.inf and hb["speedup_1pct"] == math.inf
    assert hb["median_final_regret"] == pytest.approx(0.3)


def test_summarize_when_reference_never_reaches():
    runs = [_rr("mfms-bo", 0, [[1, 2.0]], problem="q"), _rr("random", 0, [[1, 1.0]], problem="q"),
            _rr("hyperband", 0, [[1, 3.0]], problem="q")]
    s = summarize(runs)["q"]
    assert s["random"]["speedup_1pct"] == 0.0  # the baseline reached, we did not
    assert math.isnan(s["hyperband"]["speedup_1pct"])  # neither reached
    assert math.isnan(s["mfms-bo"]["speedup_1pct"])


def test_summarize_without_reference_or_optimum():
    s = summarize([_rr("random", 0, [[1, 1.0]], optimum=None), _rr("random", 1, [])])
    row = s["p"]["random"]
    assert "speedup_1pct" not in row
    assert row["median_cost_1pct"] == math.inf
    # An empty curve has infinite final regret; a missing optimum has none.
    assert row["runs"] == 2


def test_format_table():
    runs = [_rr("mfms-bo", 0, [[1, 1.0]]), _rr("random", 0, [[2, 1.5]])]
    table = format_table(summarize(runs), budgets={"p": 10.0})
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| problem")
    assert "| p | random | >10 |" in table
    assert "inf" in lines[3] and "1.00x" in lines[2]
    assert "never" in format_table(summarize(runs))


# -- JSON output ---------------------------------------------------------------------------
def test_write_json_schema(tmp_path, random_run):
    runs = [random_run, _rr("mfms-bo", 3, [[1.0, 1.2], [2.0, 1.1]], optimum=None)]
    path = tmp_path / "out" / "results.json"
    write_json(runs, path)
    data = json.loads(path.read_text())
    assert list(data) == ["runs"]
    assert isinstance(data["runs"], list) and len(data["runs"]) == 2
    for entry, r in zip(data["runs"], runs, strict=True):
        assert {"problem", "strategy", "seed", "optimum", "curve"} <= set(entry)
        assert entry["problem"] == r.problem and entry["strategy"] == r.strategy
        assert entry["seed"] == r.seed and isinstance(entry["seed"], int)
        assert entry["optimum"] == r.optimum
        assert all(len(p) == 2 and all(isinstance(x, (int, float)) for x in p)
                   for p in entry["curve"])
        assert entry["curve"] == [list(p) for p in r.curve]
    assert data["runs"][1]["optimum"] is None


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
    assert r.trials == 3 and r.optimum == 2.0
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


def test_cost_to_the_optimum_column_only_when_some_strategy_found_it():
    found = [_rr("mfms-bo", 0, [[1, 1.2], [3, 1.0]]), _rr("random", 0, [[2, 1.1], [6, 1.0]]),
             _rr("hyperband", 0, [[2, 1.004]])]
    s = summarize(found)["p"]
    assert s["mfms-bo"]["median_cost_optimum"] == 3.0
    assert s["random"]["speedup_optimum"] == pytest.approx(2.0)
    assert s["hyperband"]["median_cost_optimum"] == math.inf  # 0.4% off is not the optimum
    table = format_table(summarize(found), budgets={"p": 10.0}).splitlines()
    assert "cost to optimum" in table[0] and "speed-up (optimum)" in table[0]
    assert table[1].count("|---") == table[0].count("|") - 1 == 9
    assert "| p | random | 6 | 6 | 6 | 0.0000 |" in table[3] and table[3].endswith(" 2.00x |")
    near = [_rr("mfms-bo", 0, [[1, 1.003]]), _rr("random", 0, [[2, 1.004]])]
    assert "optimum" not in format_table(summarize(near))
