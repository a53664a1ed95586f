"""Sign-in, tokens, rate limits, settings that refuse default secrets."""

import pytest

from nightlink.cloud.config import SettingsError, load_settings
from tests.cloud.conftest import JWT_SECRET, PASSWORD, make_cloud

DB = "sqlite:///named-by-its-settings.db"  # production names its database


def test_auth__login_me_refresh(cloud):
    cloud.user("p@example.org", tenant="fam-1", role="patient")
    me = cloud.client.get("/api/nl/v1/auth/me", headers=cloud.auth("p@example.org")).json()
    assert me["email"] == "p@example.org" and me["tenants"][0]["tenant_id"] == "fam-1"
    r = cloud.client.post("/api/nl/v1/auth/login", json={"email": "p@example.org",
                                                          "password": PASSWORD})
    refresh = r.json()["refresh_token"]
    again = cloud.client.post("/api/nl/v1/auth/refresh", json={"refresh_token": refresh})
    assert again.status_code == 200
    reused = cloud.client.post("/api/nl/v1/auth/refresh", json={"refresh_token": refresh})
    assert reused.status_code == 401  # rotation: a refresh token works once


def test_auth__odd_text_in_sign_in_and_refresh_is_refused_not_a_5xx(cloud_any):
    """Found by fuzzing: a half emoji in a refresh token was a 500 (it cannot be encoded to
    check its signature), a NUL in an e-mail a 503 on PostgreSQL (its text holds none)."""
    cloud_any.user("p@example.org", tenant="fam-1", role="patient")
    for body in ('{"refresh_token": "\\ud800"}', '{"refresh_token": "a.b\\u0000.c"}'):
        r = cloud_any.client.post("/api/nl/v1/auth/refresh", content=body,
                                  headers={"Content-Type": "application/json"})
        assert r.status_code == 401, r.text
    for email in ("p\u0000@example.org", "p@example.org\u0000"):
        r = cloud_any.client.post("/api/nl/v1/auth/login",
                                  json={"email": email, "password": PASSWORD})
        assert r.status_code in (400, 401, 422), r.text
    r = cloud_any.client.get("/api/nl/v1/tenants/%00/nights",
                             headers=cloud_any.auth("p@example.org"))
    assert r.status_code in (403, 404), r.text
    r = cloud_any.client.post("/api/nl/v1/auth/login",
                              json={"email": "p@example.org", "password": PASSWORD})
    assert r.status_code == 200  # and nothing was broken for the real account


def test_auth__a_token_names_one_account_even_after_a_restore(tmp_path):
    """The database is restored from a backup taken before an account was made; the next
    account made gets that account's id again. The old account's sign-in token named only
    the id, so it signed in as the new one (an administrator here). It is refused now, and
    so is its refresh token, with words that say to sign in again."""
    import sqlite3

    db, backup = tmp_path / "cloud.db", tmp_path / "backup.db"
    first = make_cloud(f"sqlite:///{db}")
    first.user("admin@example.org", admin=True)
    with sqlite3.connect(db) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    first.user("carer@example.org")
    carer = first.auth("carer@example.org")
    refresh = first.client.post("/api/nl/v1/auth/login", json={
        "email": "carer@example.org", "password": PASSWORD}).json()["refresh_token"]
    carer_id = first.client.get("/api/nl/v1/auth/me", headers=carer).json()["id"]
    first.client.close()
    first.store.close()

    restored = make_cloud(f"sqlite:///{backup}")
    restored.user("ops2@example.org", admin=True)
    me = restored.client.get("/api/nl/v1/auth/me", headers=restored.auth("ops2@example.org"))
    assert me.json()["id"] == carer_id  # the id is handed out again
    r = restored.client.get("/api/nl/v1/auth/me", headers=carer)
    assert r.status_code == 401 and r.json()["detail"] == "The account no longer exists."
    r = restored.client.post("/api/nl/v1/auth/refresh", json={"refresh_token": refresh})
    assert r.status_code == 401 and "sign in again" in r.json()["detail"]
    restored.client.close()
    restored.store.close()


@pytest.mark.parametrize("header", [None, "Bearer nonsense", "Bearer "])
def test_auth__me_needs_a_valid_token(cloud, header):
    headers = {"Authorization": header} if header else {}
    assert cloud.client.get("/api/nl/v1/auth/me", headers=headers).status_code in (401, 403)


def test_auth__wrong_password_is_audited(cloud):
    cloud.user("p@example.org")
    r = cloud.client.post("/api/nl/v1/auth/login", json={"email": "p@example.org",
                                                          "password": "nope"})
    assert r.status_code == 401 and r.json()["detail"] == "Wrong email or password."
    assert cloud.store.audit_log()[0]["action"] == "login.failed"


