"""The main job on one machine: simulated nights through the edge node, synced over an
embedded MQTT broker into the cloud store, and what each tier ended up holding.

The last night is the full pipeline (audio features regenerated from the night's seed, the
desk clock through the night); the nights before it (--nights, 14 by default, so the 14-day
report, the trends and the associations have something to show) skip the audio, which is
most of a night's replay time: their breathing figures come from the wearable's SpO2. The
days between the nights have simulated CGM too (tools/demo/days.py), imported into the edge
node as a Nightscout export, so the 14-day report has whole days of CGM to judge."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from nightlink.errors import NightlinkError
from nightlink.shared import features

TENANT = "demo"
DOCTOR = "doctor@demo.invalid"  # the demo's doctor account (development mode only)
HISTORY_SEED = 1000  # the nights before the last one: seeds HISTORY_SEED + i


@dataclass
class DemoResult:
    lines: list[str] = field(default_factory=list)

    def say(self, text: str = "") -> None:
        self.lines.append(text)


def run_demo(out: Path, seed: int = 3, patient: str = "adult#001", hours: float = 8.0,
             keep_audio_file: bool = False, echo=print, nights: int = 14) -> dict:
    from nightlink.cloud.config import Settings
    from nightlink.cloud.ingest import IngestWorker
    from nightlink.cloud.store import Store
    from nightlink.edge.importers.importer import import_file
    from nightlink.edge.node.config import SyncConfig
    from nightlink.edge.store import EdgeStore
    from nightlink.edge.sync.cloud_link import SyncClient
    from nightlink.tools.demo.broker import EmbeddedBroker
    from nightlink.tools.sim.night import DEFAULT_START, simulate_night
    from nightlink.tools.sim.replay import replay
    from nightlink.tools.sim.summary import summarize

    if nights < 1:
        raise NightlinkError(f"The demo needs at least one night, not {nights}.")
    started = time.monotonic()
    history = [(out / "nights" / (DEFAULT_START - timedelta(days=nights - 1 - i)).date()
                .isoformat(), HISTORY_SEED + i, DEFAULT_START - timedelta(days=nights - 1 - i))
               for i in range(nights - 1)]
    # The nights are independent: simulated side by side, one process per core (two at most:
    # each holds a night's arrays).
    with ProcessPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1, nights))) as pool:
        last = pool.submit(simulate_night, out, seed=seed, patient=patient, hours=hours,
                           audio_format="wav" if keep_audio_file else None)
        done = [pool.submit(simulate_night, folder, seed=night_seed, patient=patient,
                            hours=hours, audio_format=None, start=start)
                for folder, night_seed, start in history]
        days = _simulate_days(pool, history, out, done, last, patient)
        manifest = last.result()
    history = [folder for folder, _, _ in history]
    echo(summarize(out, manifest))
    echo(f"\nSimulated {nights} night{'s' if nights != 1 else ''} in "
         f"{time.monotonic() - started:.1f} s into {out}/")

    for name in ("edge.db", "cloud.db"):  # fresh stores for each demo run
        for suffix in ("", "-wal", "-shm"):
            Path(f"{out / name}{suffix}").unlink(missing_ok=True)
    edge = EdgeStore(out / "edge.db")
    cloud = Store.open(f"sqlite:///{out / 'cloud.db'}")
    broker = EmbeddedBroker().start()
    worker = None
    try:
        t0 = time.monotonic()
        for folder in history:  # the earlier nights first, without audio
            replay(folder, edge, audio="none")
        if history:
            echo(f"\nEdge node: {len(history)} earlier nights (no audio) in "
                 f"{time.monotonic() - t0:.1f} s")
        if days:
            t0 = time.monotonic()
            readings = sum(import_file(edge, path, fmt="nightscout").entries_stored
                           for path in days)
            echo(f"Edge node: {len(days)} days of simulated daytime CGM ({readings} readings, "
                 f"imported as Nightscout JSON) in {time.monotonic() - t0:.1f} s")
        result = replay(out, edge, audio="auto")
        echo(f"\nEdge node: {result.records} epoch records from {result.epochs} epochs in "
             f"{result.seconds:.1f} s into {out / 'edge.db'}")
        for name, n in result.present.items():
            echo(f"  {name:9s} {n}/{result.epochs} epochs with data")
        _echo_classifiers(result.summary, echo)
        echo("  night summary: " + json.dumps(result.summary, separators=(",", ":")))

        cloud.create_tenant(TENANT, "Demo patient")
        password = _doctor(cloud)
        cloud.add_device(edge.device, TENANT, "edge", f"{TENANT}.{edge.device}", "-")
        settings = Settings(env="development", database_url=f"sqlite:///{out / 'cloud.db'}",
                            mqtt_host=broker.host, mqtt_port=broker.port, mqtt_shared_group="")
        worker = IngestWorker(cloud, settings, client_id="demo-ingest")
        worker.start()
        if not worker.connected.wait(10):
            raise RuntimeError("the ingest worker could not reach the embedded broker")
        t0 = time.monotonic()
        client = SyncClient(edge, SyncConfig(enabled=True, host=broker.host, port=broker.port,
                                             backfill_rows_per_s=1e6), TENANT)
        stop = threading.Event()
        timer = threading.Timer(120 + 30 * nights, stop.set)
        timer.start()
        client.run(stop, until_empty=True)
        timer.cancel()
        worker.drain()
        data = cloud.tenant(TENANT)
        per_stream = {features.stream(s)[features.S_NAME]: data.count_rows(s) for s, *_ in features.STREAMS}
        st = client.stats
        echo(f"\nSync over the embedded MQTT broker ({broker.host}:{broker.port}): "
             f"{st.rows_sent} rows in {st.messages} messages, {st.bytes_sent} bytes, "
             f"{time.monotonic() - t0:.1f} s; outbox left: {edge.outbox_size()}")
        echo(f"Cloud store {out / 'cloud.db'} (development settings): " + ", ".join(
            f"{k} {v}" for k, v in per_stream.items()) + f"; dead letters "
             f"{cloud.count_dead_letters()}")
        latest = data.entries(count=1, type_="sgv")
        if latest:
            e = latest[0]
            echo(f"Nightscout API (tenant {TENANT}): latest sgv {e['sgv']} mg/dL "
                 f"{e['direction']} at {e['dateString']}")
        from nightlink.tools.demo import report as demo_report
        from nightlink.tools.device.emulate import clock_night  # the desk clock through the night

        clock = clock_night(out, echo=echo)
        echo("")
        report = demo_report.write(cloud, TENANT, out, echo=echo)
        _echo_sign_in(out, password, echo)  # last: how to open the portal
        return {"edge": result, "cloud_rows": per_stream, "sync": st, "report": report,
                "clock": clock}
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
        edge.close()
        cloud.close()


def _simulate_days(pool, history, out: Path, done, last, patient: str) -> list[Path]:
    """The days between consecutive nights (out/days/<date>.json), each submitted once both
    its nights are written; the nights' jobs are waited for on the way."""
    from nightlink.tools.demo.days import write_day

    folders = [folder for folder, _, _ in history] + [out]
    jobs, days = [*done, last], []
    for old in (out / "days").glob("*.json"):  # days of an earlier, longer run
        old.unlink()
    for i, (_, seed, start) in enumerate(history):
        jobs[i].result()
        jobs[i + 1].result()
        path = out / "days" / f"{(start + timedelta(days=1)).date().isoformat()}.json"
        days.append((path, pool.submit(write_day, folders[i], folders[i + 1], path, seed,
                                       patient)))
    for _, job in days:
        job.result()
    return [path for path, _ in days]


