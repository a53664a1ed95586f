"""The desk clocks' feed: the current glucose and last night's summary, published by the edge
on the LAN broker as retained JSON (`nl/v1/{tenant}/{edge}/clock/glucose|night`), so a clock
that wakes or reconnects gets both at once, with the internet down or not.

glucose: {"t": Unix s, "sgv": mg/dL or error code < 39, "trend": Nightscout trend number,
          "delta": mg/dL over 5 min or null, "recent": [[t, sgv], ...] the hour before (every
          reading, up to 70: a 1-minute sensor's hour),
          "alarm": {"permille", "persist", "refractory_min", "rising", "floor",
                    "carb_hold_min", "urgent"} when calibrated,
          "carbs_t": Unix s of the newest treatment with carbs in the last 2 hours, if any}
night:   {"night": "YYYY-MM-DD", "end_t": Unix s its recording ended (the clock's "last
          night" for 14 hours after), "sleep_min", "efficiency_pct" (null until sleep staging
          gives them), "lows": level-1 events, "low_min", "tir_pct",
          "curve": [mg/dL every 10 min over the night, 0 = missing]}
time:    {"t": Unix s}, every minute, NOT retained (a stored time would be old when read), and
         only while NTP has said within the last week that this machine's clock is
         synchronized: a clock whose LAN has no NTP server sets its time from it until NTP
         answers (device/main.py).
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Iterable

from nightlink.edge.sources.cgm import FUTURE_S, readings_between, readings_from_store
from nightlink.edge.sources.samples import Glucose
from nightlink.edge.store import EdgeStore
from nightlink.shared import topics, units
from nightlink.sql import DatabaseError

_LOGGER = logging.getLogger(__name__)

RECENT_S = 3600  # the hour of readings the clock's predicted-low model needs
RECENT_MAX = 70  # ... every one of them, from a 1-minute sensor too (the clock keeps 75)
CARBS_S = 2 * 3600  # carbs this recent reach the clocks (they hold the predicted low off)
POLICY_META = "alarm_policy"  # the active predicted-low policy in words, in the store's meta
POLICY_PARAMS_META = "alarm_policy_params"  # ... and as the clocks take it (JSON)
CURVE_STEP_S = 600
EVENT_MIN = 15  # a level-1 hypoglycaemia event: 15 minutes below 70 mg/dL (docs/clinical.md)
GAP_S = 45 * 60  # a longer gap between readings ends a run: no event spans it
TIME_EVERY_S = 60  # how often the clocks are told the time
TRUSTED_S = 7 * 86400  # after NTP last said "synchronized": a Pi's crystal drifts < 1 min a week
SKEW_FRESH_S = 900  # readings stored this recently say how the uploaders' clocks stand now
SKEW_EVERY_S = 30  # how often that is looked at
SKEW_SAY_S = 300  # a change of the offset by more than this is said again


def system_clock_synchronized() -> bool | None:
    """Whether NTP keeps this machine's clock synchronized, as `timedatectl` shows it
    ("System clock synchronized"), asked of systemd-timedated, which knows it for
    systemd-timesyncd and chrony alike (the edge's unit may not call adjtimex itself: its
    system-call filter and ProtectClock refuse it). None where there is no timedatectl."""
    try:
        got = subprocess.run(["timedatectl", "show", "--property=NTPSynchronized", "--value"],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    answer = got.stdout.strip()
    if got.returncode != 0 or answer not in ("yes", "no"):
        return None
    return answer == "yes"


def _sgv(g: Glucose) -> int:
    return int(g.sgv) if g.sgv is not None else int(g.error_code or 0)


def latest_carbs(store: EdgeStore, now_s: float, within_s: float = CARBS_S) -> int | None:
    """Unix s of the newest Nightscout treatment with carbs > 0 in the `within_s` before now
    (or up to 10 minutes after: a treatment entered ahead of the reading), None without one."""
    rows = store.docs.latest("treatments", count=50, lo=int((now_s - within_s) * 1000),
                             hi=int((now_s + 600) * 1000))
    times = [r.date_ms for r in rows if _carbs(r.doc) > 0]
    return max(times) // 1000 if times else None


def _carbs(doc: dict) -> float:
    try:
        return float(doc.get("carbs") or 0)
    except (TypeError, ValueError):
        return 0.0


def glucose_message(readings: list[Glucose], alarm: dict | None = None,
                    carbs_t: int | None = None) -> dict | None:
    """The clock's glucose message from readings oldest first (None when there are none);
    `alarm`, the person's calibrated predicted-low policy, and `carbs_t`, when carbs were last
    entered, ride along when known."""
    if not readings:
        return None
    last = readings[-1]
    prev = next((g for g in reversed(readings[:-1]) if g.sgv is not None
                 and 0 < last.t - g.t <= 600), None)
    delta = rate = None
    if last.sgv is not None and prev is not None:
        delta = int(last.sgv - prev.sgv)
        rate = delta / ((last.t - prev.t) / 60.0)
    trend = units.trend_of(last.direction) if last.direction else 0
    if trend == 0 and last.sgv is not None:
        trend = units.trend(rate)
    recent = [[int(g.t), _sgv(g)] for g in readings[:-1] if last.t - g.t <= RECENT_S]
    msg = {"t": int(last.t), "sgv": _sgv(last), "trend": trend, "delta": delta,
           "recent": recent[-RECENT_MAX:]}
    if alarm is not None:
        msg["alarm"] = alarm
    if carbs_t is not None:
        msg["carbs_t"] = int(carbs_t)
    return msg


def night_message(night: str, summary: dict, readings: list[Glucose], start_s: float,
                  end_s: float) -> dict:
    """The clock's morning screen from the edge's night summary and the night's readings."""
    good = [g for g in readings if g.sgv is not None and start_s <= g.t < end_s]
    curve = []
    t = start_s
    i = 0
    while t < end_s and len(curve) < 96:
        vals = []
        while i < len(good) and good[i].t < t + CURVE_STEP_S:
            if good[i].t >= t:
                vals.append(good[i].sgv)
            i += 1
        curve.append(int(sum(vals) / len(vals)) if vals else 0)
        t += CURVE_STEP_S
    lows = level1_events(good)
    cgm = summary.get("cgm") or {}
    sleep = summary.get("sleep") or {}
    in_range = sum(1 for g in good if units.LOW <= g.sgv <= units.HIGH)
    return {
        "night": night,
        "end_t": int(end_s),  # when its recording ended: "last night" for this many hours
        "sleep_min": sleep.get("tst_min"),
        "efficiency_pct": sleep.get("efficiency_pct"),
        "lows": lows if good else None,  # no readings: no figure, not "0 lows"
        "low_min": int(cgm["below_70_min"]) if good and cgm.get("below_70_min") is not None
        else None,
        "tir_pct": round(100 * in_range / len(good)) if good else None,
        "curve": curve,
    }


