"""Sign-up, address confirmation and sharing by invitation, on a real app over SQLite and
PostgreSQL: mail goes into a folder (no mail server) or to a real SMTP dialogue on a local
port; every step is in the audit log."""

import hashlib
import re
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from tests.support.smtp import SmtpServer, closed_port

from .conftest import PASSWORD, make_cloud

API = "/api/nl/v1"


@pytest.fixture
def site(cloud_db_url, tmp_path):
    c = make_cloud(cloud_db_url, mail_dir=str(tmp_path / "mail"))
    c.mail = tmp_path / "mail"
    yield c
    c.client.close()
    c.store.close()


def _mails(folder):
    return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in sorted(folder.glob("*.eml"))]


def _sign_up(c, email, name="Pat"):
    r = c.client.post(f"{API}/signup", json={"email": email, "password": PASSWORD,
                                             "name": name})
    assert r.status_code == 201, r.text
    login = c.client.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})
    c.tokens[email] = login.json()["access_token"]
    return r.json()


def _link_token(msg) -> str:
    return re.search(r"/portal/verify\?token=(\S+)", msg.get_content()).group(1)


def _verify(c, email):
    msg = next(m for m in reversed(_mails(c.mail)) if m["To"] == email)
    assert c.client.post(f"{API}/verify", json={"token": _link_token(msg)}).status_code == 204


def test_signup__account_and_tenant_at_once_confirmed_by_the_mailed_link(site):
    got = _sign_up(site, "Pat@Example.org")
    assert got["verification_sent"] is True
    tenant = got["tenant_id"]
    assert tenant.startswith("pat-")
    me = site.client.get(f"{API}/auth/me", headers=site.auth("Pat@Example.org")).json()
    assert me["verified"] is False
    assert me["tenants"] == [{"tenant_id": tenant, "role": "patient", "name": "Pat"}]
    # The account works at once: the patient reads their (empty) glucose.
    r = site.client.get(f"{API}/tenants/{tenant}/glucose", headers=site.auth("Pat@Example.org"))
    assert r.status_code == 200
    [msg] = _mails(site.mail)
    assert msg["To"] == "pat@example.org" and "Confirm" in msg["Subject"]
    token = _link_token(msg)
    assert site.client.post(f"{API}/verify", json={"token": token}).status_code == 204
    assert site.client.get(f"{API}/auth/me",
                           headers=site.auth("Pat@Example.org")).json()["verified"] is True
    # A link works once.
    r = site.client.post(f"{API}/verify", json={"token": token})
    assert r.status_code == 400 and "used" in r.json()["detail"]
    actions = [e["action"] for e in site.store.audit_log(tenant)]
    assert "account.signup" in actions


def test_signup__same_address_twice_refused_and_server_may_close_signups(site, tmp_path):
    _sign_up(site, "pat@example.org")
    r = site.client.post(f"{API}/signup", json={"email": "PAT@example.org",
                                                "password": PASSWORD})
    assert r.status_code == 409
    closed = make_cloud(f"sqlite:///{tmp_path / 'closed.db'}", signup_enabled=False,
                        mail_dir=str(tmp_path / "m2"))
    r = closed.client.post(f"{API}/signup", json={"email": "a@example.org",
                                                  "password": PASSWORD})
    assert r.status_code == 403 and "operator" in r.json()["detail"]
    closed.client.close()
    closed.store.close()


@pytest.mark.parametrize("body", [
    {}, {"email": "not-an-address", "password": PASSWORD}, {"email": "a@b.org", "password": "short"},
    {"email": "a@b.org", "password": PASSWORD, "name": "x" * 500}, [], "text",
])
def test_signup__bad_bodies_get_one_sentence_422(site, body):
    r = site.client.post(f"{API}/signup", json=body)
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str)


