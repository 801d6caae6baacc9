"""Contract tests for every registered strategy, plus Hyperband- and pool-specific checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pytest
import torch

from mfms_bo.bench.harness import evaluate_trial
from mfms_bo.bench.problem import search_space_of
from mfms_bo.bench.problems.simulated import make_simulated
from mfms_bo.errors import MFMSError, UnknownStrategyError, ValidationError
from mfms_bo.optimize import fidelity_grid
from mfms_bo.recommend import Recommendation, final_objective
from mfms_bo.space import SearchSpace
from mfms_bo.strategies import STRATEGIES, Strategy, make_strategy
from mfms_bo.strategies.bo import FIT_METADATA_KEY, MFMSBO
from mfms_bo.strategies.hyperband import budget_ladder
from mfms_bo.trials import Measurement, TrialResult, TrialSpec

GP_STRATEGIES = ("mfms-bo", "mf-bo", "sf-bo")
CAPPED_STRATEGIES = ("mfms-bo", "random", "hyperband", "screen", "regmix")  # honour max_model_size
GP_OPTIONS = {"n_mixtures": 64, "surrogate": {"maxiter": 30, "warm_maxiter": 10}}
N_ITER = 8
PEER_PACKAGES = {"tpe": "optuna", "dehb": "dehb",  # strategies needing mfms-bo[peers]
                 "regmix": "lightgbm"}
# Strategies that never search: "uniform" is the benchmark's zero line, it proposes nothing
# and recommends a fixed mixture from the empty history on, with no prediction. The
# propose/recommend contract below drives proposals, so it does not apply to them; their
# own contract is test_no_search_strategies (and tests/.../test_baselines.py).
NO_SEARCH = ("uniform",)


def _problem(pool: int | None = None):
    p = make_simulated("t", k=3, seed=1, model_sizes=[20e6, 60e6], target_model_size=60e6,
                       steps=(500, 4000), checkpoints=4)
    if pool is not None:
        W = torch.distributions.Dirichlet(torch.ones(3, dtype=torch.float64))
        torch.manual_seed(11)
        p.candidates = [dict(zip(p.domains, w.tolist(), strict=True)) for w in W.sample((pool,))]
    return p


def _make(name: str, space: SearchSpace, seed: int = 0) -> Strategy:
    if name in PEER_PACKAGES:  # the `peers` extra; CI installs it
        pytest.importorskip(PEER_PACKAGES[name])
    return make_strategy(name, space, seed, GP_OPTIONS if name in GP_STRATEGIES else None)


_evaluate = evaluate_trial  # what :func:`mfms_bo.bench.harness.run_one` does with a proposal


def _w(spec: TrialSpec, space: SearchSpace) -> torch.Tensor:
    return torch.tensor([float(spec.mixture.get(d, 0.0)) for d in space.mixtures.domains],
                        dtype=torch.float64)


def _same(a: TrialSpec, b: TrialSpec, space: SearchSpace, tol: float = 1e-9) -> bool:
    return (a.model_size == b.model_size and a.steps == b.steps
            and float((_w(a, space) - _w(b, space)).abs().max()) <= tol)


def _check_spec(spec: TrialSpec, space: SearchSpace) -> None:
    assert isinstance(spec, TrialSpec)
    assert set(spec.mixture) <= set(space.mixtures.domains)
    w = _w(spec, space)
    assert abs(float(w.sum()) - 1.0) <= 1e-9, spec.mixture
    assert bool((w >= space.mixtures.lower - 1e-12).all())
    assert bool((w <= space.mixtures.upper + 1e-12).all())
    space.mixtures.validate(spec.mixture)  # the library's own check agrees
    fid = space.fidelities
    assert spec.model_size in fid.model_sizes
    assert isinstance(spec.steps, int) and fid.steps_min <= spec.steps <= fid.steps_max
    fid.validate(spec.model_size, spec.steps)
    assert spec.checkpoints and spec.checkpoints[-1] == spec.steps
    assert list(spec.checkpoints) == sorted(set(spec.checkpoints))
    assert len(spec.checkpoints) <= fid.checkpoints


@dataclass
class Run:
    """One strategy driven sequentially for ``N_ITER`` trials on the shared problem."""

    name: str
    problem: object
    space: SearchSpace
    strategy: Strategy
    history: list[TrialResult] = field(default_factory=list)
    proposals: list[TrialSpec] = field(default_factory=list)
    pending: list[TrialSpec] = field(default_factory=list)
    batch: list[TrialSpec] = field(default_factory=list)


def _drive(name: str, problem, n_iter: int, seed: int = 0) -> Run:
    space = search_space_of(problem)
    run = Run(name, problem, space, _make(name, space, seed))
    for i in range(n_iter):
        specs = run.strategy.propose(run.history, [], 1)
        assert len(specs) == 1, f"{name} proposed {len(specs)} specs at iteration {i}"
        run.proposals.append(specs[0])
        run.history.append(_evaluate(problem, specs[0], seed=1000 * seed + i))
    return run


@pytest.fixture(scope="module")
def problem():
    return _problem()


@pytest.fixture(scope="module", params=sorted(set(STRATEGIES) - set(NO_SEARCH)))
def run(request, problem) -> Run:
    """``N_ITER - 1`` evaluated trials, then the next proposal kept *pending* while a batch
    of 3 is asked for (GP strategies are the slow part of this suite: one run each)."""
    r = _drive(request.param, problem, N_ITER - 1)
    r.pending = r.strategy.propose(r.history, [], 1)
    r.proposals.extend(r.pending)
    r.batch = r.strategy.propose(r.history, r.pending, 3)
    return r


# -- the contract --------------------------------------------------------------------------
def test_registry():
    assert set(STRATEGIES) == {"mfms-bo", "random", "hyperband", "sf-bo", "mf-bo",
                               "tpe", "dehb", "uniform", "screen", "regmix"}
    for name, cls in STRATEGIES.items():
        assert issubclass(cls, Strategy) and cls.name == name


def test_sequential_proposals_are_valid(run: Run):
    assert len(run.history) == N_ITER - 1 and len(run.proposals) == N_ITER
    for spec in run.proposals:
        _check_spec(spec, run.space)
    if run.name in GP_STRATEGIES:  # the run got past the initial design
        assert run.pending[0].metadata.get("acq") in ("kg", "ei")


def test_proposals_are_json_ready(run: Run):
    for spec in run.proposals:
        assert all(isinstance(v, float) for v in spec.mixture.values())
        assert isinstance(spec.model_size, float)
        assert all(isinstance(c, int) for c in spec.checkpoints)


def test_batch_differs_from_itself_and_pending(run: Run):
    space, pending, batch = run.space, run.pending, run.batch
    assert len(pending) == 1
    assert len(batch) == 3
    for spec in batch:
        _check_spec(spec, space)
    for i, a in enumerate(batch):
        assert not _same(a, pending[0], space), f"{run.name}: batch repeats the pending spec"
        for b in batch[i + 1:]:
            assert not _same(a, b, space), f"{run.name}: batch repeats itself"


def test_first_batch_without_history(run: Run):
    s = _make(run.name, run.space, seed=3)
    batch = s.propose([], [], 3)
    assert len(batch) == 3
    for spec in batch:
        _check_spec(spec, run.space)
    for i, a in enumerate(batch):
        for b in batch[i + 1:]:
            assert not _same(a, b, run.space)


def test_recommend_is_a_feasible_mixture(run: Run):
    rec = run.strategy.recommend(run.history)
    assert isinstance(rec, Recommendation)
    assert set(rec.mixture) == set(run.space.mixtures.domains)
    w = torch.tensor(list(rec.mixture.values()), dtype=torch.float64)
    assert abs(float(w.sum()) - 1.0) <= 1e-9 and bool((w >= 0).all())
    assert rec.predicted_objective is not None and math.isfinite(rec.predicted_objective)
    if rec.interval is not None:
        lo, hi = rec.interval
        assert lo <= rec.predicted_objective <= hi
        assert rec.model_size == run.space.fidelities.target_model_size
        assert rec.steps == run.space.fidelities.target_steps
    # The problem can score it (the harness does exactly this).
    assert math.isfinite(run.problem.true_objective(rec.mixture))


def test_recommend_without_history(run: Run):
    assert _make(run.name, run.space).recommend([]) is None


def _key(specs: list[TrialSpec]) -> list[tuple]:
    return [(dict(x.mixture), x.model_size, x.steps) for x in specs]


def test_propose_is_reproducible(run: Run):
    if run.name in GP_STRATEGIES:
        history = run.history[:2]  # history + 2 stays in the initial design (no GP fit)
    else:
        history = run.history
    torch.manual_seed(1)
    a = _make(run.name, run.space, seed=5).propose(history, [], 2)
    torch.manual_seed(2)  # the global RNG must not matter
    b = _make(run.name, run.space, seed=5).propose(history, [], 2)
    assert _key(a) == _key(b)
    c = _make(run.name, run.space, seed=6).propose(history, [], 2)
    assert _key(c) != _key(a)


@pytest.mark.parametrize("name", CAPPED_STRATEGIES)
def test_max_model_size_respected(name, problem):
    space = search_space_of(problem)
    cap = 20e6
    s = _make(name, space)
    history: list[TrialResult] = []
    # mfms-bo: the 5-trial initial design (its anchor would be the largest size), then GP.
    for i in range(N_ITER if name != "mfms-bo" else 5):
        spec = s.propose(history, [], 1, max_model_size=cap)[0]
        assert spec.model_size <= cap
        _check_spec(spec, space)
        history.append(_evaluate(problem, spec, seed=i))
    batch = s.propose(history, [], 2 if name == "mfms-bo" else 3, max_model_size=cap)
    assert batch
    for spec in batch:
        assert spec.model_size <= cap
        _check_spec(spec, space)


def test_mf_bo_refuses_a_worker_below_its_one_size(problem):
    # mf-bo models one size (the largest runnable); a smaller worker gets a clear error,
    # never a run at a size it cannot do.
    with pytest.raises(ValidationError, match="no runnable model size <= 2e\\+07"):
        _make("mf-bo", search_space_of(problem)).propose([], [], 2, max_model_size=20e6)


@pytest.mark.parametrize("name", [
    "random",
    "hyperband",
    "screen",
    "regmix",
    "mfms-bo",
    "mf-bo",
    "sf-bo",
])
def test_max_model_size_below_ladder_is_an_error(name, problem):
    s = _make(name, search_space_of(problem))
    with pytest.raises(ValueError, match="no runnable model size"):
        s.propose([], [], 1, max_model_size=1e6)


@pytest.mark.parametrize("name", NO_SEARCH)
@pytest.mark.parametrize("pool", [None, 12])
def test_no_search_strategies(name, pool):
    """Nothing proposed, ever; the same feasible recommendation with or without history."""
    problem = _problem(pool)
    space = search_space_of(problem)
    s = _make(name, space)
    assert s.propose([], [], 3) == []
    rec = s.recommend([])
    assert isinstance(rec, Recommendation) and rec.predicted_objective is None
    space.mixtures.validate(rec.mixture)
    if space.candidates is not None:
        w = torch.tensor([rec.mixture[d] for d in space.mixtures.domains], dtype=torch.float64)
        assert bool(((space.candidates - w).abs().amax(-1) <= 1e-12).any())
    assert rec.model_size == space.fidelities.target_model_size
    assert math.isfinite(problem.true_objective(rec.mixture))
    other = _evaluate(problem, _make("random", space).propose([], [], 1)[0], seed=0)
    assert s.recommend([other]) == rec
    assert s.propose([other], [], 1) == []


# -- registry errors -----------------------------------------------------------------------
def test_unknown_strategy(problem):
    space = search_space_of(problem)
    with pytest.raises(UnknownStrategyError, match="unknown strategy 'nope'") as info:
        make_strategy("nope", space)
    assert "mfms-bo" in str(info.value) and isinstance(info.value, MFMSError)
    with pytest.raises(UnknownStrategyError, match="unknown option 'n_mixtures'"):
        make_strategy("random", space, options={"n_mixtures": 3})


@pytest.mark.parametrize(("name", "options", "message"), [
    ("mfms-bo", {"acquistion": "ei"},
     "strategy 'mfms-bo': unknown option 'acquistion'; did you mean 'acquisition'?"),
    ("mf-bo", {"surrogate": {"refit_grwth": 0.1}},
     "strategy 'mf-bo': surrogate: unknown option 'refit_grwth'; did you mean 'refit_growth'?"),
    ("screen", {"topk": 2}, "strategy 'screen': unknown option 'topk'; did you mean 'top_k'?"),
])
def test_option_typos_get_a_suggestion_not_a_type_error(problem, name, options,
                                                        message) -> None:
    with pytest.raises(UnknownStrategyError) as info:
        make_strategy(name, search_space_of(problem), options=options)
    assert str(info.value).startswith(message)
    assert "__init__" not in str(info.value)


@pytest.mark.parametrize("name, options", [
    ("mfms-bo", {"acquisition": "ucb"}),
    ("mfms-bo", {"kernel": "nope"}),
    ("hyperband", {"eta": 1}),
])
def test_bad_option_values_are_library_errors(name, options, problem):
    with pytest.raises(MFMSError):
        make_strategy(name, search_space_of(problem), options=options)


# -- Hyperband -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hyperband_run(problem) -> Run:
    return _drive("hyperband", problem, 14)


def test_hyperband_rebuilt_from_history(hyperband_run: Run):
    space, run = hyperband_run.space, hyperband_run
    hb = make_strategy("hyperband", space, seed=0)
    key = [(x.mixture, x.model_size, x.steps, dict(x.metadata)) for x in run.proposals]
    for i in range(len(run.history) + 1):
        history = run.history[:i]
        fresh = make_strategy("hyperband", space, seed=0)
        for pending in ([], run.proposals[i:i + 1]):
            a, b = hb.propose(history, pending, 2), fresh.propose(history, pending, 2)
            assert [(x.mixture, x.model_size, x.steps, dict(x.metadata)) for x in a] == \
                [(x.mixture, x.model_size, x.steps, dict(x.metadata)) for x in b]
        if i < len(run.proposals):  # the history alone gives back what the run proposed
            (again,) = fresh.propose(history, [], 1)
            assert (again.mixture, again.model_size, again.steps, dict(again.metadata)) \
                == key[i]
    # ... including promotions, which only the history's results can decide
    assert any(x.metadata["rung"] > 0 for x in run.proposals)


def test_hyperband_metadata_and_promotions(hyperband_run: Run):
    specs = hyperband_run.proposals
    for s in specs:
        assert {"bracket", "rung", "config"} <= set(s.metadata)
    promoted = [s for s in specs if s.metadata["rung"] > 0]
    assert promoted, "14 trials should reach the first promotion"
    space = hyperband_run.space
    results = hyperband_run.history
    for p in promoted:
        b, r, c = p.metadata["bracket"], p.metadata["rung"], p.metadata["config"]
        parents = [res for res in results if res.spec.metadata["bracket"] == b
                   and res.spec.metadata["rung"] == r - 1]
        parent = next(res for res in parents if res.spec.metadata["config"] == c)
        # A promoted configuration keeps its mixture.
        assert parent.spec.mixture == p.mixture
        # It is among the best of its rung.
        n_promoted = len([s for s in promoted if s.metadata["bracket"] == b
                          and s.metadata["rung"] == r])
        scores = sorted(final_objective(res, space) for res in parents)
        assert final_objective(parent, space) <= scores[n_promoted - 1]


def test_hyperband_rung_has_one_fidelity(hyperband_run: Run):
    by_rung: dict[tuple, set] = {}
    for s in hyperband_run.proposals:
        key = (s.metadata["bracket"], s.metadata["rung"])
        by_rung.setdefault(key, set()).add((s.model_size, s.steps))
    assert all(len(v) == 1 for v in by_rung.values()), by_rung


def test_hyperband_promotes_to_costlier_fidelity(hyperband_run: Run):
    problem = hyperband_run.problem
    by_key = {(r.spec.metadata["bracket"], r.spec.metadata["rung"], r.spec.metadata["config"]):
              r.spec for r in hyperband_run.history}
    for (b, rung, c), spec in by_key.items():
        if rung > 0:
            parent = by_key[(b, rung - 1, c)]
            assert problem.cost(parent.model_size, parent.steps) < \
                problem.cost(spec.model_size, spec.steps), (parent, spec)


# -- pool-based spaces ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool_problem():
    return _problem(pool=12)


def _pool_params():
    return sorted(STRATEGIES)


@pytest.mark.parametrize("name", _pool_params())
def test_pool_proposals_are_members_and_never_repeat(name, pool_problem):
    space = search_space_of(pool_problem)
    assert space.candidates is not None and space.candidates.shape == (12, 3)
    s = _make(name, space)
    history: list[TrialResult] = []
    done: list[TrialSpec] = []
    for i in range(10):
        specs = s.propose(history, [], 1)
        if not specs:
            break
        spec = specs[0]
        _check_spec(spec, space)
        w = _w(spec, space)
        assert bool(((space.candidates - w).abs().amax(-1) <= 1e-12).any()), spec.mixture
        assert not any(_same(spec, d, space, tol=1e-12) for d in done), \
            f"{name} repeated a completed run at iteration {i}: {spec}"
        done.append(spec)
        history.append(_evaluate(pool_problem, spec, seed=i))


def test_pool_batch_members_distinct(pool_problem):
    space = search_space_of(pool_problem)
    for name in ("random", "mfms-bo"):
        batch = _make(name, space).propose([], [], 4)
        assert len(batch) == 4
        for i, a in enumerate(batch):
            w = _w(a, space)
            assert bool(((space.candidates - w).abs().amax(-1) <= 1e-12).any())
            for b in batch[i + 1:]:
                assert not _same(a, b, space, tol=1e-12)


def test_random_pool_exhaustion(pool_problem):
    """Random search on a pool samples without replacement and stops when it runs out."""
    space = search_space_of(pool_problem)
    s = _make("random", space)
    specs = s.propose([], [], 20)
    assert len(specs) == 12
    history = [_evaluate(pool_problem, sp, seed=i) for i, sp in enumerate(specs)]
    assert s.propose(history, [], 1) == []


def test_failed_trials_still_inform(problem):
    """Partial curves of failed runs are accepted by every strategy."""
    space = search_space_of(problem)
    r = _evaluate(problem, _make("random", space).propose([], [], 1)[0], seed=0)
    partial = replace(r, measurements=r.measurements[:2], completed=False, cost=None)
    for name in ("random", "hyperband"):
        specs = _make(name, space).propose([partial], [], 1)
        assert len(specs) == 1
        _check_spec(specs[0], space)


def test_mfms_bo_initial_design_and_its_cheap_anchor() -> None:
    """The initial design: ``n_init`` short runs at the smallest size (Hyperband's lowest
    budget: 1000 of 500..4000 steps here), then one short anchor at the largest runnable
    size."""
    space = search_space_of(_problem())
    strat = make_strategy("mfms-bo", space, 0, GP_OPTIONS)
    specs = strat.propose([], [], n=strat._n_initial())
    assert [s.model_size for s in specs] == [20e6] * strat.n_init + [60e6]
    assert [s.steps for s in specs] == [1000] * strat.n_init + [500]
    for removed in ("anchor_steps", "init_steps"):
        with pytest.raises(UnknownStrategyError, match=removed):
            make_strategy("mfms-bo", space, 0, {removed: "min"})


def test_budget_ladder_is_hyperbands_geometric_rungs() -> None:
    """``top * eta^-r`` down to the last rung that is not cheaper than the cheapest run."""
    assert budget_ladder([1.0, 10.0, 100.0], 3) == pytest.approx(
        [100 / 81, 100 / 27, 100 / 9, 100 / 3, 100.0])
    assert budget_ladder([2.0, 2.0], 3) == [2.0]
    lowest = budget_ladder([3.0, 7.0, 500.0], 2)[0]
    assert 3.0 <= lowest < 6.0


def test_mfms_bo_rung_initial_design_screens_at_hyperbands_lowest_budget() -> None:
    """The initial runs at the smallest size use the steps level
    whose prior cost is closest to Hyperband's lowest rung (BOHB's screening budget)."""
    space = search_space_of(_problem())  # 20M / 60M, steps 500..4000, grid 500/1000/2000/4000
    strat = make_strategy("mfms-bo", space, 0, GP_OPTIONS)
    specs = strat.propose([], [], n=strat.n_init)
    want = budget_ladder([m * z for m, z in fidelity_grid(space, strat.n_steps, None)])[0]
    assert want == pytest.approx(60e6 * 4000 / 9)  # 24x cost range: two rungs below the top
    # 20M x 1333 steps would cost exactly that: of the grid's 1000 and 2000, 1000 is closer.
    assert {s.steps for s in specs} == {1000}
    assert {s.model_size for s in specs} == {20e6}


def _gp_history(problem, strat: Strategy, n: int) -> list[TrialResult]:
    history: list[TrialResult] = []
    for i in range(n):
        history.append(_evaluate(problem, strat.propose(history, [], 1)[0], seed=i))
    return history


@pytest.mark.parametrize("name", GP_STRATEGIES)
def test_gp_strategy_is_a_function_of_its_history(name: str) -> None:
    """Any process rebuilds the strategy and proposes the same: a long-lived instance that
    built every earlier proposal and recommendation, and a fresh one that only sees the
    history (the server after a restart, or another server process), agree exactly."""
    problem = _problem()
    space = search_space_of(problem)
    lived = _make(name, space)
    history = _gp_history(problem, lived, 9)
    for i in range(6, 9):
        lived.recommend(history[:i])  # exercise its memo on shorter histories
    fresh = _make(name, space)
    assert fresh.propose(history, [], 2) == lived.propose(history, [], 2)
    assert fresh.recommend(history) == lived.recommend(history)
    pending = lived.propose(history, [], 1)
    assert _make(name, space).propose(history, pending, 1) == lived.propose(history, pending, 1)


def _fit_record(spec: TrialSpec) -> dict:
    return dict(spec.metadata[FIT_METADATA_KEY])


def test_mfms_bo_refit_schedule_is_read_from_the_history() -> None:
    """Hyperparameters are re-optimised once the trials have grown by ``refit_growth``
    since the newest fit recorded in the specs; in between the GP conditions on new data
    with the recorded hyperparameters - exactly those, whatever process built them."""
    problem = _problem()
    space = search_space_of(problem)
    options = {**GP_OPTIONS, "surrogate": {**GP_OPTIONS["surrogate"], "refit_growth": 0.5}}
    strat = make_strategy("mfms-bo", space, 0, options)
    assert isinstance(strat, MFMSBO)
    history = _gp_history(problem, strat, strat._n_initial() + 1)
    n = len(history)
    first = strat.fit_surrogate(history[:-1])
    assert first is not None and first.optimized and first.trials == n - 1
    record = _fit_record(history[-1].spec)
    assert record["trials"] == n - 1 and record["strategy"] == "mfms-bo"
    # n - 1 -> n trials is less than 50% growth: condition only, with the stored values.
    fit = strat.fit_surrogate(history)
    assert fit is not None and not fit.optimized and fit.trials == n - 1
    for key, value in fit.hyperparameters.items():
        assert value.tolist() == record["hyperparameters"][key]
    # Change the stored hyperparameters: a conditioning-only build must use them as given.
    noise_key = next(k for k in record["hyperparameters"] if "noise" in k)
    edited = {**record, "hyperparameters": {**record["hyperparameters"], noise_key: [0.05]}}
    spec = replace(history[-1].spec, metadata={**history[-1].spec.metadata,
                                               FIT_METADATA_KEY: edited})
    moved = [*history[:-1], replace(history[-1], spec=spec)]
    fit2 = make_strategy("mfms-bo", space, 0, options).fit_surrogate(moved)
    assert fit2 is not None and not fit2.optimized
    assert fit2.hyperparameters[noise_key].tolist() == [0.05]
    assert fit2.model.noise_variance != fit.model.noise_variance
    # Enough new trials: re-optimise, warm-started from the record.
    grown = _gp_history(problem, strat, math.ceil((n - 1) * 1.5))
    # Keep only the record made at n - 1 trials (as if no proposal had refitted since).
    grown = [r if i < n else replace(r, spec=replace(r.spec, metadata={}))
             for i, r in enumerate(grown)]
    refit = strat.fit_surrogate(grown)
    assert refit is not None and refit.optimized and refit.trials == len(grown)
    # Another strategy's or kernel's record is never used as a warm start.
    other = make_strategy("mfms-bo", space, 0, {**options, "kernel": "seed"})
    assert other.fit_surrogate(history).optimized


def test_mfms_bo_memo_never_changes_a_result() -> None:
    """The memo is keyed on every input of a build: an identical build is served from it
    (no time spent), a different history is not."""
    problem = _problem()
    space = search_space_of(problem)
    strat = make_strategy("mfms-bo", space, 0, GP_OPTIONS)
    assert isinstance(strat, MFMSBO)
    history = _gp_history(problem, strat, strat._n_initial() + 2)
    a = strat.fit_surrogate(history)
    b = strat.fit_surrogate(history)
    assert a is not None and b is not None and b.cached and b.model is a.model
    assert b.seconds == 0.0 and a.seconds > 0
    c = strat.fit_surrogate(history[:-1])
    assert c is not None and c.model is not a.model
    proposal = strat.proposal(history, [], 1)
    assert len(proposal.specs) == 1 and len(proposal.fits) == 1


def test_mfms_bo_predicts_in_objective_units() -> None:
    """``predict`` maps the log-objective GP back: the prediction sits inside its interval
    and close to the observed objective where a run was made."""
    problem = _problem()
    space = search_space_of(problem)
    strat = make_strategy("mfms-bo", space, 0, GP_OPTIONS)
    assert isinstance(strat, MFMSBO)
    assert strat.predict([], torch.full((1, 3), 1 / 3, dtype=torch.float64), 20e6, 500) is None
    history = _gp_history(problem, strat, strat._n_initial() + 2)
    last = history[-1]
    W = _w(last.spec, space).unsqueeze(0)
    pred = strat.predict(history, W, last.spec.model_size, last.last_step)
    assert pred is not None
    assert float(pred.lower[0]) < float(pred.mean[0]) < float(pred.upper[0])
    observed = final_objective(last, space)
    assert observed is not None
    assert float(pred.mean[0]) == pytest.approx(observed, rel=0.02)


def test_pool_rerun_exclusion_covers_the_requested_steps_not_the_last_checkpoint() -> None:
    """A table logs checkpoints on its own grid (every 1000 steps, say); a completed run asked
    for 1414 steps ends at the 1000 checkpoint, and asking again for 1414 would return the
    same lookup. Only a failed run's coverage ends at what it measured."""
    problem = _problem(pool=6)
    space = search_space_of(problem)
    strat = make_strategy("mfms-bo", space, 0, GP_OPTIONS)
    mix = dict(problem.candidates[0])
    spec = TrialSpec(mix, 20e6, 1414, (1000,))
    point = (Measurement(1000, {d: 3.0 for d in problem.domains}),)
    done = TrialResult(spec, point, cost=1.0)
    assert not strat._fresh(spec, [done], [])
    assert not strat._fresh(TrialSpec(mix, 20e6, 1000, (1000,)), [done], [])
    assert strat._fresh(TrialSpec(mix, 20e6, 2000, (2000,)), [done], [])
    assert strat._fresh(TrialSpec(mix, 60e6, 1414, (1000,)), [done], [])
    failed = TrialResult(spec, point, cost=1.0, completed=False)
    assert strat._fresh(spec, [failed], [])
    assert not strat._fresh(TrialSpec(mix, 20e6, 1000, (1000,)), [failed], [])
