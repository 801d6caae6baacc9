"""Hardening (issue 20): no single value can poison a study.

Each test reproduces one defect of the adversarial pass and runs on SQLite and PostgreSQL
(the ``api``/``raw`` fixtures are parametrised over both):

1. loss sanity bounds (``loss_bounds`` in the study config, default 0 < loss < 1e4) on every
   path that takes losses - measurements, complete, enqueue with results, import - with a
   422 naming the loss and nothing stored;
2. NaN / Infinity anywhere in free-form JSON (metadata, strategy options, online specs,
   import documents) is a 422 naming the field path, checked on the parsed value (Python's
   JSON parser accepts ``NaN`` literals);
3. a NUL character (or a lone surrogate, which no database can encode) in any string is a
   422, and the connection stays usable;
4. every write on a trial (heartbeat, measurements, complete, fail) must name the worker
   holding its lease: omitted is a 422, another worker's is a 409;
5. ``history.csv`` escapes text a spreadsheet would run as a formula;
6. hand-enqueued trials count against ``budget.trials``: one past it is a 409;
7. an import document passes the checks live input gets (mixtures, fidelities,
   checkpoints, losses, online summaries), all or nothing;
8. JSON nested deeper than ``limits.MAX_NESTING`` is a 422 naming the field;
9. a body that never arrives (Content-Length larger than what is sent) is a 408.
"""

from __future__ import annotations

import csv
import io
import json
import math
import socket
import time
from typing import Any

import httpx
import pytest

from mfms_bo import limits
from mfms_client.client import ConflictError, InvalidRequestError, MFMSClient
from server import migrate, transfer
from server.dashboard.data import history_csv
from tests.server.conftest import LiveServer, fake_losses, make_settings, study_body

MIX = {"code": 0.2, "web": 0.3, "books": 0.5}


def _post(raw, url: str, body: Any, **kw: Any):
    """POST ``body`` as JSON text, NaN and Infinity written as the bare literals Python's
    ``json`` module (and so the server's parser) accepts."""
    return raw.post(url, content=json.dumps(body), headers={"content-type": "application/json"},
                    **kw)


def _fields(r) -> list[str]:
    assert r.status_code == 422, (r.status_code, r.text)
    return [e["field"] for e in r.json().get("errors") or []]


def _finished_study(api: MFMSClient, **overrides: Any) -> tuple[int, Any]:
    """A random-strategy study with one completed trial and one running trial (returned)."""
    s = api.create_study(study_body(strategy={"name": "random"}, seed=3, **overrides))
    a = api.next_trial("w", study_id=s.id)
    for step in a.checkpoints:
        api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step), worker_id="w")
    api.complete_trial(a.trial_id, cost=1.0, worker_id="w")
    b = api.next_trial("w", study_id=s.id)
    return s.id, b


# -- 1. loss sanity bounds ---------------------------------------------------------------------
def test_default_loss_bounds_are_in_the_config(api: MFMSClient) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    assert s.config["loss_bounds"] == {"min": 0.0, "max": 10000.0}