def test_invite__caregiver_with_alerts_and_doctor_read_only_then_revoked(site):
    tenant = _sign_up(site, "pat@example.org")["tenant_id"]
    pat = site.auth("pat@example.org")
    # Sharing waits for the patient's confirmed address.
    r = site.client.post(f"{API}/tenants/{tenant}/invites", json={"role": "caregiver"},
                         headers=pat)
    assert r.status_code == 403 and "Confirm your address" in r.json()["detail"]
    _verify(site, "pat@example.org")
    r = site.client.post(f"{API}/tenants/{tenant}/invites",
                         json={"role": "caregiver", "alerts": True, "email": "mum@example.org"},
                         headers=pat)
    assert r.status_code == 201, r.text
    care = r.json()
    assert re.fullmatch(r"[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}", care["code"])
    assert care["link"].endswith("/portal/invite/" + care["code"].replace("-", ""))
    assert care["mailed"] is True
    mailed = next(m for m in _mails(site.mail) if m["To"] == "mum@example.org")
    assert care["code"] in mailed.get_content()
    doc = site.client.post(f"{API}/tenants/{tenant}/invites",
                           json={"role": "doctor", "alerts": False}, headers=pat).json()
    assert doc["mailed"] is False
    listed = site.client.get(f"{API}/tenants/{tenant}/invites", headers=pat).json()
    assert {i["role"] for i in listed} == {"caregiver", "doctor"}
    assert all("code" not in i for i in listed)  # only hashes are kept

    site.user("mum@example.org")
    site.user("doc@example.org")
    # The code as people type it: lower case, a space instead of the dash.
    r = site.client.post(f"{API}/invites/accept",
                         json={"code": care["code"].lower().replace("-", " ")},
                         headers=site.auth("mum@example.org"))
    assert r.json() == {"tenant_id": tenant, "name": "Pat", "role": "caregiver", "alerts": True}
    r = site.client.post(f"{API}/invites/accept", json={"code": doc["code"]},
                         headers=site.auth("doc@example.org"))
    assert r.json() == {"tenant_id": tenant, "name": "Pat", "role": "doctor", "alerts": False}
    # Spent: the same code again is refused, and no invitation is open any more.
    r = site.client.post(f"{API}/invites/accept", json={"code": care["code"]},
                         headers=site.auth("doc@example.org"))
    assert r.status_code == 404
    assert site.client.get(f"{API}/tenants/{tenant}/invites", headers=pat).json() == []
    members = {m["email"]: m for m in
               site.client.get(f"{API}/tenants/{tenant}/members", headers=pat).json()}
    assert members["mum@example.org"]["role"] == "caregiver"
    assert members["mum@example.org"]["alerts"] is True
    assert members["doc@example.org"]["alerts"] is False
    # The caregiver reads; revoked, the next request is refused.
    assert site.client.get(f"{API}/tenants/{tenant}/glucose",
                           headers=site.auth("mum@example.org")).status_code == 200
    mum_id = members["mum@example.org"]["user_id"]
    assert site.client.delete(f"{API}/tenants/{tenant}/grants/{mum_id}",
                              headers=pat).status_code == 204
    assert site.client.get(f"{API}/tenants/{tenant}/glucose",
                           headers=site.auth("mum@example.org")).status_code == 404
    actions = [e["action"] for e in site.store.audit_log(tenant)]
    for step in ("invite.create", "invite.accept", "revoke"):
        assert step in actions


def test_invite__read_only_caregiver_cannot_acknowledge_alerts(site):
    tenant = _sign_up(site, "pat@example.org")["tenant_id"]
    _verify(site, "pat@example.org")
    pat = site.auth("pat@example.org")
    code = site.client.post(f"{API}/tenants/{tenant}/invites",
                            json={"role": "caregiver", "alerts": False}, headers=pat).json()["code"]
    site.user("gran@example.org")
    site.client.post(f"{API}/invites/accept", json={"code": code},
                     headers=site.auth("gran@example.org"))
    site.store.tenant(tenant).add_alert("low", "urgent", 1_768_500_000_000,
                                        "Urgent low: 46 mg/dL", value=46)
    [alert] = site.client.get(f"{API}/tenants/{tenant}/alerts", headers=pat).json()["alerts"]
    r = site.client.post(f"{API}/tenants/{tenant}/alerts/{alert['id']}/ack",
                         headers=site.auth("gran@example.org"))
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    gran = site.auth("gran@example.org")  # nor through the patient app's own routes
    r = site.client.post(f"/app/api/{tenant}/alerts/{alert['id']}/ack", headers=gran)
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    r = site.client.post(f"/app/api/{tenant}/treatments", headers=gran,
                         json={"eventType": "Carb Correction", "carbs": 40})
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    shown = site.client.get(f"/app/api/{tenant}/state", headers=gran).json()
    assert (shown["can_act"], shown["can_ack"]) == (False, False)
    assert site.store.tenant(tenant).alert(alert["id"])["acked_at"] is None
    assert site.client.post(f"{API}/tenants/{tenant}/alerts/{alert['id']}/ack",
                            headers=pat).status_code == 200


