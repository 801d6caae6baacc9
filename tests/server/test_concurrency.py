"""Many workers at once over real HTTP: every trial is handed out exactly once and no
measurement is lost (PostgreSQL's SKIP LOCKED claims; SQLite's serialised writes)."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import create_engine, text

from mfms_client.client import MFMSClient
from tests.server.conftest import LiveServer, fake_losses, make_settings, study_body


def _hammer(url: str, study_id: int, n_workers: int, deadline_s: float
            ) -> tuple[list[int], list[tuple[int, int]], list[BaseException]]:
    handed: list[int] = []
    posted: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s

    def worker(i: int) -> None:
        api = MFMSClient(url, timeout=60)
        wid = f"w{i}"
        try:
            while time.monotonic() < stop_at:
                a = api.next_trial(wid, study_id=study_id)
                if a is None:
                    if api.get_study(study_id).state == "completed":
                        return
                    time.sleep(0.05)
                    continue
                with lock:
                    handed.append(a.trial_id)
                for step in a.checkpoints:
                    api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step),
                                         worker_id=wid)
                    with lock:
                        posted.append((a.trial_id, step))
                api.complete_trial(a.trial_id, cost=1.0, worker_id=wid)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            api.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return handed, posted, errors


def _stored(url: str, study_id: int) -> set[tuple[int, int]]:
    engine = create_engine(url)
    with engine.connect() as c:
        rows = c.execute(text("SELECT m.trial_id, m.step FROM measurements m JOIN trials t "
                              "ON t.id = m.trial_id WHERE t.study_id = :s"), {"s": study_id})
        out = {(int(a), int(b)) for a, b in rows}
    engine.dispose()
    return out


@pytest.mark.parametrize("strategy, workers, trials", [("random", 16, 64), ("mfms-bo", 4, 10)])
def test_workers_hammering_next_trial(db_url: str, strategy: str, workers: int,
                                      trials: int) -> None:
    settings = make_settings(db_url, background=True, maintenance_interval_seconds=0.5)
    with LiveServer(settings) as srv:
        api = MFMSClient(srv.url)
        s = api.create_study(study_body(strategy={"name": strategy}, seed=0,
                                        budget={"trials": trials}))
        handed, posted, errors = _hammer(srv.url, s.id, workers, deadline_s=240)
        assert not errors, errors[:3]
        assert len(handed) == len(set(handed)) == trials  # exactly once each
        assert set(posted) <= _stored(db_url, s.id)        # nothing lost
        study = api.get_study(s.id)
        assert study.state == "completed"
        assert study.counts["completed"] == trials and study.counts["running"] == 0
        assert study.cost_spent == pytest.approx(float(trials))


def test_two_servers_share_one_database(db_url: str) -> None:
    """Two server instances (own proposer, caches and maintenance thread each) on one
    database: no trial claimed twice, no duplicate proposals, the budget holds exactly."""
    settings = make_settings(db_url, background=True, maintenance_interval_seconds=0.3)
    with LiveServer(settings) as a, LiveServer(make_settings(
            db_url, background=True, maintenance_interval_seconds=0.3)) as b:
        api = MFMSClient(a.url)
        s = api.create_study(study_body(strategy={"name": "random"}, seed=1,
                                        budget={"trials": 24}))
        results = []
        threads = [threading.Thread(target=lambda u=u: results.append(_hammer(u, s.id, 4, 120)))
                   for u in (a.url, b.url)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        handed = [tid for r in results for tid in r[0]]
        assert not [e for r in results for e in r[2]]
        assert len(handed) == len(set(handed)) == 24
        trials = MFMSClient(b.url).list_trials(s.id)
        assert len(trials) == 24
        mixtures = {tuple(sorted(t.mixture.items())) + (t.model_size, t.steps) for t in trials}
        assert len(mixtures) == 24  # no proposal was queued twice


def test_proposer_lock_is_renewed_during_a_slow_proposal(db_url: str) -> None:
    """The lock's lease is short (a killed server blocks its study only briefly), so a live
    holder must renew it while its strategy works, or a second server would take over
    mid-fit and both would propose."""
    import time as _time

    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.config import Settings
    from server.db import Database, utcnow
    from server.models import Study
    from server.proposer import Proposer
    from server.study_cache import StudyCache

    settings = make_settings(db_url, proposal_lock_seconds=0.6)
    app = create_app(settings)
    with TestClient(app) as http:
        study_id = http.post("/studies", json=study_body(strategy={"name": "random"})).json()["id"]
    db = Database(settings.database_url)
    proposer = Proposer(db, Settings(database_url=settings.database_url,
                                     proposal_lock_seconds=0.6, background=False),
                        StudyCache())
    original = proposer._propose
    seen: list[bool] = []

    def slow(*args, **kwargs):
        for _ in range(4):  # 1.6 s of "GP fit", well past the 0.6 s lease
            _time.sleep(0.4)
            with db.session() as s:
                until = s.get(Study, study_id).proposer_until
                seen.append(until is not None and until > utcnow())
        return original(*args, **kwargs)

    proposer._propose = slow  # type: ignore[method-assign]
    assert proposer.top_up(study_id, want=2).made >= 1
    assert all(seen) and len(seen) == 4  # never lapsed while the holder was alive
    with db.session() as s:
        assert s.get(Study, study_id).proposer_id is None  # released afterwards
