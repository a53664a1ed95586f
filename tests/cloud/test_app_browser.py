"""The patient app in real headless Chromium: a patient, a caregiver and a doctor sign in
through the portal's form at 390 px (a phone) and 1280 px; the reading, chart, alerts and
careportal work, a reading and an alert arrive over the live socket, axe-core finds no serious
or critical violation, no console errors; then the server stops and the service worker opens
the app with the last data. A treatment an uploader posts through the Nightscout API appears
live; acknowledgements and treatments made offline wait on the phone and are stored once when
the connection is back. Screenshots go to out/test-artifacts/."""

import base64
import contextlib
import hashlib
import json
import time
from types import SimpleNamespace

import httpx
import pytest

from nightlink.cloud.app import create_app
from nightlink.cloud.auth import hash_password
from nightlink.cloud.config import Settings
from nightlink.shared import lowrisk
from nightlink.tools.bench.report import put_glucose
from tests.support.browser import ARTIFACTS, chromium, serious
from tests.support.servers import serve
from tests.support.waiting import until

from .conftest import JWT_SECRET, PASSWORD
from .test_app import seed

UPLOAD_SECRET = "an-uploader-secret-1"
PEOPLE = {"pat@example.org": "patient", "care@example.org": "caregiver",
          "doc@example.org": "doctor"}


@pytest.fixture
def server(tmp_path):
    settings = Settings(env="test", database_url=f"sqlite:///{tmp_path / 'app.db'}",
                        jwt_secret=JWT_SECRET, login_attempts_per_minute=1000)
    app = create_app(settings)
    store = app.state.store
    store.create_tenant("fam-1", "Ann Example")
    for email, role in PEOPLE.items():
        user = store.create_user(email, hash_password(PASSWORD))
        store.grant("fam-1", user["id"], role, by=None)
    newest = seed(store, "fam-1")
    # The caregiver looks after a second patient whose sensor stopped 40 minutes ago.
    store.create_tenant("fam-2", "Ben Example")
    store.grant("fam-2", store.user_by_email("care@example.org")["id"], "caregiver", by=None)
    seed(store, "fam-2", last_age_min=40)
    store.set_api_secret("fam-1", UPLOAD_SECRET)
    with contextlib.ExitStack() as running:  # stop() ends the server mid-test (offline)
        url = running.enter_context(serve(app))
        yield SimpleNamespace(app=app, url=url, newest=newest, stop=running.close)
    store.close()


def ready(page) -> None:
    until(lambda: page.eval("document.body.dataset.ready === '1'"), 20, "the app's first data")


def sign_in(page, server, email) -> str:
    page.load(f"{server.url}/app")
    if page.eval("location.pathname") != "/portal/login":
        ready(page)
        page.eval("document.getElementById('sign-out').requestSubmit()")  # as a click does
        page.wait("Page.loadEventFired")
        # Signing out leaves nothing of the last person's data on the phone.
        until(lambda: cached_answers(page) == 0, 10, "the worker forgetting the answers")
    assert page.eval("location.pathname") == "/portal/login"
    page.eval(f"document.querySelector('input[name=email]').value = {email!r};"
              f"document.querySelector('input[name=password]').value = {PASSWORD!r};"
              "document.querySelector('form').submit()")
    page.wait("Page.loadEventFired")
    if page.eval("location.pathname").startswith("/app"):
        ready(page)
    return page.eval("location.pathname")


def cached_answers(page) -> int:
    """How many API answers the service worker keeps for offline use."""
    return page.eval("caches.open('nightlink-data-v1').then(c => c.keys()).then(k => k.length)",
                     await_promise=True)


