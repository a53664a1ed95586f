"""`nightlink bench live`: the live WebSocket path under many idle watchers, over real TCP.

The cloud runs as `nightlink cloud serve --api-only` in its own process on a private
PostgreSQL (initdb and pg_ctl, as the tests do; a SQLite file when PostgreSQL is not
installed: the figures say which). Each tenant gets one caregiver account and an API secret.

1. `connections` WebSockets over `tenants` tenants (raw asyncio connections in this process,
   one small protocol object each: a client lean enough to leave the CPU to the server);
2. idle: the server's CPU (% of one core, pings included) and RSS per 1,000 connections (the
   growth from before the clients connected);
3. entries uploaded over HTTP (API v1, paced: `UPLOAD_RATE` a second); each client's latency is
   from the upload's HTTP reply to its receipt of the entry (0 when it came first);
4. `one_tenant` connections on one tenant: the same, and how many deliveries never came;
5. a second API process on the same database: entries uploaded there reach clients of the
   first (`cross_process_p95_ms`).

Figures are from one run on a shared machine: the load of anything else running is noted in
`loadavg`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from nightlink.tools.bench.api import BenchError, _percentile, _serve, _wait_ready

SECRET = "bench-live-secret-0123456789"
JWT_SECRET = "b" + "0123456789abcdef" * 3  # what tools/bench/api.py's _serve gives the server
PATH = "/api/nl/v1/tenants/{tenant}/live?access_token={token}"
T_START = 1_700_000_000_000  # entries' dates: long past, so the alert worker stays idle
UPLOAD_RATE = 50.0  # uploads per second over all tenants (each reaches its tenant's clients)
ONE_TENANT_RATE = 2.0  # uploads per second to the crowded tenant (a CGM sends one per 5 min)


# -- the server side -------------------------------------------------------------------------


def _seed(url: str, tenants: int) -> dict[str, str]:
    """tenant -> an access token of its caregiver."""
    from nightlink.cloud.auth import hash_password, issue_tokens
    from nightlink.cloud.store import Store

    store = Store.open(url)
    try:
        digest = hash_password("bench-password-0123")
        tokens = {}
        for i in range(tenants):
            tenant = f"live-{i:03d}"
            store.create_tenant(tenant, f"Live {i}")
            store.set_api_secret(tenant, _secret(tenant))
            user = store.create_user(f"care{i}@bench.invalid", digest)
            store.grant(tenant, user["id"], "caregiver", by=None)
            tokens[tenant] = issue_tokens(store, user["id"], JWT_SECRET, 240, 1)["access_token"]
        return tokens
    finally:
        store.close()


def _secret(tenant: str) -> str:
    """The tenant's API secret (a secret names one tenant, so each has its own)."""
    return f"{SECRET}-{tenant}"


def _proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, need)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < need:
        raise BenchError(f"{need} connections need {need} open files, but the hard limit "
                         f"is {hard}; raise it (ulimit -Hn) or pass fewer --connections.")


# -- the client side ---------------------------------------------------------------------------


