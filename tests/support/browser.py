"""Real headless Chromium (Debian `chromium`) driven over the DevTools protocol: load pages,
evaluate script, resize the viewport, take full-page screenshots, collect console errors, and
run axe-core (the npm package, from node_modules) against the page.

    with chromium(tmp_path) as page:
        page.load(url)
        page.viewport(390, 844)
        assert page.errors() == []
        assert serious(page.axe()) == []
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "out" / "test-artifacts"


class DevTools:
    """A minimal DevTools-protocol client for one page."""

    def __init__(self, ws_url: str):
        self.ws = connect(ws_url, max_size=64 * 2**20, open_timeout=20)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, *, session: str | None = None, **params) -> dict:
        """A command to the page, or to another target attached with `flatten` (its
        `session`: a service worker, for instance)."""
        self.next_id += 1
        mine = self.next_id
        msg = {"id": mine, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
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

    def eval(self, expr: str, *, await_promise: bool = False):
        r = self.send("Runtime.evaluate", expression=expr, returnByValue=True,
                      awaitPromise=await_promise)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr[:200]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def viewport(self, width: int, height: int = 900) -> None:
        """Lay the page out at width CSS pixels, as a phone (390) or a desktop (1280)."""
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=width < 600)

    def screenshot(self, path: Path) -> bytes:
        m = self.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": m["width"], "height": m["height"],
                               "scale": 1})
        data = base64.b64decode(shot["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors seen so far."""
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

    def axe(self) -> list[dict]:
        """axe-core's violations on the page as it is now (injected on first use per page)."""
        if not AXE.exists():
            raise RuntimeError("axe-core is missing from node_modules: run `make test` (npm ci).")
        if not self.eval("typeof window.axe === 'object'"):
            self.eval(AXE.read_text())
        result = self.eval("axe.run(document, {resultTypes: ['violations']})"
                           ".then(r => JSON.stringify(r.violations))", await_promise=True)
        return json.loads(result)

    def close(self):
        self.ws.close()


def serious(violations: list[dict]) -> list[str]:
    """The serious and critical violations, one line each (rule, impact, first targets)."""
    return [f"{v['id']} ({v['impact']}): {v['help']} at "
            + ", ".join(" ".join(n["target"]) for n in v["nodes"][:3])
            for v in violations if v.get("impact") in ("serious", "critical")]


def open_page(port: int, which) -> DevTools:
    """A DevTools client for the first target `which(target)` accepts, among those Chromium
    lists on its debugging port, with the domains the tests read enabled."""
    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                               timeout=10))
    page = DevTools(next(t["webSocketDebuggerUrl"] for t in targets if which(t)))
    for domain in ("Page", "Runtime", "Log"):
        page.send(f"{domain}.enable")
    return page


@contextlib.contextmanager
def chromium(workdir: Path, width: int = 1280, height: int = 1000) -> Iterator[DevTools]:
    """A headless Chromium with its own profile under workdir; yields its first page."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError("Chromium is needed for the browser tests; run `make test` "
                           "(it installs the report packages) or apt-get install chromium.")
    profile = workdir / "chromium-profile"
    log_path = workdir / "chromium.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         f"--window-size={width},{height}", "about:blank"], stdout=log, stderr=log)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None:
                raise RuntimeError("chromium exited: " + log_path.read_text())
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        page = open_page(port, lambda t: t["type"] == "page")
        try:
            yield page
        finally:
            page.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
