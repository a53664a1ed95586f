"""Accounts, tenants, grants, revocation, the audit log and the doctor's multi-patient view."""

import pytest

from tests.cloud.conftest import PASSWORD

API = "/api/nl/v1"
NEW_PASSWORD = "a much longer passphrase"


def actions(cloud, tenant=None):
    return [r["action"] for r in cloud.store.audit_log(tenant)]


# -- accounts ----------------------------------------------------------------------------------


def test_accounts__admin_creates_account(people):
    r = people.client.post(f"{API}/accounts", headers=people.auth("admin@example.org"),
                           json={"email": "New@Example.org", "name": "New", "password": "x" * 12})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["email"] == "new@example.org" and body["is_admin"] is False
    assert "password" not in body and "password_hash" not in body
    stored = people.store.user_by_email("new@example.org")["password_hash"]
    assert stored.startswith("$argon2id$") and "x" * 12 not in stored
    assert people.store.audit_log()[0]["action"] == "account.create"
    login = people.client.post(f"{API}/auth/login",
                               json={"email": "new@example.org", "password": "x" * 12})
    assert login.status_code == 200


@pytest.mark.parametrize("who", ["pat@example.org", "doc@example.org"])
def test_accounts__only_admin_creates(people, who):
    r = people.client.post(f"{API}/accounts", headers=people.auth(who),
                           json={"email": "n@example.org", "password": "x" * 12})
    assert r.status_code == 403


@pytest.mark.parametrize("body", [
    {"email": "n@example.org", "password": "x" * 11},
    {"email": "not-an-email", "password": "x" * 12},
    {"email": "n@example.org"},
])
def test_accounts__invalid_input_refused(people, body):
    r = people.client.post(f"{API}/accounts", headers=people.auth("admin@example.org"), json=body)
    assert r.status_code == 422


def test_accounts__taken_email_conflicts(people):
    r = people.client.post(f"{API}/accounts", headers=people.auth("admin@example.org"),
                           json={"email": "pat@example.org", "password": "x" * 12})
    assert r.status_code == 409


