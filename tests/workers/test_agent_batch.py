"""The worker agent sends a backlog of measurements (kept while the server was
unreachable) in one batch request, and one at a time to a server without the batch
endpoint."""

from __future__ import annotations

import pytest

from mfms_client.client import MFMSClient, NotFoundError, ServerUnreachable
from workers.agent import WorkerAgent
from workers.backends.simulate import SimulateBackend


@pytest.fixture(scope="module")
def problem():
    from mfms_bo.bench.problems.simulated import make_simulated

    return make_simulated("t", k=3, seed=1, model_sizes=[20e6, 60e6], target_model_size=60e6,
                          steps=(500, 4000), checkpoints=4)


def _claimed(api: MFMSClient, problem):
    from mfms_cli.demo import study_of_problem

    sid = api.create_study(study_of_problem(problem, "t", "random", 0, {"trials": 1})).id
    return sid, api.next_trial("w1", study_id=sid)


def _unreachable_for(api: MFMSClient, monkeypatch, first: int) -> list:
    """Single posts fail ``first`` times (the server is away); batches are recorded."""
    calls: list = []
    single, batch = api.post_measurement, api.post_measurements

    def flaky(*args, **kwargs):
        calls.append(("single", args[1]))
        if sum(c[0] == "single" for c in calls) <= first:
            raise ServerUnreachable("connection refused")
        return single(*args, **kwargs)

    def batched(trial_id, items, **kwargs):
        calls.append(("batch", [m["step"] for m in items]))
        return batch(trial_id, items, **kwargs)

    monkeypatch.setattr(api, "post_measurement", flaky)
    monkeypatch.setattr(api, "post_measurements", batched)
    return calls


def test_backlog_goes_in_one_batch(api: MFMSClient, problem, monkeypatch) -> None:
    sid, trial = _claimed(api, problem)
    calls = _unreachable_for(api, monkeypatch, first=1)
    agent = WorkerAgent(api, SimulateBackend(problem), "w1", study_id=sid, echo=lambda _: None)
    assert agent.run_trial(trial) is True
    steps = trial.checkpoints
    # the first report failed; the second found a backlog of two and sent both at once
    assert calls[:2] == [("single", steps[0]), ("batch", steps[:2])]
    assert [c[0] for c in calls[2:]] == ["single"] * (len(steps) - 2)
    t = api.get_trial(trial.trial_id)
    assert t.state == "completed" and [m.step for m in t.measurements] == steps


def test_server_without_the_batch_endpoint_gets_them_one_at_a_time(
        api: MFMSClient, problem, monkeypatch) -> None:
    sid, trial = _claimed(api, problem)
    calls = _unreachable_for(api, monkeypatch, first=2)

    def old_server(trial_id, items, **kwargs):
        calls.append(("batch", [m["step"] for m in items]))
        raise NotFoundError(404, "Not Found", "POST", f"/trials/{trial_id}/measurements/batch")

    monkeypatch.setattr(api, "post_measurements", old_server)
    agent = WorkerAgent(api, SimulateBackend(problem), "w1", study_id=sid, echo=lambda _: None)
    assert agent.run_trial(trial) is True
    assert sum(c[0] == "batch" for c in calls) == 1  # tried once, then never again
    t = api.get_trial(trial.trial_id)
    assert t.state == "completed" and [m.step for m in t.measurements] == trial.checkpoints
