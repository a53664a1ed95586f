"""The main job on one machine: a simulated night through the edge node, synced over an
embedded MQTT broker into the cloud store, and what each tier ended up holding."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from nightlink.shared import features

TENANT = "demo"


@dataclass
class DemoResult:
    lines: list[str] = field(default_factory=list)

    def say(self, text: str = "") -> None:
        self.lines.append(text)


def run_demo(out: Path, seed: int = 3, patient: str = "adult#001", hours: float = 8.0,
             keep_audio_file: bool = False, echo=print) -> dict:
    from nightlink.cloud.config import Settings
    from nightlink.cloud.ingest import IngestWorker
    from nightlink.cloud.store import Store
    from nightlink.edge.node.config import SyncConfig
    from nightlink.edge.store import EdgeStore
    from nightlink.edge.sync.cloud_link import SyncClient
    from nightlink.tools.demo.broker import EmbeddedBroker
    from nightlink.tools.sim.night import simulate_night
    from nightlink.tools.sim.replay import replay
    from nightlink.tools.sim.summary import summarize

    started = time.monotonic()
    manifest = simulate_night(out, seed=seed, patient=patient, hours=hours,
                              audio_format="wav" if keep_audio_file else None)
    echo(summarize(out, manifest))
    echo(f"\nSimulated in {time.monotonic() - started:.1f} s into {out}/")

    for name in ("edge.db", "cloud.db"):  # fresh stores for each demo run
        for suffix in ("", "-wal", "-shm"):
            Path(f"{out / name}{suffix}").unlink(missing_ok=True)
    edge = EdgeStore(out / "edge.db")
    cloud = Store.open(f"sqlite:///{out / 'cloud.db'}")
    broker = EmbeddedBroker().start()
    worker = None
    try:
        result = replay(out, edge, audio="auto")
        echo(f"\nEdge node: {result.records} epoch records from {result.epochs} epochs in "
             f"{result.seconds:.1f} s into {out / 'edge.db'}")
        for name, n in result.present.items():
            echo(f"  {name:9s} {n}/{result.epochs} epochs with data")
        _echo_classifiers(result.summary, echo)
        echo("  night summary: " + json.dumps(result.summary, separators=(",", ":")))

        cloud.create_tenant(TENANT, "Demo patient")
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
        timer = threading.Timer(120, stop.set)
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
        report = demo_report.write(cloud, TENANT, out, echo=echo)  # last: where to open it
        return {"edge": result, "cloud_rows": per_stream, "sync": st, "report": report,
                "clock": clock}
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
        edge.close()
        cloud.close()


def _echo_classifiers(summary: dict, echo) -> None:
    """One line per edge model: what it made of the night (stream 5 holds the epochs)."""
    sleep, br, risk = summary.get("sleep"), summary.get("breathing"), summary.get("glucose_risk")
    if not sleep:
        echo("  classifiers: no models found, the night has no stream 5 records")
        return
    pct = sleep["stage_pct"]
    echo(f"  classifiers (LiteRT, int8): sleep {sleep['tst_min'] / 60:.1f} h of "
         f"{sleep['tib_min'] / 60:.1f} h, efficiency {sleep['efficiency_pct']} %, light "
         f"{pct['Light']} % / deep {pct['Deep']} % / REM {pct['REM']} %")
    echo(f"    breathing: {br['apnea_events']} apnea/hypopnea events, AHI {br['ahi']}/h "
         f"({br['severity']}), ODI 3 % {br['odi3']}/h, snoring {br['snore_pct_tst']} % of sleep")
    if risk and risk.get("max_low_risk") is not None:
        echo(f"    glucose: highest low risk in 30 min {risk['max_low_risk']:.0%} (alarm at "
             f"{risk['alarm_at']:.0%}), lowest 30-min forecast {risk['min_forecast30_mgdl']} mg/dL")
