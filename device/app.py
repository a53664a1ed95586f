# The clock app: glucose from the edge (MQTT) or the cloud (Nightscout poll) in, alarms and
# e-ink screens out. Pure state machine: the caller gives it the time and the hardware.

import gc
import json

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


from nightlink.device import alarms, render, ssd1680, tzrule
from nightlink.shared import alerts, codec, epoch, lowrisk, units

MAX_READINGS = const(75)  # 75 minutes of 1-minute readings (the model's hour), 6 h of 5-minute
_MINUTE_MS = const(60000)
_SLOT_MS = const(300000)  # CGM readings every 5 minutes
_OVERRIDE_MS = const(120000)  # a screen picked with the button stays this long
_MORNING_END_MIN = const(11 * 60)
_MORNING_MIN_SPAN = const(4 * 60 + 30)  # the morning screen lasts at least this long
_LAST_NIGHT_S = const(14 * 3600)  # a night that ended this long ago is still "last night"
_FUTURE_MS = const(300000)  # a reading dated further ahead of the clock is no reading
_LATEST_S = 4102444800  # 2100-01-01: no reading is dated later, whether the time is set or not
_SGV_MAX = const(1000)  # mg/dL: above any sensor's HIGH (error codes are 0-38)
_DELTA_MAX = const(1000)  # mg/dL between two readings: more is not a change (values 0-1000)
# The summary's figures the morning screen draws, each with the range it can hold (one
# outside is left out: "Asleep -1h59" or a time in range of 1e9 % misleads)
_SUMMARY_INTS = (("sleep_min", 0, 1440), ("efficiency_pct", 0, 100), ("lows", 0, 1000),
                 ("low_min", 0, 1440), ("tir_pct", 0, 100))


def _int_or_none(v):
    """A whole number from a JSON value (a finite number), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        return None
    if v > 1e9 or v < -1e9:
        return None
    return int(v)


def _glucose(value):
    """A reading's value as the feed sends it: mg/dL, or a sensor's error code under 39;
    ValueError for anything else (a negative, or above any sensor's range)."""
    v = int(value)
    if not 0 <= v <= _SGV_MAX:
        raise ValueError("sgv")
    return v


def _time_set(now_ms):
    """Whether the clock's own time has been set (before, it runs from 2000)."""
    return now_ms >= epoch.TIME_SET_S * 1000


def _clean_summary(d):
    """The night summary with only the fields the morning screen draws, each of its type (a
    field of the wrong type is left out, as if the edge had not sent it)."""
    out = {}
    night = d.get("night")
    if isinstance(night, str):
        out["night"] = night[:10]
    for k, lo, hi in _SUMMARY_INTS:
        v = _int_or_none(d.get(k))
        if v is not None and lo <= v <= hi:
            out[k] = v
    end = d.get("end_t")  # Unix seconds (past 1e9: not one of the small figures above)
    if not isinstance(end, bool) and isinstance(end, (int, float)) and 0 < end < 4294967296:
        out["end_t"] = int(end)
    curve = d.get("curve")
    if isinstance(curve, list):
        out["curve"] = [max(0, min(600, _int_or_none(x) or 0)) for x in curve[:96]]
    return out


def _cell(body, lo, hi):
    """The text of the cell body[lo:hi] without its quotes, spaces and line end."""
    while lo < hi and body[lo] in b' "':
        lo += 1
    while hi > lo and body[hi - 1] in b' "\r':
        hi -= 1
    return body[lo:hi]


def _whole(cell):
    """A whole number from a cell: digits at once, else the nearest to a decimal
    (Nightscout keeps what the uploader sent: 106.00000762939453)."""
    return int(cell) if cell.isdigit() else int(round(float(cell)))


def entries_text(body):
    """(date ms, sgv, trend 0-7) of Nightscout's tab-separated entries (`entries/sgv.txt`:
    "dateString" date sgv "direction" "device" a line, newest first). A line that does not
    read so is skipped: a bad one loses only itself. Read in place, without splitting the
    answer into lines and cells (the heap is the clock's scarcest resource)."""
    out = []
    if isinstance(body, str):
        body = body.encode()
    start, n = 0, len(body)
    while start < n:
        end = body.find(b"\n", start)
        if end < 0:
            end = n
        a = body.find(b"\t", start, end)
        b = body.find(b"\t", a + 1, end) if a >= 0 else -1
        c = body.find(b"\t", b + 1, end) if b >= 0 else -1
        if c >= 0:
            d = body.find(b"\t", c + 1, end)
            try:
                t_ms = _whole(_cell(body, a + 1, b))
                sgv = _whole(_cell(body, b + 1, c))
                trend = units.trend_of(_cell(body, c + 1, end if d < 0 else d).decode())
                if t_ms > 0 and 0 <= sgv <= _SGV_MAX:
                    out.append((t_ms, sgv, trend))
            except Exception:  # noqa: BLE001 - not a number, not UTF-8: not a reading
                pass
        start = end + 1
    return out


def iso_ms(text):
    """Unix ms of an ISO 8601 time as Nightscout's created_at writes it
    ("2026-01-15T21:05:00.000Z", "+01:00" or "+0100" instead of "Z", seconds optional);
    None for anything else."""
    if not isinstance(text, str) or len(text) < 16 or text[4] != "-" or text[10] not in "T ":
        return None
    try:
        mo, d, h, mi = int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16])
        if not (1 <= mo <= 12 and 1 <= d <= 31 and 0 <= h <= 23 and 0 <= mi <= 59):
            return None
        ms = (tzrule.days_from_civil(int(text[0:4]), mo, d) * 86400 + h * 3600
              + mi * 60) * 1000
        k = 16
        if len(text) > 18 and text[16] == ":":
            if not 0 <= int(text[17:19]) <= 60:
                return None
            ms += int(text[17:19]) * 1000
            k = 19
            if len(text) > 19 and text[19] == ".":
                k = 20
                while k < len(text) and "0" <= text[k] <= "9":
                    k += 1
                frac = text[20:k]
                if frac:
                    ms += int((frac + "00")[:3])
        zone = text[k:]
        if zone in ("Z", ""):  # no zone: Nightscout's created_at is UTC
            return ms
        if zone[0] in "+-" and len(zone) in (5, 6):
            off = (int(zone[1:3]) * 60 + int(zone[-2:])) * 60000
            return ms - off if zone[0] == "+" else ms + off
    except ValueError:
        pass
    return None


