"""The worker protocol end to end: claim, heartbeat, measurements, complete, fail, enqueue,
import, recommendation and predict - and every refusal with the status that explains it."""

from __future__ import annotations

import pytest

from mfms_client.client import ConflictError, InvalidRequestError, MFMSClient, NotFoundError
from tests.server.conftest import fake_losses, study_body


def _run(api: MFMSClient, worker: str = "w", study_id: int | None = None, cost: float = 10.0
         ) -> int:
    a = api.next_trial(worker, study_id=study_id)
    assert a is not None
    for step in a.checkpoints:
        api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step), worker_id=worker)
    api.complete_trial(a.trial_id, cost=cost, worker_id=worker)
    return a.trial_id


def test_next_trial_returns_the_contract(api: MFMSClient, raw) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    r = raw.post("/next-trial", json={"worker_id": "w1"})
    assert r.status_code == 200
    a = r.json()
    for key in ("trial_id", "study_id", "mixture", "model_size", "steps", "checkpoints",
                "lease_seconds"):
        assert key in a
    assert a["study_id"] == s.id
    assert set(a["mixture"]) == {"code", "web", "books"}
    assert abs(sum(a["mixture"].values()) - 1) < 1e-9
    assert a["model_size"] in (20e6, 60e6) and 500 <= a["steps"] <= 4000
    assert a["checkpoints"][-1] == a["steps"] and len(a["checkpoints"]) <= 4
    trial = api.get_trial(a["trial_id"])
    assert trial.state == "running" and trial.worker_id == "w1"


def test_no_study_no_work(api: MFMSClient) -> None:
    assert api.next_trial("w") is None


def test_unknown_study_filter_is_404(api: MFMSClient) -> None:
    with pytest.raises(NotFoundError, match="study 77"):
        api.next_trial("w", study_id=77)


def test_full_trial_and_measurement_rules(api: MFMSClient, raw) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    a = api.next_trial("w", study_id=s.id)
    tid, step = a.trial_id, a.checkpoints[0]
    losses = fake_losses(a.mixture, step)
    assert raw.post(f"/trials/{tid}/measurements",
                    json={"step": step, "losses": losses, "worker_id": "w"}).status_code == 201
    # the same report again (a retry after a lost response) is a no-op
    assert raw.post(f"/trials/{tid}/measurements",
                    json={"step": step, "losses": losses, "worker_id": "w"}).status_code == 200
    with pytest.raises(ConflictError, match="different losses at step"):
        api.post_measurement(tid, step, {k: v + 1 for k, v in losses.items()})
    with pytest.raises(InvalidRequestError, match="unknown domain 'math'"):
        api.post_measurement(tid, step + 1, {"math": 1.0})
    with pytest.raises(InvalidRequestError, match="beyond the trial's steps"):
        api.post_measurement(tid, a.steps + 1, losses)
    with pytest.raises(InvalidRequestError, match="losses"):
        api.post_measurement(tid, step + 1, {})
    r = raw.post(f"/trials/{tid}/measurements", content=b'{"step": 7, "losses": {"code": NaN}}',
                 headers={"content-type": "application/json"})
    assert r.status_code == 422 and "losses.code" in r.json()["detail"]
    r = raw.post(f"/trials/{tid}/measurements",
                 json={"step": 7, "losses": {"code": -1.0}, "worker_id": "w"})
    assert r.status_code == 422 and ">= 0" in r.json()["detail"]
    with pytest.raises(ConflictError, match="leased to worker 'w', not 'x'"):
        api.post_measurement(tid, step + 1, losses, worker_id="x")
    with pytest.raises(NotFoundError, match="trial 9999 not found"):
        api.post_measurement(9999, 1, losses, worker_id="w")
    final = fake_losses(a.mixture, a.steps)
    done = api.complete_trial(tid, cost=12.5, losses=final)
    assert done.state == "completed" and done.cost == 12.5
    assert [m.step for m in done.measurements] == sorted({step, a.steps})
    # the objective of the final report: no objective_weights means the uniform average
    assert done.objective == pytest.approx(sum(final.values()) / len(final), rel=1e-12)
    assert api.complete_trial(tid, cost=12.5).state == "completed"  # idempotent
    with pytest.raises(ConflictError, match="is completed, not running"):
        api.post_measurement(tid, a.steps - 1, losses)
    with pytest.raises(ConflictError, match="is completed, not running"):
        api.heartbeat(tid)
    assert api.get_study(s.id).cost_spent == 12.5


def test_complete_needs_losses(api: MFMSClient) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    a = api.next_trial("w", study_id=s.id)
    with pytest.raises(InvalidRequestError, match="has no measurements"):
        api.complete_trial(a.trial_id, cost=1.0)
    assert api.get_trial(a.trial_id).state == "running"  # nothing half-written


