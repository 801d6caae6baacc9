"""Everything the dashboard draws: one JSON document per study page, one for the list.

The pages poll these while trials run, so they are built from the database (the source of
truth) and the cached surrogate in one pass: one GP prediction call answers the
recommendation's and the uniform mixture's predicted objectives, the per-domain slices and
the progress curve. The list never fits a surrogate: it shows the recommendation a study
page (or ``GET /studies/{id}/recommendation``) last computed, or nothing.

A study page comes in two parts the page asks for one after the other: the overview, read
from the database alone, and what the surrogate believes, whose first fit on a large study
takes far longer. Neither grows with the study beyond its trial list: past
``INLINE_TRIALS`` trials the overview carries digests (the database aggregates the
measurements) instead of every measurement, at most ``MAX_CURVES`` learning curves, and the
progress curve is judged on at most ``MAX_PROGRESS_TRIALS`` mixtures in one GP call and sent
as at most ``MAX_PROGRESS_POINTS`` points plus its improvements.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import torch

from mfms_bo.errors import MFMSError
from mfms_bo.space import SearchSpace
from mfms_client.schemas import PredictRequest, TrialPublic
from server import bulk, storage
from server.api.views import trial_public
from server.bulk import TrialDigest, TrialRecord
from server.db import Database
from server.errors import NotFound
from server.insights import Insights
from server.models import TrialState
from server.study_cache import StudyCache

__all__ = ["study_dashboard", "studies_overview", "spend_by_fidelity", "trial_cost",
           "history_csv", "iter_history_csv", "SLICE_POINTS", "MAX_SLICED_DOMAINS",
           "INLINE_TRIALS", "MAX_CURVES", "MAX_PROGRESS_TRIALS", "MAX_PROGRESS_POINTS"]

SLICE_POINTS = 15
MAX_SLICED_DOMAINS = 16  # beyond this, slice the domains with the largest recommended weight


def study_dashboard(db: Database, insights: Insights, studies: StudyCache, study_id: int,
                    part: Part = "all") -> dict[str, Any]:
    """The study page's data. ``part="overview"`` is what the database alone answers (the
    study, its trials, learning curves and spend), ``"surrogate"`` what the fitted GP
    believes (the recommendation, the uniform mixture's prediction, slices and progress;
    ``None`` parts until the first losses arrive), ``"all"`` both in one document. The
    page asks for the overview first and draws it, then for the surrogate, whose first fit
    on a large study takes far longer than reading the rows."""
    board = _read_board(db, studies, study_id, inline=part != "surrogate")
    out: dict[str, Any] = {}
    if part != "surrogate":
        out.update(board.overview)
    if part != "overview":
        out.update(_surrogate(insights, study_id, board))
    return out


# -- the study page's pieces --------------------------------------------------------------
Part = Literal["all", "overview", "surrogate"]
INLINE_TRIALS = 200  # up to this many trials, the page gets every measurement at once
MAX_CURVES = 500  # learning curves drawn at most, evenly spaced in creation order
MAX_PROGRESS_TRIALS = 750  # completed mixtures the progress curve is judged on at most
MAX_PROGRESS_POINTS = 1000  # points of the progress curve sent at most


@dataclass
class _Board:
    """One pass over a study's rows: the overview document and what the surrogate's part
    needs (its space and the finished trials, as light tuples)."""

    overview: dict[str, Any]
    space: SearchSpace
    # (id, finished_at, cost, completed, mixture, (model_size, steps), final objective)
    finished: list[tuple[int, datetime, float, bool, dict[str, float], tuple[float, int],
                         float | None]] = field(default_factory=list)


def _summary(t: TrialRecord) -> dict[str, Any]:
    """A trial of a small study as the page reads it: as ``GET /trials/{id}`` gives it,
    measurements included, with the two flags :func:`_digest_summary` adds."""
    out = trial_public(t).model_dump(mode="json")  # type: ignore[arg-type]
    out["n_measurements"] = len(t.measurements)
    out["has_proportions"] = any(m.proportions for m in t.measurements)
    return out


def _digest_summary(t: TrialDigest) -> dict[str, Any]:
    """A trial of a large study as its table row and menus read it: the fields shown,
    its final objective, how many measurements it has and whether any carried
    proportions, leaving out empty ones (null, false: a tenth of 10,000 rows' bytes); the
    page fetches a trial's measurements (``GET /trials/{id}``) when it draws that trial."""
    out = {"id": t.id, "state": t.state, "mixture": t.mixture, "model_size": t.model_size,
           "steps": t.steps, "worker_id": t.worker_id,
           "started_at": _iso_or_none(t.started_at),
           "finished_at": _iso_or_none(t.finished_at), "cost": t.cost,
           "fail_reason": t.fail_reason, "objective": t.final_objective,
           "n_measurements": t.n_measurements, "has_proportions": t.has_proportions}
    return {k: v for k, v in out.items() if v is not None and v is not False}


def _digest_cost(t: TrialDigest) -> float:
    """:func:`trial_cost` of a digest."""
    if t.source == "import":
        return 0.0
    if t.cost is not None:
        return float(t.cost)
    return float(t.measured_cost) if t.measured_cost is not None else 0.0


def _read_board(db: Database, studies: StudyCache, study_id: int, inline: bool) -> _Board:
    """The study's rows, read once: every measurement for a study of up to
    ``INLINE_TRIALS`` trials, digests (no per-domain losses) beyond."""
    with db.session() as s:
        study = storage.get_study(s, study_id)
        counts = storage.study_counts(s, [study_id])[study_id]
        spent = storage.study_costs(s, [study_id])[study_id]
        config, state, name = dict(study.config), study.state, study.name
        proposal_error = {"message": study.last_proposal_error,
                          "at": _iso(study.last_proposal_error_at),
                          "failures": study.proposal_failures or 0}
        pause = ({"message": study.pause_reason, "at": _iso(study.paused_at)}
                 if study.pause_reason else None)
        space = studies.config_of(study).space
        inline = inline and sum(counts.values()) <= INLINE_TRIALS
        board = _Board({}, space)
        digests = bulk.trial_digests(s, study_id)
        rows = ([_summary(r) for batch in bulk.iter_trial_records(s, study_id) for r in batch]
                if inline else [_digest_summary(t) for t in digests])
        drawn = _evenly([t for t in digests if t.n_objectives], MAX_CURVES)
        points = bulk.curves(s, [t.id for t in drawn])
    curves = [{"id": t.id, "model_size": t.model_size, "step": points[t.id][0],
               "objective": points[t.id][1]} for t in drawn if t.id in points]
    spend = [(t.state, t.model_size, t.steps, t.id, _digest_cost(t)) for t in digests]
    board.finished = [(t.id, t.finished_at, float(t.cost), t.state == "completed", t.mixture,
                       (t.model_size, t.steps), t.final_objective)
                      for t in digests if t.finished_at is not None and t.cost is not None]
    board.overview = {
        "study": {"id": study_id, "name": name, "state": state, "config": config,
                  "counts": counts, "cost_spent": spent, "budget": config.get("budget"),
                  "proposal_error": proposal_error, "pause": pause},
        "domains": list(space.mixtures.domains),
        "target": {"model_size": space.fidelities.target_model_size,
                   "steps": space.fidelities.target_steps},
        "trials": rows, "measurements_inline": inline,
        "curves": {"trials": curves, "of": sum(1 for t in digests if t.n_objectives)},
        "spend": _spend(spend),
        "uniform": _uniform(space),
    }
    return board


def _evenly(items: list[Any], cap: int) -> list[Any]:
    """At most ``cap`` of ``items``, evenly spaced, the first and last always kept."""
    if len(items) <= cap:
        return items
    return [items[round(i * (len(items) - 1) / (cap - 1))] for i in range(cap)]


def _surrogate(insights: Insights, study_id: int, board: _Board) -> dict[str, Any]:
    space = board.space
    domains = list(space.mixtures.domains)
    uniform = _uniform(space)
    out: dict[str, Any] = {"recommendation": None, "uniform_prediction": None,
                           "slices": [], "progress": []}
    try:
        rec = insights.recommendation(study_id)
    except NotFound:
        return out
    out["recommendation"] = rec.model_dump(mode="json")
    finished = sorted(board.finished, key=lambda f: f[1])
    grids = {d: _grid(space, d) for d in _sliced_domains(domains, rec.mixture)}
    slice_mixtures = [_slice(space, rec.mixture, d, v) for d, grid in grids.items()
                      for v in grid]
    # One prediction call (a request holds at most 1000 mixtures; each call reads the
    # study's history again): the uniform mixture, the slices, then the judged trials.
    judged = _judged(finished, min(MAX_PROGRESS_TRIALS, 1000 - 1 - len(slice_mixtures)))
    mixtures = [uniform, *slice_mixtures, *(f[4] for f in judged)]
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
    predicted = {f[0]: preds[i + j]["predicted_objective"] for j, f in enumerate(judged)}
    out["progress"] = _progress(finished, predicted)
    return out


def _judged(finished: list, cap: int) -> list:
    """The completed trials the progress curve judges: all of them up to ``cap``; beyond,
    the best by their own final objective within each fidelity (model size, steps), taken
    in turn across fidelities, so every fidelity's best mixtures are judged and one GP call
    of at most ``cap`` points answers however many trials completed."""
    completed = [f for f in finished if f[3]]
    if len(completed) <= cap:
        return completed
    cells: dict[tuple[float, int], list] = {}
    for f in completed:
        cells.setdefault(f[5], []).append(f)
    ranked = [sorted(c, key=lambda f: math.inf if f[6] is None else f[6])
              for c in cells.values()]
    picked: list = []
    for rank in range(max(len(c) for c in ranked)):
        picked += [c[rank] for c in ranked if rank < len(c)]
        if len(picked) >= cap:
            break
    keep = {f[0] for f in picked[:cap]}
    return [f for f in completed if f[0] in keep]


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


def spend_by_fidelity(trials: Iterable[TrialPublic]) -> dict[str, Any]:
    """Cost and trial counts per (model size, steps), cancelled trials left out (they never
    ran). ``cells`` are sorted by size then steps, each with its trials' ids and a count
    per state; ``total`` is their cost summed, which equals the study's ``cost_spent``."""
    return _spend((t.state, t.model_size, t.steps, t.id, trial_cost(t)) for t in trials)


def _spend(rows: Iterable[tuple[str, float, int, int, float]]) -> dict[str, Any]:
    """:func:`spend_by_fidelity` of ``(state, model_size, steps, id, cost)`` rows."""
    cells: dict[tuple[float, int], dict[str, Any]] = {}
    for state, model_size, steps, tid, cost in rows:
        if state == TrialState.CANCELLED.value:
            continue
        c = cells.setdefault((model_size, steps), {
            "model_size": model_size, "steps": steps, "cost": 0.0, "trials": 0,
            "states": {}, "trial_ids": []})
        c["cost"] += cost
        c["trials"] += 1
        c["states"][state] = c["states"].get(state, 0) + 1
        c["trial_ids"].append(tid)
    ordered = [cells[k] for k in sorted(cells)]
    return {"cells": ordered, "total": sum(c["cost"] for c in ordered),
            "model_sizes": sorted({k[0] for k in cells}), "steps": sorted({k[1] for k in cells})}


def history_csv(trials: list[TrialPublic], domains: list[str]) -> str:
    """One row per measurement (a trial without any gets one row with no step): the
    learning curves are the history, and this is the flat form spreadsheets want.

    Text cells that a spreadsheet would run as a formula (a worker id such as
    ``=cmd|'/C calc'!A0``) are escaped (:func:`_cell`); numbers are written as they are.
    """
    return "".join(iter_history_csv([trials], domains))


def iter_history_csv(batches: Iterable[Sequence[TrialPublic | TrialRecord]],
                     domains: list[str]) -> Iterator[str]:
    """:func:`history_csv` a batch of trials at a time (the header, then each batch's
    rows), for a response that streams a study of any size."""
    buf = io.StringIO()
    writer = _SafeWriter(csv.writer(buf))
    writer.writerow(["trial_id", "state", "model_size", "steps", "attempt", "worker_id",
                     "started_at", "finished_at", "cost", *(f"w_{d}" for d in domains),
                     "step", "objective", *(f"loss_{d}" for d in domains)])
    for trials in batches:
        for t in trials:
            head = [t.id, t.state, t.model_size, t.steps, t.attempt, t.worker_id or "",
                    _iso(t.started_at), _iso(t.finished_at), "" if t.cost is None else t.cost,
                    *(t.mixture.get(d, 0.0) for d in domains)]
            if not t.measurements:
                writer.writerow([*head, "", "", *("" for _ in domains)])
            for m in t.measurements:
                writer.writerow([*head, m.step, "" if m.objective is None else m.objective,
                                 *(m.losses.get(d, "") for d in domains)])
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue()


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


def _progress(finished: list, predicted: dict[int, float]) -> list[dict[str, Any]]:
    """Cumulative cost after each finished trial, and the best target objective (as the
    current surrogate predicts it) among the mixtures completed so far. Judging every
    point by the current model keeps this one GP call instead of one refit per trial. Past
    ``MAX_PROGRESS_POINTS`` only the points where the best improves, the last one and an
    even spread of the rest are sent: the curve is a staircase, drawn the same."""
    points, spent, best = [], 0.0, None
    for f in finished:
        spent += f[2]
        if f[0] in predicted:
            best = predicted[f[0]] if best is None else min(best, predicted[f[0]])
        points.append({"trial_id": f[0], "cost": spent, "best": best})
    if len(points) <= MAX_PROGRESS_POINTS:
        return points
    steps = {i for i in range(1, len(points)) if points[i]["best"] != points[i - 1]["best"]}
    spread = set(range(0, len(points), math.ceil(len(points) / MAX_PROGRESS_POINTS)))
    return [p for i, p in enumerate(points) if i in steps or i in spread
            or i == len(points) - 1]


def _iso_or_none(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
