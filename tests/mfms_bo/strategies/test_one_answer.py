"""One answer: another process, given the same history, recommends and proposes exactly what
the long-lived strategy that ran the study does (a server restart, or ``--workers N``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mfms_bo.bench.harness import evaluate_trial
from mfms_bo.bench.problem import search_space_of
from mfms_bo.bench.problems.simulated import make_simulated
from mfms_bo.strategies import make_strategy
from mfms_bo.trials import Measurement, TrialResult, TrialSpec

ROOT = Path(__file__).resolve().parents[3]
# refit_growth 0.5: the newest proposals were conditioned on hyperparameters fitted a few
# trials earlier, which a process that did not see those fits must recover from the history.
OPTIONS = {"n_mixtures": 64, "surrogate": {"maxiter": 30, "warm_maxiter": 10,
                                           "refit_growth": 0.5}}

_OTHER_PROCESS = """
import json, sys
from mfms_bo.bench.problem import search_space_of
from mfms_bo.bench.problems.simulated import make_simulated
from mfms_bo.strategies import make_strategy
from mfms_bo.trials import Measurement, TrialResult, TrialSpec
doc = json.load(sys.stdin)
problem = make_simulated("t", k=3, seed=1, model_sizes=[20e6, 60e6], target_model_size=60e6,
                         steps=(500, 4000), checkpoints=4)
history = [TrialResult(TrialSpec(r["mixture"], r["model_size"], r["steps"],
                                 tuple(r["checkpoints"]), r["metadata"]),
                       tuple(Measurement(s, l) for s, l in r["measurements"]), r["cost"])
           for r in doc["history"]]
strat = make_strategy("mfms-bo", search_space_of(problem), 0, doc["options"])
rec = strat.recommend(history)
spec = strat.propose(history, [], 1)[0]
print(json.dumps({"recommendation": rec.mixture, "predicted": rec.predicted_objective,
                  "proposal": [spec.mixture, spec.model_size, spec.steps]}))
"""


def _as_json(r: TrialResult) -> dict:
    s = r.spec
    return {"mixture": dict(s.mixture), "model_size": s.model_size, "steps": s.steps,
            "checkpoints": list(s.checkpoints), "metadata": s.metadata, "cost": r.cost,
            "measurements": [[m.step, dict(m.losses)] for m in r.measurements]}


def test_a_new_process_recommends_and_proposes_what_the_running_strategy_does() -> None:
    problem = make_simulated("t", k=3, seed=1, model_sizes=[20e6, 60e6],
                             target_model_size=60e6, steps=(500, 4000), checkpoints=4)
    space = search_space_of(problem)
    lived = make_strategy("mfms-bo", space, 0, OPTIONS)
    history: list[TrialResult] = []
    for i in range(11):  # the schedule last refitted at 8 trials
        history.append(evaluate_trial(problem, lived.propose(history, [], 1)[0], seed=i))
        lived.recommend(history)  # a dashboard reading along: builds the running memo
    rec = lived.recommend(history)
    spec = lived.propose(history, [], 1)[0]
    assert spec.metadata["surrogate_fit"]["trials"] < len(history)  # conditioning only
    doc = json.dumps({"options": OPTIONS, "history": [_as_json(r) for r in history]})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", _OTHER_PROCESS], input=doc, env=env,
                         capture_output=True, text=True, check=True, timeout=300)
    other = json.loads(out.stdout)
    assert rec is not None
    assert other["recommendation"] == rec.mixture
    assert other["predicted"] == rec.predicted_objective
    assert other["proposal"] == [dict(spec.mixture), spec.model_size, spec.steps]
    # The history's JSON round trip is exact (the fit records are plain floats).
    again = [TrialResult(TrialSpec(d["mixture"], d["model_size"], d["steps"],
                                   tuple(d["checkpoints"]), d["metadata"]),
                         tuple(Measurement(s, loss) for s, loss in d["measurements"]),
                         d["cost"])
             for d in json.loads(doc)["history"]]
    assert again == history
