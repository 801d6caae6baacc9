"""The worker agent with an online-mixing backend: the trial's ``online`` spec reaches the
backend, every ``report(..., proportions)`` reaches the server (also through a blip), and a
``BackendResult`` completes the trial with its summary."""

from __future__ import annotations

import pytest

from mfms_cli.demo import study_of_problem
from mfms_client.client import MFMSClient, ServerUnreachable
from mfms_client.schemas import TrialAssignment
from workers.agent import WorkerAgent
from workers.backends import BackendResult, Report

SPEC = {"method": "aioli", "eta": 0.2, "update_steps": 250}


@pytest.fixture(scope="module")
def problem():
    from mfms_bo.bench.problems.simulated import make_simulated

    return make_simulated("t", k=3, seed=1, model_sizes=[20e6, 60e6], target_model_size=60e6,
                          steps=(500, 4000), checkpoints=4)


def _study(api: MFMSClient, problem, online: dict | None = SPEC) -> int:
    body = study_of_problem(problem, "t", "random", 0, {"trials": 1})
    if online is not None:
        body["online"] = online
    return api.create_study(body).id


def drift(mixture: dict[str, float], i: int) -> dict[str, float]:
    """The mixture after ``i`` updates: weight moves towards the first domain."""
    first = next(iter(mixture))
    t = i / (i + 1)
    return {d: (1 - t) * w + (t if d == first else 0.0) for d, w in mixture.items()}


class FakeOnline:
    """Reports as an online-mixed run does and returns a :class:`BackendResult`."""

    name = "fake-online"

    def __init__(self, summary: dict | None = None) -> None:
        self.seen_online: dict | None = None
        self.summary = summary

    def run(self, trial: TrialAssignment, report: Report) -> BackendResult:
        self.seen_online = trial.online
        used = []
        for i, step in enumerate(trial.checkpoints):
            p = drift(trial.mixture, i)
            used.append(p)
            report(step, {d: 3.0 - step / 4000 for d in trial.loss_domains}, 0.5 * (i + 1), p)
        average = {d: sum(p[d] for p in used) / len(used) for d in trial.mixture}
        summary = self.summary or {"final_proportions": used[-1],
                                   "average_proportions": average}
        return BackendResult(cost=7.5, online=summary)


def test_agent_carries_proportions_and_the_online_result(api: MFMSClient, problem
                                                         ) -> None:
    sid = _study(api, problem)
    backend = FakeOnline()
    agent = WorkerAgent(api, backend, "w1", study_id=sid, poll_min=0.01, poll_max=0.05,
                        echo=lambda _: None)
    assert agent.run() == 1
    assert backend.seen_online == SPEC
    (t,) = api.list_trials(sid)
    assert t.state == "completed" and t.cost == 7.5
    assert len(t.measurements) == len(t.checkpoints)
    for i, m in enumerate(t.measurements):
        assert m.proportions == pytest.approx(drift(t.mixture, i))
    last = drift(t.mixture, len(t.checkpoints) - 1)
    assert t.online_result is not None
    assert t.online_result["final_proportions"] == pytest.approx(last)
    assert sum(t.online_result["average_proportions"].values()) == pytest.approx(1.0)


def test_proportions_survive_a_server_blip(api: MFMSClient, problem, monkeypatch
                                           ) -> None:
    sid = _study(api, problem)
    real = api.post_measurement
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] in (1, 3):
            raise ServerUnreachable("connection refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "post_measurement", flaky)
    agent = WorkerAgent(api, FakeOnline(), "w1", study_id=sid, echo=lambda _: None)
    assert agent.run_trial(api.next_trial("w1", study_id=sid)) is True
    (t,) = api.list_trials(sid)
    assert [m.proportions is not None for m in t.measurements] == [True] * len(t.checkpoints)
    assert t.measurements[0].proportions == pytest.approx(t.mixture)


def test_a_refused_summary_still_completes_the_trial(api: MFMSClient, problem
                                                     ) -> None:
    sid = _study(api, problem)
    lines: list[str] = []
    bad = {"final_proportions": {"nowhere": 1.0}}
    agent = WorkerAgent(api, FakeOnline(bad), "w1", study_id=sid, echo=lines.append)
    assert agent.run_trial(api.next_trial("w1", study_id=sid)) is True
    (t,) = api.list_trials(sid)
    assert t.state == "completed" and t.cost == 7.5 and t.online_result is None
    assert any("refused the online summary" in line for line in lines)


def test_a_study_without_online_hands_out_none(api: MFMSClient, problem) -> None:
    sid = _study(api, problem, online=None)
    backend = FakeOnline()
    agent = WorkerAgent(api, backend, "w1", study_id=sid, echo=lambda _: None)
    assert agent.run_trial(api.next_trial("w1", study_id=sid)) is True
    assert backend.seen_online is None