@pytest.mark.parametrize("bad", [1e300, 0.0, 1e4])
def test_out_of_bounds_losses_are_refused_on_every_path(api: MFMSClient, raw, bad: float
                                                        ) -> None:
    sid, b = _finished_study(api)
    step = b.checkpoints[0]
    losses = {**fake_losses(b.mixture, step), "code": bad}
    want = f"losses['code']: must be in (0, 10000), got {bad:g}"

    r = _post(raw, f"/trials/{b.trial_id}/measurements",
              {"step": step, "losses": losses, "worker_id": "w"})
    assert r.status_code == 422 and want in r.json()["detail"], r.text
    r = _post(raw, f"/trials/{b.trial_id}/complete",
              {"cost": 1.0, "losses": {**fake_losses(b.mixture, b.steps), "code": bad},
               "worker_id": "w"})
    assert r.status_code == 422 and "losses['code']: must be in (0, 10000)" in r.text, r.text
    trial = api.get_trial(b.trial_id)
    assert trial.state == "running" and trial.measurements == []  # nothing stored

    r = _post(raw, f"/studies/{sid}/trials",
              {"mixture": MIX, "model_size": 60e6, "steps": 2000,
               "measurements": [{"step": 1000, "losses": fake_losses(MIX, 1000)},
                                {"step": 2000, "losses": {"code": bad}}]})
    assert r.status_code == 422, r.text
    assert f"measurements[1].losses['code']: must be in (0, 10000), got {bad:g}" in r.text

    doc = raw.get(f"/studies/{sid}/export").json()
    doc["trials"][0]["measurements"][0]["losses"]["web"] = bad
    r = _post(raw, "/studies/import", doc, params={"name": "copy"})
    assert r.status_code == 422, r.text
    assert "trials[0].measurements[0].losses['web']: must be in (0, 10000)" in r.text
    assert len(api.list_trials(sid)) == 2 and len(api.list_studies()) == 1

    # the study is intact: its dashboard and recommendation still answer
    api.post_measurement(b.trial_id, step, fake_losses(b.mixture, step), worker_id="w")
    assert raw.get(f"/studies/{sid}/dashboard").status_code == 200
    # ... from the one completed run only: no refused value reached the recommendation
    (done,) = [t for t in api.list_trials(sid) if t.state == "completed"]
    rec = api.recommendation(sid)
    assert rec.mixture == pytest.approx(done.mixture)
    assert rec.predicted_objective == pytest.approx(done.objective, rel=1e-12)


def test_loss_bounds_are_configurable_per_study(api: MFMSClient, raw) -> None:
    sid, b = _finished_study(api, loss_bounds={"min": 1.5, "max": 20})
    assert api.get_study(sid).config["loss_bounds"] == {"min": 1.5, "max": 20.0}
    step = b.checkpoints[0]
    for bad in (1.5, 1.0, 20.0, 25.0):
        with pytest.raises(InvalidRequestError, match=r"losses\['books'\]: must be in "
                                                      r"\(1\.5, 20\)"):
            api.post_measurement(b.trial_id, step, {"books": bad}, worker_id="w")
    api.post_measurement(b.trial_id, step, {"books": 1.6}, worker_id="w")
    for bounds, field in (({"min": 5, "max": 2}, "loss_bounds"),
                          ({"min": -1}, "loss_bounds.min"),
                          ({"max": 1e300}, "loss_bounds.max"),
                          ({"max": 10, "lo": 1}, "loss_bounds.lo")):
        r = raw.post("/studies", json=study_body(loss_bounds=bounds))
        assert field in _fields(r), r.text


def test_imported_study_without_loss_bounds_gets_the_default(api: MFMSClient, raw
                                                              ) -> None:
    """An export written before ``loss_bounds`` existed has none in its config: the default
    applies to its imported measurements and to the losses reported to it afterwards."""
    sid, _ = _finished_study(api)
    doc = raw.get(f"/studies/{sid}/export").json()
    del doc["study"]["config"]["loss_bounds"]
    doc["trials"] = doc["trials"][:1]
    doc["trials"][0]["measurements"][-1]["losses"]["code"] = 1e300
    assert raw.post("/studies/import", json=doc, params={"name": "old"}).status_code == 422
    doc["trials"][0]["measurements"][-1]["losses"]["code"] = 3.0
    r = raw.post("/studies/import", json=doc, params={"name": "old"})
    assert r.status_code == 201, r.text
    new = r.json()["id"]
    c = api.next_trial("w", study_id=new)
    with pytest.raises(InvalidRequestError, match=r"must be in \(0, 10000\), got 1e\+300"):
        api.post_measurement(c.trial_id, c.checkpoints[0], {"code": 1e300}, worker_id="w")


def test_objective_weights_cannot_overflow_the_objective(raw) -> None:
    r = raw.post("/studies", json=study_body(objective_weights={"code": 1e307, "web": 1.0}))
    assert "objective_weights.code" in _fields(r), r.text


