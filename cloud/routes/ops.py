"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nightlink.cloud.deps import StoreDep
from nightlink.sql import DatabaseError

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz():
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The database cannot be reached"}})
def readyz(store: StoreDep):
    """The process can reach its database."""
    try:
        store.ping()
    except DatabaseError as exc:
        return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
    return {"status": "ready", "schema": store.version}


@router.get("/metrics", response_class=Response, responses={200: {
    "description": "Prometheus text format", "content": {"text/plain": {}}}})
def prometheus_metrics(store: StoreDep):
    """Prometheus text format: ingest rate, dead letters, device lag, API latency."""
    from nightlink.cloud import metrics

    del metrics
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