class _Watcher(asyncio.Protocol):
    """One WebSocket client, written on asyncio's Protocol: a handshake, then frames parsed
    from the byte stream; the server's pings are answered; entries are time-stamped."""

    def __init__(self, bench: _Bench, tenant: str, request: bytes):
        self.bench = bench
        self.tenant = tenant
        self.request = request
        self.buf = b""
        self.upgraded = False
        self.hello = asyncio.get_running_loop().create_future()
        self.transport = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.hello.done():
            self.hello.set_exception(ConnectionError("closed before the hello"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.hello.set_exception(ConnectionError(self.buf[:80].decode("latin-1")))
                self.transport.close()
                return
            self.upgraded = True
            self.buf = self.buf[end + 4:]
        self._frames()

    def _frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            opcode, length, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    break
                length, at = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length, at = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < at + length:
                break
            payload, buf = buf[at:at + length], buf[at + length:]
            if opcode == 1:
                self._message(payload)
            elif opcode == 9:  # ping: pong with the same payload (masked with a zero key)
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0"
                                     + payload)
            elif opcode == 8:
                self.transport.close()
        self.buf = buf

    def _message(self, payload: bytes) -> None:
        if not self.hello.done():
            self.hello.set_result(None)
            return
        if b'"type":"entry"' in payload:
            date = json.loads(payload)["data"]["date"]
            self.bench.received(self.tenant, date)
        elif b'"type":"resync"' in payload:
            self.bench.resyncs += 1


class _Bench:
    def __init__(self, port: int, tokens: dict[str, str]):
        self.port = port
        self.tokens = tokens
        self.receipts: dict[tuple[str, int], list[float]] = {}
        self.watchers: list[_Watcher] = []
        self.resyncs = 0

    def received(self, tenant: str, date: int) -> None:
        self.receipts.setdefault((tenant, date), []).append(time.monotonic())

    async def connect(self, tenant_ids: list[str], port: int | None = None,
                      concurrency: int = 200) -> list[_Watcher]:
        """One watcher per item of tenant_ids, all past their hello."""
        loop = asyncio.get_running_loop()
        port = port or self.port
        gate = asyncio.Semaphore(concurrency)
        made: list[_Watcher] = []

        async def one(tenant: str) -> None:
            key = base64.b64encode(os.urandom(16)).decode()
            request = (f"GET {PATH.format(tenant=tenant, token=self.tokens[tenant])} HTTP/1.1\r\n"
                       f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
            async with gate:
                _, watcher = await loop.create_connection(
                    lambda: _Watcher(self, tenant, request), "127.0.0.1", port)
                await asyncio.wait_for(watcher.hello, 60)
            made.append(watcher)

        await asyncio.gather(*(one(t) for t in tenant_ids))
        self.watchers += made
        return made

    def close(self, watchers: list[_Watcher]) -> None:
        for w in watchers:
            w.transport.close()
        self.watchers = [w for w in self.watchers if w not in watchers]


class _Uploader:
    """One keep-alive HTTP/1.1 connection posting API v1 entries."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def post(self, tenant: str, doc: dict) -> float:
        """The monotonic time of the reply (after checking it is 200)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = json.dumps([doc]).encode()
        self.writer.write((f"POST /t/{tenant}/api/v1/entries.json HTTP/1.1\r\n"
                           f"Host: 127.0.0.1:{self.port}\r\n"
                           f"api-secret: {hashlib.sha1(_secret(tenant).encode()).hexdigest()}\r\n"
                           "Content-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        answer = await self.reader.readexactly(length)
        replied = time.monotonic()
        if head[9:12] != b"200":
            raise BenchError(f"an upload answered {head[9:12].decode()}: {answer[:200]!r}")
        return replied

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _uploads(bench: _Bench, port: int, plan: list[tuple[str, int]], rate: float,
                   lanes: int = 4) -> dict[tuple[str, int], float]:
    """Upload one entry per (tenant, date) of the plan, `rate` per second over `lanes`
    connections; the reply time of each."""
    replies: dict[tuple[str, int], float] = {}
    uploaders = [_Uploader(port) for _ in range(lanes)]
    start = time.monotonic()

    async def lane(k: int) -> None:
        for i in range(k, len(plan), lanes):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tenant, date = plan[i]
            doc = {"type": "sgv", "date": date, "sgv": 90 + i % 120, "direction": "Flat",
                   "device": "bench-live"}
            replies[(tenant, date)] = await uploaders[k].post(tenant, doc)

    try:
        await asyncio.gather(*(lane(k) for k in range(lanes)))
    finally:
        for u in uploaders:
            u.close()
    return replies


async def _settle(bench: _Bench, expected: int, timeout: float) -> None:
    """Wait until `expected` receipts came, or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(len(v) for v in bench.receipts.values()) >= expected:
            return
        await asyncio.sleep(0.1)


def _latencies(bench: _Bench, replies: dict[tuple[str, int], float]) -> list[float]:
    out = []
    for key, replied in replies.items():
        out += [max(0.0, (t - replied) * 1000) for t in bench.receipts.get(key, ())]
    out.sort()
    return out


def _plan(tenant_ids: list[str], rounds: int, first: int) -> list[tuple[str, int]]:
    """(tenant, date) per upload: round after round over the tenants, 5 minutes apart."""
    return [(t, T_START + (first + r) * 300_000) for r in range(rounds) for t in tenant_ids]


async def _run(port: int, second_port: int, tokens: dict[str, str], server_pid: int,
               connections: int, one_tenant: int, idle_s: float, out: dict) -> None:
    tenant_ids = sorted(tokens)
    bench = _Bench(port, tokens)
    spread = [tenant_ids[i % len(tenant_ids)] for i in range(connections)]
    # A first tenth (at most 100) warms the server's code paths and thread pool up; RSS per
    # 1,000 is the growth over the rest.
    warm = min(100, connections // 10)
    watchers = await bench.connect(spread[:warm]) if warm else []
    await asyncio.sleep(1)
    _, rss_before = _proc_stat(server_pid)
    t0 = time.monotonic()
    watchers += await bench.connect(spread[warm:])
    out["connect_s"] = round(time.monotonic() - t0, 1)
    await asyncio.sleep(2)  # the connect burst's work done
    cpu0, _ = _proc_stat(server_pid)
    w0 = time.monotonic()
    await asyncio.sleep(idle_s)
    cpu1, rss_after = _proc_stat(server_pid)
    out["idle_cpu_pct"] = round((cpu1 - cpu0) / (time.monotonic() - w0) * 100, 2)
    out["server_rss_mb"] = round(rss_after, 1)
    out["rss_mb_per_1000"] = round((rss_after - rss_before) / ((connections - warm) / 1000), 2)

    # Every tenant gets `rounds` entries, paced; each goes to its tenant's clients.
    rounds = 3
    plan = _plan(tenant_ids, rounds, 0)
    out["uploads_per_s"] = UPLOAD_RATE
    replies = await _uploads(bench, port, plan, rate=UPLOAD_RATE)
    per_tenant = {t: spread.count(t) for t in tenant_ids}
    expected = sum(per_tenant[t] for t, _ in plan)
    await _settle(bench, expected, 30)
    lat = _latencies(bench, replies)
    out["deliveries"] = len(lat)
    out["lost"] = expected - len(lat)
    out["p50_ms"], out["p95_ms"], out["p99_ms"] = (_percentile(lat, p) for p in (50, 95, 99))
    bench.close(watchers)
    await asyncio.sleep(2)

    # One tenant, many watchers.
    hot = tenant_ids[0]
    crowd = await bench.connect([hot] * one_tenant)
    bench.receipts.clear()
    plan = _plan([hot], 20, rounds)
    out["one_tenant_uploads_per_s"] = ONE_TENANT_RATE
    replies = await _uploads(bench, port, plan, rate=ONE_TENANT_RATE, lanes=1)
    expected = one_tenant * len(plan)
    await _settle(bench, expected, 30)
    lat = _latencies(bench, replies)
    out["one_tenant_p95_ms"] = _percentile(lat, 95)
    out["one_tenant_lost"] = expected - len(lat)
    out["resyncs"] = bench.resyncs
    bench.close(crowd)

    # Across processes: watchers on the first server, uploads through the second.
    watchers = await bench.connect([tenant_ids[-1]] * 50)
    bench.receipts.clear()
    plan = _plan([tenant_ids[-1]], 20, rounds + 20)
    replies = await _uploads(bench, second_port, plan, rate=4.0, lanes=1)
    await _settle(bench, 50 * len(plan), 20)
    lat = _latencies(bench, replies)
    out["cross_process_p95_ms"] = _percentile(lat, 95)
    out["cross_process_lost"] = 50 * len(plan) - len(lat)
    bench.close(watchers)


def bench_live(connections: int = 10_000, tenants: int = 100, one_tenant: int = 3_000,
               idle_s: float | None = None, backend: str = "auto") -> dict:
    """The live path's figures (see the module docstring)."""
    from nightlink.tools.services import PostgresServer, free_port

    if tenants < 1 or connections < tenants:
        raise BenchError("--connections must be at least --tenants, and --tenants at least 1.")
    _raise_nofile(max(connections, one_tenant) + 500)
    if idle_s is None:
        idle_s = 15.0 if connections >= 2000 else 3.0
    use_pg = backend == "postgres" or (backend == "auto" and PostgresServer.available())
    out: dict = {"connections": connections, "tenants": tenants, "one_tenant": one_tenant,
                 "backend": "postgres" if use_pg else "sqlite",
                 "loadavg": [round(x, 2) for x in os.getloadavg()]}
    pg = PostgresServer().start() if use_pg else None
    procs = []
    try:
        with tempfile.TemporaryDirectory(prefix="nl-bench-live-") as tmp:
            url = pg.create_database("live") if pg else f"sqlite:///{Path(tmp) / 'cloud.db'}"
            tokens = _seed(url, tenants)
            ports = [free_port(), free_port()]
            procs = [_serve(url, port) for port in ports]
            for port, proc in zip(ports, procs, strict=True):
                _wait_ready(f"http://127.0.0.1:{port}", proc, timeout=120)
            try:
                import uvloop
                runner = uvloop.run
            except ImportError:
                runner = asyncio.run
            out["one_tenant"] = one_tenant = min(one_tenant, connections)
            runner(_run(ports[0], ports[1], tokens, procs[0].pid, connections, one_tenant,
                        idle_s, out))
            out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.wait(30)
            if proc.poll() is None:
                proc.kill()
        if pg is not None:
            pg.stop()
    return out
