"""Who hears what on socket.io, and for how long: alarms only for sockets that may read the
site; a credential revoked, rotated or whose site is deleted stops working on the sockets it
opened (at its next write, at once on a change made in this process, else within RECHECK_S);
a URL naming no site is answered as a private site answers, so names cannot be probed.

Real python-socketio clients against the served app (tests/support/sockets.py)."""

import asyncio
import time

import httpx

from nightlink.nightscout import sockets as ns_sockets
from tests.support.nightscout import SECRET_SHA1, iso, now_ms
from tests.support.sockets import Recorder, authorized, namespace


async def _gone(rec: Recorder, ns: str, timeout: float = 5.0) -> bool:
    """Whether the server disconnected the recorder's namespace within the timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ns not in rec.sio.namespaces:
            return True
        await asyncio.sleep(0.05)
    return False


def _site_key(ns) -> str:
    return "fam-1" if ns.kind == "cloud" else "local"


def test_alarm__only_sockets_that_may_read_the_site_hear_its_alarms(ns):
    async def run():
        stranger, reader = Recorder(), Recorder()
        alarm = namespace(ns, "/alarm")
        await stranger.connect(ns.root, [alarm])
        await reader.connect(ns.root, [alarm])
        said = await stranger.call("subscribe", {}, alarm)
        assert said == {"success": True, "message": "Subscribed for alarms", "read": False,
                        "ack": False}
        said = await reader.call("subscribe", {"accessToken": ns.read_token}, alarm)
        assert said["success"] is True and said["read"] is True
        ns.app.state.nightscout.hub.alarm(_site_key(ns), 2, "Urgent low", "BG Now: 46 mg/dl",
                                          event="low")
        assert (await reader.next(alarm, "urgent_alarm"))["title"] == "Urgent low"
        await asyncio.sleep(0.3)  # sent to one room at once: the stranger would have it now
        assert stranger.pending(alarm, "urgent_alarm") == 0
        await stranger.close()
        await reader.close()

    asyncio.run(run())


def test_revoked_token__a_write_on_its_open_socket_is_refused(ns):
    async def run():
        rec, main, said = await authorized(ns, ns.admin_token)
        assert said["write"] is True
        await asyncio.to_thread(ns.subjects.revoke_all)  # by another process: not told here
        before = await asyncio.to_thread(ns.count, "treatments")
        added = await rec.call("dbAdd", {"collection": "treatments", "data": {
            "eventType": "Note", "notes": "after revocation", "date": now_ms()}}, main)
        assert added == {"result": "Not authorized"}
        assert await asyncio.to_thread(ns.count, "treatments") == before
        await rec.close()

    asyncio.run(run())


def test_revoked_token__its_open_sockets_are_disconnected_within_the_recheck(ns, monkeypatch):
    monkeypatch.setattr(ns_sockets, "RECHECK_S", 0.2)

    async def run():
        rec, secret = Recorder(), Recorder()
        main = namespace(ns, "")
        await rec.connect(ns.root, [main])
        await secret.connect(ns.root, [main])
        assert (await rec.call("authorize", {"token": ns.read_token}, main))["read"] is True
        assert (await secret.call("authorize", {"secret": SECRET_SHA1}, main))["read"] is True
        # by another process: found by the periodic re-check
        await asyncio.to_thread(ns.subjects.revoke_all)
        assert await _gone(rec, main), "a revoked token kept its socket"
        await asyncio.sleep(0.5)
        assert main in secret.sio.namespaces  # the secret was not revoked: left connected
        again = Recorder()
        await again.connect(ns.root, [main])
        await again.sio.emit("authorize", {"token": ns.read_token}, namespace=main)
        assert await _gone(again, main)  # refused: disconnected, as for any bad credential
        for r in (rec, secret, again):
            await r.close()

    asyncio.run(run())


def test_deleted_tenant__its_sockets_are_disconnected_at_once(cloud_ns):
    async def run():
        rec = Recorder()
        main = namespace(cloud_ns, "")
        await rec.connect(cloud_ns.root, [main])
        assert (await rec.call("authorize", {"secret": SECRET_SHA1}, main))["read"] is True
        # In this process: the store tells the sockets (RECHECK_S is a minute here).
        await asyncio.to_thread(cloud_ns.app.state.store.set_tenant, "fam-1",
                                deleted_at=time.time())
        assert await _gone(rec, main, timeout=3.0)
        await rec.close()

    asyncio.run(run())


def test_no_such_site__answered_as_a_private_site_answers(cloud_ns):
    def ask(site: str, **kw) -> tuple[int, dict]:
        r = httpx.get(f"{cloud_ns.root}/t/{site}/api/v1/entries.json", timeout=10, **kw)
        return r.status_code, r.json()

    assert ask("no-such-family") == ask("fam-2")
    wrong = {"headers": {"api-secret": SECRET_SHA1}}  # fam-1's: wrong for both
    assert ask("no-such-family", **wrong) == ask("fam-2", **wrong)
    assert ask("no-such-family", **wrong)[0] == 401
    v3 = httpx.get(f"{cloud_ns.root}/t/no-such-family/api/v3/entries", timeout=10)
    assert v3.status_code == 401

    async def run():
        answers = []
        for site in ("no-such-family", "fam-2"):
            rec = Recorder()
            main, alarm = f"/t/{site}", f"/t/{site}/alarm"
            await rec.connect(cloud_ns.root, [main, alarm])
            answers.append((await rec.call("authorize", {}, main),
                            await rec.call("subscribe", {}, alarm)))
            await rec.close()
        return answers

    missing, private = asyncio.run(run())
    assert missing == private
    assert missing[0] == {"read": False, "write": False, "write_treatment": False}


def test_careportal_token_alone_adds_treatments_as_in_nightscout(ns):
    token = ns.token("careportal-only", ["careportal"])
    r = ns.post("/api/v1/treatments", params={"token": token},
                json={"eventType": "Carb Correction", "carbs": 15, "created_at":
                      iso(now_ms() - 600_000), "enteredBy": "careportal"})
    assert r.status_code == 200, r.text
    assert ns.get("/api/v1/treatments.json", params={"token": token}).status_code == 401
    assert ns.count("treatments") == 1
    stored = ns.get("/api/v1/treatments.json", params={"token": ns.read_token}).json()[0]
    again = ns.post("/api/v1/treatments", params={"token": token}, json={
        "_id": stored["_id"], "eventType": "Note", "notes": "overwritten", "created_at":
        iso(now_ms() - 300_000)})  # a careportal token cannot change what it cannot read
    assert again.status_code == 200
    kept = ns.get("/api/v1/treatments.json", params={"token": ns.read_token}).json()
    assert [(t["eventType"], t.get("carbs")) for t in kept] == [("Carb Correction", 15)]


def test_reauthorizing__a_socket_hears_only_what_its_new_grant_allows(ns):
    async def run():
        rec = Recorder()
        main = namespace(ns, "")
        await rec.connect(ns.root, [main])
        assert (await rec.call("authorize", {"token": ns.read_token}, main))["read"] is True
        await rec.next(main, "dataUpdate")
        assert (await rec.call("authorize", {}, main))["read"] is False
        await asyncio.to_thread(ns.post, "/api/v1/entries", headers={"api-secret": SECRET_SHA1},
                                json={"type": "sgv", "sgv": 77, "date": now_ms()})
        await asyncio.sleep(0.5)  # a delta to the data room would be here by now
        assert rec.pending(main, "dataUpdate") == 0
        await rec.close()

    asyncio.run(run())


def test_alarm_ack__needs_a_credential_that_reads_and_silences_two_hours_at_most(ns):
    async def run():
        blind, reader = Recorder(), Recorder()
        alarm = namespace(ns, "/alarm")
        await blind.connect(ns.root, [alarm])
        await reader.connect(ns.root, [alarm])
        denied = await asyncio.to_thread(ns.token, "no-read", ["denied"])
        assert (await blind.call("subscribe", {"accessToken": denied}, alarm))["read"] is False
        assert (await reader.call("subscribe", {"accessToken": ns.admin_token}, alarm))["read"]
        ten_years = 10 * 365 * 86_400_000
        await blind.sio.emit("ack", (2, "default", ten_years), namespace=alarm)
        await asyncio.sleep(0.3)
        hub = ns.app.state.nightscout.hub
        hub.alarm(_site_key(ns), 2, "Urgent low", "BG Now: 46 mg/dl", event="low")
        assert (await reader.next(alarm, "urgent_alarm"))["level"] == 2  # not silenced
        await reader.sio.emit("ack", (2, "default", ten_years), namespace=alarm)
        await reader.next(alarm, "clear_alarm")
        until = max(ns.app.state.nightscout_sockets._silenced.values())
        assert until - time.time() <= ns_sockets.MAX_SILENCE_MS / 1000
        for r in (blind, reader):
            await r.close()

    asyncio.run(run())


def test_clients_count__told_to_the_sites_readers_only(cloud_ns):
    async def run():
        stranger, first, second = Recorder(), Recorder(), Recorder()
        main = namespace(cloud_ns, "")
        for r in (stranger, first, second):
            await r.connect(cloud_ns.root, [main])
        assert (await first.call("authorize", {"token": cloud_ns.read_token}, main))["read"]
        assert await first.next(main, "clients") == 1
        assert (await second.call("authorize", {"token": cloud_ns.read_token}, main))["read"]
        assert await first.next(main, "clients") == 2
        assert await second.next(main, "clients") == 2
        assert not (await second.call("authorize", {}, main))["read"]
        assert await first.next(main, "clients") == 1  # left by authorizing again
        assert (await second.call("authorize", {"token": cloud_ns.read_token}, main))["read"]
        assert await first.next(main, "clients") == 2
        await second.close()
        assert await first.next(main, "clients") == 1
        await asyncio.sleep(0.3)
        assert stranger.pending(main, "clients") == 0  # nothing tells a stranger who follows
        for r in (stranger, first):
            await r.close()

    asyncio.run(run())


def test_recheck__each_socket_is_looked_at_once_per_pass(cloud_ns):
    """Sockets at the root URL share the namespace `/` whatever their site: walked once."""
    import hashlib

    from tests.support.nightscout import OTHER_SECRET

    sockets = cloud_ns.app.state.nightscout_sockets
    looked = []
    regrant = sockets._regrant

    async def counting(session):
        looked.append(session["site"])
        return await regrant(session)

    async def run():
        recs = [Recorder() for _ in range(4)]
        secrets = [SECRET_SHA1, SECRET_SHA1, hashlib.sha1(OTHER_SECRET.encode()).hexdigest(),
                   hashlib.sha1(OTHER_SECRET.encode()).hexdigest()]
        for rec, secret in zip(recs, secrets, strict=True):
            await rec.connect(cloud_ns.root, ["/"])
            assert (await rec.call("authorize", {"secret": secret}, "/"))["read"] is True
        sockets._regrant = counting
        cloud_ns.app.state.nightscout.forget()  # a pass now
        end = time.monotonic() + 5
        while len(looked) < 4 and time.monotonic() < end:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert sorted(looked) == ["fam-1", "fam-1", "fam-2", "fam-2"]
        assert all("/" in rec.sio.namespaces for rec in recs)  # nothing changed: kept
        for rec in recs:
            await rec.close()

    asyncio.run(run())


def test_recheck__a_database_error_is_waited_out_not_fatal(ns, monkeypatch):
    from nightlink.sql import DatabaseError

    monkeypatch.setattr(ns_sockets, "RECHECK_S", 0.2)
    sockets = ns.app.state.nightscout_sockets
    regrant = sockets._regrant
    failures = []

    async def away(session):
        failures.append(1)
        raise DatabaseError("database is locked")

    async def run():
        rec = Recorder()
        main = namespace(ns, "")
        await rec.connect(ns.root, [main])
        assert (await rec.call("authorize", {"token": ns.read_token}, main))["read"] is True
        sockets._regrant = away
        end = time.monotonic() + 5
        while len(failures) < 2 and time.monotonic() < end:  # two passes failed, and went on
            await asyncio.sleep(0.05)
        assert len(failures) >= 2 and main in rec.sio.namespaces
        sockets._regrant = regrant
        await asyncio.to_thread(ns.subjects.revoke_all)
        assert await _gone(rec, main)  # the re-check still runs
        await rec.close()

    asyncio.run(run())


def test_reauthorizing__overlapping_authorizes_cannot_keep_a_revoked_tokens_rooms(ns):
    sockets = ns.app.state.nightscout_sockets
    attach = sockets._attach
    token_attached = []

    async def racing(sid, namespace_, site, grant, credential):
        # The worst order, made certain: the token's authorize takes its grant, the empty
        # one takes its own, then the token's joins its rooms. Handled one at a time (the
        # fix) the empty one waits in vain for the token's and goes second or first whole.
        if credential is None:
            for _ in range(100):
                if token_attached:
                    break
                await asyncio.sleep(0.02)
            await attach(sid, namespace_, site, grant, credential)
        else:
            await attach(sid, namespace_, site, grant, credential)
            token_attached.append(1)
            await asyncio.sleep(0.3)

    sockets._attach = racing

    async def run():
        rec = Recorder()
        main = namespace(ns, "")
        await rec.connect(ns.root, [main])
        # sent back to back: handled one after the other, the last one's grant in charge
        await rec.sio.emit("authorize", {"token": ns.read_token}, namespace=main)
        assert (await rec.call("authorize", {}, main))["read"] is False
        await asyncio.to_thread(ns.subjects.revoke_all)
        ns.app.state.nightscout.forget()
        await asyncio.to_thread(ns.post, "/api/v1/entries", headers={"api-secret": SECRET_SHA1},
                                json={"type": "sgv", "sgv": 66, "date": now_ms()})
        await asyncio.sleep(0.5)
        deltas = []
        while rec.pending(main, "dataUpdate"):
            deltas.append(await rec.next(main, "dataUpdate"))
        assert not any(s.get("mgdl") == 66 for d in deltas for s in d.get("sgvs", []))
        await rec.close()

    asyncio.run(run())


def test_writer_without_read__neither_sees_nor_changes_a_stored_treatment(ns):
    """A careportal token posting (v1) or adding (socket dbAdd) a treatment that matches a
    stored one by created_at and eventType, or by _id: the stored one stays as it was, and
    the reply holds what the token sent, not the stored document."""
    stored = ns.post("/api/v1/treatments", headers={"api-secret": SECRET_SHA1}, json={
        "eventType": "Meal Bolus", "carbs": 60, "insulin": 6.5, "notes": "private",
        "created_at": iso(now_ms() - 600_000)}).json()[0]
    token = ns.token("careportal-only", ["careportal"])
    r = ns.post("/api/v1/treatments", params={"token": token}, json={
        "eventType": "Meal Bolus", "created_at": stored["created_at"], "carbs": 1})
    assert r.status_code == 200 and "private" not in r.text and r.json()[0]["carbs"] == 1

    async def run():
        rec, main, said = await authorized(ns, token)
        assert said["read"] is False
        added = await rec.call("dbAdd", {"collection": "treatments", "data": {
            "_id": stored["_id"], "eventType": "Note", "notes": "overwritten",
            "created_at": stored["created_at"]}}, main)
        await rec.close()
        return added

    added = asyncio.run(run())
    assert "private" not in str(added) and added[0]["notes"] == "overwritten"
    kept = ns.get("/api/v1/treatments.json", params={"token": ns.read_token}).json()
    assert [(t["carbs"], t["notes"]) for t in kept] == [(60, "private")]


def test_alarm_ack__a_huge_level_is_one_silence_not_millions(ns):
    async def run():
        rec = Recorder()
        alarm = namespace(ns, "/alarm")
        await rec.connect(ns.root, [alarm])
        await rec.call("subscribe", {"accessToken": ns.admin_token}, alarm)
        await rec.sio.emit("ack", (3_000_000, "default", 60_000), namespace=alarm)
        await rec.next(alarm, "clear_alarm")
        for level, silence in ((float("nan"), 60_000), (2, float("inf")), (True, None)):
            await rec.sio.emit("ack", (level, "default", silence), namespace=alarm)
            await rec.next(alarm, "clear_alarm")  # answered, not an error in the handler
        await rec.close()

    asyncio.run(run())
    assert len(ns.app.state.nightscout_sockets._silenced) == 2  # levels 1 and 2


def test_alarm_ack__acknowledges_the_clouds_own_alerts_as_the_app_does(cloud_ns):
    """A Nightscout client's `ack` on /alarm (the Nightscout page, a follower) acknowledges
    the cloud's open alerts of that level and below, so the family's apps drop them too; a
    credential without Nightscout's `notifications:*:ack` (a `readable` token) changes
    nothing, nor does another group."""
    store = cloud_ns.app.state.store
    data = store.tenant("fam-1")
    t = now_ms() - 60_000
    low = data.add_alert("low", "warning", t, "Glucose 68 mg/dL is below 70 mg/dL.")
    urgent = data.add_alert("urgent_low", "urgent", t, "Glucose 52 mg/dL is below 54 mg/dL.")
    hub = cloud_ns.app.state.events
    published = []
    publish = hub.publish
    hub.publish = lambda site, kind, body: (published.append((site, kind, body)),
                                            publish(site, kind, body))

    def open_ids():
        return sorted(a["id"] for a in data.alerts(unacked=True))

    async def run():
        reader, admin = Recorder(), Recorder()
        alarm = namespace(cloud_ns, "/alarm")
        await reader.connect(cloud_ns.root, [alarm])
        await admin.connect(cloud_ns.root, [alarm])
        said = await reader.call("subscribe", {"accessToken": cloud_ns.read_token}, alarm)
        assert (said["read"], said["ack"]) == (True, False)
        said = await admin.call("subscribe", {"accessToken": cloud_ns.admin_token}, alarm)
        assert (said["read"], said["ack"]) == (True, True)
        await reader.sio.emit("ack", (2, "default", 60_000), namespace=alarm)
        await admin.sio.emit("ack", (2, "another-group", 60_000), namespace=alarm)
        assert (await admin.next(alarm, "clear_alarm"))["group"] == "another-group"
        await admin.sio.emit("ack", (1, "default", 60_000), namespace=alarm)
        assert (await admin.next(alarm, "clear_alarm"))["message"] == \
            "default - Warning was ack'd"
        # the warning only: neither the reader nor the group
        assert await asyncio.to_thread(open_ids) == [urgent]
        assert reader.pending(alarm, "clear_alarm") == 2  # it heard both, acked neither
        await admin.sio.emit("ack", (2, "default", 60_000), namespace=alarm)
        await admin.next(alarm, "clear_alarm")
        for r in (reader, admin):
            await r.close()

    asyncio.run(run())
    assert open_ids() == []
    for alert_id in (low, urgent):
        row = data.alert(alert_id)
        assert row["acked_at"] is not None and row["acked_by"] is None and row["ended_ms"] is None
    # the family's apps were told (the live feed), the audit log names the credential
    assert [(body["id"], body["acked_at"] is not None) for site, kind, body in published
            if kind == "alert"] == [(low, True), (urgent, True)]
    audit = [(e["action"], e["detail"]) for e in store.audit_log("fam-1")
             if e["action"] == "alert.ack"]
    assert sorted(audit, key=lambda e: e[1]["alert"]) == [
        ("alert.ack", {"alert": low, "via": "nightscout", "credential": "aaps"}),
        ("alert.ack", {"alert": urgent, "via": "nightscout", "credential": "aaps"})]


def test_public_site__a_token_nobody_has_reads_as_anyone_does_as_over_http(cloud_ns):
    """On a site everyone may read, a socket authorizing with a token nobody has gets what
    anyone gets there (read), as an HTTP request with that `?token=` does; a wrong secret,
    or the same token on a private site, is still refused."""
    store = cloud_ns.app.state.store
    store.create_tenant("fam-pub", "Public", public_read=True)

    nobody = {"token": "nobody-0123456789abcdef"}

    async def run():
        rec = Recorder()
        await rec.connect(cloud_ns.root, ["/t/fam-pub"])
        public = await rec.call("authorize", nobody, "/t/fam-pub")
        await rec.close()
        refused = []
        for site, creds in (("fam-pub", {"secret": "0" * 40}), ("fam-2", nobody)):
            rec = Recorder()
            await rec.connect(cloud_ns.root, [f"/t/{site}"])
            await rec.sio.emit("authorize", creds, namespace=f"/t/{site}")
            refused.append(await _gone(rec, f"/t/{site}"))  # disconnected, as before
            await rec.close()
        return public, refused

    public, refused = asyncio.run(run())
    assert public == {"read": True, "write": False, "write_treatment": False}, public
    assert refused == [True, True]
    http = httpx.get(f"{cloud_ns.root}/t/fam-pub/api/v1/entries.json?token=nobody-0123456789abcdef",
                     timeout=10)
    assert http.status_code == 200


def test_a_treatment_lasting_1e308_minutes_stops_no_live_update(cloud_ns):
    """A Temp Basal whose duration has no end in integers (stored: Nightscout keeps any
    number) once ended the process's socket.io pump: no site's readers heard a change or an
    alarm again, and a new socket of that site got no dataUpdate for 60 hours."""
    import hashlib

    from tests.support.nightscout import OTHER_SECRET

    other = hashlib.sha1(OTHER_SECRET.encode()).hexdigest()

    async def run():
        mine, theirs = Recorder(), Recorder()
        for rec, secret in ((mine, SECRET_SHA1), (theirs, other)):
            await rec.connect(cloud_ns.root, ["/"])
            assert (await rec.call("authorize", {"secret": secret}, "/"))["read"] is True
            await rec.next("/", "dataUpdate")
        async with httpx.AsyncClient(base_url=cloud_ns.root) as c:
            r = await c.post("/api/v1/treatments", headers={"api-secret": SECRET_SHA1}, json=[
                {"eventType": "Temp Basal", "duration": 1e308, "absolute": 1,
                 "created_at": iso(now_ms() - 60_000)}])
            assert r.status_code == 200
            delta = await mine.next("/", "dataUpdate")
            assert delta["treatments"][0]["duration"] == 1e308
            assert "endmills" not in delta["treatments"][0]
            r = await c.post("/api/v1/entries", headers={"api-secret": other},
                             json=[{"type": "sgv", "sgv": 120, "date": now_ms() - 1000}])
            assert r.status_code == 200
            assert (await theirs.next("/", "dataUpdate"))["sgvs"][0]["mgdl"] == 120
        late = Recorder()
        await late.connect(cloud_ns.root, ["/"])
        assert (await late.call("authorize", {"secret": SECRET_SHA1}, "/"))["read"] is True
        full = await late.next("/", "dataUpdate")
        assert any(t.get("duration") == 1e308 for t in full["treatments"])
        for rec in (mine, theirs, late):
            await rec.close()

    asyncio.run(run())
