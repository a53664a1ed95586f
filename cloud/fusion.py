"""Fusion: one night of every modality on the 30-second epoch grid, and what it shows.

A night is the local date of its evening and runs from local noon to the next local noon in
the patient's time zone (as shared.epoch.night_of does for UTC offsets); for a person who
sleeps by day (their bedside node's sleep schedule holds noon) it runs from another time of
day, the `boundary` (shared.epoch.night_boundary), and is named by the date it begins on.
Its recording is the span of epochs holding wearable, audio or classifier rows; room sensors
and the CGM run all day and do not make a recording. Sleep staging comes from the classifier
outputs (stream 5, `inference`) where they exist; a night without any falls back to what the
raw features allow (wearable movement for sleep/wake, audio pauses of >= 10 s as apnea
candidates, the audio snore ratio, the wearable's desaturation counts) and says so in each
metric's `source`. Missing epochs are never filled in: each modality's coverage is reported, and an
epoch without a stage counts in time in bed as unscored, never as sleep.

Definitions: docs/clinical.md (AASM sleep metrics, AHI severity, ODI at 3 % and 4 %,
consensus glucose metrics via cloud.glycemia).
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from nightlink.cloud import glycemia, zones
from nightlink.cloud.store import TenantStore
from nightlink.nights import Sleep, boundary_of, sleep_span
from nightlink.shared import features
from nightlink.shared.clinical import APNEA_SILENCE_S, SNORE_RATIO, ahi_severity, unusable_audio
from nightlink.shared.epoch import EPOCH_S, NOON_MIN
from nightlink.shared.sleep_epochs import first_rem, sleep_onset

FUSION_VERSION = 6  # bump when a definition changes: cached nights are then recomputed
EPOCH_MIN = EPOCH_S / 60.0
WAKE, LIGHT, DEEP, REM = 0, 1, 2, 3
STAGE_NAMES = ("wake", "light", "deep", "rem")
SLEEP_STREAMS = (features.INFER, features.WEARABLE, features.AUDIO)  # rows of these make a recording
ALL_STREAMS = (features.ROOM, features.WEARABLE, features.AUDIO, features.CGM, features.INFER)
ACTIGRAPHY_WAKE = 3  # moving epochs among 5 that make an epoch awake (without a classifier)
# Recordings this far apart in one night's window are separate sleeps (a nap in the afternoon
# or evening and the night): the night's figures are those of its main sleep period, the one
# with the most sleep. Closer gaps (the node restarted, a power cut) stay inside the night.
APART_MIN = 180
HR_BEFORE_MIN = 30  # baseline for a low's heart-rate response
AROUSAL_MARGIN_MIN = 10  # an arousal this close to a low counts as around it
DESAT_WINDOW_MIN = 15  # glucose readings this close to a desaturation count as around it


severity = ahi_severity  # AASM classes, shared with the edge and the clock


# -- loading ----------------------------------------------------------------------------------

def load_glucose(data: TenantStore, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """(t_ms, sgv) of the tenant's sgv entries in [start, end), oldest first, sensor error
    codes included (glycemia leaves them out of every metric)."""
    return [(t, int(round(v))) for t, v in data.docs.readings(start_ms, end_ms)]


# -- the night window -------------------------------------------------------------------------


NIGHT_YEARS = (1990, 2100)  # nights outside these years are a typo, not a recording


def check_night_date(value: str) -> date:
    """The date of a night's evening from YYYY-MM-DD; ValueError for anything else (an ISO
    week date too), or for a year outside 1990-2099 (whose windows and 30-night spans run off
    the calendar)."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError(value)
    d = date.fromisoformat(value)
    if not NIGHT_YEARS[0] <= d.year < NIGHT_YEARS[1]:
        raise ValueError(value)
    return d


