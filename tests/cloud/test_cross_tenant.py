"""Cross-tenant isolation, over every route the app has.

Each route whose path names a `{tenant}` is tried, with every method it takes, against fam-2
using only fam-1's credentials (a patient's Bearer token, a tenant-admin's token, the
api-secret header, a read token, the upload secret as ?token=). Every attempt must be
refused (401, 403 or 404), must not show fam-2's data, and must change no fam-2 row in any
table. The routes are discovered from the app, so routes added later are covered too.
"""

import json
import re
import threading

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.websockets import WebSocketDisconnect

from nightlink.nightscout.store import find_token
from nightlink.shared import codec, features

API = "/api/nl/v1"
REFUSED = {401, 403, 404}
MARKER = "fam2-private-marker"
FAM1_DEV, FAM2_DEV = "111111111111", "222222222222"
NOW_MS = 1_710_000_000_000
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def _grants_nothing(r) -> bool:
    body = r.json()
    info = body.get("message", body) if isinstance(body, dict) else {}
    return isinstance(info, dict) and not info.get("canRead") and not info.get("canWrite")


# Routes that answer 200 by contract even without access, and what that answer must say.
# Nightscout's verifyauth reports "UNAUTHORIZED" in a 200 reply; uploaders rely on it.
ANSWER_WITHOUT_ACCESS = {"/api/v1/verifyauth": _grants_nothing,
                         "/api/v2/verifyauth": _grants_nothing,
                         "/api/versions": lambda r: "fam" not in r.text,
                         "/api/v3/version": lambda r: "fam" not in r.text}


def routes(app):
    """(path, route) of every route, through included routers on any FastAPI version."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI without lazy router inclusion
        return [(r.path, r) for r in app.routes]
    return [(rc.path, rc.original_route) for rc in iter_route_contexts(app.routes)]


def tenant_routes(app):
    """Routes whose path names a tenant: `{tenant}` (Nightlink) or `{site}` (Nightscout)."""
    return [(path, r) for path, r in routes(app)
            if ("{tenant}" in path or "{site}" in path)
            and isinstance(r, APIRoute | APIWebSocketRoute)]


# -- the two tenants -------------------------------------------------------------------------------


class World:
    def __init__(self, cloud):
        self.cloud = cloud
        c = cloud
        c.user("admin@example.org", admin=True)
        c.user("pat1@example.org", tenant="fam-1", role="patient")
        c.user("boss1@example.org", tenant="fam-1", role="admin")  # admin of fam-1 only
        c.user("pat2@example.org", tenant="fam-2", role="patient")
        self.doc2 = c.user("doc2@example.org", tenant="fam-2", role="doctor")
        c.user("care2@example.org", tenant="fam-2", role="caregiver")
        p1, p2 = c.auth("pat1@example.org"), c.auth("pat2@example.org")
        secret1 = c.client.post(f"{API}/tenants/fam-1/api-secret", headers=p1).json()
        self.secret1, self.sha1_1 = secret1["secret"], secret1["sha1"]
        self.token1 = c.client.post(f"{API}/tenants/fam-1/read-tokens", headers=p1,
                                    json={"label": "clock"}).json()["token"]
        c.client.post(f"{API}/tenants/fam-1/devices", headers=p1,
                      json={"device_id": FAM1_DEV, "kind": "clock"})
        # fam-2 holds one of everything, marked so that a leak shows.
        c.client.post(f"{API}/tenants/fam-2/api-secret", headers=p2)
        c.client.post(f"{API}/tenants/fam-2/read-tokens", headers=p2, json={"label": MARKER})
        c.client.post(f"{API}/tenants/fam-2/devices", headers=p2,
                      json={"device_id": FAM2_DEV, "kind": "edge", "label": MARKER})
        t = c.store.tenant("fam-2")
        t.put_rows([codec.Record(features.CGM, codec.device_id(FAM2_DEV), 1, 1, NOW_MS // 30000,
                                 [codec.quantize_row(features.CGM, (287, 1.0, 3, 0.5, 4, 0))] * 3)])
        t.add_entries([{"type": "sgv", "date": NOW_MS - i * 300_000, "sgv": 287 + i,
                        "direction": "Flat", "device": MARKER} for i in range(3)])
        t.add_documents("treatments", [{"identifier": "t2", "created_at": NOW_MS,
                                        "eventType": "Note", "notes": MARKER}])
        t.add_documents("devicestatus", [{"created_at": NOW_MS, "device": MARKER}])
        t.add_documents("profile", [{"note": MARKER, "startDate": NOW_MS}])
        t.add_documents("food", [{"name": MARKER, "type": "food"}])
        t.put_night("2024-03-09", {"note": MARKER})
        self.alert2 = t.add_alert("high", "warning", NOW_MS, MARKER)
        t.set_alert_setting(self.doc2["id"], "high", True, 250.0)
        c.store.advance_hwm(FAM2_DEV, features.CGM)

    def path_value(self, name: str) -> str:
        """A real fam-2 identifier for a path parameter, so attempts aim at existing things."""
        values = {"tenant": "fam-2", "site": "fam-2", "device_id": FAM2_DEV, "device": FAM2_DEV,
                  "user_id": str(self.doc2["id"]), "night": "2024-03-09",
                  "alert_id": str(self.alert2), "stream": "cgm", "collection": "entries",
                  "id": str(self.alert2), "name": "2024-03-09"}  # portal nights
        return values.get(name, "1")

    def credentials(self):
        """fam-1's credentials, as (name, headers, query parameters)."""
        c = self.cloud
        def bearer(email):  # as a header, and as ?access_token= for live sockets
            return c.auth(email), {"access_token": c.tokens[email]}

        return {
            "patient-bearer": bearer("pat1@example.org"),
            "tenant-admin-bearer": bearer("boss1@example.org"),
            "api-secret-header": ({"api-secret": self.sha1_1}, {}),
            "read-token": ({}, {"token": self.token1}),
            "upload-secret-as-token": ({}, {"token": self.secret1}),
        }


