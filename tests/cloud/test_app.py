"""The patient and family app (/app): landing by role, the shell, its JSON routes over the
portal's cookie, acknowledgements by role, the careportal's validation (never a 5xx), units,
the forecast from the newest readings only, and the installable parts (manifest, icons, worker)."""

import asyncio
import json
import random
import struct
import time
import zlib

import pytest
from websockets.asyncio.client import connect

from nightlink.cloud import live
from nightlink.cloud.app import create_app
from nightlink.cloud.auth import hash_password, issue_tokens
from nightlink.cloud.config import Settings
from nightlink.cloud.routes import app as patient_app
from nightlink.cloud.store import Store
from nightlink.shared import lowrisk, units
from nightlink.tools.bench.report import put_glucose
from tests.support.cgm import edge_prediction
from tests.support.servers import run_served

from .conftest import JWT_SECRET, PASSWORD

ORIGIN = "http://testserver"
WRITE = {"Origin": ORIGIN}


def seed(store, tenant: str, *, minutes: int = 180, last_age_min: float = 4.0) -> int:
    """Readings every 5 minutes up to `last_age_min` ago (falling at the end), an urgent and
    a warning alert and a treatment; returns the newest reading's ms."""
    data = store.tenant(tenant)
    now = int(time.time() * 1000)
    newest = now - int(last_age_min * 60_000)
    # Falling 6 mg/dL per 5 minutes at the end (to 114): no rule of the alert worker fires.
    readings = [(newest - k * 300_000, 150 - (6 - k) * 6 if k < 6 else 120 + (k % 7) * 9)
                for k in range(minutes // 5, -1, -1)]
    put_glucose(data, readings)
    data.add_alert("low", "warning", newest - 600_000, "Glucose 68 mg/dL is below 70 mg/dL.")
    data.add_alert("urgent_low", "urgent", newest - 1_200_000,
                   "Glucose 52 mg/dL is below 54 mg/dL.")
    data.add_documents("treatments", [{"eventType": "Meal Bolus", "carbs": 40, "insulin": 4,
                                       "created_at": _iso(newest - 5_400_000)}])
    return newest


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def sign_in(cloud, email):
    """Sign in through the portal's form; the client keeps the cookie. The redirect."""
    cloud.client.cookies.clear()
    r = cloud.client.post("/portal/login", data={"email": email, "password": PASSWORD},
                          follow_redirects=False)
    assert r.status_code == 303, r.text
    return r.headers["location"]


@pytest.fixture
def app_cloud(people):
    seed(people.store, "fam-1")
    return people


@pytest.mark.parametrize(("email", "lands"), [
    ("pat@example.org", "/app"), ("care@example.org", "/app"), ("doc@example.org", "/portal"),
    ("admin@example.org", "/portal")])
def test_sign_in__lands_by_role_with_one_cookie_for_both(app_cloud, email, lands):
    assert sign_in(app_cloud, email) == lands
    c = app_cloud.client
    # Everyone can switch: the one cookie opens the portal and the app.
    assert c.get("/app", follow_redirects=False).status_code == 200
    assert c.get("/portal", follow_redirects=False).status_code == 200
    c.post("/portal/logout")
    assert c.get("/app", follow_redirects=False).headers["location"] == "/portal/login"


def test_shell__needs_a_session_but_the_offline_copy_does_not(app_cloud):
    c = app_cloud.client
    assert c.get("/app", follow_redirects=False).headers["location"] == "/portal/login"
    assert c.get("/app/fam-1", follow_redirects=False).status_code == 303
    r = c.get("/app/shell")
    assert r.status_code == 200 and "pat@example.org" not in r.text  # nothing personal
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    sign_in(app_cloud, "pat@example.org")
    assert c.get("/app/fam-1").status_code == 200
    assert c.get("/app/fam-2").status_code == 404  # another patient: as if there were none
    assert c.get("/app/nobody").status_code == 404


def test_shell__one_conversion_rule_from_shared_units(app_cloud):
    html = app_cloud.client.get("/app/shell").text
    start = html.index('data-config="') + len('data-config="')
    raw = html[start:html.index('"', start)]
    import html as html_lib

    config = json.loads(html_lib.unescape(raw))
    assert config["mgdl_per_mmoll"] == units.MGDL_PER_MMOLL
    assert (config["low"], config["high"]) == (units.LOW, units.HIGH)
    assert config["stale_min"] == units.STALE_MIN


def test_state__by_role(app_cloud):
    for email, role, can_act in (("pat@example.org", "patient", True),
                                 ("care@example.org", "caregiver", True),
                                 ("doc@example.org", "doctor", False)):
        sign_in(app_cloud, email)
        r = app_cloud.client.get("/app/api/fam-1/state?hours=3")
        assert r.status_code == 200, r.text
        s = r.json()
        assert (s["role"], s["can_act"]) == (role, can_act)
        assert [a["level"] for a in s["alerts"]] == ["urgent", "warning"]  # urgent first
        dates = [e["date"] for e in s["entries"]]
        assert dates == sorted(dates) and len(dates) >= 36
        assert s["treatments"][0]["eventType"] == "Meal Bolus"
        # the clock's model on the newest hour, as the bedside node's LiteRT model reads it
        hour = [e["sgv"] for e in s["entries"][-12:]]
        permille, forecast = edge_prediction(hour)
        assert s["forecast"]["low_risk"] == permille / 1000
        assert abs(s["forecast"]["forecast30_mgdl"] - forecast) <= 1
        assert s["forecast"]["at_ms"] == s["entries"][-1]["date"]
        assert (s["forecast"]["alarm_at"], s["forecast"]["policy_from"]) == (
            lowrisk.ALARM_PERMILLE / 1000, "model")
        assert s["forecast"]["sounding"] is False
    sign_in(app_cloud, "pat2@example.org")
    assert app_cloud.client.get("/app/api/fam-1/state").status_code == 404
    assert app_cloud.client.get("/app/api/fam-2/state").json()["forecast"] is None
    r = app_cloud.client.get("/app/api/fam-2/state?hours=5")
    assert r.status_code == 422 and r.json()["detail"] == "hours must be one of 3, 6, 12, 24, not 5."
    assert app_cloud.client.get("/app/api/fam-2/state?hours=abc").status_code == 422
    assert app_cloud.client.get("/app/api/fam-1/state?hours=5").status_code == 404  # not theirs
    app_cloud.client.cookies.clear()
    assert app_cloud.client.get("/app/api/fam-1/state").status_code == 401


def test_state__no_forecast_from_an_old_reading(people):
    seed(people.store, "fam-1", last_age_min=40)
    sign_in(people, "pat@example.org")
    s = people.client.get("/app/api/fam-1/state").json()
    assert s["forecast"] is None
    assert s["now_ms"] - s["entries"][-1]["date"] > 39 * 60_000  # the app shows it stale


def test_ack__patient_and_caregiver_yes_doctor_no(app_cloud):
    c = app_cloud.client
    ids = [a["id"] for a in app_cloud.store.tenant("fam-1").alerts(unacked=True)]
    sign_in(app_cloud, "doc@example.org")
    r = c.post(f"/app/api/fam-1/alerts/{ids[0]}/ack", headers=WRITE)
    assert r.status_code == 403 and r.json()["detail"] == \
        "A doctor may see this patient's data but not acknowledge its alerts."
    sign_in(app_cloud, "care@example.org")
    r = c.post(f"/app/api/fam-1/alerts/{ids[0]}/ack", headers=WRITE)
    assert r.status_code == 200 and r.json()["acked_at"] is not None
    assert c.post(f"/app/api/fam-1/alerts/{ids[0]}/ack", headers=WRITE).status_code == 200
    assert c.post("/app/api/fam-1/alerts/999999/ack", headers=WRITE).status_code == 404
    sign_in(app_cloud, "pat@example.org")
    bus = c.app.state.events
    heard = []
    publish = bus.publish
    bus.publish = lambda site, kind, data: (heard.append((kind, data)), publish(site, kind, data))
    assert c.post(f"/app/api/fam-1/alerts/{ids[1]}/ack", headers=WRITE).status_code == 200
    assert c.get("/app/api/fam-1/state").json()["alerts"] == []
    # the last open one acknowledged: socket.io alarm clients hear "All Clear" too
    assert [d["title"] for kind, d in heard if kind == "notification" and d.get("clear")] == [
        "All Clear"]


def test_writes__refused_from_another_site_or_without_origin(app_cloud):
    c = app_cloud.client
    sign_in(app_cloud, "pat@example.org")
    alert = app_cloud.store.tenant("fam-1").alerts(unacked=True)[0]["id"]
    for headers in ({"Origin": "https://evil.example"}, {}, {"Origin": "null"}):
        for path, body in ((f"/app/api/fam-1/alerts/{alert}/ack", None),
                           ("/app/api/fam-1/treatments", {"eventType": "Note", "notes": "x"}),
                           ("/app/api/fam-1/live-token", None)):
            r = c.post(path, json=body, headers=headers)
            assert r.status_code == 403, (path, headers)
        assert c.put("/app/api/units", json={"unit": "mmol/L"}, headers=headers).status_code \
            == 403
    assert app_cloud.store.tenant("fam-1").alert(alert)["acked_at"] is None
    # A Bearer token is never sent by a browser on its own: no Origin needed.
    c.cookies.clear()
    r = c.post(f"/app/api/fam-1/alerts/{alert}/ack", headers=app_cloud.auth("pat@example.org"))
    assert r.status_code == 200


GOOD = [
    ({"eventType": "Meal Bolus", "carbs": "45", "insulin": 4.5, "notes": "pasta"},
     {"carbs": 45.0, "insulin": 4.5, "notes": "pasta"}),
    ({"eventType": "Meal Bolus", "carbs": 20}, {"carbs": 20.0}),
    ({"eventType": "Carb Correction", "carbs": "12,5"}, {"carbs": 12.5}),
    ({"eventType": "Correction Bolus", "insulin": "1.25"}, {"insulin": 1.25}),
    ({"eventType": "Exercise", "duration": 30, "notes": "bike"}, {"duration": 30.0}),
    ({"eventType": "Note", "notes": "  new sensor  "}, {"notes": "new sensor"}),
]


def test_careportal__stores_nightscout_treatments(app_cloud):
    sign_in(app_cloud, "care@example.org")
    data = app_cloud.store.tenant("fam-1")
    state = app_cloud.client.get  # the app's chart shows what was stored
    for body, stored in GOOD:
        r = app_cloud.client.post("/app/api/fam-1/treatments", json=body, headers=WRITE)
        assert r.status_code == 200, (body, r.text)
        doc = data.documents("treatments", count=1)[0]
        assert doc["eventType"] == body["eventType"], body
        assert doc["enteredBy"] == "Nightlink app (care@example.org)"
        assert {k: doc.get(k) for k in stored} == stored, body
        assert any(t["id"] == doc["_id"] for t in
                   state("/app/api/fam-1/state").json()["treatments"]), body
    # As every Nightscout client reads them.
    ns = app_cloud.client.get("/t/fam-1/api/v1/treatments.json?count=20",
                              headers=app_cloud.auth("pat@example.org")).json()
    assert {d["eventType"] for d in ns} == {"Meal Bolus", "Carb Correction", "Correction Bolus",
                                            "Exercise", "Note"}


BAD = [
    ({}, "eventType must be one of Meal Bolus, Carb Correction, Correction Bolus, Exercise, "
         "Note."),
    ({"eventType": "Temp Basal", "duration": 30}, None),
    ({"eventType": "Meal Bolus"}, "A Meal Bolus needs carbs (1-300 g) or insulin (0.05-50 U)."),
    ({"eventType": "Carb Correction", "carbs": 0}, "carbs must lie between 1 and 300 g, not 0."),
    ({"eventType": "Carb Correction", "carbs": -5}, None),
    ({"eventType": "Carb Correction", "carbs": 1e308 * 10}, None),
    # An integer too long for a float (JSON has no limit): refused, not an OverflowError.
    ({"eventType": "Meal Bolus", "carbs": 10**400}, "carbs must be a number of g."),
    ({"eventType": "Note", "notes": "x", "at_ms": 10**400},
     "at_ms must be a time in milliseconds since 1970."),
    ({"eventType": "Carb Correction", "carbs": "lots"}, "carbs must be a number of g, not 'lots'."),
    ({"eventType": "Carb Correction", "carbs": True}, "carbs must be a number of g."),
    ({"eventType": "Note", "notes": "x", "identifier": "short"},
     "identifier must be 8 to 64 letters, digits, - or _."),
    ({"eventType": "Note", "notes": "x", "identifier": 12345678}, None),
    ({"eventType": "Note", "notes": "x", "identifier": "../../etc/passwd"}, None),
    ({"eventType": "Carb Correction", "carbs": [20]}, "carbs must be a number of g."),
    ({"eventType": "Carb Correction", "carbs": "NaN"}, "carbs must be a number of g."),
    ({"eventType": "Correction Bolus", "insulin": 80}, None),
    ({"eventType": "Correction Bolus", "carbs": 10}, "A Correction Bolus has no carbs."),
    ({"eventType": "Exercise", "duration": 0}, None),
    ({"eventType": "Exercise"}, "An Exercise needs duration (1-600 min)."),
    ({"eventType": "Note", "notes": "   "}, "A Note needs a note."),
    ({"eventType": "Note", "notes": 5}, "notes must be text."),
    ({"eventType": "Note", "notes": "x" * 501}, "notes may be at most 500 characters, not 501."),
    ({"eventType": "Note", "notes": "x", "at_ms": "yesterday"},
     "at_ms must be a time in milliseconds since 1970."),
    ({"eventType": "Note", "notes": "x", "at_ms": 10**20},
     "The time of a treatment cannot be in the future."),
    ({"eventType": "Note", "notes": "x", "at_ms": 1}, None),
]


def test_careportal__bad_input_is_one_sentence(app_cloud):
    sign_in(app_cloud, "pat@example.org")
    data = app_cloud.store.tenant("fam-1")
    before = len(data.documents("treatments", count=100))
    for body, message in BAD:
        r = app_cloud.client.post("/app/api/fam-1/treatments", content=json.dumps(body),
                                  headers={**WRITE, "Content-Type": "application/json"})
        assert r.status_code == 422, (body, r.text)
        detail = r.json()["detail"]
        assert detail.endswith(".") and "\n" not in detail and ". " not in detail, detail
        if message is not None:
            assert detail == message, body
    assert len(data.documents("treatments", count=100)) == before


def test_careportal__doctor_reads_only_and_junk_never_5xx(app_cloud):
    c = app_cloud.client
    sign_in(app_cloud, "doc@example.org")
    r = c.post("/app/api/fam-1/treatments", json={"eventType": "Note", "notes": "x"},
               headers=WRITE)
    assert r.status_code == 403
    sign_in(app_cloud, "pat2@example.org")  # not a member: 404 whatever the body
    r = c.post("/app/api/fam-1/treatments", content=b"not json", headers=WRITE)
    assert r.status_code == 404 and r.json()["detail"] == "No patient 'fam-1'."
    sign_in(app_cloud, "pat@example.org")
    rng = random.Random(7)
    atoms = [None, True, 0, -1, 1.5, 10**30, "", "x" * 2000, "\u0000", "Meal Bolus", [], {},
             "Note", "30", "1e999", "-0"]
    junk = [b"", b"not json", b"[1,2]", b"\xff\xfe", b'{"eventType":', b"null", b"12"]
    for _ in range(150):
        junk.append(json.dumps({k: rng.choice(atoms) for k in rng.sample(
            ["eventType", "carbs", "insulin", "duration", "notes", "at_ms", "extra"],
            rng.randint(0, 6))}).encode())
    for body in junk:
        r = c.post("/app/api/fam-1/treatments", content=body,
                   headers={**WRITE, "Content-Type": "application/json"})
        assert r.status_code in (200, 422), (body, r.status_code, r.text)
        assert "\n" not in r.json().get("detail", "")


def test_units__shared_with_the_portal(app_cloud):
    from nightlink.cloud.reports import settings as report_settings

    c = app_cloud.client
    sign_in(app_cloud, "care@example.org")
    assert c.get("/app/api/me").json()["unit"] == units.MGDL
    r = c.put("/app/api/units", json={"unit": "mmol/L"}, headers=WRITE)
    assert r.status_code == 200 and r.json() == {"unit": units.MMOLL}
    user = app_cloud.store.user_by_email("care@example.org")
    assert report_settings.user_units(app_cloud.store, user["id"]) == units.MMOLL
    assert c.get("/app/api/fam-1/state").json()["unit"] == units.MMOLL
    r = c.put("/app/api/units", json={"unit": "mmol"}, headers=WRITE)
    assert r.status_code == 422 and r.json()["detail"] == \
        "units must be mg/dL or mmol/L, not 'mmol'."
    # The portal's own form changes the same setting.
    c.post("/portal/settings/units", data={"units": "mg/dL"}, follow_redirects=False)
    assert c.get("/app/api/me").json()["unit"] == units.MGDL


def test_me__lists_the_patients_a_person_may_open(app_cloud):
    sign_in(app_cloud, "doc@example.org")
    me = app_cloud.client.get("/app/api/me").json()
    assert me["tenants"] == [{"tenant": "fam-1", "name": "Family one", "role": "doctor"}]
    assert me["landing"] == "/portal"


def test_me__a_caregiver_with_an_empty_space_of_their_own_opens_the_child_first(app_cloud):
    """Signed up before accepting the invitation: their own space (made first, so listed
    first) holds no reading, the child's does."""
    store = app_cloud.store
    store.create_tenant("aaa-own", "Tom's space")  # sorts before fam-1
    care = store.user_by_email("care@example.org")
    store.grant("aaa-own", care["id"], "patient", by=None)
    sign_in(app_cloud, "care@example.org")
    me = app_cloud.client.get("/app/api/me").json()
    assert [t["tenant"] for t in me["tenants"]] == ["fam-1", "aaa-own"]


def test_live_token__opens_the_socket_briefly(app_cloud, monkeypatch):
    app = app_cloud.client.app
    if not any(getattr(r, "path", "") == "/api/nl/v1/tenants/{tenant}/live" for r in app.routes):
        app.include_router(live.router)
    sign_in(app_cloud, "care@example.org")
    r = app_cloud.client.post("/app/api/fam-1/live-token", headers=WRITE)
    assert r.status_code == 200
    ticket = r.json()
    assert ticket["expires_in"] == patient_app.SOCKET_TOKEN_S <= 300
    assert app_cloud.client.post("/app/api/fam-2/live-token", headers=WRITE).status_code == 404
    with app_cloud.client.websocket_connect(
            f"{ticket['url']}?access_token={ticket['access_token']}") as ws:
        hello = ws.receive_json()
    assert hello["type"] == "hello" and hello["data"]["role"] == "caregiver"
    assert hello["data"]["entry"]["sgv"] > 0


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_installable__manifest_icons_and_worker(app_cloud):
    c = app_cloud.client
    m = c.get("/app/manifest.webmanifest")
    assert m.headers["content-type"].startswith("application/manifest+json")
    manifest = m.json()
    assert manifest["start_url"] == "/app" and manifest["display"] == "standalone"
    sizes = set()
    for icon in manifest["icons"]:
        r = c.get(icon["src"])
        assert r.status_code == 200 and r.headers["content-type"].startswith(icon["type"])
        if icon["type"] == "image/png":
            w, h = _png_size(r.content)
            assert f"{w}x{h}" == icon["sizes"]
            sizes.add(w)
            # Decodes: every row's filter byte then RGBA pixels.
            raw = zlib.decompress(r.content[r.content.index(b"IDAT") + 4:-16])
            assert len(raw) == h * (1 + 4 * w)
    assert sizes == {192, 512}
    sw = c.get("/app/sw.js")
    assert sw.headers["service-worker-allowed"] == "/app"
    assert sw.headers["content-type"].startswith("text/javascript")
    for path in ("/app/static/app.js", "/app/static/app.css", "/app/static/icon.svg"):
        assert c.get(path).status_code == 200
    for path in ("/app/static/..%2Fapp.py", "/app/static/icon-7.png", "/app/static/nope.js",
                 "/app/static/.hidden.js", "/app/static/icon-x.png"):
        assert c.get(path, follow_redirects=False).status_code == 404, path


def test_live__treatments_from_another_process_reach_the_app_once_serialised(cloud_db_url):
    """A treatment stored through another connection (another API process, the MQTT ingest)
    and its deletion reach every client of the tenant as `treatment` messages in the app's
    form, built once per tenant: on PostgreSQL by NOTIFY, on SQLite by the data_version poll."""
    app = create_app(Settings(env="test", database_url=cloud_db_url, jwt_secret=JWT_SECRET))
    store = app.state.store
    app.state.events.feed.poll_s = 0.05
    store.create_tenant("fam-1", "Family one")
    user = store.create_user("care@example.org", hash_password(PASSWORD))
    store.grant("fam-1", user["id"], "caregiver", by=None)
    token = issue_tokens(store, user["id"], JWT_SECRET, 15, 1)["access_token"]
    other = Store.open(cloud_db_url)
    at = int(time.time() * 1000)

    async def next_treatment(ws) -> dict:
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if msg["type"] == "treatment":
                return msg["data"]

    async def run(base):
        url = base.replace("http", "ws", 1) + f"/api/nl/v1/tenants/fam-1/live?access_token={token}"
        clients = [await connect(url) for _ in range(2)]
        for ws in clients:
            assert json.loads(await ws.recv())["type"] == "hello"
        before = app.state.live.serialised
        data = other.tenant("fam-1")
        await asyncio.to_thread(data.add_documents, "treatments", [
            {"eventType": "Carb Correction", "carbs": 12, "enteredBy": "AndroidAPS",
             "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at / 1000))}])
        got = [await next_treatment(ws) for ws in clients]
        assert got[0] == got[1]
        assert {k: got[0][k] for k in ("eventType", "carbs", "enteredBy")} == \
            {"eventType": "Carb Correction", "carbs": 12, "enteredBy": "AndroidAPS"}
        assert abs(got[0]["at_ms"] - at) < 1000
        assert app.state.live.serialised - before == 1  # once for both clients
        rows = data.docs.find("treatments", count=1)
        await asyncio.to_thread(data.docs.delete, rows)
        assert [await next_treatment(ws) for ws in clients] == \
            [{"id": got[0]["id"], "deleted": True}] * 2
        for ws in clients:
            await ws.close()

    run_served(app, run, closing=(other, store))


def test_json_bodies__nested_too_deep_or_a_lone_surrogate_is_one_sentence(app_cloud):
    """Found by fuzzing: a body nested 100,000 deep and a lone surrogate escape ("\\ud800",
    which decodes but no UTF-8 store can hold) gave 500 on every app route that reads JSON;
    now 422 with one sentence, and nothing stored."""
    c = app_cloud.client
    sign_in(app_cloud, "pat@example.org")
    data = app_cloud.store.tenant("fam-1")
    before = len(data.documents("treatments", count=100))
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    extra: list = ["x"]
    for _ in range(40):
        extra = [extra]
    nested = json.dumps({"eventType": "Note", "notes": "x", "extra": extra}).encode()
    refused = set()
    for route in ("/app/api/fam-1/treatments", "/app/api/fam-1/push", "/app/api/fam-1/push/remove",
                  "/app/api/push/renew", "/app/api/units", "/app/api/fam-1/alerts/1/ack"):
        method = c.put if route == "/app/api/units" else c.post
        for body, says in ((deep, "nested too deep"), (nested, "deeper than 32 levels"),
                           (b'{"endpoint":"\\ud800","notes":"\\ud800","old_endpoint":"\\ud800",'
                            b'"eventType":"Note","units":"\\ud800"}', "lone surrogate")):
            r = method(route, content=body, headers={**WRITE, "Content-Type": "application/json"})
            # (409: the push routes of a server without a push key answer before the body)
            assert r.status_code in (409, 422), (route, body[:40], r.status_code, r.text[:200])
            if r.status_code == 422:
                detail = r.json()["detail"]
                assert says in detail and "\n" not in detail, (route, detail)
                refused.add(route)
    assert {"/app/api/fam-1/treatments", "/app/api/units", "/app/api/fam-1/alerts/1/ack"} \
        <= refused
    assert len(data.documents("treatments", count=100)) == before
