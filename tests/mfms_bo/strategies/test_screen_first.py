"""``screen_first``: a mixture is run at the smallest size before a larger one, until the
surrogate already knows what that cheap run would show."""

from __future__ import annotations

import pytest
import torch

from mfms_bo.bench.harness import evaluate_trial
from mfms_bo.bench.problem import search_space_of
from mfms_bo.bench.problems.simulated import make_simulated
from mfms_bo.optimize import fidelity_grid
from mfms_bo.strategies.bo import MFMSBO
from mfms_bo.trials import TrialSpec

OPTIONS = {"n_mixtures": 64, "surrogate": {"maxiter": 30, "warm_maxiter": 10}}


@pytest.fixture(scope="module")
def problem():
    return make_simulated("t", k=3, seed=1, model_sizes=[20e6, 60e6, 150e6],
                          target_model_size=150e6, steps=(500, 4000), checkpoints=4)


def _history(problem, space, specs):
    return [evaluate_trial(problem, s, i) for i, s in enumerate(specs)]


def _spec(space, w, m, z) -> TrialSpec:
    return TrialSpec(space.mixtures.to_dict(torch.tensor(w, dtype=torch.float64)), m, z,
                     space.fidelities.checkpoint_steps(z))


def test_a_large_run_at_an_untried_mixture_is_screened_first_then_confirmed(problem):
    space = search_space_of(problem)
    strat = MFMSBO(space, seed=0, screen_first=True, **OPTIONS)
    fids = fidelity_grid(space, strat.n_steps)
    base = [_spec(space, w, 20e6, 4000) for w in
            ([0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.34, 0.33, 0.33])]
    base.append(_spec(space, [0.34, 0.33, 0.33], 150e6, 4000))
    history = _history(problem, space, base)
    new = torch.tensor([0.55, 0.05, 0.40], dtype=torch.float64)

    gp = strat.fit_surrogate(history, []).model
    assert strat._screen_fidelity(gp, new, 150e6, 4000, fids, history, []) == (20e6, 4000)
    # A proposal the acquisition made at the smallest size stays as it is.
    assert strat._screen_fidelity(gp, new, 20e6, 1414, fids, history, []) == (20e6, 1414)

    # Once that cheap run is in (or pending), the large run goes ahead.
    screened = history + _history(problem, space, [_spec(space, new.tolist(), 20e6, 4000)])
    gp = strat.fit_surrogate(screened, []).model
    assert strat._screen_fidelity(gp, new, 150e6, 4000, fids, screened, []) == (150e6, 4000)
    pending = [_spec(space, new.tolist(), 20e6, 4000)]
    gp = strat.fit_surrogate(history, pending).model.fantasize(strat._inputs(pending))
    assert strat._screen_fidelity(gp, new, 150e6, 4000, fids, history, pending) == (150e6, 4000)


def test_screen_first_is_off_by_default_and_validated(problem):
    space = search_space_of(problem)
    assert MFMSBO(space).screen_first is False
    with pytest.raises(ValueError, match="screen_first must be true or false"):
        MFMSBO(space, screen_first="yes")
    with pytest.raises(ValueError, match="screen_threshold"):
        MFMSBO(space, screen_threshold=-1)
