"""`nightlink bench report`: build a 14-day doctor's report (HTML and PDF) for one patient
from a store holding 90 days, and the synthetic-store builders the report tests share.

The store is written directly through the repository (rows packed as the wire carries
them, glucose as Nightscout entries), as ingest would have left it; nights hold classifier
outputs, wearable, audio and room rows, the CGM runs around the clock.
"""

from __future__ import annotations

import math
import random
import time
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

from nightlink.cloud.store import Store, TenantStore
from nightlink.shared import codec, features
from nightlink.shared.epoch import EPOCH_S

DEVICE = "a1b2c3d4e5f6"


def put_epochs(data: TenantStore, stream: int, values: dict[int, dict], *, device: str = DEVICE,
               boot: int = 1) -> int:
    """Store one row per epoch of a stream from {epoch: {feature: physical value}}; features
    not given are sent as missing. seq is the epoch index (unique per device and stream)."""
    feats = features.features(stream)
    dev = codec.device_id(device)
    records = []
    for epoch in sorted(values):
        v = values[epoch]
        row = tuple(features.quantize(f, v[f[features.F_NAME]]) if v.get(f[features.F_NAME]) is not None
                    else features.MISSING[f[features.F_TYPE]] for f in feats)
        records.append(codec.Record(stream, dev, boot, epoch, epoch, [row]))
    return data.put_rows(records)


def put_glucose(data: TenantStore, readings: list[tuple[int, int]], device: str = DEVICE) -> int:
    """Store (t_ms, sgv) readings as Nightscout sgv entries."""
    docs = [{"type": "sgv", "date": t, "sgv": int(g), "direction": "Flat",
             "dateString": datetime.fromtimestamp(t / 1000).isoformat(),
             "device": f"nightlink-{device}"} for t, g in readings]
    stored, _ = data.add_entries(docs)
    return len(stored)


