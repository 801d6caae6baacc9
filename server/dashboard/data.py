"""Everything the dashboard draws: one JSON document per study page, one for the list.

The pages poll these while trials run, so they are built from the database (the source of
truth) and the cached surrogate in one pass: one GP prediction call answers the
recommendation's and the uniform mixture's predicted objectives, the per-domain slices and
the progress curve. The list never fits a surrogate: it shows the recommendation a study
page (or ``GET /studies/{id}/recommendation``) last computed, or nothing.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import torch

from mfms_bo.errors import MFMSError
from mfms_bo.space import SearchSpace
from mfms_client.schemas import PredictRequest, TrialPublic
from server import storage
from server.api.views import trial_public
from server.db import Database
from server.errors import NotFound
from server.insights import Insights
from server.models import TrialState
from server.study_cache import StudyCache

__all__ = ["study_dashboard", "studies_overview", "spend_by_fidelity", "trial_cost",
           "history_csv", "SLICE_POINTS", "MAX_SLICED_DOMAINS"]

SLICE_POINTS = 15
MAX_SLICED_DOMAINS = 16  # beyond this, slice the domains with the largest recommended weight


def study_dashboard(db: Database, insights: Insights, studies: StudyCache, study_id: int
                    ) -> dict[str, Any]:
    """The study, its trials, and what the surrogate believes (``None`` parts until the
    first losses arrive)."""
    with db.session() as s:
        study = storage.get_study(s, study_id)
        counts = storage.study_counts(s, [study_id])[study_id]
        spent = storage.study_costs(s, [study_id])[study_id]
        trials = [trial_public(t) for t in storage.list_trials(s, study_id, None)]
        config, state, name = dict(study.config), study.state, study.name
        proposal_error = {"message": study.last_proposal_error,
                          "at": _iso(study.last_proposal_error_at),
                          "failures": study.proposal_failures or 0}
        pause = ({"message": study.pause_reason, "at": _iso(study.paused_at)}
                 if study.pause_reason else None)
        space = studies.config_of(study).space
    domains = list(space.mixtures.domains)
    uniform = _uniform(space)
    out: dict[str, Any] = {
        "study": {"id": study_id, "name": name, "state": state, "config": config,
                  "counts": counts,
                  "cost_spent": spent,
                  "budget": config.get("budget"), "proposal_error": proposal_error,
                  "pause": pause},
        "domains": domains,
        "target": {"model_size": space.fidelities.target_model_size,
                   "steps": space.fidelities.target_steps},
        "trials": [t.model_dump(mode="json") for t in trials],
        "spend": spend_by_fidelity(trials),
        "uniform": uniform,
        "recommendation": None, "uniform_prediction": None, "slices": [], "progress": [],
    }
    try:
        rec = insights.recommendation(study_id)
    except NotFound:
        return out
    out["recommendation"] = rec.model_dump(mode="json")
    finished = sorted((t for t in trials if t.finished_at is not None and t.cost is not None),
                      key=lambda t: t.finished_at)  # type: ignore[arg-type, return-value]
    completed = [t for t in finished if t.state == "completed"]
    grids = {d: _grid(space, d) for d in _sliced_domains(domains, rec.mixture)}
    slice_mixtures = [_slice(space, rec.mixture, d, v) for d, grid in grids.items()
                      for v in grid]
    mixtures = [uniform, *slice_mixtures, *(t.mixture for t in completed)]
    preds = _predict(insights, study_id, mixtures)
    if preds is None:
        return out
    out["uniform_prediction"] = preds[0]
    i = 1
    for d, grid in grids.items():
        pts = preds[i:i + len(grid)]
        i += len(grid)
        out["slices"].append({"domain": d, "weight": [p["mixture"][d] for p in pts],
                              "mean": [p["predicted_objective"] for p in pts],
                              "lo": [p["interval"][0] for p in pts],
                              "hi": [p["interval"][1] for p in pts]})
    predicted = {t.id: preds[i + j]["predicted_objective"] for j, t in enumerate(completed)}
    out["progress"] = _progress(finished, predicted)
    return out


def studies_overview(db: Database, insights: Insights, studies: StudyCache
                     ) -> list[dict[str, Any]]:
    """Every study with what compares them: state, trials, spend, budget, target, and the
    best predicted target objective (``best``: the recommendation last computed in this
    process, with the number of trials it used; ``None`` where none was). Nothing is fitted
    here: the list is polled, and one GP fit per study per poll would not scale."""
    with db.session() as s:
        rows = storage.list_studies(s)
        ids = [st.id for st in rows]
        counts, costs = storage.study_counts(s, ids), storage.study_costs(s, ids)
        stored = [(st.id, dict(st.config), int(st.seed)) for st in rows]
        out = [{"id": st.id, "name": st.name, "state": st.state,
                "strategy": (st.config.get("strategy") or {}).get("name", "mfms-bo"),
                "counts": counts[st.id], "cost_spent": costs[st.id],
                "trials_run": storage.trials_run(s, st.id),
                "budget": st.config.get("budget")} for st in rows]
    for row, (study_id, config, seed) in zip(out, stored, strict=True):
        row["target"], row["best"] = _target_and_best(insights, studies, study_id, config,
                                                      seed)
    return out


def trial_cost(trial: TrialPublic) -> float:
    """What a trial spent, as ``cost_spent`` counts it: its reported cost (a failed trial
    may report one), else the last cost reported with a measurement (a running or lost
    trial), else 0; imported trials ran elsewhere and spent nothing here."""
    if trial.source == "import":
        return 0.0
    if trial.cost is not None:
        return float(trial.cost)
    reported = [m.cost for m in trial.measurements if m.cost is not None]
    return float(max(reported)) if reported else 0.0


def spend_by_fidelity(trials: list[TrialPublic]) -> dict[str, Any]:
    """Cost and trial counts per (model size, steps), cancelled trials left out (they never
    ran). ``cells`` are sorted by size then steps, each with its trials' ids and a count
    per state; ``total`` is their cost summed, which equals the study's ``cost_spent``."""
    cells: dict[tuple[float, int], dict[str, Any]] = {}
    for t in trials:
        if t.state == TrialState.CANCELLED.value:
            continue
        c = cells.setdefault((t.model_size, t.steps), {
            "model_size": t.model_size, "steps": t.steps, "cost": 0.0, "trials": 0,
            "states": {}, "trial_ids": []})
        c["cost"] += trial_cost(t)
        c["trials"] += 1
        c["states"][t.state] = c["states"].get(t.state, 0) + 1
        c["trial_ids"].append(t.id)
    ordered = [cells[k] for k in sorted(cells)]
    return {"cells": ordered, "total": sum(c["cost"] for c in ordered),
            "model_sizes": sorted({k[0] for k in cells}), "steps": sorted({k[1] for k in cells})}


