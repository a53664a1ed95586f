# The clock's one JSON config (schema in device/CONFIG.md): defaults, and a validator whose
# every error is one sentence naming the key. Runs under MicroPython and CPython.

import json

from nightlink.device import tzrule
from nightlink.shared import topics, units

MUTABLE = ("high", "rising_fast", "stale", "low", "predicted_low")
NEVER_MUTED = ("urgent_low", "no_data")

DEFAULTS = {
    "version": 1,
    "device": {"id": "000000000000", "name": "Nightlink clock", "tenant": "default"},
    "wifi": [],
    "mqtt": {"host": "", "port": 1883, "user": None, "password": None, "tls": False},
    "cloud": None,
    "units": units.MGDL,
    "tz": "UTC0",
    "thresholds": {"urgent_low": units.VERY_LOW, "low": units.LOW, "high": units.VERY_HIGH,
                   "rising_fast": 3.0, "stale_min": units.STALE_MIN,
                   "nodata_min": units.URGENT_STALE_MIN},
    "quiet_hours": None,
    "alarms": {"snooze_min": 30, "urgent_snooze_min": 10},
    "pins": {"buzzer": 25, "led": 2, "button": 0, "sda": 21, "scl": 22, "epd_sck": 18,
             "epd_mosi": 23, "epd_cs": 5, "epd_dc": 17, "epd_rst": 16, "epd_busy": 4,
             "i2s_sck": 32, "i2s_ws": 33, "i2s_sd": 34, "vbus": 36, "battery": 35},
    "sensors": {"temp": "sht4x", "light": "bh1750", "co2": "scd4x", "mic": True},
    "power": {"battery_mah": 2000, "full_refresh_every": 10, "wake_s": 300},
}
_QUIET_MUTE = ["high", "rising_fast", "stale"]

# key: (low, high) in mg/dL (rates in mg/dL/min; minutes are unit-free)
# (tuples, not dicts: MicroPython dicts do not keep insertion order, errors must)
_GLUCOSE_LIMITS = (("urgent_low", 40, 90), ("low", 40, 150), ("high", 120, 400),
                   ("rising_fast", 1, 10))
_GLUCOSE_KEYS = ("urgent_low", "low", "high", "rising_fast")
_MINUTE_LIMITS = (("stale_min", 5, 60), ("nodata_min", 6, 180))
_TOP = ("version", "device", "wifi", "mqtt", "cloud", "units", "tz", "thresholds",
        "quiet_hours", "alarms", "pins", "sensors", "power")
_SENSOR_CHOICES = (("temp", ("sht4x", "bme280", "none")), ("light", ("bh1750", "none")),
                   ("co2", ("scd4x", "none")))


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _fmt(x):
    if x == int(x):
        return "%d" % x
    return ("%.2f" % x).rstrip("0").rstrip(".")


def _hhmm(v):
    """Minutes after midnight of "HH:MM", or -1."""
    if not isinstance(v, str) or len(v) != 5 or v[2] != ":":
        return -1
    h, m = v[:2], v[3:]
    if not (h.isdigit() and m.isdigit()) or int(h) > 23 or int(m) > 59:
        return -1
    return int(h) * 60 + int(m)


def _unknown(errs, section, d, allowed):
    for k in sorted(d):
        if k not in allowed:
            errs.append("%s%s is not a known key." % (section, k))


def _dict(errs, cfg, key, required):
    v = cfg.get(key)
    if v is None:
        if required:
            errs.append("%s is missing; it must be an object." % key)
        return None
    if not isinstance(v, dict):
        errs.append("%s must be an object." % key)
        return None
    return v


def _to_mgdl(value, unit):
    return value * units.MGDL_PER_MMOLL if unit == units.MMOLL else value


def _threshold_defaults(unit):
    """DEFAULTS["thresholds"] in `unit`: a clock in mmol/L that names only some thresholds (or
    none, as `device provision --units mmol/L` writes it) gets the others in mmol/L too, not
    the mg/dL numbers read as mmol/L (54 mmol/L: an urgent low alarm for every reading)."""
    out = dict(DEFAULTS["thresholds"])
    if unit == units.MMOLL:
        for k in _GLUCOSE_KEYS:
            out[k] = out[k] / units.MGDL_PER_MMOLL
    return out


