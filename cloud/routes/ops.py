"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac
import sys

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nightlink.cloud.deps import SettingsDep, StoreDep
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


@router.get("/metrics", response_class=Response, responses={
    200: {"description": "Prometheus text format", "content": {"text/plain": {}}},
    401: {"description": "NIGHTLINK_METRICS_TOKEN is set and the request's bearer token is "
          "not it"},
    403: {"description": "A production server without NIGHTLINK_METRICS_TOKEN serves none"}})
def prometheus_metrics(request: Request, store: StoreDep, settings: SettingsDep):
    """Prometheus text format: ingest rate, dead letters, device lag, API latency.

    The series name every device and when it last reported, across tenants: with
    NIGHTLINK_METRICS_TOKEN set, only to a scraper sending it as a bearer token; a
    production server without one serves none (development and tests serve them openly)."""
    from nightlink.cloud import metrics

    wanted = settings.metrics_token
    if wanted:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), wanted.encode()):
            raise HTTPException(401, "Metrics need the bearer token set in "
                                "NIGHTLINK_METRICS_TOKEN.",
                                headers={"WWW-Authenticate": "Bearer"})
    elif settings.env == "production":
        raise HTTPException(403, "This server serves metrics only with NIGHTLINK_METRICS_TOKEN "
                            "set, to a scraper that sends it as a bearer token.")

    del metrics
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