def hypnogram(n: int) -> list[int]:
    """A plain night of n epochs: 20 min awake, 90-minute cycles (deep sleep early, REM
    later), 10 min awake at the end. 0 wake, 1 light, 2 deep, 3 REM."""
    out = [0] * min(n, 40)
    k = 0
    while len(out) < n - 20:
        deep = max(0, 60 - 15 * k)
        rem = min(60, 20 + 10 * k)
        light = 180 - deep - rem
        out += [1] * (light // 2) + [2] * deep + [1] * (light - light // 2) + [3] * rem
        k += 1
    out = out[: max(0, n - 20)]
    return out + [0] * (n - len(out))


def synth_night(data: TenantStore, evening: date, tz: ZoneInfo, rng: random.Random, *,
                hours: float = 8.0, low: bool = False, apnea_per_h: float = 8.0,
                infer: bool = True, bed: dtime = dtime(23, 0)) -> dict:
    """One night's rows (inference, wearable, audio) from `bed` local time for `hours`.
    Returns what was planted: first epoch, stages, apnea and desaturation epochs."""
    start = datetime.combine(evening, bed, tz).timestamp()
    first = int(start // EPOCH_S)
    n = int(hours * 120)
    stages = hypnogram(n)
    apneas = sorted(rng.sample(range(60, max(61, n - 30)),
                             k=max(0, min(n - 100, int(apnea_per_h * hours)))))
    apnea_set = set(apneas)
    desat = {a + d for a in apneas for d in (1, 2)}
    inf, wear, aud = {}, {}, {}
    for i, s in enumerate(stages):
        e = first + i
        asleep = s != 0
        hr = 62 - 6 * (s == 2) + 4 * (s == 3) + 8 * (not asleep) + rng.uniform(-2, 2)
        spo2 = 96.0 - (3.5 if i in desat else 0) + rng.uniform(-0.5, 0.5)
        if infer:
            inf[e] = {"sleep_stage": s, "stage_conf": 0.8, "snore": int(asleep and i % 7 < 2),
                      "apnea_events": int(i in apnea_set), "desat3": int(i in desat),
                      "desat4": int(i in desat and i % 2 == 0), "low_risk": 0.1,
                      "forecast30_mgdl": 110}
        wear[e] = {"hr_mean_bpm": hr, "hr_min_bpm": hr - 3, "hr_max_bpm": hr + 3,
                   "rmssd_ms": 40.0, "sdnn_ms": 50.0, "spo2_mean_pct": spo2,
                   "spo2_min_pct": spo2 - 1, "desat3_count": int(i in desat and i - 1 not in desat),
                   "desat4_count": 0, "activity_count": 0 if asleep else 40,
                   "movement": 0 if asleep else 1}
        aud[e] = {"loud_mean_dbfs": -50.0, "loud_max_dbfs": -35.0, "snore_ratio":
                  0.6 if asleep and i % 7 < 2 else 0.1,
                  "silence_max_s": 14.0 if i in apnea_set else 3.0, "breath_rate_bpm": 14.0,
                  "transient_count": 0}
    if infer:
        put_epochs(data, features.INFER, inf)
    put_epochs(data, features.WEARABLE, wear)
    put_epochs(data, features.AUDIO, aud)
    return {"first": first, "stages": stages, "apneas": apneas, "low": low}


def synth_day_streams(data: TenantStore, day: date, tz: ZoneInfo, rng: random.Random, *,
                      low_at: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """A local day of room rows (every epoch) and CGM readings every 5 minutes (meals at 8,
    13 and 19 h; with low_at=(h, m) a 45-minute dip to about 55 mg/dL from that time)."""
    a = datetime.combine(day, dtime(0), tz).timestamp()
    b = datetime.combine(day + timedelta(days=1), dtime(0), tz).timestamp()
    first, last = int(a // EPOCH_S), int(b // EPOCH_S)
    room = {}
    for e in range(first, last):
        h = (e * EPOCH_S - a) / 3600
        room[e] = {"temp_c": 19.5 + 1.5 * math.sin(h / 24 * 2 * math.pi),
                   "humidity_pct": 45.0, "light_lux": 0.0 if h < 7 or h > 23 else 150.0,
                   "co2_ppm": 600 + (500 if h < 7 else 0) + rng.randint(-20, 20),
                   "noise_dba": 30.0 + rng.uniform(0, 8)}
    put_epochs(data, features.ROOM, room)
    readings = []
    t = int(a * 1000)
    low_t = (datetime.combine(day, dtime(*low_at), tz).timestamp() * 1000) if low_at else None
    while t < b * 1000:
        h = (t / 1000 - a) / 3600
        g = 115 + 15 * math.sin(h / 24 * 2 * math.pi)
        for meal in (8, 13, 19):
            if 0 <= h - meal < 3:
                g += 70 * math.sin((h - meal) / 3 * math.pi)
        if low_t is not None and 0 <= t - low_t < 45 * 60_000:
            g = 55 + 5 * math.sin((t - low_t) / 45 / 60_000 * math.pi)
        readings.append((t, int(round(g + rng.uniform(-6, 6)))))
        t += 5 * 60_000
    put_glucose(data, readings)
    return readings


def synth_days(data: TenantStore, first: date, days: int, *, tz: str = "Europe/Berlin",
               seed: int = 5, low=lambda i: i % 2 == 1, night=lambda i: i % 2 == 0,
               hours: float = 5.0, apnea_per_h=lambda i: 8.0) -> None:
    """`days` local days from `first` in the patient's time zone `tz` (set on the tenant):
    CGM and room rows every day, with a dip after 03:10 on the days `low(i)` says; a night of
    sleep rows from 23:00 on the days `night(i)` says, `apnea_per_h(i)` apneas an hour."""
    from nightlink.cloud.reports.settings import set_patient_settings

    set_patient_settings(data, tz=tz)
    zone, rng = ZoneInfo(tz), random.Random(seed)
    for i in range(days):
        day = first + timedelta(days=i)
        synth_day_streams(data, day, zone, rng, low_at=(3, 10) if low(i) else None)
        if night(i):
            synth_night(data, day, zone, rng, hours=hours, apnea_per_h=apnea_per_h(i))


def build_store(url: str, tenant: str, days: int, *, end: date = date(2026, 1, 31),
                tz: str = "Europe/Berlin", seed: int = 7) -> Store:
    """A store with `days` days of one patient's data ending with `end` (every third night
    with a nocturnal low)."""
    store = Store.open(url)
    store.create_tenant(tenant, "Bench patient")
    synth_days(store.tenant(tenant), end - timedelta(days=days - 1), days, tz=tz, seed=seed,
               low=lambda i: i % 3 == 0, night=lambda i: True, hours=8.0,
               apnea_per_h=lambda i: 4 + 12 * (i % 4 == 0))
    return store


def bench_report(out: Path | None = None) -> dict:
    """Build (or reuse, in `out`) the 90-day store, then time the 14-day report's HTML and
    PDF. The first build fuses the 14 nights and fills the cache (html_cold_s); the figures
    that count are a build that finds the cache current, as a doctor's next visit does."""
    import tempfile

    from nightlink.cloud.reports import render
    from nightlink.cloud.reports.settings import patient_settings
    from nightlink.cloud.reports.summary import build_report

    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="nl-bench-report-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "report-90d.db"
    t0 = time.perf_counter()
    if not db.exists():
        build_store(f"sqlite:///{db}", "bench", 90).close()
    built_s = time.perf_counter() - t0
    store = Store.open(f"sqlite:///{db}")
    try:
        data = store.tenant("bench")
        ps = patient_settings(data)
        data.forget_fusions()
        t0 = time.perf_counter()
        rep = build_report(data, ps, end_day="2026-01-31", days=14)
        render.report_html(rep, tenant_name="Bench patient", unit="mg/dL")
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        rep = build_report(data, ps, end_day="2026-01-31", days=14)
        html = render.report_html(rep, tenant_name="Bench patient", unit="mg/dL")
        html_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pdf, pages = render.report_pdf(rep, tenant_name="Bench patient", unit="mg/dL")
        pdf_s = time.perf_counter() - t0
        (work / "report.html").write_text(html)
        (work / "report.pdf").write_bytes(pdf)
        rows = data.count_rows()
    finally:
        store.close()
    return {"html_s": round(html_s, 3), "pdf_s": round(pdf_s, 3), "pdf_pages": pages,
            "html_cold_s": round(cold, 3), "store_days": 90, "store_rows": rows,
            "report_days": 14, "store_build_s": round(built_s, 1), "out": str(work)}