def newest_carbs(body):
    """When the newest treatment with carbs was entered (Unix ms, its `mills` else its
    created_at), in Nightscout's answer to treatments.json?find[carbs][$gt]=0&count=1 (the
    cloud fallback's); None when it lists none. An answer that is not a JSON list raises
    ValueError."""
    docs = json.loads(body)
    if not isinstance(docs, list):
        raise ValueError("not a list of treatments")
    for d in docs:
        if not isinstance(d, dict):
            continue
        try:
            if float(d.get("carbs") or 0) <= 0:
                continue
        except (TypeError, ValueError):
            continue
        t = d.get("mills")
        if isinstance(t, (int, float)) and t > 0:
            return int(t)
        t = iso_ms(d.get("created_at"))
        if t is not None:
            return t
    return None


class Hardware:
    """What the app drives; every part may be None (tests, the emulator's headless mode)."""

    def __init__(self, panel=None, annunciator=None):
        self.panel = panel
        self.annunciator = annunciator


class Clock:
    def __init__(self, cfg, errors=(), hw=None, usb=True):
        self.cfg = cfg
        self.errors = list(errors)
        self.hw = hw or Hardware()
        self.tz = tzrule.Tz(cfg["tz"])
        self.model = lowrisk.LowRisk()  # the on-device predicted-low model
        self.history = [0] * lowrisk.HISTORY
        self._counts = [0] * lowrisk.HISTORY  # readings per slot (1-minute sensors' means)
        self.alarms = alarms.Alarms(cfg, lowrisk.ALARM_PERMILLE, lowrisk.FORECAST_FLOOR_MGDL,
                                    lowrisk.CARB_HOLD_MIN, lowrisk.URGENT_MGDL)
        # A clock with no network to get data from (not set up yet: no Wi-Fi or broker in its
        # config) does not sound NO DATA for it; any other config error still lets it run.
        self.alarms.watch_from_start = bool(cfg.get("wifi")) and bool(
            (cfg.get("mqtt") or {}).get("host") or cfg.get("cloud"))
        self.readings = []  # (t_ms, sgv) oldest first, sensor error codes included
        self.trend = 0
        self.delta = None
        self.source = ""
        self.summary = None
        self.risk = -1
        self._rev = 0  # bumped whenever the readings change
        self._hkey = None  # what the last prediction was made from (step)
        self.link = {}  # status lines the main loop keeps current (wifi, broker, outbox ...)
        self.battery_pct = -1
        self.usb = usb
        self.buf, self.fb = render.new_buffer()
        self.view = render.View()
        self.view.unit = cfg["units"]
        pw = cfg["power"]
        self.policy = ssd1680.RefreshPolicy(60000, pw["full_refresh_every"])
        self.override = None  # (screen, until_ms) chosen with the button
        self.frames = 0  # screens drawn (changed images)
        self.refreshes = 0
        self.last_message_ms = None
        self.heard_ms = None  # when the newest real reading arrived (the clock's running time)
        self.bad_messages = 0  # messages dropped as unusable
        self.refused_ahead = 0  # readings dated ahead of the clock

    # -- glucose in ------------------------------------------------------------------------

    def add_reading(self, t_ms, sgv, trend=None, delta=None):
        """One CGM reading (Unix ms, mg/dL or error code < 39); older duplicates ignored."""
        r = self.readings
        if r and t_ms <= r[-1][0]:
            for i in range(len(r)):  # backfill: insert in order unless already there
                if r[i][0] == t_ms:
                    return False
                if r[i][0] > t_ms:
                    r.insert(i, (t_ms, sgv))
                    break
            else:
                r.append((t_ms, sgv))
        else:
            r.append((t_ms, sgv))
            if trend is not None:
                self.trend = trend
            self.delta = delta
        while len(r) > MAX_READINGS:
            r.pop(0)
        self._rev += 1
        return True

    def _newest_real(self):
        """Time of the newest reading that is glucose (not a sensor error code), or None."""
        for t, sgv in reversed(self.readings):
            if sgv >= units.SGV_MIN_VALID:
                return t
        return None

    def _heard_if_new(self, before, now_ms):
        """Note the arrival of a new newest real reading (not a retained one delivered again
        at a reconnect, nor an error code: neither is new data)."""
        if self._newest_real() != before:
            self.heard_ms = now_ms

    def ahead(self, t_ms, now_ms):
        """Whether a reading is dated ahead of the clock (an uploader with a wrong clock):
        taken, it would stand as the newest and hide the real ones until its time came. Once
        the clock's own time is set (before, every reading looks ahead, so only one after
        2100 is); readings taken before then are looked at again when it is (drop_ahead)."""
        if t_ms > _LATEST_S * 1000:
            return True
        return _time_set(now_ms) and t_ms > now_ms + _FUTURE_MS

    def drop_ahead(self, now_ms):
        """Drop readings dated ahead of the clock, once its time is set: one taken while it
        ran from 2000 (a power cut, no network time yet) stood as the newest, "0 min ago",
        and held off every low alarm until its date came."""
        r = self.readings
        if not r or not _time_set(now_ms) or r[-1][0] <= now_ms + _FUTURE_MS:
            return
        while r and r[-1][0] > now_ms + _FUTURE_MS:
            r.pop()
            self.refused_ahead += 1
        self.trend = 0  # the arrow and change were the dropped reading's
        self.delta = self._delta5()
        self._rev += 1

    def on_glucose(self, body, source, now_ms):
        """The edge's retained JSON (see edge/sync/clock_feed.py): {"t": Unix s, "sgv", "trend",
        "delta", "recent": [[t, sgv], ...]}. Returns False for a message it cannot use: not
        JSON, not an object, a field of the wrong type or out of range (1e999), a reading
        dated ahead of the clock. Nothing in a message can stop the clock."""
        try:
            d = json.loads(body)
            if not isinstance(d, dict):
                return False
            before = self._newest_real()
            # the message's own reading is checked whole before anything of it is taken: a
            # bad one sent with `recent` pairs still sounded their low
            t = int(d["t"]) * 1000
            sgv = _glucose(d["sgv"])
            trend = int(d.get("trend", 0))
            delta = d.get("delta")
            if delta is not None:
                delta = int(delta)  # a 401-digit delta stopped every render (safe mode)
                if not -_DELTA_MAX <= delta <= _DELTA_MAX:
                    delta = None  # derived from a spurious reading: the reading still counts
            if not 0 <= trend <= 9:
                trend = 0  # an arrow Nightscout does not have: none drawn
            if self.ahead(t, now_ms):
                self.refused_ahead += 1
                return False
            for pair in d.get("recent") or ():
                pt = int(pair[0]) * 1000
                if not self.ahead(pt, now_ms):
                    self.add_reading(pt, _glucose(pair[1]))
            newest = self.readings[-1][0] if self.readings else None
            self.add_reading(t, sgv, trend, delta)
            if newest is None or t >= newest:  # an older message (redelivered) changes nothing
                policy = d.get("alarm")
                if isinstance(policy, dict):
                    self.alarms.set_policy(policy)  # the edge's calibrated predicted-low policy
                carbs = d.get("carbs_t")  # when carbs were last entered: holds predicted lows
                if carbs is None or isinstance(carbs, (int, float)):
                    self.alarms.set_carbs(None if carbs is None else int(carbs) * 1000)
        except Exception:  # noqa: BLE001 - any malformed message is dropped, never fatal
            self.bad_messages += 1
            return False
        self.source = source
        self.last_message_ms = now_ms
        self._heard_if_new(before, now_ms)
        return True

    def on_summary(self, body):
        try:
            d = json.loads(body)
        except Exception:  # noqa: BLE001 - not JSON (or too deep): dropped
            self.bad_messages += 1
            return False
        if not isinstance(d, dict):
            self.bad_messages += 1
            return False
        self.summary = _clean_summary(d)
        return True

    def on_entries(self, entries, now_ms):
        """(date ms, sgv, trend) readings, newest first (the cloud fallback's
        entries_text); the delta is the newest reading's change from one 4.5-6 minutes
        before it, per 5 minutes, when there is one."""
        n = 0
        before = self._newest_real()
        for i in range(len(entries) - 1, -1, -1):
            t_ms, sgv, trend = entries[i]
            if self.ahead(t_ms, now_ms):
                continue
            if self.add_reading(t_ms, sgv, trend, None):
                n += 1
        if n:
            self.delta = self._delta5()
            self.source = "cloud"
            self.last_message_ms = now_ms
            self._heard_if_new(before, now_ms)
        return n

    def _delta5(self):
        r = self.readings
        if not r or r[-1][1] < units.SGV_MIN_VALID:
            return None
        for i in range(len(r) - 2, -1, -1):
            gap = r[-1][0] - r[i][0]
            if gap > 360000:
                return None
            if gap >= 270000 and r[i][1] >= units.SGV_MIN_VALID:
                return int(round((r[-1][1] - r[i][1]) * 300000 / gap))  # per 5 minutes
        return None

    def on_message(self, topic, msg, now_ms):
        """MQTT callback glue: the edge's clock feed topics (shared/topics.py)."""
        if isinstance(topic, bytes):
            try:
                topic = topic.decode()
            except Exception:  # noqa: BLE001 - not UTF-8: not one of ours
                return False
        if topic.endswith("/glucose"):
            return self.on_glucose(msg, "LAN", now_ms)
        if topic.endswith("/night"):
            return self.on_summary(msg)
        return False

    # -- the predicted-low model -----------------------------------------------------------

    def _history_key(self, now_ms):
        """What _fill_history's result depends on: the readings, and whether the newest valid
        one is fresh (then the grid ends at it), else the minute (the grid ends now)."""
        r = self.readings
        for i in range(len(r) - 1, -1, -1):
            if r[i][1] >= units.SGV_MIN_VALID:
                if 0 <= now_ms - r[i][0] < 3 * _SLOT_MS:
                    return self._rev
                break
        return (self._rev, now_ms // _MINUTE_MS)

    def _fill_history(self, now_ms):
        """The model's hour of readings ending at the newest (shared/lowrisk.fill_history), in
        buffers allocated once. Run only when that changes (step)."""
        return lowrisk.fill_history(self.readings, now_ms, self.history, self._counts)

    # -- input -----------------------------------------------------------------------------

    def button(self, now_ms):
        """Snooze what sounds; otherwise show the next screen for two minutes."""
        if self.alarms.snooze(now_ms):
            self._sound(now_ms)
            return "snooze"
        cur = self.view.screen
        nxt = {"night": "morning", "morning": "status", "status": "night"}[cur]
        self.override = (nxt, now_ms + _OVERRIDE_MS)
        return nxt

    # -- the pass --------------------------------------------------------------------------

    def local_min(self, now_ms):
        h, m = self.tz.hm(now_ms // 1000)
        return h * 60 + m

    def step(self, now_ms):
        """One pass: alarms, sound, view, and a panel refresh if the image changed."""
        self.drop_ahead(now_ms)
        if self.model is not None:
            key = self._history_key(now_ms)
            if key != self._hkey:  # a new reading, or a minute on while none is fresh
                self._hkey = key
                self.risk = self.model.predict(self._fill_history(now_ms))
        lm = self.local_min(now_ms)
        self.alarms.evaluate(self.readings, now_ms, lm, self.risk,
                             self.model.forecast if self.model is not None else None,
                             heard_ms=self._heard(now_ms))
        self._sound(now_ms)
        self._update_view(now_ms, lm)
        self.render_now(now_ms)
        gc.collect()

    def _sound(self, now_ms):
        a = self.hw.annunciator
        if a is not None:
            a.set(self.alarms.pattern, now_ms)

    def _screen(self, now_ms, lm):
        if self.override is not None:
            if now_ms < self.override[1]:
                return self.override[0]
            self.override = None
        if self.alarms.active:
            return "night"
        if self.errors:
            return "status"
        q = self.alarms.quiet
        morning_start = q[1] if q is not None else 6 * 60 + 30
        # until 11:00, and at least 4.5 hours (quiet hours ending later: a day sleeper's)
        span = max(_MORNING_END_MIN - morning_start, _MORNING_MIN_SPAN)
        if self.summary and (lm - morning_start) % 1440 < span and self._last_night(now_ms):
            return "morning"
        return "night"

    def _last_night(self, now_ms):
        """Whether the summary is of the night just gone (one kept from days ago, the edge
        down since, is no "last night"), once the clock's time is set."""
        night = self.summary.get("night")
        if not _time_set(now_ms) or night is None:
            return False
        s = now_ms // 1000
        end = self.summary.get("end_t")
        if end is not None:  # the edge says when it ended: a day sleeper's too
            return 0 <= s - end < _LAST_NIGHT_S
        return night == epoch.night_of(s, self.tz.offset(s))

    def _heard(self, now_ms):
        """While the clock's own time is not set (a power cut, no network time yet), when the
        newest real reading first arrived, on the clock's running time: the readings' dates
        cannot be compared with that time, so their age counts from their arrival (a reading
        kept from before the cut is stale 15 minutes later, not current for ever, however
        often the broker delivers it again). None once set."""
        if _time_set(now_ms):
            return None
        return self.heard_ms if self.heard_ms is not None else self.alarms.started_ms

    def _update_view(self, now_ms, lm):
        v = self.view
        a = self.alarms
        v.screen = self._screen(now_ms, lm)
        v.now_hm = (lm // 60, lm % 60)
        good = alerts.valid(self.readings)
        last = self.readings[-1] if self.readings else None
        if last is not None and last[1] < units.SGV_MIN_VALID:
            v.sgv = last[1]  # a sensor error is shown as an error
            v.last_hm = self.tz.hm(last[0] // 1000)
        elif good:
            v.sgv = good[-1][1]
            v.last_hm = self.tz.hm(good[-1][0] // 1000)
        else:
            v.sgv = None
            v.last_hm = None
        heard = self._heard(now_ms)
        if good:
            v.age_min = max(0, (now_ms - (good[-1][0] if heard is None else heard)) // _MINUTE_MS)
        else:
            v.age_min = 0
        if a.escalation >= 2:
            v.freshness = render.NODATA
        elif a.escalation == 1:
            v.freshness = render.STALE
        else:
            v.freshness = render.FRESH
        v.trend = self.trend
        v.delta = self.delta
        v.risk = self.risk
        v.quiet = a.in_quiet
        v.source = self.source
        v.battery_pct = self.battery_pct
        k = a.shown
        v.alarm = a.label(k) if k is not None else None
        v.alarm_urgent = k in alarms.URGENT_KINDS
        v.snoozed_min = a.snooze_left_min(k, now_ms) if k is not None else 0
        if v.alarm is not None and k != a.sounding and v.snoozed_min == 0 and a.in_quiet:
            v.alarm += "  (quiet)"
        v.summary = self.summary
        v.errors = self.errors
        if v.screen == "status":
            lines = [("Config", "%d error(s)" % len(self.errors) if self.errors else "ok")]
            for key in ("Wi-Fi", "Broker", "Cloud", "Last sync", "Outbox"):
                if key in self.link:
                    lines.append((key, self.link[key]))
            lines.append(("Low alarm", a.policy_text()))
            v.status = lines

    def render_now(self, now_ms):
        """Draw the view; hand the image to the panel when the refresh policy allows."""
        render.draw(self.fb, self.buf, self.view)
        crc = codec.crc32(self.buf)
        kind = self.policy.decide(crc, now_ms)
        if kind is None:
            return False
        self.frames += 1
        p = self.hw.panel
        if p is not None:
            p.show(self.buf, kind == ssd1680.FULL)
        self.refreshes += 1
        return True