def test_invite__withdrawn_expired_and_wrong_codes(site):
    tenant = _sign_up(site, "pat@example.org")["tenant_id"]
    _verify(site, "pat@example.org")
    pat = site.auth("pat@example.org")
    inv = site.client.post(f"{API}/tenants/{tenant}/invites", json={"role": "doctor"},
                           headers=pat).json()
    assert site.client.delete(f"{API}/tenants/{tenant}/invites/{inv['id']}",
                              headers=pat).status_code == 204
    assert site.client.delete(f"{API}/tenants/{tenant}/invites/{inv['id']}",
                              headers=pat).status_code == 404
    site.user("doc@example.org")
    doc = site.auth("doc@example.org")
    assert site.client.post(f"{API}/invites/accept", json={"code": inv["code"]},
                            headers=doc).status_code == 404
    # Expired: an invitation made to last no time at all.
    site.store.create_invite(tenant, "ABCDEFGH", "doctor", alerts=False, email="", by=None,
                             ttl_s=-1)
    assert site.client.post(f"{API}/invites/accept", json={"code": "ABCD-EFGH"},
                            headers=doc).status_code == 404
    # Others may not invite to a tenant they do not own, nor see its invitations.
    assert site.client.post(f"{API}/tenants/{tenant}/invites", json={"role": "doctor"},
                            headers=doc).status_code == 404
    for bad in ({"role": "patient"}, {"role": "admin"}, {"role": "doctor", "days": 0},
                {"role": "doctor", "email": "x"}):
        assert site.client.post(f"{API}/tenants/{tenant}/invites", json=bad,
                                headers=pat).status_code == 422
    actions = [e["action"] for e in site.store.audit_log(tenant)]
    assert "invite.revoke" in actions


def test_invite__guessing_codes_is_rate_limited(tmp_path):
    c = make_cloud(f"sqlite:///{tmp_path / 'c.db'}", mail_dir=str(tmp_path / "mail"),
                   login_attempts_per_minute=5)
    c.store.create_tenant("fam-1", "One")
    c.user("guess@example.org")
    codes = [c.client.post(f"{API}/invites/accept", json={"code": f"AAAA-AAA{d}"},
                           headers=c.auth("guess@example.org")).status_code
             for d in "23456789"]
    assert codes[:4] == [404] * 4 and codes[-1] == 429
    c.client.close()
    c.store.close()


def test_mail__real_smtp_dialogue_and_a_server_that_is_down(tmp_path):
    with SmtpServer() as smtp:
        c = make_cloud(f"sqlite:///{tmp_path / 'a.db'}", smtp_host="127.0.0.1",
                       smtp_port=smtp.port, smtp_starttls=False)
        got = _sign_up(c, "pat@example.org")
        assert got["verification_sent"] is True
        [msg] = smtp.messages
        assert msg["To"] == "pat@example.org" and "/portal/verify?token=" in msg.get_content()
        c.client.close()
        c.store.close()
    # The mail server is down: the account still exists and the person is told.
    down = make_cloud(f"sqlite:///{tmp_path / 'b.db'}", smtp_host="127.0.0.1",
                      smtp_port=closed_port(), smtp_starttls=False)
    got = _sign_up(down, "late@example.org")
    assert got["verification_sent"] is False and "could not be sent" in got["message"]
    r = down.client.post(f"{API}/accounts/me/verification",
                         headers=down.auth("late@example.org"))
    assert r.status_code == 503
    down.client.close()
    down.store.close()


