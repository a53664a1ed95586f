"""The portal in real headless Chromium (Debian `chromium`), driven over the DevTools protocol:
sign in through the form, open the patient list, a 14-day report and a night; no console
errors, the AGP chart drawn, screenshots kept under out/test-artifacts/."""

import base64
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import uvicorn
from websockets.sync.client import connect

from nightlink.cloud.app import create_app
from nightlink.cloud.auth import hash_password
from nightlink.cloud.config import Settings
from tests.support.services import free_port

from .conftest import JWT_SECRET, PASSWORD
from .test_portal import END, fill

ARTIFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class DevTools:
    """A minimal DevTools-protocol client for one page."""

    def __init__(self, ws_url: str):
        self.ws = connect(ws_url, max_size=64 * 2**20, open_timeout=20)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == mine:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait(self, name: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == name:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} within {timeout} s")
            self.events.append(json.loads(self.ws.recv(timeout=left)))

    def load(self, url: str) -> None:
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.send("Page.navigate", url=url)
        self.wait("Page.loadEventFired")

    def eval(self, expr: str):
        r = self.send("Runtime.evaluate", expression=expr, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self, path: Path) -> bytes:
        m = self.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": m["width"], "height": m["height"],
                               "scale": 1})
        data = base64.b64decode(shot["data"])
        path.write_bytes(data)
        return data

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error",
                                                                                    "assert"):
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in
                                    p.get("args", [])))
            elif e.get("method") == "Runtime.exceptionThrown":
                out.append(p["exceptionDetails"].get("text", "exception"))
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(p["entry"]["text"])
        return out

    def close(self):
        self.ws.close()


@pytest.fixture
def server(tmp_path):
    settings = Settings(env="test", database_url=f"sqlite:///{tmp_path / 'portal.db'}",
                        jwt_secret=JWT_SECRET, login_attempts_per_minute=1000)
    app = create_app(settings)
    store = app.state.store
    store.create_tenant("fam-1", "Ann Example")
    store.create_tenant("fam-2", "Bob Example")
    doc = store.create_user("doc@example.org", hash_password(PASSWORD))
    store.grant("fam-1", doc["id"], "doctor", by=None)
    fill(store, "fam-1", 6)
    fill(store, "fam-2", 1, seed=3)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(10)
    store.close()


@pytest.fixture
def page(tmp_path):
    profile = tmp_path / "chromium-profile"
    log = (tmp_path / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1280,1000", "about:blank"], stdout=log, stderr=log)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, "chromium exited: " + (tmp_path / "chromium.log").read_text()
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                                   timeout=10))
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        dt = DevTools(ws_url)
        for domain in ("Page", "Runtime", "Log"):
            dt.send(f"{domain}.enable")
        yield dt
        dt.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_portal_in_chromium(server, page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.load(f"{server}/portal/p/fam-1")  # no session: the sign-in form
    assert page.eval("location.pathname") == "/portal/login"
    page.events.clear()
    page.eval("document.querySelector('input[name=email]').value = 'doc@example.org';"
              f"document.querySelector('input[name=password]').value = {PASSWORD!r};"
              "document.querySelector('form').submit()")
    page.wait("Page.loadEventFired")
    assert page.eval("location.pathname") == "/portal"
    assert page.eval("document.querySelectorAll('#patients tr[data-tenant]').length") == 1
    assert page.eval("document.querySelector('#patients tr[data-tenant]').dataset.tenant") \
        == "fam-1"
    page.screenshot(ARTIFACTS / "portal-patients.png")

    page.load(f"{server}/portal/p/fam-1?end={END}")
    assert page.eval("document.querySelectorAll('#agp-chart polygon').length") >= 2
    assert page.eval("document.querySelectorAll('#agp-chart .agp-median').length") >= 1
    box = page.eval("JSON.stringify(document.querySelector('#agp-chart')"
                    ".getBoundingClientRect())")
    assert json.loads(box)["width"] > 600 and json.loads(box)["height"] > 200
    assert page.eval("document.querySelectorAll('.dailies svg').length") == 14
    png = page.screenshot(ARTIFACTS / "portal-report.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000

    night = page.eval("Array.from(document.querySelectorAll('#nights a')).pop()"
                      ".getAttribute('href')")
    assert night == "/portal/p/fam-1/nights/2026-01-14"
    page.load(server + night)
    assert page.eval("document.querySelectorAll('#night-timeline .hypnogram').length") >= 1
    assert page.eval("document.querySelectorAll('#night-timeline .glucose').length") >= 1
    page.screenshot(ARTIFACTS / "portal-night.png")

    assert page.errors() == []  # no console errors or exceptions on any page so far
    page.eval("console.error('probe')")  # the collector itself sees errors
    page.send("Runtime.evaluate", expression="1")
    assert page.errors() == ["probe"]

    # The doctor was never granted fam-2: the browser gets the same 404 as for no patient.
    status = page.send("Runtime.evaluate", expression="fetch('/portal/p/fam-2').then(r => "
                       "r.status)", awaitPromise=True, returnByValue=True)["result"]["value"]
    assert status == 404
