"""The doctor portal: who sees which patient, sign-in, settings, exports in the audit log."""

import json
import random
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest

from nightlink.cloud.reports import settings
from nightlink.shared import lowrisk
from nightlink.tools.bench.report import synth_day_streams, synth_night

from .conftest import JWT_SECRET, PASSWORD

END = "2026-01-15"


def fill(store, tenant, days, *, tz="Europe/Berlin", seed=1):
    data = store.tenant(tenant)
    settings.set_patient_settings(data, tz=tz)
    zone, rng = ZoneInfo(tz), random.Random(seed)
    last = date.fromisoformat(END)
    for i in range(days):
        day = last - timedelta(days=days - 1 - i)
        synth_day_streams(data, day, zone, rng, low_at=(3, 10) if i % 2 == 0 else None)
        if day < last:
            synth_night(data, day, zone, rng, hours=3.0, apnea_per_h=20 if i % 2 else 3)


@pytest.fixture
def portal(people):
    fill(people.store, "fam-1", 3)
    fill(people.store, "fam-2", 1, seed=2)
    return people


def get(portal, email, path, **kw):
    return portal.client.get(path, headers=portal.auth(email), follow_redirects=False, **kw)


def test_patient_list__doctor_sees_granted_patients_with_flags(portal):
    r = get(portal, "doc@example.org", "/portal")
    assert r.status_code == 200
    assert 'data-tenant="fam-1"' in r.text and 'data-tenant="fam-2"' not in r.text
    assert "flag-lows" in r.text and "flag-ahi" in r.text and "flag-data" in r.text
    r = get(portal, "pat2@example.org", "/portal")
    assert 'data-tenant="fam-2"' in r.text and 'data-tenant="fam-1"' not in r.text
    r = get(portal, "admin@example.org", "/portal")
    assert 'data-tenant="fam-1"' in r.text and 'data-tenant="fam-2"' in r.text


@pytest.mark.parametrize(("email", "fam1", "fam2"), [
    ("doc@example.org", 200, 404), ("care@example.org", 200, 404),
    ("pat@example.org", 200, 404), ("pat2@example.org", 404, 200),
    ("admin@example.org", 200, 200)])
def test_report_page__access_by_role(portal, email, fam1, fam2):
    for tenant, want in (("fam-1", fam1), ("fam-2", fam2)):
        r = get(portal, email, f"/portal/p/{tenant}?end={END}")
        assert r.status_code == want, (email, tenant, r.text[:200])
        for path in (f"/portal/p/{tenant}/report.pdf?end={END}",
                     f"/portal/p/{tenant}/report.csv?end={END}",
                     f"/portal/p/{tenant}/nights/2026-01-14.json"):
            if want == 404:  # exports of a patient one may not see: same answer, nothing logged
                assert get(portal, email, path).status_code == 404
    assert not [a for a in portal.store.audit_log() if a["action"] == "export"
                and a["tenant_id"] != "fam-1" and email != "admin@example.org"
                and a["actor_user_id"] == portal.store.user_by_email(email)["id"]]


def test_revoked_doctor_loses_access(portal):
    doc = portal.store.user_by_email("doc@example.org")
    assert get(portal, "doc@example.org", "/portal/p/fam-1").status_code == 200
    portal.store.revoke("fam-1", doc["id"])
    assert get(portal, "doc@example.org", "/portal/p/fam-1").status_code == 404
    assert 'data-tenant="fam-1"' not in get(portal, "doc@example.org", "/portal").text