def test_pages__mailed_links_confirm_and_join_from_a_browser(site):
    tenant = _sign_up(site, "pat@example.org")["tenant_id"]
    [msg] = _mails(site.mail)
    link = re.search(r"http\S+/portal/verify\?token=\S+", msg.get_content()).group(0)
    page = site.client.get(link.split("127.0.0.1:8000", 1)[1])
    # Opening the link (as a mail scanner would) confirms nothing; the button does.
    assert page.status_code == 200 and "Confirm this address" in page.text
    assert site.client.get(f"{API}/auth/me",
                           headers=site.auth("pat@example.org")).json()["verified"] is False
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
    done = site.client.post("/portal/verify", data={"token": token})
    assert done.status_code == 200 and "is confirmed" in done.text
    again = site.client.post("/portal/verify", data={"token": token})
    assert again.status_code == 400 and "not valid" in again.text

    inv = site.client.post(f"{API}/tenants/{tenant}/invites", json={"role": "caregiver"},
                           headers=site.auth("pat@example.org")).json()
    site.user("mum@example.org")
    path = inv["link"].split("127.0.0.1:8000", 1)[1]
    page = site.client.get(path)
    assert page.status_code == 200 and inv["code"] in page.text and 'name="password"' in page.text
    wrong = site.client.post(path, data={"email": "mum@example.org", "password": "wrong-password"})
    assert wrong.status_code == 401 and "Sign in and accept" in wrong.text
    ok = site.client.post(path, data={"email": "mum@example.org", "password": PASSWORD})
    assert ok.status_code == 200 and "as a caregiver, with alerts" in ok.text
    assert "nl_portal" in ok.cookies  # signed in by accepting
    assert site.store.role(tenant, site.store.user_by_email("mum@example.org")["id"]) == "caregiver"
    # The link is spent.
    assert site.client.post(path, data={}).status_code == 404


def _has_account(c, email) -> bool:
    from nightlink.cloud.store.base import NotFoundError

    try:
        c.store.user_by_email(email)
    except NotFoundError:
        return False
    return True


def test_pages__someone_invited_without_an_account_makes_one_and_accepts(site, tmp_path):
    tenant = _sign_up(site, "pat@example.org")["tenant_id"]
    _verify(site, "pat@example.org")
    inv = site.client.post(f"{API}/tenants/{tenant}/invites", json={"role": "caregiver"},
                           headers=site.auth("pat@example.org")).json()
    path = inv["link"].split("127.0.0.1:8000", 1)[1]
    page = site.client.get(path)
    assert page.status_code == 200 and "I am new to Nightlink" in page.text
    gran = {"name": "Gran", "email": "gran@example.org", "password": PASSWORD}
    # a short password: one sentence, the form kept, no account
    r = site.client.post(path + "/new", data={**gran, "password": "short"})
    assert r.status_code == 422 and 'value="gran@example.org"' in r.text
    # an address with an account already: sign in with it instead
    r = site.client.post(path + "/new", data={**gran, "email": "pat@example.org"})
    assert r.status_code == 409 and "sign in with it to accept" in r.text
    # a wrong code makes no account
    assert site.client.post("/portal/invite/ZZZZZZZZ/new", data=gran).status_code == 404
    assert not _has_account(site, "gran@example.org")
    ok = site.client.post(path + "/new", data=gran)
    assert ok.status_code == 200 and "as a caregiver, with alerts" in ok.text
    assert "nl_portal" in ok.cookies  # signed in
    user = site.store.user_by_email("gran@example.org")
    # following the patient, with no empty space of her own
    assert [(m["tenant_id"], m["role"]) for m in site.store.memberships(user["id"])] == [
        (tenant, "caregiver")]
    assert any(m["To"] == "gran@example.org" for m in _mails(site.mail))  # to confirm it
    assert site.client.post(path + "/new", data={**gran, "email": "gramps@example.org"}
                            ).status_code == 404  # the link is spent
    assert not _has_account(site, "gramps@example.org")
    # a server closed to sign-ups still lets the invited in: the patient asked them
    closed = make_cloud(f"sqlite:///{tmp_path / 'closed.db'}", signup_enabled=False,
                        mail_dir=str(tmp_path / "m2"))
    try:
        closed.store.create_tenant("fam-1", "Pat")
        closed.user("p@example.org", tenant="fam-1", role="patient")
        inv = closed.client.post(f"{API}/tenants/fam-1/invites", json={"role": "doctor"},
                                 headers=closed.auth("p@example.org")).json()
        r = closed.client.post(inv["link"].split("127.0.0.1:8000", 1)[1] + "/new",
                               data={**gran, "email": "dr@example.org"})
        assert r.status_code == 200 and "as a doctor" in r.text
    finally:
        closed.client.close()
        closed.store.close()


