"""Server-side glucose alerts: pure rules over readings, de-duplication, and the tenant check.

The rules are plain functions over a list of `(t_ms, sgv)` readings, **oldest first**, in
`nightlink.shared.alerts` (shared/alerts.py), which the clock firmware runs too. `evaluate()` takes Nightscout entry dicts in any order (it sorts them by `date`),
applies every enabled rule and leaves out alerts that repeat an episode already alerted.
`check_tenant()` reads a tenant's recent entries and alerts, evaluates, stores new alerts
with `TenantStore.add_alert` and publishes each on the event bus as
`{"type": "alert", "data": {...}}`. `AlertWorker` (started by `nightlink.cloud.live.install`)
calls it for active tenants every 30 s, and within a second of an "entry" event.

Rules and defaults (mg/dL; thresholds per user in `alert-settings`):

- urgent_low: the current reading is below 54 (level 2 hypoglycemia, Battelino 2019). Urgent.
- low: the current reading is below 70 (level 1). Warning. Not raised while urgent_low is.
- high: the current reading is above 250 (level 2 hyperglycemia). Warning.
- rising_fast: the least-squares slope of the last 15 minutes exceeds 3 mg/dL/min (Dexcom's
  double-arrow band). Warning.
- predicted_low: the reading is at or above 70 and the clock's own predicted-low model sounds
  under the clock's policy (`nightlink.shared.lowrisk.predicted_low`: the same int8 model and
  integer code as the desk clock, the risk of a low < 70 mg/dL for 15 minutes within 30
  minutes at or above the threshold with the 30-minute forecast below the floor, not while
  rising, not just after carbs). The policy is the one the tenant's bedside node last reported
  (its status report's `alarm_policy_params`: the threshold it calibrated on the person's own
  nights to their false-alarm budget), else the threshold this server calibrated the same
  way on the tenant's stored nights (cloud/alert_calibration.py, daily in AlertWorker), else
  the model's own. At most once per the policy's
  refractory period (60 minutes). Warning. Not raised while low or urgent_low is. A tenant
  whose threshold for this rule is not 70 (the model predicts < 70 only) gets the straight
  line instead: the least-squares line through the last 20 minutes (at least 3 readings
  spanning 10 minutes, falling) below the threshold within 20 minutes. Replayed over real CGM
  at night, the model's alert is false 0.21 times a night, the line's 0.54 (docs/alerts.md).
- stale_data: no reading for 15 minutes (warning) or 30 minutes (urgent), as Nightscout
  (docs/nightscout.md); the threshold moves the warning, the urgent level is twice it. A tenant
  that never sent a reading is not stale.

"Current" means at most 15 minutes old (a reading is current for 15 minutes, Nightscout);
readings below 39 are sensor error codes and never count as glucose.

De-duplication: an alert is raised once per episode. An episode (of a rule, or of a more
severe rule of the same family: urgent_low covers low, both cover predicted_low, urgent stale
covers warning stale) ends as the consensus ends a glycaemic event: EVENT_END_MIN (15) minutes
of readings without its condition (readings x sampling interval), or readings coming again
after a gap; stale data ends with a reading newer than the last one the alert saw
(`episode_over`); and an episode whose alert ended on its own is over (a low after an urgent
low that ended is raised in the same check). So a reading flapping around a threshold (65,
71, 66) is one episode and one alert, and a low back after 15 minutes above is a new one,
raised at once (the 30-minute snooze this replaces raised it up to 30 minutes late, and a
fresh stale-data warning as late). An urgent low acknowledged and still there REPEAT_MIN (30)
minutes after the acknowledgement is raised again ("Still urgent low …"), as Dexcom's urgent
low alarm repeats and Nightscout's acknowledgement silences for a while, not for good. The
model's predicted low keeps the clock's refractory period (60 minutes), and waits
SNOOZE_MIN (30) after a low alert.

Ending: an open alert ends on its own when its episode ends (the predicted low when it is
past or has become a low), as Nightscout's alarms do: it is closed with `ended_ms` (and
`acked_at`, no one's `acked_by`), published again so the apps take it off their lists, and
when no alert is left open, Nightscout's socket.io alarm clients get "All Clear". It ends
with the episode, not at the first reading back over the threshold, so "All Clear" is not
followed by silence while glucose dips back under it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import asdict, dataclass, field, replace

from nightlink.cloud.calibrator import Calibrations
from nightlink.shared import lowrisk, units
from nightlink.shared.alerts import (  # noqa: F401 - the rules, re-exported
    CURRENT_MIN,
    MINUTE_MS,
    PREDICT_HORIZON_MIN,
    PREDICT_WINDOW_MIN,
    RISE_WINDOW_MIN,
    RULE_FUNCTIONS,
    URGENT,
    WARNING,
    current,
    high,
    low,
    predicted_low,
    rising_fast,
    slope,
    stale_data,
    urgent_low,
    valid,
)
from nightlink.sql import DatabaseError

_LOGGER = logging.getLogger(__name__)

SNOOZE_MIN = 30  # the model's predicted low waits this long after a low alert
EVENT_END_MIN = 15  # an episode ends after this long without its condition (consensus)
REPEAT_MIN = {"urgent_low": 30}  # raised again this long after an acknowledgement, if it holds
CALIBRATE_BUDGET_S = 5.0  # the worker's time for predicted-low calibrations per full pass
CALIBRATE_CHECK_S = 3600.0  # how often the worker asks whether a tenant's calibration is due
EDGE_POLICY_DAYS = 7  # a bedside node's threshold counts while it reported within this
CALIBRATION_DAYS = 3  # the cloud's own calibration counts while this recent
HISTORY_MIN = 180  # how far back check_tenant reads entries

# rule: (default threshold, unit, lowest allowed, highest allowed, description)
RULES = {
    "urgent_low": (units.VERY_LOW, "mg/dL", 40, 70, "reading below the threshold"),
    "low": (units.LOW, "mg/dL", 55, 100, "reading below the threshold"),
    "high": (units.VERY_HIGH, "mg/dL", 120, 400, "reading above the threshold"),
    "rising_fast": (3.0, "mg/dL/min", 1.0, 6.0, "15-minute rate of rise above the threshold"),
    "predicted_low": (units.LOW, "mg/dL", 55, 100,
                      "the clock's predicted-low model at 70; another threshold: the "
                      "20-minute linear projection below it"),
    "stale_data": (units.STALE_MIN, "min", 5, 60,
                   "no reading for the threshold (warning) or twice it (urgent)"),
}
# For merging several people's settings: which way is "more sensitive".
_LOWER_IS_SENSITIVE = {"rising_fast", "high", "stale_data"}
# Families, most severe first: a more severe alert covers the less severe ones.
_FAMILIES = ((("urgent_low", URGENT), ("low", WARNING), ("predicted_low", WARNING)),
             (("stale_data", URGENT), ("stale_data", WARNING)))


# -- evaluation with de-duplication -----------------------------------------------------------


@dataclass(frozen=True)
class LowModel:
    """What the model's predicted_low needs besides the readings: the policy (the tuple of
    `lowrisk.policy_values`), whose it is ("edge": the bedside node's calibrated policy;
    "cloud": the threshold this server calibrated without a node, cloud/alert_calibration.py;
    "model": the model's own) and when carbs were last entered (Unix ms)."""

    policy: tuple = lowrisk.DEFAULT_POLICY
    source: str = "model"
    carbs_ms: int | None = None
    line: bool = False  # the straight line whatever the threshold (to compare the two)

    nights: int = 0  # the nights the cloud's calibration read

    @classmethod
    def of(cls, reported: dict | None, carbs_ms: int | None = None,
           calibration: dict | None = None, now_ms: int | None = None) -> LowModel:
        """From TenantStore.alarm_policy() (the bedside node's calibrated one; with
        `now_ms`, only while the node reported within EDGE_POLICY_DAYS), else the cloud's own
        calibration (TenantStore.alarm_calibration()) when it had enough nights (with
        `now_ms`, made within CALIBRATION_DAYS), else a node's uncalibrated policy; a missing
        or out-of-bounds policy gives the model's own."""
        if (isinstance(reported, dict) and now_ms is not None
                and now_ms - reported.get("updated_ms", 0) > EDGE_POLICY_DAYS * 1440 * MINUTE_MS):
            reported = None  # a node retired or offline this long no longer decides
        params = reported.get("params") if isinstance(reported, dict) else None
        v = (lowrisk.policy_values(params, *lowrisk.DEFAULT_POLICY[1:])
             if isinstance(params, dict) else None)
        if v is not None and params.get("calibrated") is not False:
            return cls(v, "edge", carbs_ms)
        if (isinstance(calibration, dict) and calibration.get("calibrated") is True
                and (now_ms is None or now_ms - calibration.get("computed_ms", 0)
                     <= CALIBRATION_DAYS * 1440 * MINUTE_MS)):
            v = lowrisk.policy_values({"permille": calibration.get("permille")},
                                      *lowrisk.DEFAULT_POLICY[1:])
            nights = calibration.get("nights")
            if v is not None and isinstance(nights, int):
                return cls(v, "cloud", carbs_ms, nights=nights)
        if v is not None:  # a node not calibrated yet: its policy, the model's threshold
            return cls(v, "model", carbs_ms)
        return cls(carbs_ms=carbs_ms)

    @property
    def refractory_min(self) -> int:
        return self.policy[2]

    def text(self) -> str:
        """The policy in words, as the clock's status screen abbreviates it."""
        permille, persist, refractory, rising, floor, hold, _urgent = self.policy
        who = {"edge": "the bedside node's, calibrated on the person's nights",
               "cloud": f"calibrated by the server on the person's last {self.nights} nights"
               }.get(self.source, "the model's own")
        out = (f"risk {permille / 10:g} % or more ({who}), {persist} prediction(s) in a row, "
               f"at most once in {refractory} minutes, not while rising faster than "
               f"{rising:g} mg/dL/min")
        if floor < 400:
            out += f", forecast below {floor} mg/dL"
        if hold:
            out += f", not within {hold} minutes after carbs"
        return out


def _model_low(readings, now_ms, predictor: LowModel) -> tuple[str, float, dict] | None:
    # a LowRisk of its own per call (0.2 ms): it predicts into buffers it keeps
    got = lowrisk.predicted_low(lowrisk.LowRisk(), readings, now_ms, predictor.policy,
                                predictor.carbs_ms)
    if got is None:
        return None
    risk, forecast = got
    return (WARNING, forecast, {"method": "model", "risk": round(risk / 1000, 3),
                                "policy": predictor.text(), "policy_from": predictor.source})


@dataclass
class Alert:
    rule: str
    level: str  # "urgent" or "warning"
    at_ms: int  # the triggering reading's time (now for stale data)
    message: str
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def settings_with_defaults(settings: dict | None) -> dict[str, dict]:
    """Every rule's {"enabled", "threshold"}: the given ones, defaults for the rest."""
    settings = settings or {}
    out = {}
    for rule, (default, *_rest) in RULES.items():
        s = settings.get(rule) or {}
        threshold = s.get("threshold")
        out[rule] = {"enabled": bool(s.get("enabled", True)),
                     "threshold": default if threshold is None else threshold}
    return out


def merge_settings(per_person: list[dict]) -> dict[str, dict]:
    """One tenant's rules from its members' settings: a rule is on when anyone has it on,
    with the most sensitive threshold among those who do (defaults when nobody has any)."""
    if not per_person:
        return settings_with_defaults(None)
    full = [settings_with_defaults(s) for s in per_person]
    out = {}
    for rule in RULES:
        on = [f[rule]["threshold"] for f in full if f[rule]["enabled"]]
        if not on:
            out[rule] = {"enabled": False, "threshold": RULES[rule][0]}
            continue
        pick = min if rule in _LOWER_IS_SENSITIVE else max
        out[rule] = {"enabled": True, "threshold": pick(on)}
    return out


def readings_of(history: list[dict]) -> list[tuple[int, float]]:
    """(t_ms, sgv) of sgv entries, oldest first, sensor error codes removed."""
    pts = [(int(e["date"]), e["sgv"]) for e in history
           if e.get("sgv") is not None and e.get("type", "sgv") == "sgv"]
    pts.sort()
    return valid(pts)


def _family_above(key):
    """Keys of the same family that are at least as severe as key (itself included)."""
    for fam in _FAMILIES:
        if key in fam:
            return fam[: fam.index(key) + 1]
    return (key,)


# How far back a rule reads at a reading: the current reading (15 minutes), the rising slope's
# window (15 minutes), the straight-line predicted low's (20 minutes).
_LOOK_BACK_MS = (max(CURRENT_MIN, RISE_WINDOW_MIN, PREDICT_WINDOW_MIN) + 1) * MINUTE_MS


def _interval_ms(readings) -> int:
    """The sensor's sampling interval: the median step between readings, 1 to 15 minutes
    (5 without two readings)."""
    steps = sorted(b[0] - a[0] for a, b in zip(readings, readings[1:], strict=False)
                   if b[0] > a[0])
    if not steps:
        return 5 * MINUTE_MS
    return min(max(steps[len(steps) // 2], MINUTE_MS), 15 * MINUTE_MS)


def episode_over(rule, threshold, readings, since_ms, now_ms) -> bool:
    """Whether the episode that had an alert at since_ms has ended by now_ms, as the consensus
    (Battelino 2023) ends an event: EVENT_END_MIN of readings without the rule's condition
    (readings x sampling interval: 3 at 5 minutes, 1 at 15), or a gap in the readings longer
    than the sampling allows once readings come again (no episode spans a gap: after it, a
    low is a new one; while the readings are away the episode stays open, the stale-data
    alert says they are, and a phone's backlog filling the gap continues it). Stale data
    ends with the first reading after since_ms (for a stale-data alert, the last reading it
    saw).

    So glucose flapping around a threshold (65, 71, 66) is one episode with one alert that
    stays open, and a low coming back after 15 minutes above is a new one, raised at once."""
    fn = RULE_FUNCTIONS[rule]
    if rule == "stale_data":
        return any(since_ms < r[0] <= now_ms for r in readings)
    step = _interval_ms(readings)
    gap = max(EVENT_END_MIN * MINUTE_MS, 2 * step)
    prev, run_from, lo = since_ms, None, 0
    for i, r in enumerate(readings):
        if r[0] > now_ms:
            break
        if r[0] <= since_ms:
            prev = r[0]
            continue
        if r[0] - prev > gap:
            return True
        prev = r[0]
        while readings[lo][0] < r[0] - _LOOK_BACK_MS:  # all a rule reads back (15 minutes)
            lo += 1
        if fn(readings[lo: i + 1], r[0], threshold) is not None:
            run_from = None
            continue
        if run_from is None:
            run_from = r[0]
        # the run's readings x the sampling interval, a missing reading inside it counted
        # as the consensus grid interpolates it (half a step of slack: readings every 299 s
        # are 3 to the 15 minutes, as at 300 s)
        if r[0] - run_from + step >= EVENT_END_MIN * MINUTE_MS - step // 2:
            return True
    return False


def _message(rule, level, value, threshold, method=None, risk=0.0):
    if rule == "urgent_low":
        return f"Urgent low: {value:g} mg/dL (below {threshold:g})."
    if rule == "low":
        return f"Low: {value:g} mg/dL (below {threshold:g})."
    if rule == "high":
        return f"High: {value:g} mg/dL (above {threshold:g})."
    if rule == "rising_fast":
        return f"Rising fast: {value:g} mg/dL/min over 15 minutes."
    if rule == "predicted_low" and method == "model":
        # not its forecast: a mean, which runs high before lows (85 at 74 falling to 52)
        return f"Low likely within 30 minutes (risk {risk * 100:.0f} %)."
    if rule == "predicted_low":
        return f"Low predicted: about {value:g} mg/dL in {PREDICT_HORIZON_MIN} minutes."
    urgent = " (urgent)" if level == URGENT else ""
    return f"No glucose data for {int(value)} minutes{urgent}."


def _still(message: str) -> str:
    """An alert's message for a condition that is still there ("Still urgent low: …")."""
    return "Still " + message[0].lower() + message[1:]


def evaluate(history: list[dict], now_ms: int, settings: dict | None = None, *,
             previous: dict[tuple[str, str], int] | None = None,
             predictor: LowModel | None = None, holds: set | None = None,
             closed: set | None = None, acked: dict | None = None) -> list[Alert]:
    """The alerts to raise at now_ms.

    history: Nightscout entry dicts (`date` in ms, `sgv`), in any order; entries after now_ms
    are ignored. settings: {rule: {"enabled", "threshold"}} (missing rules use defaults).
    previous: {(rule, level): at_ms of the last alert raised (for stale data, the last reading
    it saw)}; without it every condition that holds now is returned. predictor: the model's
    predicted-low policy and the last carbs (the model's own policy and no carbs when None).
    holds: a set to which the rules whose condition holds now are added. closed: the
    (rule, level) whose last alert ended on its own: its episode is over, whatever the
    readings since (a low after an urgent low that ended is raised; a backlog filling a gap
    does not reopen an episode whose "All Clear" was sent). acked: {(rule, level): when
    someone acknowledged its last alert, ms} (an urgent low still there REPEAT_MIN after the
    later of the alert and the acknowledgement is raised again).
    """
    readings = [r for r in readings_of(history) if r[0] <= now_ms]
    rules = settings_with_defaults(settings)
    previous = previous or {}
    predictor = predictor or LowModel()
    raised: list[Alert] = []
    holding: set[tuple[str, str]] = set()
    for rule, fn in RULE_FUNCTIONS.items():
        cfg = rules[rule]
        if not cfg["enabled"]:
            continue
        model = (rule == "predicted_low" and cfg["threshold"] == units.LOW
                 and not predictor.line)
        extra: dict = {}
        if model:
            got = _model_low(readings, now_ms, predictor)
            found = None if got is None else got[:2]
            extra = got[2] if got else {}
        else:
            found = fn(readings, now_ms, cfg["threshold"])
        if found is None:
            continue
        if holds is not None:
            holds.add(rule)
        level, value = found
        key = (rule, level)
        severer = _family_above(key)
        if any(k in holding for k in severer[:-1]):
            continue  # a more severe alert of the family holds now
        holding.add(key)
        last = max((previous[k] for k in severer if k in previous), default=None)
        open_last = max((previous[k] for k in severer if k in previous
                         and k not in (closed or ())), default=None)
        if model:  # the clock's refractory period stands for the episode
            own = previous.get(key)
            if own is not None and now_ms - own < predictor.refractory_min * MINUTE_MS:
                continue
            if last is not None and now_ms - last < SNOOZE_MIN * MINUTE_MS:
                continue
        elif open_last is not None and not episode_over(rule, cfg["threshold"], readings,
                                                        open_last, now_ms):
            own, repeat = previous.get(key), REPEAT_MIN.get(rule)
            seen = (acked or {}).get(key)
            if not (repeat and seen is not None and own is not None
                    and now_ms - max(own, seen) >= repeat * MINUTE_MS):
                continue  # the same episode, not acknowledged long enough ago to repeat
            extra = {**extra, "repeat": True}
        at_ms = readings[-1][0] if rule != "stale_data" and readings else now_ms
        detail = {"value": value, "threshold": cfg["threshold"], "unit": RULES[rule][1],
                  **extra}
        if readings:
            detail["last_reading_ms"] = readings[-1][0]
            detail["last_sgv"] = readings[-1][1]
        message = _message(rule, level, value, cfg["threshold"], extra.get("method"),
                           extra.get("risk", 0.0))
        if extra.get("repeat"):
            message = _still(message)
        raised.append(Alert(rule, level, int(at_ms), message, detail))
    return raised


# -- one tenant: read, evaluate, store, publish -----------------------------------------------


def public(row: dict) -> dict:
    """An alert row as the API and the live feed show it."""
    return {
        "id": row["id"],
        "rule": row["rule"],
        "level": row["level"],
        "at_ms": row["at_ms"],
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["at_ms"] / 1000)),
        "message": row["message"],
        "detail": row["detail"],
        "acked_by": row.get("acked_by"),
        "acked_at": row.get("acked_at"),
        "ended_ms": row.get("ended_ms"),  # closed on its own: its condition ended then
    }


def acknowledge(store, events, tenant_id: str, alert_id: int, *, user_id: int | None,
                via: str, endpoint: str | None = None, **who) -> bool:
    """Acknowledge an open alert (in the app, or from a Nightscout client's socket.io `ack`:
    then no member's `user_id`, and `who` names the credential; `endpoint`: the push endpoint
    of the browser it was acknowledged on); publish and audit it. False when it was not
    open."""
    data = store.tenant(tenant_id)
    if not data.ack_alert(alert_id, user_id, endpoint):
        return False
    if events is not None:
        events.publish(tenant_id, "alert", public(data.alert(alert_id)))
    store.audit("alert.ack", actor=user_id, tenant_id=tenant_id, alert=alert_id, via=via, **who)
    return True


def acknowledge_one(store, events, tenant_id: str, alert_id: int, *, user_id: int,
                    via: str, endpoint: str | None = None) -> None:
    """A member acknowledged one alert (the app's button, the REST API): acknowledge it and,
    when it was the last one open, tell Nightscout's socket.io alarm clients "All Clear"."""
    if acknowledge(store, events, tenant_id, alert_id, user_id=user_id, via=via,
                   endpoint=endpoint) \
            and not store.tenant(tenant_id).alerts(limit=1, unacked=True):
        events.alarm(tenant_id, 0, "All Clear", f"Acknowledged {_VIA[via]}.", clear=True)


_VIA = {"app": "in the app", "api": "through the API"}


def tenant_settings(store, tenant_id: str) -> dict[str, dict]:
    """The tenant's merged alert settings over its patients and caregivers."""
    data = store.tenant(tenant_id)
    people = [m["user_id"] for m in store.members(tenant_id)
              if m["role"] in ("patient", "caregiver")]
    return merge_settings([data.alert_settings(uid) for uid in people])


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _tenant_lock(tenant_id: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(tenant_id, threading.Lock())


def check_tenant(store, tenant_id: str, now_ms: int | None = None, events=None) -> list[dict]:
    """Evaluate the tenant's recent entries; store and publish new alerts; return them.

    Safe to call from several threads or processes: the read-evaluate-write runs under a
    per-tenant lock, inside one transaction (SQLite's write lock; a PostgreSQL advisory
    lock), so two callers cannot raise the same alert twice.
    """
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    data = store.tenant(tenant_id)
    settings = tenant_settings(store, tenant_id)
    stored: list[dict] = []
    with _tenant_lock(tenant_id), data.transaction():
        data.exclusive("alerts")
        recent = data.alerts(limit=200)  # newest first
        previous: dict[tuple[str, str], int] = {}  # (rule, level): its last alert's time
        newest: dict[tuple[str, str], dict] = {}  # (rule, level): its last alert
        for a in recent:
            key = (a["rule"], a["level"])
            newest.setdefault(key, a)
            previous[key] = max(previous.get(key, 0), _since(a))
        acked = {k: int(a["acked_at"] * 1000) for k, a in newest.items()
                 if a["acked_at"] is not None and a.get("ended_ms") is None}
        opened = [a for a in recent if a["acked_at"] is None and a["at_ms"] <= now_ms
                  and "threshold" in (a["detail"] or {}) and a["rule"] in RULE_FUNCTIONS]
        going = {k: t for k, t in previous.items() if newest[k].get("ended_ms") is None}
        history = _history(data, now_ms, settings, going, opened)
        readings = [r for r in readings_of(history) if r[0] <= now_ms]
        # An open alert ends on its own when its episode does: 15 minutes of readings back
        # over 70 (or readings again after a gap), readings again after stale data. First,
        # so that a milder alert still holding (a low after an urgent low) is raised now.
        # (Only alerts the rules raised, which carry their threshold: one they cannot
        # re-check waits for someone to acknowledge it.)
        ended = [a for a in opened if a["rule"] != "predicted_low" and episode_over(
            a["rule"], a["detail"]["threshold"], readings, _since(a), now_ms)
            and data.end_alert(a["id"], now_ms)]
        gone = {a["id"] for a in ended}
        # (not the predicted low's: it ends with its condition, and keeps the clock's
        # refractory period whatever the line does after)
        closed = {k for k, a in newest.items() if k[0] != "predicted_low"
                  and (a.get("ended_ms") is not None or a["id"] in gone)}
        holds: set[str] = set()
        for alert in evaluate(history, now_ms, settings, previous=previous, closed=closed,
                              acked=acked, predictor=tenant_predictor(data, now_ms),
                              holds=holds):
            alert_id = data.add_alert(alert.rule, alert.level, alert.at_ms, alert.message,
                                      **alert.detail)
            stored.append(public({"id": alert_id, **alert.as_dict(),
                                  "acked_by": None, "acked_at": None}))
        # a predicted low ends when it is past or has become a low
        ended += [a for a in opened if a["rule"] == "predicted_low" and a["rule"] not in holds
                  and data.end_alert(a["id"], now_ms)]
        gone = {a["id"] for a in ended}
        still_open = any(a["acked_at"] is None and a["id"] not in gone for a in recent)
    for a in ended:
        _LOGGER.info("alert %s %s for %s ended", a["rule"], a["level"], tenant_id)
        if events is not None:
            events.publish(tenant_id, "alert", public(data.alert(a["id"])))
    # "All Clear" as Nightscout sends it: nothing open, and no condition holding (one whose
    # alert someone acknowledged included)
    if ended and not stored and not still_open and not holds and events is not None:
        events.alarm(tenant_id, 0, "All Clear", "The alert's condition has ended.", clear=True)
    for a in stored:
        _LOGGER.info("alert %s %s for %s: %s", a["rule"], a["level"], tenant_id, a["message"])
        if events is not None:
            events.publish(tenant_id, "alert", a)
            # The same alert as a Nightscout notification, for socket.io alarm clients.
            events.alarm(tenant_id, 2 if a["level"] == "urgent" else 1,
                         a["rule"].replace("_", " ").title(), a["message"],
                         event=_NS_EVENTS.get(a["rule"], a["rule"]))
    return stored


def _since(alert: dict) -> int:
    """Where an alert's episode is judged from: its time; for stale data, the last reading
    it saw (a backlog of readings dated before the alert still ends it)."""
    if alert["rule"] == "stale_data":
        seen = (alert["detail"] or {}).get("last_reading_ms")
        if isinstance(seen, (int, float)):
            return int(seen)
    return int(alert["at_ms"])


def _history(data, now_ms: int, settings, going: dict, opened: list[dict]) -> list[dict]:
    """The entries the check reads: HISTORY_MIN back, and further (a day at most) only to
    the alert of an episode that may still be going on: an open alert, or the last alert
    (not ended, `going`) of a family whose rule holds now. (Reading a day for every tenant
    with any alert that day made each check several times slower.)"""
    since = now_ms - HISTORY_MIN * MINUTE_MS
    where = [("date", ">=", since), ("date", "<=", now_ms)]
    history = data.entries(count=5000, type_="sgv", where=where)
    if not history:  # the last reading, however old, tells how stale the data is
        return data.entries(count=1, type_="sgv", where=[("date", "<=", now_ms)])
    readings = readings_of(history)
    rules = settings_with_defaults(settings)
    holding = {rule for rule, fn in RULE_FUNCTIONS.items()
               if rules[rule]["enabled"] and fn(readings, now_ms, rules[rule]["threshold"])}
    families = {k for fam in _FAMILIES if any(r in holding for r, _ in fam) for k in fam}
    wanted = [_since(a) for a in opened] + [t for k, t in going.items()
                                            if k in families or k[0] in holding]
    back = max(min(wanted, default=since), now_ms - 1440 * MINUTE_MS)
    if back >= since:
        return history
    return data.entries(count=5000, type_="sgv",
                        where=[("date", ">=", back), ("date", "<=", now_ms)])


def tenant_predictor(data, now_ms: int) -> LowModel:
    """The tenant's predicted-low policy as its bedside node last reported it (else as this
    server calibrated it), and its newest carbs of the last `carb_hold_min` (up to 10 minutes
    ahead too)."""
    predictor = LowModel.of(data.alarm_policy(), calibration=data.alarm_calibration(),
                            now_ms=now_ms)
    hold = predictor.policy[5]
    if not hold:
        return predictor
    carbs = data.carbs_times(now_ms - hold * MINUTE_MS, now_ms + 10 * MINUTE_MS)
    return replace(predictor, carbs_ms=max(carbs)) if carbs else predictor


# Nightscout's event names for the alarms its clients (AndroidAPS, the web client) know; a
# predicted low is "low", as Nightscout's own forecast (its AR2 plugin) names it.
_NS_EVENTS = {"urgent_low": "low", "low": "low", "predicted_low": "low", "high": "high",
              "urgent_high": "high", "stale": "timeago", "no_data": "timeago"}


# -- the background worker ----------------------------------------------------------------


def active_tenants(store, now_ms: int, within_h: float = 24.0) -> list[str]:
    """Tenants (not deleted) with a glucose reading in the last `within_h` hours."""
    ids = store.tenant_ids()
    since = now_ms - int(within_h * 3600 * 1000)
    out = []
    for tid in ids:
        last = store.tenant(tid).entries(count=1, type_="sgv", where=[("date", ">=", since)])
        if last:
            out.append(tid)
    return out


# An urgent alert nobody acknowledged is pushed to locked phones again while its condition
# still holds, with the reading of now, as a CGM receiver's urgent alarm repeats: an urgent
# low every 5 minutes (Dexcom's Urgent Low alarm repeats every 5 minutes until it is
# confirmed), urgent stale data every 30, for at most 4 hours after it opened.
REPUSH_MIN = {"urgent_low": 5, "stale_data": 30}
REPUSH_FOR_MIN = 240


def claim_new(store, tenant_id: str, raised: list[dict], now_ms: int) -> list[dict]:
    """The alerts just raised that this process pushes (each claimed on its row first, so
    that of several processes one pushes it)."""
    data = store.tenant(tenant_id)
    out = []
    for a in raised:
        try:
            if data.claim_push(a["id"], now_ms):
                out.append(a)
        except DatabaseError as exc:  # pushed unclaimed: twice at worst, never lost
            _LOGGER.warning("cannot mark alert %s of %s as pushed (%s)", a["id"], tenant_id,
                            exc)
            out.append(a)
    return out


def due_again(store, tenant_id: str, now_ms: int) -> list[dict]:
    """Open urgent alerts nobody acknowledged whose condition still holds and whose last push
    is REPUSH_MIN old: each as it reads now ("Still urgent low: 47 mg/dL (below 54)."),
    claimed as above."""
    data = store.tenant(tenant_id)
    due = [a for a in data.alerts(limit=20, unacked=True)
           if a["level"] == URGENT and a["rule"] in REPUSH_MIN and a["pushed_ms"] is not None
           and a["at_ms"] >= now_ms - REPUSH_FOR_MIN * MINUTE_MS
           and a["pushed_ms"] <= now_ms - REPUSH_MIN[a["rule"]] * MINUTE_MS
           and "threshold" in (a["detail"] or {})]
    if not due:
        return []
    readings = [r for r in readings_of(list(reversed(data.entries(count=3, type_="sgv"))))
                if r[0] <= now_ms]
    out = []
    for a in due:
        threshold = a["detail"]["threshold"]
        found = RULE_FUNCTIONS[a["rule"]](readings, now_ms, threshold)
        if found is None or found[0] != URGENT:
            continue  # glucose back over it, or no reading to say it (stale data covers that)
        if data.claim_push(a["id"], now_ms, REPUSH_MIN[a["rule"]] * MINUTE_MS):
            out.append({**public(a),
                        "message": _still(_message(a["rule"], URGENT, found[1], threshold))})
    return out


# Once a pushed alert closes (someone acknowledged it, or its condition ended), the locked
# phones it rang on are told: the notification still on their screens is replaced by a quiet
# one that says so, and a push service still holding the alert for a phone that is off line
# drops it for this news (same Topic). Not for closes older than CLOSED_WITHIN_MIN (alerts
# closed before this server pushed closes, or while it was down), nor for a predicted low
# ending on its own (it ends when it has become a low too, which is not news to quiet).
CLOSED_WITHIN_MIN = 10


def claim_closed(store, tenant_id: str, now_ms: int) -> list[dict]:
    """Alerts pushed in the last REPUSH_FOR_MIN that have closed since, each with `closed`,
    how it closed in words, claimed as claim_new claims (so of several processes one pushes
    it)."""
    data = store.tenant(tenant_id)
    out = []
    # (repeats end REPUSH_FOR_MIN after an alert opens: one pushed in the last REPUSH_FOR_MIN
    # opened in the last twice that, which bounds the query by the alerts' time index)
    found = data.closed_since_pushed(now_ms - 2 * REPUSH_FOR_MIN * MINUTE_MS,
                                     now_ms - REPUSH_FOR_MIN * MINUTE_MS,
                                     now_ms / 1000 - CLOSED_WITHIN_MIN * 60)
    still = data.alerts(limit=20, unacked=True) if found else []
    for a in found:
        how = None if a["ended_ms"] is not None and a["rule"] == "predicted_low" else \
            _how_closed(store, a, still)  # (read before the claim: an error loses nothing)
        if data.claim_closed_push(a["id"], now_ms) and how is not None:
            out.append({**public(a), "closed": how, "acked_endpoint": a["acked_endpoint"]})
    return out


def _how_closed(store, alert: dict, still: list[dict]) -> str:
    from nightlink.cloud.store import NotFoundError

    if alert["ended_ms"] is not None:
        # an urgent low over while a low holds (raised in the same check): not "over"
        kin = alert["rule"].rsplit("_", 1)[-1]
        if alert["level"] == URGENT and any(a["rule"].rsplit("_", 1)[-1] == kin
                                            for a in still):
            return "No longer urgent."
        return "Over."
    if alert["acked_by"] is None:  # a Nightscout client's socket.io acknowledgement
        return "Acknowledged from a Nightscout app."
    try:
        name = " ".join(store.user(alert["acked_by"])["name"].split())[:60]
    except NotFoundError:
        name = ""
    return f"Acknowledged by {name}." if name else "Acknowledged by a member."


class AlertWorker:
    """Checks active tenants every `interval_s`, and a tenant within `debounce_s` of an "entry"
    event, or an alert's close, on the bus (entries stored by another process are seen at the
    next full pass)."""

    def __init__(self, store, events, *, interval_s: float = 30.0, debounce_s: float = 1.0,
                 pusher=None):
        self.store = store
        self.events = events
        self.pusher = pusher  # cloud/push.py's PushSender: new alerts to locked phones
        self.interval_s = interval_s
        self.debounce_s = debounce_s
        self.passes = 0
        self._dirty: set[str] = set()
        self._wake: asyncio.Event | None = None
        self._listeners: dict[str, asyncio.Task] = {}
        self._calibrate_after: dict[str, float] = {}  # tenant -> loop time it may be due
        self._tenants: list[str] = []  # the active tenants of the last full pass
        self.calibrations = 0
        self.calibrator = Calibrations(store)  # in a process of its own, one API process's
        self._loop: asyncio.AbstractEventLoop | None = None  # while run() runs

    async def _listen(self, tenant_id: str) -> None:
        queue = self.events.subscribe(tenant_id)
        try:
            while True:
                msg = await queue.get()
                # a new reading; an alert closed (its close goes to the phones it rang on)
                if msg.get("type") == "entry" or (
                        msg.get("type") == "alert" and isinstance(msg.get("data"), dict)
                        and msg["data"].get("acked_at") is not None):
                    self._dirty.add(tenant_id)
                    self._wake.set()
        finally:
            self.events.unsubscribe(tenant_id, queue)

    async def _check(self, tenants) -> None:
        for tid in sorted(tenants):
            try:
                raised = await asyncio.to_thread(check_tenant, self.store, tid, None,
                                                 self.events)
                if self.pusher is not None:
                    await self._push(tid, raised)
            except (DatabaseError, LookupError, ValueError) as exc:
                _LOGGER.error("alert check of %s failed: %s", tid, exc)
            except Exception:  # noqa: BLE001 - one tenant's data never stops the others' alerts
                _LOGGER.exception("alert check of %s failed", tid)

    async def _push(self, tid: str, raised: list[dict]) -> None:
        """The new alerts to locked phones, then the urgent ones due again, then the news of
        those that closed: each step on its own, so that a database error in one never loses
        another (the first error is raised after all three)."""
        now_ms = int(time.time() * 1000)
        error = None
        for send, claim, args in ((self.pusher.alerts, claim_new, (raised, now_ms)),
                                  (self.pusher.alerts, due_again, (now_ms,)),
                                  (self.pusher.closed, claim_closed, (now_ms,))):
            try:
                send(tid, await asyncio.to_thread(claim, self.store, tid, *args))
            except Exception as exc:  # noqa: BLE001 - raised below, after the other steps
                error = error or exc
        if error is not None:
            raise error

    async def _calibrations(self) -> None:
        """The calibrations beside the alert checks, never in their way: a pass over the
        active tenants every interval, a few seconds at most, after the first check."""
        while True:
            await asyncio.sleep(min(self.interval_s, 1.0) if not self.passes else
                                self.interval_s)
            if self.passes:
                await self._calibrate(self._tenants)

    async def _calibrate(self, tenants, budget_s: float = CALIBRATE_BUDGET_S) -> None:
        """Recalibrate the predicted-low threshold of tenants without a bedside node's, once
        a day each (cloud/alert_calibration.py), for at most about `budget_s` of this pass,
        in a task of its own so that the alert checks never wait for it, and in a process
        of its own, one API process per tenant (cloud/calibrator.py), so that the polls
        this process answers do not wait either."""
        loop = asyncio.get_running_loop()
        stop = loop.time() + budget_s
        self.calibrator.end_if_idle()
        for tid in sorted(tenants):
            if loop.time() >= stop:
                return
            if loop.time() < self._calibrate_after.get(tid, 0.0):
                continue
            now_ms = int(time.time() * 1000)
            try:
                data = await asyncio.to_thread(self.store.tenant, tid)
                doc = await self.calibrator.run(data, now_ms)
                if doc is not None:
                    self.calibrations += 1
                    how = (f"calibrated on {doc['nights']} nights" if doc["calibrated"] else
                           f"the model's own: {doc['nights']} of {lowrisk.CAL_MIN_NIGHTS} nights")
                    _LOGGER.info("predicted-low threshold of %s: %s permille (%s)", tid,
                                 doc["permille"], how)
            except Exception:  # noqa: BLE001 - one tenant's data never stops the others'
                _LOGGER.exception("predicted-low calibration of %s failed", tid)
            self._calibrate_after[tid] = loop.time() + CALIBRATE_CHECK_S

    def calibrate_now(self, data, now_ms: int, timeout_s: float = 60.0) -> dict | None:
        """From a request's thread (a budget or time zone just changed): the tenant's
        calibration made now, as the worker makes it (in its child process, unless another
        API process is making it), waited for; in this thread when the worker is not
        running. None when not due, another process is at it, or it failed or took longer
        than `timeout_s` (logged: the request that changed the settings still succeeds, and
        the worker's next pass calibrates)."""
        from nightlink.cloud import alert_calibration

        loop = self._loop
        if loop is None or loop.is_closed():
            return alert_calibration.recalibrate_if_due(data, now_ms)
        job = asyncio.run_coroutine_threadsafe(self.calibrator.run(data, now_ms), loop)
        try:
            return job.result(timeout_s)
        except Exception:  # noqa: BLE001 - the settings are stored; the worker tries again
            _LOGGER.exception("predicted-low calibration of %s after its settings changed "
                              "failed", data.tenant_id)
            self._calibrate_after.pop(data.tenant_id, None)
            return None

    async def run(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        next_full = 0.0
        calibrator = asyncio.create_task(self._calibrations(), name="alert-calibrations")
        try:
            while True:
                full = loop.time() >= next_full
                if full:
                    now_ms = int(time.time() * 1000)
                    try:
                        tenants = await asyncio.to_thread(active_tenants, self.store, now_ms)
                    except DatabaseError as exc:
                        _LOGGER.error("cannot list tenants for alerts: %s", exc)
                        tenants = []
                    for tid in tenants:
                        if tid not in self._listeners:
                            self._listeners[tid] = asyncio.create_task(self._listen(tid))
                    todo = set(tenants) | self._dirty
                    next_full = loop.time() + self.interval_s
                else:
                    todo = set(self._dirty)
                self._dirty.clear()
                self._wake.clear()
                if full:
                    self._tenants = list(tenants)
                await self._check(todo)
                self.passes += 1
                try:
                    await asyncio.wait_for(self._wake.wait(),
                                           max(0.0, next_full - loop.time()))
                    await asyncio.sleep(self.debounce_s)  # let a batch of entries land
                except TimeoutError:
                    pass
        finally:
            self._loop = None
            calibrator.cancel()
            self.calibrator.close()
            for task in self._listeners.values():
                task.cancel()
            self._listeners.clear()
