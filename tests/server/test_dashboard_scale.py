"""The study page's data at scale: a large study's overview carries trial digests (no
measurements; the page fetches a trial's on demand), a bounded sample of learning curves,
and spend summed in one pass; the digests agree with the full rows; the progress curve is
judged on a bounded set of trials and sent as a bounded number of points."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from bench.large_study import generate_study
from mfms_client.client import MFMSClient
from server import bulk, migrate
from server.dashboard import data
from server.db import Database
from server.storage import final_objective_of
from tests.server.test_study_transfer import Served, build_study


def _digests_agree(db: Database, study_id: int) -> int:
    with db.session() as s:
        records = [t for b in bulk.iter_trial_records(s, study_id) for t in b]
        digests = bulk.trial_digests(s, study_id)
    assert [d.id for d in digests] == [r.id for r in records]
    for d, r in zip(digests, records, strict=True):
        costs = [m.cost for m in r.measurements if m.cost is not None]
        assert (d.state, d.mixture, d.model_size, d.steps, d.cost, d.fail_reason) == (
            r.state, r.mixture, r.model_size, r.steps, r.cost, r.fail_reason)
        assert d.n_measurements == len(r.measurements)
        assert d.n_objectives == sum(m.objective is not None for m in r.measurements)
        assert d.final_objective == final_objective_of(r)  # type: ignore[arg-type]
        assert d.measured_cost == (max(costs) if costs else None)
        assert d.has_proportions == any(m.proportions for m in r.measurements)
    return sum(d.has_proportions for d in digests)


def test_digests_agree_with_the_rows(tmp_path) -> None:
    """Every kind of trial, proportions and partly reported curves included."""
    url = f"sqlite:///{tmp_path}/kinds.db"
    migrate.upgrade(url)
    with Served(url) as a:
        sid = build_study(a)
        assert _digests_agree(a.db, sid) == 1


def test_a_large_studys_overview(db_url: str, api: MFMSClient, raw,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sid = generate_study(db_url, 1500)
    db = Database(db_url)
    try:
        _digests_agree(db, sid)
    finally:
        db.dispose()
    monkeypatch.setattr(data, "MAX_CURVES", 40)
    board = raw.get(f"/studies/{sid}/dashboard", params={"part": "overview"}).json()
    assert "recommendation" not in board and not board["measurements_inline"]
    assert len(board["trials"]) == 1500
    assert not any("measurements" in t for t in board["trials"])
    curves = board["curves"]
    assert curves["of"] == 1500 and len(curves["trials"]) == 40
    ids = [c["id"] for c in curves["trials"]]
    assert ids[0] == board["trials"][0]["id"] and ids[-1] == board["trials"][-1]["id"]
    assert ids == sorted(ids)
    full = api.get_trial(ids[7])
    [drawn] = [c for c in curves["trials"] if c["id"] == ids[7]]
    assert drawn["step"] == [m.step for m in full.measurements]
    assert drawn["objective"] == [m.objective for m in full.measurements]
    row = next(t for t in board["trials"] if t["state"] == "failed")
    trial = api.get_trial(row["id"])
    assert row["objective"] == trial.objective and row["n_measurements"] == 4
    assert row["fail_reason"] == trial.fail_reason and "has_proportions" not in row  # false
    spent = api.get_study(sid).cost_spent
    assert board["spend"]["total"] == pytest.approx(spent)
    assert sum(c["trials"] for c in board["spend"]["cells"]) == 1500


def test_a_small_studys_page_gets_every_measurement(api: MFMSClient, raw) -> None:
    """Up to INLINE_TRIALS, as before: the trials as GET /trials/{id} gives them."""
    from tests.server.test_dashboard_data import _run, study_body

    sid = api.create_study(study_body(strategy={"name": "random"})).id
    _run(api, sid, 2)
    board = raw.get(f"/studies/{sid}/dashboard").json()
    assert board["measurements_inline"] and "recommendation" in board
    first = board["trials"][0]
    assert len(first["measurements"]) == first["n_measurements"] > 0
    surrogate = raw.get(f"/studies/{sid}/dashboard", params={"part": "surrogate"}).json()
    assert set(surrogate) == {"recommendation", "uniform_prediction", "slices", "progress"}
    assert raw.get(f"/studies/{sid}/dashboard", params={"part": "x"}).status_code == 422


T0 = datetime(2026, 1, 1)


def _finished(i: int, cell: tuple[float, int], objective: float, completed: bool = True):
    return (i, T0 + timedelta(minutes=i), 1.0, completed, {"a": 1.0}, cell, objective)


def test_progress_is_judged_on_each_fidelitys_best() -> None:
    cells = [(20e6, 500), (60e6, 500), (20e6, 4000)]
    finished = [_finished(i, cells[i % 3], objective=float(1000 - i)) for i in range(30)]
    finished.append(_finished(30, cells[0], 0.0, completed=False))  # failed: never judged
    judged = data._judged(finished, cap=7)
    assert len(judged) == 7 and [f[0] for f in judged] == sorted(f[0] for f in judged)
    # the best (lowest) objectives of every cell, taken in turn: 27, 28, 29, 24, 25, 26, 21
    assert {f[0] for f in judged} == {21, 24, 25, 26, 27, 28, 29}
    assert data._judged(finished, cap=100) == finished[:30]


def test_progress_points_are_bounded_and_keep_every_improvement(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "MAX_PROGRESS_POINTS", 10)
    finished = [_finished(i, (20e6, 500), 0.0) for i in range(100)]
    predicted = {3: 5.0, 40: 4.0, 41: 3.0, 77: 1.0}
    points = data._progress(finished, predicted)
    kept = [p["trial_id"] for p in points]
    assert {3, 40, 41, 77, 99} <= set(kept) and len(points) <= 10 + 5
    assert points[-1]["cost"] == 100.0 and points[-1]["best"] == 1.0
    full = {p["trial_id"]: p for p in data._progress(finished[:10], predicted)}
    assert len(full) == 10 and full[9]["best"] == 5.0


def test_history_exports_stream_what_they_wrote_whole(db_url: str, raw) -> None:
    """history.json and history.csv of 1,200 trials (three read batches) are the bytes the
    whole-study renderings (ORM rows, one string) give."""
    from server.api.views import trial_public
    from server.storage import list_trials

    sid = generate_study(db_url, 1200)
    db = Database(db_url)
    try:
        with db.session() as s:
            trials = [trial_public(t) for t in list_trials(s, sid)]
    finally:
        db.dispose()
    r = raw.get(f"/studies/{sid}/history.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.text == json.dumps({"study_id": sid, "trials": [
        t.model_dump(mode="json") for t in trials]})
    r = raw.get(f"/studies/{sid}/history.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text == data.history_csv(trials, ["code", "web", "books"])
    assert raw.get("/studies/999/history.csv").status_code == 404
    assert raw.get("/studies/999/history.json").status_code == 404