def test_pages__the_patient_shares_and_revokes_from_the_portal(site):
    tenant = _sign_up(site, "pat@example.org")["tenant_id"]
    page = f"/portal/p/{tenant}/sharing"
    assert site.client.get(page, follow_redirects=False).status_code == 303  # sign in first
    signed = site.client.post("/portal/login", data={"email": "pat@example.org",
                                                     "password": PASSWORD})
    assert signed.status_code in (200, 303)
    assert "Confirm your address first" in site.client.get(page).text
    again = site.client.post(page, data={"action": "resend"})
    assert again.status_code == 200 and "new confirmation link was sent" in again.text
    assert len([m for m in _mails(site.mail) if m["To"] == "pat@example.org"]) == 2
    _verify(site, "pat@example.org")
    made = site.client.post(page, data={"action": "invite", "role": "caregiver",
                                        "email": "mum@example.org"})
    assert made.status_code == 200
    code = re.search(r"<b>([A-Z0-9]{4}-[A-Z0-9]{4})</b>", made.text).group(1)
    assert "read only" in made.text  # the box was not ticked: no alerts
    bad = site.client.post(page, data={"action": "invite", "role": "admin"})
    assert bad.status_code == 422 and "role" in bad.text
    site.user("mum@example.org")
    site.client.post(f"{API}/invites/accept", json={"code": code},
                     headers=site.auth("mum@example.org"))
    shown = site.client.get(page).text
    assert "mum@example.org" in shown and "End access" in shown
    mum = site.store.user_by_email("mum@example.org")["id"]
    site.client.post(page, data={"action": "revoke", "user": str(mum)})
    assert site.store.role(tenant, mum) is None
    assert site.client.post(page, data={"action": "nonsense"}).status_code == 400
    assert site.client.post(page, data={"action": "revoke", "user": "x"}).status_code == 422
    # A caregiver may not open the patient's sharing page.
    other = site.client.__class__(site.client.app)
    other.post("/portal/login", data={"email": "mum@example.org", "password": PASSWORD})
    assert other.get(page).status_code == 404


def test_pages__a_new_patient_connects_a_cgm_app_from_the_sharing_page(site):
    """After signing up, the page gives the site's address and makes an API secret, shown
    once, that the apps' uploads are taken with (the API call was the only way)."""
    tenant = _sign_up(site, "pat@example.org")["tenant_id"]
    site.client.post("/portal/login", data={"email": "pat@example.org", "password": PASSWORD})
    page = f"/portal/p/{tenant}/sharing"
    shown = site.client.get(page).text
    assert f"<code>http://testserver/t/{tenant}</code>" in shown
    made = site.client.post(page, data={"action": "uploader"})
    assert made.status_code == 200
    secret = re.search(r'<p class="code"><b>([^<]+)</b></p>', made.text).group(1)
    assert f"<code>http://{secret}@testserver/t/{tenant}/api/v1/</code>" in made.text
    upload = site.client.post(f"/t/{tenant}/api/v1/entries", json=[
        {"type": "sgv", "sgv": 123, "date": int(time.time() * 1000), "device": "xDrip"}],
        headers={"api-secret": hashlib.sha1(secret.encode()).hexdigest()})
    assert upload.status_code == 200, upload.text
    again = site.client.post(page, data={"action": "uploader"})  # the old one stops working
    assert secret not in again.text
    refused = site.client.post(f"/t/{tenant}/api/v1/entries", json=[],
                               headers={"api-secret": hashlib.sha1(secret.encode()).hexdigest()})
    assert refused.status_code == 401