def test_auth__login_rate_limited(tmp_path):
    c = make_cloud(f"sqlite:///{tmp_path / 'c.db'}", login_attempts_per_minute=3)
    codes = [c.client.post("/api/nl/v1/auth/login",
                           json={"email": "x@example.org", "password": "bad"}).status_code
             for _ in range(5)]
    assert codes == [401, 401, 401, 429, 429]
    r = c.client.post("/api/nl/v1/auth/login", json={"email": "x@example.org", "password": "b"})
    assert int(r.headers["Retry-After"]) >= 1


def test_auth__successful_sign_ins_are_not_counted_against_the_limit(tmp_path):
    """Setting up three edges and three clocks signs the same administrator in six times
    in a few minutes; a success used to count as an attempt, so the fourth was refused.
    Failures still count, and a success clears them."""
    c = make_cloud(f"sqlite:///{tmp_path / 'c.db'}", login_attempts_per_minute=3)
    c.user("admin@example.org", admin=True)
    good = {"email": "admin@example.org", "password": PASSWORD}
    bad = {"email": "admin@example.org", "password": "wrong"}
    codes = [c.client.post("/api/nl/v1/auth/login", json=good).status_code for _ in range(6)]
    assert codes == [200] * 6
    codes = [c.client.post("/api/nl/v1/auth/login", json=body).status_code
             for body in (bad, bad, good, bad, bad, bad, good)]
    assert codes == [401, 401, 200, 401, 401, 401, 429]


def test_settings__default_secret_refused_outside_development():
    with pytest.raises(SettingsError, match="NIGHTLINK_JWT_SECRET"):
        load_settings(env="production", database_url=DB, jwt_secret="changeme")
    assert load_settings(env="development", jwt_secret="changeme").env == "development"
    import random
    import secrets

    two = "".join(random.Random(5).choice("ab") for _ in range(40))  # 40 bits, no period
    lopsided = ("a" * 26 + "bcdef1", "a" * 79 + "b")  # varied enough by count, not by use
    for weak in ("a" * 32, "changeme" * 4, "0123456789" * 4, two, *lopsided):
        with pytest.raises(SettingsError, match="NIGHTLINK_JWT_SECRET repeats a few characters"):
            load_settings(env="production", database_url=DB, jwt_secret=weak)
    for _ in range(500):  # `openssl rand -hex 32` (the README's), -hex 16, token_urlsafe,
        load_settings(env="production", database_url=DB, jwt_secret=secrets.token_hex(32))  # 32 random digits
        load_settings(env="production", database_url=DB, jwt_secret=secrets.token_hex(16))
        load_settings(env="production", database_url=DB, jwt_secret=secrets.token_urlsafe(24))
        load_settings(env="production", database_url=DB, jwt_secret="".join(secrets.choice("0123456789")
                                                           for _ in range(32)))
    # A digit secret with 7 different digits (the old rule refused it about 1 time in 800)
    load_settings(env="production", database_url=DB, jwt_secret="31415926533141592653314159265331"[:31] + "4")


def test_settings__bad_database_url_names_the_variable():
    with pytest.raises(SettingsError, match="NIGHTLINK_DATABASE_URL"):
        load_settings(database_url="mysql://x")


def test_ops__health_ready_metrics(cloud):
    assert cloud.client.get("/healthz").json() == {"status": "ok"}
    assert cloud.client.get("/readyz").json()["status"] == "ready"
    r = cloud.client.get("/metrics")
    assert r.status_code == 200 and "nightlink_api_latency_seconds" in r.text
    assert r.headers.get("x-request-id")


def test_auth__production_hash_parameters_are_strong():
    from nightlink.cloud import auth

    real = auth.PRODUCTION_HASHER  # the module's own hasher, before the test-cost one
    assert real.time_cost >= 2 and real.memory_cost >= 19 * 1024
    assert real.hash("x").startswith("$argon2id$")


def test_auth__password_change_ends_other_sessions(cloud):
    cloud.user("p@example.org")
    r = cloud.client.post("/api/nl/v1/auth/login", json={"email": "p@example.org",
                                                          "password": PASSWORD})
    refresh = r.json()["refresh_token"]
    changed = cloud.client.post("/api/nl/v1/accounts/me/password",
                                json={"current_password": PASSWORD,
                                      "new_password": "a different long passphrase"},
                                headers=cloud.auth("p@example.org"))
    assert changed.status_code in (200, 204), changed.text
    assert cloud.client.post("/api/nl/v1/auth/refresh",
                             json={"refresh_token": refresh}).status_code == 401


