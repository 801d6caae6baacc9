"""Dashboard routes: two HTML pages, their static files, and the JSON/CSV they read.

The pages are shells (no study data in the HTML): the browser script fetches JSON, with
the bearer token the user typed in when reads are protected, and writes every name with
``textContent``, so a study or domain called ``<script>`` is shown, never run. Plotly's
JavaScript comes from the ``plotly`` Python package installed with the project: the
dashboard works offline.

The pages change studies (pause, resume, stop, budget) through the API's own admin routes,
with the admin token the user types in; nothing here writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates

from server import bulk, storage
from server.api.deps import DbDep, InsightsDep, ReadAuth, StudiesDep, StudyId
from server.api.views import trial_public
from server.dashboard.data import Part, iter_history_csv, studies_overview, study_dashboard
from server.errors import NotFound

__all__ = ["router"]

router = APIRouter(tags=["dashboard"])
_HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(_HERE / "templates"))
_STATIC = {"app.js": "text/javascript", "style.css": "text/css"}


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(request: Request) -> Response:
    return templates.TemplateResponse(request, "index.html", {"page": "index"})


@router.get("/ui/studies/{study_id}", response_class=HTMLResponse, include_in_schema=False)
def study_page(request: Request, study_id: int) -> Response:
    return templates.TemplateResponse(request, "study.html",
                                      {"page": "study", "study_id": study_id})


@router.get("/ui/static/{name}", include_in_schema=False)
def static_file(name: str) -> Response:
    if name == "plotly.min.js":
        return FileResponse(_plotly_js(), media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})
    if name not in _STATIC:
        raise NotFound(f"no static file {name!r}")
    return FileResponse(_HERE / "static" / name, media_type=_STATIC[name])


@router.get("/dashboard/studies", dependencies=[ReadAuth])
def studies_data(db: DbDep, insights: InsightsDep, studies: StudiesDep) -> Response:
    """Every study with its state, trials, spend, budget, target and best predicted target
    objective (the last recommendation computed; null where none was): the list page."""
    data = {"studies": studies_overview(db, insights, studies)}
    return Response(json.dumps(data, allow_nan=False, default=str),
                    media_type="application/json")


@router.get("/studies/{study_id}/dashboard", dependencies=[ReadAuth])
def dashboard_data(study_id: StudyId, db: DbDep, insights: InsightsDep, studies: StudiesDep,
                   part: Part = Query("all", description=  # noqa: B008
                                      "overview: study, trials, curves and spend (the "
                                      "database alone); surrogate: recommendation, "
                                      "uniform's prediction, slices and progress (a GP "
                                      "fit); all: both")) -> Response:
    """Study, trials, learning curves, spend, recommendation, uniform mixture's
    prediction, per-domain slices of the surrogate at the target, and best-so-far vs
    cumulative cost."""
    data = study_dashboard(db, insights, studies, study_id, part)
    return Response(json.dumps(data, allow_nan=False, default=str),
                    media_type="application/json")


@router.get("/studies/{study_id}/history.csv", dependencies=[ReadAuth],
            response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}})
def history_as_csv(study_id: StudyId, db: DbDep, studies: StudiesDep) -> Response:
    """Every measurement of every trial, one row each, with the trial's fields; streamed a
    batch of trials at a time."""
    with db.session() as s:
        study = storage.get_study(s, study_id)
        domains = list(studies.config_of(study).space.mixtures.domains)

    def body() -> Iterator[str]:
        with db.session() as s:
            yield from iter_history_csv(bulk.iter_trial_records(s, study_id), domains)

    return StreamingResponse(body(), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="study-{study_id}-history.csv"'})


@router.get("/studies/{study_id}/history.json", dependencies=[ReadAuth],
            response_class=StreamingResponse,
            responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}})
def history_as_json(study_id: StudyId, db: DbDep) -> Response:
    """The trials with their measurements, as ``GET /studies/{id}/trials`` gives them;
    streamed a batch of trials at a time."""
    with db.session() as s:
        storage.get_study(s, study_id)

    def body() -> Iterator[str]:
        yield f'{{"study_id": {int(study_id)}, "trials": ['
        first = True
        with db.session() as s:
            for batch in bulk.iter_trial_records(s, study_id):
                text = ", ".join(json.dumps(trial_public(t).model_dump(mode="json"))  # type: ignore[arg-type]
                                 for t in batch)
                yield text if first else ", " + text
                first = False
        yield "]}"

    return StreamingResponse(body(), media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="study-{study_id}-history.json"'})
