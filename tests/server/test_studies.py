"""Studies: create, read, state transitions, and the 4xx answers to bad configurations."""

from __future__ import annotations

import pytest

from mfms_client.client import ConflictError, InvalidRequestError, MFMSClient, NotFoundError
from tests.server.conftest import study_body


def test_create_returns_201_with_id_and_config(api: MFMSClient, raw) -> None:
    r = raw.post("/studies", json=study_body(budget={"trials": 5}, seed=3))
    assert r.status_code == 201
    body = r.json()
    assert isinstance(body["id"], int) and body["state"] == "running"
    assert body["config"]["budget"] == {"cost": None, "trials": 5}
    assert body["config"]["seed"] == 3
    assert body["config"]["strategy"] == {"name": "mfms-bo", "options": {}}
    assert body["counts"]["queued"] == 0 and body["cost_spent"] == 0.0


def test_get_and_list(api: MFMSClient) -> None:
    a = api.create_study(study_body())
    b = api.create_study(study_body(strategy={"name": "random"}))
    assert api.get_study(a.id).name == a.name
    assert [s.id for s in api.list_studies()] == [a.id, b.id]
    with pytest.raises(NotFoundError, match="study 999 not found"):
        api.get_study(999)


def test_duplicate_name_is_409(api: MFMSClient) -> None:
    body = study_body()
    api.create_study(body)
    with pytest.raises(ConflictError, match="already exists"):
        api.create_study(body)


@pytest.mark.parametrize("override, message", [
    ({"domains": ["a"]}, "domains"),
    ({"domains": ["a", "a"]}, "unique"),
    ({"mixture_bounds": {"nope": [0, 1]}}, "mixture_bounds: unknown domain 'nope'"),
    ({"mixture_bounds": {"code": [0.6, 1], "web": [0.6, 1]}}, "lower bounds sum above 1"),
    ({"mixture_bounds": {"code": [0.5, 0.2]}}, "need 0 <= lo <= hi <= 1"),
    ({"objective_weights": {"nope": 1.0}}, "objective_weights: unknown domain"),
    ({"objective_weights": {"code": -1.0}}, "objective_weights"),
    ({"target": {"model_size": 1e6}}, "target.model_size: below the smallest runnable size"),
    ({"steps": {"min": 10, "max": 5}}, "min 10 is above max 5"),
    ({"model_sizes": [20e6, 20e6]}, "duplicate sizes"),
    ({"model_sizes": [-1]}, "model_sizes"),
    ({"strategy": {"name": "nope"}}, "strategy.name"),
    ({"strategy": {"name": "mfms-bo", "options": {"acquistion": "ei"}}},
     "unknown option 'acquistion'; did you mean 'acquisition'?"),
    ({"strategy": {"name": "mfms-bo", "options": {"acquisition": "ucb"}}},
     "acquisition must be one of ('kg', 'ei')"),
    ({"strategy": {"name": "mfms-bo", "options": {"surrogate": {"refit_growth": -1}}}},
     "refit_growth: must be a number in [0, 10]"),
    ({"strategy": {"name": "mfms-bo", "options": {"surrogate": {"max_fit_points": 0}}}},
     "max_fit_points: must be a whole number in [1, 4096]"),
    ({"checkpoints": 0}, "checkpoints"),
    ({"budget": {"cost": -5}}, "budget.cost"),
    ({"model-size": 5}, "model-size"),
    ({"candidates": [{"code": 0.5, "web": 0.6, "books": 0.0}]}, "candidates[0]: weights must "
                                                                 "sum to 1"),
])
def test_bad_configuration_is_422_naming_the_field(api: MFMSClient, override: dict,
                                                   message: str) -> None:
    with pytest.raises(InvalidRequestError, match=None) as err:
        api.create_study(study_body(**override))
    assert err.value.status == 422
    assert message in err.value.detail
    assert api.list_studies() == []  # nothing half-written


def test_absurd_numbers_rejected(api: MFMSClient) -> None:
    for override in ({"model_sizes": [1e308]}, {"steps": {"min": 1, "max": 10**12}},
                     {"target": {"model_size": 1e308}}):
        with pytest.raises(InvalidRequestError):
            api.create_study(study_body(**override))


def test_malformed_json_and_non_finite_numbers(api: MFMSClient, raw) -> None:
    r = raw.post("/studies", content=b'{"name": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "malformed JSON" in r.json()["detail"]
    r = raw.post("/studies", content=b'{"name": "x", "domains": ["a", "b"], "model_sizes": '
                 b'[NaN], "steps": {"min": 1, "max": 2}, "target": {"model_size": 1}}',
                 headers={"content-type": "application/json"})
    assert r.status_code == 422 and "model_sizes.0" in r.json()["detail"]


def test_pause_resume_stop(api: MFMSClient) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    assert api.pause_study(s.id).state == "paused"
    assert api.pause_study(s.id).state == "paused"  # idempotent
    assert api.next_trial("w", study_id=s.id) is None  # paused: no work
    assert api.resume_study(s.id).state == "running"
    api.enqueue_trial(s.id, {"code": 0.5, "web": 0.5, "books": 0.0}, 20e6, 1000)
    assert api.stop_study(s.id).state == "stopped"
    assert api.get_study(s.id).counts["cancelled"] == 1
    with pytest.raises(ConflictError, match="cannot resume"):
        api.resume_study(s.id)
    with pytest.raises(NotFoundError):
        api.stop_study(12345)


def test_next_trial_for_a_finished_study_says_why(api: MFMSClient, raw) -> None:
    s = api.create_study(study_body())
    api.stop_study(s.id)
    r = raw.post("/next-trial", json={"worker_id": "w", "study_id": s.id})
    assert r.status_code == 204 and r.headers["x-mfms-study-state"] == "stopped"


def test_a_screening_study_runs_through_the_api(api: MFMSClient) -> None:
    """The practitioners' baseline is a strategy like any other: it proposes its cheapest
    screening runs first (no budget known to it: the anytime schedule)."""
    study = api.create_study(study_body(strategy={"name": "screen"}))
    trial = api.next_trial("w1", study_id=study.id)
    assert trial is not None and trial.model_size == 20e6 and trial.steps == 500