def test_no_session_goes_to_sign_in_and_the_form_signs_in(portal):
    c = portal.client
    r = c.get("/portal/p/fam-1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/portal/login"
    r = c.get("/portal", headers={"Authorization": "Bearer not-a-token"}, follow_redirects=False)
    assert r.status_code == 303
    r = c.post("/portal/login", data={"email": "doc@example.org", "password": "wrong"})
    assert r.status_code == 401 and "Wrong email or password" in r.text
    r = c.post("/portal/login", data={"email": "doc@example.org", "password": PASSWORD},
               follow_redirects=False)
    assert r.status_code == 303 and "nl_portal=" in r.headers["set-cookie"]
    assert "httponly" in r.headers["set-cookie"].lower()
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    r = c.get("/portal", follow_redirects=False)  # the client keeps the cookie
    assert r.status_code == 200 and 'data-tenant="fam-1"' in r.text
    c.post("/portal/logout", follow_redirects=False)
    assert c.get("/portal", follow_redirects=False).status_code == 303


def test_a_browser_session_outlives_its_15_minute_access_token(portal):
    """A parent leaves the app open for days: the access cookie is renewed from the session
    cookie (its refresh token, read and not spent), until the session is signed out."""
    import jwt

    c = portal.client
    r = c.post("/portal/login", data={"email": "care@example.org", "password": PASSWORD},
               follow_redirects=False)
    cookies = r.headers.get_list("set-cookie")
    assert any(x.startswith("nl_session=") and "max-age=2592000" in x.lower() for x in cookies)
    session = c.cookies.get("nl_session")
    secret = c.app.state.settings.jwt_secret
    expired = jwt.encode({"sub": str(portal.store.user_by_email("care@example.org")["id"]),
                          "typ": "access", "exp": 1}, secret, algorithm="HS256")
    for access in (None, expired):  # gone from the browser, or out of date
        c.cookies.delete("nl_portal")
        if access:
            c.cookies.set("nl_portal", access, domain="testserver.local", path="/")
        r = c.get("/app/api/me", follow_redirects=False)
        assert r.status_code == 200, r.text
        assert r.headers["set-cookie"].startswith("nl_portal=")
        r = c.get("/portal", follow_redirects=False)  # the renewed cookie, no renewal again
        assert r.status_code == 200 and "set-cookie" not in r.headers
    # Only the browser's pages renew: not the Nightscout API, static files or health checks.
    c.cookies.delete("nl_portal")
    for path in ("/api/v1/status.json", "/t/fam-1/api/v1/entries.json", "/app/static/app.js",
                 "/healthz"):
        assert "nl_portal=" not in c.get(path).headers.get("set-cookie", ""), path
    # A cookie another page of the domain set, that a strict parser stops at, hides nothing.
    r = c.get("/app/api/me", headers={"cookie": f'prefs={{"theme":"dark"}}; nl_session={session}'})
    assert r.status_code == 200 and r.headers["set-cookie"].startswith("nl_portal=")
    assert "private" in r.headers["cache-control"]
    # Signing out with an access cookie due for renewal: no fresh one comes back with it.
    c.cookies.set("nl_portal", expired, domain="testserver.local", path="/")
    out = c.post("/portal/logout", follow_redirects=False)
    assert not any(x.startswith("nl_portal=ey") for x in out.headers.get_list("set-cookie"))
    assert c.get("/app/api/me").status_code == 401
    c.cookies.set("nl_session", session)  # a copy kept: signing out revoked it
    assert c.get("/portal", follow_redirects=False).status_code == 303
    r = c.get("/app/api/me")  # and the dead session cookie is cleared
    assert r.status_code == 401 and "nl_session=;" in r.headers.get("set-cookie", "")


def test_report_page__shows_the_report(portal):
    r = get(portal, "doc@example.org", f"/portal/p/fam-1?end={END}&days=3")
    t = r.text
    assert 'id="agp-chart"' in t and 'id="tir-bar"' in t and 'id="stats"' in t
    assert "2026-01-13 to 2026-01-15 (3 days)" in t and "Europe/Berlin" in t
    assert 'id="night-lows"' in t and 'id="nights"' in t
    assert 'id="not-enough"' in t  # 2 nights: no associations, and it says so
    assert "Below the consensus minimum" in t
    assert 'name="targets"' in t  # doctors may change the patient's settings
    assert 'name="targets"' not in get(portal, "care@example.org", "/portal/p/fam-1").text


def test_units_per_user(portal):
    r = get(portal, "doc@example.org", f"/portal/p/fam-1?end={END}&days=3")
    assert "units mg/dL" in r.text
    r = portal.client.post("/portal/settings/units", data={"units": "mmol/L"},
                           headers=portal.auth("doc@example.org"), follow_redirects=False)
    assert r.status_code == 303
    assert "units mmol/L" in get(portal, "doc@example.org", "/portal/p/fam-1").text
    assert "units mg/dL" in get(portal, "care@example.org", "/portal/p/fam-1").text
    r = portal.client.post("/portal/settings/units", data={"units": "mmol"},
                           headers=portal.auth("doc@example.org"))
    assert r.status_code == 422 and "mg/dL or mmol/L" in r.text


def test_patient_settings__who_may_change_them(portal):
    url = "/portal/p/fam-1/settings"
    r = portal.client.post(url, data={"tz": "America/New_York", "targets": "older"},
                           headers=portal.auth("care@example.org"))
    assert r.status_code == 403
    for bad in ("Mars/Base", "Europe", "../etc"):  # "Europe" is a folder of zones, not one
        r = portal.client.post(url, data={"tz": bad}, headers=portal.auth("doc@example.org"))
        assert r.status_code == 422 and "not a time zone" in r.text, bad
    r = portal.client.post(url, data={"targets": "pregnancy", "report_days": "7"},
                           headers=portal.auth("doc@example.org"), follow_redirects=False)
    assert r.status_code == 303
    ps = settings.patient_settings(portal.store.tenant("fam-1"))
    assert (ps.tz.key, ps.targets, ps.report_days) == ("Europe/Berlin", "pregnancy", 7)
    t = get(portal, "doc@example.org", f"/portal/p/fam-1?end={END}").text
    assert "(7 days)" in t and "range 63–140" in t
    assert 'name="tz" value="Europe/Berlin"' in t  # the patient's own zone, as set
    assert any(a["action"] == "patient.settings" for a in portal.store.audit_log("fam-1"))


def test_patient_settings__the_predicted_low_budget_recalibrates_at_once(portal):
    """Without a bedside node the server calibrates the predicted-low threshold itself: the
    false alarms a week the family accepts are a patient setting, checked, and used at once."""
    url = "/portal/p/fam-1/settings"
    doc = portal.auth("doc@example.org")
    r = portal.client.post(url, data={"alarm_budget": "20"}, headers=doc)
    assert r.status_code == 422 and "false alarms a week must lie between 0 and 14" in r.text
    assert portal.store.tenant("fam-1").alarm_calibration() is None
    r = portal.client.post(url, data={"alarm_budget": "3,5"}, headers=doc, follow_redirects=False)
    assert r.status_code == 303
    cal = portal.store.tenant("fam-1").alarm_calibration()
    assert cal["budget_per_week"] == 3.5 and cal["calibrated"] is False  # 3 days of data
    t = get(portal, "doc@example.org", f"/portal/p/fam-1?end={END}").text
    assert 'name="alarm_budget" type="number" min="0" max="14" step="any" value="3.5"' in t
    assert ("Predicted-low alert on the family's phones: risk "
            f"{lowrisk.ALARM_PERMILLE / 10:g} % or more (the model") in t
    assert f"Not calibrated yet: {cal['nights']} of the 5 nights with CGM it needs" in t
    r = portal.client.post(url, data={"alarm_budget": ""}, headers=doc, follow_redirects=False)
    assert settings.patient_settings(portal.store.tenant("fam-1")).alarm_budget is None
    assert r.status_code == 303
    assert any(a["action"] == "patient.settings" and a["detail"].get("alarm_budget") == "3,5"
               for a in portal.store.audit_log("fam-1"))


def test_patient_settings__a_zone_never_set_is_not_frozen_by_other_changes(portal):
    ps = settings.patient_settings(portal.store.tenant("fam-1"))
    if ps.tz_source == "set":  # the fixture sets a zone: clear it as a new patient has none
        portal.store.tenant("fam-1").set_report_settings("", ps.targets, ps.report_days)
    t = get(portal, "doc@example.org", f"/portal/p/fam-1?end={END}").text
    assert 'name="tz" value="" placeholder="UTC"' in t and "not set: days and nights" in t
    r = portal.client.post("/portal/p/fam-1/settings", data={"tz": "", "report_days": "7"},
                           headers=portal.auth("doc@example.org"), follow_redirects=False)
    assert r.status_code == 303
    ps = settings.patient_settings(portal.store.tenant("fam-1"))
    assert (ps.tz.key, ps.tz_source, ps.report_days) == ("UTC", "default", 7)


def test_exports__content_and_audit(portal):
    before = len(portal.store.audit_log("fam-1"))
    r = get(portal, "care@example.org", f"/portal/p/fam-1/report.pdf?end={END}&days=3")
    assert r.status_code == 200 and r.content[:5] == b"%PDF-"
    assert r.headers["content-type"] == "application/pdf"
    assert "attachment" in r.headers["content-disposition"]
    r = get(portal, "doc@example.org", f"/portal/p/fam-1/report.csv?end={END}&days=3")
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("night,sleep_source,tib_min") and len(lines) == 1 + 3
    r = get(portal, "doc@example.org", f"/portal/p/fam-1/report.json?end={END}&days=3")
    doc = r.json()
    assert doc["days"] == 3 and len(doc["agp"]) == 96 and doc["summary"]["n"] > 0
    r = get(portal, "doc@example.org", "/portal/p/fam-1/nights/2026-01-14.csv")
    rows = r.text.strip().splitlines()
    assert rows[0].startswith("epoch,time,stage,glucose") and len(rows) > 360
    r = get(portal, "doc@example.org", "/portal/p/fam-1/nights/2026-01-14.pdf")
    assert r.content[:5] == b"%PDF-"
    r = get(portal, "doc@example.org", "/portal/p/fam-1/nights/2026-01-14.json")
    assert r.json()["sleep"]["source"] == "classifier" and r.json()["timeline"]
    exports = [a for a in portal.store.audit_log("fam-1")[: len(portal.store.audit_log("fam-1"))
                                                          - before] if a["action"] == "export"]
    got = sorted((a["detail"]["kind"], a["detail"]["format"]) for a in exports)
    assert got == [("night", "csv"), ("night", "json"), ("night", "pdf"),
                   ("report", "csv"), ("report", "json"), ("report", "pdf")]
    care = portal.store.user_by_email("care@example.org")["id"]
    pdf = next(a for a in exports if a["detail"]["format"] == "pdf"
               and a["detail"]["kind"] == "report")
    assert pdf["actor_user_id"] == care and pdf["detail"]["pages"] >= 1


def test_night_page_and_bad_input(portal):
    r = get(portal, "doc@example.org", "/portal/p/fam-1/nights/2026-01-14")
    assert r.status_code == 200 and 'id="night-timeline"' in r.text
    assert "class=\"hypnogram\"" in r.text and "Source: classifier" in r.text
    assert get(portal, "doc@example.org", "/portal/p/fam-1/nights/14-01-2026").status_code == 422
    assert get(portal, "doc@example.org", "/portal/p/fam-1/nights/2026-01-14.xls").status_code \
        == 404
    r = get(portal, "doc@example.org", "/portal/p/fam-1?end=yesterday")
    assert r.status_code == 422 and "YYYY-MM-DD" in r.json()["detail"]
    assert get(portal, "doc@example.org", "/portal/p/fam-1?days=400").status_code == 422
    assert get(portal, "doc@example.org", "/portal/p/nobody").status_code == 404
    views = [a for a in portal.store.audit_log("fam-1") if a["action"] == "night.view"]
    assert views and json.dumps(views[0]["detail"]) == '{"night": "2026-01-14"}'


def test_urgent_alert_on_top_of_the_patient_pages(portal):
    """An unacknowledged urgent alert heads the report and the night page, in the reader's
    units; acknowledged, it is gone."""
    data = portal.store.tenant("fam-1")
    alert = data.add_alert("urgent_low", "urgent", 1_768_442_400_000,
                           "Urgent low: 46 mg/dL (below 54).", value=46, threshold=54,
                           unit="mg/dL")
    data.add_alert("high", "warning", 1_768_442_000_000, "High: 260 mg/dL (above 250).",
                   value=260, threshold=250, unit="mg/dL")
    for path in (f"/portal/p/fam-1?end={END}", "/portal/p/fam-1/nights/2026-01-14"):
        t = get(portal, "doc@example.org", path).text
        main = t[t.index("<main>"):]
        assert main.split(">", 1)[1].lstrip().startswith('<div id="urgent-alerts"'), path
        banner = main[:main.index("</div>")]
        assert "Urgent low: 46 mg/dL (below 54)" in banner and "High" not in banner
    portal.client.post("/portal/settings/units", data={"units": "mmol/L"},
                       headers=portal.auth("doc@example.org"))
    t = get(portal, "doc@example.org", f"/portal/p/fam-1?end={END}").text
    assert "Urgent low: 2.6 mmol/L (below 3.0)" in t
    data.ack_alert(alert, portal.store.user_by_email("doc@example.org")["id"])
    assert 'id="urgent-alerts"' not in get(portal, "doc@example.org", "/portal/p/fam-1").text


def test_date_pickers(portal):
    """The report's period and the night page's night come from date fields (no hand-typed
    ?end= needed); a bad date is a 422 with one sentence."""
    t = get(portal, "doc@example.org", f"/portal/p/fam-1?end={END}&days=3").text
    assert 'id="period-end" name="end" type="date" value="2026-01-15"' in t
    assert 'name="days" type="number"' in t
    assert 'href="/portal/p/fam-1?end=2026-01-12&amp;days=3"' in t  # the 3 days before
    t = get(portal, "doc@example.org", "/portal/p/fam-1/nights/2026-01-14").text
    assert 'id="night-date" name="night" type="date" value="2026-01-14"' in t
    assert 'action="/portal/p/fam-1/nights"' in t
    r = get(portal, "doc@example.org", "/portal/p/fam-1/nights?night=2026-01-13")
    assert r.status_code == 303 and r.headers["location"] == "/portal/p/fam-1/nights/2026-01-13"
    r = get(portal, "doc@example.org", "/portal/p/fam-1/nights?night=13.01.2026")
    assert r.status_code == 422 and "YYYY-MM-DD" in r.json()["detail"]
    assert get(portal, "pat2@example.org", "/portal/p/fam-1/nights?night=2026-01-13") \
        .status_code == 404


def test_static_pages_link_relatively():
    """Pages written to files (the demo) link to each other by file name, not to /portal."""
    from nightlink.cloud.reports.render import Links

    links = Links("fam-1", static=True, static_nights={"2026-01-14"})
    assert links.report() == "report.html" and links.night("2026-01-14") == "night-2026-01-14.html"
    assert links.night("2026-01-13") is None and links.night("2026-01-14", "csv") is None
    assert links.export("pdf") == "report.pdf" and links.export("csv") is None
    portal_links = Links("fam-1")
    assert portal_links.report(end="2026-01-15", days=3) == "/portal/p/fam-1?end=2026-01-15&days=3"


def test_night_page__an_export_without_a_date_is_refused_not_a_500(portal):
    r = get(portal, "doc@example.org", "/portal/p/fam-1/nights/.pdf")
    assert r.status_code == 422 and "YYYY-MM-DD" in r.json()["detail"]


class _Canary:
    """A local web server that counts the requests it gets (what a PDF must never make)."""

    def __enter__(self):
        import http.server
        import threading

        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the standard library's name
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_a_pdf_fetches_nothing_from_outside_itself():
    from nightlink.cloud.reports.render import to_pdf

    with _Canary() as canary:
        pdf, pages = to_pdf(f'<html><head><style>body {{ background: url({canary.url}/bg) }}'
                            f'</style></head><body><img src="{canary.url}/img">'
                            '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">'
                            '</body></html>')
    assert pdf[:5] == b"%PDF-" and pages == 1
    assert canary.hits == []


def test_a_space_name_cannot_write_style_rules_into_its_pdfs(portal):
    """A carriage return or form feed ends a CSS string: a space named with one (signed up
    before names were checked, or made by the operator's command) closed the footer's string
    in the PDF's style and wrote rules of its own, fetching any address from the server."""
    from nightlink.cloud.reports.render import _footer

    with _Canary() as canary:
        name = (f"Ann\r;}}}}body{{background:url({canary.url}/ssrf)}}"
                "@page{x{x:\f\u2028\x00")
        portal.store.set_tenant("fam-1", name=name)
        for path in (f"/portal/p/fam-1/report.pdf?end={END}&days=3",
                     "/portal/p/fam-1/nights/2026-01-14.pdf"):
            r = get(portal, "doc@example.org", path)
            assert r.status_code == 200 and r.content[:5] == b"%PDF-"
    assert canary.hits == []
    assert not any(c in _footer(name) for c in "\r\f\u2028\x00\"'\\")
    assert _footer("Zoë\u00a0Müller") == "Zoë Müller"  # a no-break space is a space


@pytest.mark.parametrize("body", [
    {"name": "Ann\r;}body{color:red}"}, {"name": "Ann\nBcc: x@example.org"},
    {"name": "Ann\x00"}, {"name": "Ann\f"},
])
def test_names_with_control_characters_are_refused(portal, body):
    """Sign-up, an operator's new account and new space: one sentence naming the field."""
    admin = portal.auth("admin@example.org")
    for path, extra in (("/api/nl/v1/signup", {"email": "new@example.org",
                                              "password": PASSWORD}),
                        ("/api/nl/v1/accounts", {"email": "new2@example.org",
                                                "password": PASSWORD}),
                        ("/api/nl/v1/tenants", {"id": "fam-9"})):
        r = portal.client.post(path, json={**extra, **body}, headers=admin)
        assert r.status_code == 422, (path, r.text)
        assert "control characters" in r.json()["detail"], r.text
    from nightlink.cloud.store.base import NotFoundError

    with pytest.raises(NotFoundError):
        portal.store.user_by_email("new@example.org")


def test_pages_run_no_script_and_no_answer_is_sniffed(portal):
    """Should stored text ever slip past the templates' escaping, a portal page still runs
    nothing; a JSON answer or a download is never read as a page."""
    page = get(portal, "doc@example.org", f"/portal/p/fam-1?end={END}&days=3")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy
    for path in ("/portal", f"/portal/p/fam-1?end={END}", f"/portal/p/fam-1/report.csv?end={END}",
                 "/api/nl/v1/auth/me", "/t/fam-1/api/v1/status.json", "/no/such/page"):
        r = get(portal, "doc@example.org", path)
        assert r.headers["x-content-type-options"] == "nosniff", path


@pytest.mark.parametrize(("referer", "back"), [
    ("https://evil.example/portal/p/fam-1?end=2026-01-15", "/portal/p/fam-1?end=2026-01-15"),
    ("https://evil.example/phish", "/portal"), ("", "/portal"), ("//evil.example/x", "/portal"),
    ("http://[::1", "/portal"),
])
def test_the_units_form_returns_to_a_page_of_this_server(portal, referer, back):
    r = portal.client.post("/portal/settings/units", data={"units": "mmol/L"},
                           headers={**portal.auth("doc@example.org"), "Referer": referer},
                           follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == back


def test_the_api_reference_pages_are_served_in_development_only(tmp_path):
    """Swagger UI loads its scripts from a CDN into the origin of the session cookies."""
    from fastapi.testclient import TestClient

    from nightlink.cloud.app import create_app
    from nightlink.cloud.config import Settings

    for env, want in (("production", 404), ("development", 200)):
        app = create_app(Settings(env=env, database_url=f"sqlite:///{tmp_path / env}.db",
                                  jwt_secret=JWT_SECRET))
        with TestClient(app) as client:
            assert client.get("/docs").status_code == want
            assert client.get("/redoc").status_code == want
            assert client.get("/openapi.json").status_code == 200
        app.state.store.close()