def validate(cfg):
    """Every problem in cfg as one sentence naming its key; [] when the config is usable."""
    errs = []
    if not isinstance(cfg, dict):
        return ["The config must be a JSON object."]
    _unknown(errs, "", cfg, _TOP)
    if cfg.get("version") != 1:
        errs.append("version must be 1.")
    dev = _dict(errs, cfg, "device", True)
    if dev is not None:
        _unknown(errs, "device.", dev, ("id", "name", "tenant"))
        try:
            topics.check_name("tenant", dev.get("tenant"))
        except topics.TopicError as e:
            errs.append("device.tenant is not valid: %s" % e)
        did = dev.get("id")
        if not isinstance(did, str) or len(did) != 12 or not all(
                c in "0123456789abcdef" for c in did):
            errs.append("device.id must be the clock's 12 lowercase hex digits (its wire id).")
        name = dev.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 32):
            errs.append("device.name must be text of at most 32 characters.")
    wifi = cfg.get("wifi")
    if not isinstance(wifi, list) or not 1 <= len(wifi) <= 8:
        errs.append("wifi must be a list of 1 to 8 networks.")
    else:
        for i in range(len(wifi)):
            w = wifi[i]
            if not isinstance(w, dict):
                errs.append("wifi[%d] must be an object with ssid and password." % i)
                continue
            _unknown(errs, "wifi[%d]." % i, w, ("ssid", "password"))
            s = w.get("ssid")
            if not isinstance(s, str) or not 1 <= len(s) <= 32:
                errs.append("wifi[%d].ssid must be text of 1 to 32 characters." % i)
            p = w.get("password", "")
            if not isinstance(p, str) or (p and not 8 <= len(p) <= 63):
                errs.append("wifi[%d].password must be empty (open network) or 8 to 63 "
                            "characters." % i)
    mq = _dict(errs, cfg, "mqtt", True)
    if mq is not None:
        _unknown(errs, "mqtt.", mq, ("host", "port", "user", "password", "tls"))
        h = mq.get("host")
        if not isinstance(h, str) or not h or " " in h:
            errs.append("mqtt.host must be the edge broker's host name or address.")
        port = mq.get("port", 1883)
        if not _int(port) or not 1 <= port <= 65535:
            errs.append("mqtt.port must be a whole number between 1 and 65535.")
        u, pw = mq.get("user"), mq.get("password")
        if (u is None) != (pw is None):
            errs.append("mqtt.user and mqtt.password must be given together.")
        elif u is not None and not (isinstance(u, str) and isinstance(pw, str) and u):
            errs.append("mqtt.user and mqtt.password must be text.")
        if not isinstance(mq.get("tls", False), bool):
            errs.append("mqtt.tls must be true or false.")
    cl = cfg.get("cloud")
    if cl is not None:
        if not isinstance(cl, dict):
            errs.append("cloud must be an object with url and api_secret, or null.")
        else:
            _unknown(errs, "cloud.", cl, ("url", "api_secret"))
            url = cl.get("url")
            if not isinstance(url, str) or not (url.startswith("http://")
                                                or url.startswith("https://")):
                errs.append("cloud.url must start with http:// or https://.")
            sec = cl.get("api_secret")
            if not isinstance(sec, str) or len(sec) < 12:
                errs.append("cloud.api_secret must be text of 12 characters or more.")
    unit = cfg.get("units", units.MGDL)
    if unit not in (units.MGDL, units.MMOLL):
        errs.append('units must be "mg/dL" or "mmol/L".')
        unit = units.MGDL
    tz = cfg.get("tz", "UTC0")
    try:
        tzrule.Tz(tz)
    except tzrule.TzError as e:
        errs.append("tz must be a POSIX TZ string such as CET-1CEST,M3.5.0,M10.5.0/3 (%s)." % e)
    th = _dict(errs, cfg, "thresholds", False)
    if th is not None:
        _unknown(errs, "thresholds.", th, DEFAULTS["thresholds"])
        n0 = len(errs)
        for k, lo, hi in _GLUCOSE_LIMITS:
            if k not in th:
                continue
            v = th[k]
            per = "/min" if k == "rising_fast" else ""
            if not _num(v) or not lo <= _to_mgdl(v, unit) <= hi:
                if unit == units.MMOLL:
                    lo, hi = lo / units.MGDL_PER_MMOLL, hi / units.MGDL_PER_MMOLL
                errs.append("thresholds.%s must be a number between %s and %s %s%s."
                            % (k, _fmt(lo), _fmt(hi), unit, per))
        for k, lo, hi in _MINUTE_LIMITS:
            if k in th:
                if not _int(th[k]) or not lo <= th[k] <= hi:
                    errs.append("thresholds.%s must be a whole number of minutes between "
                                "%d and %d." % (k, lo, hi))
        if len(errs) == n0:
            t = merged(_threshold_defaults(unit), th)
            if _num(t["urgent_low"]) and _num(t["low"]) and _num(t["high"]):
                ul, lw, hg = (_to_mgdl(t["urgent_low"], unit), _to_mgdl(t["low"], unit),
                              _to_mgdl(t["high"], unit))
                if not ul <= lw < hg:
                    errs.append("thresholds.low must lie between thresholds.urgent_low and "
                                "thresholds.high.")
            if _int(t["stale_min"]) and _int(t["nodata_min"]):
                if t["nodata_min"] <= t["stale_min"]:
                    errs.append("thresholds.nodata_min must be more than "
                                "thresholds.stale_min.")
    qh = cfg.get("quiet_hours")
    if qh is not None:
        if not isinstance(qh, dict):
            errs.append("quiet_hours must be an object with start and end, or null.")
        else:
            _unknown(errs, "quiet_hours.", qh, ("start", "end", "mute"))
            for k in ("start", "end"):
                if _hhmm(qh.get(k)) < 0:
                    errs.append('quiet_hours.%s must be a local time "HH:MM".' % k)
            mute = qh.get("mute", _QUIET_MUTE)
            if not isinstance(mute, list):
                errs.append("quiet_hours.mute must be a list of alarm names.")
            else:
                for m in mute:
                    if m in NEVER_MUTED:
                        errs.append("quiet_hours.mute may not hold %s: it always sounds." % m)
                    elif m not in MUTABLE:
                        errs.append("quiet_hours.mute holds %r; allowed: %s."
                                    % (m, ", ".join(MUTABLE)))
    al = _dict(errs, cfg, "alarms", False)
    if al is not None:
        _unknown(errs, "alarms.", al, DEFAULTS["alarms"])
        for k, lo, hi in (("snooze_min", 5, 120), ("urgent_snooze_min", 5, 30)):
            if k in al and (not _int(al[k]) or not lo <= al[k] <= hi):
                errs.append("alarms.%s must be a whole number of minutes between %d and %d."
                            % (k, lo, hi))
    pins = _dict(errs, cfg, "pins", False)
    if pins is not None:
        _unknown(errs, "pins.", pins, DEFAULTS["pins"])
        for k in sorted(pins):
            if k in DEFAULTS["pins"] and (not _int(pins[k]) or not 0 <= pins[k] <= 39):
                errs.append("pins.%s must be a GPIO number between 0 and 39." % k)
    se = _dict(errs, cfg, "sensors", False)
    if se is not None:
        _unknown(errs, "sensors.", se, DEFAULTS["sensors"])
        for k, choices in _SENSOR_CHOICES:
            if k in se and se[k] not in choices:
                errs.append("sensors.%s must be one of %s." % (k, ", ".join(choices)))
        if not isinstance(se.get("mic", True), bool):
            errs.append("sensors.mic must be true or false.")
    pw = _dict(errs, cfg, "power", False)
    if pw is not None:
        _unknown(errs, "power.", pw, DEFAULTS["power"])
        for k, lo, hi in (("battery_mah", 100, 20000), ("full_refresh_every", 1, 100),
                          ("wake_s", 60, 900)):
            if k in pw and (not _int(pw[k]) or not lo <= pw[k] <= hi):
                errs.append("power.%s must be a whole number between %d and %d." % (k, lo, hi))
    return errs


