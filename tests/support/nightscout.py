"""A Nightscout site under test: the cloud (one tenant among two) or the edge node, served by
a real uvicorn server, with the credentials each kind of app is given.

The conformance suite runs every client's requests against both. `site_url` is what a user
types into an app that keeps the URL's path (xDrip+'s uploader, nightguard, Spike, M5…):
the tenant's `/t/{tenant}` URL on the cloud, the root on the edge. `root` is the host root,
where apps that replace the path (Loop, Trio, AndroidAPS's JWT request, xDrip+'s follower)
send everything; the credential names the tenant there.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import socket
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from nightlink.nightscout.store import DocumentStore, Subjects
from tests.support.servers import serve

SECRET = "bedside-upload-secret-2026"
SECRET_SHA1 = hashlib.sha1(SECRET.encode()).hexdigest()
SECRET_SHA512 = hashlib.sha512(SECRET.encode()).hexdigest()
OTHER_SECRET = "the-other-family-secret-1"
JWT_SECRET = "test-secret-" + "x" + "0123456789abcdef" * 3
MIN = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def iso_s(ms: int) -> str:
    """ISO without milliseconds, as Loop writes it."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Site:
    kind: str  # "cloud" or "edge"
    root: str  # http://127.0.0.1:port
    site_url: str  # what a user types into an app that keeps the path
    docs: DocumentStore
    subjects: Subjects
    app: object
    dead_letters_of: object
    read_token: str = ""
    admin_token: str = ""
    careportal_token: str = ""
    other_sha1: str | None = None  # the other tenant's secret (cloud only)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def secret_header(self) -> dict:
        return {"api-secret": SECRET_SHA1}

    def dead_letters(self) -> list[dict]:
        return self.dead_letters_of()

    def count(self, coll: str) -> int:
        return self.docs.count(coll)

    def token(self, name: str, roles: list[str]) -> str:
        return self.subjects.create(name, roles)[1]

    def get(self, path: str, **kw) -> httpx.Response:
        return self.client.get(self._url(path), **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return self.client.post(self._url(path), **kw)

    def put(self, path: str, **kw) -> httpx.Response:
        return self.client.put(self._url(path), **kw)

    def delete(self, path: str, **kw) -> httpx.Response:
        return self.client.delete(self._url(path), **kw)

    def patch(self, path: str, **kw) -> httpx.Response:
        return self.client.patch(self._url(path), **kw)

    def _url(self, path: str) -> str:
        """A path beginning with / is under site_url; a full URL is used as it is."""
        return path if path.startswith("http") else self.site_url + path


@contextlib.contextmanager
def cloud_site(tmp_path: Path, database_url: str | None = None) -> Iterator[Site]:
    from nightlink.cloud.app import create_app
    from nightlink.cloud.config import Settings

    url = database_url or f"sqlite:///{tmp_path / 'cloud.db'}"
    # The apps' requests are replayed back to back: the upload pacing (tested on its own in
    # tests/nightscout/test_limits.py) would make a long module wait or answer 429.
    app = create_app(Settings(env="test", database_url=url, jwt_secret=JWT_SECRET,
                              login_attempts_per_minute=1000, upload_rate_per_min=0))
    store = app.state.store
    store.create_tenant("fam-1", "Family one")
    store.create_tenant("fam-2", "Family two")
    store.set_api_secret("fam-1", SECRET)
    store.set_api_secret("fam-2", OTHER_SECRET)

    def dead_letters() -> list[dict]:
        return [{"reason": d["reason"], "payload": bytes(d["payload"] or b"")}
                for d in store.dead_letters(limit=1000) if d["tenant_id"] == "fam-1"]

    with serve(app) as root:
        yield from _running(Site("cloud", root, f"{root}/t/fam-1", store.tenant("fam-1").docs,
                                 Subjects(store.db, "fam-1"), app, dead_letters,
                                 other_sha1=hashlib.sha1(OTHER_SECRET.encode()).hexdigest()))
    store.close()


@contextlib.contextmanager
def edge_site(tmp_path: Path) -> Iterator[Site]:
    from nightlink.edge.node.nightscout_site import create_app
    from nightlink.edge.store import EdgeStore
    from nightlink.nightscout.limits import Limits

    store = EdgeStore(tmp_path / "edge.db")
    store.db.loop_guard = True  # as while the live node runs: no statement on the event loop
    app = create_app(store, SECRET, limits=Limits(upload_rate_per_min=0))

    def dead_letters() -> list[dict]:
        return [{"reason": d["reason"], "payload": bytes(d["payload"] or b"")}
                for d in store.dead_letters()]

    with serve(app) as root:
        yield from _running(Site("edge", root, root, store.docs, store.subjects, app,
                                 dead_letters))
    store.close()


def _running(site: Site) -> Iterator[Site]:
    """The site with its access tokens made, its HTTP client closed after."""
    site.read_token = site.token("clock", ["readable"])
    site.admin_token = site.token("aaps", ["admin"])
    site.careportal_token = site.token("nightguard", ["readable", "careportal"])
    try:
        yield site
    finally:
        site.client.close()


# -- requests byte for byte -------------------------------------------------------------------


class Reply:
    """A reply read off the socket: status, headers (lower-case names), body (decoded from
    gzip or deflate as curl --compressed, Node's request or axios would)."""

    def __init__(self, status: int, headers: dict, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def wire(site: Site, method: str, target: str, lines=(), body: bytes | None = None,
         base: str | None = None) -> Reply:
    """Send this request line and these header lines byte for byte (clients that do not
    re-encode `[`, `]`, `$`, `\\` or `+`), under `base` (by default the URL a user types,
    the site URL), with Content-Length for a body and `Connection: close` unless given."""
    u = urlsplit(base or site.site_url)
    head = [f"{method} {u.path.rstrip('/')}{target} HTTP/1.1", f"Host: {u.netloc}", *lines]
    if body is not None:
        head.append(f"Content-Length: {len(body)}")
    if not any(line.lower().startswith("connection:") for line in lines):
        head.append("Connection: close")
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
        resp = http.client.HTTPResponse(s, method=method)
        resp.begin()
        data = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
    encoding = headers.get("content-encoding", "")
    if encoding == "gzip":
        data = gzip.decompress(data)
    elif encoding == "deflate":
        data = zlib.decompress(data)
    return Reply(resp.status, headers, data)


# -- sites anyone may read, and the types clients decode -------------------------------------

PUBLIC_SECRET = "public-family-secret-26"
PUB_H = {"api-secret": hashlib.sha1(PUBLIC_SECRET.encode()).hexdigest()}


def public_tenant(cloud: Site, name: str = "fam-pub") -> str:
    """A cloud tenant whose default role is readable (`create-tenant --public-read`), with
    PUBLIC_SECRET as its API secret; its site URL."""
    store = cloud.app.state.store
    store.create_tenant(name, "Public", public_read=True)
    store.set_api_secret(name, PUBLIC_SECRET)
    return f"{cloud.root}/t/{name}"


def is_int(v) -> bool:
    """What Go's encoding/json and Swift's JSONDecoder take as an integer."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