# -- 2. NaN / Infinity in free-form JSON --------------------------------------------------------
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_in_trial_metadata_are_refused(api: MFMSClient, raw, bad: float
                                                          ) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    body = {"mixture": MIX, "model_size": 60e6, "steps": 2000}
    assert _fields(_post(raw, f"/studies/{s.id}/trials",
                         {**body, "metadata": {"x": bad}})) == ["metadata.x"]
    r = _post(raw, f"/studies/{s.id}/trials", {**body, "metadata": {"a": [1, {"b": bad}]}})
    assert _fields(r) == ["metadata.a.1.b"]
    assert "metadata.a.1.b: must be finite" in r.json()["detail"]
    assert _fields(_post(raw, f"/studies/{s.id}/trials",
                         {**body, "online": {"method": "static", "x": bad}})) == ["online.x"]
    assert api.list_trials(s.id) == []


def test_non_finite_strategy_options_are_refused_not_nulled(raw) -> None:
    body = study_body(strategy={"name": "mfms-bo",
                                "options": {"surrogate": {"refit_growth": math.nan}}})
    r = _post(raw, "/studies", body)
    assert _fields(r) == ["strategy.options.surrogate.refit_growth"]
    r = _post(raw, "/studies", study_body(online={"method": "aioli", "eta": math.inf}))
    assert _fields(r) == ["online.eta"]
    assert raw.get("/studies").json()["studies"] == []


def test_non_finite_numbers_in_import_documents_are_refused(api: MFMSClient, raw
                                                            ) -> None:
    sid, _ = _finished_study(api)
    doc = raw.get(f"/studies/{sid}/export").json()
    doc["trials"][0]["spec_metadata"] = {"x": math.nan}
    r = _post(raw, "/studies/import", doc, params={"name": "copy"})
    assert r.status_code == 422, r.text
    assert "trials.0.spec_metadata.x: must be finite" in r.json()["detail"]
    # the CLI's path (mfms db import / restore) reads files with the same parser
    db = raw.app.state.db
    with db.session() as session, pytest.raises(transfer.InvalidDocument,
                                                match=r"trials\.0\.spec_metadata\.x"):
        transfer.import_document(session, json.loads(json.dumps(doc)), "copy")
    doc["trials"][0]["spec_metadata"] = {}
    doc["study"]["config"]["strategy"]["options"] = {"n_init": math.inf}
    r = _post(raw, "/studies/import", doc, params={"name": "copy"})
    assert r.status_code == 422 and "study.config.strategy.options.n_init" in r.text, r.text
    assert len(api.list_studies()) == 1


# -- 3. NUL (and unencodable) characters in strings ---------------------------------------------
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"])
def test_unstorable_characters_in_strings_are_refused(api: MFMSClient, raw, bad: str
                                                      ) -> None:
    sid, b = _finished_study(api)
    checks = [
        ("/studies", study_body(name=bad), "name"),
        ("/studies", study_body(domains=["code", bad]), "domains.1"),
        ("/studies", study_body(strategy={"name": "random", "options": {bad: 1}}),
         "strategy.options"),
        ("/next-trial", {"worker_id": bad}, "worker_id"),
        (f"/trials/{b.trial_id}/fail", {"reason": bad, "worker_id": "w"}, "reason"),
        (f"/trials/{b.trial_id}/heartbeat", {"worker_id": bad}, "worker_id"),
        (f"/studies/{sid}/trials", {"mixture": MIX, "model_size": 60e6, "steps": 2000,
                                    "metadata": {"note": ["ok", bad]}}, "metadata.note.1"),
    ]
    for url, body, field in checks:
        r = _post(raw, url, body)
        assert _fields(r) == [field], (url, r.text)
        assert raw.get("/healthz").status_code == 200  # the connection was not reset
    doc = raw.get(f"/studies/{sid}/export").json()
    if "\x00" in bad:  # (httpx cannot put a lone surrogate in a URL)
        r = _post(raw, "/studies/import", doc, params={"name": bad})
        assert r.status_code == 422 and r.json()["detail"].startswith("name: "), r.text
    doc["trials"][0]["worker_id"] = bad
    r = _post(raw, "/studies/import", doc, params={"name": "copy"})
    assert r.status_code == 422 and "trials.0.worker_id" in r.json()["detail"], r.text
    assert [s.id for s in api.list_studies()] == [sid]
    assert api.get_trial(b.trial_id).state == "running"
    assert len(api.list_trials(sid)) == 2


