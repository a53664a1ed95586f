# The clock's alarm logic: which alarms are active, which one sounds and how loud, with snooze,
# quiet hours (never muting urgent low or no data) and stale/no-data alarms that escalate.

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


from nightlink.device import config
from nightlink.shared import alerts, lowrisk, units

# Kinds in priority order (the first active one is shown and decides the sound).
URGENT_LOW = "urgent_low"
NO_DATA = "no_data"
LOW = "low"
PREDICTED_LOW = "predicted_low"
STALE = "stale"
HIGH = "high"
RISING_FAST = "rising_fast"
KINDS = (URGENT_LOW, NO_DATA, LOW, PREDICTED_LOW, STALE, HIGH, RISING_FAST)
URGENT_KINDS = (URGENT_LOW, NO_DATA)
LABELS = {URGENT_LOW: "URGENT LOW", NO_DATA: "NO DATA", LOW: "LOW",
          PREDICTED_LOW: "LOW SOON", STALE: "STALE", HIGH: "HIGH", RISING_FAST: "RISING FAST"}

# Sound patterns, quietest first (see annunciator.py for what each plays).
SILENT = const(0)
CHIRP = const(1)  # one short beep every 5 minutes
WARN = const(2)  # three beeps every minute
URGENT = const(3)  # beeps every 10 seconds
SIREN = const(4)  # beeping without pause

_MINUTE_MS = const(60000)
_JUMP_MS = const(21600000)  # passes over 6 h apart (or backwards): the time was set
_PREDICT_GAP_MS = lowrisk.PREDICT_GAP_MS  # readings this far apart: separate predictions
_LATE_MIN = const(5)  # a reading may come this late after its sensor's interval before stale


