"""How apps reach a cloud tenant: `/t/{tenant}`, a subdomain, or the root URL where the
credential names the tenant (apps that replace the URL's path: Loop, Trio, AndroidAPS's JWT
request, xDrip+'s follower). Every API secret and token belongs to exactly one tenant, so the
root URL can never show another tenant's data.
"""

import asyncio
import hashlib

import pytest
from fastapi.testclient import TestClient

from nightlink.cloud.app import create_app
from nightlink.cloud.auth import hash_password
from nightlink.cloud.config import Settings
from nightlink.cloud.store import ConflictError
from tests.support.nightscout import JWT_SECRET, OTHER_SECRET, SECRET_SHA1, now_ms
from tests.support.sockets import Recorder

OTHER = {"api-secret": hashlib.sha1(OTHER_SECRET.encode()).hexdigest()}


def test_root_url__the_credential_names_the_tenant(cloud_ns):
    ns = cloud_ns
    t = now_ms() - 60_000
    ns.client.post(f"{ns.root}/api/v1/entries", headers={"api-secret": SECRET_SHA1},
                   json={"type": "sgv", "sgv": 101, "date": t})
    ns.client.post(f"{ns.root}/api/v1/entries", headers=OTHER,
                   json={"type": "sgv", "sgv": 202, "date": t})
    mine = ns.client.get(f"{ns.root}/api/v1/entries.json", headers={"api-secret": SECRET_SHA1})
    theirs = ns.client.get(f"{ns.root}/api/v1/entries.json", headers=OTHER)
    assert [e["sgv"] for e in mine.json()] == [101]
    assert [e["sgv"] for e in theirs.json()] == [202]
    by_path = ns.client.get(f"{ns.root}/t/fam-1/api/v1/entries.json", params={
        "token": ns.read_token}).json()
    assert [e["sgv"] for e in by_path] == [101]
    # fam-2's secret on fam-1's path is refused, not answered with fam-2's data
    cross = ns.client.get(f"{ns.root}/t/fam-1/api/v1/entries.json", headers=OTHER)
    assert cross.status_code == 401
    anonymous = ns.client.get(f"{ns.root}/api/v1/entries.json")
    assert anonymous.status_code == 401 and "Name the site" in anonymous.json()["description"]
    # a site nobody has is answered as a site the credential is wrong for: names are not
    # found out by probing (tests/nightscout/test_socket_access.py)
    assert ns.client.get(f"{ns.root}/t/nope/api/v1/entries.json",
                         headers={"api-secret": SECRET_SHA1}).status_code == 401


def test_subdomain__names_the_tenant_for_http_and_socket_io(tmp_path):
    settings = Settings(env="test", database_url=f"sqlite:///{tmp_path / 'c.db'}",
                        jwt_secret=JWT_SECRET, tenant_domain="nightlink.example")
    app = create_app(settings)
    store = app.state.store
    store.create_tenant("fam-1", "One")
    store.set_api_secret("fam-1", "a-long-upload-secret")
    sha1 = hashlib.sha1(b"a-long-upload-secret").hexdigest()
    with TestClient(app, base_url="http://fam-1.nightlink.example") as c:
        c.post("/api/v1/entries", headers={"api-secret": sha1},
               json={"type": "sgv", "sgv": 111, "date": now_ms()})
        got = c.get("/api/v1/entries.json", headers={"api-secret": sha1}).json()
        assert [e["sgv"] for e in got] == [111]
        assert c.get("/api/v3/version").json()["result"]["apiVersion"] == "3.0.3-alpha"
        home = c.head("/", follow_redirects=False)  # the tenant's own app, not the list
        assert (home.status_code, home.headers["location"]) == (302, "/app/fam-1")
    assert app.state.nightscout.directory.site_key_for_host("fam-1.nightlink.example:443") \
        == "fam-1"
    # www is the domain's own site (the portal), not a tenant; nor is a deeper name
    with TestClient(app, base_url="http://www.nightlink.example") as c:
        home = c.head("/", follow_redirects=False)
        assert home.headers.get("location") != "/app/www"
        assert c.get("/api/v1/entries.json", headers={"api-secret": sha1}).json()[0]["sgv"] == 111
    for host in ("www.nightlink.example", "a.fam-1.nightlink.example", "nightlink.example"):
        assert app.state.nightscout.directory.site_key_for_host(host) is None, host
    with pytest.raises(ConflictError, match="kept for the site's own address"):
        store.create_tenant("www", "Portal")
    store.close()


def test_member_sign_in_token__at_the_root_for_a_member_of_one_tenant(cloud_ns):
    ns = cloud_ns
    store = ns.app.state.store
    pat = store.create_user("pat@example.org", hash_password("correct horse battery"))
    store.grant("fam-1", pat["id"], "patient", by=None)
    login = ns.client.post(f"{ns.root}/api/nl/v1/auth/login",
                           json={"email": "pat@example.org",
                                 "password": "correct horse battery"}).json()
    bearer = {"Authorization": f"Bearer {login['access_token']}"}
    r = ns.client.post(f"{ns.root}/api/v1/treatments", headers=bearer,
                       json={"eventType": "Note", "notes": "from the patient"})
    assert r.status_code == 200
    assert ns.count("treatments") == 1
    store.grant("fam-2", pat["id"], "caregiver", by=None)
    # a member of two tenants must name one
    assert ns.client.get(f"{ns.root}/api/v1/treatments", headers=bearer).status_code == 401
    assert ns.client.get(f"{ns.root}/t/fam-2/api/v1/treatments", headers=bearer
                         ).status_code == 200
    assert ns.client.post(f"{ns.root}/t/fam-2/api/v1/treatments", headers=bearer,
                          json={"eventType": "Note"}).status_code == 401  # caregivers read


def test_socket_io__a_tenant_namespace_never_sees_another_tenant(cloud_ns):
    ns = cloud_ns

    async def run():
        mine, theirs = Recorder(), Recorder()
        await mine.connect(ns.root, ["/t/fam-1"])
        await theirs.connect(ns.root, ["/"])
        a = await mine.call("authorize", {"secret": SECRET_SHA1}, "/t/fam-1")
        b = await theirs.call("authorize", {"secret": OTHER["api-secret"]}, "/")
        assert a["read"] and b["read"]
        await mine.next("/t/fam-1", "dataUpdate")
        await theirs.next("/", "dataUpdate")
        await asyncio.to_thread(ns.client.post, f"{ns.root}/api/v1/entries",
                                headers={"api-secret": SECRET_SHA1},
                                json={"type": "sgv", "sgv": 123, "date": now_ms()})
        delta = await mine.next("/t/fam-1", "dataUpdate")
        assert [s["mgdl"] for s in delta["sgvs"]] == [123]
        await asyncio.sleep(0.5)
        assert theirs.pending("/", "dataUpdate") == 0
        # fam-2's secret on fam-1's namespace: disconnected, never answered
        intruder = Recorder()
        await intruder.connect(ns.root, ["/t/fam-1"])
        try:
            await intruder.call("authorize", {"secret": OTHER["api-secret"]}, "/t/fam-1",
                                timeout=3)
            answered = True
        except Exception:  # noqa: BLE001 - a timeout or a disconnect: both refuse
            answered = False
        assert not answered
        for r in (mine, theirs, intruder):
            await r.close()

    asyncio.run(run())
