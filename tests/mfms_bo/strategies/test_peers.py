"""Peer tools through their own packages: ``tpe`` (Optuna) and ``dehb`` (DEHB).

Skipped where the ``peers`` extra is not installed (CI installs it). Tiny budgets on two
shipped problems, a continuous one (``sim-k3``) and a pool (``mixinglaws-5mix``), driven by
the benchmark harness itself.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from mfms_bo.bench.harness import evaluate_trial, run_one
from mfms_bo.bench.problem import search_space_of
from mfms_bo.bench.problems import all_problems
from mfms_bo.errors import ValidationError
from mfms_bo.space import SearchSpace
from mfms_bo.strategies import STRATEGIES, make_strategy
from mfms_bo.strategies.peers import PEERS_HINT, mixture_to_unit, unit_to_mixture
from mfms_bo.strategies.peers.dehb import assign_levels
from mfms_bo.trials import TrialResult, TrialSpec

PACKAGES = {"tpe": "optuna", "dehb": "dehb"}
PROBLEMS = ("sim-k3", "mixinglaws-5mix")
# tpe: fewer random start-up trials than Optuna's 10, so a tiny budget reaches the TPE model.
OPTIONS = {"tpe": {"n_startup_trials": 3}, "dehb": {}}


def _budget(problem, name: str) -> float:
    """A few runs at the largest size: 6 for tpe; 3 runs' worth of DEHB's cheaper rungs,
    which covers its first bracket (and, on the pool, uses up the cheapest rung)."""
    top = problem.cost(max(problem.model_sizes), problem.steps[1])
    return (6 if name == "tpe" else 3) * top


@pytest.fixture(scope="module")
def problems():
    return all_problems()


def _needs(name: str) -> None:
    pytest.importorskip(PACKAGES[name])


def _drive(problem, name: str, seed: int, budget: float) -> list[TrialResult]:
    """What :func:`run_one` does, keeping the specs' metadata (its records drop it)."""
    space = search_space_of(problem)
    strat = make_strategy(name, space, seed, OPTIONS[name])
    history: list[TrialResult] = []
    spent = 0.0
    while spent < budget:
        specs = strat.propose(history, [], 1)
        if not specs:
            break
        history.append(evaluate_trial(problem, specs[0], seed * 100_000 + len(history)))
        spent += float(history[-1].cost)
    return history


def _key(mixture, model_size, steps) -> tuple:
    return (tuple(sorted((d, round(float(v), 12)) for d, v in mixture.items())),
            float(model_size), int(steps))


_evaluate = evaluate_trial


# -- through the harness ---------------------------------------------------------------------
@pytest.mark.parametrize("problem_name", PROBLEMS)
@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_run_one_spends_the_budget_on_valid_runs(name, problem_name, problems):
    _needs(name)
    problem = problems[problem_name]
    space = search_space_of(problem)
    budget = _budget(problem, name)
    r = run_one(problem, name, 0, budget, options=OPTIONS[name])
    assert r.trials and not r.capped
    # Spends no more than the budget plus the last trial's overshoot.
    assert r.spent - r.trials[-1].cost < budget
    if space.candidates is None:
        assert r.spent >= budget  # a continuous space never runs out
    fid = space.fidelities
    seen = set()
    for t in r.trials:
        w = space.mixtures.validate(t.mixture)
        fid.validate(t.model_size, t.steps)
        if space.candidates is not None:
            assert bool(((space.candidates - w).abs().amax(-1) <= 1e-12).any()), t.mixture
            key = _key(t.mixture, t.model_size, t.steps)
            assert key not in seen, f"{name} repeated a run on a pool: {t}"
            seen.add(key)
    if name == "tpe":  # single fidelity: the largest runnable size at the target steps
        assert {(t.model_size, t.steps) for t in r.trials} == \
            {(fid.model_sizes[-1], min(fid.target_steps, fid.steps_max))}
    else:  # multi-fidelity: cheap rungs first, the top fidelity reached within the budget
        assert len({(t.model_size, t.steps) for t in r.trials}) >= 3
        assert r.trials[0].cost < r.trials[-1].cost
    assert all(math.isfinite(v) for _, v in r.curve)


