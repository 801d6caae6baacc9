"""The dashboard's data: spend per fidelity, what a trial cost, and the study list's
comparison (best predicted objective from the cached recommendation, never a new fit)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mfms_client.client import MFMSClient
from mfms_client.schemas import MeasurementPublic, TrialPublic
from server import storage
from server.dashboard.data import spend_by_fidelity, trial_cost
from tests.server.conftest import fake_losses, study_body

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _trial(tid: int, state: str, size: float, steps: int, cost: float | None,
           measured: list[float | None] = (), source: str = "proposed") -> TrialPublic:
    ms = [MeasurementPublic(step=100 * (i + 1), losses={"a": 1.0}, objective=1.0, cost=c,
                            created_at=NOW) for i, c in enumerate(measured)]
    return TrialPublic(id=tid, study_id=1, state=state, source=source,
                       mixture={"a": 0.5, "b": 0.5}, model_size=size, steps=steps,
                       checkpoints=[steps], attempt=1, retry_of=None, worker_id=None,
                       created_at=NOW, started_at=None, finished_at=None,
                       lease_expires_at=None, cost=cost, fail_reason=None, objective=None,
                       metadata={}, measurements=ms)


def test_trial_cost_is_what_cost_spent_counts() -> None:
    assert trial_cost(_trial(1, "completed", 1e6, 100, 2.5, [1.0, 2.0])) == 2.5
    assert trial_cost(_trial(2, "failed", 1e6, 100, 0.7)) == 0.7  # a failed run's report
    assert trial_cost(_trial(3, "running", 1e6, 100, None, [0.4, None, 0.9])) == 0.9
    assert trial_cost(_trial(4, "queued", 1e6, 100, None)) == 0.0
    assert trial_cost(_trial(5, "completed", 1e6, 100, 9.0, source="import")) == 0.0


def test_spend_sums_cost_and_counts_per_fidelity() -> None:
    trials = [_trial(1, "completed", 20e6, 1000, 1.0), _trial(2, "completed", 20e6, 1000, 2.0),
              _trial(3, "failed", 20e6, 1000, 0.5), _trial(4, "completed", 60e6, 1000, 3.0),
              _trial(5, "running", 20e6, 4000, None, [0.25]),
              _trial(6, "cancelled", 60e6, 4000, None), _trial(7, "queued", 60e6, 4000, None)]
    out = spend_by_fidelity(trials)
    cells = {(c["model_size"], c["steps"]): c for c in out["cells"]}
    assert list(cells) == [(20e6, 1000), (20e6, 4000), (60e6, 1000), (60e6, 4000)]
    first = cells[(20e6, 1000)]
    assert first["cost"] == pytest.approx(3.5) and first["trials"] == 3
    assert first["states"] == {"completed": 2, "failed": 1} and first["trial_ids"] == [1, 2, 3]
    assert cells[(20e6, 4000)]["cost"] == 0.25
    assert cells[(60e6, 4000)]["trials"] == 1  # the cancelled trial never ran
    assert out["total"] == pytest.approx(3.5 + 0.25 + 3.0)
    assert out["model_sizes"] == [20e6, 60e6] and out["steps"] == [1000, 4000]
    assert spend_by_fidelity([]) == {"cells": [], "total": 0, "model_sizes": [], "steps": []}


def _run(api: MFMSClient, sid: int, n: int, fail_cost: float | None = None) -> None:
    for _ in range(n):
        t = api.next_trial("w", study_id=sid)
        for step in t.checkpoints:
            api.post_measurement(t.trial_id, step, fake_losses(t.mixture, step), worker_id="w")
        api.complete_trial(t.trial_id, cost=1.5, worker_id="w")
    if fail_cost is not None:
        t = api.next_trial("w", study_id=sid)
        api.fail_trial(t.trial_id, "out of memory", worker_id="w", cost=fail_cost)


def test_the_study_pages_spend_total_is_cost_spent(api: MFMSClient, raw) -> None:
    sid = api.create_study(study_body(strategy={"name": "random"})).id
    _run(api, sid, 3, fail_cost=0.75)
    board = raw.get(f"/studies/{sid}/dashboard").json()
    assert board["spend"]["total"] == pytest.approx(3 * 1.5 + 0.75)
    assert board["spend"]["total"] == pytest.approx(board["study"]["cost_spent"])
    assert sum(c["trials"] for c in board["spend"]["cells"]) == len(board["trials"])


def test_the_list_shows_the_cached_recommendation_and_never_fits(api: MFMSClient,
                                                                raw) -> None:
    a = api.create_study(study_body(strategy={"name": "random"}, budget={"trials": 5}))
    b = api.create_study(study_body(target={"model_size": 300e6, "steps": 2000}))
    _run(api, a.id, 3)
    rows = {r["id"]: r for r in raw.get("/dashboard/studies").json()["studies"]}
    assert list(rows) == [a.id, b.id]
    listed = {s.id: s for s in api.list_studies()}
    for sid, row in rows.items():
        assert row["name"] == listed[sid].name and row["state"] == listed[sid].state
        assert row["counts"] == listed[sid].counts
        assert row["cost_spent"] == pytest.approx(listed[sid].cost_spent)
        assert row["best"] is None  # nothing was recommended yet, and the list fits nothing
    assert rows[a.id]["strategy"] == "random" and rows[b.id]["strategy"] == "mfms-bo"
    assert rows[a.id]["budget"] == {"trials": 5, "cost": None}
    assert rows[a.id]["trials_run"] == 3
    assert rows[b.id]["target"] == {"model_size": 300e6, "steps": 2000}
    with raw.app.state.db.session() as s:
        row = storage.get_study(s, a.id)
        entry = raw.app.state.studies.study(row.id, row.config, row.seed)
    # the proposer built the strategy; no surrogate was built, nothing was recommended
    assert entry.surrogate is None and entry.recommendation is None

    _run(api, b.id, 3)
    recs = {sid: api.recommendation(sid) for sid in (a.id, b.id)}
    rows = {r["id"]: r for r in raw.get("/dashboard/studies").json()["studies"]}
    for sid, rec in recs.items():
        best = rows[sid]["best"]
        assert best["predicted_objective"] == pytest.approx(rec.predicted_objective)
        assert best["trials_used"] == 3
    assert rows[a.id]["best"]["interval"] is None  # random search: best observed, no model
    assert rows[b.id]["best"]["interval"] == pytest.approx(list(recs[b.id].interval))


def test_a_study_whose_config_no_longer_parses_is_still_listed(api: MFMSClient, raw) -> None:
    sid = api.create_study(study_body(strategy={"name": "random"})).id
    with raw.app.state.db.session() as s:
        study = storage.get_study(s, sid)
        study.config = {**study.config, "strategy": {"name": "retired-strategy"}, "domains": []}
    [row] = raw.get("/dashboard/studies").json()["studies"]
    assert row["id"] == sid and row["strategy"] == "retired-strategy"
    assert row["target"] is None and row["best"] is None
