"""Nightscout API v2: properties, authorization (JWTs, subjects, roles) and Loop's remote
notifications. v2 also serves all of v1 at /api/v2 (see api_v1.install).

`POST /api/v2/notifications/loop` is stored as a treatment and announced on the live feeds;
Nightlink does not push it to the Loop phone through Apple's push service (docs/nightscout.md).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response

from nightlink.nightscout import auth, documents, properties
from nightlink.nightscout.http import (
    NSError,
    bad_request,
    client_address,
    granting_secret_sha1,
    json_response,
    need,
    read_json,
    site_key,
    state_of,
    too_many_failures,
    unauthorized,
)

router = APIRouter(tags=["nightscout v2"])
_JSON = {"content": {"application/json": {}}}
_ERRORS = {401: {"description": "No credential allows this", **_JSON},
           404: {"description": "No such site or subject", **_JSON},
           429: {"description": "Too many failed credentials from this address", **_JSON}}
LOOP_EVENTS = ("Temporary Override", "Temporary Override Cancel", "Remote Carbs Entry",
               "Remote Bolus Entry")


# What v2 adds to v1, as the paths under /api/v2 that start with them (v2's other paths,
# notifications/ack among them, are v1's copies).
ROUTES = ("properties", "authorization", "notifications/loop")


def own_route(rest: str) -> bool:
    """Whether a path under /api/v2/ (without that prefix) is one of v2's own routes."""
    return any(rest == r or rest.startswith(r + "/") for r in ROUTES)


def install(app: FastAPI) -> None:
    app.include_router(router, prefix="/api/v2")


@router.get("/properties", responses={200: {"description": "Every property", **_JSON},
                                      **_ERRORS}, summary="Properties.")
@router.get("/properties/{names}", responses={200: {"description": "The named properties",
            **_JSON}, **_ERRORS}, summary="Some properties.")
async def get_properties(request: Request, names: str | None = None) -> Response:
    """bgnow, delta, direction, iob, cob, basal, loop, openaps, pump, upbat, cage, sage, …;
    `/properties/iob,cob` for some of them."""
    site, _ = await need(request, "api:entries:read")
    await need(request, "api:treatments:read")
    wanted = [n for n in names.split("/")[0].split(",") if n] if names else None
    mmol = site.units == "mmol"
    now = int(time.time() * 1000)
    result = await run_in_threadpool(properties.compute, site.docs, now, mmol=mmol,
                                     names=wanted)
    if "pretty" in request.query_params:
        import json

        return Response(json.dumps(result, indent=2, ensure_ascii=False),
                        media_type="application/json")
    return json_response(result)


@router.get("/authorization/request/{token}", responses={
    200: {"description": "A JWT for the access token", **_JSON}, **_ERRORS},
    summary="Exchange an access token for a JWT.")
async def authorization_request(token: str, request: Request) -> Response:
    """{token, sub, permissionGroups, iat, exp}: a JWT valid for 8 hours for an access token
    (or a JWT this site issued)."""
    state = state_of(request)
    key = site_key(request)
    address = client_address(request)
    wait, stamp = state.failures.attempt(address)  # counted first: see resolve_sync
    if wait:
        raise too_many_failures(wait)
    presented = auth.normalise_presented(token)
    if auth.looks_like_jwt(presented):
        claims = auth.read_jwt(state.directory.jwt_secret, presented)
        presented = claims["accessToken"] if claims else ""
    try:
        grant = await run_in_threadpool(state.directory.credential, presented, key) \
            if presented else None
    except Exception:  # the lookup failed (a database away): not a wrong token
        state.failures.forgive(address, stamp)
        raise
    if grant is None or grant.kind != "token":
        raise unauthorized("The access token is not valid here.")
    state.failures.forgive(address, stamp)
    issued = auth.issue_jwt(state.directory.jwt_secret, grant.site_key, presented)
    return json_response({"token": issued["token"], "sub": grant.subject,
                          "permissionGroups": [list(grant.permissions.patterns)],
                          "iat": issued["iat"], "exp": issued["exp"]})


@router.get("/authorization/subjects", responses={200: {"description": "The subjects", **_JSON},
            **_ERRORS}, summary="Subjects (access tokens).")