@pytest.mark.parametrize("problem_name", PROBLEMS)
@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_same_seed_same_run(name, problem_name, problems):
    _needs(name)
    problem = problems[problem_name]
    budget = _budget(problem, name)
    a = run_one(problem, name, 1, budget, options=OPTIONS[name])
    torch.manual_seed(123)  # the global RNG must not matter
    b = run_one(problem, name, 1, budget, options=OPTIONS[name])
    c = run_one(problem, name, 2, budget, options=OPTIONS[name])
    runs = [[_key(t.mixture, t.model_size, t.steps) for t in x.trials] for x in (a, b, c)]
    assert runs[0] == runs[1] and a.curve == b.curve
    assert runs[0] != runs[2]


@pytest.mark.parametrize("problem_name", PROBLEMS)
@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_rebuilt_from_history_proposes_the_same_spec(name, problem_name, problems):
    """Statelessness: at every point of a run, a fresh strategy given the history proposes
    exactly what the running one did (metadata included), and the run is run_one's."""
    _needs(name)
    problem = problems[problem_name]
    space = search_space_of(problem)
    budget = _budget(problem, name)
    history = _drive(problem, name, 0, budget)
    r = run_one(problem, name, 0, budget, options=OPTIONS[name])
    assert [_key(h.spec.mixture, h.spec.model_size, h.spec.steps) for h in history] == \
        [_key(t.mixture, t.model_size, t.steps) for t in r.trials]
    step = max(1, len(history) // 12)  # dehb runs many cheap trials: sample the points
    for i in [*range(0, len(history), step), len(history) - 1]:
        fresh = make_strategy(name, space, 0, OPTIONS[name])
        spec = fresh.propose(history[:i], [], 1)[0]
        want = history[i].spec
        assert (dict(spec.mixture), spec.model_size, spec.steps, dict(spec.metadata)) == \
            (dict(want.mixture), want.model_size, want.steps, dict(want.metadata))
        if name == "dehb":
            assert fresh.replay_mismatches == 0


# -- tpe -------------------------------------------------------------------------------------
def test_tpe_rebuilds_the_study_with_the_parameters_it_asked_for(problems):
    _needs("tpe")
    problem = problems["mixinglaws-5mix"]
    space = search_space_of(problem)
    history = _drive(problem, "tpe", 0, _budget(problem, "tpe"))
    strat = make_strategy("tpe", space, 0, OPTIONS["tpe"])
    top = space.fidelities.model_sizes[-1]
    study = strat.study(history, [], top, space.fidelities.steps_max)
    assert len(study.trials) == len(history)
    for t, h in zip(study.trials, history, strict=True):
        x = h.spec.metadata["tpe"]["x"]
        assert [t.params[f"x{i}"] for i in range(space.k)] == x
        assert t.value == pytest.approx(
            sum(space.objective_weights[d] * h.measurements[-1].losses[d]
                for d in space.objective_weights))
    # On a pool the run is the member nearest to what TPE asked for (when still fresh).
    first = history[0].spec
    w = unit_to_mixture(space, first.metadata["tpe"]["x"])
    nearest = space.candidates[int((space.candidates - w).pow(2).sum(-1).argmin())]
    assert space.mixtures.to_dict(nearest) == dict(first.mixture)


def test_tpe_pending_trials_and_batches_differ(problems):
    _needs("tpe")
    problem = problems["sim-k3"]
    space = search_space_of(problem)
    strat = make_strategy("tpe", space, 0, OPTIONS["tpe"])
    history = _drive(problem, "tpe", 0, _budget(problem, "tpe"))
    pending = strat.propose(history, [], 2)
    batch = strat.propose(history, pending, 3)
    keys = {_key(s.mixture, s.model_size, s.steps) for s in [*pending, *batch]}
    assert len(keys) == 5
    st = strat.study(history, pending, space.fidelities.model_sizes[-1],
                     space.fidelities.steps_max)
    assert sum(t.state.name == "RUNNING" for t in st.trials) == 2


def test_tpe_warm_start_trials_without_metadata_are_used(problems):
    _needs("tpe")
    problem = problems["sim-k3"]
    space = search_space_of(problem)
    fid = space.fidelities
    w = {d: 1.0 / space.k for d in space.mixtures.domains}
    spec = TrialSpec(w, fid.model_sizes[-1], fid.steps_max, fid.checkpoint_steps(fid.steps_max))
    done = _evaluate(problem, spec, seed=0)
    strat = make_strategy("tpe", space, 0)
    st = strat.study([done], [], fid.model_sizes[-1], fid.steps_max)
    assert len(st.trials) == 1
    x = [st.trials[0].params[f"x{i}"] for i in range(space.k)]
    assert unit_to_mixture(space, x).tolist() == pytest.approx([1.0 / space.k] * space.k)
    assert strat.propose([done], [], 1)


# -- dehb ------------------------------------------------------------------------------------
def test_dehb_rungs_keep_one_fidelity_and_promote_to_costlier_ones(problems):
    _needs("dehb")
    problem = problems["sim-k3"]
    history = _drive(problem, "dehb", 0, _budget(problem, "dehb"))
    by_fid: dict[float, set] = {}
    for h in history:
        md = h.spec.metadata["dehb"]
        by_fid.setdefault(md["fidelity"], set()).add((h.spec.model_size, h.spec.steps))
    assert all(len(v) == 1 for v in by_fid.values()), by_fid
    ordered = sorted(by_fid)
    costs = [problem.cost(*next(iter(by_fid[f]))) for f in ordered]
    assert costs == sorted(costs) and len(set(costs)) == len(costs)
    assert len(ordered) >= 3  # the first bracket got past its first rungs
    asks = [h.spec.metadata["dehb"]["ask"] for h in history]
    assert asks == list(range(len(history)))  # sequential: no cached answers off a pool


def test_dehb_on_a_pool_answers_exhausted_rungs_from_the_table(problems):
    """mixinglaws-5mix has 26 mixtures and DEHB's first rung wants 27: the 27th config is
    answered from the table (no rerun), recorded so that the replay repeats it."""
    _needs("dehb")
    problem = problems["mixinglaws-5mix"]
    space = search_space_of(problem)
    history = _drive(problem, "dehb", 0, _budget(problem, "dehb"))
    cached = [c for h in history for c in h.spec.metadata["dehb"]["cached"]]
    assert cached, "expected a table answer once the cheapest rung used up the pool"
    for ask, value in cached:
        assert isinstance(ask, int) and math.isfinite(value)
    keys = [_key(h.spec.mixture, h.spec.model_size, h.spec.steps) for h in history]
    assert len(keys) == len(set(keys))
    fresh = make_strategy("dehb", space, 0)
    fresh.propose(history, [], 1)
    assert fresh.replay_mismatches == 0


def test_dehb_parallel_workers_results_out_of_order(problems):
    """Three workers, results arriving out of proposal order, the history in creation order
    (as the server hands it): every rebuilt strategy replays without a mismatch and agrees
    with the one that has been running all along."""
    _needs("dehb")
    problem = problems["sim-k3"]
    space = search_space_of(problem)
    strat = make_strategy("dehb", space, 4)
    gen = torch.Generator().manual_seed(0)
    created: list[TrialSpec] = []
    results: dict[int, TrialResult] = {}
    pending: list[int] = []
    for step in range(40):
        history = [results[i] for i in range(len(created)) if i in results]
        waiting = [created[i] for i in pending]
        want = 3 - len(pending)
        if want > 0:
            a = strat.propose(history, waiting, want)
            b = make_strategy("dehb", space, 4).propose(history, waiting, want)
            assert [dict(s.metadata) for s in a] == [dict(s.metadata) for s in b]
            assert strat.replay_mismatches == 0
            for s in a:
                pending.append(len(created))
                created.append(s)
        done = pending.pop(int(torch.randint(len(pending), (1,), generator=gen)))
        results[done] = _evaluate(problem, created[done], seed=step)
    told = {i for s in created for i in s.metadata["dehb"]["after"]}
    assert len(told) > 20


def test_assign_levels_keeps_rungs_apart():
    costs = [1 / 24, 1 / 12, 1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 1.0]
    assert assign_levels([1 / 9, 1 / 3, 1.0], costs) == [2, 5, 7]
    # A worker capped at the smaller size: the top rungs squeezed onto what it can run.
    small = [1 / 24, 1 / 12, 1 / 6, 1 / 3]
    assert assign_levels([1 / 9, 1 / 3, 1.0], small) == [1, 2, 3]
    assert assign_levels([1 / 9, 1 / 3, 1.0], [1 / 3]) == [0, 0, 0]


def test_dehb_capped_worker_gets_runnable_fidelities(problems):
    _needs("dehb")
    problem = problems["sim-k3"]
    space = search_space_of(problem)
    cap = problem.model_sizes[1]
    strat = make_strategy("dehb", space, 0)
    history: list[TrialResult] = []
    for i in range(30):
        spec = strat.propose(history, [], 1, max_model_size=cap)[0]
        assert spec.model_size <= cap
        history.append(_evaluate(problem, spec, seed=i))
    with pytest.raises(ValueError, match="no runnable model size"):
        strat.propose(history, [], 1, max_model_size=1e6)


# -- without the packages --------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_missing_package_says_how_to_install_it(name, problems, monkeypatch):
    monkeypatch.setitem(sys.modules, PACKAGES[name], None)  # `import optuna` now fails
    space = search_space_of(problems["sim-k3"])
    with pytest.raises(ValidationError, match=r"pip install 'mfms-bo\[peers\]'") as info:
        make_strategy(name, space)
    assert PEERS_HINT in str(info.value) and isinstance(info.value, ValueError)


def test_registering_imports_neither_package():
    code = ("import sys, mfms_bo.strategies as s; assert {'tpe', 'dehb'} <= set(s.STRATEGIES);"
            " print(sorted(m for m in ('optuna', 'dehb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
    assert {"tpe", "dehb"} <= set(STRATEGIES)


# -- the mixture parametrisation -------------------------------------------------------------
def _space(bounds=None) -> SearchSpace:
    space = search_space_of(all_problems()["sim-k3"])
    if bounds is None:
        return space
    from dataclasses import replace

    return replace(space, mixtures=replace(space.mixtures, bounds=bounds))


def test_unit_cube_maps_uniform_points_to_uniform_mixtures():
    space = _space()
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(4000, space.k, generator=gen, dtype=torch.float64)
    W = torch.stack([unit_to_mixture(space, x.tolist()) for x in X])
    assert torch.allclose(W.sum(-1), torch.ones(len(W), dtype=torch.float64))
    # Dirichlet(1) on 3 domains: each weight has mean 1/3 and P(w_i < 0.1) = 1 - 0.9^2.
    assert W.mean(0).tolist() == pytest.approx([1 / 3] * 3, abs=0.02)
    assert float((W[:, 0] < 0.1).double().mean()) == pytest.approx(0.19, abs=0.03)
    for x in ([0.0, 0.5, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]):  # the box's edges
        space.mixtures.validate(space.mixtures.to_dict(unit_to_mixture(space, x)))


def test_unit_cube_respects_bounds_and_inverts():
    d = _space().mixtures.domains
    space = _space({d[0]: (0.2, 0.5), d[1]: (0.0, 0.3)})
    gen = torch.Generator().manual_seed(1)
    for x in torch.rand(200, space.k, generator=gen, dtype=torch.float64):
        w = unit_to_mixture(space, x.tolist())
        space.mixtures.validate(space.mixtures.to_dict(w))
    w = torch.tensor([0.3, 0.2, 0.5], dtype=torch.float64)
    back = unit_to_mixture(space, mixture_to_unit(space, w))
    assert back.tolist() == pytest.approx(w.tolist(), abs=1e-9)
