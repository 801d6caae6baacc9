"""Study export / import: a study moves between SQLite and PostgreSQL unchanged (and so does
its recommendation); running trials arrive abandoned, names never clash silently, and the
``mfms db export|import|backup`` commands round-trip through files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mfms_cli.main import main
from mfms_client.client import MFMSClient
from server import migrate, storage, transfer
from server.app import create_app
from server.db import Database, utcnow
from server.errors import Conflict, NotFound
from tests.server.conftest import _truncate, fake_losses, make_settings, study_body

AIOLI = {"method": "aioli", "eta": 0.2, "update_steps": 250}
MIX = {"code": 0.2, "web": 0.3, "books": 0.5}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/transfer.db"
    migrate.upgrade(url)
    return url


@pytest.fixture
def postgres_url(pg_url: str) -> str:
    _truncate(pg_url)
    return pg_url


@pytest.fixture
def urls(request: pytest.FixtureRequest, sqlite_url: str) -> dict[str, str]:
    return {"sqlite": sqlite_url, "postgresql": request.getfixturevalue("postgres_url")}


class Served:
    """An in-process app over one database, with its typed client."""

    def __init__(self, url: str, **settings: object) -> None:
        self.app = create_app(make_settings(url, **settings))
        self.http = TestClient(self.app)

    def __enter__(self) -> Served:
        self.http.__enter__()
        self.api = MFMSClient(http=self.http)
        self.db: Database = self.app.state.db
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.__exit__(*exc)


def _report(api: MFMSClient, a, steps=None, proportions=None, worker="w") -> None:
    for step in steps if steps is not None else a.checkpoints:
        api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step),
                             cost=step / 1000, worker_id=worker, proportions=proportions)


def build_study(s: Served, name: str = "moving") -> int:
    """A study with every kind of trial: completed (with costs, proportions and an online
    summary), failed, failed-and-retried, abandoned-and-requeued, user-queued, imported, and
    the strategy's own queue."""
    api = s.api
    study = api.create_study(study_body(name=name, online=AIOLI, seed=11,
                                        budget={"trials": 40}))
    sid = study.id
    a = api.next_trial("w", study_id=sid)  # completed, mixed online
    _report(api, a, proportions=MIX)
    api.complete_trial(a.trial_id, cost=3.5, worker_id="w", online={
        "final_proportions": {"code": 0.1, "web": 0.2, "books": 0.7},
        "average_proportions": MIX})
    for _ in range(2):  # completed, final losses with complete
        b = api.next_trial("w", study_id=sid)
        _report(api, b, steps=b.checkpoints[:-1])
        api.complete_trial(b.trial_id, cost=2.25, worker_id="w",
                           losses=fake_losses(b.mixture, b.steps))
    c = api.next_trial("w", study_id=sid)  # failed for good, with its cost
    _report(api, c, steps=c.checkpoints[:1])
    api.fail_trial(c.trial_id, "CUDA out of memory", retryable=False, cost=0.5, worker_id="w")
    d = api.next_trial("w", study_id=sid)  # failed retryable: re-queued as attempt 2
    api.fail_trial(d.trial_id, "preempted", retryable=True, worker_id="w")
    e = api.next_trial("lost", study_id=sid)  # abandoned (lease reaped) and re-queued
    assert e is not None and e.trial_id != d.trial_id
    _report(api, e, steps=e.checkpoints[:2], worker="lost")
    with s.db.session() as session:
        assert storage.reap_expired(session, now=utcnow() + timedelta(days=1),
                                    max_attempts=3) == [e.trial_id]
    api.enqueue_trial(sid, MIX, 60e6, 2000, online={"method": "static"},
                      metadata={"note": "by hand"})
    api.enqueue_trial(sid, {"code": 0.5, "web": 0.25, "books": 0.25}, 60e6, 2000,
                      measurements=[{"step": 1000, "losses": fake_losses(MIX, 1000)},
                                    {"step": 2000, "losses": fake_losses(MIX, 2000),
                                     "cost": 9.0}], cost=9.0)
    states = {t.state for t in api.list_trials(sid)}
    assert {"completed", "failed", "abandoned", "queued"} <= states, states
    assert "running" not in states
    return sid


def _export(db: Database, study_id: int) -> dict:
    with db.session() as session:
        return transfer.export_study(session, study_id)


def _import(db: Database, doc: dict, name: str | None = None) -> int:
    with db.session() as session:
        return transfer.import_study(session, doc, name).id


def _body(doc: dict) -> dict:
    """The document without its export time (a second export differs only there)."""
    return {k: v for k, v in doc.items() if k != "exported_at"}


