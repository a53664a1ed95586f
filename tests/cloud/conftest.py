"""Fixtures for the cloud service: a real app over a real database, people and tenants."""

from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient

from nightlink.cloud.app import create_app
from nightlink.cloud.auth import hash_password
from nightlink.cloud.config import Settings
from nightlink.cloud.store import Store

JWT_SECRET = "test-secret-" + "x" + "0123456789abcdef" * 3


@pytest.fixture(autouse=True)
def _test_cost_argon2(monkeypatch):
    """Real argon2id at a test-sized cost: the cloud tests make many accounts. The production
    parameters are argon2-cffi's defaults (checked in test_auth)."""
    from argon2 import PasswordHasher

    from nightlink.cloud import auth

    monkeypatch.setattr(auth, "PRODUCTION_HASHER", auth._HASHER, raising=False)
    monkeypatch.setattr(auth, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024,
                                                         parallelism=1))
PASSWORD = "correct horse battery"


@dataclass
class Cloud:
    client: TestClient
    store: Store
    tokens: dict = field(default_factory=dict)

    def user(self, email: str, *, admin: bool = False, tenant: str | None = None,
             role: str | None = None) -> dict:
        """Create an account (and a membership); remember its access token by email."""
        user = self.store.create_user(email, hash_password(PASSWORD), is_admin=admin)
        if tenant:
            self.store.grant(tenant, user["id"], role, by=None)
        r = self.client.post("/api/nl/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        self.tokens[email] = r.json()["access_token"]
        return user

    def auth(self, email: str) -> dict:
        return {"Authorization": f"Bearer {self.tokens[email]}"}


def make_app(url: str, **settings):
    """The cloud app over the database at url, with the test secret and a lenient sign-in
    limit unless `settings` say otherwise."""
    settings.setdefault("login_attempts_per_minute", 1000)
    return create_app(Settings(env="test", database_url=url, jwt_secret=JWT_SECRET, **settings))


def make_cloud(url: str, **settings) -> Cloud:
    app = make_app(url, **settings)
    return Cloud(TestClient(app), app.state.store)


def _two_tenants(url: str):
    c = make_cloud(url)
    c.store.create_tenant("fam-1", "Family one")
    c.store.create_tenant("fam-2", "Family two")
    yield c
    c.client.close()
    c.store.close()


@pytest.fixture
def cloud(tmp_path):
    """The app on a fresh SQLite file, with tenants fam-1 and fam-2."""
    yield from _two_tenants(f"sqlite:///{tmp_path / 'cloud.db'}")


@pytest.fixture
def cloud_any(cloud_db_url):
    """The same, on each backend (SQLite and PostgreSQL)."""
    yield from _two_tenants(cloud_db_url)


@pytest.fixture
def people(cloud):
    """An admin, fam-1's patient, a caregiver and a doctor of fam-1, fam-2's patient."""
    cloud.user("admin@example.org", admin=True)
    cloud.user("pat@example.org", tenant="fam-1", role="patient")
    cloud.user("care@example.org", tenant="fam-1", role="caregiver")
    cloud.user("doc@example.org", tenant="fam-1", role="doctor")
    cloud.user("pat2@example.org", tenant="fam-2", role="patient")
    return cloud
