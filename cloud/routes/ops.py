"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import sys

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nightlink.cloud.deps import StoreDep
from nightlink.sql import DatabaseError

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz():
    """The process is up (liveness: it answers, whatever its database or broker do)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {
    "description": "Not ready: the database does not answer, or the process's ingest is "
    "down, stalled, cannot write, or is not connected to its broker; `detail` says which"}})
def readyz(store: StoreDep):
    """Ready: the database answers and the ingest worker, if any, consumes and is connected.

    503 with the reason otherwise (a load balancer stops sending this process requests)."""
    try:
        store.ping()
    except DatabaseError as exc:
        return JSONResponse({"status": "unavailable",
                             "detail": f"The database does not answer ({exc})."},
                            status_code=503)
    # A process that never started an ingest worker has not imported its module.
    ingest = sys.modules.get("nightlink.cloud.ingest")
    problems = ingest.readiness_problems(store) if ingest is not None else []
    if problems:
        return JSONResponse({"status": "unavailable", "detail": problems[0] + ".",
                             "problems": problems}, status_code=503)
    return {"status": "ready", "schema": store.version}


@router.get("/metrics", response_class=Response, responses={200: {
    "description": "Prometheus text format", "content": {"text/plain": {}}}})
def prometheus_metrics(store: StoreDep):
    """Prometheus text format: ingest rate, dead letters, device lag, API latency."""
    from nightlink.cloud import metrics

    del metrics
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