# -- 4. lease ownership ---------------------------------------------------------------------
def test_every_write_on_a_trial_must_name_its_lease_holder(api: MFMSClient, raw) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    a = api.next_trial("w1", study_id=s.id)
    tid, step = a.trial_id, a.checkpoints[0]
    losses = fake_losses(a.mixture, step)
    writes = ((f"/trials/{tid}/heartbeat", {}),
              (f"/trials/{tid}/measurements", {"step": step, "losses": losses}),
              (f"/trials/{tid}/complete", {"cost": 1.0,
                                           "losses": fake_losses(a.mixture, a.steps)}),
              (f"/trials/{tid}/fail", {"reason": "stolen"}))
    for url, body in writes:
        assert _fields(raw.post(url, json=body)) == ["worker_id"], url
        r = raw.post(url, json={**body, "worker_id": "thief"})
        assert r.status_code == 409, (url, r.text)
        assert "leased to worker 'w1', not 'thief'" in r.json()["detail"]
    assert raw.post(f"/trials/{tid}/heartbeat").status_code == 422  # no body at all
    t = api.get_trial(tid)
    assert t.state == "running" and t.measurements == [] and t.worker_id == "w1"
    # the typed client sends the worker id it claimed the trial with unless told otherwise
    api.heartbeat(tid)
    api.post_measurement(tid, step, losses)
    assert api.complete_trial(tid, cost=1.0).state == "completed"
    b = api.next_trial("w2", study_id=s.id)
    with pytest.raises(ConflictError, match="leased to worker 'w2', not 'w1'"):
        api.fail_trial(b.trial_id, "x", worker_id="w1")
    assert api.fail_trial(b.trial_id, "x").state == "failed"


# -- 5. CSV formula injection ---------------------------------------------------------------
def test_history_csv_escapes_formulas_but_not_numbers(api: MFMSClient, raw) -> None:
    """A cell a spreadsheet would run as a formula (OWASP: leading ``=``, ``+``, ``-``,
    ``@``, tab, CR, LF) gets a leading ``'``; numbers stay numbers, negative ones too."""
    s = api.create_study(study_body(strategy={"name": "random"}, seed=3))
    evil = ["=cmd|'/C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "\n=1"]
    for worker in evil:
        api.next_trial(worker, study_id=s.id)
    rows = list(csv.DictReader(io.StringIO(raw.get(f"/studies/{s.id}/history.csv").text)))
    assert sorted(r["worker_id"] for r in rows) == sorted("'" + w for w in evil)
    # a negative number is a number: a float cell is written as it is
    (trial,) = api.list_trials(s.id, state="running")[:1]
    trial = trial.model_copy(update={"cost": -1.5, "worker_id": "-w"})
    (row,) = csv.DictReader(io.StringIO(history_csv([trial], ["code", "web", "books"])))
    assert row["cost"] == "-1.5" and row["worker_id"] == "'-w"


# -- 6. budget.trials counts hand-enqueued trials -------------------------------------------
def test_enqueue_past_the_trial_budget_is_refused(api: MFMSClient, raw) -> None:
    """Hand-enqueued trials count against ``budget.trials`` (``trials_run``), so one past
    the budget is a 409 naming it; results imported with measurements still go in."""
    s = api.create_study(study_body(strategy={"name": "random"}, seed=3, budget={"trials": 3}))
    body = {"mixture": MIX, "model_size": 60e6, "steps": 2000}
    for _ in range(3):
        assert _post(raw, f"/studies/{s.id}/trials", body).status_code == 201
    r = _post(raw, f"/studies/{s.id}/trials", body)
    assert r.status_code == 409, r.text
    assert r.json()["detail"].startswith("budget.trials: "), r.text
    assert "3 of its 3 trials" in r.json()["detail"]
    assert api.get_study(s.id).trials_run == 3 and len(api.list_trials(s.id)) == 3
    imported = {**body, "measurements": [{"step": 2000, "losses": fake_losses(MIX, 2000)}]}
    assert _post(raw, f"/studies/{s.id}/trials", imported).status_code == 201
    ran = 0
    while (a := api.next_trial("w", study_id=s.id)) is not None:
        api.complete_trial(a.trial_id, cost=1.0, losses=fake_losses(a.mixture, a.steps),
                           worker_id="w")
        ran += 1
    assert ran == 3 and api.get_study(s.id).state == "completed"


# -- 7. import runs the live checks ---------------------------------------------------------
def _import_doc(api: MFMSClient, raw) -> tuple[int, dict, int, int]:
    """An export with a completed trial (its index ``done``, with proportions and an online
    summary) and a hand-queued one (``queued``)."""
    s = api.create_study(study_body(strategy={"name": "random"}, seed=3))
    a = api.next_trial("w", study_id=s.id)
    for step in a.checkpoints:
        api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step), worker_id="w",
                             proportions=MIX)
    api.complete_trial(a.trial_id, cost=1.0, worker_id="w",
                       online={"final_proportions": MIX, "average_proportions": MIX})
    api.enqueue_trial(s.id, MIX, 60e6, 2000)
    doc = raw.get(f"/studies/{s.id}/export").json()
    states = [t["state"] for t in doc["trials"]]
    return s.id, doc, states.index("completed"), len(states) - 1


