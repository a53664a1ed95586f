"""A real socket.io client (python-socketio, Engine.IO 4) that records what it receives."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import socketio

EVENTS = ("dataUpdate", "retroUpdate", "connected", "clients", "create", "update", "delete",
          "alarm", "urgent_alarm", "clear_alarm", "announcement", "notification")


class Recorder:
    """Connects to namespaces and keeps every event per (namespace, name) in a queue."""

    def __init__(self):
        self.sio = socketio.AsyncClient(reconnection=False)
        self.queues: dict[tuple[str, str], asyncio.Queue] = defaultdict(asyncio.Queue)

    def _listen(self, namespace: str) -> None:
        for name in EVENTS:
            def handler(*args, _name=name, _ns=namespace):
                self.queues[(_ns, _name)].put_nowait(args[0] if len(args) == 1 else args)

            self.sio.on(name, handler, namespace=namespace)

    async def connect(self, root: str, namespaces: list[str], transports=None) -> None:
        for ns in namespaces:
            self._listen(ns)
        await self.sio.connect(root, namespaces=namespaces, socketio_path="socket.io",
                               transports=transports or ["polling", "websocket"],
                               wait_timeout=10)

    async def call(self, event: str, data, namespace: str, timeout: float = 10):
        return await self.sio.call(event, data, namespace=namespace, timeout=timeout)

    async def next(self, namespace: str, event: str, timeout: float = 10):
        return await asyncio.wait_for(self.queues[(namespace, event)].get(), timeout)

    def pending(self, namespace: str, event: str) -> int:
        return self.queues[(namespace, event)].qsize()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


def namespace(ns, channel: str) -> str:
    """The namespace a client library makes of the site's URL plus a channel ("" for /)."""
    path = ns.site_url[len(ns.root):]
    return (path + channel) or "/"


async def authorized(ns, token: str) -> tuple[Recorder, str, dict]:
    """(a Recorder connected to the site's main namespace, that namespace, what `authorize`
    with the access token answered), as AndroidAPS's NSClient starts."""
    rec = Recorder()
    main = namespace(ns, "")
    await rec.connect(ns.root, [main])
    return rec, main, await rec.call("authorize", {"token": token}, main)
