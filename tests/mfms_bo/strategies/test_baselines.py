"""The practitioners' baselines (uniform, screen, regmix) and Hyperband under a cost budget.

Each strategy is driven like :func:`mfms_bo.bench.harness.run_one` drives it (sequentially,
until the budget is spent or it proposes nothing) on the shipped problems, with budgets small
enough for a test: sim-k3 (continuous, overhead-bound small runs), regmix-60m (a 256-member
pool at 1M and 60M parameters, one step count) and mixinglaws-5mix (26 members, four sizes,
learning curves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from mfms_bo.bench.harness import evaluate_trial, run_one
from mfms_bo.bench.problem import search_space_of
from mfms_bo.bench.problems import all_problems
from mfms_bo.bench.problems.simulated import make_simulated
from mfms_bo.errors import ValidationError
from mfms_bo.recommend import final_objective
from mfms_bo.space import SearchSpace
from mfms_bo.strategies import STRATEGIES, Strategy, make_strategy
from mfms_bo.strategies.screen import run_key
from mfms_bo.trials import TrialResult, TrialSpec

pytest.importorskip("lightgbm")  # regmix: the `peers` extra

BUDGETED = ("screen", "regmix", "hyperband")
FAST = {"screen": {}, "regmix": {"n_candidates": 4000}, "hyperband": {}, "uniform": {}}


@pytest.fixture(scope="module")
def problems() -> dict[str, Any]:
    return all_problems()


def _top_cost(problem) -> float:
    return float(problem.cost(max(problem.model_sizes), problem.steps[1]))


class _Sealed:
    """A problem whose scoring functions raise while the strategy is working: only the
    harness may look at the truth."""

    def __init__(self, problem) -> None:
        self._p = problem
        self.sealed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._p, name)

    def true_objective(self, mixture: dict[str, float]) -> float:
        assert not self.sealed, "the strategy looked at the true objective"
        return self._p.true_objective(mixture)

    def optimum(self) -> float | None:
        assert not self.sealed, "the strategy looked at the optimum"
        return self._p.optimum()


@dataclass
class Run:
    name: str
    space: SearchSpace
    strategy: Strategy
    budget: float
    history: list[TrialResult] = field(default_factory=list)
    curve: list[list[float]] = field(default_factory=list)
    stopped: bool = False  # the strategy proposed nothing while budget was left

    @property
    def spent(self) -> float:
        return sum(r.cost for r in self.history if r.cost is not None)


def _drive(problem, name: str, budget: float, seed: int = 0, options: dict | None = None,
           pure: bool = False, max_trials: int = 400) -> Run:
    """``run_one``'s loop, keeping the history. ``pure``: at every step a strategy built
    afresh from the same seed and options must propose and recommend the same (strategies
    are functions of the history)."""
    sealed = _Sealed(problem)
    space = search_space_of(sealed)
    opts = {**FAST.get(name, {}), **(options or {})}
    if STRATEGIES[name].uses_budget:
        opts.setdefault("budget", budget)
    strat = make_strategy(name, space, seed, opts)
    run = Run(name, space, strat, budget)
    while run.spent < budget and len(run.history) < max_trials:
        sealed.sealed = True
        specs = strat.propose(run.history, [], 1)
        if pure:
            again = make_strategy(name, space, seed, opts).propose(run.history, [], 1)
            assert [(s.mixture, s.model_size, s.steps, dict(s.metadata)) for s in specs] == \
                [(s.mixture, s.model_size, s.steps, dict(s.metadata)) for s in again]
        sealed.sealed = False
        if not specs:
            run.stopped = True
            break
        run.history.append(evaluate_trial(problem, specs[0], seed * 100_000 + len(run.history)))
        sealed.sealed = True
        rec = strat.recommend(run.history)
        if pure:
            assert make_strategy(name, space, seed, opts).recommend(run.history) == rec
        sealed.sealed = False
        assert rec is not None
        run.curve.append([run.spent, float(sealed.true_objective(rec.mixture))])
    return run


def _keys(run: Run) -> list[tuple]:
    return [run_key(r.spec, run.space.mixtures.domains) for r in run.history]


# -- (i) the budget ------------------------------------------------------------------------
BUDGET_CASES = [
    # (problem, budget in top-fidelity runs, options)
    ("sim-k3", 4.0, {"screen_fraction": 0.1}),
    ("regmix-60m", 4.0, {"max_screen": 40}),
    ("mixinglaws-5mix", 4.0, {}),
]


@pytest.mark.parametrize("name", BUDGETED)
@pytest.mark.parametrize("problem_name, runs, options", BUDGET_CASES)
def test_spends_the_budget_and_no_more(name, problem_name, runs, options, problems):
    problem = problems[problem_name]
    budget = runs * _top_cost(problem)
    opts = options if name != "hyperband" else {}
    run = _drive(problem, name, budget, options=opts)
    costs = [r.cost for r in run.history]
    assert run.history
    # Every trial started with budget left: only the last one may overshoot.
    assert sum(costs[:-1]) < budget
    assert run.spent <= budget + costs[-1]
    # Once the budget is spent the strategy stops by itself (the REST server relies on it).
    if run.spent >= budget:
        assert run.strategy.propose(run.history, [], 1) == []
    if name == "hyperband":
        # Brackets are sized to the budget: it stops when the next one cannot finish, with
        # less left than two runs at the top level.
        assert run.spent >= budget - 2 * _top_cost(problem)
    else:
        # With budget left it keeps confirming: the whole budget is used.
        assert run.spent >= budget
        fs = run.strategy.screen_fidelity()
        f = run.strategy.screen_fraction
        screen = [r.cost for r in run.history if (r.spec.model_size, r.spec.steps) == fs]
        assert sum(screen[:-1]) < f * budget  # the screening share, last screen overshooting
    if problem.candidates is not None:
        assert len(set(_keys(run))) == len(run.history), "bought a table entry twice"


def test_run_one_passes_the_budget_and_the_harness_stops_there(problems):
    problem = problems["regmix-60m"]
    budget = 3 * _top_cost(problem)
    r = run_one(problem, "screen", 0, budget, options={"budget": budget, "max_screen": 20})
    costs = [t.cost for t in r.trials]
    assert sum(costs[:-1]) < budget <= sum(costs)
    assert [t.model_size for t in r.trials].count(60e6) == 3  # 20 x 6 screening, 3 x 360


def _evaluated(problem, specs: list[TrialSpec]) -> list[TrialResult]:
    return [evaluate_trial(problem, sp, i) for i, sp in enumerate(specs)]


def test_pending_trials_count_against_the_budget(problems):
    problem = problems["regmix-60m"]
    space = search_space_of(problem)
    s = make_strategy("screen", space, 0, {"budget": 60.0})
    # Before any cost is reported the budget's unit is unknown: a first batch screens.
    batch = s.propose([], [], 10)
    assert len(batch) == 10 and {sp.model_size for sp in batch} == {1e6}
    history = _evaluated(problem, batch[:5])  # 5 x 6 = 30 spent: the screening half
    assert s.propose(history, batch[5:], 3) == []  # 5 running screens: 60 committed
    nxt = s.propose(history, batch[5:9], 3)  # 54 committed: one more (a confirmation)
    assert len(nxt) == 1 and nxt[0].model_size == 60e6


# -- (ii) only the history -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["uniform", *BUDGETED])
@pytest.mark.parametrize("problem_name", ["sim-k3", "regmix-60m"])
def test_strategies_see_only_the_history(name, problem_name, problems):
    problem = problems[problem_name]
    options = {"max_screen": 12, "screen_fraction": 0.2} if name in ("screen", "regmix") else {}
    run = _drive(problem, name, 2.5 * _top_cost(problem), options=options, pure=True)
    if name == "uniform":
        assert run.history == [] and run.stopped
    else:
        assert len(run.curve) == len(run.history) >= 3


# -- (iii) screen and regmix confirm what they ranked best ------------------------------
def test_screen_confirms_its_best_screens_in_rank_order(problems):
    problem = problems["mixinglaws-5mix"]
    run = _drive(problem, "screen", 4 * _top_cost(problem))
    s = run.strategy
    fs, fc = s.screen_fidelity(), s.confirm_fidelity()
    assert fc == (max(problem.model_sizes), problem.steps[1])
    assert fs == (min(problem.model_sizes), problem.steps[0])
    screens = [r for r in run.history if (r.spec.model_size, r.spec.steps) == fs]
    confirms = [r for r in run.history if (r.spec.model_size, r.spec.steps) == fc]
    assert len(screens) + len(confirms) == len(run.history)
    assert len(screens) == 26  # the whole pool: 26 cheap runs fit in half the budget
    assert len(confirms) == 4  # (4 - 26 * 1190 / 57059) top runs, the last overshooting
    ranked = sorted(screens, key=lambda r: final_objective(r, s.space))
    assert [dict(r.spec.mixture) for r in confirms] == \
        [dict(r.spec.mixture) for r in ranked[:4]]
    # Screens come first; the recommendation is the best confirmed run.
    assert run.history.index(confirms[0]) == len(screens)
    best = min(confirms, key=lambda r: final_objective(r, s.space))
    rec = s.recommend(run.history)
    assert rec.mixture == dict(best.spec.mixture) and rec.model_size == fc[0]
    # Before any large run it recommends the best screen.
    assert s.recommend(screens).mixture == dict(ranked[0].spec.mixture)


def test_regmix_confirms_its_average_then_its_predicted_best_on_a_pool(problems):
    problem = problems["regmix-60m"]
    budget = 40 * 6.0 + 3 * 360.0  # 40 screens (max_screen), then exactly 3 confirmations
    run = _drive(problem, "regmix", budget, options={"max_screen": 40})
    s = run.strategy
    space = s.space
    assert s.confirm_fidelity() == (60e6, 1000) and s.screen_fidelity() == (1e6, 1000)
    screens = [r for r in run.history if r.spec.model_size == 1e6]
    confirms = [r for r in run.history if r.spec.model_size == 60e6]
    assert len(screens) == 40 and len(confirms) == 3
    pool = space.candidates
    pred = s.predict_screening(screens, pool)
    assert pred is not None and pred.shape == (256,)
    # Deterministic: the same fit from the same runs.
    assert torch.equal(pred, s.predict_screening(screens, pool))
    order = torch.argsort(pred, stable=True)
    n_avg = 25  # the top tenth of the pool (the top 100 of 256 would be 40% of it)
    avg = pool[order[:n_avg]].mean(0)
    nearest = int(torch.argmin((pool - avg).norm(dim=-1)))
    first = confirms[0].spec
    assert first.metadata["regmix"] == "average" and first.metadata["n_average"] == n_avg
    assert dict(first.mixture) == space.mixtures.to_dict(pool[nearest])
    rest = [i for i in order.tolist() if i != nearest][:2]
    assert [dict(r.spec.mixture) for r in confirms[1:]] == \
        [space.mixtures.to_dict(pool[i]) for i in rest]
    best = min(confirms, key=lambda r: final_objective(r, space))
    assert s.recommend(run.history).mixture == dict(best.spec.mixture)


def test_regmix_confirms_the_top_average_off_the_pool(problems):
    problem = problems["sim-k3"]
    budget = 2 * _top_cost(problem)
    run = _drive(problem, "regmix", budget,
                 options={"max_screen": 30, "n_candidates": 3000, "top_average": 50})
    s = run.strategy
    screens = [r for r in run.history if r.spec.model_size == 20e6]
    confirms = [r for r in run.history if r.spec.model_size == 400e6]
    assert len(screens) == 30 and len(confirms) == 2
    assert all(r.spec.steps == 20000 for r in confirms)
    W = s.candidates()
    order = torch.argsort(s.predict_screening(screens), stable=True)
    avg = W[order[:50]].mean(0)
    got = torch.tensor([confirms[0].spec.mixture[d] for d in s.space.mixtures.domains],
                       dtype=torch.float64)
    assert torch.allclose(got, avg, atol=1e-12)
    assert dict(confirms[1].spec.mixture) == s.space.mixtures.to_dict(W[order[0]])


@pytest.mark.parametrize("name", ["screen", "regmix"])
def test_without_a_budget_screen_and_confirm_in_doubling_rounds(name):
    """The anytime schedule: blocks of screens and confirmations alternate, and every
    round ends with ``top_k * 2^r`` mixtures confirmed in all (a round whose screening the
    previous one already covered - the first confirmation revises the cost prediction -
    merges with it)."""
    p = make_simulated("t", k=3, seed=1, model_sizes=[20e6, 60e6], target_model_size=60e6,
                       steps=(500, 4000), checkpoints=4)
    run = _drive(p, name, math.inf, options={"top_k": 2, "budget": None}, max_trials=150)
    phases = "".join("S" if r.spec.model_size == 20e6 else "C" for r in run.history)
    blocks = phases.replace("SC", "S|C").replace("CS", "C|S").split("|")
    assert blocks[0][0] == "S" and len(blocks) >= 5, blocks
    confirmed, rounds = 0, []
    for block in blocks[1::2][:-1]:  # the last block may be cut by max_trials
        confirmed += len(block)
        r = math.log2(confirmed / 2)
        assert r == int(r), blocks
        rounds.append(int(r))
    assert rounds == sorted(set(rounds)) and len(rounds) >= 2
    assert all(r.spec.steps == 4000 for r in run.history if r.spec.model_size == 60e6)


# -- (iv) Hyperband on a two-size table -----------------------------------------------------
@pytest.mark.parametrize("budget", [None, 3000.0])
def test_hyperband_on_regmix_never_buys_a_run_twice(budget, problems):
    problem = problems["regmix-60m"]
    space = search_space_of(problem)
    hb = make_strategy("hyperband", space, 0, {"budget": budget})
    assert hb._levels(None) == [(1e6, 1000), (60e6, 1000)]  # was 1M, 1M, 60M, 60M
    run = _drive(problem, "hyperband", 3000.0 if budget else 6000.0,
                 options={"budget": budget})
    keys = _keys(run)
    assert len(set(keys)) == len(keys)
    by_rung: dict[tuple, set] = {}
    for r in run.history:
        md = r.spec.metadata
        by_rung.setdefault((md["bracket"], md["rung"]), set()).add(
            (r.spec.model_size, r.spec.steps))
    assert all(len(v) == 1 for v in by_rung.values())
    for (b, rung), fids in by_rung.items():
        if rung > 0:
            assert fids != by_rung[(b, rung - 1)]
    assert {rung for _, rung in by_rung} == {0, 1}


def test_hyperband_pool_reuses_runs_instead_of_buying_them_again(problems):
    """Four levels on a 26-member pool: brackets run out of fresh members and promotions
    meet runs other brackets made; nothing is bought twice and rungs keep their levels."""
    problem = problems["mixinglaws-5mix"]
    run = _drive(problem, "hyperband", 12 * _top_cost(problem), options={"budget": None})
    keys = _keys(run)
    assert len(set(keys)) == len(keys)
    levels = run.strategy._levels(None)
    assert len(set(levels)) == len(levels) == 4


def test_hyperband_promotion_to_an_existing_run_reuses_it(problems):
    """A promotion whose (mixture, size, steps) is already in the history (a user's run here,
    or another bracket's) is not bought again: the bracket counts that result as its own."""
    problem = problems["regmix-60m"]
    space = search_space_of(problem)
    hb = make_strategy("hyperband", space, 0)
    first = hb.propose([], [], 3)  # bracket 0 (two rungs): 3 configurations at 1M
    assert [(sp.model_size, sp.metadata["rung"]) for sp in first] == [(1e6, 0)] * 3
    history = _evaluated(problem, first)
    best = min(history, key=lambda r: final_objective(r, space)).spec
    promoted = hb.propose(history, [], 1)[0]
    assert promoted.mixture == best.mixture and promoted.model_size == 60e6
    # The same promotion, with the large run already made by someone else.
    user = TrialSpec(dict(best.mixture), 60e6, 1000, (1000,))
    history = history + _evaluated(problem, [user])
    nxt = hb.propose(history, [], 2)
    keys = {run_key(r.spec, space.mixtures.domains) for r in history}
    assert not {run_key(sp, space.mixtures.domains) for sp in nxt} & keys
    assert [(sp.metadata["bracket"], sp.model_size) for sp in nxt] == [(1, 60e6)] * 2


def test_hyperband_sizes_brackets_to_the_budget(problems):
    problem = problems["sim-k3"]
    budget = 5 * _top_cost(problem)  # one unscaled sweep of five brackets costs ~25
    run = _drive(problem, "hyperband", budget)
    specs = [r.spec for r in run.history]
    brackets: dict[int, list[TrialSpec]] = {}
    for sp in specs:
        brackets.setdefault(sp.metadata["bracket"], []).append(sp)
    R = len(run.strategy._levels(None)) - 1
    assert R == 4
    # Each bracket records its shape; the first was scaled well below Hyperband's 81.
    first = brackets[0]
    assert first[0].metadata["s"] == 4 and "n0" not in first[0].metadata  # no cost known yet
    n0 = first[-1].metadata["n0"]
    assert 1 <= n0 < 81
    assert sum(1 for sp in first if sp.metadata["rung"] == 0) == n0
    # Every bracket it started reached its top rung (none was cut by the budget).
    assert run.stopped or run.spent >= budget
    if run.stopped:
        for b, bspecs in brackets.items():
            s = bspecs[-1].metadata["s"]
            assert max(sp.metadata["rung"] for sp in bspecs) == s, b
    # Without a budget the brackets are Hyperband's own and metadata stays as it was.
    plain = make_strategy("hyperband", run.space, 0).propose([], [], 90)
    assert all(set(sp.metadata) == {"bracket", "rung", "config"} for sp in plain)
    assert sum(1 for sp in plain if sp.metadata["bracket"] == 0) == 81


def test_hyperband_budget_batch_before_any_cost(problems):
    """The first batch cannot size a bracket (the budget's unit is unknown): it starts
    Hyperband's first bracket, and the next proposal after a cost sizes it."""
    problem = problems["sim-k3"]
    space = search_space_of(problem)
    hb = make_strategy("hyperband", space, 0, {"budget": 2 * _top_cost(problem)})
    batch = hb.propose([], [], 4)
    assert len(batch) == 4 and {sp.metadata["bracket"] for sp in batch} == {0}
    history = _evaluated(problem, batch)
    nxt = hb.propose(history, [], 1)
    assert nxt and nxt[0].metadata["n0"] >= 4


# -- (v) uniform -----------------------------------------------------------------------------
def test_uniform_recommends_the_uniform_mixture_from_the_start(problems):
    p = problems["sim-k3"]
    space = search_space_of(p)
    s = make_strategy("uniform", space)
    assert not type(s).uses_budget
    rec = s.recommend([])
    assert rec.mixture == pytest.approx({d: 1 / 3 for d in p.domains})
    assert rec.predicted_objective is None and rec.interval is None
    assert (rec.model_size, rec.steps) == (p.target_model_size, p.steps[1])
    assert s.propose([], [], 4) == []
    r = run_one(p, "uniform", 0, 10.0)
    assert r.curve == [[0.0, pytest.approx(p.true_objective(rec.mixture))]]


def test_uniform_on_a_pool_is_the_member_nearest_uniform(problems):
    p = problems["regmix-60m"]
    space = search_space_of(p)
    rec = make_strategy("uniform", space).recommend([])
    w = torch.tensor([rec.mixture[d] for d in p.domains], dtype=torch.float64)
    dist = (space.candidates - 1 / len(p.domains)).norm(dim=-1)
    assert torch.equal(w, space.candidates[int(torch.argmin(dist))])
    # A pool member given by the user is taken as it is.
    member = p.candidates[7]
    assert make_strategy("uniform", space, options={"mixture": member}).recommend(
        []).mixture == pytest.approx(member)


def test_uniform_bounds_and_user_mixture(problems):
    p = problems["sim-k3"]
    space = search_space_of(p)
    mix = dict(zip(p.domains, [0.5, 0.3, 0.2], strict=True))
    assert make_strategy("uniform", space, options={"mixture": mix}).recommend([]).mixture \
        == pytest.approx(mix)
    from dataclasses import replace

    from mfms_bo.space import MixtureSpace
    bounded = replace(space, mixtures=MixtureSpace(tuple(p.domains),
                                                   bounds={p.domains[0]: (0.0, 0.1)}))
    rec = make_strategy("uniform", bounded).recommend([])
    assert rec.mixture[p.domains[0]] == pytest.approx(0.1)
    assert rec.mixture[p.domains[1]] == pytest.approx(0.45)


@pytest.mark.parametrize("make, message", [
    (lambda d: [0.5, 0.5, 0.0], "must be an object"),
    (lambda d: {"nope": 1.0}, "unknown domain"),
    (lambda d: {d[0]: 0.7, d[1]: 0.7}, "sum to 1"),
    (lambda d: {d[0]: 1.5, d[1]: -0.5}, ">= 0"),
])
def test_uniform_rejects_a_bad_mixture(make, message, problems):
    p = problems["sim-k3"]
    mixture = make(p.domains)
    with pytest.raises(ValidationError, match=message) as info:
        make_strategy("uniform", search_space_of(p), options={"mixture": mixture})
    assert isinstance(info.value, ValueError) and "mixture" in str(info.value)


def test_uniform_rejects_a_mixture_off_the_pool(problems):
    p = problems["regmix-60m"]
    off = {d: 1 / len(p.domains) for d in p.domains}
    with pytest.raises(ValueError, match="not a member of the study's candidate pool"):
        make_strategy("uniform", search_space_of(p), options={"mixture": off})


# -- options -----------------------------------------------------------------------------
@pytest.mark.parametrize("name, options, message", [
    ("screen", {"budget": -1.0}, "budget"),
    ("hyperband", {"budget": "lots"}, "budget"),
    ("screen", {"screen_fraction": 1.0}, "screen_fraction"),
    ("screen", {"screen_size": 123.0}, "screen_size"),
    ("screen", {"screen_steps": 10}, "screen_steps"),
    ("screen", {"top_k": 0}, "top_k"),
    ("regmix", {"top_average": 0}, "top_average"),
])
def test_bad_options_are_clear_errors(name, options, message, problems):
    with pytest.raises(ValidationError, match=message):
        make_strategy(name, search_space_of(problems["sim-k3"]), options=options)


def test_regmix_without_lightgbm_says_how_to_install(monkeypatch, problems):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "lightgbm" else real(n, *a))
    with pytest.raises(ValidationError, match=r"pip install 'mfms-bo\[peers\]'"):
        make_strategy("regmix", search_space_of(problems["sim-k3"]))


def test_screen_options_choose_the_fidelities(problems):
    p = problems["sim-k3"]
    s = make_strategy("screen", search_space_of(p), options={
        "screen_size": 60e6, "screen_steps": 5000})
    assert s.screen_fidelity() == (60e6, 5000)
    assert s.confirm_fidelity() == (400e6, 20000)
    assert s.confirm_fidelity(max_model_size=150e6) == (150e6, 20000)
    assert {(x.model_size, x.steps) for x in s.propose([], [], 3)} == {(60e6, 5000)}
