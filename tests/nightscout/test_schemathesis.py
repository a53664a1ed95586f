"""schemathesis over the OpenAPI documents of the cloud (the Nightscout APIs and Nightlink's
own) and of the edge node (its Nightscout APIs): every operation, with generated paths,
queries and bodies, signed in as the uploader (the api-secret) and, for Nightlink's API, as
the tenant's patient (a Bearer token). No answer is a 5xx, every status and content type is
one the schema documents, and every JSON answer matches its schema."""

import hashlib

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from nightlink.cloud.app import create_app
from nightlink.cloud.auth import hash_password
from nightlink.cloud.config import Settings

SECRET = "schemathesis-upload-secret"
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance)


def _app(tmp, kind="cloud"):
    if kind == "edge":
        from nightlink.edge.node.nightscout_site import create_app as edge_app
        from nightlink.edge.store import EdgeStore

        store = EdgeStore(tmp / "e.db")
        app = edge_app(store, SECRET)
        app.state.store = store
        app.state.nightscout.failures.limit = 10**9
        return app
    app = create_app(Settings(env="test", database_url=f"sqlite:///{tmp / 'c.db'}",
                              jwt_secret="x" + "0123456789abcdef" * 3, login_attempts_per_minute=1000))
    store = app.state.store
    store.create_tenant("fam-1", "One")
    store.set_api_secret("fam-1", SECRET)
    user = store.create_user("pat@example.org", hash_password("correct horse battery"))
    store.grant("fam-1", user["id"], "patient", by=None)
    app.state.nightscout.failures.limit = 10**9
    return app


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    out = {kind: _app(tmp_path_factory.mktemp(kind), kind) for kind in ("cloud", "edge")}
    yield out
    for app in out.values():
        app.state.store.close()


@pytest.fixture(scope="module")
def patient_bearer(apps):
    from fastapi.testclient import TestClient

    with TestClient(apps["cloud"]) as c:
        r = c.post("/api/nl/v1/auth/login", json={"email": "pat@example.org",
                                                  "password": "correct horse battery"})
        return r.json()["access_token"]


def _operations():
    """(tier, method, path) of every operation of both schemas, for parametrize."""
    import tempfile
    from pathlib import Path

    ops = []
    for kind in ("cloud", "edge"):
        with tempfile.TemporaryDirectory() as tmp:
            app = _app(Path(tmp), kind)
            schema = schemathesis.openapi.from_asgi("/openapi.json", app)
            ops += sorted((kind, r.ok().method.upper(), r.ok().path)
                          for r in schema.get_all_operations())
            app.state.store.close()
    return ops


@pytest.fixture(scope="module")
def api_schemas(apps):
    out = {}
    for kind, app in apps.items():
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        for r in schema.get_all_operations():
            out[(kind, r.ok().method.upper(), r.ok().path)] = r.ok()
    return out


@pytest.mark.parametrize("kind, method, path", _operations())
def test_schemathesis__every_operation(api_schemas, patient_bearer, kind, method, path):
    if path == "/api/nl/v1/account" and method == "DELETE":
        pytest.skip("deleting the account would sign the rest of the run out")
    operation = api_schemas[(kind, method, path)]
    headers = {"api-secret": hashlib.sha1(SECRET.encode()).hexdigest()}
    if path.startswith(("/api/nl/", "/portal")):
        headers = {"Authorization": f"Bearer {patient_bearer}"}

    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