def test_pages__a_family_gives_each_follower_and_clock_its_own_token(site):
    """The sharing page makes a named access token (shown once, with the read link), lists
    the tokens in use and revokes one without the others; the REST API lists and revokes
    one too (before, only the operator's CLI or a REST call made one, and revoking was all
    at once)."""
    tenant = _sign_up(site, "pat@example.org")["tenant_id"]
    site.client.post("/portal/login", data={"email": "pat@example.org", "password": PASSWORD})
    page = f"/portal/p/{tenant}/sharing"
    assert "No access token is in use." in site.client.get(page).text
    entries = f"/t/{tenant}/api/v1/entries.json"
    tokens = {}
    for name, may in (("Grandma's phone", "read"), ("Desk clock", "read"),
                      ("Nightguard", "careportal"), ("Edison rig", "rig")):
        made = site.client.post(page, data={"action": "token", "name": name, "may": may})
        assert made.status_code == 200, made.text
        tokens[name] = re.search(r'<p class="code"><b>([^<]+)</b></p>', made.text).group(1)
        assert f"<code>http://testserver/t/{tenant}?token={tokens[name]}</code>" in made.text
    listed = site.client.get(page).text
    assert "<td>Grandma&#39;s phone</td>" in listed and "read, log treatments" in listed
    assert "<td>an OpenAPS rig's</td>" in listed
    assert all(t not in listed for t in tokens.values())  # shown once only
    for t in tokens.values():
        assert site.client.get(entries, params={"token": t}).status_code == 200
    # the rig's token uploads a reading; a read token may not
    reading = [{"type": "sgv", "sgv": 111, "date": 1_796_000_000_000}]
    assert site.client.post(f"/t/{tenant}/api/v1/entries", json=reading,
                            params={"token": tokens["Edison rig"]}).status_code == 200
    # Nightguard's token logs a treatment; a read token may not
    note = {"eventType": "Note", "notes": "snack", "created_at": "2026-12-01T20:00:00Z"}
    assert site.client.post(f"/t/{tenant}/api/v1/treatments", json=note,
                            params={"token": tokens["Nightguard"]}).status_code == 200
    assert site.client.post(f"/t/{tenant}/api/v1/treatments", json=note,
                            params={"token": tokens["Desk clock"]}).status_code == 401
    for bad, why in (({"name": " ", "may": "read"}, "Name what will use the token"),
                     ({"name": "x" * 65, "may": "read"}, "Name what will use the token"),
                     ({"name": "Phone", "may": "root"}, "Say what the token may do")):
        r = site.client.post(page, data={"action": "token", **bad})
        assert r.status_code == 422 and why in r.text
    # one revoked on the page: the others still read
    h = site.auth("pat@example.org")
    listed = site.client.get(f"{API}/tenants/{tenant}/read-tokens", headers=h).json()
    assert [(t["label"], t["roles"]) for t in listed] == [
        ("Grandma's phone", ["readable"]), ("Desk clock", ["readable"]),
        ("Nightguard", ["readable", "careportal"]), ("Edison rig", ["oref0rig"])]
    grandma = listed[0]["id"]
    r = site.client.post(page, data={"action": "revoke-token", "token": str(grandma)})
    assert r.status_code == 200 and "was revoked" in r.text
    assert "<td>Grandma&#39;s phone</td>" not in r.text
    assert site.client.get(entries, params={"token": tokens["Grandma's phone"]}).status_code \
        == 401
    assert site.client.get(entries, params={"token": tokens["Desk clock"]}).status_code == 200
    again = site.client.post(page, data={"action": "revoke-token", "token": str(grandma)})
    assert again.status_code == 404 and "already revoked" in again.text
    huge = str(2**64)  # more than a database row id holds: a 422, not the driver's 500
    for bad in ("x", huge, "0", "-3"):
        assert site.client.post(page, data={"action": "revoke-token", "token": bad}
                                ).status_code == 422, bad
    for action, field in (("withdraw", "invite"), ("revoke", "user")):
        assert site.client.post(page, data={"action": action, field: huge}).status_code == 422
    # and one through the API (twice: not found)
    clock = listed[1]["id"]
    assert site.client.delete(f"{API}/tenants/{tenant}/read-tokens/{clock}",
                              headers=h).status_code == 204
    assert site.client.get(entries, params={"token": tokens["Desk clock"]}).status_code == 401
    assert site.client.delete(f"{API}/tenants/{tenant}/read-tokens/{clock}",
                              headers=h).status_code == 404
    for path in (f"read-tokens/{huge}", f"invites/{huge}", f"grants/{huge}", "alerts/" + huge
                 + "/ack"):
        r = site.client.request("POST" if path.endswith("ack") else "DELETE",
                                f"{API}/tenants/{tenant}/{path}", headers=h)
        assert r.status_code == 422, (path, r.status_code, r.text)
    # a blank label names the token by its role; a control character is refused
    r = site.client.post(f"{API}/tenants/{tenant}/read-tokens", headers=h, json={"label": "  "})
    assert r.status_code == 201 and r.json()["token"].startswith("readable-")
    r = site.client.post(f"{API}/tenants/{tenant}/read-tokens", headers=h,
                         json={"label": "a\x07b"})
    assert r.status_code == 422 and "control characters" in r.json()["detail"]
    # a name in another alphabet: the token stays ASCII (it travels in a header too)
    made = site.client.post(page, data={"action": "token", "name": "Grand-mère Бабушка",
                                        "may": "read"})
    token = re.search(r'<p class="code"><b>([^<]+)</b></p>', made.text).group(1)
    assert token.isascii() and token.startswith("grandmre-")
    assert site.client.get(entries, headers={"api-secret": token}).status_code == 200
    audit = [(e["action"], e["detail"].get("via")) for e in site.store.audit_log(tenant)
             if e["action"].startswith("key.")]
    assert audit.count(("key.create", "sharing page")) == 5
    assert audit.count(("key.revoke", "sharing page")) == 1 and ("key.revoke", None) in audit


