"""``storage.history_of`` with its per-process cache of finished trials' curves: always the
history the database holds, as trials finish, fail, are retried and studies are re-created
under a reused id."""

from __future__ import annotations

from mfms_client.client import MFMSClient
from server import storage
from tests.server.conftest import fake_losses, study_body


def _from_rows(db, study_id: int) -> list[tuple]:
    """The history rebuilt from ORM rows, as it was before the cache."""
    with db.session() as s:
        trials = storage.list_trials(s, study_id)
        return [(t.id, t.state, [(m.step, m.losses) for m in t.measurements]) for t in trials
                if t.state not in ("queued", "running", "cancelled") and t.measurements]


def _history(db, study_id: int) -> list[tuple]:
    with db.session() as s:
        history, _ = storage.history_of(s, study_id)
        trials = [t for t in storage.list_trials(s, study_id)
                  if t.state not in ("queued", "running", "cancelled") and t.measurements]
    assert len(history) == len(trials)
    return [(t.id, t.state, [(m.step, m.losses) for m in r.measurements])
            for t, r in zip(trials, history, strict=True)]


def _report(api: MFMSClient, a, steps: list[int]) -> None:
    for step in steps:
        api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step), worker_id="w")


def _study_with_one_finished_trial(api: MFMSClient):
    """A new random-strategy study whose first trial reported every checkpoint and
    completed: ``(database, study id, that trial's assignment)``."""
    db = api._http.app.state.db
    sid = api.create_study(study_body(strategy={"name": "random"})).id
    a = api.next_trial("w", study_id=sid)
    _report(api, a, a.checkpoints)
    api.complete_trial(a.trial_id, cost=1.0, worker_id="w")
    return db, sid, a


def test_history_follows_the_database_as_trials_finish(api: MFMSClient) -> None:
    db, sid, a = _study_with_one_finished_trial(api)
    assert _history(db, sid) == _from_rows(db, sid) and len(_from_rows(db, sid)) == 1
    b = api.next_trial("w", study_id=sid)
    _report(api, b, b.checkpoints[:1])  # running: not history yet
    assert _history(db, sid) == _from_rows(db, sid)
    _report(api, b, b.checkpoints[1:2])
    api.fail_trial(b.trial_id, "oom", retryable=True, worker_id="w")  # a partial curve
    c = api.next_trial("w", study_id=sid)
    api.fail_trial(c.trial_id, "no data", worker_id="w")  # finished without a curve
    assert _history(db, sid) == _from_rows(db, sid)
    assert [len(curve) for _, _, curve in _from_rows(db, sid)] == [len(a.checkpoints), 2]


def test_a_study_recreated_under_the_same_id_sees_only_its_own_curves(api: MFMSClient) -> None:
    db, sid, _ = _study_with_one_finished_trial(api)
    assert len(_history(db, sid)) == 1
    with db.session() as s:  # as a database emptied and refilled (ids restart)
        s.execute(storage.Measurement.__table__.delete())
        s.execute(storage.Trial.__table__.delete())
        s.execute(storage.Study.__table__.delete())
    again = api.create_study(study_body(strategy={"name": "random"}))
    if again.id != sid:  # PostgreSQL does not reuse ids: nothing to confuse
        return
    b = api.next_trial("w", study_id=again.id)
    _report(api, b, b.checkpoints[:1])
    api.complete_trial(b.trial_id, cost=1.0, worker_id="w")
    assert _history(db, again.id) == _from_rows(db, again.id)
