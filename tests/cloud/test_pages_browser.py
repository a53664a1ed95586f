"""The morning card, insights across nights and sharing in real headless Chromium, over a
stored fortnight: a patient (reading mmol/L), a caregiver and a doctor open them at 390 px (a
phone) and 1280 px, reach them from the app and from the portal's header, the patient invites
someone whom a second browser context lets in through the link page, and a new person signs
up and confirms the address from the mailed link. axe-core finds no serious or critical
violation, there are no console errors and nothing is wider than the screen. Screenshots go
to out/test-artifacts/. One server and one browser serve the whole module."""

import contextlib
import email
import email.policy
import json
import random
import re
import time
from datetime import date, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

import pytest
from websockets.sync.client import connect

from nightlink.cloud.auth import hash_password
from nightlink.cloud.reports import settings as report_settings
from nightlink.shared import units
from nightlink.tools.bench.report import synth_day_streams, synth_night
from tests.support.browser import ARTIFACTS, DevTools, chromium, open_page, serious
from tests.support.servers import serve
from tests.support.services import free_port
from tests.support.waiting import until

from .conftest import PASSWORD, make_app

PEOPLE = {"pat@example.org": "patient", "care@example.org": "caregiver",
          "doc@example.org": "doctor"}
FIRST = date(2026, 1, 1)
DAYS = 14
APNEA_NIGHT = FIRST + timedelta(days=9)  # 35 breathing events an hour: an unusual night