@pytest.mark.parametrize(("src", "dst"), [("sqlite", "postgresql"), ("postgresql", "sqlite")])
def test_round_trip_between_databases(urls: dict[str, str], src: str, dst: str) -> None:
    with Served(urls[src]) as a:
        sid = build_study(a)
        doc = json.loads(json.dumps(_export(a.db, sid)))  # through real JSON text
        rec = a.api.recommendation(sid)
        trials = a.api.list_trials(sid)
    assert doc["format"] == "mfms-study" and doc["version"] == 1
    assert len(doc["trials"]) == len(trials)
    with Served(urls[dst]) as b:
        b.api.create_study(study_body())  # ids differ in the new database
        new_id = _import(b.db, doc)
        assert new_id != sid
        again = _export(b.db, new_id)
        assert _body(again) == _body(doc)
        assert b.api.recommendation(new_id).model_dump(exclude={"study_id"}) == \
            rec.model_dump(exclude={"study_id"})
        copied = b.api.list_trials(new_id)
        public = b.api.get_study(new_id)
    assert [(t.state, t.attempt, t.cost, t.objective, t.online_result) for t in copied] == \
        [(t.state, t.attempt, t.cost, t.objective, t.online_result) for t in trials]
    retried = [t for t in copied if t.retry_of is not None]
    assert len(retried) == 2
    by_id = {t.id: t for t in copied}
    assert all(by_id[t.retry_of].state in ("failed", "abandoned") for t in retried)
    proportions = [m.proportions for m in copied[0].measurements]
    assert proportions and all(p == pytest.approx(MIX) for p in proportions)
    assert public.name == "moving" and public.config["seed"] == 11


def test_document_shape(sqlite_url: str) -> None:
    with Served(sqlite_url) as a:
        sid = build_study(a)
        doc = _export(a.db, sid)
    assert set(doc) == {"format", "version", "exported_at", "study", "trials"}
    assert set(doc["study"]) == {"name", "state", "seed", "config", "created_at"}
    first = doc["trials"][0]
    assert first["online_result"]["final_proportions"] == {"code": 0.1, "web": 0.2,
                                                           "books": 0.7}
    assert set(first["measurements"][0]) == {"step", "losses", "objective", "cost",
                                             "proportions", "created_at"}
    retries = [(i, t["retry_of"]) for i, t in enumerate(doc["trials"]) if t["retry_of"]]
    assert retries and all(0 <= j < i for i, j in retries)  # indices, not database ids
    assert "id" not in first and "study_id" not in first


def test_running_trials_arrive_abandoned_and_queued_ones_stay(sqlite_url: str,
                                                              postgres_url: str) -> None:
    with Served(sqlite_url) as a:
        sid = a.api.create_study(study_body(strategy={"name": "random"})).id
        run = a.api.next_trial("w", study_id=sid)
        _report(a.api, run, steps=run.checkpoints[:1])
        queued = a.api.enqueue_trial(sid, MIX, 60e6, 2000)
        doc = _export(a.db, sid)
    states = [t["state"] for t in doc["trials"]]
    assert "running" in states and "queued" in states
    with Served(postgres_url) as b:
        new_id = _import(b.db, doc)
        trials = b.api.list_trials(new_id)
        was_running = trials[states.index("running")]
        assert was_running.state == "abandoned" and was_running.lease_expires_at is None
        assert "imported while running" in was_running.fail_reason
        assert len(was_running.measurements) == 1  # the partial curve is kept
        assert not [t for t in trials if t.retry_of == was_running.id]
        assert trials[states.index("queued")].state == "queued"
        # the queue works in the new database: the hand-enqueued trial is claimed first
        got = b.api.next_trial("w2", study_id=new_id)
        assert got is not None and got.mixture == pytest.approx(queued.mixture)


def test_name_clash_is_refused_unless_renamed(sqlite_url: str) -> None:
    with Served(sqlite_url) as a:
        sid = build_study(a, name="twice")
        doc = _export(a.db, sid)
        with pytest.raises(Conflict, match="a study named 'twice' already exists.*--name"):
            _import(a.db, doc)
        copy = _import(a.db, doc, name="twice-copy")
        assert a.api.get_study(copy).name == "twice-copy"
        again = _export(a.db, copy)
        assert again["study"].pop("name") == "twice-copy"
        assert {**_body(again), "study": {**again["study"], "name": "twice"}} == _body(doc)
        assert len(a.api.list_studies()) == 2


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(format="optuna"), "format: expected 'mfms-study'"),
    (lambda d: d.update(version=2), "version: this server reads version 1"),
    (lambda d: d["trials"][0].update(state="exploded"), "trials.0.state"),
    (lambda d: d["trials"][1].update(retry_of=5), "trials[1].retry_of"),
    (lambda d: d["trials"][0].update(surprise=1), "trials.0.surprise"),
    (lambda d: d["study"]["config"].update(domains=["only-one"]), "study.config.domains"),
])
def test_unreadable_documents_are_refused(sqlite_url: str, mutate, message: str) -> None:
    with Served(sqlite_url) as a:
        sid = a.api.create_study(study_body(strategy={"name": "random"})).id
        a.api.next_trial("w", study_id=sid)
        a.api.next_trial("w", study_id=sid)
        doc = _export(a.db, sid)
        mutate(doc)
        with pytest.raises(transfer.InvalidDocument, match=message.replace("[", r"\[")):
            _import(a.db, doc, name="other")
        assert len(a.api.list_studies()) == 1  # nothing written


