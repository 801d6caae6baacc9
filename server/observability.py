"""Observability: Prometheus metrics (``GET /metrics``) and structured logs.

Metrics live in a :class:`prometheus_client.CollectorRegistry` owned by one app instance
(``create_app`` may run many times in one process; nothing goes to the global registry).

* Database gauges (``mfms_trials``, ``mfms_studies``, ``mfms_workers_active``,
  ``mfms_workers_idle``, ``mfms_database_up``) are computed from the database at scrape time:
  the database is the source of truth, so every server process reports the same values.
* Latency histograms and counters (``mfms_http_request_duration_seconds``,
  ``mfms_proposal_duration_seconds``, ``mfms_proposals_total``,
  ``mfms_proposal_failures_total``, ``mfms_proposed_trials_total``,
  ``mfms_gp_fit_duration_seconds``) and the ``process_*`` / ``python_*`` series are **per
  server process**: with ``mfms serve --workers N`` a scrape of the shared port reaches one
  process at random. Scrape each process (one port each), or aggregate with ``sum by``
  across them; the database gauges must then not be summed (take ``max``).

Logs: :class:`ObservabilityMiddleware` times every request and writes one access line per
request on the ``mfms.access`` logger at INFO (fields ``method``, ``route``, ``path``,
``status``, ``duration_ms``, and ``trial_id`` / ``study_id`` when the route has them); how
lines are written (``MFMS_LOG_FORMAT=text|json``) is set up in :mod:`server.logs`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from sqlalchemy import func, select
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mfms_bo.strategies import Strategy
from mfms_bo.strategies.bo import SurrogateFit
from server import storage
from server.config import Settings
from server.db import Database, utcnow
from server.models import Study, StudyState, Trial, TrialState, Worker

__all__ = ["Metrics", "ObservabilityMiddleware", "DatabaseCollector", "UNMATCHED", "leaf_routes"]

log = logging.getLogger("mfms.metrics")
access_log = logging.getLogger("mfms.access")

# /next-trial may wait next_trial_wait_seconds (<= 120 s) plus a GP fit.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                120.0)
FIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
               300.0, 600.0)
UNMATCHED = "unmatched"  # the route label of a request no route matches (bounded cardinality)


class Metrics:
    """The metrics of one app instance and the registry they are exposed from."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_duration = Histogram(
            "mfms_http_request_duration_seconds",
            "HTTP request latency by method, route template and status class (per process)",
            ["method", "route", "status_class"], buckets=HTTP_BUCKETS, registry=r)
        self.proposal_duration = Histogram(
            "mfms_proposal_duration_seconds",
            "Seconds of one strategy propose call made by the proposer (per process)",
            ["strategy"], buckets=FIT_BUCKETS, registry=r)
        self.proposals = Counter(
            "mfms_proposals", "Strategy propose calls that returned (per process)",
            ["strategy"], registry=r)
        self.proposal_failures = Counter(
            "mfms_proposal_failures",
            "Strategy propose calls that raised: reason=error (a random trial was proposed "
            "instead) or capability (no size the worker can run) (per process)",
            ["strategy", "reason"], registry=r)
        self.proposed_trials = Counter(
            "mfms_proposed_trials", "Trial specs returned by strategy propose calls "
            "(per process)", ["strategy"], registry=r)
        self.gp_fit_duration = Histogram(
            "mfms_gp_fit_duration_seconds",
            "Seconds of one GP fit made while proposing: kind=optimize (hyperparameters "
            "optimised) or condition (warm-started hyperparameters kept) (per process)",
            ["strategy", "kind"], buckets=FIT_BUCKETS, registry=r)
        r.register(DatabaseCollector(db, settings))
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape body and its content type, negotiated from the Accept header
        (Prometheus text format unless OpenMetrics is asked for)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def observe_propose(self, strategy: Strategy, seconds: float, *,
                        fits: Sequence[SurrogateFit] = (), proposed: int | None = None,
                        failure: str | None = None) -> None:
        """Record one proposal of ``strategy`` and the surrogate builds it made (builds
        served from the strategy's memo took no time and are not observed)."""
        name = strategy.name
        self.proposal_duration.labels(name).observe(seconds)
        if failure is None:
            self.proposals.labels(name).inc()
            self.proposed_trials.labels(name).inc(proposed or 0)
        else:
            self.proposal_failures.labels(name, failure).inc()
        for fit in fits:
            if not fit.cached:
                kind = "optimize" if fit.optimized else "condition"
                self.gp_fit_duration.labels(name, kind).observe(fit.seconds)