def test_import_refuses_what_live_input_refuses(api: MFMSClient, raw) -> None:
    sid, doc, done, queued = _import_doc(api, raw)
    assert doc["trials"][queued]["source"] == "user"
    off_simplex = {"code": 0.9, "web": 0.9}
    cases = [
        ((queued, "mixture"), {"evil": 7, "code": -3}, f"trials[{queued}].mixture: unknown "
                                                        "domain(s) ['evil']"),
        ((queued, "mixture"), {"code": -3, "web": 4}, f"trials[{queued}].mixture['code']: "
                                                       "weights must be >= 0"),
        ((queued, "model_size"), 12345, f"trials[{queued}].model_size: 12345 is not on the "
                                        "ladder"),
        ((queued, "steps"), 10**9, f"trials[{queued}].steps: 1000000000 outside [500, 4000]"),
        ((queued, "checkpoints"), [-5], f"trials[{queued}].checkpoints: need steps in "
                                        "[1, 2000]"),
        ((queued, "spec_metadata"), {"online": {"method": "nope"}},
         f"trials[{queued}].spec_metadata.online"),
        ((done, "online_result"), {"final_proportions": off_simplex},
         f"trials[{done}].online_result.final_proportions: weights must sum to 1"),
        ((done, "online_result"), {"best": MIX}, f"trials[{done}].online_result.best"),
        ((done, "measurements", 0, "losses"), {"code": -1.0},
         f"trials[{done}].measurements[0].losses['code']"),
        ((done, "measurements", 0, "losses"), {"evil": 3.0},
         f"trials[{done}].measurements[0].losses"),
        ((done, "measurements", 0, "proportions"), off_simplex,
         f"trials[{done}].measurements[0].proportions: weights must sum to 1"),
        ((done, "measurements", 0, "step"), 10**6,
         f"trials[{done}].measurements[0].step: 1000000 is beyond the trial's steps"),
        ((done, "cost"), -1.0, f"trials.{done}.cost: Input should be greater than or equal"),
    ]
    for (i, *path), bad, want in cases:
        broken = json.loads(json.dumps(doc))
        target = broken["trials"][i]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = bad
        r = _post(raw, "/studies/import", broken, params={"name": "copy"})
        assert r.status_code == 422, (want, r.text)
        assert want in r.json()["detail"], (want, r.text)
    broken = json.loads(json.dumps(doc))
    broken["study"]["config"]["online"] = {"method": "nope"}
    r = _post(raw, "/studies/import", broken, params={"name": "copy"})
    assert r.status_code == 422 and "study.config.online" in r.json()["detail"], r.text
    assert [s.id for s in api.list_studies()] == [sid]  # nothing was written
    # the CLI's path (mfms db import / restore) runs the same checks, all or nothing
    backup = json.loads(json.dumps({"format": "mfms-backup", "version": 1, "studies": [
        {**doc, "study": {**doc["study"], "name": name}} for name in ("first", "second")]}))
    backup["studies"][1]["trials"][queued]["mixture"] = {"evil": 1.0}
    db = raw.app.state.db
    with pytest.raises(transfer.InvalidDocument, match=r"studies\[1\]\.trials\[\d+\]\.mixture"):
        with db.session() as session:
            transfer.import_document(session, backup)
    assert [s.id for s in api.list_studies()] == [sid]
    r = _post(raw, "/studies/import", doc, params={"name": "copy"})  # the untouched export
    assert r.status_code == 201, r.text
    copy = api.list_trials(r.json()["id"])
    assert [t.mixture for t in copy] == [t["mixture"] for t in doc["trials"]]


