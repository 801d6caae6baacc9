"""Online mixing through the REST contract: the ``online`` spec of a study or an enqueued
trial reaches ``/next-trial``, measurements carry the mixture the run trained on, and
``complete`` stores where an online-mixed run ended - all validated against the study's
domains, with 422s that name the problem and write nothing."""

from __future__ import annotations

import json
import re

import pytest

from mfms_client.client import ConflictError, InvalidRequestError, MFMSClient
from tests.server.conftest import fake_losses, study_body

AIOLI = {"method": "aioli", "eta": 0.2, "update_steps": 250}
MIX = {"code": 0.2, "web": 0.3, "books": 0.5}


def _claimed(api: MFMSClient, **study: object):
    """A running trial of a fresh random-strategy study: ``(study, assignment)``."""
    s = api.create_study(study_body(strategy={"name": "random"}, **study))
    a = api.next_trial("w", study_id=s.id)
    assert a is not None
    return s, a


def test_study_spec_is_stored_and_handed_out(api: MFMSClient) -> None:
    s, a = _claimed(api, online=AIOLI)
    assert s.config["online"] == AIOLI
    assert a.online == AIOLI
    _, plain = _claimed(api)
    assert plain.online is None


@pytest.mark.parametrize(("spec", "message"), [
    ({"method": "annealing"}, "online.method must be one of"),
    ({"method": "aioli", "eta": 0}, "online: eta must be a finite number > 0"),
    ({"method": "aioli", "eta": -0.5}, "online: eta must be a finite number > 0"),
    ({"method": "aioli", "temperature": 2}, "unknown option(s) ['temperature']"),
    ({"method": "static", "p": {"math": 1.0}}, "unknown domain(s) ['math']"),
])
def test_invalid_study_spec_is_422_naming_it(api: MFMSClient, raw, spec: dict,
                                             message: str) -> None:
    r = raw.post("/studies", json=study_body(online=spec))
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    assert api.list_studies() == []


def test_nan_inside_a_spec_is_422(api: MFMSClient, raw) -> None:
    # json.dumps writes NaN for float("nan"): the raw JSON a sloppy client would send
    body = json.dumps(study_body(online={"method": "aioli", "ema": float("nan")}))
    r = raw.post("/studies", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422 and "online.ema: must be finite" in r.json()["detail"]
    assert api.list_studies() == []


def test_enqueued_override_wins_and_is_validated(api: MFMSClient) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}, online=AIOLI))
    static = {"method": "static"}  # p defaults to the trial's own mixture
    mine = api.enqueue_trial(s.id, MIX, 60e6, 2000, online=static)
    assert mine.metadata["online"] == static
    a = api.next_trial("w", study_id=s.id)
    assert a is not None and a.trial_id == mine.id  # user trials are claimed first
    assert a.online == static
    other = api.next_trial("w2", study_id=s.id)
    assert other is not None and other.online == AIOLI  # no override: the study's
    with pytest.raises(InvalidRequestError, match="online: eta must be a finite number > 0"):
        api.enqueue_trial(s.id, MIX, 60e6, 2000, online={"method": "aioli", "eta": 0.0})
    # the override also hides in metadata: checked the same way, never handed out unchecked
    with pytest.raises(InvalidRequestError, match="online.method"):
        api.enqueue_trial(s.id, MIX, 60e6, 2000, metadata={"online": {"method": "x"}})
    assert len(api.list_trials(s.id)) == 2


def test_proportions_round_trip(api: MFMSClient) -> None:
    _, a = _claimed(api, online=AIOLI)
    first, second = a.checkpoints[0], a.checkpoints[1]
    got = api.post_measurement(a.trial_id, first, fake_losses(a.mixture, first), 1.0,
                               worker_id="w", proportions=MIX)
    assert got.proportions == pytest.approx(MIX)
    api.post_measurement(a.trial_id, second, fake_losses(a.mixture, second), 2.0,
                         worker_id="w", proportions={"code": 0.6, "web": 0.4})
    ms = api.get_trial(a.trial_id).measurements
    assert [m.step for m in ms] == [first, second]
    assert ms[0].proportions == pytest.approx(MIX)
    # a domain left out trained at weight 0: stored over all the study's domains
    assert ms[1].proportions == pytest.approx({"code": 0.6, "web": 0.4, "books": 0.0})


def test_measurement_without_proportions_has_none(api: MFMSClient) -> None:
    _, a = _claimed(api)
    step = a.checkpoints[0]
    assert api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step)
                                ).proportions is None
    assert api.get_trial(a.trial_id).measurements[0].proportions is None


