"""The portal in real headless Chromium (Debian `chromium`), driven over the DevTools protocol
(tests/support/browser.py): sign in through the form, open the patient list, a 14-day report
and a night, each at a phone's width (390 px) and a desktop's (1280 px); no console errors,
no serious or critical axe-core violations, the AGP chart drawn, an urgent alert at the top,
the date pickers working, screenshots kept under out/test-artifacts/."""

import json

import pytest

from nightlink.cloud.auth import hash_password
from tests.support.browser import ARTIFACTS, chromium, serious
from tests.support.servers import serve

from .conftest import PASSWORD, make_app
from .test_portal import END, fill

WIDTHS = (390, 1280)


@pytest.fixture
def server(tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'portal.db'}")
    store = app.state.store
    store.create_tenant("fam-1", "Ann Example")
    store.create_tenant("fam-2", "Bob Example")
    doc = store.create_user("doc@example.org", hash_password(PASSWORD))
    store.grant("fam-1", doc["id"], "doctor", by=None)
    fill(store, "fam-1", 6)
    fill(store, "fam-2", 1, seed=3)
    store.tenant("fam-1").add_alert("urgent_low", "urgent", 1_768_442_400_000,
                                    "Urgent low: 46 mg/dL (below 54).", value=46, threshold=54,
                                    unit="mg/dL")
    with serve(app) as url:
        yield url
    store.close()


@pytest.fixture
def page(tmp_path):
    with chromium(tmp_path) as dt:
        yield dt


def check_widths(page, name: str) -> None:
    """The page as it is now at each width: a screenshot, no serious axe-core violation, and
    nothing wider than the window (no sideways scrolling of the whole page)."""
    for width in WIDTHS:
        page.viewport(width)
        png = page.screenshot(ARTIFACTS / f"portal-{name}-{width}.png")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert serious(page.axe()) == [], (name, width)
        overflow = page.eval("document.documentElement.scrollWidth")
        assert overflow <= width + 1, (name, width, overflow)
    page.viewport(1280)


def test_portal_in_chromium(server, page):
    page.load(f"{server}/portal/p/fam-1")  # no session: the sign-in form
    assert page.eval("location.pathname") == "/portal/login"
    check_widths(page, "login")
    page.events.clear()
    page.eval("document.querySelector('input[name=email]').value = 'doc@example.org';"
              f"document.querySelector('input[name=password]').value = {PASSWORD!r};"
              "document.querySelector('form').submit()")
    page.wait("Page.loadEventFired")
    assert page.eval("location.pathname") == "/portal"
    assert page.eval("document.querySelectorAll('#patients tr[data-tenant]').length") == 1
    assert page.eval("document.querySelector('#patients tr[data-tenant]').dataset.tenant") \
        == "fam-1"
    check_widths(page, "patients")

    page.load(f"{server}/portal/p/fam-1?end={END}")
    assert page.eval("document.querySelectorAll('#agp-chart polygon').length") >= 2
    assert page.eval("document.querySelectorAll('#agp-chart .agp-median').length") >= 1
    box = page.eval("JSON.stringify(document.querySelector('#agp-chart')"
                    ".getBoundingClientRect())")
    assert json.loads(box)["width"] > 600 and json.loads(box)["height"] > 200
    assert page.eval("document.querySelectorAll('.dailies svg').length") == 14
    # The urgent alert comes first on the page, above the report's heading.
    assert page.eval("document.querySelector('main').firstElementChild.id") == "urgent-alerts"
    assert "Urgent low: 46 mg/dL" in page.eval("document.querySelector('#urgent-alerts')"
                                               ".innerText")
    check_widths(page, "report")

    night = page.eval("Array.from(document.querySelectorAll('#nights a')).pop()"
                      ".getAttribute('href')")
    assert night == "/portal/p/fam-1/nights/2026-01-14"
    page.load(server + night)
    assert page.eval("document.querySelectorAll('#night-timeline .hypnogram').length") >= 1
    assert page.eval("document.querySelectorAll('#night-timeline .glucose').length") >= 1
    assert page.eval("document.querySelector('main').firstElementChild.id") == "urgent-alerts"
    check_widths(page, "night")

    # The night page's date field goes to another night; the report's to another period.
    page.events.clear()
    page.eval("document.querySelector('#night-date').value = '2026-01-13';"
              "document.querySelector('form#period').submit()")
    page.wait("Page.loadEventFired")
    assert page.eval("location.pathname") == "/portal/p/fam-1/nights/2026-01-13"
    page.load(f"{server}/portal/p/fam-1?end={END}")
    page.events.clear()
    page.eval("document.querySelector('#period-end').value = '2026-01-10';"
              "document.querySelector('#period-days').value = '7';"
              "document.querySelector('form#period').submit()")
    page.wait("Page.loadEventFired")
    assert page.eval("location.search") == "?end=2026-01-10&days=7"
    assert "2026-01-04 to 2026-01-10" in page.eval("document.querySelector('#period-summary')"
                                                   ".innerText")

    assert page.errors() == []  # no console errors or exceptions on any page so far
    page.eval("console.error('probe')")  # the collector itself sees errors
    page.send("Runtime.evaluate", expression="1")
    assert page.errors() == ["probe"]

    # The doctor was never granted fam-2: the browser gets the same 404 as for no patient.
    status = page.send("Runtime.evaluate", expression="fetch('/portal/p/fam-2').then(r => "
                       "r.status)", awaitPromise=True, returnByValue=True)["result"]["value"]
    assert status == 404