def fortnight(data) -> None:
    """14 days of CGM and room rows in Europe/Berlin, a 3-hour sleep recording every night
    (one with many apneas), lows on every third day and evening carbs as treatments."""
    report_settings.set_patient_settings(data, tz="Europe/Berlin")
    tz, rng = ZoneInfo("Europe/Berlin"), random.Random(9)
    for i in range(DAYS):
        day = FIRST + timedelta(days=i)
        synth_day_streams(data, day, tz, rng, low_at=(3, 10) if i % 3 == 0 else None)
        synth_night(data, day, tz, rng, hours=3.0, apnea_per_h=35 if day == APNEA_NIGHT else 5)
        at = int(datetime.combine(day, dtime(19, 30), tz).timestamp() * 1000)
        data.add_documents("treatments", [{"eventType": "Meal Bolus", "carbs": 40 + 5 * (i % 4),
                                           "insulin": 4, "created_at": at, "date": at}])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The cloud under uvicorn with fam-1's fortnight, its patient, caregiver and doctor, and
    a person with no patient yet; mail goes to files."""
    from argon2 import PasswordHasher

    from nightlink.cloud import auth

    folder = tmp_path_factory.mktemp("pages")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = make_app(f"sqlite:///{folder / 'app.db'}", public_base_url=url,
                   mail_dir=str(folder / "mail"), smtp_host="")
    store = app.state.store
    store.create_tenant("fam-1", "Ann Example")
    with pytest.MonkeyPatch.context() as patch:  # the test-sized cost, as in conftest.py
        patch.setattr(auth, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024,
                                                      parallelism=1))
        password_hash = hash_password(PASSWORD)
    for mail, role in PEOPLE.items():
        store.grant("fam-1", store.create_user(mail, password_hash)["id"], role, by=None)
    store.create_user("friend@example.org", password_hash)
    store.set_units(store.user_by_email("pat@example.org")["id"], units.MMOLL)
    fortnight(store.tenant("fam-1"))
    with serve(app, port=port):
        app.url, app.mail_dir = url, folder / "mail"
        yield app
    store.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("chromium")
    with chromium(workdir) as page:
        page.workdir = workdir
        yield page


@contextlib.contextmanager
def second_context(first: DevTools):
    """A page in a new browser context of the same Chromium: its own cookies and storage,
    as a second person on another device."""
    port, path = (first.workdir / "chromium-profile" / "DevToolsActivePort").read_text().split()
    with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=20) as ws:
        def call(method, **params):
            ws.send(json.dumps({"id": 1, "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv(timeout=30))
                if msg.get("id") == 1:
                    assert "error" not in msg, msg
                    return msg["result"]

        context = call("Target.createBrowserContext")["browserContextId"]
        target = call("Target.createTarget", url="about:blank",
                      browserContextId=context)["targetId"]
        page = open_page(port, lambda t: t["id"] == target)
        try:
            yield page
        finally:
            page.close()
            call("Target.disposeBrowserContext", browserContextId=context)


# -- helpers -----------------------------------------------------------------------------------


def text(page, selector: str) -> str:
    return page.eval(f"(document.querySelector({selector!r}) || {{}}).textContent || ''")


def submit(page, selector: str) -> None:
    """Submit a form (or the form of a field) as a click on its button does, and wait for
    the page it leads to."""
    page.events = [e for e in page.events if e.get("method") != "Page.loadEventFired"]
    page.eval(f"(e => (e.form || e).requestSubmit())(document.querySelector({selector!r}))")
    page.wait("Page.loadEventFired")


def follow(page, selector: str) -> None:
    """Click a link and wait for the page."""
    page.events = [e for e in page.events if e.get("method") != "Page.loadEventFired"]
    page.eval(f"document.querySelector({selector!r}).click()")
    page.wait("Page.loadEventFired")


def sign_in(page, site, mail: str) -> str:
    page.load(f"{site.url}/portal/login")
    page.eval(f"document.querySelector('input[name=email]').value = {mail!r};"
              f"document.querySelector('input[name=password]').value = {PASSWORD!r}")
    submit(page, "main form")
    return page.eval("location.pathname")


def check(page, name: str, widths=(390, 1280)) -> None:
    """At each width: nothing wider than the screen, axe-core clean, no console error, a
    screenshot kept."""
    for width in widths:
        page.viewport(width, 900)
        assert page.eval("document.documentElement.scrollWidth") <= width, (name, width)
        assert serious(page.axe()) == [], (name, width)
        png = page.screenshot(ARTIFACTS / f"pages-{name}-{width}.png")
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert page.errors() == [], name


def header_links(page) -> dict[str, str]:
    return json.loads(page.eval(
        "JSON.stringify(Object.fromEntries([...document.querySelectorAll('header.top a')]"
        ".map(a => [a.textContent.trim(), a.getAttribute('href')])))"))


# -- the morning card --------------------------------------------------------------------------


@pytest.mark.parametrize("who", list(PEOPLE))
def test_morning_card__one_tap_from_the_app_and_the_portal(site, browser, who):
    page = browser
    page.events.clear()
    landing = sign_in(page, site, who)
    role = PEOPLE[who]
    if role == "doctor":
        assert landing == "/portal"
        page.load(f"{site.url}/portal/p/fam-1")  # the report; its header leads on
        assert header_links(page)["Last night"] == "/portal/p/fam-1/morning"
        follow(page, "header.top a[href$='/morning']")
    else:
        assert landing.startswith("/app")
        page.load(f"{site.url}/app/fam-1")
        until(lambda: page.eval("document.body.dataset.ready === '1'"), 20, "the app's data")
        assert page.eval("document.getElementById('to-sharing').hidden") == (role != "patient")
        follow(page, "#to-morning")  # one tap
    assert page.eval("location.pathname") == "/portal/p/fam-1/morning"
    last = (FIRST + timedelta(days=DAYS - 2)).isoformat()  # the last day has no next morning
    assert f"the night of {last}" in text(page, "h1")
    body = text(page, "main")
    assert "Sleep score" in body and "How the score is made" in body
    unit = units.MMOLL if role == "patient" else units.MGDL
    assert f"Mean glucose at night ({unit})" in body
    links = header_links(page)
    assert links["Insights"] == "/portal/p/fam-1/insights"
    assert links["App"] == "/app/fam-1" and links["Report"] == "/portal/p/fam-1"
    assert ("Sharing" in links) == (role == "patient")
    check(page, f"morning-{role}")
    follow(page, "nav[aria-label=Nights] a")  # the night before
    assert f"the night of {(FIRST + timedelta(days=DAYS - 3)).isoformat()}" in text(page, "h1")
    assert page.errors() == []


# -- insights ----------------------------------------------------------------------------------


def q_marks_agree(page) -> bool:
    """Rows marked q < 0.05 are exactly those whose q-value is below 0.05."""
    rows = json.loads(page.eval(
        "JSON.stringify([...document.querySelectorAll('#associations tbody tr')].map(tr => "
        "[tr.classList.contains('sig'), tr.lastElementChild.textContent]))"))
    assert rows
    for marked, cell in rows:
        q = 0.0 if cell.strip().startswith("<") else float(cell.split()[0])
        assert marked == (q < 0.05) == ("q < 0.05" in cell), cell
    return True


@pytest.mark.parametrize("who", list(PEOPLE))
def test_insights__associations_unusual_nights_and_patterns(site, browser, who):
    page = browser
    page.events.clear()
    sign_in(page, site, who)
    role = PEOPLE[who]
    if role == "patient":
        page.load(f"{site.url}/app/fam-1")
        until(lambda: page.eval("document.body.dataset.ready === '1'"), 20, "the app's data")
        follow(page, "#to-insights")
    else:  # the header's link was checked with the morning card
        page.load(f"{site.url}/portal/p/fam-1/insights")
    assert page.eval("location.pathname") == "/portal/p/fam-1/insights"
    body = text(page, "main")
    assert "Associations are not causes" in body and "Benjamini" in body
    assert q_marks_agree(page)
    unit = units.MMOLL if role == "patient" else units.MGDL
    slopes = page.eval("[...document.querySelectorAll('#associations tbody tr')]"
                       ".map(tr => tr.children[5].textContent).join('|')")
    assert unit in slopes and (units.MGDL if unit == units.MMOLL else units.MMOLL) not in slopes
    assert "% per" in slopes or "Time in range" not in text(page, "#associations")
    # The night with many apneas is unusual, and its line leads to its morning card.
    apnea = f"a[href='/portal/p/fam-1/morning?night={APNEA_NIGHT.isoformat()}']"
    assert page.eval(f"!!document.querySelector({apnea!r})")
    # Recurring patterns: each with its times of day and its shape in the reader's unit.
    motifs = page.eval("document.querySelectorAll('#motifs > li').length")
    assert motifs >= 1
    labels = page.eval("[...document.querySelectorAll('#motifs svg[role=img]')]"
                       ".map(s => s.getAttribute('aria-label')).join('|')")
    assert labels.count(unit) == motifs and "starting around" in text(page, "#motifs")
    if unit == units.MMOLL:
        assert re.search(r"lowest \d+\.\d, highest \d+\.\d", labels), labels
    assert "Starting" in text(page, "#discord")
    check(page, f"insights-{role}")
    # On a phone the table scrolls sideways in its own focusable region, not the page.
    page.viewport(390, 900)
    region = json.loads(page.eval(
        "(() => { const r = document.querySelector('.scroll[role=region]');"
        " return JSON.stringify({tab: r.tabIndex, wide: r.scrollWidth > r.clientWidth,"
        " fits: r.getBoundingClientRect().right <= 390}); })()"))
    assert region == {"tab": 0, "wide": True, "fits": True}
    page.viewport(1280, 900)  # on a desktop the whole table shows, the q-values too
    assert page.eval("(r => r.scrollWidth <= r.clientWidth)"
                     "(document.querySelector('.scroll[role=region]'))")
    if role == "caregiver":
        follow(page, apnea)
        assert f"the night of {APNEA_NIGHT.isoformat()}" in text(page, "h1")
        assert "Possible sleep apnea" in text(page, "main") or "AHI" in text(page, "main")
    assert page.errors() == []


def test_report__shows_the_unusual_nights_and_patterns_of_the_insights(site, browser):
    """The doctor's report over the fortnight carries the insights' unusual nights (the apnea
    night among them, linked to its night page) and the recurring patterns with their charts,
    readable on a phone and a desktop."""
    page = browser
    page.events.clear()
    sign_in(page, site, "doc@example.org")
    page.load(f"{site.url}/portal/p/fam-1?end={(FIRST + timedelta(days=DAYS - 1)).isoformat()}")
    assert "Unusual nights and recurring glucose patterns" in text(page, "#insights-head")
    nights = json.loads(page.eval(
        "JSON.stringify([...document.querySelectorAll('#unusual tr[data-night]')]"
        ".map(tr => tr.dataset.night))"))
    assert APNEA_NIGHT.isoformat() in nights
    link = page.eval(f"(document.querySelector('#unusual tr[data-night=\"{APNEA_NIGHT}\"] a')"
                     " || {}).getAttribute?.('href') || ''")
    assert APNEA_NIGHT.isoformat() in link
    motifs = page.eval("document.querySelectorAll('#patterns > li').length")
    assert motifs >= 1 and page.eval("document.querySelectorAll('#patterns svg').length") >= motifs
    assert "Starting" in text(page, "#patterns") and "starting" in text(page, "#discord")
    check(page, "report-insights")


def test_insights__not_enough_nights_shown_as_such(site, browser):
    page = browser
    page.events.clear()
    sign_in(page, site, "care@example.org")
    page.load(f"{site.url}/portal/p/fam-1/insights?end={(FIRST + timedelta(days=4))}&nights=7")
    assert "Not enough nights yet: 6 with data, 10 needed" in text(page, "#assoc-not-enough")
    assert "Not enough nights yet" in text(page, "#unusual-not-enough")
    assert "Not enough days of glucose yet" in text(page, "#patterns-not-enough")
    assert page.eval("document.querySelector('#associations, #motifs') === null")
    check(page, "insights-not-enough", widths=(390,))


def test_insights__bad_input_is_refused_in_a_sentence(site, browser):
    page = browser
    sign_in(page, site, "doc@example.org")
    answers = json.loads(page.eval(
        "Promise.all(['/portal/p/fam-1/insights?end=2026-02-30', '/portal/p/fam-1/insights?"
        "nights=500', '/portal/p/fam-2/insights'].map(u => fetch(u).then(r => r.json()"
        ".then(b => [r.status, b.detail])))).then(JSON.stringify)", await_promise=True))
    assert answers[0] == [422, "end='2026-02-30' is not a night; use the date of its evening "
                          "as YYYY-MM-DD (2026-01-15), 1990 to 2099."]
    assert answers[1][0] == 422 and "120" in answers[1][1]
    assert answers[2] == [404, "No patient 'fam-2'."]


# -- sharing -----------------------------------------------------------------------------------


def test_sharing__an_invitation_accepted_in_a_second_browser(site, browser):
    page = browser
    page.events.clear()
    sign_in(page, site, "pat@example.org")
    page.load(f"{site.url}/app/fam-1")
    until(lambda: page.eval("document.body.dataset.ready === '1'"), 20, "the app's data")
    follow(page, "#to-sharing")
    assert page.eval("location.pathname") == "/portal/p/fam-1/sharing"
    assert "care@example.org" in text(page, "main") and "doc@example.org" in text(page, "main")
    check(page, "sharing-patient")
    page.eval("document.querySelector('select[name=role]').value = 'caregiver';"
              "document.querySelector('input[name=alerts]').checked = false")
    submit(page, "form input[value=invite]")
    link = page.eval("document.querySelector('#new-invite ~ p a').getAttribute('href')")
    assert link.startswith(f"{site.url}/portal/invite/")
    assert "(read only)" in text(page, "main")  # the open invitation
    check(page, "sharing-invited")

    with second_context(page) as other:
        other.load(link)
        assert other.eval("location.pathname").startswith("/portal/invite/")
        check(other, "invite")
        other.eval("document.querySelector('input[name=email]').value = 'friend@example.org';"
                   f"document.querySelector('input[name=password]').value = {PASSWORD!r}")
        submit(other, "main form")
        assert "You now follow Ann Example's data as a caregiver, read only" in text(
            other, "main")
        check(other, "invite-accepted")
        follow(other, "main a[href='/app/fam-1']")
        until(lambda: other.eval("document.body.dataset.ready === '1'"), 20, "the app's data")
        assert other.eval("document.getElementById('to-sharing').hidden")
    store = site.state.store
    friend = store.user_by_email("friend@example.org")
    assert store.role("fam-1", friend["id"]) == "caregiver"
    page.load(f"{site.url}/portal/p/fam-1/sharing")
    assert "friend@example.org" in text(page, "main")
    assert page.errors() == []


def test_sharing__a_token_for_a_follower_made_and_revoked(site, browser):
    """The family makes a follower's access token on the sharing page (narrow screens too:
    the long read link wraps), the link reads the site, and Revoke shuts it out."""
    page = browser
    page.events.clear()
    sign_in(page, site, "pat@example.org")
    page.load(f"{site.url}/portal/p/fam-1/sharing")
    page.eval("document.querySelector('input[name=name]').value = 'Grandma\\'s phone';"
              "document.querySelector('select[name=may]').value = 'read'")
    submit(page, "form input[value=token]")
    link = page.eval("document.querySelector('#readers ~ p code').textContent")
    assert link.startswith(f"{site.url}/t/fam-1?token=")
    check(page, "sharing-token")
    entries = link.replace("?token=", "/api/v1/entries.json?count=1&token=")
    fetch = f"fetch({entries!r}).then(r => r.status)"
    assert page.eval(fetch, await_promise=True) == 200
    assert "Grandma's phone" in text(page, "#readers ~ table")
    submit(page, "#readers ~ table form")
    assert "The access token was revoked" in text(page, "main")
    assert page.eval(fetch, await_promise=True) == 401
    assert page.errors() == ["Failed to load resource: the server responded with a status of "
                             "401 (Unauthorized)"]  # that last fetch's, nothing else


def test_sharing__caregiver_may_not_open_the_page(site, browser):
    page = browser
    sign_in(page, site, "care@example.org")
    status = page.eval("fetch('/portal/p/fam-1/sharing').then(r => r.status)",
                       await_promise=True)
    assert status == 403


# -- sign-up and the mailed link -------------------------------------------------------------


def test_signup__the_mailed_link_confirms_the_address(site, browser):
    with second_context(browser) as page:
        page.load(f"{site.url}/portal/login")
        answer = json.loads(page.eval(
            "fetch('/api/nl/v1/signup', {method: 'POST', headers: {'Content-Type': "
            "'application/json'}, body: JSON.stringify({email: 'new@example.org', password: "
            f"{PASSWORD!r}, name: 'Nora New'}})}}).then(r => r.json()).then(JSON.stringify)",
            await_promise=True))
        assert answer["verification_sent"] is True, answer
        tenant = answer["tenant_id"]
        mails = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                 for p in site.mail_dir.glob("*.eml")]
        [msg] = [m for m in mails if m["To"] == "new@example.org"]
        [link] = re.findall(r"http\S+/portal/verify\?token=\S+",
                            msg.get_body(("plain",)).get_content())
        page.load(link)
        check(page, "verify")
        submit(page, "main form")
        assert "Your address is confirmed" in text(page, "main")
        check(page, "verified")
        assert sign_in(page, site, "new@example.org").startswith("/app")
        until(lambda: page.eval("document.body.dataset.ready === '1'"), 20, "the app's data")
        assert page.eval("location.pathname") == f"/app/{tenant}"
        assert not page.eval("document.getElementById('to-sharing').hidden")
        follow(page, "#to-sharing")
        assert page.eval("!!document.querySelector('input[value=invite]')")  # may share now
        assert page.errors() == []


# -- the Nightscout API from a browser ---------------------------------------------------------


def test_nightscout_api__a_browser_polling_gets_each_new_reading(site, browser):
    """A browser-based Nightscout client (Nightscout Reporter, a clock's settings page, a
    follower web page) polling the same URL gets each new reading, not an answer its HTTP
    cache kept: Last-Modified alone lets Chromium reuse a reply for a tenth of its age
    (heuristic freshness), hours for a fortnight-old newest entry."""
    page = browser
    page.events.clear()
    page.load(f"{site.url}/portal/login")
    data = site.state.store.tenant("fam-1")
    _, token = data.subjects.create("web follower", ["readable"])
    hour_ago = int(time.time() * 1000) - 3_600_000
    data.add_entries([{"type": "sgv", "sgv": 123, "date": hour_ago, "direction": "Flat"}])
    # nothing written for an hour (a phone out of range): the reply's Last-Modified is old
    site.state.store.db.execute("UPDATE ns_docs SET srv_modified = ? WHERE tenant_id = ?",
                                (hour_ago, "fam-1"))
    url = f"/t/fam-1/api/v1/entries.json?count=1&token={token}"
    get = f"fetch({url!r}).then(r => r.json()).then(b => [b[0].sgv, b[0].date])"
    assert page.eval(get, await_promise=True) == [123, hour_ago]
    data.add_entries([{"type": "sgv", "sgv": 321, "date": hour_ago + 3_540_000,
                       "direction": "Flat"}])
    assert page.eval(get, await_promise=True) == [321, hour_ago + 3_540_000]
    assert page.errors() == []