@pytest.mark.parametrize(("proportions", "message"), [
    ({"code": 0.5, "math": 0.5}, "proportions: unknown domain(s) ['math']"),
    ({"code": 0.5, "web": 0.3, "books": 0.1}, "proportions: weights must sum to 1, got 0.9"),
    ({"code": 1.2, "web": -0.2}, "proportions['web']: weights must be >= 0"),
])
def test_bad_proportions_are_422_and_store_nothing(api: MFMSClient, proportions: dict,
                                                   message: str) -> None:
    _, a = _claimed(api)
    step = a.checkpoints[0]
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step),
                             proportions=proportions)
    assert api.get_trial(a.trial_id).measurements == []


def test_nan_proportion_is_422(api: MFMSClient, raw) -> None:
    _, a = _claimed(api)
    body = (b'{"step": 1, "losses": {"code": 3.0}, '
            b'"proportions": {"code": NaN, "web": 0.5, "books": 0.5}}')
    r = raw.post(f"/trials/{a.trial_id}/measurements", content=body,
                 headers={"content-type": "application/json"})
    assert r.status_code == 422 and "proportions.code" in r.json()["detail"]
    assert api.get_trial(a.trial_id).measurements == []


def test_replaying_a_step_stays_idempotent(api: MFMSClient, raw) -> None:
    _, a = _claimed(api, online=AIOLI)
    tid, step = a.trial_id, a.checkpoints[0]
    body = {"step": step, "losses": fake_losses(a.mixture, step), "proportions": MIX,
            "worker_id": "w"}
    assert raw.post(f"/trials/{tid}/measurements", json=body).status_code == 201
    assert raw.post(f"/trials/{tid}/measurements", json=body).status_code == 200
    # a replay that does not restate the proportions matches too (complete re-posts the
    # final losses without them)
    plain = {k: v for k, v in body.items() if k != "proportions"}
    assert raw.post(f"/trials/{tid}/measurements", json=plain).status_code == 200
    with pytest.raises(ConflictError, match="different proportions at step"):
        api.post_measurement(tid, step, body["losses"],
                             proportions={"code": 1.0, "web": 0.0, "books": 0.0})
    ms = api.get_trial(tid).measurements
    assert len(ms) == 1 and ms[0].proportions == pytest.approx(MIX)


def test_complete_stores_the_online_summary(api: MFMSClient) -> None:
    _, a = _claimed(api, online=AIOLI)
    for step in a.checkpoints:
        api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step), worker_id="w",
                             proportions=MIX)
    summary = {"final_proportions": {"code": 0.1, "web": 0.2, "books": 0.7},
               "average_proportions": MIX}
    done = api.complete_trial(a.trial_id, cost=3.0, worker_id="w", online=summary)
    assert done.state == "completed"
    assert done.online_result == summary
    assert api.get_trial(a.trial_id).online_result == summary
    # a replay of the same completion stays a no-op
    assert api.complete_trial(a.trial_id, cost=3.0, online=summary).online_result == summary


def test_complete_with_only_one_summary_key(api: MFMSClient) -> None:
    _, a = _claimed(api, online=AIOLI)
    done = api.complete_trial(a.trial_id, cost=1.0, losses=fake_losses(a.mixture, a.steps),
                              online={"final_proportions": {"code": 1.0}})
    assert done.online_result == {"final_proportions": {"code": 1.0, "web": 0.0,
                                                        "books": 0.0}}
    _, b = _claimed(api)
    plain = api.complete_trial(b.trial_id, cost=1.0, losses=fake_losses(b.mixture, b.steps))
    assert plain.online_result is None


@pytest.mark.parametrize(("online", "message"), [
    ({"final_mixture": MIX}, "online.final_mixture"),
    ({"final_proportions": {"code": 0.5, "math": 0.5}},
     "online.final_proportions: unknown domain"),
    ({"average_proportions": {"code": 0.5, "web": 0.45}},
     "online.average_proportions: weights must sum to 1"),
    ({"final_proportions": {"code": -1.0, "web": 2.0}},
     "online.final_proportions['code']: weights must be >= 0"),
])
def test_bad_online_summary_is_422_and_leaves_the_trial_running(
        api: MFMSClient, raw, online: dict, message: str) -> None:
    _, a = _claimed(api)
    r = raw.post(f"/trials/{a.trial_id}/complete",
                 json={"cost": 1.0, "losses": fake_losses(a.mixture, a.steps),
                       "online": online, "worker_id": "w"})
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    t = api.get_trial(a.trial_id)
    assert t.state == "running" and t.online_result is None and t.measurements == []


def test_nan_in_online_summary_is_422(api: MFMSClient, raw) -> None:
    _, a = _claimed(api)
    body = (b'{"cost": 1.0, "losses": {"code": 3.0}, '
            b'"online": {"final_proportions": {"code": NaN}}}')
    r = raw.post(f"/trials/{a.trial_id}/complete", content=body,
                 headers={"content-type": "application/json"})
    assert r.status_code == 422 and "online.final_proportions.code" in r.json()["detail"]
    assert api.get_trial(a.trial_id).state == "running"
