"""``GET /studies/{id}/trials`` a page at a time: an opaque cursor, state filters, bounds,
stability while trials are created, and a study of thousands of trials written straight
into the database (``bench/large_study.py``), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64

import pytest

from bench.large_study import generate_study
from mfms_client.client import MFMSClient
from mfms_client.schemas import TRIALS_PAGE_LIMIT
from server import bulk
from server.api.views import trial_public
from server.db import Database
from server.storage import list_trials
from tests.server.conftest import study_body

MIX = {"code": 0.5, "web": 0.25, "books": 0.25}


def _enqueue(api: MFMSClient, study_id: int, n: int) -> list[int]:
    return [api.enqueue_trial(study_id, MIX, 20e6, 1000).id for _ in range(n)]


def test_pages_follow_the_cursor(api: MFMSClient, raw) -> None:
    """Pages of ``limit`` trials in id order; ``next_cursor`` is an opaque string, null on
    the last page; the client walks every page, with and without a state filter."""
    s = api.create_study(study_body(strategy={"name": "random"}))
    ids = _enqueue(api, s.id, 5)
    api.next_trial("w", study_id=s.id)  # ids[0] is running now
    url = f"/studies/{s.id}/trials"
    first = raw.get(url, params={"limit": 2}).json()
    assert [t["id"] for t in first["trials"]] == ids[:2]
    assert isinstance(first["next_cursor"], str)
    second = raw.get(url, params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [t["id"] for t in second["trials"]] == ids[2:4]
    last = raw.get(url, params={"limit": 2, "cursor": second["next_cursor"]}).json()
    assert [t["id"] for t in last["trials"]] == ids[4:] and last["next_cursor"] is None
    exact = raw.get(url, params={"limit": 5}).json()  # a full last page says it is last
    assert len(exact["trials"]) == 5 and exact["next_cursor"] is None
    everything = raw.get(url).json()  # no parameters: up to the default page, as before
    assert [t["id"] for t in everything["trials"]] == ids and everything["next_cursor"] is None
    assert [t.id for t in api.list_trials(s.id, page_size=2)] == ids
    assert [t.id for t in api.list_trials(s.id, state="queued", page_size=1)] == ids[1:]


def test_state_filters_take_several_states(api: MFMSClient, raw) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    ids = _enqueue(api, s.id, 3)
    api.next_trial("w", study_id=s.id)
    url = f"/studies/{s.id}/trials"

    def listed(params: list[tuple[str, str]]) -> list[int]:
        r = raw.get(url, params=params)
        assert r.status_code == 200, r.text
        return [t["id"] for t in r.json()["trials"]]

    assert listed([("state", "running")]) == ids[:1]
    assert listed([("state", "queued")]) == ids[1:]
    assert listed([("state", "queued"), ("state", "running")]) == ids
    assert listed([("state", "queued, running")]) == ids
    assert listed([("state", "completed,failed")]) == []
    assert [t.id for t in api.list_trials(s.id, state=["running", "queued"])] == ids


@pytest.mark.parametrize("params, field", [
    ({"state": "bogus"}, "state: unknown trial state(s) ['bogus']"),
    ({"state": "queued,Running"}, "['Running']"),
    ({"limit": 0}, "limit"),
    ({"limit": TRIALS_PAGE_LIMIT + 1}, "limit"),
    ({"cursor": "not base64!"}, "cursor: not a cursor this server issued"),
    ({"cursor": base64.urlsafe_b64encode(b"42").decode()}, "cursor:"),
    ({"cursor": base64.urlsafe_b64encode(b"t-1").decode()}, "cursor:"),
    ({"cursor": "x" * 101}, "cursor"),
])
def test_bad_parameters_are_422_naming_them(api: MFMSClient, raw, params: dict,
                                             field: str) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    r = raw.get(f"/studies/{s.id}/trials", params=params)
    assert r.status_code == 422 and field in r.json()["detail"], r.text


def test_trials_created_while_walking_appear_once(api: MFMSClient, raw) -> None:
    """Keyed on the id, not an offset: trials created between two pages are neither
    skipped nor repeated (they come on a later page), and finished ones keep their place."""
    s = api.create_study(study_body(strategy={"name": "random"}))
    ids = _enqueue(api, s.id, 4)
    url = f"/studies/{s.id}/trials"
    seen: list[int] = []
    page = raw.get(url, params={"limit": 3}).json()
    seen += [t["id"] for t in page["trials"]]
    ids += _enqueue(api, s.id, 3)
    api.next_trial("w", study_id=s.id)  # a state change on the first page, too
    while page["next_cursor"] is not None:
        page = raw.get(url, params={"limit": 3, "cursor": page["next_cursor"]}).json()
        seen += [t["id"] for t in page["trials"]]
    assert seen == ids


def test_the_older_after_parameter_still_pages(api: MFMSClient, raw) -> None:
    """Clients of the first paginated version send ``after=<last trial id>``: an ignored
    parameter would hand them the first page forever, so it still pages (deprecated)."""
    s = api.create_study(study_body(strategy={"name": "random"}))
    ids = _enqueue(api, s.id, 3)
    url = f"/studies/{s.id}/trials"
    page = raw.get(url, params={"limit": 2, "after": ids[1]}).json()
    assert [t["id"] for t in page["trials"]] == ids[2:] and page["next_cursor"] is None
    first = raw.get(url, params={"limit": 1}).json()
    r = raw.get(url, params={"after": ids[0], "cursor": first["next_cursor"]})
    assert r.status_code == 422 and "give one" in r.json()["detail"], r.text
    assert raw.get(url, params={"after": -1}).status_code == 422


def test_an_unknown_study_is_404(raw) -> None:
    assert raw.get("/studies/999/trials").status_code == 404


def test_a_large_study_pages_through_every_trial(db_url: str, api: MFMSClient, raw) -> None:
    """2,500 trials x 8 checkpoints written straight into the database: the pages hold
    each trial once, in id order, as the ORM path (``storage.list_trials``) renders it."""
    sid = generate_study(db_url, 2500)
    pages = []
    cursor = None
    while True:
        r = raw.get(f"/studies/{sid}/trials", params={"cursor": cursor} if cursor else {})
        assert r.status_code == 200, r.text
        pages.append(r.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            break
    assert [len(p["trials"]) for p in pages] == [1000, 1000, 500]
    ids = [t["id"] for p in pages for t in p["trials"]]
    assert ids == sorted(ids) and len(set(ids)) == 2500
    failed = api.list_trials(sid, state="failed", page_size=100)
    assert len(failed) == 250 and {t.state for t in failed} == {"failed"}
    assert all(len(t.measurements) == 4 and t.objective is not None for t in failed)
    db = Database(db_url)
    try:
        with db.session() as s:
            orm = [trial_public(t).model_dump(mode="json")
                   for t in list_trials(s, sid, None, limit=300)]
            records = bulk.trial_records(s, sid, limit=300)
            assert [trial_public(t).model_dump(mode="json")  # type: ignore[arg-type]
                    for t in records] == orm
            assert sum(len(b) for b in bulk.iter_trial_records(s, sid, batch=700)) == 2500
    finally:
        db.dispose()
    assert pages[0]["trials"][:300] == orm