def test_heartbeat_extends_lease_and_reports_stop(api: MFMSClient) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    a = api.next_trial("w", study_id=s.id)
    hb = api.heartbeat(a.trial_id, worker_id="w")
    assert hb.lease_expires_at > a.lease_expires_at and not hb.should_stop  # renewed
    api.stop_study(s.id)
    assert api.heartbeat(a.trial_id).should_stop
    # results of a trial that was running when the study stopped are still recorded
    api.post_measurement(a.trial_id, a.steps, fake_losses(a.mixture, a.steps))
    assert api.complete_trial(a.trial_id, cost=1.0).state == "completed"


def test_fail_retryable_requeues_with_priority(api: MFMSClient) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    a = api.next_trial("w", study_id=s.id)
    api.post_measurement(a.trial_id, a.checkpoints[0], fake_losses(a.mixture, 1))
    failed = api.fail_trial(a.trial_id, "CUDA out of memory", retryable=True)
    assert failed.state == "failed" and failed.fail_reason == "CUDA out of memory"
    assert len(failed.measurements) == 1  # partial results kept
    b = api.next_trial("w2", study_id=s.id)
    assert b.attempt == 2 and b.mixture == a.mixture and b.steps == a.steps
    assert api.get_trial(b.trial_id).retry_of == a.trial_id
    failed = api.fail_trial(b.trial_id, "bad data", retryable=False)
    assert all(t.retry_of != b.trial_id for t in api.list_trials(s.id))


def test_capabilities_limit_model_size(api: MFMSClient) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    # A queued 60M trial that would be claimed first (a user's): the claim itself, not only
    # the proposer, must keep it from a worker that cannot run it.
    big = api.enqueue_trial(s.id, {"code": 0.2, "web": 0.3, "books": 0.5}, 60e6, 2000)
    for _ in range(4):
        a = api.next_trial("small", study_id=s.id, max_model_size=30e6)
        assert a is not None and a.model_size == 20e6 and a.trial_id != big.id
    assert api.next_trial("tiny", study_id=s.id, max_model_size=1e6) is None
    assert api.next_trial("large", study_id=s.id, max_model_size=60e6).trial_id == big.id


def test_enqueued_trial_runs_first_and_imports_inform_the_model(api: MFMSClient) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    mine = api.enqueue_trial(s.id, {"code": 0.2, "web": 0.3, "books": 0.5}, 60e6, 2000)
    assert mine.state == "queued" and mine.source == "user" and mine.checkpoints[-1] == 2000
    a = api.next_trial("w", study_id=s.id)
    assert a.trial_id == mine.id
    with pytest.raises(InvalidRequestError, match="not on the ladder"):
        api.enqueue_trial(s.id, {"code": 0.2, "web": 0.3, "books": 0.5}, 30e6, 2000)
    with pytest.raises(InvalidRequestError, match="sum to 1"):
        api.enqueue_trial(s.id, {"code": 0.2, "web": 0.3, "books": 0.6}, 60e6, 2000)
    with pytest.raises(InvalidRequestError, match="unknown domain"):
        api.enqueue_trial(s.id, {"math": 1.0}, 60e6, 2000)
    # import a past sweep: completed trials with learning curves, any size in range
    for i, w in enumerate(([0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6], [1/3] * 3)):
        mix = dict(zip(("code", "web", "books"), w, strict=True))
        imp = api.enqueue_trial(s.id, mix, 40e6, 4000, cost=5.0, measurements=[
            {"step": st, "losses": fake_losses(mix, st)} for st in (1000, 2000, 4000)])
        assert imp.state == "completed" and imp.source == "import", i
    assert api.get_study(s.id).cost_spent == 0.0  # imports are not this study's spend
    with pytest.raises(InvalidRequestError, match="duplicate step"):
        api.enqueue_trial(s.id, mix, 40e6, 4000, measurements=[
            {"step": 5, "losses": {"code": 1.0}}, {"step": 5, "losses": {"code": 1.0}}])
    rec = api.recommendation(s.id)  # random: the best observed run at the largest size run
    assert rec.model_size == 40e6 and rec.mixture == pytest.approx(mix)


