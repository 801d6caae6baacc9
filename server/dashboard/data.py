"""Everything the study page draws, in one JSON document.

The page polls this while trials run, so it is built from the database (the source of
truth) and the cached surrogate in one pass: one GP prediction call answers the
recommendation's and the uniform mixture's predicted objectives, the per-domain slices and
the progress curve.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import torch

from mfms_bo.space import SearchSpace
from mfms_client.schemas import PredictRequest, TrialPublic
from server import storage
from server.api.views import trial_public
from server.db import Database
from server.errors import NotFound
from server.insights import Insights
from server.study_cache import StudyCache

__all__ = ["study_dashboard", "history_csv", "SLICE_POINTS", "MAX_SLICED_DOMAINS"]

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