def _doctor(cloud) -> str:
    """A doctor account for the demo patient with a freshly generated password (the demo's
    own development database; nothing is a default)."""
    from nightlink.cloud.auth import hash_password

    password = secrets.token_urlsafe(12)
    user = cloud.create_user(DOCTOR, hash_password(password), name="Demo doctor")
    cloud.grant(TENANT, user["id"], "doctor", by=None)
    return password


def _echo_sign_in(out: Path, password: str, echo) -> None:
    """How to serve the demo's cloud and sign in to the portal as the demo's doctor."""
    jwt = secrets.token_urlsafe(32)
    echo("\nDoctor portal (development mode, this computer only):")
    echo(f"  NIGHTLINK_ENV=development NIGHTLINK_JWT_SECRET={jwt} nightlink cloud serve --api-only "
         f"--database-url sqlite:///{Path(out).resolve()}/cloud.db")
    echo(f"  then open http://127.0.0.1:8000/portal and sign in as {DOCTOR} with password "
         f"{password}")


def _echo_classifiers(summary: dict, echo) -> None:
    """One line per edge model: what it made of the night (stream 5 holds the epochs)."""
    sleep, br, risk = summary.get("sleep"), summary.get("breathing"), summary.get("glucose_risk")
    if not sleep:
        echo("  classifiers: no models found, the night has no stream 5 records")
        return
    pct = sleep["stage_pct"]
    if sleep["tst_min"] is None:
        echo(f"  classifiers (LiteRT, int8): nothing recorded that tells sleep in "
             f"{sleep['tib_min'] / 60:.1f} h")
    else:
        echo(f"  classifiers (LiteRT, int8): sleep {sleep['tst_min'] / 60:.1f} h of "
             f"{sleep['tib_min'] / 60:.1f} h, efficiency {sleep['efficiency_pct']} %, light "
             f"{pct['Light']} % / deep {pct['Deep']} % / REM {pct['REM']} %")
    echo(f"    breathing: {br['apnea_events']} apnea/hypopnea events, AHI {br['ahi']}/h "
         f"({br['severity']}), ODI 3 % {br['odi3']}/h, snoring {br['snore_pct_tst']} % of sleep")
    if risk and risk.get("max_low_risk") is not None:
        echo(f"    glucose: highest low risk in 30 min {risk['max_low_risk']:.0%} (alarm at "
             f"{risk['alarm_at']:.0%}), lowest 30-min forecast {risk['min_forecast30_mgdl']} mg/dL")
