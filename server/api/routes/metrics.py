"""``GET /metrics``: Prometheus exposition of this app's registry (server/observability.py).

Trial, study and worker gauges are read from the database at scrape time; latency histograms
and counters are per server process (scrape each process, or aggregate). Protected like any
other read (``MFMS_PROTECT_READS``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from server.api.deps import ReadAuth

router = APIRouter(tags=["observability"])


@router.get("/metrics", dependencies=[ReadAuth], response_class=Response,
            responses={200: {"content": {"text/plain": {}},
                             "description": "Prometheus text exposition format"}})
def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)