class Alarms:
    """Call `evaluate(readings, now_ms, local_min, risk)` once per pass; then read `active`
    (kinds in priority order), `shown` (the kind on screen), `sounding` and `pattern`."""

    def __init__(self, cfg, alarm_permille=None, floor=400, carb_hold_min=0, urgent=54):
        self.urgent_low = config.mgdl(cfg, "urgent_low")
        self.low = config.mgdl(cfg, "low")
        self.high = config.mgdl(cfg, "high")
        self.rising = config.mgdl(cfg, "rising_fast")
        self.stale_min = cfg["thresholds"]["stale_min"]
        self.nodata_min = cfg["thresholds"]["nodata_min"]
        self.quiet = config.quiet_minutes(cfg)
        qh = cfg.get("quiet_hours")
        self.mute = qh.get("mute", ()) if isinstance(qh, dict) else ()
        self.snooze_ms = cfg["alarms"]["snooze_min"] * _MINUTE_MS
        self.urgent_snooze_ms = cfg["alarms"]["urgent_snooze_min"] * _MINUTE_MS
        self.alarm_permille = alarm_permille
        # the predicted-low policy (the weights' own); the edge may send the person's (set_policy)
        self.persist = lowrisk.PERSIST  # risky predictions in a row
        self.refractory_ms = lowrisk.REFRACTORY_MIN * _MINUTE_MS  # no second alarm this soon
        self.rise_hold = lowrisk.RISING_MGDL_MIN  # mg/dL/min over 15 minutes: none while rising
        self.floor = floor  # the model's 30-minute forecast must be below this (400: off)
        self.carb_hold_ms = carb_hold_min * _MINUTE_MS  # none this long after carbs ...
        self.urgent = urgent  # ... unless the forecast is below this
        self.carbs_ms = None  # when carbs were last entered (the edge's glucose message)
        self.policy_from = "model"  # "model" (the weights' threshold) or "edge"
        self._risk_t = None  # reading time of the last prediction counted
        self._risky = 0  # risky predictions in a row
        self._predicted_at = None  # when the predicted-low alarm last began
        self.active = []
        self.values = {}  # kind -> value (mg/dL, minutes or permille)
        self.escalation = 0  # 0 none, 1 stale, 2 no data, 3 no data for twice as long
        self.snoozed = {}  # kind -> (until_ms, pattern when snoozed)
        self.shown = None
        self.sounding = None
        self.pattern = SILENT
        self.in_quiet = False
        self.started_ms = None  # the first pass: with no reading since, data is missing from it
        self._last_now = None  # the previous pass's time, to tell when the clock was set
        self.watch_from_start = True  # no reading since the start is missing data (not: a
        # clock whose config has errors, which cannot get any yet)
        self.urgent_open = False  # an urgent low not yet followed by a reading above it
        self.low_open = False  # a low not yet followed by a reading at or above the threshold
        self.mmol = cfg.get("units") == units.MMOLL

    def set_policy(self, d):
        """The edge's calibrated policy: {"permille", "persist", "refractory_min", "rising",
        "floor", "carb_hold_min", "urgent"} (all but "permille" optional). Values outside safe
        bounds are refused whole; returns True when it was taken."""
        v = lowrisk.policy_values(d, self.persist, self.refractory_ms // _MINUTE_MS,
                                  self.rise_hold, self.floor, self.carb_hold_ms // _MINUTE_MS,
                                  self.urgent)
        if self.alarm_permille is None or v is None:
            return False
        p, k, r, up, fl, hold, urg = v
        self.alarm_permille = p
        self.persist = k
        self.refractory_ms = r * _MINUTE_MS
        self.rise_hold = up
        self.floor = fl
        self.carb_hold_ms = hold * _MINUTE_MS
        self.urgent = urg
        # "model" when the edge had too few of the person's nights to calibrate the threshold
        self.policy_from = "model" if d.get("calibrated") is False else "edge"
        return True

    def set_carbs(self, t_ms):
        """When carbs were last entered (Unix ms), or None."""
        self.carbs_ms = t_ms

    def policy_text(self):
        """One status line: which predicted-low policy is active, e.g. "edge 900 x2 30m <80
        c45" (whose threshold in permille: the edge's calibration or the model's own; readings
        in a row, minutes apart, forecast floor in the clock's units, carb hold)."""
        if self.alarm_permille is None:
            return "trend line"
        out = "%s %d x%d %dm" % (self.policy_from, self.alarm_permille, self.persist,
                                 self.refractory_ms // _MINUTE_MS)
        if self.floor < 400:
            out += " <" + units.format_glucose(self.floor,
                                               units.MMOLL if self.mmol else units.MGDL)
        if self.carb_hold_ms:
            out += " c%d" % (self.carb_hold_ms // _MINUTE_MS)
        return out

    def carb_held(self, now_ms, forecast):
        """Carbs entered within the hold (or up to 10 minutes ahead of the clock) hold the
        predicted low off, unless the forecast is already below the urgent level."""
        c = self.carbs_ms
        if c is None or not self.carb_hold_ms:
            return False
        if not (-10 * _MINUTE_MS <= now_ms - c < self.carb_hold_ms):
            return False
        return forecast is None or forecast < 0 or forecast >= self.urgent

    def _predicted(self, good, now_ms, risk, forecast):
        """The model's predicted low under the policy: `persist` risky predictions in a row
        (counted once per reading, at most one per 5-minute slot as the edge calibrates them,
        so a 1-minute sensor does not sound 5 times as often; a pass between readings keeps
        the count) whose forecast is below the floor, not while glucose rises nor just after
        carbs, and not again within the refractory period once it has cleared."""
        t = good[-1][0]
        r = self._risk_t
        if r is None or t < r or t - r >= _PREDICT_GAP_MS:
            self._risk_t = t
            risky = risk >= self.alarm_permille
            if self.floor < 400 and forecast is not None and forecast >= 0:
                risky = risky and forecast < self.floor
            self._risky = self._risky + 1 if risky else 0
        if self._risky < self.persist:
            return False
        rate = alerts.slope(good, now_ms, 15)
        if rate is not None and rate > self.rise_hold:
            return False
        if good[-1][1] >= units.LOW and self.carb_held(now_ms, forecast):
            return False  # carbs never hold a prediction made in a low (the edge's carb_hold)
        if PREDICTED_LOW not in self.active:
            if self._predicted_at is not None and now_ms - self._predicted_at < self.refractory_ms:
                return False
            self._predicted_at = now_ms
        return True

    def _stale_after(self, good):
        """Minutes without a reading before STALE: the configured stale_min, or for a sensor
        that reads less often (a 15-minute Libre 2 in some regions) its interval and
        _LATE_MIN of delivery, so each reading's normal wait is not a stale blip (which also
        ended a snoozed low), and always under nodata_min."""
        n = len(good)
        if n < 2:  # one reading: its sensor's interval is not known yet
            return self.stale_min
        steps = sorted(good[k][0] - good[k - 1][0] for k in range(max(1, n - 4), n))
        interval = steps[len(steps) // 2] // _MINUTE_MS
        return min(max(self.stale_min, interval + _LATE_MIN), self.nodata_min - 1)

    def in_quiet_hours(self, local_min):
        if self.quiet is None:
            return False
        s, e = self.quiet
        if s < e:
            return s <= local_min < e
        return local_min >= s or local_min < e  # wraps midnight

    def _pattern(self, kind):
        if kind == URGENT_LOW:
            return SIREN
        if kind == NO_DATA:
            return SIREN if self.escalation >= 3 else URGENT
        if kind in (LOW, PREDICTED_LOW):
            return WARN
        if kind == STALE:
            return CHIRP
        return WARN

    def evaluate(self, readings, now_ms, local_min, risk=-1, forecast=None, heard_ms=None):
        """readings: (t_ms, sgv) oldest first, sensor error codes included; risk (permille)
        and forecast (mg/dL, -1 or None: none) from the clock's model; heard_ms, while the
        clock's time is not set, when the newest reading arrived (its age counts from then)."""
        active = []
        values = self.values
        held = values.get(PREDICTED_LOW) if PREDICTED_LOW in self.active else None
        for k in list(values):
            del values[k]
        self.escalation = 0
        good = alerts.valid(readings)
        last = self._last_now
        if self.started_ms is None:
            self.started_ms = now_ms
        elif last is not None and (now_ms < last or now_ms - last > _JUMP_MS):
            # the time was set (NTP after a power cut, from 2000): the time without data
            # counts from the same moment as before the jump, not from 2000
            self.started_ms += now_ms - last
        self._last_now = now_ms
        # sensor error codes are not data: age counts from the last real glucose value
        # (with none since the clock started, from its start: a clock that never hears
        # from the edge after a power cut must say so, not stay silent)
        since = good[-1][0] if good else readings[0][0] if readings else self.started_ms
        if not readings and not self.watch_from_start:
            since = now_ms  # a clock not set up yet (its config has errors) expects nothing
        elif readings and heard_ms is not None:
            since = heard_ms  # the time is not set: dates cannot be compared with it
        age = (now_ms - since) // _MINUTE_MS
        stale_min = self._stale_after(good)
        if age >= 2 * self.nodata_min:
            self.escalation = 3
        elif age >= self.nodata_min:
            self.escalation = 2
        elif age >= stale_min:
            self.escalation = 1
        if self.escalation >= 2:
            active.append(NO_DATA)
            values[NO_DATA] = age
        elif self.escalation == 1:
            active.append(STALE)
            values[STALE] = age
        # the newest row a sensor error code: lows go on from the last real value (below);
        # a prediction sounding stays, none starts, and high or rising wait for real values
        sensor_ok = bool(readings) and readings[-1][1] >= 39
        if self.escalation == 0 and good:
            # not stale yet: the newest value is current (a 15-minute sensor's reading is
            # the current one for its 15 minutes and a little delivery time)
            at = min(now_ms, good[-1][0] + alerts.CURRENT_MIN * _MINUTE_MS)
            r = alerts.urgent_low(good, at, self.urgent_low)
            if r is not None:
                active.append(URGENT_LOW)
                values[URGENT_LOW] = r[1]
            r = alerts.low(good, at, self.low)
            if r is not None and URGENT_LOW not in values:
                active.append(LOW)
                values[LOW] = r[1]
            if not active and not sensor_ok:
                if held is not None:
                    active.append(PREDICTED_LOW)
                    values[PREDICTED_LOW] = held
            elif not active:
                if self.alarm_permille is not None:
                    if self._predicted(good, now_ms, risk, forecast):
                        active.append(PREDICTED_LOW)
                        values[PREDICTED_LOW] = risk
                else:  # no on-device model installed: the shared straight-line rule
                    r = alerts.predicted_low(good, at, self.low)
                    if r is not None and not self.carb_held(now_ms, r[1]):
                        active.append(PREDICTED_LOW)
                        values[PREDICTED_LOW] = r[1]
            elif self.alarm_permille is not None and sensor_ok:
                # A low under way shows LOW, not a prediction; the policy still counts it as
                # the edge calibrates it (its refractory period starts), so the clock sounds
                # the predicted lows the edge's calibration counted, no others.
                self._predicted(good, now_ms, risk, forecast)
            r = alerts.high(good, at, self.high) if sensor_ok else None
            if r is not None:
                active.append(HIGH)
                values[HIGH] = r[1]
            r = alerts.rising_fast(good, at, self.rising) if sensor_ok else None
            if r is not None:
                active.append(RISING_FAST)
                values[RISING_FAST] = r[1]
        # An urgent low stays until a real reading at or above its threshold: a sensor error,
        # a stale sensor or a silent edge after it must not stop the siren.
        last = good[-1][1] if good else None
        self.urgent_open = URGENT_LOW in values or (
            self.urgent_open and last is not None and last < self.urgent_low)
        if self.urgent_open and URGENT_LOW not in values:
            values[URGENT_LOW] = last
        # So does a low (a sensor error or a silent edge after 62 mg/dL fell quiet until no data
        # at 30 minutes, muted as stale in quiet hours): it stays, shown as LOW, until then.
        self.low_open = not self.urgent_open and (LOW in values or (
            self.low_open and last is not None and last < self.low))
        if self.low_open and LOW not in values:
            values[LOW] = last
        # priority order
        self.active = [k for k in KINDS if k in values]
        # a snooze ends when its alarm clears, expires, or the alarm gets louder
        for k in list(self.snoozed):
            until, pat = self.snoozed[k]
            if k not in values or now_ms >= until or self._pattern(k) > pat:
                del self.snoozed[k]
        self.in_quiet = self.in_quiet_hours(local_min)
        self.shown = self.active[0] if self.active else None
        self.sounding = None
        self.pattern = SILENT
        for k in self.active:
            if k in self.snoozed:
                continue
            if self.in_quiet and k in self.mute and k not in URGENT_KINDS:
                continue
            self.sounding = k
            self.pattern = self._pattern(k)
            break
        return self.pattern

    def snooze(self, now_ms):
        """Button: silence what sounds now (urgent alarms for a shorter time). True if it did."""
        k = self.sounding
        if k is None:
            return False
        ms = self.urgent_snooze_ms if k in URGENT_KINDS else self.snooze_ms
        self.snoozed[k] = (now_ms + ms, self.pattern)
        self.sounding = None
        self.pattern = SILENT
        return True

    def snooze_left_min(self, kind, now_ms):
        s = self.snoozed.get(kind)
        if s is None:
            return 0
        return (s[0] - now_ms + _MINUTE_MS - 1) // _MINUTE_MS

    def label(self, kind):
        """Screen text of an active alarm, e.g. "URGENT LOW 48" or "NO DATA 41 min"."""
        v = self.values.get(kind)
        s = LABELS[kind]
        if kind in (NO_DATA, STALE):
            return "%s %d min" % (s, v)
        if kind == PREDICTED_LOW:
            return s
        if kind == RISING_FAST:
            return "%s %+.1f/min" % (s, v / units.MGDL_PER_MMOLL if self.mmol else v)
        return s