def test_recommendation_and_predict(api: MFMSClient) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}, seed=1))
    with pytest.raises(NotFoundError, match="no recommendation yet"):
        api.recommendation(s.id)
    for _ in range(5):
        _run(api, study_id=s.id)
    rec = api.recommendation(s.id)
    assert rec.strategy == "random" and rec.trials_used == 5
    assert abs(sum(rec.mixture.values()) - 1) < 1e-9
    p = api.predict(s.id, [{"code": 1 / 3, "web": 1 / 3, "books": 1 / 3},
                           {"code": 0.8, "web": 0.1, "books": 0.1}])
    assert p.model_size == 150e6 and p.steps == 4000 and len(p.predictions) == 2
    for pr in p.predictions:
        lo, hi = pr.interval
        assert lo < pr.predicted_objective < hi
    p = api.predict(s.id, [{"code": 1.0}], model_size=20e6, steps=1000)
    assert p.predictions[0].mixture == {"code": 1.0, "web": 0.0, "books": 0.0}
    with pytest.raises(InvalidRequestError, match=r"mixtures\[0\]: weights must sum to 1"):
        api.predict(s.id, [{"code": 0.5}])
    with pytest.raises(InvalidRequestError, match="model_size"):
        api.predict(s.id, [{"code": 1.0}], model_size=1.0)


@pytest.mark.parametrize("options", [{}, {"kernel": "seed", "n_mixtures": 32}])
def test_mfms_bo_study_recommends_with_interval(api: MFMSClient, options: dict) -> None:
    """One model behind every number: ``/predict`` at the recommended mixture and the
    target gives the recommendation's own prediction and interval, with the study's
    options (a second model with default options would disagree)."""
    s = api.create_study(study_body(seed=0, budget={"trials": 6},
                                    strategy={"name": "mfms-bo", "options": options}))
    for _ in range(6):
        _run(api, study_id=s.id, cost=1.0)
    assert api.next_trial("w", study_id=s.id) is None
    study = api.get_study(s.id)
    assert study.state == "completed" and study.trials_run == 6
    rec = api.recommendation(s.id)
    assert rec.interval is not None and rec.interval[0] < rec.predicted_objective
    assert rec.strategy == "mfms-bo"
    pred = api.predict(s.id, [rec.mixture]).predictions[0]
    assert pred.predicted_objective == pytest.approx(rec.predicted_objective, rel=1e-9)
    assert pred.interval == pytest.approx(rec.interval, rel=1e-9)


@pytest.mark.parametrize("strategy", ["mf-bo", "sf-bo"])
def test_a_single_size_baseline_predicts_with_its_own_model(api: MFMSClient, strategy: str
                                                            ) -> None:
    """``/predict`` of an ``mf-bo`` / ``sf-bo`` study is the strategy's own belief (its
    recommendation's number); a size it does not model is a 409 saying so, not an answer
    from another model."""
    s = api.create_study(study_body(seed=0, budget={"trials": 6},
                                    strategy={"name": strategy}))
    for _ in range(6):
        _run(api, study_id=s.id, cost=1.0)
    rec = api.recommendation(s.id)
    assert rec.strategy == strategy
    out = api.predict(s.id, [rec.mixture])
    assert out.model == f"the study's strategy {strategy}"
    assert out.predictions[0].predicted_objective == pytest.approx(rec.predicted_objective,
                                                                   rel=1e-9)
    with pytest.raises(ConflictError) as e:
        api.predict(s.id, [rec.mixture], model_size=20e6)
    assert f"the study's strategy {strategy} models only model size 6e+07" in e.value.detail


def test_a_study_without_a_surrogate_says_which_model_predicts(api: MFMSClient) -> None:
    s = api.create_study(study_body(seed=0, strategy={"name": "random"}))
    for _ in range(3):
        _run(api, study_id=s.id, cost=1.0)
    out = api.predict(s.id, [{"code": 0.2, "web": 0.5, "books": 0.3}])
    assert out.model == ("mfms-bo with default options (the study's strategy random has no "
                         "surrogate)")


def test_cost_budget_ends_the_study(api: MFMSClient) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}, budget={"cost": 25.0}))
    for _ in range(3):
        _run(api, study_id=s.id, cost=10.0)
    assert api.next_trial("w", study_id=s.id) is None
    assert api.get_study(s.id).state == "completed"


def test_hyperband_study_promotes_through_the_server(api: MFMSClient) -> None:
    s = api.create_study(study_body(strategy={"name": "hyperband"}, seed=0))
    seen = [_run(api, study_id=s.id) for _ in range(12)]
    trials = api.list_trials(s.id)
    assert len(seen) == 12 and all("bracket" in t.metadata for t in trials)
    assert {t.metadata["rung"] for t in trials} >= {0, 1}


def test_list_trials_filters_by_state(api: MFMSClient, raw) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    _run(api, study_id=s.id)
    api.next_trial("w", study_id=s.id)
    assert len(api.list_trials(s.id, state="completed")) == 1
    assert len(api.list_trials(s.id, state="running")) == 1
    assert raw.get(f"/studies/{s.id}/trials", params={"state": "bogus"}).status_code == 422