class DatabaseCollector:
    """Gauges read from the database at each scrape (right across server processes)."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def describe(self) -> list[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("mfms_database_up",
                               "1 when this scrape could read the database, else 0")
        since = utcnow() - timedelta(seconds=self.settings.worker_idle_window_seconds)
        try:
            with self.db.session() as s:
                studies = s.execute(select(Study.id, Study.name, Study.state)
                                    .order_by(Study.id)).all()
                counts = s.execute(select(Trial.study_id, Trial.state, func.count())
                                   .group_by(Trial.study_id, Trial.state)).all()
                active = int(s.scalar(select(func.count()).select_from(Worker)
                                      .where(Worker.last_seen >= since)) or 0)
                idle = storage.idle_workers(s, since=since)
        except Exception as exc:  # a scrape must still answer
            log.warning("metrics: database unreadable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        by_study = {(sid, state): int(n) for sid, state, n in counts}
        trials = GaugeMetricFamily("mfms_trials", "Trials by study and state (database)",
                                   labels=["study", "study_name", "state"])
        study_states = dict.fromkeys((st.value for st in StudyState), 0)
        for sid, name, state in studies:
            study_states[state] = study_states.get(state, 0) + 1
            for ts in TrialState:
                trials.add_metric([str(sid), name, ts.value], by_study.get((sid, ts.value), 0))
        yield trials
        fam = GaugeMetricFamily("mfms_studies", "Studies by state (database)", labels=["state"])
        for state, n in study_states.items():
            fam.add_metric([state], n)
        yield fam
        yield GaugeMetricFamily(
            "mfms_workers_active", "Workers seen by /next-trial within "
            "MFMS_WORKER_IDLE_WINDOW_SECONDS (database)", value=active)
        yield GaugeMetricFamily(
            "mfms_workers_idle", "Active workers that hold no running trial (database)",
            value=idle)


class ObservabilityMiddleware:
    """Times each HTTP request into ``mfms_http_request_duration_seconds`` (labelled by the
    route *template*, never the raw path) and writes one ``mfms.access`` line per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, router: Any = None) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router  # to name the route of requests refused before routing (413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - t0
            method = scope.get("method", "")
            route, params = self._route(scope)
            self.metrics.http_duration.labels(method, route, f"{status // 100}xx"
                                              ).observe(seconds)
            extra: dict[str, Any] = {"method": method, "route": route, "path": scope.get("path"),
                                     "status": status, "duration_ms": round(seconds * 1e3, 2)}
            for key in ("trial_id", "study_id"):
                if key in params:
                    value = params[key]
                    extra[key] = int(value) if str(value).isdigit() else value
            access_log.info("%s %s %d %.1f ms", method, scope.get("path"), status,
                            seconds * 1e3, extra=extra)

    def _route(self, scope: Scope) -> tuple[str, dict]:
        route = scope.get("route")
        params = scope.get("path_params") or {}
        if route is None and self.router is not None:  # refused before routing, or a 404
            probe = dict(scope)
            for candidate in leaf_routes(self.router):
                match, child = candidate.matches(probe)
                if match is Match.FULL:
                    route, params = candidate, child.get("path_params") or {}
                    break
        if route is None:
            return UNMATCHED, params
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        return str(template or UNMATCHED), params


def leaf_routes(router: Any) -> Iterator[Any]:
    """The routes of ``router`` with a path, looking inside included routers."""
    for r in getattr(router, "routes", ()):
        inner = getattr(r, "original_router", None)  # FastAPI's wrapper of include_router
        if inner is not None:
            yield from leaf_routes(inner)
        elif getattr(r, "path", None) is not None and hasattr(r, "matches"):
            yield r