def test_rest_export_and_import(sqlite_url: str, postgres_url: str) -> None:
    with Served(sqlite_url, admin_token="adm", worker_token="wrk") as a:
        admin = MFMSClient(http=a.http, token="adm")
        sid = admin.create_study(study_body(strategy={"name": "random"}, name="rest")).id
        run = admin.next_trial("w", study_id=sid)
        _report(admin, run)
        admin.complete_trial(run.trial_id, cost=1.0)
        r = a.http.get(f"/studies/{sid}/export")
        assert r.status_code == 200
        doc = r.json()
        assert a.http.get("/studies/99/export").status_code == 404
    with Served(postgres_url, admin_token="adm", worker_token="wrk") as b:
        auth = {"Authorization": "Bearer adm"}
        r = b.http.post("/studies/import", json=doc,
                        headers={"Authorization": "Bearer wrk"})
        assert r.status_code == 403
        r = b.http.post("/studies/import", json=doc, headers=auth)
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "rest" and r.json()["counts"]["completed"] == 1
        new_id = r.json()["id"]
        r = b.http.post("/studies/import", json=doc, headers=auth)
        assert r.status_code == 409 and "already exists" in r.json()["detail"]
        r = b.http.post("/studies/import", json=doc, headers=auth, params={"name": "rest-2"})
        assert r.status_code == 201 and r.json()["name"] == "rest-2"
        r = b.http.post("/studies/import", json={**doc, "version": 9}, headers=auth)
        assert r.status_code == 422 and "version" in r.json()["detail"]
        assert _body(b.http.get(f"/studies/{new_id}/export").json()) == _body(doc)


@pytest.fixture
def fresh_sqlite(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/restored.db"
    migrate.upgrade(url)
    yield url


def test_cli_export_import_and_backup(sqlite_url: str, postgres_url: str, fresh_sqlite: str,
                                      tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with Served(sqlite_url) as a:
        first = build_study(a, name="cli-one")
        second = a.api.create_study(study_body(strategy={"name": "random"}, name="cli-two")).id
        original = {first: _export(a.db, first), second: _export(a.db, second)}
    out = tmp_path / "one.json"
    assert main(["db", "export", "--study", "cli-one", "-o", str(out),
                 "--database-url", sqlite_url]) == 0
    assert _body(json.loads(out.read_text())) == _body(original[first])
    assert main(["db", "export", "--study", str(second), "--database-url", sqlite_url]) == 0
    assert _body(json.loads(capsys.readouterr().out)) == _body(original[second])

    assert main(["db", "import", str(out), "--database-url", postgres_url]) == 0
    assert "imported study 'cli-one' as id" in capsys.readouterr().out
    assert main(["db", "import", str(out), "--database-url", postgres_url]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["db", "import", str(out), "--name", "cli-one-b",
                 "--database-url", postgres_url]) == 0

    backup = tmp_path / "all.json"
    assert main(["db", "backup", "-o", str(backup), "--database-url", sqlite_url]) == 0
    doc = json.loads(backup.read_text())
    assert doc["format"] == "mfms-backup" and len(doc["studies"]) == 2
    assert main(["db", "import", str(backup), "--name", "x",
                 "--database-url", fresh_sqlite]) == 1
    assert "single-study" in capsys.readouterr().err
    assert main(["db", "import", str(backup), "--database-url", fresh_sqlite]) == 0
    db = Database(fresh_sqlite)
    try:
        with db.session() as session:
            restored = {st.name: transfer.export_study(session, st.id)
                        for st in storage.list_studies(session)}
    finally:
        db.dispose()
    assert _body(restored["cli-one"]) == _body(original[first])
    assert _body(restored["cli-two"]) == _body(original[second])

    assert main(["db", "export", "--study", "nope", "--database-url", sqlite_url]) == 1
    assert "no study with id or name 'nope'" in capsys.readouterr().err
    assert main(["db", "export", "--database-url", sqlite_url]) == 2
    bare = f"sqlite:///{tmp_path}/bare.db"
    assert main(["db", "backup", "--database-url", bare]) == 1
    assert "mfms db upgrade" in capsys.readouterr().err


def test_find_study_by_id_or_name(sqlite_url: str) -> None:
    with Served(sqlite_url) as a:
        sid = a.api.create_study(study_body(name="named")).id
        with a.db.session() as session:
            assert transfer.find_study(session, sid).name == "named"
            assert transfer.find_study(session, str(sid)).name == "named"
            assert transfer.find_study(session, "named").id == sid
            with pytest.raises(NotFound):
                transfer.find_study(session, "42")