def test_pages__sign_up_from_the_browser_form(site):
    login = site.client.get("/portal/login")
    assert 'href="/portal/signup"' in login.text
    assert "Create the account" in site.client.get("/portal/signup").text
    short = site.client.post("/portal/signup", data={"email": "new@example.org",
                                                      "password": "short", "name": "New"})
    assert short.status_code == 422 and "password" in short.text
    assert 'value="new@example.org"' in short.text  # what was typed stays
    made = site.client.post("/portal/signup", data={"email": "new@example.org",
                                                     "password": PASSWORD, "name": "New"})
    assert made.status_code == 201 and "confirmation link was sent" in made.text
    new = site.store.user_by_email("new@example.org")
    assert [m["role"] for m in site.store.memberships(new["id"])] == ["patient"]
    again = site.client.post("/portal/signup", data={"email": "NEW@example.org",
                                                      "password": PASSWORD})
    assert again.status_code == 409 and "already exists" in again.text


def test_pages__the_time_zone_is_asked_at_sign_up(site):
    """A family without a bedside node: its nights (the reports, the low alarm's calibration)
    are in its own zone from the start, not UTC; a zone that is none is refused, saying so."""
    from nightlink.cloud.reports import settings

    form = site.client.get("/portal/signup").text
    assert 'name="tz"' in form and '<option value="America/Los_Angeles">' in form
    bad = site.client.post("/portal/signup", data={"email": "la@example.org", "name": "Dad",
                                                   "password": PASSWORD, "tz": "Mars/Base"})
    assert bad.status_code == 422 and "not a time zone" in bad.text
    assert 'value="Mars/Base"' in bad.text  # what was typed stays
    made = site.client.post("/portal/signup", data={
        "email": "la@example.org", "password": PASSWORD, "name": "Dad",
        "tz": "America/Los_Angeles"})
    assert made.status_code == 201, made.text
    dad = site.store.user_by_email("la@example.org")
    [tenant] = [m["tenant_id"] for m in site.store.memberships(dad["id"])]
    ps = settings.patient_settings(site.store.tenant(tenant))
    assert (ps.tz.key, ps.tz_source) == ("America/Los_Angeles", "set")


def test_pages__a_parent_names_the_space_after_the_child(site):
    """A parent signs up for a child: the space carries the child's name on the app, the
    reports and for those who follow, set at sign-up and changed on the sharing page."""
    bad = site.client.post("/portal/signup", data={"email": "mum@example.org", "name": "Mum",
                                                   "password": PASSWORD, "tenant_name": "a\x07"})
    assert bad.status_code == 422 and "control characters" in bad.text
    made = site.client.post("/portal/signup", data={
        "email": "mum@example.org", "password": PASSWORD, "name": "Mum", "tenant_name": " Sam "})
    assert made.status_code == 201, made.text
    mum = site.store.user_by_email("mum@example.org")
    [tenant] = [m["tenant_id"] for m in site.store.memberships(mum["id"])]
    assert site.store.get_tenant(tenant)["name"] == "Sam"
    site.client.post("/portal/login", data={"email": "mum@example.org", "password": PASSWORD})
    page = f"/portal/p/{tenant}/sharing"
    assert "Who sees Sam's data" in site.client.get(page).text
    for typed, words in (("   ", "Give the space a name"), ("x" * 101, "1 to 100 characters"),
                         ("Sam\nSmith", None)):
        r = site.client.post(page, data={"action": "rename", "name": typed})
        if words:
            assert r.status_code == 422 and words in r.text
    r = site.client.post(page, data={"action": "rename", "name": "Sam  Smith"})
    assert r.status_code == 200 and "This space is now called Sam Smith." in r.text
    assert site.store.get_tenant(tenant)["name"] == "Sam Smith"
    assert "tenant.rename" in [e["action"] for e in site.store.audit_log(tenant)]
    # the invitation says whose data it is: Sam's, not Mum's own
    _verify(site, "mum@example.org")
    made = site.client.post(page, data={"action": "invite", "role": "caregiver",
                                        "alerts": "yes", "email": "gran@example.org"})
    assert made.status_code == 200
    [mailed] = [m for m in _mails(site.mail) if m["To"] == "gran@example.org"]
    assert mailed["Subject"] == "Mum shares Sam Smith's Nightlink data with you"
    assert mailed.get_content().startswith(
        "Mum invites you to follow Sam Smith's Nightlink data as a caregiver (with alerts).")
    link = re.search(r"Open (\S+)", mailed.get_content()).group(1)
    path = link.split("127.0.0.1:8000", 1)[1]
    site.client.cookies.clear()
    joined = site.client.post(path + "/new", data={"name": "Gran", "email": "gran@example.org",
                                                   "password": PASSWORD})
    assert joined.status_code == 200
    assert "You now follow Sam Smith&#39;s data as a caregiver, with alerts" in joined.text
    # someone who follows may not rename it
    site.user("care@example.org")
    site.store.grant(tenant, site.store.user_by_email("care@example.org")["id"], "caregiver",
                     by=mum["id"])
    site.client.post("/portal/login", data={"email": "care@example.org", "password": PASSWORD})
    assert site.client.post(page, data={"action": "rename", "name": "X"}).status_code == 403
    assert site.store.get_tenant(tenant)["name"] == "Sam Smith"