def test_auth__admin_still_reaches_a_soft_deleted_tenant(cloud):
    cloud.user("admin@example.org", admin=True)
    cloud.user("p@example.org", tenant="fam-1", role="patient")
    cloud.store.set_tenant("fam-1", deleted_at=1.0)
    path = "/api/nl/v1/tenants/fam-1/nights"
    assert cloud.client.get(path, headers=cloud.auth("p@example.org")).status_code == 404
    assert cloud.client.get(path, headers=cloud.auth("admin@example.org")).status_code == 200


def test_ops__metrics_name_every_device_so_production_asks_a_token(tmp_path):
    """The series name every device of every tenant and when it last reported: served
    openly, they told anyone which bedside units exist and when they sleep."""
    from fastapi.testclient import TestClient

    from nightlink.cloud.app import create_app
    from nightlink.cloud.config import Settings

    token = "3f9c2a7be1d84f06a5c9e0b27d4f1a8c"
    for metrics_token, headers, want in (
            ("", {}, 403), (token, {}, 401), (token, {"Authorization": "Bearer nope"}, 401),
            (token, {"Authorization": f"Bearer {token}"}, 200)):
        app = create_app(Settings(env="production", jwt_secret=JWT_SECRET,
                                  database_url=f"sqlite:///{tmp_path / 'm.db'}",
                                  metrics_token=metrics_token))
        with TestClient(app) as client:
            r = client.get("/metrics", headers=headers)
            assert r.status_code == want, (metrics_token, headers, r.text)
            if want == 200:
                assert "nightlink_api_latency_seconds" in r.text
            else:
                assert "NIGHTLINK_METRICS_TOKEN" in r.json()["detail"]
        app.state.store.close()
    with pytest.raises(ValueError, match="NIGHTLINK_METRICS_TOKEN"):
        Settings(env="production", jwt_secret=JWT_SECRET, metrics_token="short")


def test_auth__a_refresh_token_spent_twice_ends_its_sign_in(cloud_any):
    """Rotation refused the second use of a copied refresh token, but whoever refreshed first
    (the thief, perhaps) kept a valid chain. Now a reuse ends every token of that sign-in;
    another sign-in of the same person goes on."""
    cloud_any.user("pat@example.org", tenant="fam-1", role="patient")
    login = {"email": "pat@example.org", "password": PASSWORD}
    stolen = cloud_any.client.post("/api/nl/v1/auth/login", json=login).json()["refresh_token"]
    other = cloud_any.client.post("/api/nl/v1/auth/login", json=login).json()["refresh_token"]
    thief = cloud_any.client.post("/api/nl/v1/auth/refresh", json={"refresh_token": stolen})
    assert thief.status_code == 200
    owner = cloud_any.client.post("/api/nl/v1/auth/refresh", json={"refresh_token": stolen})
    assert owner.status_code == 401 and "sign in again" in owner.json()["detail"]
    chain = cloud_any.client.post("/api/nl/v1/auth/refresh",
                                  json={"refresh_token": thief.json()["refresh_token"]})
    assert chain.status_code == 401  # the thief's rotated token ended with the reuse
    still = cloud_any.client.post("/api/nl/v1/auth/refresh", json={"refresh_token": other})
    assert still.status_code == 200  # the person's other sign-in (another device) goes on


def test_auth__two_refreshes_of_one_token_at_once_are_a_use_and_a_reuse(postgres_url):
    """On PostgreSQL two refreshes at the same moment both read the token unspent: both were
    answered, two live chains from one token. Now one spends it, the other is a reuse, and
    the reuse ends the sign-in, the first one's successor with it."""
    import threading

    from nightlink.cloud import auth
    from nightlink.cloud.store import Store

    store = Store.open(postgres_url)
    try:
        uid = store.create_user("a@example.org", "x", name="A")["id"]
        token = auth.issue_tokens(store, uid, JWT_SECRET, 15, 30)["refresh_token"]
        both_read, real_one = threading.Barrier(2), store.db.one

        def one(sql, params=()):
            row = real_one(sql, params)
            if "FROM refresh_tokens WHERE jti" in sql:
                both_read.wait(timeout=20)  # each has read it unspent
            return row

        store.db.one = one
        said = []

        def refresh():
            try:
                auth.refresh(store, token, JWT_SECRET, 15, 30)
                said.append("refreshed")
            except auth.AuthError:
                said.append("refused")

        threads = [threading.Thread(target=refresh) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        store.db.one = real_one
        assert sorted(said) == ["refreshed", "refused"]
        assert store.db.scalar("SELECT count(*) AS n FROM refresh_tokens "
                               "WHERE revoked_at IS NULL") == 0
    finally:
        store.close()