def history_csv(trials: list[TrialPublic], domains: list[str]) -> str:
    """One row per measurement (a trial without any gets one row with no step): the
    learning curves are the history, and this is the flat form spreadsheets want.

    Text cells that a spreadsheet would run as a formula (a worker id such as
    ``=cmd|'/C calc'!A0``) are escaped (:func:`_cell`); numbers are written as they are.
    """
    buf = io.StringIO()
    writer = _SafeWriter(csv.writer(buf))
    writer.writerow(["trial_id", "state", "model_size", "steps", "attempt", "worker_id",
                     "started_at", "finished_at", "cost", *(f"w_{d}" for d in domains),
                     "step", "objective", *(f"loss_{d}" for d in domains)])
    for t in trials:
        head = [t.id, t.state, t.model_size, t.steps, t.attempt, t.worker_id or "",
                _iso(t.started_at), _iso(t.finished_at), "" if t.cost is None else t.cost,
                *(t.mixture.get(d, 0.0) for d in domains)]
        if not t.measurements:
            writer.writerow([*head, "", "", *("" for _ in domains)])
        for m in t.measurements:
            writer.writerow([*head, m.step, "" if m.objective is None else m.objective,
                             *(m.losses.get(d, "") for d in domains)])
    return buf.getvalue()


# -- pieces -------------------------------------------------------------------------------
# OWASP's CSV injection list: a cell starting with one of these is a formula to Excel,
# LibreOffice and Google Sheets (tab, CR and LF are skipped before the formula is read).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def _cell(value: Any) -> Any:
    """A string a spreadsheet would run as a formula, prefixed with ``'`` (shown, not run).
    Only strings: a negative number is written as a number (``-1.5``), not escaped."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class _SafeWriter:
    """``csv.writer`` whose every cell goes through :func:`_cell`, so no column - present
    or added later - can carry a formula out."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def writerow(self, row: list[Any]) -> None:
        self._writer.writerow([_cell(v) for v in row])