def night_window(night: str, tz: ZoneInfo, boundary: int = NOON_MIN) -> tuple[int, int]:
    """[first, end) epoch indexes of a night: local noon of its evening to the next local
    noon (23, 24 or 25 hours across a daylight-saving change); from and to `boundary`
    (minutes of the local day) for a day sleeper."""
    d = date.fromisoformat(night)
    at = time(boundary // 60, boundary % 60)
    start = datetime.combine(d, at, tz).timestamp()
    end = datetime.combine(d + timedelta(days=1), at, tz).timestamp()
    return int(start // EPOCH_S), int(end // EPOCH_S)


def night_of(unix_s: float, tz: ZoneInfo, boundary: int = NOON_MIN) -> str:
    """The night (local date of its evening, or the date a day sleeper's begins on) a moment
    belongs to."""
    local = datetime.fromtimestamp(unix_s, tz) - timedelta(minutes=boundary)
    return local.strftime("%Y-%m-%d")


def ended_night(unix_s: float, tz: ZoneInfo, sleep: Sleep | None = None) -> str:
    """"Last night" at a moment: the night it belongs to once that night's wake time has
    passed, else the night it belonged to 12 hours before (for most people the night that
    ended that morning, or the one under way before noon; for a day sleeper, the day's
    sleep from its wake time on). `sleep`: the person's schedule, if known."""
    boundary = boundary_of(sleep)
    now = night_of(unix_s, tz, boundary)
    if sleep is not None and sleep_span(now, sleep, tz)[1] <= unix_s:
        return now
    local = datetime.fromtimestamp(unix_s, tz) - timedelta(minutes=12 * 60 + boundary)
    return local.strftime("%Y-%m-%d")


def stamp(data: TenantStore, night: str, tz: ZoneInfo, sleep: Sleep | None = None,
          window: tuple[int, int] | None = None) -> str:
    """What the night's fusion depends on: rows and readings in its window (how many, when
    the last arrived), the window, the time zones it was recorded in (and a day sleeper's
    schedule) and the fusion version. Late data changes it. `window`: [first, end) epochs
    where a schedule change moved the night's ends (PatientSettings.window_of)."""
    boundary = boundary_of(sleep)
    a, b = window or night_window(night, tz, boundary)
    key = "/".join(dict.fromkeys(zones.zone_at(tz, e * EPOCH_S).key for e in (a, b - 1)))
    parts = [f"v{FUSION_VERSION}", f"{a}-{b}",
             key if boundary == NOON_MIN else f"{key}@{sleep[0]}-{sleep[1]}"]
    for s in ALL_STREAMS:
        n, last = data.row_activity(s, a, b)
        parts.append(f"{n}@{last:.6f}")
    n, changed = data.docs.activity("entries", "sgv", a * EPOCH_S * 1000, b * EPOCH_S * 1000)
    parts.append(f"{n}@{changed}")
    parts.append(f"edge@{data.night_updated(night)}")
    return "|".join(parts)


# -- fusion -----------------------------------------------------------------------------------


LOW_TAIL_MS = 4 * 3600 * 1000  # a night's low is followed this far past the night's end


@dataclass
class NightData:
    night: str
    tz: ZoneInfo
    first: int
    end: int
    streams: dict[int, dict] = field(default_factory=dict)
    readings: list[tuple[int, int]] = field(default_factory=list)
    edge: dict | None = None  # the summary an edge node reported for the night, if any
    sleep: Sleep | None = None  # the person's schedule (bedtime, wake), if known


def load_night(data: TenantStore, night: str, tz: ZoneInfo, sleep: Sleep | None = None,
               window: tuple[int, int] | None = None) -> NightData:
    a, b = window or night_window(night, tz, boundary_of(sleep))
    nd = NightData(night, tz, a, b, sleep=sleep)
    # Two homes (an edge at each parent's): the devices that recorded the person tonight go
    # first, so the empty home's room does not become the person's sleep and breathing.
    prefer = data.night_devices(a, b)
    for s in ALL_STREAMS:
        nd.streams[s] = data.stream_values(s, a, b, prefer)
    nd.readings = load_glucose(data, a * EPOCH_S * 1000, b * EPOCH_S * 1000)
    try:
        nd.edge = data.night(night)
    except LookupError:
        nd.edge = None
    screens = (nd.edge or {}).get("by_device")
    if isinstance(screens, dict):  # the apnea screen of the edge that recorded the person
        dev = next((d for d in prefer if isinstance(screens.get(d), dict)), None)
        if dev is not None:
            nd.edge = {**nd.edge, "breathing": screens[dev], "device": dev}
    return nd


def _r(x, nd=1):
    return None if x is None else round(float(x), nd)


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _range(xs, nd=1):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    return {"min": _r(xs[0], nd), "median": _r(glycemia.percentile(xs, 50), nd), "max": _r(xs[-1], nd)}


def _desaturations(infer: dict, wear: dict, epochs: list[int], drop: int) -> int:
    """Desaturations of `drop` % over the epochs: the wearable row's count where it has one,
    else 1 for an epoch the classifier flagged."""
    n = 0
    for e in epochs:
        count = wear.get(e, {}).get(f"desat{drop}_count")
        if count is not None:
            n += int(count)
        elif infer.get(e, {}).get(f"desat{drop}", 0) >= 1:
            n += 1
    return n


def _runs(flags: list[bool]) -> int:
    """Number of runs of consecutive True values (one desaturation spans several epochs)."""
    n, prev = 0, False
    for f in flags:
        if f and not prev:
            n += 1
        prev = f
    return n


def stages(nd: NightData, span: tuple[int, int] | None) -> tuple[dict[int, int], str | None]:
    """Stage per epoch of the recording (epochs without one are left out) and its source:
    "classifier" (stream 5), "actigraphy" (wearable movement; wake/sleep only) or None."""
    if span is None:
        return {}, None
    a, b = span
    infer = nd.streams[features.INFER]
    staged = {e: int(v["sleep_stage"]) for e, v in infer.items()
              if a <= e < b and "sleep_stage" in v}
    if staged:  # classifier rows that staged nothing (no signal of the person) do not count
        return staged, "classifier"
    wear = nd.streams[features.WEARABLE]
    out = {}
    for e, v in wear.items():
        if a <= e < b and "movement" in v:
            # Movement in at least 3 of the 5 epochs centred on this one: awake. A plain
            # actigraphy rule: the short movement of an arousal after an apnea stays asleep
            # (on simulated nights it agreed with the true sleep/wake on 93-99 % of epochs,
            # where "any movement next door" agreed on 39-87 %). It cannot tell light from
            # deep or REM sleep, so no stage shares are given.
            moved = sum(1 for x in range(e - 2, e + 3)
                        if wear.get(x, {}).get("movement", 0) >= 1)
            out[e] = WAKE if moved >= ACTIGRAPHY_WAKE else LIGHT
    return out, ("actigraphy" if out else None)


def fuse(nd: NightData) -> dict:
    """Every per-night metric and cross-modal finding of a loaded night (no timeline)."""
    rec = sorted(e for s in SLEEP_STREAMS for e, v in nd.streams[s].items() if v)
    span, apart = main_period(nd, rec)
    st, stage_source = stages(nd, span)
    # the zone the person slept in (a night of a flight: where they slept)
    middle = (span[0] + span[1]) // 2 if span else (nd.first + nd.end) // 2
    doc: dict = {"night": nd.night, "tz": zones.zone_at(nd.tz, middle * EPOCH_S).key,
                 "first_epoch": nd.first, "end_epoch": nd.end,
                 "fusion_version": FUSION_VERSION}
    doc["recording"] = ({"start_epoch": span[0], "end_epoch": span[1],
                         "start_ms": span[0] * EPOCH_S * 1000, "end_ms": span[1] * EPOCH_S * 1000}
                        if span else None)
    # the other sleeps recorded in the window (naps): shown, not in the night's figures
    doc["apart"] = [{"start_ms": a * EPOCH_S * 1000, "end_ms": b * EPOCH_S * 1000,
                     "minutes": (b - a) * EPOCH_MIN} for a, b in apart]
    doc["sleep"] = sleep_metrics(st, span, stage_source)
    doc["coverage"] = coverage(nd, span)
    sleep_span = _sleep_span(doc["sleep"], nd)
    doc["breathing"] = with_edge_screen(breathing(nd, st, span, stage_source), nd.edge)
    doc["glucose"] = nocturnal_glucose(nd, sleep_span)
    doc["room"] = room(nd, span)
    doc["findings"] = findings(nd, st, doc, sleep_span)
    doc["has_data"] = bool(span or nd.readings)
    return doc


def main_period(nd: NightData, rec: list[int]) -> tuple[tuple[int, int] | None, list]:
    """The night's main sleep period [first, end) epoch of the recorded epochs `rec`
    (sorted), and the other periods: recordings APART_MIN or more apart are separate sleeps,
    and the main one is the one with the most epochs staged asleep (without stages, the
    longest; on a tie the later)."""
    if not rec:
        return None, []
    periods, start = [], rec[0]
    for prev, e in zip(rec, rec[1:], strict=False):
        if (e - prev) * EPOCH_MIN >= APART_MIN:
            periods.append((start, prev + 1))
            start = e
    periods.append((start, rec[-1] + 1))
    if len(periods) == 1:
        return periods[0], []
    staged = nd.streams[features.INFER]

    def weight(p):
        asleep = sum(1 for e, v in staged.items()
                     if p[0] <= e < p[1] and v.get("sleep_stage") not in (None, WAKE))
        return asleep, p[1] - p[0], p[0]

    main = max(periods, key=weight)
    return main, [p for p in periods if p != main]


def sleep_metrics(st: dict[int, int], span, source) -> dict:
    out = {"source": source, "tib_min": None, "tst_min": None, "se_pct": None, "sol_min": None,
           "waso_min": None, "rem_latency_min": None, "stage_pct": None, "unscored_min": None,
           "onset_ms": None, "final_wake_ms": None}
    if span is None:
        return out
    a, b = span
    tib = (b - a) * EPOCH_MIN
    out["tib_min"] = tib
    out["unscored_min"] = (b - a - len(st)) * EPOCH_MIN
    if not st:  # nothing staged the night (no classifier stage, no movement): no figures
        return out
    sleep_epochs = sorted(e for e, s in st.items() if s != WAKE)
    if not sleep_epochs:
        out.update(tst_min=0.0, se_pct=0.0)
        return out
    # Onset and REM by the shared minimum bouts, so one stray epoch cannot move them.
    scored = _scored_run(st, a, b)
    onset, last = a + sleep_onset(scored, WAKE), sleep_epochs[-1]
    tst = len(sleep_epochs) * EPOCH_MIN
    waso = sum(1 for e, s in st.items() if onset <= e <= last and s == WAKE) * EPOCH_MIN
    # Efficiency over the staged time and latency from the first staged epoch: a stretch
    # with no stage (no input, rows from before a classifier) is neither sleep nor wake.
    out.update(tst_min=tst, se_pct=100.0 * tst / (len(st) * EPOCH_MIN),
               sol_min=(onset - min(st)) * EPOCH_MIN,
               waso_min=waso, onset_ms=onset * EPOCH_S * 1000,
               final_wake_ms=(last + 1) * EPOCH_S * 1000)
    if source == "classifier":
        counts = [0, 0, 0, 0]
        for e in sleep_epochs:
            counts[st[e]] += 1
        out["stage_pct"] = {STAGE_NAMES[i]: 100.0 * counts[i] / len(sleep_epochs)
                            for i in (LIGHT, DEEP, REM)}
        rem = first_rem(scored, onset - a, REM)
        out["rem_latency_min"] = (rem + a - onset) * EPOCH_MIN if rem is not None else None
    return out


def _scored_run(st: dict[int, int], a: int, b: int) -> list[int | None]:
    """The stages of epochs a..b-1 in order, None where an epoch has no stage (it breaks a
    bout and is not sleep)."""
    return [st.get(e) for e in range(a, b)]


def _sleep_span(sleep: dict, nd: NightData) -> tuple[int, int, str]:
    """(start_ms, end_ms, what) of the nocturnal glucose period: sleep onset to final wake
    when sleep was detected, else the consensus night 00:00-06:00 local (a day sleeper's:
    their schedule)."""
    if sleep.get("onset_ms") is not None:
        return sleep["onset_ms"], sleep["final_wake_ms"], "sleep"
    if boundary_of(nd.sleep) != NOON_MIN:
        a, b = sleep_span(nd.night, nd.sleep, nd.tz)
        bed, wake = nd.sleep
        return int(a * 1000), int(b * 1000), \
            f"{bed // 60:02d}:{bed % 60:02d}-{wake // 60:02d}:{wake % 60:02d}"
    d = date.fromisoformat(nd.night) + timedelta(days=1)
    a = datetime.combine(d, time(0), nd.tz).timestamp()
    b = datetime.combine(d, time(6), nd.tz).timestamp()
    return int(a * 1000), int(b * 1000), "00:00-06:00"


def coverage(nd: NightData, span) -> dict:
    """Per modality, the share of the recording's epochs (or of the whole window without a
    recording) that hold a row, and the CGM readings against one per sensor interval (the
    night's commonest step: 5 minutes for a Dexcom, 15 for a Libre 2)."""
    a, b = span if span else (nd.first, nd.end)
    n = max(1, b - a)
    out = {}
    for s in ALL_STREAMS:
        name = features.stream(s)[features.S_NAME]
        # an epoch counts when its row carries at least one measured feature
        out[name] = sum(1 for e, v in nd.streams[s].items() if v and a <= e < b) / n
    lo, hi = a * EPOCH_S * 1000, b * EPOCH_S * 1000
    got = [g for t, g in nd.readings if lo <= t < hi]
    expected = max(1, int(n * EPOCH_MIN / glycemia.sensor_interval_min(nd.readings)))
    out["glucose_readings"] = min(1.0, len(glycemia.glucose([(0, g) for g in got])) / expected)
    out["sensor_errors"] = sum(1 for g in got if g < 39)
    return out


# Said wherever a night's snoring figure is shown: neither way of computing it holds on real
# audio yet (edge/models/snore.md: on real recorded clips the classifier did not tell snores
# from other sounds; the bare snore-ratio rule calls most real nights snoring).
SNORE_CAVEAT = ("Snoring is a rough estimate: it does not yet hold up on real recorded "
                "audio, where it mistakes other sounds for snoring and snoring for other sounds.")


def breathing(nd: NightData, st: dict[int, int], span, stage_source) -> dict:
    out = {"source": None, "snore_pct": None, "snore_source": None, "apnea_events": None,
           "ahi": None, "ahi_severity": None, "ahi_source": None, "odi3": None, "odi4": None,
           "odi_source": None, "hours": None, "audio_unusable": None}
    if span is None:
        return out
    a, b = span
    sleep = sorted(e for e, s in st.items() if s != WAKE)
    basis = "sleep" if sleep else "recording"
    epochs = sleep if sleep else list(range(a, b))
    hours = len(epochs) * EPOCH_S / 3600.0
    out["hours"], out["basis"] = hours, basis
    if hours <= 0:
        return out
    infer, audio, wear = nd.streams[features.INFER], nd.streams[features.AUDIO], nd.streams[features.WEARABLE]
    if stage_source == "classifier":
        # Each figure over the epochs whose rows carry it: the edge leaves snoring out where
        # it had no audio, the audio model's events without audio, desaturations without oximetry.
        out["source"] = "classifier"
        rows = [infer[e] for e in epochs if e in infer]
        snore = [r["snore"] for r in rows if "snore" in r]
        if snore:
            out["snore_pct"] = 100.0 * sum(1 for v in snore if v >= 1) / len(snore)
            out["snore_source"] = "classifier"
        events = [int(r["apnea_events"]) for r in rows if "apnea_events" in r]
        if events:
            out["apnea_events"] = sum(events)
            out["ahi"] = sum(events) / (len(events) * EPOCH_S / 3600.0)
            out["ahi_source"] = "classifier"
        oxi = [e for e in epochs if "desat3" in infer.get(e, {})]
        if oxi:
            # The edge counts each desaturation once, in the epoch where it is confirmed:
            # its counts where the wearable rows came too, else one per flagged epoch
            # (cyclic desaturations, one a minute, flag neighbouring epochs: no merging).
            oxi_h = len(oxi) * EPOCH_S / 3600.0
            out["odi3"] = _desaturations(infer, wear, oxi, 3) / oxi_h
            out["odi4"] = _desaturations(infer, wear, oxi, 4) / oxi_h
            out["odi_source"] = "classifier"
        out["ahi_severity"] = severity(out["ahi"])
        return out
    out["source"] = "raw features"
    # Actigraphy calls the arousal after an apnea "awake", so without a classifier the
    # events are counted over the whole recording, per hour of recording (as home sleep
    # apnea tests report a respiratory event index), and labelled so.
    epochs = list(range(a, b))
    out["basis"], out["hours"] = "recording", (b - a) * EPOCH_S / 3600.0
    arows = [audio[e] for e in epochs if audio.get(e)]
    dead = unusable_audio((r.get("loud_mean_dbfs"), r.get("loud_max_dbfs"), r.get("flatness"))
                          for r in arows)
    if dead:  # a silent microphone would read as hours of breathing pauses, a clipped one
        out["audio_unusable"] = dead[0]  # as a night of snoring
        arows = []
    if arows:
        ah = len(arows) * EPOCH_S / 3600.0
        out["snore_pct"] = 100.0 * sum(1 for r in arows if r.get("snore_ratio", 0) > SNORE_RATIO
                                       ) / len(arows)
        out["snore_source"] = f"audio snore ratio > {SNORE_RATIO}"
        pauses = [audio.get(e, {}).get("silence_max_s", 0) >= APNEA_SILENCE_S for e in epochs]
        events = _runs(pauses)
        out["apnea_events"] = events
        out["ahi"] = events / ah
        out["ahi_source"] = (f"audio pauses >= {APNEA_SILENCE_S:g} s (apnea candidates) per "
                             "hour of recording")
    wrows = [wear[e] for e in epochs if "desat3_count" in wear.get(e, {})]
    if wrows:
        wh = len(wrows) * EPOCH_S / 3600.0
        out["odi3"] = sum(r["desat3_count"] for r in wrows) / wh
        out["odi4"] = sum(r.get("desat4_count", 0) for r in wrows) / wh
        out["odi_source"] = "wearable desaturation counts"
    out["ahi_severity"] = severity(out["ahi"])
    return out


SCREEN_INPUTS = {"rr": "heart rhythm", "spo2": "oximetry", "audio": "bedroom audio"}


def with_edge_screen(out: dict, edge: dict | None) -> dict:
    """The night's breathing with the apnea screen its edge node reported (its status
    report: heart rhythm from the beats, which the wire does not carry, oximetry and audio,
    fused in edge/features/apnea_screen.py), under `screen`. Where the rows gave no AHI (a
    ring or watch with heart rhythm but no audio), the screen's estimate is the night's
    figure, named as such. Anything malformed in it is left out."""
    b = edge.get("breathing") if isinstance(edge, dict) else None
    if not isinstance(b, dict):
        return out
    est, inputs = b.get("ahi_estimate"), b.get("breathing_inputs")
    if (isinstance(est, bool) or not isinstance(est, int | float) or not 0 <= est <= 200
            or not isinstance(inputs, list) or not inputs
            or not all(isinstance(i, str) and i in SCREEN_INPUTS for i in inputs)):
        return out
    names = ", ".join(SCREEN_INPUTS[i] for i in inputs)
    text = b.get("screen")
    out["screen"] = {"ahi_estimate": round(float(est), 1), "inputs": list(inputs),
                     "severity": severity(float(est)),
                     "message": text if isinstance(text, str) and len(text) <= 300 else None}
    if out["ahi"] is None:
        out["ahi"] = round(float(est), 1)
        out["ahi_severity"] = severity(float(est))
        out["ahi_source"] = f"the edge's apnea screen from {names} (events per hour, estimated)"
        out["source"] = out["source"] or "edge"
    return out


def nocturnal_glucose(nd: NightData, sleep_span) -> dict:
    lo, hi, what = sleep_span
    rd = [(t, g) for t, g in nd.readings if lo <= t < hi]
    out: dict = {"period": what, "start_ms": lo, "end_ms": hi, "n": 0, "summary": None,
                 "bands": None, "lows": [], "dawn": None}
    s = glycemia.summary(rd)
    if s is None:
        return out
    out["n"] = s["n"]
    out["summary"] = {k: s[k] for k in ("mean", "sd", "cv_pct")}
    out["bands"] = glycemia.bands(rd)
    lows = []
    # A low belongs to the night when it starts in it, and is followed to its end: one from
    # 05:44 to 06:29 is 45 minutes, not the 15 before 06:00 (the readings reach noon).
    tail = [(t, g) for t, g in nd.readings if lo <= t < hi + LOW_TAIL_MS]
    for level in (1, 2):
        for e in glycemia.hypo_events(tail, level):
            if e.start_ms >= hi:
                continue
            lows.append({"level": level, "start_ms": e.start_ms, "end_ms": e.end_ms,
                         "minutes": e.minutes, "nadir": e.nadir, "ongoing": e.ongoing,
                         "extended": e.extended})
    out["lows"] = sorted(lows, key=lambda x: (x["start_ms"], x["level"]))
    if what == "sleep":
        night_rd = [(t, g) for t, g in nd.readings if t <= hi]
        out["dawn"] = glycemia.dawn_phenomenon(night_rd, hi)
    return out


def room(nd: NightData, span) -> dict:
    a, b = span if span else (nd.first, nd.end)
    rows = [v for e, v in nd.streams[features.ROOM].items() if v and a <= e < b]
    return {"temp_c": _range([r.get("temp_c") for r in rows]),
            "co2_ppm": _range([r.get("co2_ppm") for r in rows], 0),
            "light_lux": _range([r.get("light_lux") for r in rows], 0),
            "noise_dba": _range([r.get("noise_dba") for r in rows]),
            "humidity_pct": _range([r.get("humidity_pct") for r in rows])}


def _epoch_of(t_ms: int) -> int:
    return int(t_ms // (EPOCH_S * 1000))


def findings(nd: NightData, st: dict[int, int], doc: dict, sleep_span) -> dict:
    """Cross-modal findings of one night: each low with the sleep stage, heart-rate response
    and any arousal around it; glucose by sleep stage; glucose around desaturations."""
    wear, infer = nd.streams[features.WEARABLE], nd.streams[features.INFER]
    lows = []
    end_ms = doc["glucose"]["end_ms"]
    for low in doc["glucose"]["lows"]:
        # a low followed past the night (LOW_TAIL_MS) is read for stages, heart rate and
        # arousal only up to the night's end: getting up is no response to it
        a, b = _epoch_of(low["start_ms"]), _epoch_of(min(low["end_ms"], end_ms)) + 1
        during = [st[e] for e in range(a, b) if e in st]
        stage_min = {STAGE_NAMES[i]: during.count(i) * EPOCH_MIN for i in range(4)
                     if during.count(i)}
        base = [wear[e].get("hr_mean_bpm") for e in range(a - HR_BEFORE_MIN * 2, a) if e in wear]
        dur = [wear[e].get("hr_mean_bpm") for e in range(a, b) if e in wear]
        hr_before, hr_during = _mean(base), _mean(dur)
        m = AROUSAL_MARGIN_MIN * 2
        arousal = [e for e in range(a - m, b + m)
                   if (e in st and st[e] == WAKE and (e - 1) in st and st[e - 1] != WAKE)
                   or wear.get(e, {}).get("movement", 0) >= 1]
        # no stages and no wearable around the low: not measured, not "none seen"
        watched = any(e in st or e in wear for e in range(a - m, b + m))
        lows.append({**low, "stage_at_start": STAGE_NAMES[st[a]] if a in st else None,
                     "stage_min": stage_min,
                     "hr_before": _r(hr_before), "hr_during": _r(hr_during),
                     "hr_response": _r(hr_during - hr_before)
                     if hr_before is not None and hr_during is not None else None,
                     "arousal": bool(arousal) if watched else None,
                     "arousal_ms": arousal[0] * EPOCH_S * 1000 if arousal else None})
    lo, hi, _what = sleep_span
    rd = [(t, g) for t, g in glycemia.glucose(nd.readings) if lo <= t < hi]
    by_stage: dict[str, list[float]] = {}
    for t, g in rd:
        s = st.get(_epoch_of(t))
        if s is not None:
            by_stage.setdefault(STAGE_NAMES[s], []).append(g)
    stage_glucose = {k: {"n": len(v), "mean": _r(statistics.fmean(v)),
                         "sd": _r(statistics.stdev(v)) if len(v) > 1 else None}
                     for k, v in by_stage.items()}
    desat = sorted(e for e, v in infer.items() if v.get("desat3", 0) >= 1)
    desat_source = "classifier"
    if not desat:
        desat = sorted(e for e, v in wear.items() if v.get("desat3_count", 0) >= 1)
        desat_source = "wearable desaturation counts" if desat else None
    near, far = [], []
    w = DESAT_WINDOW_MIN * 2
    import bisect
    for t, g in rd:
        e = _epoch_of(t)
        i = bisect.bisect_left(desat, e - w)
        (near if i < len(desat) and desat[i] <= e + w else far).append(g)
    around = {"source": desat_source, "window_min": DESAT_WINDOW_MIN,
              "near": {"n": len(near), "mean": _r(_mean(near))},
              "away": {"n": len(far), "mean": _r(_mean(far))}}
    return {"lows": lows, "glucose_by_stage": stage_glucose, "around_desaturations": around}


def timeline(nd: NightData, doc: dict, margin_min: int = 30) -> list[dict]:
    """Per epoch of the recording (with a margin), every modality side by side; None where
    a modality has no row. Glucose is the reading that falls in the epoch, if any."""
    if doc.get("recording"):
        a = doc["recording"]["start_epoch"] - margin_min * 2
        b = doc["recording"]["end_epoch"] + margin_min * 2
    else:
        a, b = nd.first, nd.end
    a, b = max(a, nd.first), min(b, nd.end)
    rec = doc.get("recording")
    st, _source = stages(nd, (rec["start_epoch"], rec["end_epoch"]) if rec else None)
    gl = {}
    for t, g in nd.readings:
        gl[_epoch_of(t)] = g
    s = nd.streams
    out = []
    for e in range(a, b):
        i, w, au, r = (s[features.INFER].get(e, {}), s[features.WEARABLE].get(e, {}), s[features.AUDIO].get(e, {}),
                       s[features.ROOM].get(e, {}))
        g = gl.get(e)
        if i:
            apnea, desat, snore = i.get("apnea_events"), i.get("desat3"), i.get("snore")
        else:
            sil = au.get("silence_max_s")
            apnea = None if sil is None else int(sil >= APNEA_SILENCE_S)
            d = w.get("desat3_count")
            desat = None if d is None else int(d >= 1)
            sr = au.get("snore_ratio")
            snore = None if sr is None else int(sr > SNORE_RATIO)
        out.append({"epoch": e, "t_ms": e * EPOCH_S * 1000, "stage": st.get(e),
                    "glucose": g if g is not None and g >= 39 else None,
                    "sensor_error": g if g is not None and g < 39 else None,
                    "forecast30": i.get("forecast30_mgdl"), "low_risk": i.get("low_risk"),
                    "spo2": w.get("spo2_mean_pct"), "spo2_min": w.get("spo2_min_pct"),
                    "hr": w.get("hr_mean_bpm"), "movement": w.get("movement"),
                    "apnea": apnea, "desat": desat, "snore": snore,
                    "temp_c": r.get("temp_c"), "co2_ppm": r.get("co2_ppm"),
                    "noise_dba": r.get("noise_dba"), "light_lux": r.get("light_lux")})
    return out


# -- associations across nights ---------------------------------------------------------------

MIN_NIGHTS = 5  # fewer nights than this: "not enough nights"


def pearson(xs: list[float], ys: list[float]) -> dict:
    """Pearson r with a 95 % confidence interval (Fisher z), and n; r is None with fewer than
    MIN_NIGHTS pairs or without variation."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None
             and math.isfinite(x) and math.isfinite(y) and abs(x) < 1e12 and abs(y) < 1e12]
    n = len(pairs)
    out = {"n": n, "r": None, "ci": None, "slope": None, "enough": n >= MIN_NIGHTS}
    if n < MIN_NIGHTS:
        return out
    mx = statistics.fmean(p[0] for p in pairs)
    my = statistics.fmean(p[1] for p in pairs)
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    syy = sum((y - my) ** 2 for _, y in pairs)
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    if sxx == 0 or syy == 0:
        out["enough"] = False
        return out
    r = max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))
    out["r"] = r
    out["slope"] = sxy / sxx
    if abs(r) < 1 and n > 3:
        z, se = math.atanh(r), 1.0 / math.sqrt(n - 3)
        out["ci"] = [math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)]
    else:
        out["ci"] = [r, r]
    return out