def test_pages__a_family_in_mmol_sets_what_its_nightscout_address_reports(site):
    """Desk clocks and follower apps read the units from Nightscout's status.json: a family
    in mmol/L sets them on the sharing page (they were mg/dL for every tenant)."""
    made = site.client.post("/portal/signup", data={
        "email": "mmol@example.org", "password": PASSWORD, "name": "Eva"})
    assert made.status_code == 201, made.text
    eva = site.store.user_by_email("mmol@example.org")
    [tenant] = [m["tenant_id"] for m in site.store.memberships(eva["id"])]
    site.store.set_api_secret(tenant, "an-uploader-secret-2")
    secret = {"api-secret": hashlib.sha1(b"an-uploader-secret-2").hexdigest()}
    site.client.post("/portal/login", data={"email": "mmol@example.org", "password": PASSWORD})
    page = f"/portal/p/{tenant}/sharing"
    assert '<option value="mg/dl" selected>' in site.client.get(page).text
    r = site.client.post(page, data={"action": "units", "units": "furlongs"})
    assert r.status_code == 422 and "mg/dL or mmol/L" in r.text
    r = site.client.post(page, data={"action": "units", "units": "mmol"})
    assert r.status_code == 200 and "now reports mmol/L" in r.text
    assert '<option value="mmol" selected>' in r.text
    assert "tenant.units" in [e["action"] for e in site.store.audit_log(tenant)]
    status = site.client.get(f"/t/{tenant}/api/v1/status.json", headers=secret)
    assert status.status_code == 200 and status.json()["settings"]["units"] == "mmol"


def test_pages__no_sign_up_form_where_sign_ups_are_off(tmp_path):
    c = make_cloud(f"sqlite:///{tmp_path / 'c.db'}", signup_enabled=False,
                   mail_dir=str(tmp_path / "mail"))
    assert "/portal/signup" not in c.client.get("/portal/login").text
    assert c.client.get("/portal/signup").status_code == 404
    c.client.close()
    c.store.close()


@pytest.mark.parametrize("email", ["a\x00b@example.org", "pat\x7f@example.org",
                                   "line\nbreak@example.org"])
def test_signup__control_characters_in_the_address_are_refused(site, email):
    r = site.client.post(f"{API}/signup", json={"email": email, "password": PASSWORD})
    assert r.status_code == 422 and "email" in r.json()["detail"]


def test_mail__any_valid_address_makes_a_file_name(tmp_path):
    from nightlink.cloud import mail
    from nightlink.cloud.config import Settings

    settings = Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3, mail_dir=str(tmp_path))
    for to in ("x" * 240 + "@a.io", "ä/'..@b`.0", "=?utf-8?q?x?=@a.b"):
        path = Path(mail.send(settings, to, "subject", "body"))
        assert path.parent == tmp_path and path.suffix == ".eml"
    assert len(list(tmp_path.glob("*.eml"))) == 3