def _target_and_best(insights: Insights, studies: StudyCache, study_id: int,
                     config: dict[str, Any], seed: int
                     ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The study's target fidelity and its last recommendation, or None for either; a
    stored config this version no longer parses still lists its study, with neither."""
    try:
        fid = studies.study(study_id, config, seed).config.space.fidelities
        rec = insights.last_recommendation(study_id, config, seed)
    except MFMSError:
        return None, None
    target = {"model_size": fid.target_model_size, "steps": fid.target_steps}
    if rec is None:
        return target, None
    return target, {"predicted_objective": rec.predicted_objective,
                    "interval": list(rec.interval) if rec.interval else None,
                    "trials_used": rec.trials_used}


def _iso(value: Any) -> str:
    return value.isoformat() if value is not None else ""


def _uniform(space: SearchSpace) -> dict[str, float]:
    """Stratified sampling's mixture, projected onto the bounds when they exclude it."""
    k = space.k
    w = space.mixtures.project(torch.full((1, k), 1.0 / k, dtype=torch.float64))[0]
    return space.mixtures.to_dict(w)


def _sliced_domains(domains: list[str], rec: dict[str, float]) -> list[str]:
    if len(domains) <= MAX_SLICED_DOMAINS:
        return domains
    return sorted(domains, key=lambda d: -rec.get(d, 0.0))[:MAX_SLICED_DOMAINS]


def _grid(space: SearchSpace, domain: str) -> list[float]:
    i = list(space.mixtures.domains).index(domain)
    lo, hi = float(space.mixtures.lower[i]), float(space.mixtures.upper[i])
    return torch.linspace(lo, hi, SLICE_POINTS, dtype=torch.float64).tolist()


def _slice(space: SearchSpace, rec: dict[str, float], domain: str, value: float
           ) -> dict[str, float]:
    """The recommended mixture with ``domain`` set to ``value`` and the other domains
    keeping their relative proportions (projected onto the bounds)."""
    doms = list(space.mixtures.domains)
    others = sum(rec.get(d, 0.0) for d in doms if d != domain)
    w = torch.tensor([value if d == domain else
                      (1.0 - value) * (rec.get(d, 0.0) / others if others > 0
                                       else 1.0 / (len(doms) - 1))
                      for d in doms], dtype=torch.float64)
    return space.mixtures.to_dict(space.mixtures.project(w.unsqueeze(0))[0])


def _predict(insights: Insights, study_id: int, mixtures: list[dict[str, float]]
             ) -> list[dict[str, Any]] | None:
    out: list[dict[str, Any]] = []
    try:
        for i in range(0, len(mixtures), 1000):
            res = insights.predict(study_id, PredictRequest(mixtures=mixtures[i:i + 1000]))
            out.extend(p.model_dump(mode="json") for p in res.predictions)
    except NotFound:
        return None
    return out


def _progress(finished: list[TrialPublic], predicted: dict[int, float]
              ) -> list[dict[str, Any]]:
    """Cumulative cost after each finished trial, and the best target objective (as the
    current surrogate predicts it) among the mixtures completed so far. Judging every
    point by today's model keeps this one GP call instead of one refit per trial."""
    points, spent, best = [], 0.0, None
    for t in finished:
        spent += float(t.cost or 0.0)
        if t.id in predicted:
            best = predicted[t.id] if best is None else min(best, predicted[t.id])
        points.append({"trial_id": t.id, "cost": spent, "best": best})
    return points
