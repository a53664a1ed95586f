"""Seeded chaos: every process of the sync path killed, frozen and slowed, nothing lost.

The real processes run as they would deployed: Mosquitto, `nightlink edge sync` and
`nightlink cloud serve --ingest-only`, the edge reaching the broker through a slow, lossy
link. While a multi-night backlog drains and new rows keep arriving, a seeded schedule
kills the broker (kill -9), freezes it (SIGSTOP), kills the edge sync and the ingest, and
restarts each. Afterwards the cloud must hold exactly the rows the edge produced, none
twice; the test reports the faults survived and the drain time after the last fault.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nightlink.cloud.store import Store
from nightlink.edge.store import EdgeStore
from nightlink.shared import codec, features
from tests.support.delayproxy import DelayProxy
from tests.support.services import Broker
from tests.sync.conftest import TENANT, cloud_digest, edge_digest, fill_backlog

SEED = 20261130
FAULTS = 14


class Proc:
    """A `nightlink` child process whose output goes to a log file, restartable."""

    def __init__(self, name: str, args: list[str], env: dict, workdir: Path):
        self.name, self.args, self.env = name, args, env
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:  # never a pipe nobody reads
            self.proc = subprocess.Popen([sys.executable, "-m", "nightlink", *self.args],
                                         stdout=subprocess.DEVNULL, stderr=log, env=self.env)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def _producer(edge_path: Path, stop: threading.Event, first_epoch: int) -> None:
    """New glucose rows keep arriving during the faults (a second writer on the store)."""
    store = EdgeStore(edge_path)
    epoch = first_epoch
    try:
        while not stop.wait(0.05):
            row = codec.quantize_row(features.CGM, (110.0 + epoch % 40, 1.0, 0.5, 0.1, 5.0, None))
            store.append(features.CGM, epoch, [row])
            epoch += 1
    finally:
        store.close()


def _wait(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_chaos__seeded_kills_freezes_and_a_slow_link_lose_nothing(backend, tmp_path, request,
                                                                   record_property):
    rng = random.Random(SEED)
    url = (f"sqlite:///{tmp_path / 'cloud.db'}" if backend == "sqlite"
           else request.getfixturevalue("postgres_url"))
    edge = EdgeStore(tmp_path / "edge.db")
    fill_backlog(edge, nights=3)
    cloud = Store.open(url)
    cloud.create_tenant(TENANT, "One")
    cloud.add_device(edge.device, TENANT, "edge", f"{TENANT}.{edge.device}", "-")
    data = cloud.tenant(TENANT)

    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker").start()
    link = DelayProxy(broker.host, broker.port, rtt_s=0.15, loss=0.02, seed=SEED).start()
    env = {**os.environ, "NIGHTLINK_ENV": "test", "NIGHTLINK_JWT_SECRET": "c" + "0123456789abcdef" * 3,
           "NIGHTLINK_MQTT_HOST": broker.host, "NIGHTLINK_MQTT_PORT": str(broker.port),
           "NIGHTLINK_DATABASE_URL": url}
    conf = tmp_path / "edge.toml"
    conf.write_text(f'tenant = "{TENANT}"\n[nightscout]\nenabled = false\n[sync]\n'
                    f'enabled = true\nhost = "127.0.0.1"\nport = {link.port}\nkeepalive_s = 4\n'
                    "reconnect_min_s = 0.2\nreconnect_max_s = 2.0\nresend_after_s = 5.0\n"
                    "backfill_rows_per_s = 400.0\nbackfill_batch_rows = 200\n"
                    "status_interval_s = 2.0\n")
    ingest = Proc("ingest", ["cloud", "serve", "--ingest-only", "--client-id", "chaos-ingest"],
                  env, tmp_path)
    sync = Proc("sync", ["edge", "sync", "--config", str(conf), "--db", str(tmp_path / "edge.db")],
                env, tmp_path)
    stop_producing = threading.Event()
    producer = threading.Thread(target=_producer,
                                args=(tmp_path / "edge.db", stop_producing,
                                      int(time.time()) // 30 - 2000))
    counts = {"broker kill -9": 0, "broker SIGSTOP": 0, "edge sync kill -9": 0,
              "ingest kill -9": 0}
    try:
        ingest.start()
        sync.start()
        producer.start()
        assert _wait(lambda: data.count_rows() > 0, 60), sync.tail() + ingest.tail()
        for _ in range(FAULTS):
            # The backlog (paced at 400 rows/s) is still draining while the faults land.
            time.sleep(rng.uniform(0.5, 2.0))
            fault = rng.choice(sorted(counts))
            if fault == "broker kill -9":
                broker.proc.kill()
                broker.proc.wait()
                time.sleep(rng.uniform(0.1, 1.0))
                broker.start()
            elif fault == "broker SIGSTOP":
                os.kill(broker.proc.pid, signal.SIGSTOP)
                time.sleep(rng.uniform(1.0, 4.0))
                os.kill(broker.proc.pid, signal.SIGCONT)
            elif fault == "edge sync kill -9":
                sync.kill()
                time.sleep(rng.uniform(0.0, 1.0))
                sync.start()
            else:
                ingest.kill()
                time.sleep(rng.uniform(0.0, 1.0))
                ingest.start()
            counts[fault] += 1
        stop_producing.set()
        producer.join(10)
        last_fault = time.monotonic()
        stored_at_last_fault = data.count_rows()
        produced = edge_digest(edge)
        drained = _wait(lambda: data.count_rows() >= produced[0] and edge.outbox_size() == 0,
                        180, step=0.25)
        drain_s = time.monotonic() - last_fault
        stored = cloud_digest(cloud, edge.device)
        summary = (f"{backend}: faults survived {sum(counts.values())} "
                   f"({', '.join(f'{k} {v}' for k, v in counts.items())}); rows produced "
                   f"{produced[0]}, stored {stored[0]}, duplicated {stored[0] - produced[0]}; "
                   f"{produced[0] - stored_at_last_fault} still to deliver at the last fault, "
                   f"drained {drain_s:.1f} s after it")
        record_property("fault_counts", summary)
        assert drained, f"{summary}\n--- sync\n{sync.tail()}\n--- ingest\n{ingest.tail()}"
        assert stored_at_last_fault < produced[0], "the faults came after the backlog drained"
        assert stored == produced, summary
        assert data.count_rows() == produced[0]
    finally:
        stop_producing.set()
        sync.stop()
        ingest.stop()
        link.stop()
        broker.stop()
        edge.close()
        cloud.close()