def check_page(page, name: str, width: int) -> None:
    """At this width: nothing wider than the screen, axe-core clean, a screenshot kept."""
    page.viewport(width, 900)
    page.eval("window.dispatchEvent(new Event('resize'))")
    assert page.eval("document.documentElement.scrollWidth") <= width, name
    chart = json.loads(page.eval("JSON.stringify(document.getElementById('glucose-chart')"
                                 ".getBoundingClientRect())"))
    assert 0 < chart["width"] <= width and chart["height"] > 150, (name, chart)
    assert serious(page.axe()) == [], name
    png = page.screenshot(ARTIFACTS / f"app-{name}-{width}.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def text(page, element_id: str) -> str:
    return page.eval(f"document.getElementById({element_id!r}).textContent")


def click(page, selector: str) -> None:
    page.eval(f"document.querySelector({selector!r}).click()")


def alert_count(page) -> int:
    return page.eval("document.querySelectorAll('#alerts li').length")


def network_errors_only(errors: list[str], *statuses) -> list[str]:
    """The errors that are not the browser's own notes of expected answers or refusals."""
    expected = tuple(f"status of {s}" for s in statuses) + ("ERR_CONNECTION_REFUSED",
                                                           "WebSocket connection")
    return [e for e in errors if not any(x in e for x in expected)]


def test_app_in_chromium(server, tmp_path):
    started = time.monotonic()
    store = server.app.state.store
    with chromium(tmp_path) as page:
        page.viewport(390, 844)
        # -- the patient, on a phone ------------------------------------------------------
        assert sign_in(page, server, "pat@example.org") == "/app/fam-1"
        ready(page)
        assert text(page, "value") == "114" and text(page, "arrow") == "→"
        assert text(page, "delta").startswith("−6 mg/dL") and "min ago" in text(page, "age")
        assert page.eval("document.getElementById('stale').hidden")
        assert page.eval("document.querySelectorAll('#glucose-chart circle').length") >= 36
        labels = page.eval("[...document.querySelectorAll('#glucose-chart text[data-mgdl]')]"
                           ".map(t => t.dataset.mgdl).join()")
        assert {"70", "180"} <= set(labels.split(",")), labels  # the range, on a phone too
        assert page.eval("document.querySelectorAll('#glucose-chart .fc').length") == 1
        at = int(lowrisk.ALARM_PERMILLE / 10 + 0.5)  # the page's Math.round of the percent
        assert text(page, "forecast").startswith(
            "In 30 minutes about 111 mg/dL; predicted-low risk 27 % (the low alarm sounds at "
            f"{at} % with a forecast below 90 mg/dL; reading of ")
        assert page.eval("document.querySelectorAll('#glucose-chart .treatment').length") == 1
        assert page.eval("[...document.querySelectorAll('#alerts li')]"
                         ".map(li => li.className).join()") == "urgent,warning"
        check_page(page, "patient", 390)
        # Last night's card one tap away; sharing for the patient only.
        assert page.eval("document.getElementById('to-morning').getAttribute('href')") \
            == "/portal/p/fam-1/morning"
        assert not page.eval("document.getElementById('to-sharing').hidden")

        click(page, "#alerts li.urgent button")  # acknowledge
        until(lambda: alert_count(page) == 1, 10, "the acknowledged alert leaving the list")
        assert store.tenant("fam-1").alerts(unacked=True)[0]["level"] == "warning"

        page.events.clear()
        page.eval("document.getElementById('care-type').value = 'Carb Correction';"
                  "document.getElementById('care-type').dispatchEvent(new Event('change'));"
                  "document.getElementById('care-carbs').value = '0';"
                  "document.getElementById('care').requestSubmit()")
        until(lambda: text(page, "care-error"), 10, "the careportal's error")
        assert text(page, "care-error").startswith("Carb Correction at ")
        assert text(page, "care-error").endswith(
            " · 0 g was not saved: carbs must lie between 1 and 300 g, not 0.")
        assert network_errors_only(page.errors(), 422) == []  # the browser notes the 422
        page.events.clear()
        page.eval("document.getElementById('care-carbs').value = '15';"
                  "document.getElementById('care-notes').value = 'juice';"
                  "document.getElementById('care').requestSubmit()")
        until(lambda: page.eval("document.querySelectorAll('#glucose-chart .treatment')"
                                ".length") == 2, 10, "the new treatment on the chart")
        assert "Carb Correction: 15 g · juice" in text(page, "treatments")
        assert text(page, "care-error") == ""

        click(page, "input[value='mmol/L']")
        until(lambda: text(page, "value") == "6.3", 10, "the reading in mmol/L")
        assert text(page, "unit-label") == "mmol/L"
        click(page, ".hours button[data-hours='24']")
        until(lambda: page.eval("document.querySelector('.hours button[data-hours=\"24\"]')"
                                ".getAttribute('aria-pressed')") == "true", 5, "24 h chosen")

        # Live: a new reading and a new alert arrive over the WebSocket.
        until(lambda: page.eval("document.body.dataset.live === 'open'"), 20, "the socket")
        before = text(page, "forecast")
        put_glucose(store.tenant("fam-1"), [(int(time.time() * 1000), 108)])
        until(lambda: text(page, "value") == "6.0", 15, "the live reading (108 mg/dL)")
        # the forecast follows: the model on the hour ending at the new reading, in mmol/L
        until(lambda: text(page, "forecast") not in (before, "") and "mmol/L" in text(
            page, "forecast"), 15, "the forecast of the live reading")
        assert "mg/dL" not in text(page, "forecast")
        data = store.tenant("fam-1")
        alert_id = data.add_alert("urgent_low", "urgent", int(time.time() * 1000),
                                  "Glucose 50 mg/dL is below 54 mg/dL.")
        server.app.state.events.publish("fam-1", "alert", {**data.alert(alert_id),
                                                           "at_ms": int(time.time() * 1000)})
        until(lambda: alert_count(page) == 2, 15, "the live alert")
        assert page.eval("document.querySelector('#alerts li').dataset.alert") == str(alert_id)
        # the cloud's words are in mg/dL; the person reads mmol/L
        assert "Glucose 2.8 mmol/L is below 3.0 mmol/L." in page.eval(
            "document.querySelector('#alerts li').textContent")
        assert "mg/dL" not in page.eval("document.getElementById('alerts').textContent")
        assert page.eval("document.getElementById('level').hidden")  # 108: in range
        # A low in words as well as colour, an urgent one apart from a mild one.
        t_low = int(time.time() * 1000)
        put_glucose(data, [(t_low, 50)])
        until(lambda: text(page, "value") == "2.8", 15, "the live low (50 mg/dL)")
        assert text(page, "level") == "Urgent low"
        assert page.eval("document.getElementById('level').classList.contains('urgent')")
        check_page(page, "patient-urgent-low", 390)
        put_glucose(data, [(t_low + 1000, 65)])
        until(lambda: text(page, "value") == "3.6", 15, "the live low (65 mg/dL)")
        assert text(page, "level") == "Low"
        assert not page.eval("document.getElementById('level').classList.contains('urgent')")
        put_glucose(data, [(t_low + 2000, 107)])
        until(lambda: text(page, "value") == "5.9", 15, "back in range")
        assert page.eval("document.getElementById('level').hidden")
        assert network_errors_only(page.errors()) == []
        assert [e for e in page.errors() if "status of" in e] == []
        page.screenshot(ARTIFACTS / "app-patient-live-390.png")

        # -- the caregiver, on a desktop ------------------------------------------------
        page.viewport(1280, 900)
        page.events.clear()
        page.load(f"{server.url}/app/fam-1")  # under the worker: the answers are kept
        ready(page)
        until(lambda: cached_answers(page) > 0, 20, "the worker keeping the app's answers")
        assert sign_in(page, server, "care@example.org") == "/app/fam-1"
        ready(page)
        # the caregiver's own unit, mg/dL (the worker's kept answer may show first)
        until(lambda: text(page, "value") == "107", 15, "the newest reading")
        left = json.loads(page.eval("JSON.stringify(document.getElementById('now')"
                                    ".getBoundingClientRect())"))
        right = json.loads(page.eval("JSON.stringify(document.getElementById('alerts-card')"
                                     ".getBoundingClientRect())"))
        assert right["left"] >= left["right"]  # two columns
        assert page.eval("document.querySelectorAll('#alerts li button').length") == 2
        assert not page.eval("document.getElementById('care').hidden")
        assert page.eval("document.getElementById('to-sharing').hidden")
        check_page(page, "caregiver", 1280)
        # Two patients: a picker; the second one's reading is stale and has no forecast.
        assert not page.eval("document.querySelector('.patient-pick').hidden")
        page.eval("const pick = document.getElementById('patient'); pick.value = 'fam-2';"
                  "pick.dispatchEvent(new Event('change'))")
        page.wait("Page.loadEventFired")
        ready(page)
        assert page.eval("location.pathname") == "/app/fam-2"
        assert page.eval("document.getElementById('now').classList.contains('stale')")
        assert text(page, "stale") == "No new reading for 40 min: this value is old."
        assert page.eval("document.getElementById('stale').classList.contains('urgent')")
        assert text(page, "forecast").startswith("No forecast")
        assert page.eval("document.querySelectorAll('#glucose-chart .fc').length") == 0
        check_page(page, "caregiver-stale", 1280)
        assert page.errors() == []

        # -- the doctor: lands on the portal, reads the app ------------------------------
        page.events.clear()
        assert sign_in(page, server, "doc@example.org") == "/portal"
        page.load(f"{server.url}/app/fam-1")
        ready(page)
        assert page.eval("document.querySelectorAll('#alerts li button').length") == 0
        assert page.eval("document.getElementById('care').hidden")
        assert not page.eval("document.getElementById('care-readonly').hidden")
        assert page.eval("document.getElementById('to-portal').getAttribute('href')") \
            == "/portal/p/fam-1"
        check_page(page, "doctor", 1280)
        check_page(page, "doctor", 390)
        assert page.errors() == []

        # -- offline: the service worker opens the app with the last data ----------------
        until(lambda: page.eval("!!navigator.serviceWorker.controller"), 20,
              "the service worker taking control")
        page.load(f"{server.url}/app/fam-1")  # this time every answer passes the worker
        ready(page)
        server.stop()
        page.events.clear()
        page.load(f"{server.url}/app/fam-1")
        until(lambda: text(page, "status").startswith("offline — last data from "), 20,
              "the offline note")
        assert text(page, "value") == "107"
        assert network_errors_only(page.errors()) == []
        page.screenshot(ARTIFACTS / "app-offline-390.png")
    assert time.monotonic() - started < 90


# -- live treatments and the outbox -------------------------------------------------------------


def offline(page, on: bool) -> None:
    """Cut the page off the network or give it back (what Playwright's set_offline does)."""
    page.send("Network.enable")
    page.send("Network.emulateNetworkConditions", offline=on, latency=0,
              downloadThroughput=-1, uploadThroughput=-1)


def pending(page) -> list[str]:
    return page.eval("document.getElementById('pending-card').hidden ? [] : "
                     "[...document.querySelectorAll('#pending li')].map(li => li.textContent)")


def fill_treatment(page, kind: str, field: str, value: str) -> None:
    page.eval(f"document.getElementById('care-type').value = {kind!r};"
              "document.getElementById('care-type').dispatchEvent(new Event('change'));"
              f"document.getElementById('care-{field}').value = {value!r};"
              "document.getElementById('care').requestSubmit()")


def test_app_live_treatments_and_offline_outbox(server, tmp_path):
    started = time.monotonic()
    data = server.app.state.store.tenant("fam-1")
    with chromium(tmp_path) as page:
        page.viewport(390, 844)
        assert sign_in(page, server, "care@example.org") == "/app/fam-1"
        until(lambda: page.eval("document.body.dataset.live === 'open'"), 20, "the socket")

        # An uploader (AndroidAPS, xDrip+) posts a treatment through the Nightscout API.
        now_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        posted = time.monotonic()
        r = httpx.post(f"{server.url}/t/fam-1/api/v1/treatments",
                       headers={"api-secret": hashlib.sha1(UPLOAD_SECRET.encode()).hexdigest()},
                       json=[{"eventType": "Carb Correction", "carbs": 22,
                              "created_at": now_iso, "enteredBy": "AndroidAPS"}])
        assert r.status_code == 200, r.text
        until(lambda: "Carb Correction: 22 g" in text(page, "treatments"), 5,
              "the uploaded treatment in the open app")
        live_s = time.monotonic() - posted
        assert page.eval("document.querySelectorAll('#glucose-chart .treatment').length") == 2

        # Offline: an acknowledgement, a correction and a bad entry wait on the phone.
        offline(page, True)
        until(lambda: not page.eval("navigator.onLine"), 5, "the page seeing it is offline")
        page.events.clear()
        click(page, "#alerts li.warning button")
        until(lambda: len(pending(page)) == 1, 10, "the acknowledgement waiting")
        fill_treatment(page, "Correction Bolus", "insulin", "1.5")
        until(lambda: len(pending(page)) == 2, 10, "the correction waiting")
        fill_treatment(page, "Carb Correction", "carbs", "0")  # refused once sent
        until(lambda: len(pending(page)) == 3, 10, "the bad entry waiting")
        assert page.eval("document.querySelector('#alerts li.warning button').textContent") \
            == "Waiting to send"
        assert text(page, "status").startswith("Offline: ")
        assert [t for t in data.documents("treatments", count=10)
                if t["eventType"] == "Correction Bolus"] == []
        assert len(data.alerts(unacked=True)) == 2
        assert serious(page.axe()) == []
        page.screenshot(ARTIFACTS / "app-outbox-390.png")

        # Back online: each is sent once; the refusal is shown and leaves the outbox.
        offline(page, False)
        until(lambda: pending(page) == [], 20, "the outbox emptying")
        corrections = [t for t in data.documents("treatments", count=20)
                       if t["eventType"] == "Correction Bolus"]
        assert len(corrections) == 1 and corrections[0]["insulin"] == 1.5, corrections
        assert corrections[0]["identifier"].startswith("nlapp-")
        assert [a["level"] for a in data.alerts(unacked=True)] == ["urgent"]
        until(lambda: "was not saved: carbs must lie between 1 and 300 g, not 0." in
              text(page, "care-error"), 10, "the refusal shown")
        until(lambda: "Correction Bolus: 1.5 U" in text(page, "treatments"), 10,
              "the sent correction in the list")
        assert page.eval("localStorage.getItem('nightlink-outbox-v1')") == "[]"
        # A retry whose answer was lost sends the same identifier: still stored once.
        again = {"eventType": "Correction Bolus", "insulin": 1.5,
                 "identifier": corrections[0]["identifier"],
                 "at_ms": int(time.time() * 1000) - 60_000}
        answer = page.eval(f"fetch('/app/api/fam-1/treatments', {{method: 'POST', "
                           f"headers: {{'Content-Type': 'application/json'}}, "
                           f"body: JSON.stringify({json.dumps(again)})}}).then(r => r.json())"
                           ".then(b => b.stored)", await_promise=True)
        assert answer is False
        assert len([t for t in data.documents("treatments", count=20)
                    if t["eventType"] == "Correction Bolus"]) == 1
        assert [e for e in page.errors() if "ERR_INTERNET_DISCONNECTED" not in e
                and "status of 422" not in e and "WebSocket connection" not in e] == []
        page.screenshot(ARTIFACTS / "app-outbox-sent-390.png")
    assert live_s < 3, live_s
    assert time.monotonic() - started < 60


CROSS_UNIT_AND_STATE = """(() => {
  // The 24-hour state answer is read by the server before the unit is stored, and reaches the
  // app only after the unit's PUT has been answered: the order a loaded server can produce.
  const real = window.fetch.bind(window);
  let answered, stored;
  const stateRead = new Promise((r) => { answered = r; });
  const unitStored = new Promise((r) => { stored = r; });
  window.crossed = false;
  window.fetch = async (input, init) => {
    const url = typeof input === "string" ? input : input.url;
    if (url.includes("/app/api/units") && init && init.method === "PUT") {
      await stateRead;
      const r = await real(input, init);
      const body = await r.text();
      stored();
      return new Response(body, {status: r.status, headers: r.headers});
    }
    if (url.includes("/state?hours=24")) {
      const r = await real(input, init);
      const body = await r.text();
      answered();
      await unitStored;
      await new Promise((ok) => setTimeout(ok, 100));  // the PUT's answer read by the app
      const copy = new Response(body, {status: r.status, headers: r.headers});
      const json = copy.json.bind(copy);
      // Set once the app has taken the answer (its handling runs before this task).
      copy.json = async () => {
        const v = await json();
        setTimeout(() => { window.crossed = true; }, 0);
        return v;
      };
      return copy;
    }
    return real(input, init);
  };
})()"""


def test_unit_kept_when_a_state_answer_crosses_its_storing(server, tmp_path):
    """A unit chosen just before another state request must not be undone by that answer
    when the server read the state before it stored the unit (it happened under load)."""
    with chromium(tmp_path) as page:
        page.viewport(390, 844)
        assert sign_in(page, server, "pat@example.org") == "/app/fam-1"
        ready(page)
        assert text(page, "value") == "114"
        page.eval(CROSS_UNIT_AND_STATE)
        click(page, "input[value='mmol/L']")
        click(page, ".hours button[data-hours='24']")
        until(lambda: page.eval("window.crossed"), 10, "the crossed answers")
        assert text(page, "value") == "6.3" and text(page, "unit-label") == "mmol/L"
        store = server.app.state.store
        assert store.units(store.user_by_email("pat@example.org")["id"]) == "mmol/L"


COUNT_STATE_ANSWERS = """(() => {
  // Counts the state answers the app has taken (its handling runs before the count).
  const real = window.fetch.bind(window);
  window.stateAnswers = 0;
  window.fetch = async (input, init) => {
    const r = await real(input, init);
    const url = typeof input === "string" ? input : input.url;
    if (url.includes("/state?")) {
      const json = r.json.bind(r);
      r.json = async () => {
        const v = await json();
        setTimeout(() => { window.stateAnswers += 1; }, 0);
        return v;
      };
    }
    return r;
  };
})()"""


def test_unit_chosen_offline_is_kept_and_stored_when_back(server, tmp_path):
    """A unit chosen while the phone is offline stays on the screen through the next state
    answer (which carries the stored, old unit), and is stored once the phone is back.
    (The page is cut off; its worker still reaches the server, so the answer is the
    server's own.)"""
    store = server.app.state.store
    patient = store.user_by_email("pat@example.org")["id"]
    with chromium(tmp_path) as page:
        page.viewport(390, 844)
        assert sign_in(page, server, "pat@example.org") == "/app/fam-1"
        until(lambda: page.eval("!!navigator.serviceWorker.controller"), 20, "the worker")
        page.load(f"{server.url}/app/fam-1")  # under the worker: the answers are kept
        ready(page)
        until(lambda: cached_answers(page) > 0, 20, "the worker keeping the app's answers")
        offline(page, True)
        until(lambda: not page.eval("navigator.onLine"), 5, "the page seeing it is offline")
        click(page, "input[value='mmol/L']")
        until(lambda: text(page, "status").startswith("Offline: the unit"), 10,
              "the note that the unit waits")
        assert text(page, "value") == "6.3"
        page.eval(COUNT_STATE_ANSWERS)
        click(page, ".hours button[data-hours='3']")  # a state load: the old unit in it
        until(lambda: page.eval("window.stateAnswers") > 0, 10, "the state answer taken")
        assert text(page, "value") == "6.3" and text(page, "unit-label") == "mmol/L"
        assert store.units(patient) is None
        page.load(f"{server.url}/app/fam-1")  # the app opened again, still offline
        ready(page)
        assert text(page, "value") == "6.3" and text(page, "unit-label") == "mmol/L"
        assert store.units(patient) is None
        offline(page, False)
        until(lambda: store.units(patient) == "mmol/L", 15, "the unit stored once back")
        assert text(page, "value") == "6.3"


# -- sounding alerts ---------------------------------------------------------------------------

BEEPS = ("window.__beeps = 0; window.__shown = [];"
         "const make = AudioContext.prototype.createOscillator;"
         "AudioContext.prototype.createOscillator = function () {"
         "  window.__beeps += 1; return make.call(this); };"
         "const show = ServiceWorkerRegistration.prototype.showNotification;"
         "ServiceWorkerRegistration.prototype.showNotification = function (title, options) {"
         "  return show.call(this, title, options).then("
         "    () => window.__shown.push([title, options.body, options.tag])); };")


def beeps(page) -> int:
    return page.eval("window.__beeps")


def tap(page, selector: str) -> None:
    """A real mouse click on an element (a user gesture: it lets the page play sound)."""
    box = json.loads(page.eval(f"JSON.stringify(document.querySelector({selector!r})"
                               ".getBoundingClientRect())"))
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for kind in ("mousePressed", "mouseReleased"):
        page.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


def test_app_sounds_new_alerts_on_a_device_that_asked(server, tmp_path):
    """Sound is chosen per device: then an alert opening while the page is open beeps (an
    urgent one three times, again every 20 s until acknowledged), and with the page behind
    others a system notification shows it; what was open at load, an acknowledged alert or a
    device that did not ask makes no sound."""
    store = server.app.state.store
    data = store.tenant("fam-1")

    def publish(rule, level, message):
        alert_id = data.add_alert(rule, level, int(time.time() * 1000), message)
        server.app.state.events.publish("fam-1", "alert", {**data.alert(alert_id)})
        return alert_id

    with chromium(tmp_path) as page:
        page.send("Browser.grantPermissions", permissions=["notifications"],
                  origin=server.url)
        page.send("Page.addScriptToEvaluateOnNewDocument", source=BEEPS)
        assert sign_in(page, server, "care@example.org") == "/app/fam-1"
        until(lambda: page.eval("document.body.dataset.live === 'open'"), 20, "the socket")
        until(lambda: page.eval("!!navigator.serviceWorker.controller"), 20, "the worker")
        assert alert_count(page) == 2 and beeps(page) == 0  # open at load: no sound
        assert text(page, "sound-state") == "Off."
        publish("low", "warning", "Low: 66 mg/dL (below 70).")
        until(lambda: alert_count(page) == 3, 15, "the live alert")
        assert beeps(page) == 0  # this device did not ask
        page.viewport(1280, 900)
        page.eval("document.getElementById('sound').scrollIntoView()")
        tap(page, "#sound")
        until(lambda: page.eval("Notification.permission") == "granted" and beeps(page) == 2,
              10, "the sample beeps")
        assert page.eval("ring.ctx.state") == "running"  # the tap let it play
        assert text(page, "sound-state") == "On."
        assert page.eval("document.getElementById('sound').getAttribute('aria-pressed')") \
            == "true"
        # an urgent alert, the page behind others: three beeps, rings on, a notification
        page.eval("Object.defineProperty(document, 'visibilityState', {value: 'hidden'})")
        n = beeps(page)  # (the urgent one open at load may ring again meanwhile: 3 more)
        urgent = publish("urgent_low", "urgent", "Urgent low: 48 mg/dL (below 54).")
        until(lambda: beeps(page) >= n + 3, 15, "the urgent beeps")
        assert page.eval("document.body.dataset.ringing") == "urgent"
        assert page.eval("ring.timer !== null")  # again every 20 s
        until(lambda: ["Urgent · Ann Example", "Urgent low: 48 mg/dL (below 54).",
                       f"nightlink-fam-1-{urgent}"] in page.eval("window.__shown"), 10,
              "the notification shown by the worker")
        # every urgent one acknowledged here (the one open at load too), offline: the
        # ringing stops while the acknowledgements wait to be sent
        offline(page, True)
        for alert_id in [a["id"] for a in data.alerts(unacked=True) if a["level"] == "urgent"]:
            assert page.eval("document.body.dataset.ringing") == "urgent"
            click(page, f"#alerts li[data-alert='{alert_id}'] button")
        until(lambda: page.eval("document.body.dataset.ringing") == "", 10, "quiet")
        assert page.eval("ring.timer === null")
        assert len(pending(page)) == 2
        offline(page, False)
        until(lambda: not [a for a in data.alerts(unacked=True) if a["level"] == "urgent"], 20,
              "the acknowledgements sent")
        assert page.eval("document.body.dataset.ringing") == ""
        # sound off on this device: a new alert is listed, silently
        tap(page, "#sound")
        until(lambda: text(page, "sound-state") == "Off.", 5, "sound off")
        before = beeps(page)
        publish("high", "warning", "High: 260 mg/dL (above 250).")
        until(lambda: "High: 260" in text(page, "alerts"), 15, "the high alert")
        assert beeps(page) == before
        assert [e for e in network_errors_only(page.errors())
                if "ERR_INTERNET_DISCONNECTED" not in e] == []  # only while it was offline


# The browser's own push service (Google's for Chromium) is on the internet, which this machine
# cannot reach, so PushManager's subscribe never answers here: the page is given a subscription
# whose endpoint is a push service on a loopback port (tests/cloud/test_push.py's), with keys
# whose private half the test holds. Everything else is real: the app posts the subscription,
# the cloud's alert worker raises an alert from an upload and pushes it encrypted and signed,
# the test decrypts it as the browser would and hands it to the service worker over DevTools
# (ServiceWorker.deliverPushMessage), which shows the notification.
PUSH_STUB = """(() => {
  const KEY = "test-push-subscription";
  const make = (j) => ({endpoint: j.endpoint,
    options: {applicationServerKey: Uint8Array.from(atob(j.ask), (c) => c.charCodeAt(0)).buffer},
    toJSON: () => ({endpoint: j.endpoint, expirationTime: null, keys: j.keys}),
    unsubscribe: async () => { localStorage.removeItem(KEY);
                               localStorage.setItem("test-push-unsubscribed", "1"); return true; }});
  PushManager.prototype.getSubscription = async function () {
    const j = localStorage.getItem(KEY); return j ? make(JSON.parse(j)) : null; };
  PushManager.prototype.subscribe = async function (options) {
    const key = new Uint8Array(options.applicationServerKey);
    const j = {endpoint: ENDPOINT, keys: KEYS, ask: btoa(String.fromCharCode(...key))};
    localStorage.setItem(KEY, JSON.stringify(j)); return make(j); };
})();"""


def test_app_alerts_reach_a_locked_phone_through_its_push_service(tmp_path):
    """Sound on subscribes the phone to its push service; an alert the cloud raises then
    comes to the service worker as an encrypted push and shows as the page's own
    notification; the app says how the last delivery went, and subscribes again under a new
    key; sound off and signing out end the subscription."""
    from nightlink.cloud import push
    from tests.cloud.test_push import Browser, PushService

    phone, service = Browser(), PushService()
    settings = Settings(env="test", database_url=f"sqlite:///{tmp_path / 'app.db'}",
                        jwt_secret=JWT_SECRET, login_attempts_per_minute=1000,
                        push_key=push.new_key(), push_hosts="127.0.0.1")
    app = create_app(settings)
    store = app.state.store
    store.create_tenant("fam-1", "Ann Example")
    for email, role in PEOPLE.items():
        store.grant("fam-1", store.create_user(email, hash_password(PASSWORD))["id"], role,
                    by=None)
    seed(store, "fam-1")
    store.set_api_secret("fam-1", UPLOAD_SECRET)
    endpoint = f"{service.url}/phone"
    stub = PUSH_STUB.replace("ENDPOINT", json.dumps(endpoint)).replace(
        "KEYS", json.dumps({"p256dh": phone.p256dh, "auth": phone.auth}))
    try:
        with serve(app) as url, chromium(tmp_path) as page:
            page.send("Browser.grantPermissions", permissions=["notifications"], origin=url)
            page.send("Page.addScriptToEvaluateOnNewDocument", source=stub)
            page.send("Page.addScriptToEvaluateOnNewDocument", source=(
                "window.__actions = [];"
                "const showing = ServiceWorkerRegistration.prototype.showNotification;"
                "ServiceWorkerRegistration.prototype.showNotification = function (t, o) {"
                "  window.__actions.push([o.tag, (o.actions || []).map(a => a.action)]);"
                "  return showing.call(this, t, o); };"))
            page.send("ServiceWorker.enable")
            assert sign_in(page, SimpleNamespace(url=url), "care@example.org") == "/app/fam-1"
            until(lambda: page.eval("!!navigator.serviceWorker.controller"), 20, "the worker")
            assert text(page, "push-state") == ""  # sound off: nothing asked
            page.eval("document.getElementById('sound').scrollIntoView()")
            tap(page, "#sound")
            until(lambda: text(page, "push-state").startswith("Locked phone: on"), 20,
                  "the subscription stored")
            [sub] = store.push_subscriptions("fam-1")
            assert (sub["endpoint"], sub["p256dh"]) == (endpoint, phone.p256dh)
            # an uploader's reading of 320: the alert worker raises a high and pushes it; the
            # open page, behind others, shows it too
            page.eval("Object.defineProperty(document, 'visibilityState', {value: 'hidden'})")
            r = httpx.post(f"{url}/api/v1/entries", headers={
                "api-secret": hashlib.sha1(UPLOAD_SECRET.encode()).hexdigest()},
                json=[{"type": "sgv", "sgv": 320, "date": int(time.time() * 1000),
                       "direction": "DoubleUp"}])
            assert r.status_code == 200, r.text

            def pushed_high():  # (the same check raises "rising fast" too, pushed apart)
                return next((m for m in (phone.read(b) for _p, _h, b in list(service.received))
                             if m["body"].startswith("High")), None)

            def notifications():
                return json.loads(page.eval(
                    "navigator.serviceWorker.ready.then(r => r.getNotifications()).then(n => "
                    "JSON.stringify(n.map(x => [x.title, x.body, x.tag, "
                    "x.actions.map(a => a.action)])))", await_promise=True))

            until(lambda: pushed_high() is not None, 20, "the high alert at the push service")
            high = pushed_high()
            raised = {a["id"]: a for a in store.tenant("fam-1").alerts(unacked=True)}
            assert high["title"] == "Ann Example" and high["urgent"] is False
            assert high["tag"] in {f"nightlink-fam-1-{i}" for i in raised}
            want = [high["title"], high["body"], high["tag"], ["ack"]]
            # the page's own notification of it is the push's twin (same tag, same button),
            # so whichever comes last, the button stays
            until(lambda: [high["tag"], ["ack"]] in page.eval("window.__actions"), 15,
                  "the page's notification, with its button")
            page.eval("navigator.serviceWorker.ready.then(r => r.getNotifications())"
                      ".then(n => n.forEach(x => x.close()))", await_promise=True)
            registration = next(e for e in reversed(page.events) if e.get("method") ==
                                "ServiceWorker.workerRegistrationUpdated")
            page.send("ServiceWorker.deliverPushMessage", origin=url, registrationId=registration[
                "params"]["registrations"][0]["registrationId"], data=json.dumps(high))
            until(lambda: want in notifications(), 10,
                  "the worker's notification, with its Acknowledge button")
            # its button acknowledges the alert (no page needed): the click is dispatched in
            # the service worker, as the system would on the lock screen
            high_id = int(high["tag"].rsplit("-", 1)[1])
            assert store.tenant("fam-1").alert(high_id)["acked_at"] is None
            worker = next(t for t in page.send("Target.getTargets")["targetInfos"]
                          if t["type"] == "service_worker")
            session = page.send("Target.attachToTarget", targetId=worker["targetId"],
                                flatten=True)["sessionId"]
            page.send("Runtime.evaluate", session=session, awaitPromise=True, expression=(
                "self.registration.getNotifications().then(ns => {"
                f" const n = ns.find(x => x.tag === {high['tag']!r});"
                " try { self.dispatchEvent(new NotificationEvent('notificationclick',"
                "   {notification: n, action: 'ack'})); } catch (err) { /* waitUntil */ }"
                " return n.data.ack; })"))
            until(lambda: store.tenant("fam-1").alert(high_id)["acked_at"] is not None, 10,
                  "the alert acknowledged from the notification")
            assert store.tenant("fam-1").alert(high_id)["acked_by"] == \
                store.user_by_email("care@example.org")["id"]
            until(lambda: high["tag"] not in page.eval(
                "navigator.serviceWorker.ready.then(r => r.getNotifications()).then(n => "
                "n.map(x => x.tag))", await_promise=True), 10,
                "the notification gone once acknowledged")
            # another alert of that check, pushed; then the news that it is over takes its
            # notification's place: quiet, no button
            other = next(a for a in store.tenant("fam-1").alerts(unacked=True)
                         if a["id"] != high_id)
            tag = f"nightlink-fam-1-{other['id']}"

            def deliver(doc):
                page.send("ServiceWorker.deliverPushMessage", origin=url,
                          registrationId=registration["params"]["registrations"][0][
                              "registrationId"], data=json.dumps(doc))

            def shown(tag):
                return json.loads(page.eval(
                    "navigator.serviceWorker.ready.then(r => r.getNotifications()).then(n => "
                    "JSON.stringify(n.filter(x => x.tag === " + json.dumps(tag) + ").map(x => "
                    "[x.body, x.silent, x.requireInteraction, x.actions.length])))",
                    await_promise=True))

            deliver(json.loads(push.message("fam-1", "Ann Example", other, ack=True)))
            until(lambda: shown(tag) == [[other["message"], False, False, 1]], 10,
                  "the other alert's notification")
            deliver(json.loads(push.closed_message("fam-1", "Ann Example",
                                                   {**other, "closed": "Over."})))
            until(lambda: shown(tag) == [[f"Over. Was: {other['message']}", True, False, 0]],
                  10, "the alert's notification replaced by the news that it is over")
            # shown again, and acknowledged with the app's button: the alert names this
            # browser's push endpoint (so its news goes to the family's other phones only),
            # and the page, told by its live feed, takes the notification off this phone
            deliver(json.loads(push.message("fam-1", "Ann Example", other, ack=True)))
            until(lambda: len(shown(tag)) == 1 and shown(tag)[0][3] == 1, 10, "shown again")
            page.eval(f"document.querySelector('#alerts li[data-alert=\"{other['id']}\"] "
                      "button').click()")
            until(lambda: store.tenant("fam-1").alert(other["id"])["acked_at"] is not None, 10,
                  "the alert acknowledged in the app")
            assert store.tenant("fam-1").alert(other["id"])["acked_endpoint"] == endpoint
            until(lambda: shown(tag) == [], 10, "the notification gone, closed by the page")
            # opened again: the app says the last alert reached the push service
            page.load(f"{url}/app/fam-1")
            ready(page)
            until(lambda: "the last alert reached the push service" in text(page, "push-state"),
                  20, "the delivery shown")
            # the operator changes the key: opened again, the phone subscribes under the new
            # one (the old subscription ended), and the cloud is told
            settings.push_key = push.new_key()
            page.load(f"{url}/app/fam-1")
            ready(page)
            until(lambda: page.eval("localStorage.getItem('test-push-unsubscribed')") == "1",
                  20, "the old subscription ended")
            asked = push.public_key(push.load_key(settings.push_key))
            until(lambda: page.eval("JSON.parse(localStorage.getItem("
                                    "'test-push-subscription') || 'null')?.ask") ==
                  base64.b64encode(push._unb64(asked)).decode(), 20, "the new key asked")
            until(lambda: text(page, "push-state").startswith("Locked phone: on"), 20,
                  "subscribed again")
            assert len(store.push_subscriptions("fam-1")) == 1
            page.eval("localStorage.removeItem('test-push-unsubscribed')")
            # sound off (one tap: it also lets the page play): the cloud forgets this phone
            page.eval("document.getElementById('sound').scrollIntoView()")
            tap(page, "#sound")
            until(lambda: not store.push_subscriptions("fam-1"), 10, "the subscription removed")
            assert page.eval("document.getElementById('sound').getAttribute('aria-pressed')") \
                == "false" and text(page, "push-state") == ""
            # ... and with the push service (no one's alerts reach this browser)
            until(lambda: page.eval("localStorage.getItem('test-push-unsubscribed')") == "1",
                  10, "the browser's subscription ended")
            # signing out ends the phone's subscription with its push service
            tap(page, "#sound")
            until(lambda: store.push_subscriptions("fam-1"), 20, "subscribed again")
            page.eval("localStorage.removeItem('test-push-unsubscribed')")
            page.eval("document.getElementById('sign-out').requestSubmit()")
            page.wait("Page.loadEventFired")
            assert page.eval("location.pathname") == "/portal/login"
            assert page.eval("localStorage.getItem('test-push-unsubscribed')") == "1"
            assert network_errors_only(page.errors()) == []
    finally:
        service.close()
        store.close()
