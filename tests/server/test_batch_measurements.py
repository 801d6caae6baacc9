"""``POST /trials/{id}/measurements/batch``: several checkpoints in one request, each
checked as the single endpoint checks one, recorded all or nothing, a refusal naming the
item by its index; the worker agent sends its backlog this way."""

from __future__ import annotations

import pytest

from mfms_client.client import ConflictError, InvalidRequestError, MFMSClient, NotFoundError
from mfms_client.schemas import TrialAssignment
from tests.server.conftest import fake_losses, study_body


def _claim(api: MFMSClient, worker: str = "w") -> TrialAssignment:
    s = api.create_study(study_body(strategy={"name": "random"}, checkpoints=4))
    a = api.next_trial(worker, study_id=s.id)
    assert a is not None and len(a.checkpoints) >= 3
    return a


def _items(a: TrialAssignment, steps: list[int]) -> list[dict]:
    return [{"step": s, "losses": fake_losses(a.mixture, s)} for s in steps]


def _steps(api: MFMSClient, trial_id: int) -> list[int]:
    return [m.step for m in api.get_trial(trial_id).measurements]


def test_batch_records_every_item_in_one_request(api: MFMSClient, raw) -> None:
    a = _claim(api)
    r = raw.post(f"/trials/{a.trial_id}/measurements/batch",
                 json={"worker_id": "w", "measurements": _items(a, a.checkpoints)})
    assert r.status_code == 201
    body = r.json()
    assert body["created"] == len(a.checkpoints)
    assert [m["step"] for m in body["measurements"]] == a.checkpoints
    assert all(m["objective"] is not None for m in body["measurements"])
    assert _steps(api, a.trial_id) == a.checkpoints
    api.complete_trial(a.trial_id, cost=1.0, worker_id="w")


def test_replayed_batch_is_200_and_a_partial_replay_201(api: MFMSClient, raw) -> None:
    a = _claim(api)
    first = _items(a, a.checkpoints[:2])
    url = f"/trials/{a.trial_id}/measurements/batch"
    assert raw.post(url, json={"worker_id": "w", "measurements": first}).status_code == 201
    again = raw.post(url, json={"worker_id": "w", "measurements": first})
    assert again.status_code == 200 and again.json()["created"] == 0
    more = raw.post(url, json={"worker_id": "w",
                               "measurements": first + _items(a, a.checkpoints[2:3])})
    assert more.status_code == 201 and more.json()["created"] == 1
    assert _steps(api, a.trial_id) == a.checkpoints[:3]


def test_a_refused_item_names_its_index_and_nothing_is_written(api: MFMSClient) -> None:
    a = _claim(api)
    items = _items(a, a.checkpoints[:3])
    items[2]["losses"] = {**items[2]["losses"], "math": 2.0}  # a domain the study lacks
    with pytest.raises(InvalidRequestError, match=r"measurements\[2\]\.losses.*'math'") as e:
        api.post_measurements(a.trial_id, items, worker_id="w")
    assert e.value.status == 422
    items = _items(a, a.checkpoints[:2]) + [{"step": a.steps + 1,
                                            "losses": fake_losses(a.mixture, a.steps)}]
    with pytest.raises(InvalidRequestError, match=r"measurements\[2\]\.step: .* beyond"):
        api.post_measurements(a.trial_id, items, worker_id="w")
    assert _steps(api, a.trial_id) == []  # all or nothing


def test_conflicting_item_is_409_with_its_index(api: MFMSClient) -> None:
    a = _claim(api)
    step = a.checkpoints[0]
    api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step), worker_id="w")
    items = _items(a, a.checkpoints[1:3]) + [
        {"step": step, "losses": {k: v + 1 for k, v in fake_losses(a.mixture, step).items()}}]
    with pytest.raises(ConflictError, match=r"measurements\[2\]: .*different losses"):
        api.post_measurements(a.trial_id, items, worker_id="w")
    # the same step twice in one batch with different losses conflicts with itself
    twice = _items(a, a.checkpoints[1:2]) + _items(a, a.checkpoints[1:2])
    twice[1]["losses"] = {k: v + 1 for k, v in twice[1]["losses"].items()}
    with pytest.raises(ConflictError, match=r"measurements\[1\]: "):
        api.post_measurements(a.trial_id, twice, worker_id="w")
    assert _steps(api, a.trial_id) == [step]


def test_lease_holder_is_checked(api: MFMSClient) -> None:
    a = _claim(api)
    with pytest.raises(ConflictError, match=r"measurements\[0\]: .*leased to worker 'w'"):
        api.post_measurements(a.trial_id, _items(a, a.checkpoints[:2]), worker_id="other")
    with pytest.raises(NotFoundError, match="trial 999999"):
        api.post_measurements(999999, _items(a, a.checkpoints[:1]), worker_id="w")


def test_replay_after_complete_is_accepted_and_new_steps_refused(api: MFMSClient) -> None:
    a = _claim(api)
    api.post_measurements(a.trial_id, _items(a, a.checkpoints[:2]), worker_id="w")
    api.complete_trial(a.trial_id, cost=1.0, worker_id="w")
    out = api.post_measurements(a.trial_id, _items(a, a.checkpoints[:2]), worker_id="w")
    assert out.created == 0 and [m.step for m in out.measurements] == a.checkpoints[:2]
    with pytest.raises(ConflictError, match=r"measurements\[2\]: .*completed, not running"):
        api.post_measurements(a.trial_id, _items(a, a.checkpoints[:3]), worker_id="w")


def test_malformed_batch_is_422(api: MFMSClient, raw) -> None:
    a = _claim(api)
    url = f"/trials/{a.trial_id}/measurements/batch"
    assert raw.post(url, json={"worker_id": "w", "measurements": []}).status_code == 422
    bad = raw.post(url, json={"worker_id": "w", "measurements": [
        {"step": 1, "losses": {"code": 2.0}, "worker_id": "w"}]})
    assert bad.status_code == 422 and "measurements.0.worker_id" in bad.json()["detail"]
    nan = raw.post(url, content=b'{"worker_id": "w", "measurements": [{"step": 1, '
                                b'"losses": {"code": NaN}}]}',
                   headers={"content-type": "application/json"})
    assert nan.status_code == 422
