"""`nightlink bench api`: Nightscout read latency under 100 concurrent clients, over real HTTP.

A fresh SQLite file gets one tenant with `days` of 5-minute CGM entries (90 days: 25,920)
and a treatment every two hours; `nightlink cloud serve --api-only` serves it on a free
loopback port in its own process; then `clients` asyncio clients (one keep-alive connection
each) share a bounded number of requests per endpoint, within a time limit, and the latency
percentiles are reported. Endpoints: what clocks poll (`current`), a day of readings
(`entries288`), a `find` range query (the last 6 hours by date), and API v3 `history` as
AndroidAPS pages it (entries changed in the last day, 288 at a time, with a JWT).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECRET = "bench-api-secret-0123456789"
TENANT = "bench"
ENDPOINTS = {
    "current": "/t/{tenant}/api/v1/entries/current.json",
    "entries288": "/t/{tenant}/api/v1/entries.json?count=288",
    "find": "/t/{tenant}/api/v1/entries.json?find[date][$gte]={six_hours_ago}"
            "&find[date][$lte]={now}&count=100",
    "v3_history": "/t/{tenant}/api/v3/entries/history/{day_ago}?limit=288",
}


WARMUP_REQUESTS = 5  # per client, before timing starts


class BenchError(RuntimeError):
    """The bench could not run (server did not start, or an endpoint does not answer 200)."""


def _seed(url: str, days: int) -> tuple[int, str]:
    """(entries stored, an admin access token) for a fresh bench tenant."""
    from nightlink.cloud.store import Store
    from nightlink.nightscout.store import Subjects
    from nightlink.shared import units

    store = Store.open(url)
    try:
        store.create_tenant(TENANT, "Bench")
        store.set_api_secret(TENANT, SECRET)
        _, token = Subjects(store.db, TENANT).create("bench", ["admin"])
        n = days * 288
        end = (int(time.time()) // 300) * 300 * 1000
        docs, treatments = [], []
        for i in range(n):
            date = end - (n - 1 - i) * 300_000
            sgv = 140 + int(60 * ((i % 288) / 144 - 1) ** 2) - 30 * (i % 7 == 0)
            docs.append({"type": "sgv", "date": date,
                         "dateString": time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                     time.gmtime(date / 1000)),
                         "sgv": sgv, "direction": units.DIRECTIONS[4], "device": "bench"})
            if i % 24 == 0:
                treatments.append({"eventType": "Correction Bolus", "insulin": 1.5,
                                   "created_at": date, "enteredBy": "bench"})
        data = store.tenant(TENANT)
        for k in range(0, n, 2000):
            data.add_entries(docs[k:k + 2000])
        data.add_documents("treatments", treatments)
        return n, token
    finally:
        store.close()


def _serve(url: str, port: int, workers: int = 1) -> subprocess.Popen:
    env = {**os.environ, "NIGHTLINK_ENV": "production", "NIGHTLINK_JWT_SECRET": "b" + "0123456789abcdef" * 3,
           "NIGHTLINK_DATABASE_URL": url}
    log = tempfile.TemporaryFile("w+")  # a pipe nobody reads could fill and stall the server
    proc = subprocess.Popen([sys.executable, "-m", "nightlink", "cloud", "serve", "--api-only",
                             "--host", "127.0.0.1", "--port", str(port), "--workers",
                             str(workers)], env=env, stdout=subprocess.DEVNULL, stderr=log,
                            text=True)
    proc.log = log
    return proc


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            proc.log.seek(0)
            raise BenchError(f"the API server exited: {proc.log.read()[-2000:]}")
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise BenchError(f"the API server did not become ready within {timeout:.0f} s")


def _percentile(sorted_ms: list[float], p: float) -> float:
    if not sorted_ms:
        return float("nan")
    k = min(len(sorted_ms) - 1, max(0, int(round(p / 100 * len(sorted_ms) + 0.5)) - 1))
    return round(sorted_ms[k], 2)


async def _hammer(base: str, path: str, clients: int, total: int, time_limit_s: float,
                  auth: str) -> tuple[list[float], dict[int, int]]:
    """Latencies (ms) of up to `total` GETs of path shared by `clients` concurrent clients.

    Each client is one keep-alive HTTP/1.1 connection written with asyncio streams: a load
    generator this lean leaves the CPU to the server, as wrk would.
    """
    host, port = base.removeprefix("http://").split(":")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n\r\n".encode()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    budget = [total]
    deadline = time.monotonic() + time_limit_s

    async def one(reader, writer) -> int:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        return int(head[9:12])

    ready = asyncio.Event()
    warm = [0]

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for _ in range(WARMUP_REQUESTS):  # connections open, caches warm: not timed
                await one(reader, writer)
            warm[0] += 1
            if warm[0] == clients:
                ready.set()
            await ready.wait()
            while budget[0] > 0 and time.monotonic() < deadline:
                budget[0] -= 1
                t0 = time.perf_counter()
                status = await one(reader, writer)
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, statuses


def bench_api(clients: int = 100, days: int = 90, requests_per_endpoint: int = 10000,
              time_limit_s: float = 120.0, endpoints: dict[str, str] | None = None,
              workers: int = 1) -> dict:
    """p50/p95/p99 latency of each endpoint, in ms."""
    import httpx

    from nightlink.tools.services import free_port

    endpoints = endpoints or ENDPOINTS
    out: dict = {"clients": clients, "workers": workers}
    with tempfile.TemporaryDirectory(prefix="nl-bench-api-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'cloud.db'}"
        out["entries"], token = _seed(url, days)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = _serve(url, port, workers)
        try:
            _wait_ready(base, proc)
            secret = f"api-secret: {hashlib.sha1(SECRET.encode()).hexdigest()}"
            jwt = httpx.get(f"{base}/api/v2/authorization/request/{token}",
                            timeout=30).json()["token"]
            now = int(time.time() * 1000)
            for name, template in endpoints.items():
                path = template.format(tenant=TENANT, now=now, six_hours_ago=now - 6 * 3600_000,
                                       day_ago=now - 24 * 3600_000)
                auth = f"Authorization: Bearer {jwt}" if "/api/v3/" in path else secret
                key, value = auth.split(": ", 1)
                probe = httpx.get(base + path, headers={key: value}, timeout=30)
                if probe.status_code != 200:
                    raise BenchError(f"GET {path} answered {probe.status_code}, not 200: "
                                     f"{probe.text[:200]}")
                lat, statuses = asyncio.run(_hammer(base, path, clients, requests_per_endpoint,
                                                    time_limit_s, auth))
                bad = {s: n for s, n in statuses.items() if s != 200}
                if bad:
                    raise BenchError(f"GET {path}: {sum(bad.values())} of {len(lat)} requests "
                                     f"failed (status {bad}).")
                lat.sort()
                for p in (50, 95, 99):
                    out[f"{name}_p{p}_ms"] = _percentile(lat, p)
                out[f"{name}_requests"] = len(lat)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    return out
