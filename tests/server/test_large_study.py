"""Export and import of large studies: the streamed export writes exactly the document the
whole-document builder wrote (kept here as the oracle: ORM rows with their measurements,
one dict, ``json.dumps``), on a study with every kind of trial and on thousands of trials
written straight into the database; imports still check everything before writing
anything. Time and memory at 10,000 trials are measured by ``bench/large_study.py``, not
here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from bench.large_study import generate_study
from mfms_cli.main import main
from server import transfer
from server.db import Database
from server.models import Study, Trial
from tests.server.test_study_transfer import Served, build_study

EXPORTED_AT = "2026-01-01T00:00:00"


# -- the oracle: the export as it was built before it streamed ------------------------------
def _when(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _oracle(session: Session, study_id: int) -> dict[str, Any]:
    study = session.get(Study, study_id)
    assert study is not None
    trials = list(session.scalars(
        select(Trial).where(Trial.study_id == study.id).order_by(Trial.id)
        .options(selectinload(Trial.measurements))))
    index_of = {t.id: i for i, t in enumerate(trials)}
    return {
        "format": "mfms-study", "version": 1, "exported_at": EXPORTED_AT,
        "study": {"name": study.name, "state": study.state, "seed": int(study.seed),
                  "config": dict(study.config), "created_at": _when(study.created_at)},
        "trials": [{
            "state": t.state, "source": t.source, "priority": int(t.priority),
            "mixture": dict(t.mixture), "model_size": float(t.model_size),
            "steps": int(t.steps), "checkpoints": [int(c) for c in t.checkpoints],
            "spec_metadata": dict(t.spec_metadata or {}), "attempt": int(t.attempt),
            "retry_of": None if t.retry_of is None else index_of[t.retry_of],
            "worker_id": t.worker_id, "created_at": _when(t.created_at),
            "started_at": _when(t.started_at), "finished_at": _when(t.finished_at),
            "heartbeat_at": _when(t.heartbeat_at),
            "lease_expires_at": _when(t.lease_expires_at), "cost": t.cost,
            "fail_reason": t.fail_reason,
            "online_result": None if t.online_result is None else dict(t.online_result),
            "measurements": [
                {"step": int(m.step), "losses": dict(m.losses), "objective": m.objective,
                 "cost": m.cost,
                 "proportions": None if m.proportions is None else dict(m.proportions),
                 "created_at": _when(m.created_at)}
                for m in sorted(t.measurements, key=lambda m: m.step)],
        } for t in trials],
    }


def _streamed(session: Session, study_id: int, **kw: Any) -> str:
    """The streamed export with its time pinned to the oracle's."""
    pieces = list(transfer.iter_export_study(session, study_id, **kw))
    head = json.loads(pieces[0][:pieces[0].index('"study"')].rstrip(", \n") + "}")
    text = "".join(pieces)
    return text.replace(json.dumps(head["exported_at"]), json.dumps(EXPORTED_AT), 1)


def _compact(doc: dict) -> str:  # what FastAPI's JSONResponse wrote for the old route
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def test_streamed_export_is_the_document_byte_for_byte(tmp_path) -> None:
    """Every kind of trial (retries, abandoned, online summaries, imports, queued): the
    route's compact text and the CLI's indented text equal ``json.dumps`` of the whole
    document, and the route streams it."""
    url = f"sqlite:///{tmp_path}/small.db"
    from server import migrate

    migrate.upgrade(url)
    with Served(url) as a:
        sid = build_study(a)
        with a.db.session() as s:
            oracle = _oracle(s, sid)
            assert any(t["retry_of"] is not None for t in oracle["trials"])
            assert _streamed(s, sid) == _compact(oracle)
            assert _streamed(s, sid, indent=1, ensure_ascii=True) == json.dumps(oracle,
                                                                                indent=1)
        r = a.http.get(f"/studies/{sid}/export")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert {**r.json(), "exported_at": EXPORTED_AT} == oracle
        assert a.http.get("/studies/999/export").status_code == 404


def test_a_large_study_exports_and_imports_unchanged(db: Database, db_url: str,
                                                     tmp_path) -> None:
    """3,000 trials x 8 checkpoints (some retries, one pointing at the trial just before
    it, inside one insert batch): the stream equals the oracle's document, the import
    recreates it (bulk inserts keep the order and the retry links), and the CLI's export
    file holds the same document."""
    sid = generate_study(db_url, 3000)
    with db.session() as s:
        ids = list(s.scalars(select(Trial.id).where(Trial.study_id == sid).order_by(Trial.id)))
        for later, earlier in ((5, 4), (1200, 3), (2999, 2000)):
            s.execute(update(Trial).where(Trial.id == ids[later])
                      .values(retry_of=ids[earlier], attempt=2))
    with db.session() as s:
        oracle = _oracle(s, sid)
        text = _streamed(s, sid)
    assert text == _compact(oracle)
    assert [t["retry_of"] for t in oracle["trials"] if t["retry_of"] is not None] == [4, 3, 2000]
    doc = json.loads(text)
    with db.session() as s:
        copy = transfer.import_study(s, doc, "copy").id
    with db.session() as s:
        again = _oracle(s, copy)
    assert again["study"].pop("name") == "copy"
    oracle["study"].pop("name")
    assert again == oracle
    out = tmp_path / "large.json"
    assert main(["db", "export", "--study", str(sid), "-o", str(out),
                 "--database-url", db_url]) == 0
    assert {**json.loads(out.read_text()), "exported_at": EXPORTED_AT}["trials"] == doc["trials"]


def test_a_bad_trial_late_in_a_large_document_writes_nothing(db: Database, db_url: str
                                                             ) -> None:
    """Trials are checked one at a time, but all of them before the first insert: a bad
    value in the last trial (structural or live check) leaves the database as it was."""
    sid = generate_study(db_url, 1500)
    with db.session() as s:
        doc = transfer.export_study(s, sid)
    last = len(doc["trials"]) - 1
    for mutate, message in [
        (lambda t: t.update(mixture={"evil": 1.0}), rf"trials\[{last}\]\.mixture"),
        (lambda t: t.update(state="exploded"), rf"trials\.{last}\.state"),
        (lambda t: t.update(retry_of=last), rf"trials\[{last}\]\.retry_of"),
        (lambda t: t["measurements"][0].update(losses={"code": -1.0}),
         rf"trials\[{last}\]\.measurements\[0\]\.losses"),
    ]:
        broken = json.loads(json.dumps(doc))
        mutate(broken["trials"][last])
        with pytest.raises(transfer.InvalidDocument, match=message), db.session() as s:
            transfer.import_study(s, broken, "copy")
        with db.session() as s:
            assert list(s.scalars(select(Study.name))) == ["large"]
            assert s.query(Trial).count() == 1500
