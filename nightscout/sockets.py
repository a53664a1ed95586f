"""socket.io as Nightscout serves it (Engine.IO 4, path /socket.io, polling and websocket).

Namespaces, each also under `/t/{site}` for clients whose URL names a cloud tenant (a client
library turns the URL's path into the namespace):
- `/`: `authorize` {secret | token} answered {read, write, write_treatment}, a full
  `dataUpdate` on authorizing, then deltas ({delta: true, sgvs, treatments, …}); `loadRetro`;
  `dbAdd`, `dbUpdate`, `dbUpdateUnset`, `dbRemove` (AndroidAPS's older NSClient);
- `/storage`: `subscribe` {accessToken, collections} then `create`/`update` {colName, doc} and
  `delete` {colName, identifier} (AndroidAPS's NSClient v3) for every write, whichever API made it;
- `/alarm`: `subscribe`, then `alarm`, `urgent_alarm`, `announcement`, `notification`,
  `clear_alarm`; `ack` (level, group, silence ms) silences a group.

One hub subscription per process feeds every socket (the hub brings other processes' changes
too: nothing polls per socket); a delta is built once per site and namespace and sent to a
room, encoded once for all its sockets. A socket with QUEUE_LIMIT packets still waiting is
disconnected rather than sent more (counted in `dropped`): on reconnecting, the client
authorizes again and gets a full dataUpdate.

A socket's credential is looked at again for every write it makes and for every open socket
every RECHECK_S, and at once when a secret, token or membership changes in this process: a
socket whose grant changed (revoked, rotated, its site deleted or made private) is
disconnected, so it must authorize again and gets only what it may still have. Alarms go only
to sockets whose grant reads the site, as data does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

import socketio

from nightlink.nightscout import auth, documents, jsonsafe, times
from nightlink.nightscout.http import NightscoutState
from nightlink.nightscout.hub import ALL
from nightlink.nightscout.site import Site

_LOGGER = logging.getLogger(__name__)
MAX_DURATION_MIN = 10 * 365 * 24 * 60  # a treatment's end past ten years is none
DAY = 24 * 3600 * 1000
QUEUE_LIMIT = 64  # packets a socket may have waiting before it is dropped and disconnected
RECHECK_S = 60.0  # open sockets' credentials are looked at again this often
MAX_SILENCE_MS = 2 * 3600 * 1000  # an alarm ack silences its group for at most this long
ACK_PERMISSION = "notifications:*:ack"  # what acknowledging an alarm takes (as Nightscout)
_COLL_ALIASES = {"foods": documents.FOOD}


def _split(namespace: str) -> tuple[str | None, str]:
    """(site key or None, channel "/", "/storage" or "/alarm") of a namespace."""
    key = None
    rest = namespace or "/"
    if rest.startswith("/t/"):
        parts = rest.split("/", 3)
        key = parts[2] if len(parts) > 2 else None
        rest = "/" + parts[3] if len(parts) > 3 else "/"
    rest = rest.rstrip("/") or "/"
    return key, rest if rest in ("/", "/storage", "/alarm") else ""


class NightscoutSockets:
    """The socket.io server of one app."""

    def __init__(self, state: NightscoutState):
        self.state = state
        self.sio = socketio.AsyncServer(async_mode="asgi", namespaces="*",
                                        cors_allowed_origins="*", logger=False,
                                        engineio_logger=False, max_http_buffer_size=1_000_000)
        self.asgi = socketio.ASGIApp(self.sio, socketio_path="socket.io")
        self._namespaces: dict[str, set[str]] = {}  # site -> namespaces with sockets
        self._pump: asyncio.Task | None = None
        self._silenced: dict[tuple[str, str, int], float] = {}
        self.dropped = 0  # packets not sent to sockets that fell behind (they were disconnected)
        self.on_drop = None  # called with that number (the cloud counts it in its metrics)
        self.revoked = 0  # sockets disconnected because their grant changed
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}  # (namespace, sid): _granting
        self._recheck: asyncio.Task | None = None
        self._recheck_now: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        state.listeners.append(self._access_changed)
        for event in ("connect", "disconnect", "authorize", "loadRetro", "dbAdd", "dbUpdate",
                      "dbUpdateUnset", "dbRemove", "subscribe", "ack", "nsping"):
            self.sio.on(event, getattr(self, "_on_" + event), namespace="*")

    # -- connection ----------------------------------------------------------------------------

    async def _on_connect(self, namespace: str, sid: str, environ: dict, auth_: Any = None):
        key, channel = _split(namespace)
        if not channel:
            return False
        directory = self.state.directory
        by_host = getattr(directory, "site_key_for_host", None)
        if key is None and by_host is not None:
            key = by_host(environ.get("HTTP_HOST", ""))
        address = environ.get("REMOTE_ADDR") or (environ.get("asgi.scope", {}).get("client")
                                                 or ["?"])[0]
        await self.sio.save_session(sid, {"key": key, "address": address, "site": None},
                                    namespace=namespace)
        self._ensure_pump()
        return True

    async def _on_disconnect(self, namespace: str, sid: str, *_):
        self._locks.pop((namespace, sid), None)
        with contextlib.suppress(KeyError, ValueError):
            session = await self.sio.get_session(sid, namespace=namespace)
            if _split(namespace)[1] == "/" and session.get("site") is not None:
                await self._count_readers(session["site"], namespace, leaving=sid)

    async def _count_readers(self, site_key: str, namespace: str, leaving: str = "") -> None:
        """`clients`: how many sockets read the site here, told to those sockets only (a
        stranger learns neither that the site exists nor who follows it)."""
        room = f"data:{site_key}"
        readers = [sid for sid, _ in self.sio.manager.get_participants(namespace, room)
                   if sid != leaving]
        if readers:
            await self.sio.emit("clients", len(readers), room=room, namespace=namespace,
                                skip_sid=leaving or None)

    async def _attach(self, sid: str, namespace: str, site, grant, credential) -> None:
        """Remember the socket's site, grant and the credential that gave it (None: the site's
        default grant), and have the hub watch that site. A socket authorizing again first
        leaves the rooms its earlier grant put it in: it hears only what this one allows."""
        await self._leave_rooms(sid, namespace)
        async with self.sio.session(sid, namespace=namespace) as session:
            session["site"] = site.key
            session["grant"] = grant
            session["credential"] = credential
        self._namespaces.setdefault(site.key, set()).add(namespace)
        if self.state.hub:
            await self.state.hub.follow(site.key)

    async def _credential(self, value: str, key: str | None) -> auth.Grant | None:
        """The grant of one presented secret, token or JWT of this site (None: not valid)."""
        directory = self.state.directory
        if not auth.looks_like_jwt(value):
            return await asyncio.to_thread(directory.credential, value, key)
        claims = auth.read_jwt(directory.jwt_secret, value)
        if not claims or key is not None and claims["site"] != key:
            return None
        return await asyncio.to_thread(directory.credential, claims["accessToken"],
                                       claims["site"])

    async def _grant(self, namespace: str, sid: str, *, secret: Any = None, token: Any = None,
                     access_token: Any = None) -> tuple[Site | None, auth.Grant, str | None] | None:
        """The site and grant of the credentials a socket presents, and the credential that
        gave the grant (None: the site's default grant); None: refused. A URL naming no site
        gives no site and a grant of nothing."""
        session = await self.sio.get_session(sid, namespace=namespace)
        key = session["key"]
        state, directory = self.state, self.state.directory
        address = session["address"]
        offered = [value for value in (secret, access_token, token)
                   if isinstance(value, str) and value.strip()]
        # Counted before they are looked at, in one locked step (as the HTTP API does), so
        # parallel guesses cannot all pass the limit before any is counted.
        wait, stamp = (state.failures.attempt(address) if offered
                       else (state.failures.blocked(address), 0.0))
        if wait:
            return None
        grant, missed, used = None, False, None
        try:
            for value in offered:
                used = auth.normalise_presented(value)
                grant = await self._credential(used, key)
                if grant is not None:
                    break
                missed = True  # a wrong one before a right one is still a guess
        except Exception:  # the lookup failed (a database away): not a wrong credential;
            # a cancelled lookup (the socket gone) stays counted
            state.failures.forgive(address, stamp)
            raise
        if offered and grant is None:
            # a token alone (a wrong secret is refused everywhere)
            named = None if key is None or isinstance(secret, str) and secret.strip() else \
                await asyncio.to_thread(directory.site, key)
            fallback = named.unknown_token_grant() if named is not None else None
            return (named, fallback, None) if fallback is not None else None
        if grant is not None and grant.kind == "secret":
            state.failures.succeeded(address)
        elif not missed:
            state.failures.forgive(address, stamp)
        if grant is not None:
            site = await asyncio.to_thread(directory.site, grant.site_key)
        elif key is not None:
            site = await asyncio.to_thread(directory.site, key)
            if site is None:  # answered as a site that lets strangers read nothing, so a
                # site's name (a family's) is not found out by probing
                return None, auth.Grant(key, "anonymous", auth.Permissions(), "anonymous"), None
        else:
            site = await asyncio.to_thread(directory.default_site)
        if site is None:
            return None
        return (site, grant, used) if grant is not None else (site, site.default_grant(), None)

    async def _regrant(self, session: dict) -> tuple[Site, auth.Grant] | None:
        """The socket's site and what the credential it authorized with allows there now
        (None: nothing, or its site is gone). Not counted as a failed attempt: the socket
        offers nothing new."""
        site = await asyncio.to_thread(self.state.directory.site, session["site"])
        if site is None:
            return None
        value = session.get("credential")
        if value is None:
            return site, site.default_grant()
        grant = await self._credential(value, session["key"])
        return (site, grant) if grant is not None and grant.site_key == site.key else None

    # -- main namespace --------------------------------------------------------------------------

    def _granting(self, sid: str, namespace: str) -> asyncio.Lock:
        """One socket's authorize/subscribe handled one at a time: the handlers run
        concurrently, and two overlapping ones could leave the socket in the first one's
        rooms with the second one's credential in its session (which the re-check reads)."""
        return self._locks.setdefault((namespace, sid), asyncio.Lock())

    async def _on_authorize(self, namespace: str, sid: str, data: Any = None):
        async with self._granting(sid, namespace):
            return await self._authorize(namespace, sid, data)

    async def _authorize(self, namespace: str, sid: str, data: Any = None):
        data = data if isinstance(data, dict) else {}
        found = await self._grant(namespace, sid, secret=data.get("secret"),
                                  token=data.get("token"))
        if found is None:
            await self.sio.disconnect(sid, namespace=namespace)
            return None
        site, grant, credential = found
        if site is not None:
            await self._attach(sid, namespace, site, grant, credential)
        else:  # a site nobody has: whatever this socket heard before, it hears nothing now
            await self._detach(sid, namespace)
        reply = {"read": grant.allows("api:*:read"),
                 "write": grant.allows("api:*:create,update,delete"),
                 "write_treatment": grant.allows("api:treatments:create,update,delete")}
        await self.sio.emit("connected", to=sid, namespace=namespace)
        if reply["read"]:
            await self.sio.enter_room(sid, f"data:{site.key}", namespace=namespace)
            full = await asyncio.to_thread(self._full_data, site, bool(data.get("status")))
            await self.sio.emit("dataUpdate", full, to=sid, namespace=namespace)
            await self._count_readers(site.key, namespace)
        return reply

    async def _detach(self, sid: str, namespace: str) -> None:
        """Forget the socket's site, grant and credential; it leaves every room."""
        await self._leave_rooms(sid, namespace)
        async with self.sio.session(sid, namespace=namespace) as session:
            session["site"] = session["grant"] = session["credential"] = None

    async def _leave_rooms(self, sid: str, namespace: str) -> None:
        """Leave every room; the readers of a site the socket stops reading hear the count."""
        for room in self.sio.rooms(sid, namespace=namespace):
            if room != sid:
                await self.sio.leave_room(sid, room, namespace=namespace)
                if room.startswith("data:") and _split(namespace)[1] == "/":
                    await self._count_readers(room.removeprefix("data:"), namespace)

    def _full_data(self, site: Site, with_status: bool) -> dict:
        now = int(time.time() * 1000)
        docs = site.docs
        entries = [r for r in docs.latest(documents.ENTRIES, count=2000, lo=now - 2 * DAY,
                                          ascending=True)]
        out: dict[str, Any] = {
            "sgvs": [_sgv(r) for r in entries if r.kind == "sgv"],
            "mbgs": [_mbg(r) for r in entries if r.kind == "mbg"],
            "cals": [_cal(r) for r in entries if r.kind == "cal"],
            "treatments": [_treatment(r) for r in docs.latest(
                documents.TREATMENTS, count=5000, lo=now - 60 * 3600 * 1000, ascending=True)],
            "devicestatus": _reduced([r for r in docs.latest(
                documents.DEVICESTATUS, count=2000, lo=now - DAY, ascending=True)]),
            "profiles": [r.v1() for r in docs.latest(documents.PROFILE, count=1)],
            "food": [r.v1() for r in docs.find(documents.FOOD, None, count=1000)],
            "dbstats": {},
        }
        if with_status:
            out["status"] = self._status(site)
        return out

    def _status(self, site: Site) -> dict:
        return {"status": "ok", "name": "nightscout", "version": "15.0.7", "versionNum": 150007,
                "serverTime": times.iso(int(time.time() * 1000)), "careportalEnabled": True,
                "boluscalcEnabled": False, "settings": {"units": site.units,
                                                        "thresholds": site.thresholds},
                "extendedSettings": {}}

    async def _on_loadRetro(self, namespace: str, sid: str, data: Any = None):
        session = await self.sio.get_session(sid, namespace=namespace)
        found = await self._regrant(session) if session.get("site") is not None else None
        if found is None or not found[1].allows("api:devicestatus:read"):
            return {"result": "Not authorized"}
        site = found[0]
        now = int(time.time() * 1000)
        rows = await asyncio.to_thread(site.docs.latest, documents.DEVICESTATUS, count=2000,
                                       lo=now - DAY, ascending=True)
        await self.sio.emit("retroUpdate", {"devicestatus": [r.v1() for r in rows]}, to=sid,
                            namespace=namespace)
        return {"result": "success"}

    async def _db_call(self, namespace: str, sid: str, data: Any, op: str):
        """(site, collection, message, grant, None) for a dbAdd/dbUpdate/dbRemove the socket
        may make, else (None, None, None, None, the refusal Nightscout answers)."""
        data = data if isinstance(data, dict) else {}
        try:  # the checks an HTTP body gets: depth, size, half emojis, numbers JSON cannot hold
            data = jsonsafe.clean(data, 0, [jsonsafe.MAX_NODES])
        except jsonsafe.BodyError as exc:
            return None, None, None, None, {"result": str(exc)}
        coll = str(data.get("collection", ""))
        session = await self.sio.get_session(sid, namespace=namespace)
        if session.get("site") is None:
            return None, None, None, None, {"result": "Not authorized"}
        if coll not in documents.V1_COLLECTIONS:
            return None, None, None, None, {"result": "Wrong collection"}
        found = await self._regrant(session)  # revoked or rotated since it authorized?
        if found is None:
            return None, None, None, None, {"result": "Not authorized"}
        site, grant = found
        if not grant.allows(f"api:{coll}:{op}"):
            return None, None, None, None, {"result": "Not permitted"}
        return site, coll, data, grant, None

    async def _on_dbAdd(self, namespace: str, sid: str, data: Any = None):
        site, coll, data, grant, refused = await self._db_call(namespace, sid, data, "create")
        if refused is not None:
            return refused
        reads = grant.allows(f"api:{coll}:read")
        items = data.get("data")
        items = items if isinstance(items, list) else [items]

        def work() -> list[dict]:
            now = int(time.time() * 1000)
            good = []
            for item in items:
                try:
                    good.append(documents.normalize(coll, item, now))
                except documents.DocumentError as exc:
                    self.state.directory.dead_letter(site.key, f"socket:{coll}", str(exc),
                                                     repr(item).encode()[:65536])
            # what may not update the collection does not change a document it matches, and
            # what cannot read it does not see it
            outcomes = (site.docs.put(good, mode="replace" if grant.may_change(coll) else "keep")
                        if good else [])
            return documents.shown(good, outcomes, reads)

        return await asyncio.to_thread(work)

    async def _on_dbUpdate(self, namespace: str, sid: str, data: Any = None, unset=False):
        site, coll, data, _, refused = await self._db_call(namespace, sid, data, "update")
        if refused is not None:
            return refused
        key = data.get("_id")
        if not isinstance(key, str) or not key:
            return {"result": "Missing _id"}
        fields = data.get("data") if isinstance(data.get("data"), dict) else {}

        def work() -> None:
            row = site.docs.get(coll, key)
            if row is None:
                return
            doc = dict(row.doc)
            for name, value in fields.items():
                if unset:
                    doc.pop(name, None)
                else:
                    doc[name] = value
            try:
                site.docs.update(row, documents.normalize(coll, doc, int(time.time() * 1000)))
            except documents.DocumentError as exc:
                self.state.directory.dead_letter(site.key, f"socket:{coll}", str(exc),
                                                 repr(fields).encode()[:65536])

        await asyncio.to_thread(work)
        return {"result": "success"}

    async def _on_dbUpdateUnset(self, namespace: str, sid: str, data: Any = None):
        return await self._on_dbUpdate(namespace, sid, data, unset=True)

    async def _on_dbRemove(self, namespace: str, sid: str, data: Any = None):
        site, coll, data, _, refused = await self._db_call(namespace, sid, data, "delete")
        if refused is not None:
            return refused
        key = data.get("_id")
        if isinstance(key, str) and key:
            row = await asyncio.to_thread(site.docs.get, coll, key)
            if row is not None and row.valid:
                await asyncio.to_thread(site.docs.delete, [row])
        return {"result": "success"}

    async def _on_nsping(self, namespace: str, sid: str, data: Any = None):
        return {"result": "pong", "mills": int(time.time() * 1000)}

    # -- /storage and /alarm ---------------------------------------------------------------------

    async def _on_subscribe(self, namespace: str, sid: str, data: Any = None):
        async with self._granting(sid, namespace):
            return await self._subscribe(namespace, sid, data)

    async def _subscribe(self, namespace: str, sid: str, data: Any = None):
        _, channel = _split(namespace)
        data = data if isinstance(data, dict) else {}
        found = await self._grant(namespace, sid, access_token=data.get("accessToken"),
                                  secret=data.get("secret"), token=data.get("jwtToken"))
        if found is None or (channel == "/storage" and not found[1].authenticated):
            return {"success": False, "message": "Missing or bad accessToken"}
        site, grant, credential = found
        if site is not None:
            await self._attach(sid, namespace, site, grant, credential)
        else:
            await self._detach(sid, namespace)
        if channel == "/alarm":
            read = grant.allows("api:*:read")
            if read:  # an alarm tells the glucose: only for those who may read it
                await self.sio.enter_room(sid, f"alarm:{site.key}", namespace=namespace)
            return {"success": True, "message": "Subscribed for alarms",
                    "read": read, "ack": read and grant.allows(ACK_PERMISSION)}
        wanted = data.get("collections")
        if not isinstance(wanted, list) or not wanted:
            wanted = list(documents.V3_COLLECTIONS)
        joined = []
        for name in wanted:
            coll = _COLL_ALIASES.get(str(name), str(name))
            perm = "api:settings:admin" if coll == documents.SETTINGS else f"api:{coll}:read"
            if coll in documents.V3_COLLECTIONS and grant.allows(perm):
                await self.sio.enter_room(sid, f"storage:{site.key}:{coll}",
                                          namespace=namespace)
                joined.append(str(name))
        if not joined:
            return {"success": False, "message": "Unauthorized to receive any collection"}
        return {"success": True, "collections": joined}

    async def _on_ack(self, namespace: str, sid: str, level: Any = None, group: Any = None,
                      silence: Any = None):
        session = await self.sio.get_session(sid, namespace=namespace)
        site = session.get("site")
        if site is None:
            return None
        found = await self._regrant(session)
        grant = found[1] if found is not None else None
        if grant is None or not grant.allows("api:*:read") or not grant.allows(ACK_PERMISSION):
            return None  # silencing the family's alarms takes a credential that hears them
            # and may acknowledge them (Nightscout's `notifications:*:ack`: not `readable`)
        await self.acknowledge(site, level, group, silence, grant)
        return None

    async def acknowledge(self, site: str, level: Any, group: Any, silence: Any,
                          grant: auth.Grant) -> None:
        """Silence a site's alarms of `level` (1 warning, 2 urgent: both) in `group` for
        `silence` ms (30 minutes when not given, two hours at most), acknowledge its open
        alerts, and tell its `/alarm` sockets "All Clear": the socket's `ack` and
        `GET /api/v1/notifications/ack` alike; the caller has checked ACK_PERMISSION."""
        level = min(max(int(level), 1), 2) if _finite(level) else 1
        group = str(group or "default")[:100]
        now = time.time()
        self._silenced = {k: v for k, v in self._silenced.items() if v > now}  # bounded
        silence_ms = min(int(silence), MAX_SILENCE_MS) \
            if _finite(silence) and silence > 0 else 30 * 60_000
        for lvl in range(1, level + 1):
            self._silenced[(site, group, lvl)] = time.time() + silence_ms / 1000
        hook = getattr(self.state.directory, "alarm_acked", None)
        if hook is not None:
            await asyncio.to_thread(hook, site, level, group, silence_ms, grant)
        level_name = "Urgent" if level >= 2 else "Warning"
        await self._emit_alarm(site, {"clear": True, "title": "All Clear",
                                      "message": f"{group} - {level_name} was ack'd",
                                      "group": group})

    # -- credentials looked at again -------------------------------------------------------------

    def _access_changed(self) -> None:
        """A secret, token or membership changed (any thread): look at open sockets now."""
        loop, event = self._loop, self._recheck_now
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def _run_recheck(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recheck_now.wait(), RECHECK_S)
            self._recheck_now.clear()
            try:
                await self.recheck()
            except Exception as exc:  # noqa: BLE001 - a database away: the next pass tries again
                _LOGGER.warning("socket.io credential re-check failed: %s", exc)

    async def recheck(self) -> int:
        """Disconnect every socket whose credential no longer gives the grant it was given;
        how many were. Each namespace is walked once (sockets at the root URL or a tenant's
        subdomain share `/` whatever their site)."""
        gone = 0
        for namespace in {ns for namespaces in list(self._namespaces.values())
                          for ns in namespaces}:
            for sid, _ in list(self.sio.manager.get_participants(namespace, None)):
                try:
                    session = await self.sio.get_session(sid, namespace=namespace)
                except KeyError:  # disconnected meanwhile
                    continue
                if session.get("site") is None:
                    continue
                found = await self._regrant(session)
                if not _same(found[1] if found is not None else None, session["grant"]):
                    await self.sio.disconnect(sid, namespace=namespace)
                    gone += 1
        if gone:
            self.revoked += gone
            _LOGGER.info("socket.io: %d sockets disconnected: their access changed", gone)
        return gone

    # -- the pump: hub messages to rooms ---------------------------------------------------------

    def _ensure_pump(self) -> None:
        if self.state.hub is not None and (self._pump is None or self._pump.done()):
            self._pump = asyncio.get_running_loop().create_task(self._run_pump(),
                                                                name="ns-socketio")
        if self._recheck is None or self._recheck.done():
            self._loop = asyncio.get_running_loop()
            self._recheck_now = asyncio.Event()
            self._recheck = self._loop.create_task(self._run_recheck(), name="ns-recheck")

    async def _run_pump(self) -> None:
        queue = self.state.hub.subscribe(ALL)
        try:
            while True:
                msg = await queue.get()
                try:
                    await self._dispatch(msg)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one message that cannot be sent must not end every
                    # site's live updates and alarms on this process
                    _LOGGER.exception("socket.io dispatch of %s for %s failed",
                                      msg.get("type"), msg.get("site"))
        finally:
            self.state.hub.unsubscribe(ALL, queue)

    async def _dispatch(self, msg: dict) -> None:
        site = msg.get("site")
        if site not in self._namespaces:
            return
        if msg["type"] == "change":
            await self._emit_change(site, msg["data"])
        elif msg["type"] == "notification":
            await self._emit_alarm(site, msg["data"])

    async def _emit_change(self, site: str, change: dict) -> None:
        coll, action, rows = change["coll"], change["action"], change["rows"]
        delta: dict[str, Any] = {"delta": True, "lastUpdated": int(time.time() * 1000)}
        if coll == documents.ENTRIES and action != "delete":
            for kind, key, fn in (("sgv", "sgvs", _sgv), ("mbg", "mbgs", _mbg),
                                  ("cal", "cals", _cal)):
                picked = [fn(r) for r in rows if r.kind == kind]
                if picked:
                    delta[key] = picked
        elif coll == documents.TREATMENTS:
            delta["treatments"] = [
                {"_id": r.oid, "mills": r.date_ms, "action": "remove"} if action == "delete"
                else dict(_treatment(r), **({"action": "update"} if action == "update" else {}))
                for r in rows]
        elif coll == documents.DEVICESTATUS and action != "delete":
            delta["devicestatus"] = [dict(r.v1(), mills=r.date_ms) for r in rows]
        elif coll == documents.PROFILE:
            delta["profiles"] = [r.v1() for r in rows if r.valid]
        for namespace in list(self._namespaces.get(site, ())):
            _, channel = _split(namespace)
            if channel == "/" and len(delta) > 2:
                await self._emit_room("dataUpdate", delta, f"data:{site}", namespace)
            elif channel == "/storage":
                event = {"create": "create", "update": "update", "delete": "delete"}[action]
                for r in rows:
                    body = ({"colName": coll, "identifier": r.identifier} if action == "delete"
                            else {"colName": coll, "doc": r.v3()})
                    await self._emit_room(event, body, f"storage:{site}:{coll}", namespace)

    async def _emit_alarm(self, site: str, note: dict) -> None:
        if note.get("clear"):
            event = "clear_alarm"
        else:
            level = note.get("level", 0)
            group = note.get("group", "default")
            if level in (1, 2) and self._silenced.get((site, group, level), 0) > time.time():
                return
            event = ("alarm" if level == 1 else "urgent_alarm" if level == 2 else
                     "announcement" if note.get("isAnnouncement") else "notification")
        for namespace in list(self._namespaces.get(site, ())):
            if _split(namespace)[1] == "/alarm":
                await self._emit_room(event, note, f"alarm:{site}", namespace)

    async def _emit_room(self, event: str, data: Any, room: str, namespace: str) -> None:
        """Emit to a room (the packet is encoded once for all its sockets), leaving out each
        socket with more than QUEUE_LIMIT packets waiting: it is disconnected instead, its
        loss counted, and the client, reconnecting, gets a full dataUpdate (its resync)."""
        behind = []
        sockets = self.sio.eio.sockets
        for sid, eio_sid in self.sio.manager.get_participants(namespace, room):
            socket = sockets.get(eio_sid)
            if socket is not None and socket.queue.qsize() >= QUEUE_LIMIT:
                behind.append(sid)
        if behind:
            self.dropped += len(behind)
            if self.on_drop is not None:
                self.on_drop(len(behind))
            for sid in behind:
                await self.sio.disconnect(sid, namespace=namespace)
        await self.sio.emit(event, data, room=room, namespace=namespace, skip_sid=behind or None)

    async def close(self) -> None:
        for task in (self._pump, self._recheck):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task  # a task that failed must not fail the app's shutdown


def _finite(value: Any) -> bool:
    """A number an ack may use (JSON as Python reads it also carries NaN and Infinity)."""
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _same(fresh: auth.Grant | None, old: auth.Grant) -> bool:
    """Whether a credential looked at again still gives what it gave."""
    return (fresh is not None and fresh.site_key == old.site_key
            and fresh.subject == old.subject and fresh.kind == old.kind
            and fresh.permissions.patterns == old.permissions.patterns)


def _sgv(row) -> dict:
    d = row.doc
    return {"_id": row.oid, "mgdl": d.get("sgv"), "mills": row.date_ms, "device": d.get("device"),
            "direction": d.get("direction"), "filtered": d.get("filtered"),
            "unfiltered": d.get("unfiltered"), "noise": d.get("noise"), "rssi": d.get("rssi"),
            "type": "sgv"}


def _mbg(row) -> dict:
    d = row.doc
    return {"_id": row.oid, "mgdl": d.get("mbg"), "mills": row.date_ms, "device": d.get("device"),
            "type": "mbg"}


def _cal(row) -> dict:
    d = row.doc
    return {"_id": row.oid, "mills": row.date_ms, "scale": d.get("scale"),
            "intercept": d.get("intercept"), "slope": d.get("slope"), "type": "cal"}


def _treatment(row) -> dict:
    out = row.v1()
    out["mills"] = row.date_ms
    duration = row.doc.get("duration")
    if isinstance(duration, int | float) and not isinstance(duration, bool) \
            and abs(duration) <= MAX_DURATION_MIN:  # (1e308 minutes ends at no integer)
        out["endmills"] = row.date_ms + round(duration * 60_000)
    return out


def _reduced(rows: list) -> list[dict]:
    """The last 10 statuses per device and kind (uploader, pump, openaps, loop, xdripjs)."""
    keep: dict[tuple, list] = {}
    for row in rows:  # oldest first
        for kind in ("uploader", "pump", "openaps", "loop", "xdripjs"):
            if kind in row.doc:
                keep.setdefault((row.doc.get("device"), kind), []).append(row)
    chosen = {r.id: r for group in keep.values() for r in group[-10:]}
    return [dict(r.v1(), mills=r.date_ms) for r in sorted(chosen.values(),
                                                          key=lambda r: r.date_ms)]
