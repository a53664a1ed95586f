"""The cloud service: one FastAPI app, stateless, over the repository.

`create_app(settings)` wires the store, middleware and every router. Tenants are addressed
by path (`/t/{tenant}/api/v1/…`) or, when `tenant_domain` is set, by Host
(`{tenant}.{tenant_domain}/api/v1/…`), which is rewritten to the path form.
"""

from __future__ import annotations

import logging
import os
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from nightlink import __version__
from nightlink.cloud import metrics
from nightlink.cloud.auth import AuthError
from nightlink.cloud.config import Settings, subdomain_tenant
from nightlink.cloud.session import SessionRenewal
from nightlink.cloud.store import ConflictError, NotFoundError, Store

_LOGGER = logging.getLogger("nightlink.cloud.access")


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    from nightlink.cloud import live
    from nightlink.cloud.nightscout_site import CloudDirectory
    from nightlink.cloud.routes import (
        accounts,
        credentials,
        data,
        devices,
        export,
        ops,
        patients,
        portal,
        sessions,
        sharing,
        tenants,
    )
    from nightlink.cloud.routes import morning as morning_pages
    from nightlink.nightscout.app import mount as mount_nightscout
    from nightlink.nightscout.hub import Hub
    from nightlink.nightscout.limits import Limits

    app = FastAPI(
        title="Nightlink cloud",
        version=__version__,
        description="History, Nightscout-compatible API, accounts and live updates for "
        "Nightlink bedside nodes. Tenants are one patient's space each.",
        # Swagger UI and ReDoc load their scripts from a CDN into the portal's origin, where
        # the session cookies are: development only. /openapi.json is always served.
        docs_url="/docs" if settings.env == "development" else None,
        redoc_url="/redoc" if settings.env == "development" else None,
    )
    app.state.settings = settings
    app.state.store = store or Store.open(settings.database_url)
    app.state.store.db.loop_guard = True  # its statements run in worker threads (sql.off_loop)
    app.state.started = time.time()
    from nightlink.cloud.auth import RateLimiter

    app.state.login_limiter = RateLimiter(settings.login_attempts_per_minute)
    app.state.signup_limiter = RateLimiter(settings.signups_per_hour, window_s=3600.0)
    directory = CloudDirectory(app.state.store, settings)
    hub = Hub(directory)
    app.state.events = directory.events = hub
    app.state.store.notify = hub.changed
    # The Nightscout APIs (what clocks and apps poll) are matched first.
    state = mount_nightscout(app, directory, hub=hub,
                             cors_origin=settings.nightscout_cors_origin or None,
                             limits=Limits.from_settings(settings))  # body size, upload rate
    app.state.store.access_listeners.append(state.forget)
    for module in (sessions, accounts, sharing, tenants, credentials, devices, export, patients,
                   data, ops, live, portal):
        _docstring_summaries(module.router)
        app.include_router(module.router)
    live.install(app)  # the alert worker runs with the app's lifespan
    portal.install(app)  # portal pages send browsers without a session to sign in
    app.include_router(sharing.pages)  # the pages mailed links open
    app.include_router(morning_pages.router)  # last night's card
    from nightlink.cloud.routes import app as patient_app

    app.include_router(patient_app.router)  # the patient and family app at /app

    app.add_middleware(RequestContext, domain=settings.tenant_domain.lower().strip("."))
    app.add_middleware(SessionRenewal, store=app.state.store, settings=settings)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        """One 422 shape for the whole API: {"detail": one sentence naming the field}."""
        err = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "the request"
        message = str(err.get("msg", "is not valid")).removeprefix("Value error, ")
        return JSONResponse({"detail": f"{where}: {message}."}, status_code=422)

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError):
        return JSONResponse({"detail": str(exc)}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    bootstrap_admin(app.state.store, settings)
    return app


_TENANT_PATHS = ("/api/v1", "/api/v2", "/api/v3", "/api/versions", "/pebble")


class RequestContext:
    """Plain ASGI middleware (no per-request task group): tenant subdomains, a request id,
    latency metrics and an access log line."""

    def __init__(self, app, domain: str = ""):
        self.app = app
        self.domain = domain

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = dict(scope["headers"])
        if self.domain:
            tenant = subdomain_tenant(headers.get(b"host", b"").decode("latin-1"), self.domain)
            if tenant and (path.startswith(_TENANT_PATHS) or path in ("", "/")):  # or its address
                scope = dict(scope, path=f"/t/{tenant}{path}")
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = [500]

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                # nosniff: a JSON answer or a text download holding stored text is never
                # read by a browser as a page or a script, whatever the text looks like
                message = dict(message, headers=[*message.get("headers", []),
                                                 (b"x-request-id", rid.encode("latin-1")),
                                                 (b"x-content-type-options", b"nosniff")])
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.API_LATENCY.labels(scope["method"], route).observe(elapsed)
            _LOGGER.info("%s %s %d %.1fms rid=%s", scope["method"], route, status[0],
                         elapsed * 1000, rid)


def _docstring_summaries(router) -> None:
    """Give every route the first line of its docstring as its OpenAPI summary."""
    from fastapi.routing import APIRoute

    for route in router.routes:
        if isinstance(route, APIRoute) and route.summary is None and route.endpoint.__doc__:
            route.summary = route.endpoint.__doc__.strip().splitlines()[0]


def app_from_environment() -> FastAPI:
    """The app from NIGHTLINK_* settings and NIGHTLINK_ENV_FILE's file, as `cloud
    --env-file` gave it (uvicorn's factory for several worker processes)."""
    from nightlink.cloud.config import load_settings

    return served(create_app(load_settings(env_file=os.environ.get("NIGHTLINK_ENV_FILE") or None)))


def served(app: FastAPI) -> FastAPI:
    """The app of a serving process, its start-up objects (modules, routes, settings, the
    app) kept out of the cyclic collector's passes (gc.freeze, after collecting what is
    already garbage): they live as long as the process, and a full pass that scanned them
    again paused every request under way (`bench api`: p99 80-140 ms, frozen 36-58)."""
    import gc

    gc.collect()
    gc.freeze()
    return app


def bootstrap_admin(store: Store, settings: Settings) -> None:
    """Create the first administrator from the settings when there is no user yet."""
    from nightlink.cloud.auth import hash_password

    if not settings.admin_email or not settings.admin_password:
        return
    if store.has_users():
        return
    user = store.create_user(settings.admin_email, hash_password(settings.admin_password),
                             name="Administrator", is_admin=True)
    store.audit("admin.bootstrap", actor=user["id"], email=user["email"])
