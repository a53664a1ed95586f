"""`nightlink edge token` and `nightlink cloud token`: access tokens for apps, shown once, that
the Nightscout APIs then accept with the chosen role."""

import re

from click.testing import CliRunner
from fastapi.testclient import TestClient

from nightlink.cli import main

TOKEN = re.compile(r"shown once: (\S+)$")


def test_edge_token__admin_token_exchanged_for_a_jwt(tmp_path):
    db = tmp_path / "edge.db"
    r = CliRunner().invoke(main, ["edge", "token", "aaps", "--role", "admin", "--db", str(db)])
    assert r.exit_code == 0, r.output
    token = TOKEN.search(r.output.strip()).group(1)
    assert token.startswith("aaps-")
    from nightlink.edge.node.nightscout_site import create_app
    from nightlink.edge.store import EdgeStore

    store = EdgeStore(db)
    with TestClient(create_app(store, "a-long-edge-secret")) as c:
        jwt = c.get(f"/api/v2/authorization/request/{token}").json()["token"]
        st = c.get("/api/v3/status", headers={"Authorization": f"Bearer {jwt}"}).json()
    assert st["result"]["apiPermissions"]["treatments"] == "crud"
    store.close()
    bad = CliRunner().invoke(main, ["edge", "token", "x" * 65, "--db", str(db)])
    assert bad.exit_code == 2 and bad.output.startswith("error: ")


def test_cloud_token__for_a_tenant_and_refused_for_none(tmp_path, monkeypatch):
    monkeypatch.setenv("NIGHTLINK_DATABASE_URL", f"sqlite:///{tmp_path / 'c.db'}")
    runner = CliRunner()
    assert runner.invoke(main, ["cloud", "create-tenant", "fam-1"]).exit_code == 0
    r = runner.invoke(main, ["cloud", "token", "fam-1", "clock"])
    assert r.exit_code == 0, r.output
    token = TOKEN.search(r.output.strip()).group(1)
    from nightlink.cloud.app import create_app
    from nightlink.cloud.config import Settings

    app = create_app(Settings(env="test", database_url=f"sqlite:///{tmp_path / 'c.db'}",
                              jwt_secret="x" + "0123456789abcdef" * 3))
    with TestClient(app) as c:
        assert c.get("/api/v1/entries.json", params={"token": token}).status_code == 200
        assert c.post("/api/v1/treatments", params={"token": token}, json={}).status_code == 401
    app.state.store.close()
    r = runner.invoke(main, ["cloud", "token", "nope", "clock"])
    assert r.exit_code == 2 and r.output.strip() == "error: No tenant 'nope'."