# -- 8. deeply nested JSON ------------------------------------------------------------------
def _with_deep(body: dict, depth: int, where: tuple = ("metadata",)) -> str:
    """``body`` as JSON text with an object nested ``depth`` deep at ``where`` (written as
    text: ``json.dumps`` itself recurses)."""
    body = json.loads(json.dumps(body))
    target = body
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = "__deep__"
    return json.dumps(body).replace('"__deep__"', '{"a": ' * depth + "1" + "}" * depth)


def test_deeply_nested_json_is_a_422_naming_the_field(api: MFMSClient, raw) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}, seed=3))
    url, body = f"/studies/{s.id}/trials", {"mixture": MIX, "model_size": 60e6, "steps": 2000}
    headers = {"content-type": "application/json"}
    legit = {"note": "by hand", "runs": [{"lr": [1e-3, {"warmup": [100, {"a": None}]}]}]}
    assert _post(raw, url, {**body, "metadata": legit}).status_code == 201
    r = raw.post(url, content=_with_deep(body, limits.MAX_NESTING), headers=headers)
    assert r.status_code == 201, r.text  # at the limit: stored, listed, exported, imported
    want = f"metadata: nesting deeper than {limits.MAX_NESTING} levels"
    for depth in (limits.MAX_NESTING + 1, 300, 10_000):
        r = raw.post(url, content=_with_deep(body, depth), headers=headers)
        assert _fields(r) == ["metadata"], (depth, r.text)
        assert r.json()["detail"] == want, (depth, r.text)
    trials = api.list_trials(s.id)  # the study still lists (no 500 on serialisation)
    assert len(trials) == 2 and trials[0].metadata == legit
    doc = raw.get(f"/studies/{s.id}/export").json()
    r = _post(raw, "/studies/import", doc, params={"name": "copy"})
    assert r.status_code == 201, r.text
    for depth in (300, 10_000):
        text = _with_deep(doc, depth, ("trials", 0, "spec_metadata"))
        r = raw.post("/studies/import", content=text, headers=headers, params={"name": "c2"})
        assert r.status_code == 422, r.text
        assert "nesting deeper than" in r.json()["detail"], r.text
        assert r.json()["detail"].startswith("trials"), r.text
    assert len(api.list_studies()) == 2


# -- 9. a body that never arrives -------------------------------------------------------------
def test_a_body_that_never_arrives_is_a_408(tmp_path) -> None:
    """Content-Length promises 1000 bytes and 9 arrive: the server answers 408 after
    ``body_read_timeout_seconds`` and closes, instead of holding the connection forever;
    a complete body on the next connection is served as before."""
    url = f"sqlite:///{tmp_path}/slow.db"
    migrate.upgrade(url)
    with LiveServer(make_settings(url, body_read_timeout_seconds=1.0)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /studies HTTP/1.1\r\nHost: test\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                         b'{"name": ')
            t0 = time.monotonic()
            answer = b""
            while chunk := sock.recv(65536):  # until the server closes the connection
                answer += chunk
            waited = time.monotonic() - t0
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"request body not received within 1 s" in answer, answer
        assert 0.9 < waited < 5, waited
        r = httpx.post(server.url + "/studies", json=study_body(strategy={"name": "random"}))
        assert r.status_code == 201, r.text