def test_password__change_needs_current(people):
    h = people.auth("pat@example.org")
    wrong = people.client.post(f"{API}/accounts/me/password", headers=h,
                               json={"current_password": "nope", "new_password": NEW_PASSWORD})
    assert wrong.status_code == 403
    short = people.client.post(f"{API}/accounts/me/password", headers=h,
                               json={"current_password": PASSWORD, "new_password": "short"})
    assert short.status_code == 422
    ok = people.client.post(f"{API}/accounts/me/password", headers=h,
                            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert ok.status_code == 204 and ok.content == b""
    login = lambda pw: people.client.post(  # noqa: E731
        f"{API}/auth/login", json={"email": "pat@example.org", "password": pw}).status_code
    assert (login(PASSWORD), login(NEW_PASSWORD)) == (401, 200)
    assert "password.change" in actions(people)


def test_accounts__delete_me_ends_memberships_and_sign_in(people):
    h = people.auth("doc@example.org")
    assert people.client.delete(f"{API}/accounts/me", headers=h).status_code == 204
    assert people.client.get(f"{API}/auth/me", headers=h).status_code == 401
    login = people.client.post(f"{API}/auth/login",
                               json={"email": "doc@example.org", "password": PASSWORD})
    assert login.status_code == 401
    emails = [m["email"] for m in people.store.members("fam-1")]
    assert "doc@example.org" not in emails
    row = people.store.db.one("SELECT deleted_at FROM users WHERE email = ?", ("doc@example.org",))
    assert row["deleted_at"] is not None
    assert people.store.db.one("SELECT revoked_at FROM memberships WHERE user_id = "
                               "(SELECT id FROM users WHERE email = ?)",
                               ("doc@example.org",))["revoked_at"] is not None
    assert "account.delete" in actions(people)


def test_accounts__last_admin_cannot_delete_self(people):
    r = people.client.delete(f"{API}/accounts/me", headers=people.auth("admin@example.org"))
    assert r.status_code == 409


# -- tenants -------------------------------------------------------------------------------------


def test_tenants__admin_creates_with_new_patient(people):
    r = people.client.post(f"{API}/tenants", headers=people.auth("admin@example.org"),
                           json={"id": "fam-3", "name": "Family three",
                                 "patient_email": "p3@example.org", "patient_name": "Pat"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == "fam-3" and body["public_read"] is False and body["deleted_at"] is None
    assert body["patient"]["email"] == "p3@example.org" and body["initial_password"]
    login = people.client.post(f"{API}/auth/login", json={"email": "p3@example.org",
                                                          "password": body["initial_password"]})
    assert login.status_code == 200
    user = people.store.user_by_email("p3@example.org")
    assert people.store.role("fam-3", user["id"]) == "patient"
    assert body["initial_password"] not in user["password_hash"]
    assert actions(people, "fam-3") == ["tenant.create"]


def test_tenants__attach_existing_patient(people):
    r = people.client.post(f"{API}/tenants", headers=people.auth("admin@example.org"),
                           json={"id": "fam-3", "name": "Three", "public_read": True,
                                 "patient_email": "pat2@example.org"})
    assert r.status_code == 201
    assert r.json()["initial_password"] is None and r.json()["public_read"] is True
    uid = people.store.user_by_email("pat2@example.org")["id"]
    assert people.store.role("fam-3", uid) == "patient"


def test_tenants__with_chosen_patient_password(people):
    r = people.client.post(f"{API}/tenants", headers=people.auth("admin@example.org"),
                           json={"id": "fam-3", "name": "Three", "patient_email": "p3@example.org",
                                 "patient_password": NEW_PASSWORD})
    assert r.status_code == 201 and r.json()["initial_password"] is None
    login = people.client.post(f"{API}/auth/login",
                               json={"email": "p3@example.org", "password": NEW_PASSWORD})
    assert login.status_code == 200


@pytest.mark.parametrize("who,body,status", [
    ("pat@example.org", {"id": "fam-3", "name": "x"}, 403),
    ("admin@example.org", {"id": "fam-1", "name": "x"}, 409),
    ("admin@example.org", {"id": "Fam 3", "name": "x"}, 422),
    ("admin@example.org", {"id": "-fam", "name": "x"}, 422),
])
def test_tenants__create_refused(people, who, body, status):
    r = people.client.post(f"{API}/tenants", headers=people.auth(who), json=body)
    assert r.status_code == status


# -- members and grants ---------------------------------------------------------------------------


def test_members__lists_roles_without_secrets(people):
    r = people.client.get(f"{API}/tenants/fam-1/members", headers=people.auth("care@example.org"))
    assert r.status_code == 200
    roles = {m["email"]: m["role"] for m in r.json()}
    assert roles == {"pat@example.org": "patient", "care@example.org": "caregiver",
                     "doc@example.org": "doctor"}
    assert all(set(m) == {"user_id", "email", "name", "role", "granted_at", "alerts"}
               for m in r.json())


def test_members__other_tenant_is_not_found(people):
    r = people.client.get(f"{API}/tenants/fam-2/members", headers=people.auth("pat@example.org"))
    assert r.status_code == 404


@pytest.mark.parametrize("role", ["caregiver", "doctor"])
def test_grants__patient_grants_family_and_doctors(people, role):
    people.user("new@example.org")
    r = people.client.post(f"{API}/tenants/fam-1/grants", headers=people.auth("pat@example.org"),
                           json={"email": "new@example.org", "role": role})
    assert r.status_code == 201, r.text
    assert r.json()["role"] == role and r.json()["email"] == "new@example.org"
    entry = people.store.audit_log("fam-1")[0]
    assert entry["action"] == "grant" and entry["detail"]["role"] == role
    assert entry["actor_user_id"] == people.store.user_by_email("pat@example.org")["id"]
    members = people.client.get(f"{API}/tenants/fam-1/members",
                                headers=people.auth("new@example.org"))
    assert members.status_code == 200


@pytest.mark.parametrize("who", ["care@example.org", "doc@example.org"])
def test_grants__caregiver_and_doctor_cannot_grant(people, who):
    people.user("new@example.org")
    r = people.client.post(f"{API}/tenants/fam-1/grants", headers=people.auth(who),
                           json={"email": "new@example.org", "role": "caregiver"})
    assert r.status_code == 403
    assert people.store.role("fam-1", people.store.user_by_email("new@example.org")["id"]) is None


@pytest.mark.parametrize("role", ["patient", "admin"])
def test_grants__only_admin_grants_patient_or_admin(people, role):
    people.user("new@example.org")
    body = {"email": "new@example.org", "role": role}
    r = people.client.post(f"{API}/tenants/fam-1/grants", headers=people.auth("pat@example.org"),
                           json=body)
    assert r.status_code == 403
    r = people.client.post(f"{API}/tenants/fam-1/grants",
                           headers=people.auth("admin@example.org"), json=body)
    assert r.status_code == 201 and r.json()["role"] == role


def test_grants__patient_cannot_demote_or_revoke_a_patient(people):
    people.user("co@example.org", tenant="fam-1", role="patient")
    r = people.client.post(f"{API}/tenants/fam-1/grants", headers=people.auth("pat@example.org"),
                           json={"email": "co@example.org", "role": "caregiver"})
    assert r.status_code == 403
    uid = people.store.user_by_email("co@example.org")["id"]
    r = people.client.delete(f"{API}/tenants/fam-1/grants/{uid}",
                             headers=people.auth("pat@example.org"))
    assert r.status_code == 403 and people.store.role("fam-1", uid) == "patient"
    r = people.client.delete(f"{API}/tenants/fam-1/grants/{uid}",
                             headers=people.auth("admin@example.org"))
    assert r.status_code == 204 and people.store.role("fam-1", uid) is None


def test_grants__unknown_account_not_found(people):
    r = people.client.post(f"{API}/tenants/fam-1/grants", headers=people.auth("pat@example.org"),
                           json={"email": "ghost@example.org", "role": "doctor"})
    assert r.status_code == 404


def test_grants__doctor_cannot_write(people):
    h = people.auth("doc@example.org")
    attempts = [
        people.client.post(f"{API}/tenants/fam-1/api-secret", headers=h),
        people.client.post(f"{API}/tenants/fam-1/read-tokens", headers=h, json={}),
        people.client.post(f"{API}/tenants/fam-1/devices", headers=h,
                           json={"device_id": "a1b2c3d4e5f6", "kind": "clock"}),
        people.client.delete(f"{API}/tenants/fam-1", headers=h),
        people.client.get(f"{API}/tenants/fam-1/export", headers=h),
        people.client.get(f"{API}/tenants/fam-1/audit", headers=h),
    ]
    assert [a.status_code for a in attempts] == [403] * len(attempts)
    assert people.client.get(f"{API}/tenants/fam-1/members", headers=h).status_code == 200


def test_revoke__doctor_refused_on_the_next_request(people):
    h = people.auth("doc@example.org")
    assert people.client.get(f"{API}/tenants/fam-1/members", headers=h).status_code == 200
    uid = people.store.user_by_email("doc@example.org")["id"]
    r = people.client.delete(f"{API}/tenants/fam-1/grants/{uid}",
                             headers=people.auth("pat@example.org"))
    assert r.status_code == 204
    # The same, still unexpired access token: refused at once.
    assert people.client.get(f"{API}/tenants/fam-1/members", headers=h).status_code == 404
    assert people.client.get(f"{API}/patients", headers=h).json() == []
    entry = people.store.audit_log("fam-1")[0]
    assert entry["action"] == "revoke" and entry["detail"] == {"user_id": uid, "role": "doctor"}


def test_revoke__not_a_member_not_found(people):
    uid = people.store.user_by_email("pat2@example.org")["id"]
    r = people.client.delete(f"{API}/tenants/fam-1/grants/{uid}",
                             headers=people.auth("pat@example.org"))
    assert r.status_code == 404


# -- audit -------------------------------------------------------------------------------------------


def test_audit__grant_revoke_login_export_and_key_land_in_the_log(people):
    h = people.auth("pat@example.org")
    people.user("new@example.org")
    people.client.post(f"{API}/tenants/fam-1/grants", headers=h,
                       json={"email": "new@example.org", "role": "doctor"})
    uid = people.store.user_by_email("new@example.org")["id"]
    people.client.delete(f"{API}/tenants/fam-1/grants/{uid}", headers=h)
    people.client.post(f"{API}/tenants/fam-1/api-secret", headers=h)
    people.client.post(f"{API}/tenants/fam-1/read-tokens", headers=h, json={"label": "clock"})
    people.client.get(f"{API}/tenants/fam-1/export", headers=h)
    r = people.client.get(f"{API}/tenants/fam-1/audit", headers=h)
    assert r.status_code == 200
    log = r.json()
    seen = [e["action"] for e in log]
    assert seen[:6] == ["export", "key.create", "key.create", "revoke", "grant", "login"]
    assert {e["detail"].get("kind") for e in log if e["action"] == "key.create"} == {
        "api-secret", "token"}
    # Member sign-ins are global rows, included; fam-2's patient's is not.
    login_actors = {e["actor_user_id"] for e in log if e["action"] == "login"}
    fam1 = {m["user_id"] for m in people.store.members("fam-1")}
    assert login_actors and login_actors <= fam1
    assert all(e["tenant_id"] in ("fam-1", None) for e in log)


def test_audit__admin_reads_caregiver_does_not(people):
    assert people.client.get(f"{API}/tenants/fam-1/audit",
                             headers=people.auth("admin@example.org")).status_code == 200
    assert people.client.get(f"{API}/tenants/fam-1/audit",
                             headers=people.auth("care@example.org")).status_code == 403
    assert people.client.get(f"{API}/tenants/fam-2/audit",
                             headers=people.auth("pat@example.org")).status_code == 404


# -- the doctor's view --------------------------------------------------------------------------------


def test_patients__doctor_sees_granted_patients(people):
    people.store.create_tenant("fam-3", "Family three")
    doc = people.store.user_by_email("doc@example.org")
    people.store.grant("fam-2", doc["id"], "doctor", by=None)
    people.store.tenant("fam-1").add_entries([
        {"type": "sgv", "date": 1_700_000_000_000, "sgv": 100, "direction": "Flat"},
        {"type": "sgv", "date": 1_700_000_300_000, "sgv": 112, "direction": "FortyFiveUp"},
        {"type": "mbg", "date": 1_700_000_600_000, "mbg": 130},
    ])
    people.store.tenant("fam-1").put_night("2023-11-13", {"tir": 0.9})
    people.store.tenant("fam-1").put_night("2023-11-14", {"tir": 0.8})
    r = people.client.get(f"{API}/patients", headers=people.auth("doc@example.org"))
    assert r.status_code == 200
    assert r.json() == [
        {"tenant_id": "fam-1", "name": "Family one", "role": "doctor",
         "latest_glucose": {"sgv": 112, "date": 1_700_000_300_000, "direction": "FortyFiveUp"},
         "last_night": "2023-11-14"},
        {"tenant_id": "fam-2", "name": "Family two", "role": "doctor", "latest_glucose": None,
         "last_night": None},
    ]


def test_patients__one_patients_odd_reading_does_not_fail_the_list(people):
    """An uploader's fractional sgv or a direction that is no text (stored as Nightscout
    stores them) shows as read, or is left out, instead of a 500 for every patient."""
    doc = people.store.user_by_email("doc@example.org")
    people.store.grant("fam-2", doc["id"], "doctor", by=None)
    people.store.grant("fam-1", doc["id"], "doctor", by=None)
    for i, (sgv, direction) in enumerate([(110.5, [1]), (98, {"a": 1}), (101, 5)]):
        people.store.tenant("fam-1").add_entries([
            {"type": "sgv", "date": 1_700_000_000_000 + i * 300_000, "sgv": sgv,
             "direction": direction}])
        r = people.client.get(f"{API}/patients", headers=people.auth("doc@example.org"))
        assert r.status_code == 200, r.text[:300]
        latest = r.json()[0]["latest_glucose"]
        assert (latest["sgv"], latest["direction"]) == (sgv, None)
        assert [p["tenant_id"] for p in r.json()] == ["fam-1", "fam-2"]


def test_patients__patient_sees_only_own_admin_sees_all(people):
    mine = people.client.get(f"{API}/patients", headers=people.auth("pat@example.org")).json()
    assert [p["tenant_id"] for p in mine] == ["fam-1"]
    everyone = people.client.get(f"{API}/patients", headers=people.auth("admin@example.org"))
    assert [(p["tenant_id"], p["role"]) for p in everyone.json()] == [("fam-1", "admin"),
                                                                      ("fam-2", "admin")]
    assert people.client.get(f"{API}/patients").status_code == 401


def test_accounts__main_flows_on_each_backend(cloud_any):
    c = cloud_any
    c.user("admin@example.org", admin=True)
    c.user("pat@example.org", tenant="fam-1", role="patient")
    c.user("doc@example.org")
    h = c.auth("pat@example.org")
    r = c.client.post(f"{API}/tenants/fam-1/grants", headers=h,
                      json={"email": "doc@example.org", "role": "doctor"})
    assert r.status_code == 201
    uid = r.json()["user_id"]
    assert c.client.get(f"{API}/patients", headers=c.auth("doc@example.org")).json()[0][
        "tenant_id"] == "fam-1"
    assert c.client.delete(f"{API}/tenants/fam-1/grants/{uid}", headers=h).status_code == 204
    log = c.client.get(f"{API}/tenants/fam-1/audit", headers=h).json()
    assert [e["action"] for e in log] == ["revoke", "grant", "login"]
    assert c.client.delete(f"{API}/accounts/me", headers=h).status_code == 204
    assert c.client.get(f"{API}/auth/me", headers=h).status_code == 401
    admin = c.client.get(f"{API}/patients", headers=c.auth("admin@example.org")).json()
    assert [p["tenant_id"] for p in admin] == ["fam-1", "fam-2"]