def level1_events(good: list[Glucose]) -> int:
    """Level-1 hypoglycaemia events per the 2023 consensus (docs/clinical.md): a duration is
    readings x the sampling interval, so an event begins with ceil(15 min / interval) readings
    in a row below 70 and ends after as many at or above it (a shorter rise stays inside);
    a gap over 45 minutes ends the run."""
    counts: dict[int, int] = {}
    for a, b in zip(good, good[1:], strict=False):
        if b.t - a.t <= GAP_S:  # a gap is no sampling interval
            counts[b.t - a.t] = counts.get(b.t - a.t, 0) + 1
    if not counts:
        return 0
    step = max(60, min(counts, key=lambda s: (-counts[s], s)))
    need = -(-EVENT_MIN * 60 // step)
    events = below = above = 0
    in_event, last_t = False, None
    for g in good:
        if last_t is not None and g.t - last_t > GAP_S:
            in_event, below, above = False, 0, 0
        last_t = g.t
        if g.sgv < units.LOW:
            below, above = below + 1, 0
            if not in_event and below >= need:
                events, in_event = events + 1, True
        else:
            below, above = 0, above + 1
            if in_event and above >= need:
                in_event = False
    return events


def latest_night(store: EdgeStore, readings: list[Glucose] | None = None
                 ) -> tuple[tuple, dict] | None:
    """((night, updated_at), night message) of the newest night the store summarized; the
    readings come from the store's entries unless given (a replayed night keeps CGM only as
    epoch rows)."""
    newest = store.newest_night()
    if newest is None:
        return None
    night, summary, updated_at = newest
    start = summary.get("first_epoch", 0) * 30
    end = start + summary.get("epochs", 0) * 30
    if readings is None:
        readings = readings_from_store(store, start * 1000)
    return (night, updated_at), night_message(night, summary, readings, start, end)


def _duration(s: float) -> str:
    m = abs(s) / 60
    return f"{m:.0f} min" if m < 120 else f"{m / 60:.1f} h" if m < 72 * 60 else \
        f"{m / 1440:.1f} days"


def _utc(s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(s))


class ClockFeed:
    """Publishes what changed since the last call. publish(topic, payload, retain) is the LAN
    broker client's publish (paho's signature). `synchronized()` says whether this machine's
    clock may be given to the clocks (None: tell them the time; the node's own clock is
    virtual in replays and tests, and then gives none)."""

    def __init__(self, publish, tenant: str, edge_device: str, synchronized=None):
        self.publish = publish
        self.glucose_topic = topics.clock_feed_topic(tenant, edge_device, topics.CLOCK_GLUCOSE)
        self.night_topic = topics.clock_feed_topic(tenant, edge_device, topics.CLOCK_NIGHT)
        self.time_topic = topics.clock_feed_topic(tenant, edge_device, topics.CLOCK_TIME)
        self.synchronized = synchronized
        self.next_time_s = 0.0
        self.synced_mono: float | None = None  # when NTP last said synchronized (monotonic)
        self.last_t = None
        self.last_carbs = None
        self.last_night = None
        self.sent = 0
        self.alarm = None  # the predicted-low policy for the clocks (glucose_risk.clock_policy)
        self.skew_s = 0.0  # how far every fresh upload is dated ahead of this clock (0: none)
        self._skew_due = 0.0
        self._skew_said = 0.0

    def forget(self) -> None:
        """Send the current reading and night again at the next update (a reconnect: the
        broker may have restarted without its retained messages)."""
        self.last_t = self.last_carbs = self.last_night = None

    def update(self, store: EdgeStore, now_s: float, extra: Iterable[Glucose] = ()) -> int:
        """Publish a newer reading and a newer night summary, if any, and the time once a
        minute; returns messages sent. `extra`: readings the store could not take (an upload
        refused on a full disk), used beside the stored ones."""
        n = self._time(now_s)
        # A reading dated ahead of this clock (an uploader's phone with a wrong clock) is no
        # reading: taken as the newest, it would hide every real one until that time comes.
        # Unless every reading uploaded lately is ahead, by about the same: then this clock
        # is the wrong one (a Pi booted without network has the time it was shut down at),
        # or the only uploader's is, and the clocks are given the readings as dated.
        ahead = self._follow_uploaders(store, now_s)
        lo, hi = now_s + ahead - RECENT_S - 600, now_s + ahead + FUTURE_S
        readings = readings_between(store, int(lo * 1000), int(hi * 1000))[0]
        stored = {round(g.t) for g in readings}
        more = {round(g.t): g for g in extra if lo <= g.t <= hi and round(g.t) not in stored}
        if more:
            readings = sorted(readings + list(more.values()), key=lambda g: g.t)
        carbs = latest_carbs(store, now_s + ahead)
        msg = glucose_message(readings, self.alarm, carbs)
        if msg is not None and (msg["t"], carbs) != (self.last_t, self.last_carbs):
            self.publish(self.glucose_topic, json.dumps(msg, separators=(",", ":")), retain=True,
                         qos=1)
            self.last_t, self.last_carbs = msg["t"], carbs
            n += 1
        latest = latest_night(store)
        if latest is not None and latest[0] != self.last_night:
            self.publish(self.night_topic, json.dumps(latest[1], separators=(",", ":")),
                         retain=True, qos=1)
            self.last_night = latest[0]
            n += 1
        self.sent += n
        return n

    def _follow_uploaders(self, store: EdgeStore, now_s: float) -> float:
        """`skew_s`, looked at every SKEW_EVERY_S: how far ahead of this clock the newest sgv
        entry stored in the last SKEW_FRESH_S is dated, when another one stored then is dated
        within SKEW_FRESH_S before it (one wild date alone is not followed), both more than
        FUTURE_S ahead, and no entry stored then is dated otherwise; else 0. Said in the log
        when it starts, changes or ends. Only on the system clock (entries are stored at a
        time on it, not on a replay's)."""
        if self.synchronized is None or 0 < self._skew_due - now_s <= SKEW_EVERY_S:
            return self.skew_s  # (a clock set back looks again at once)
        self._skew_due = now_s + SKEW_EVERY_S
        fresh_ms = int((now_s - SKEW_FRESH_S) * 1000)
        horizon_ms = int((now_s + FUTURE_S) * 1000)
        ahead = [r.date_ms for r in store.docs.latest("entries", kind="sgv", count=24,
                                                      lo=horizon_ms + 1)
                 if r.srv_created >= fresh_ms]  # newest first
        inside = [r for r in store.docs.latest("entries", kind="sgv", count=12, hi=horizon_ms)
                  if r.srv_created >= fresh_ms]
        was = self.skew_s
        newest = next((d for i, d in enumerate(ahead)
                       if any(d - SKEW_FRESH_S * 1000 <= e < d for e in ahead[i + 1:])), None)
        if newest is not None and not inside:
            self.skew_s = newest / 1000.0 - now_s
        elif not ahead or inside:
            self.skew_s = 0.0
        if self.skew_s and abs(self.skew_s - self._skew_said) > SKEW_SAY_S:
            synced = self.synchronized()
            _LOGGER.warning(
                "clocks: every reading uploaded in the last %d minutes is dated about %s ahead "
                "of this machine's clock (%s); the clocks are given them as dated. %s",
                SKEW_FRESH_S // 60, _duration(self.skew_s), _utc(now_s),
                "NTP keeps this clock right: the uploading phone's time is wrong (set it to "
                "the network's time)." if synced else
                "NTP has not synchronized this machine's clock: it is probably the wrong one "
                "(a network time source, or `timedatectl set-time`, sets it); its own records "
                "follow its clock.")
            self._skew_said = self.skew_s
        elif was and not self.skew_s:
            _LOGGER.warning("clocks: the readings uploaded now are dated by this machine's "
                            "clock again")
            self._skew_said = 0.0
        return self.skew_s

    def _time(self, now_s: float) -> int:
        """The time for the clocks, once a minute, while this machine's clock is trusted: NTP
        said it is synchronized within the last week (the kernel stops saying so some hours
        into an internet outage, while the clock is still right to a second). A Raspberry
        Pi before NTP has the time it was shut down at: none is sent."""
        if self.synchronized is None or now_s < self.next_time_s:
            return 0
        self.next_time_s = now_s + TIME_EVERY_S
        mono = time.monotonic()
        if self.synchronized():
            self.synced_mono = mono
        if self.synced_mono is None or mono - self.synced_mono > TRUSTED_S:
            return 0
        self.publish(self.time_topic, json.dumps({"t": int(now_s)}), retain=False, qos=0)
        return 1


def predicted_low_policy(store: EdgeStore, now_s: float, models=None,
                         utc_offset_s: int | None = None,
                         budget_per_week: float | None = None,
                         zone: str = "", night: tuple[str, str] | None = None) -> dict | None:
    """The clocks' predicted-low policy with the threshold calibrated on the person's last 14
    nights in the store (edge/features/glucose_risk.calibrated_policy) to their false-alarm
    budget (the model's default when None), the nights in the person's `zone` (the configured
    `timezone`; "" the machine's), each night by the offset of its own date, so nights before
    a change of clocks are the same hours too; `utc_offset_s`, when given, is one fixed offset
    instead. `night`: the person's (bedtime, wake) as "HH:MM" (the node's [night]); 22:00-07:00
    when None. None without a model or readings, so the clocks keep the threshold their
    weights carry."""
    from nightlink.edge.features.classify import MODELS
    from nightlink.edge.features.glucose_risk import (
        LiteRtGlucose,
        calibrated_policy,
        clock_policy,
        policy_from_meta,
    )

    folder = MODELS if models is None else models
    try:
        blob = (folder / "glucose_risk.tflite").read_bytes()
        meta = json.loads((folder / "glucose_risk.json").read_text())
    except (OSError, ValueError) as exc:
        _LOGGER.warning("no predicted-low policy for the clocks: %s", exc)
        return None
    readings = [g for g in readings_from_store(store, int((now_s - 16 * 86400) * 1000))
                if g.sgv is not None]
    if not readings:
        return None
    from nightlink.edge.node.zone import zone_offsets_min

    offset = (utc_offset_s // 60 if utc_offset_s is not None
              else lambda unix_min: zone_offsets_min(unix_min, zone))
    carbs = [r.date_ms / 1000 for r in store.docs.latest(
        "treatments", count=10000, lo=int((now_s - 16 * 86400) * 1000), hi=int(now_s * 1000))
        if _carbs(r.doc) > 0]
    window = {} if night is None else {"night_min": tuple(
        int(hh) * 60 + int(mm) for hh, mm in (hhmm.split(":")[:2] for hhmm in night))}
    policy = calibrated_policy(LiteRtGlucose(blob),
                               policy_from_meta(meta, budget_per_week=budget_per_week),
                               [g.t for g in readings], [g.sgv for g in readings], offset,
                               carbs_s=carbs, **window)
    params = clock_policy(policy)
    try:
        store.set_meta(POLICY_META, policy.describe())  # the status report tells the cloud,
        store.set_meta(POLICY_PARAMS_META, json.dumps(params))  # which applies it to its alert
    except DatabaseError as exc:  # a full disk: the clocks get it all the same
        _LOGGER.info("the predicted-low policy was not recorded for the cloud (%s)", exc)
    return params
