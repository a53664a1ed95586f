"""`nightlink bench NAME --json`: figures for speed and size targets; never a pass/fail test."""

import json
import statistics
import tempfile
import time
from pathlib import Path

import click

from nightlink.errors import NightlinkError
from nightlink.shared import codec, features


def _typical_row(stream_id):
    """A row of mid-range values for every feature of a stream."""
    return codec.quantize_row(
        stream_id,
        tuple((f[features.F_LO] + f[features.F_HI]) / 2 for f in features.features(stream_id)),
    )


def bench_codec(repeat: int = 5) -> dict:
    """Encoded size per epoch per modality, and encode/decode speed under CPython."""
    dev = bytes(6)
    figures: dict = {"bytes_per_epoch": {}, "one_epoch_record_bytes": {}, "hour_record_bytes": {}}
    for sid, name, *_ in features.STREAMS:
        row = _typical_row(sid)
        one = codec.encode(codec.Record(sid, dev, 1, 1, 0, [row]))
        hour = codec.encode(codec.Record(sid, dev, 1, 1, 0, [row] * 120))
        figures["bytes_per_epoch"][name] = len(hour) - codec.HEADER_SIZE - codec.CRC_SIZE
        figures["bytes_per_epoch"][name] //= 120
        figures["one_epoch_record_bytes"][name] = len(one)
        figures["hour_record_bytes"][name] = len(hour)
    # A night of all four modalities (8 h, one record per stream per hour) in hourly batches.
    night = [
        codec.encode_batch(
            [codec.Record(sid, dev, 1, h, h * 120, [_typical_row(sid)] * 120) for sid, *_ in features.STREAMS]
        )
        for h in range(8)
    ]
    figures["night_8h_all_streams_bytes"] = sum(len(b) for b in night)
    recs = [codec.Record(features.ROOM, dev, 1, s, s, [_typical_row(features.ROOM)]) for s in range(2000)]
    enc_rates, dec_rates = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        blobs = [codec.encode(r) for r in recs]
        enc_rates.append(len(recs) / (time.perf_counter() - t))
        t = time.perf_counter()
        for b in blobs:
            codec.decode(b)
        dec_rates.append(len(recs) / (time.perf_counter() - t))
    figures["encode_records_per_s"] = round(statistics.median(enc_rates))
    figures["decode_records_per_s"] = round(statistics.median(dec_rates))
    return figures


def bench_simulate(hours: float = 8.0, seed: int = 1, audio: bool = True) -> dict:
    """Wall time and output size of a simulated night."""
    from nightlink.tools.sim.night import simulate_night

    with tempfile.TemporaryDirectory(prefix="nl-bench-") as tmp:
        out = Path(tmp) / "night"
        t = time.perf_counter()
        manifest = simulate_night(out, seed=seed, hours=hours, audio_format="wav" if audio else None)
        elapsed = time.perf_counter() - t
        sizes = {p.name: p.stat().st_size for p in out.rglob("*") if p.is_file()}
    return {
        "hours": hours,
        "seed": seed,
        "seconds": round(elapsed, 2),
        "total_bytes": sum(sizes.values()),
        "audio_bytes": sizes.get("audio.wav", 0),
        "files": len(sizes),
        "epochs": manifest["epoch_grid"]["epoch_count"],
    }


def _edge_audio(hours: float, naive: bool) -> dict:
    from nightlink.tools.bench.edge import bench_edge_audio

    return bench_edge_audio(hours=hours, naive=naive)


def _edge_night(hours: float) -> dict:
    from nightlink.tools.bench.edge import bench_edge_night

    return bench_edge_night(hours=hours)


BENCHES = ("api", "classify", "clock-outbox", "codec", "edge-audio", "edge-night", "import",
           "ingest", "live", "report", "simulate", "sync")


@click.command()
@click.argument("name", type=click.Choice(BENCHES))
@click.option("--json", "as_json", is_flag=True, help="End with the figures as one JSON line.")
@click.option("--hours", type=float, default=8.0, show_default=True,
              help="simulate, edge-audio, edge-night, classify: night length.")
@click.option("--no-audio", is_flag=True, help="simulate: skip the audio file.")
@click.option("--no-naive", is_flag=True, help="edge-audio: skip the naive librosa run.")
@click.option("--nights", type=click.IntRange(1, 60), default=7, show_default=True,
              help="sync: nights of backlog.")
@click.option("--workers", type=click.IntRange(1, 16), default=None,
              help="api: API server processes (default: one per CPU core).")
@click.option("--days", type=click.IntRange(1, 14), default=7, show_default=True,
              help="clock-outbox: days of backlog in the clock's outbox.")
@click.option("--connections", type=click.IntRange(1, 50_000), default=10_000,
              show_default=True, help="live: WebSocket clients over --tenants.")
@click.option("--tenants", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="live: tenants the clients watch.")
def bench(name: str, as_json: bool, hours: float, no_audio: bool, no_naive: bool,
          nights: int, workers: int | None, days: int, connections: int, tenants: int) -> None:
    """Measure NAME (api, classify, clock-outbox, codec, edge-audio, edge-night, import,
    ingest, live, report, simulate, sync)."""
    if name != "codec" and not 0 < hours <= 14:
        raise NightlinkError("--hours must be more than 0 and at most 14.")
    if name == "simulate":
        figures = bench_simulate(hours=hours, audio=not no_audio)
    elif name == "edge-audio":
        figures = _edge_audio(hours, not no_naive)
    elif name == "edge-night":
        figures = _edge_night(hours)
    elif name == "api":
        import os

        from nightlink.tools.bench.api import bench_api

        figures = bench_api(workers=workers or os.cpu_count() or 1)
    elif name == "sync":
        from nightlink.tools.bench.cloud import bench_sync

        figures = bench_sync(nights)
    elif name == "ingest":
        from nightlink.tools.bench.cloud import bench_ingest

        figures = bench_ingest()
    elif name == "classify":
        from nightlink.tools.bench.edge import bench_classify

        figures = bench_classify(hours)
    elif name == "report":
        from nightlink.tools.bench.report import bench_report

        figures = bench_report()
    elif name == "live":
        from nightlink.tools.bench.api import BenchError
        from nightlink.tools.bench.live import bench_live

        try:
            figures = bench_live(connections=connections, tenants=tenants)
        except BenchError as exc:
            raise NightlinkError(str(exc)) from None
    elif name == "import":
        from nightlink.tools.bench.imports import bench_import

        figures = bench_import()
    elif name == "clock-outbox":
        from nightlink.tools.bench.clock import bench_clock_outbox

        figures = bench_clock_outbox(days)
    else:
        figures = bench_codec()
    figures = {"bench": name, **figures}
    if as_json:
        click.echo(json.dumps(figures, sort_keys=True))
    else:
        for key, value in figures.items():
            click.echo(f"{key}: {value}")
