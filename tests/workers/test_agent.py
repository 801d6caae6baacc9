"""The worker agent against an in-process server: runs, failures, interruptions, blips."""

from __future__ import annotations

import pytest

from mfms_cli.demo import study_of_problem
from mfms_client.client import MFMSClient, ServerUnreachable
from workers.agent import WorkerAgent
from workers.backends.simulate import SimulateBackend


@pytest.fixture(scope="module")
def problem():
    from mfms_bo.bench.problems.simulated import make_simulated

    return make_simulated("t", k=3, seed=1, model_sizes=[20e6, 60e6], target_model_size=60e6,
                          steps=(500, 4000), checkpoints=4)


def _study(api: MFMSClient, problem, trials: int, strategy: str = "random") -> int:
    return api.create_study(study_of_problem(problem, "t", strategy, 0,
                                             {"trials": trials})).id


def test_agent_runs_a_study_to_completion(api: MFMSClient, problem) -> None:
    sid = _study(api, problem, 4)
    lines: list[str] = []
    agent = WorkerAgent(api, SimulateBackend(problem), "w1", study_id=sid, poll_min=0.01,
                        poll_max=0.05, echo=lines.append)
    assert agent.run() == 4
    trials = api.list_trials(sid)
    assert [t.state for t in trials] == ["completed"] * 4
    assert all(len(t.measurements) == len(t.checkpoints) for t in trials)
    assert api.get_study(sid).state == "completed"
    assert sum("objective" in line for line in lines) == 4


class Broken:
    name = "broken"

    def run(self, trial, report):
        report(trial.checkpoints[0], {d: 1.0 for d in trial.mixture}, None)
        raise RuntimeError("disk full")


def test_backend_failure_fails_the_trial_with_its_reason(api: MFMSClient, problem) -> None:
    sid = _study(api, problem, 3)
    agent = WorkerAgent(api, Broken(), "w1", study_id=sid, max_trials=1, once=True,
                        echo=lambda _: None)
    agent.run_trial(api.next_trial("w1", study_id=sid))
    t = api.list_trials(sid)[0]
    assert t.state == "failed" and "disk full" in t.fail_reason
    assert len(t.measurements) == 1  # what it reported before failing is kept


def test_stop_reports_the_trial_retryable(api: MFMSClient, problem) -> None:
    sid = _study(api, problem, 3)
    agent = WorkerAgent(api, SimulateBackend(problem), "w1", study_id=sid, echo=lambda _: None)

    class StopAfterFirst(SimulateBackend):
        def run(self, trial, report):
            def wrapped(step, losses, cost):
                report(step, losses, cost)
                agent.stop()  # as the SIGTERM handler does
            return super().run(trial, wrapped)

    agent.backend = StopAfterFirst(problem)
    first = api.next_trial("w1", study_id=sid)
    assert agent.run_trial(first) is False
    t = api.get_trial(first.trial_id)
    assert t.state == "failed" and "stopped" in t.fail_reason and len(t.measurements) == 1
    retry = api.next_trial("w2", study_id=sid)
    assert retry.attempt == 2 and retry.mixture == first.mixture


def test_measurements_survive_a_server_blip(api: MFMSClient, problem, monkeypatch) -> None:
    sid = _study(api, problem, 1)
    real = api.post_measurement
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] in (1, 2, 4):
            raise ServerUnreachable("connection refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "post_measurement", flaky)
    agent = WorkerAgent(api, SimulateBackend(problem), "w1", study_id=sid,
                        echo=lambda _: None)
    assert agent.run_trial(api.next_trial("w1", study_id=sid)) is True
    t = api.list_trials(sid)[0]
    assert t.state == "completed" and len(t.measurements) == len(t.checkpoints)


def test_a_simulator_only_takes_studies_it_has_the_domains_of(api: MFMSClient, problem
                                                              ) -> None:
    """A simulate worker with no study given skips a study over other domains (it could
    only fail its trials and spend its budget) and runs the one it can simulate."""
    other = api.create_study(name="real-data", domains=["code", "web", "books"],
                             model_sizes=[20e6, 60e6], steps={"min": 500, "max": 4000},
                             target={"model_size": 60e6}, checkpoints=4,
                             strategy={"name": "random"}, budget={"trials": 3})
    sid = _study(api, problem, 2)
    agent = WorkerAgent(api, SimulateBackend(problem), "sim", poll_min=0.01, poll_max=0.05,
                        once=True, echo=lambda _: None)
    assert agent.run() == 2
    assert [t.state for t in api.list_trials(sid)] == ["completed"] * 2
    assert [t.state for t in api.list_trials(other.id) if t.state != "queued"] == []
    assert api.next_trial("sim-2", domains=list(problem.domains)) is None
    # A worker that has the domains (or does not say) is served as before.
    got = api.next_trial("data", domains=["code", "web", "books", "math"])
    assert got is not None and got.study_id == other.id