async def list_subjects(request: Request) -> Response:
    """The site's subjects: names and roles. A random token is shown only when created; one
    made from the API secret (as Nightscout makes every token) is shown to that secret."""
    site, _ = await need(request, "admin:api:subjects:read")
    sha1 = await run_in_threadpool(granting_secret_sha1, request)
    subjects = await run_in_threadpool(site.subjects.list)
    out = []
    for s in subjects:
        token = s.derived_token(sha1)
        out.append(s.public() | ({"accessToken": token} if token else {}))
    return json_response(out)


@router.post("/authorization/subjects", responses={200: {"description": "The new subject with "
             "its access token", **_JSON}, 400: {"description": "A bad name or role", **_JSON},
             **_ERRORS}, openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"type": "object", "properties": {
                     "name": {"type": "string"}, "roles": {"type": "array",
                                                           "items": {"type": "string"}},
                     "notes": {"type": "string"}}}}}}}, summary="Create a subject.")
async def create_subject(request: Request) -> Response:
    """A new subject {name, roles, notes}; the reply holds its accessToken, shown once."""
    site, _ = await need(request, "admin:api:subjects:create")
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise bad_request("A subject is an object with a name and roles.")
    roles = body.get("roles") or ["readable"]
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise bad_request("roles must be a list of role names.")
    notes = body.get("notes") or ""
    if not isinstance(notes, str):  # it was kept as Python's text of the object
        raise bad_request("notes must be text.")
    sha1 = await run_in_threadpool(granting_secret_sha1, request)
    try:
        subject, token = await run_in_threadpool(site.subjects.create, body["name"], roles,
                                                 notes, sha1)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return json_response({**subject.public(), "accessToken": token})


@router.delete("/authorization/subjects/{subject_id}", responses={200: {"description": "Done",
               **_JSON}, **_ERRORS}, summary="Revoke a subject.")
async def delete_subject(subject_id: str, request: Request) -> Response:
    """Revoke a subject and its access token."""
    site, _ = await need(request, "admin:api:subjects:delete")
    if not subject_id.isdecimal() or len(subject_id) > 18 or not await run_in_threadpool(
            site.subjects.revoke, int(subject_id)):
        raise NSError(404, "Not Found", f"There is no subject {subject_id!r}.")
    state_of(request).forget()
    return json_response({})


@router.get("/authorization/roles", responses={200: {"description": "The roles", **_JSON},
            **_ERRORS}, summary="Roles.")
async def list_roles(request: Request) -> Response:
    """The built-in roles and their permissions."""
    await need(request, "admin:api:roles:list")
    return json_response([{"name": name, "permissions": list(perms)}
                          for name, perms in sorted(auth.ROLES.items())])


@router.post("/notifications/loop", responses={200: {"description": "Stored and announced",
             "content": {"text/plain": {}}}, 400: {"description": "Not a Loop command",
                                                    **_JSON}, **_ERRORS},
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"type": "object"}}}}}, summary="Loop remote command.")
async def loop_notification(request: Request) -> Response:
    """A Loop remote command (override, carbs, bolus): stored as a treatment and announced;
    not pushed to the phone (no Apple push service here)."""
    site, grant = await need(request, "notifications:loop:push")
    body = await read_json(request)
    if not isinstance(body, dict) or body.get("eventType") not in LOOP_EVENTS:
        raise bad_request(f"eventType must be one of {', '.join(LOOP_EVENTS)}.")
    doc = {k: documents.to_number(v) if k in ("remoteBolus", "remoteCarbs", "remoteAbsorption",
                                      "duration") else v for k, v in body.items()}
    doc.setdefault("enteredBy", "Loop remote")
    doc["notificationSource"] = "loop"
    doc.pop("otp", None)  # a one-time password is not data to keep

    def work():
        n = documents.normalize(documents.TREATMENTS, doc, int(time.time() * 1000))
        return site.docs.put([n], mode="replace")[0]

    try:
        outcome = await run_in_threadpool(work)
    except documents.DocumentError as exc:
        raise bad_request(str(exc)) from None
    hub = state_of(request).hub
    if hub is not None:
        hub.announce(site.key, f"Loop: {body['eventType']}", outcome.row.doc.get("notes")
                     or body["eventType"], grant.subject)
    return PlainTextResponse("OK")