def snapshot(store, tenant="fam-2"):
    """Every row in every table that belongs to the tenant (the audit log aside)."""
    db = store.db
    tables = [r["name"] for r in db.query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    members = [r["user_id"] for r in db.query(
        "SELECT user_id FROM memberships WHERE tenant_id = ?", (tenant,))]
    devices = [r["id"] for r in db.query("SELECT id FROM devices WHERE tenant_id = ?", (tenant,))]
    snap = {}
    for table in tables:
        if table in ("audit", "schema_migrations"):
            continue
        cols = {r["name"] for r in db.query(f"PRAGMA table_info({table})")}
        if table == "tenants":
            rows = db.query("SELECT * FROM tenants WHERE id = ?", (tenant,))
        elif "tenant_id" in cols:
            rows = db.query(f"SELECT * FROM {table} WHERE tenant_id = ?", (tenant,))
        elif table in ("users", "refresh_tokens") and members:
            key = "id" if table == "users" else "user_id"
            marks = ", ".join("?" * len(members))
            rows = db.query(f"SELECT * FROM {table} WHERE {key} IN ({marks})", members)
        elif "device" in cols and devices:
            marks = ", ".join("?" * len(devices))
            rows = db.query(f"SELECT * FROM {table} WHERE device IN ({marks})", devices)
        else:
            continue
        snap[table] = sorted(repr(sorted(r.items())) for r in rows)
    return snap


# -- plausible requests --------------------------------------------------------------------------


def _sample(schema, components, name="", depth=0):
    """A plausible value for a JSON schema, aimed at fam-2 and at the attacker's gain."""
    if depth > 6:
        return None
    if "$ref" in schema:
        return _sample(components[schema["$ref"].rsplit("/", 1)[1]], components, name, depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _sample(options[0], components, name, depth + 1)
    if "allOf" in schema:
        merged = {}
        for part in schema["allOf"]:
            merged.update(part)
        return _sample(merged, components, name, depth + 1)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    lname = name.lower()
    if kind == "object" or "properties" in schema:
        return {k: _sample(v, components, k, depth + 1)
                for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [_sample(schema.get("items", {}), components, name, depth + 1)]
    if kind == "integer":
        return {"date": NOW_MS, "sgv": 123, "created_at_ms": NOW_MS}.get(lname, 1)
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if kind == "string":
        if "email" in lname:
            return "pat1@example.org"  # e.g. granting oneself access to fam-2
        if lname in ("tenant", "tenant_id"):
            return "fam-2"
        if "device" in lname:
            return FAM2_DEV
        if "password" in lname:
            return "intruder-password-123"
        if lname == "role":
            return "patient"
        if schema.get("format") == "date-time" or lname in ("created_at", "datestring"):
            return "2024-03-09T16:00:00Z"
        return "intruder"
    return "intruder"


RAW_DOCS = [{"type": "sgv", "sgv": 123, "date": NOW_MS + 1, "dateString": "2024-03-09T16:00:00Z",
             "direction": "Flat", "device": "intruder", "eventType": "Note",
             "created_at": "2024-03-09T16:00:00Z", "identifier": "intruder-1",
             "tenant": "fam-2", "tenant_id": "fam-2"}]


def request_body(openapi, path, method):
    """A plausible JSON body for the operation, or a Nightscout-like list when it reads raw."""
    if method in ("GET", "HEAD", "DELETE", "OPTIONS"):
        return None
    op = openapi["paths"].get(path, {}).get(method.lower(), {})
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return _sample(content["application/json"].get("schema", {}),
                       openapi.get("components", {}).get("schemas", {}))
    return RAW_DOCS


def websocket_problem(client, url, headers, params, wait_s=5.0):
    """None if the socket is refused: never accepted, or closed before any message."""
    try:
        with client.websocket_connect(url, headers=headers, params=params) as ws:
            got = []
            reader = threading.Thread(target=lambda: got.append(ws.receive()), daemon=True)
            reader.start()
            reader.join(wait_s)
            if not got:
                return f"accepted and still open after {wait_s:.0f} s"
            if got[0]["type"] == "websocket.close":
                return None
            return f"accepted and sent {str(got[0])[:100]}"
    except WebSocketDisconnect:
        return None


def attempt(client, method, url, headers, params, body):
    kwargs = {"headers": headers, "params": params}
    if body is not None:
        kwargs["content"] = json.dumps(body)
        kwargs["headers"] = {**headers, "content-type": "application/json"}
    # Redirects are not followed: the portal sends a caller without a session to its sign-in
    # page (303), which is a refusal, not an answer.
    return client.request(method, url, follow_redirects=False, **kwargs)


def refused(r) -> bool:
    return r.status_code in REFUSED or (
        r.status_code == 303 and r.headers.get("location") == "/portal/login")


# -- the suite -----------------------------------------------------------------------------------


@pytest.fixture
def world(cloud):
    # Every attempt here fails on purpose; the per-address limit on failed credentials would
    # soon answer 429 to all of them, which is a refusal too, but would hide what a route does.
    cloud.client.app.state.nightscout.failures.limit = 10**6
    return World(cloud)


def test_cross_tenant__routes_are_discovered(cloud):
    found = {path for path, _ in tenant_routes(cloud.client.app)}
    # This module's own routes at least; routes added elsewhere are picked up the same way.
    assert {f"{API}/tenants/{{tenant}}/members", f"{API}/tenants/{{tenant}}/export",
            f"{API}/tenants/{{tenant}}/devices/{{device_id}}"} <= found


def test_cross_tenant__fam1_credentials_work_on_fam1(world):
    c = world.cloud
    for who in ("pat1@example.org", "boss1@example.org"):
        assert c.client.get(f"{API}/tenants/fam-1/members", headers=c.auth(who)).status_code == 200
    assert c.store.api_secret(world.sha1_1)["tenant_id"] == "fam-1"
    assert find_token(c.store.db, world.token1).site_key == "fam-1"
    # A live socket on the caller's own tenant opens: the refusal check can tell the two apart.
    headers, params = world.credentials()["patient-bearer"]
    for path, route in tenant_routes(c.client.app):
        if isinstance(route, APIWebSocketRoute):
            url = PARAM.sub(lambda m: "fam-1" if m.group(1) == "tenant" else "1", path)
            assert websocket_problem(c.client, url, headers, params) is not None, path


def walk(world, credential):
    """Try every {tenant} route on fam-2 with one fam-1 credential; return what went wrong."""
    c = world.cloud
    app = c.client.app
    openapi = app.openapi()
    headers, params = world.credentials()[credential]
    before = snapshot(c.store)
    failures, tried = [], 0
    for path, route in tenant_routes(app):
        url = PARAM.sub(lambda m: world.path_value(m.group(1)), path)
        if isinstance(route, APIWebSocketRoute):
            tried += 1
            problem = websocket_problem(c.client, url, headers, params)
            if problem:
                failures.append(f"WS {path}: {problem}")
            if snapshot(c.store) != before:
                failures.append(f"WS {path}: changed fam-2 rows")
                before = snapshot(c.store)
            continue
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            tried += 1
            body = request_body(openapi, path, method)
            r = attempt(c.client, method, url, headers, params, body)
            label = f"{method} {path}"
            allowed = next((ok for tail, ok in ANSWER_WITHOUT_ACCESS.items()
                            if path.endswith(tail)), None)
            if r.status_code == 200 and allowed is not None:
                if not allowed(r):
                    failures.append(f"{label}: answered as if allowed: {r.text[:120]}")
            elif not refused(r):
                failures.append(f"{label}: {r.status_code} {r.text[:120]}")
            if MARKER in r.text or ("287" in r.text and r.status_code < 400):
                failures.append(f"{label}: response shows fam-2 data")
            after = snapshot(c.store)
            if after != before:
                changed = sorted(t for t in after if after[t] != before.get(t))
                failures.append(f"{label}: changed fam-2 rows in {changed}")
                before = after
    assert tried >= 10
    return failures


@pytest.mark.parametrize("credential", ["patient-bearer", "tenant-admin-bearer",
                                        "api-secret-header", "read-token",
                                        "upload-secret-as-token"])
def test_cross_tenant__every_tenant_route_refuses_fam1_credentials(world, credential):
    failures = walk(world, credential)
    assert failures == [], "\n".join(failures)


def test_cross_tenant__the_walk_catches_an_unguarded_route(world):
    """The suite is not vacuous: a route that forgets the tenant check is reported."""
    app = world.cloud.client.app
    store = world.cloud.store

    def leak(tenant: str):
        return store.tenant(tenant).entries(count=1)

    def forge(tenant: str):
        store.tenant(tenant).add_entries([{"type": "sgv", "date": NOW_MS + 7, "sgv": 40}])
        return {}

    app.add_api_route(f"{API}/tenants/{{tenant}}/leak", leak, methods=["GET"])
    app.add_api_route(f"{API}/tenants/{{tenant}}/forge", forge, methods=["POST"])
    app.openapi_schema = None
    failures = "\n".join(walk(world, "patient-bearer"))
    assert f"GET {API}/tenants/{{tenant}}/leak: 200" in failures
    assert f"GET {API}/tenants/{{tenant}}/leak: response shows fam-2 data" in failures
    assert f"POST {API}/tenants/{{tenant}}/forge: changed fam-2 rows in ['ns_docs']" in failures


def test_cross_tenant__other_routes_do_not_reach_fam2(world):
    """Routes without {tenant} (fam-2 named in the body or query) change and show nothing
    of fam-2. Deleting one's own account goes last, as it ends the session."""
    c = world.cloud
    app = c.client.app
    openapi = app.openapi()
    headers = c.auth("pat1@example.org")
    before = snapshot(c.store)
    failures = []
    others = [(path, route, method) for path, route in routes(app)
              if isinstance(route, APIRoute) and "{tenant}" not in path
              for method in route.methods - {"HEAD", "OPTIONS"}]
    others.sort(key=lambda x: (x[2] == "DELETE", x[0], x[2]))
    for path, _route, method in others:
        url = PARAM.sub(lambda m: world.path_value(m.group(1)), path)
        body = request_body(openapi, path, method)
        r = attempt(c.client, method, url, headers, {"tenant": "fam-2", "tenant_id": "fam-2"},
                    body)
        # An upload's reply echoes the caller's own body (which names fam-2 to tempt the
        # route); fam-2's own data carries the marker.
        # Nightscout documents never name a tenant, so there only the marker tells a leak
        # (fam-1's own uploads in this walk hold the tempting "fam-2" fields).
        echoed = (body is not None and "fam-2" in json.dumps(body)) or path.startswith(
            ("/api/v1", "/api/v2", "/api/v3"))
        if MARKER in r.text or ('"fam-2"' in r.text and r.status_code < 400 and not echoed):
            failures.append(f"{method} {path}: response shows fam-2: {r.text[:120]}")
        if snapshot(c.store) != before:
            failures.append(f"{method} {path}: changed fam-2 rows")
            before = snapshot(c.store)
    assert len(others) >= 5
    assert failures == [], "\n".join(failures)


def test_cross_tenant__patients_lists_only_what_the_caller_may_see(world):
    c = world.cloud
    mine = c.client.get(f"{API}/patients", headers=c.auth("pat1@example.org"))
    assert [p["tenant_id"] for p in mine.json()] == ["fam-1"]
    assert MARKER not in mine.text and "287" not in mine.text
    theirs = c.client.get(f"{API}/patients", headers=c.auth("doc2@example.org")).json()
    assert [(p["tenant_id"], p["role"]) for p in theirs] == [("fam-2", "doctor")]
    assert theirs[0]["latest_glucose"]["sgv"] == 287 and theirs[0]["last_night"] == "2024-03-09"
    for headers, params in ([{"api-secret": world.sha1_1}, {}], [{}, {"token": world.token1}]):
        r = c.client.get(f"{API}/patients", headers=headers, params=params)
        assert r.status_code == 401


def test_cross_tenant__revoked_then_regranted_elsewhere_stays_separate(world):
    """A fam-2 doctor who is also granted fam-1 sees both; revoked from fam-2, only fam-1."""
    c = world.cloud
    c.store.grant("fam-1", world.doc2["id"], "doctor", by=None)
    h = c.auth("doc2@example.org")
    assert [p["tenant_id"] for p in c.client.get(f"{API}/patients", headers=h).json()] == [
        "fam-1", "fam-2"]
    c.client.delete(f"{API}/tenants/fam-2/grants/{world.doc2['id']}",
                    headers=c.auth("pat2@example.org"))
    assert [p["tenant_id"] for p in c.client.get(f"{API}/patients", headers=h).json()] == [
        "fam-1"]
    # The same token, no new sign-in: refused at once.
    assert c.client.get(f"{API}/tenants/fam-2/members", headers=h).status_code == 404