def merged(default, given):
    out = {}
    for k in default:
        out[k] = default[k]
    if isinstance(given, dict):
        for k in given:
            if k in default:
                out[k] = given[k]
    return out


def with_defaults(cfg, errs):
    """cfg over DEFAULTS, section by section; a section with an error keeps its defaults."""
    if not isinstance(cfg, dict):
        cfg = {}
    bad = {}
    for e in errs:
        bad[e.split(" ")[0].split(".")[0].split("[")[0]] = True
    unit = cfg.get("units", DEFAULTS["units"])
    if "units" in bad or unit not in (units.MGDL, units.MMOLL):
        unit = DEFAULTS["units"]
    out = {}
    for k in DEFAULTS:  # in no set order under MicroPython
        d = _threshold_defaults(unit) if k == "thresholds" else DEFAULTS[k]
        v = cfg.get(k, d)
        if k in bad:
            v = d
        if isinstance(d, dict) and isinstance(v, dict):
            v = merged(d, v)
        out[k] = v
    qh = out["quiet_hours"]
    if isinstance(qh, dict) and "mute" not in qh:
        qh = merged({"start": None, "end": None, "mute": _QUIET_MUTE}, qh)
        out["quiet_hours"] = qh
    return out


def load(path):
    """(config with defaults, [error sentences]); never raises for a bad or missing file."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        errs = ["The config file %s is missing: provision the clock." % path]
        return with_defaults({}, errs), errs
    except ValueError:  # UnicodeError: a byte that is not UTF-8 (it stopped the boot)
        errs = ["The config file %s is not valid JSON (it is not UTF-8 text)." % path]
        return with_defaults({}, errs), errs
    try:
        cfg = json.loads(text)
    except ValueError:
        errs = ["The config file %s is not valid JSON." % path]
        return with_defaults({}, errs), errs
    errs = validate(cfg)
    return with_defaults(cfg, errs), errs


def mgdl(cfg, key):
    """A threshold in mg/dL (rates in mg/dL/min) whatever the configured unit."""
    v = cfg["thresholds"][key]
    if key in _GLUCOSE_KEYS:
        return _to_mgdl(v, cfg["units"])
    return v


def quiet_minutes(cfg):
    """(start, end) minutes after local midnight, or None."""
    qh = cfg.get("quiet_hours")
    if not isinstance(qh, dict):
        return None
    s, e = _hhmm(qh.get("start")), _hhmm(qh.get("end"))
    if s < 0 or e < 0 or s == e:
        return None
    return (s, e)
