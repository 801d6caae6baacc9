"""``server/storage.py`` below the HTTP layer: the claim order, leases and the proposer lock,
driven through the storage functions on SQLite and PostgreSQL.

The API tests reach the queue through ``/next-trial``, which proposes only when the queue is
empty, so they never see two kinds of queued trial at once; here the queue is filled by hand
so that the order in which trials are handed out is what decides the assertions.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from mfms_bo.study import StudyConfig
from mfms_bo.trials import Measurement, TrialSpec
from server import storage
from server.db import Database
from server.errors import Conflict
from server.models import Study, Trial
from tests.server.conftest import study_body

T0 = datetime(2030, 1, 1, 12, 0, 0)
LEASE = 60.0


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url, pool_size=2)
    yield database
    database.dispose()


@pytest.fixture
def study_id(db: Database) -> int:
    with db.session() as s:
        return storage.create_study(s, name="s", seed=0,
                                    config=study_body(strategy={"name": "random"})).id


def _mix(code: float) -> dict[str, float]:
    return {"code": code, "web": (1 - code) / 2, "books": (1 - code) / 2}


def _propose(db: Database, study_id: int, codes: list[float]) -> list[int]:
    """Queue strategy proposals the way the proposer does (lock, insert, release)."""
    specs = [TrialSpec(mixture=_mix(c), model_size=20e6, steps=1000, checkpoints=(1000,))
             for c in codes]
    with db.session() as s:
        assert storage.acquire_proposer(s, study_id=study_id, holder="p", now=T0, seconds=30)
        rows = storage.insert_proposals(s, study_id=study_id, specs=specs, holder="p", now=T0)
        return [r.id for r in rows]


def _enqueue(db: Database, study_id: int, code: float, model_size: float = 20e6) -> int:
    with db.session() as s:
        study = storage.get_study(s, study_id)
        spec = TrialSpec(mixture=_mix(code), model_size=model_size, steps=1000,
                         checkpoints=(1000,))
        return storage.enqueue_trial(s, study=study, spec=spec, now=T0,
                                     config=StudyConfig.from_dict(study.config)).id


def _claim(db: Database, worker: str = "w", max_model_size: float | None = None,
           now: datetime = T0) -> int | None:
    with db.session() as s:
        t = storage.claim_trial(s, worker_id=worker, study_id=None, now=now,
                                max_model_size=max_model_size, lease_seconds=LEASE)
        return None if t is None else t.id


def test_user_trial_enqueued_later_is_claimed_before_older_proposals(db, study_id) -> None:
    proposed = _propose(db, study_id, [0.1, 0.2, 0.3])
    mine = _enqueue(db, study_id, 0.5)
    assert mine > max(proposed)  # newest row: only its priority can put it first
    # then the proposals, oldest first (the documented tie-break)
    assert [_claim(db) for _ in range(4)] == [mine, *proposed]
    assert _claim(db) is None


def test_ties_in_priority_go_oldest_first(db, study_id) -> None:
    first = _enqueue(db, study_id, 0.6)
    proposed = _propose(db, study_id, [0.1])
    second = _enqueue(db, study_id, 0.7)
    assert [_claim(db) for _ in range(3)] == [first, second, *proposed]


def test_retry_jumps_ahead_of_queued_proposals(db, study_id) -> None:
    (a,) = _propose(db, study_id, [0.1])
    assert _claim(db, "w1") == a
    later = _propose(db, study_id, [0.2, 0.3])
    with db.session() as s:
        _, retry = storage.fail_trial(s, trial_id=a, reason="oom", retryable=True, cost=None,
                                      worker_id="w1", max_attempts=3, now=T0)
        assert retry is not None
        retry_id = retry.id
    assert retry_id > max(later)
    assert [_claim(db, "w2") for _ in range(3)] == [retry_id, *later]


def test_claim_respects_max_model_size(db, study_id) -> None:
    big = _enqueue(db, study_id, 0.5, model_size=60e6)
    small = _enqueue(db, study_id, 0.4, model_size=20e6)
    assert _claim(db, "small", max_model_size=30e6) == small  # the older, bigger one skipped
    assert _claim(db, "small", max_model_size=30e6) is None
    assert _claim(db, "any", max_model_size=60e6) == big  # a size at the cap is runnable


def test_claim_takes_only_running_studies(db, study_id) -> None:
    mine = _enqueue(db, study_id, 0.5)
    with db.session() as s:
        storage.set_study_state(s, study_id=study_id, action="pause", now=T0)
    assert _claim(db) is None
    with db.session() as s:
        storage.set_study_state(s, study_id=study_id, action="resume", now=T0)
    assert _claim(db) == mine


def test_claim_sets_the_lease_and_a_trial_is_claimed_once(db, study_id) -> None:
    mine = _enqueue(db, study_id, 0.5)
    assert _claim(db, "w1") == mine
    assert _claim(db, "w2") is None
    with db.session() as s:
        t = storage.get_trial(s, mine)
        assert (t.state, t.worker_id) == ("running", "w1")
        assert t.lease_expires_at == T0 + timedelta(seconds=LEASE)


def test_heartbeat_and_reports_renew_the_lease_from_now(db, study_id) -> None:
    mine = _enqueue(db, study_id, 0.5)
    assert _claim(db, "w1", now=T0) == mine
    later = T0 + timedelta(seconds=45)
    with db.session() as s:
        t = storage.heartbeat(s, trial_id=mine, worker_id="w1", lease_seconds=LEASE, now=later)
        assert (t.heartbeat_at, t.lease_expires_at) == (later, later + timedelta(seconds=LEASE))
    with db.session() as s:  # the renewed lease outlives the claim's
        assert storage.reap_expired(s, now=T0 + timedelta(seconds=LEASE + 1),
                                    max_attempts=3) == []
    with db.session() as s:
        trial = storage.get_trial(s, mine, lock=True, with_study=True)
        storage.add_measurement(s, trial=trial, worker_id="w1", lease_seconds=LEASE,
                                measurement=Measurement(1000, {"code": 2.0, "web": 2.5,
                                                               "books": 3.0}),
                                config=StudyConfig.from_dict(trial.study.config),
                                now=later + timedelta(seconds=45))
        assert trial.lease_expires_at == later + timedelta(seconds=45 + LEASE)


def test_only_the_lease_holder_completes_a_trial(db, study_id) -> None:
    """With its measurements already posted, ``complete`` carries no losses: the lease
    check is then the only thing between another worker and the trial."""
    mine = _enqueue(db, study_id, 0.5)
    assert _claim(db, "w1") == mine
    with db.session() as s:
        trial = storage.get_trial(s, mine, lock=True, with_study=True)
        config = StudyConfig.from_dict(trial.study.config)
        storage.add_measurement(s, trial=trial, worker_id="w1", lease_seconds=LEASE, now=T0,
                                measurement=Measurement(1000, {"code": 2.0, "web": 2.5,
                                                               "books": 3.0}),
                                config=config)
    with pytest.raises(Conflict, match="leased to worker 'w1', not 'w2'"), \
            db.session() as s:
        trial = storage.get_trial(s, mine, lock=True)
        storage.complete_trial(s, trial=trial, cost=1.0, losses=None, worker_id="w2",
                               config=config, now=T0)
    with db.session() as s:
        t = storage.get_trial(s, mine)
        assert (t.state, t.cost) == ("running", None)
        storage.complete_trial(s, trial=t, cost=1.0, losses=None, worker_id="w1",
                               config=config, now=T0)
        assert (t.state, t.cost) == ("completed", 1.0)


def test_reaper_takes_back_only_expired_leases(db, study_id) -> None:
    a, b = _enqueue(db, study_id, 0.5), _enqueue(db, study_id, 0.4)
    assert _claim(db, "w1", now=T0) == a
    assert _claim(db, "w2", now=T0 + timedelta(seconds=30)) == b
    with db.session() as s:  # a's lease ended 1 s ago, b's has 29 s left
        lost = storage.reap_expired(s, now=T0 + timedelta(seconds=LEASE + 1), max_attempts=3)
    assert lost == [a]
    with db.session() as s:
        assert storage.get_trial(s, a).state == "abandoned"
        assert storage.get_trial(s, b).state == "running"
        (again,) = [t for t in storage.list_trials(s, study_id) if t.retry_of == a]
        assert (again.state, again.attempt) == ("queued", 2)
    with db.session() as s:  # exactly at expiry the lease still holds
        assert storage.reap_expired(s, now=T0 + timedelta(seconds=30 + LEASE),
                                    max_attempts=3) == []


def test_proposer_lock_excludes_a_second_holder_until_it_lapses(db, study_id) -> None:
    with db.session() as s:
        assert storage.acquire_proposer(s, study_id=study_id, holder="a", now=T0, seconds=30)
        assert not storage.acquire_proposer(s, study_id=study_id, holder="b",
                                            now=T0 + timedelta(seconds=29), seconds=30)
        assert storage.acquire_proposer(s, study_id=study_id, holder="b",
                                        now=T0 + timedelta(seconds=31), seconds=30)
        # the first holder's lock lapsed mid-fit: its batch is dropped, not queued
        spec = TrialSpec(mixture=_mix(0.2), model_size=20e6, steps=1000, checkpoints=(1000,))
        assert storage.insert_proposals(s, study_id=study_id, specs=[spec], holder="a",
                                        now=T0) == []
        assert s.get(Study, study_id).proposer_id == "b"
        assert s.query(Trial).filter(Trial.study_id == study_id).count() == 0
