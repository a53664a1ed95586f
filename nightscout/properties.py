"""API v2 properties: what Nightscout's plugins compute from the stored documents, for clocks
and watch apps (M5_NightscoutMon reads iob, cob, delta, basal and loop; nightguard bgnow,
delta, iob, cob and upbat; Spike also pump, openaps, cage, sage, iage, bage).

Computed per request from the site's recent documents (Nightscout keeps a snapshot rebuilt
every minute; the answer is the same within that minute). Shapes and the rules that choose a
source follow Nightscout's plugins: IOB and COB come from a Loop or OpenAPS device status of
the last 30 minutes when there is one, else from treatments (insulin with Nightscout's
bilinear curve and the profile's DIA; carbs absorbed linearly at the profile's carbs_hr after
20 minutes, a simplification of Nightscout's COB model, say so in docs/nightscout.md).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfoNotFoundError

from nightlink.nightscout import documents, times
from nightlink.nightscout.store import DocumentStore
from nightlink.shared import units

MIN = 60_000
HOUR = 60 * MIN
ARROWS = {"DoubleUp": ("⇈", "&#8648;"), "SingleUp": ("↑", "&#8593;"),
          "FortyFiveUp": ("↗", "&#8599;"), "Flat": ("→", "&#8594;"),
          "FortyFiveDown": ("↘", "&#8600;"), "SingleDown": ("↓", "&#8595;"),
          "DoubleDown": ("⇊", "&#8650;"), "TripleUp": ("⤊", "&#10506;"),
          "TripleDown": ("⤋", "&#10507;"), "NONE": ("⇼", "&#8700;"),
          "RATE OUT OF RANGE": ("⇕", "&#8661;")}
NAMES = ("bgnow", "delta", "buckets", "direction", "upbat", "iob", "cob", "pump", "openaps",
         "loop", "basal", "cage", "sage", "iage", "bage", "runtimestate")
_SECRET_KEYS = {"apnsKey", "apnsKeyId", "developerTeamId", "userName", "password", "obscured",
                "obscureDeviceProvenance"}


def compute(docs: DocumentStore, now_ms: int, *, mmol: bool = False,
            names: list[str] | None = None) -> dict:
    """The properties asked for (all when names is None), in Nightscout's order."""
    wanted = [n for n in NAMES if names is None or n in names]
    data = _Data(docs, now_ms)
    out: dict[str, Any] = {}
    for name in wanted:
        value = _PROPERTIES[name](data, mmol)
        if value is not None:
            out[name] = value
    return _clean(out)


def _clean(value: Any) -> Any:
    """Without the secrets a stored document may hold, and with null for a number that is
    not finite (no stored document can make the reply invalid JSON)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in _SECRET_KEYS}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


MAX_DOSE_U = 1000.0  # a bolus above this is no dose (an uploader's 1e308): left out
MAX_CARBS_G = 10000.0


def _setting(data: _Data, key: str, at_ms: int, lo: float, hi: float, default: float) -> float:
    """A profile schedule's value at a time when it lies in [lo, hi], else the default."""
    value = data.profile.value(key, at_ms)
    return value if isinstance(value, int | float) and lo <= value <= hi else default


class _Data:
    """The recent documents the properties read, loaded once per request."""

    def __init__(self, docs: DocumentStore, now_ms: int):
        self.now = now_ms
        self.sgvs = [_sgv(r.doc, r.oid) for r in docs.latest(
            documents.ENTRIES, kind="sgv", count=48, lo=now_ms - 4 * HOUR, hi=now_ms)]
        self.sgvs = [s for s in self.sgvs if s is not None]
        self.statuses = [r.doc | {"mills": r.date_ms} for r in
                         docs.latest(documents.DEVICESTATUS, count=300, lo=now_ms - 6 * HOUR,
                                     hi=now_ms + 5 * MIN)]
        self.treatments = [r.doc | {"mills": r.date_ms, "_id": r.oid} for r in
                           docs.latest(documents.TREATMENTS, count=2000, lo=now_ms - 24 * HOUR,
                                       hi=now_ms)]
        self.ages = {}
        for event in ("Site Change", "Sensor Start", "Sensor Change", "Insulin Change",
                      "Pump Battery Change"):
            rows = docs.latest(documents.TREATMENTS, kind=event, count=1, lo=now_ms - 62 * 24 * HOUR,
                               hi=now_ms)
            self.ages[event] = rows[0].doc | {"mills": rows[0].date_ms} if rows else None
        profiles = docs.latest(documents.PROFILE, count=1)
        self.profile = _Profile(profiles[0].doc if profiles else None, self.treatments, now_ms)


def _sgv(doc: dict, oid: str | None) -> dict | None:
    value, date = doc.get("sgv"), doc.get("date")
    if not isinstance(value, int | float) or not isinstance(date, int | float):
        return None
    return {"_id": oid, "mgdl": value, "mills": int(date),
            "device": doc.get("device"), "direction": doc.get("direction"),
            "type": "sgv"}


def _scaled(mgdl: float, mmol: bool) -> float | str:
    return f"{units.to_mmoll(mgdl):.1f}" if mmol else mgdl


# -- bgnow, delta, buckets, direction -------------------------------------------------------------


def _buckets(data: _Data, mmol: bool) -> list[dict]:
    if not data.sgvs:
        return []
    last = data.sgvs[0]["mills"]
    out = []
    for i in range(4):
        to_ms = last + 150_000 - i * 5 * MIN
        from_ms = to_ms - 5 * MIN
        inside = [s for s in data.sgvs if from_ms <= s["mills"] < to_ms
                  and s["mills"] <= data.now]
        bucket: dict[str, Any] = {"index": i, "fromMills": from_ms, "toMills": to_ms}
        if not inside:
            bucket["isEmpty"] = True
        else:
            valid = [s["mgdl"] for s in inside if s["mgdl"] >= 39]
            errors = [s for s in inside if s["mgdl"] < 39]
            if valid:
                bucket["mean"] = sum(valid) / len(valid)
                bucket["last"] = inside[0]["mgdl"]
            if errors:
                bucket["errors"] = errors
            bucket["mills"] = inside[0]["mills"]
            bucket["sgvs"] = [dict(s, scaled=_scaled(s["mgdl"], mmol)) for s in inside]
        out.append(bucket)
    return out


def _plain(bucket: dict) -> dict:
    return {k: v for k, v in bucket.items() if k not in ("index", "fromMills", "toMills")}


def bgnow(data: _Data, mmol: bool) -> dict:
    for bucket in _buckets(data, mmol):
        if not bucket.get("isEmpty"):
            return _plain(bucket)
    return {}


def delta(data: _Data, mmol: bool) -> dict | None:
    filled = [b for b in _buckets(data, mmol) if not b.get("isEmpty") and "mean" in b]
    if len(filled) < 2 or filled[0]["index"] != 0:
        return None
    recent, previous = filled[0], filled[1]
    elapsed = (recent["mills"] - previous["mills"]) / MIN
    absolute = recent["mean"] - previous["mean"]
    interpolated = elapsed > 9
    mean5 = recent["mean"] - absolute / elapsed * 5 if interpolated and elapsed else \
        previous["mean"]
    mgdl = round(recent["mean"] - mean5)
    if mmol:
        scaled: float = round(units.to_mmoll(recent["mean"]) - units.to_mmoll(mean5), 1)
    else:
        scaled = mgdl
    return {"absolute": absolute, "elapsedMins": elapsed, "interpolated": interpolated,
            "mean5MinsAgo": mean5, "times": {"recent": recent["mills"],
                                             "previous": previous["mills"]},
            "mgdl": mgdl, "scaled": scaled,
            "display": f"+{scaled}" if scaled >= 0 else f"{scaled}", "previous": _plain(previous)}


def buckets(data: _Data, mmol: bool) -> list[dict]:
    return _buckets(data, mmol)


def direction(data: _Data, mmol: bool) -> dict | None:
    if not data.sgvs or data.now - data.sgvs[0]["mills"] > 15 * MIN:
        return None
    value = data.sgvs[0].get("direction")
    label, entity = (ARROWS.get(value) if isinstance(value, str) else None) or ("-", "&#45;")
    return {"display": None, "value": value, "label": label, "entity": entity}


# -- device status ----------------------------------------------------------------------------


def upbat(data: _Data, mmol: bool) -> dict:
    recent = [s for s in data.statuses if (isinstance(s.get("uploader"), dict) or type(
        s.get("uploaderBattery")) in (int, float))  # (the old Android uploader's battery)
              and data.now - s["mills"] <= 30 * MIN]
    if not recent:
        return {"display": "?%", "devices": {}}
    devices: dict[str, dict] = {}
    for status in recent:  # newest first
        uri = str(status.get("device") or "uploader")
        info = _battery(status)
        dev = devices.setdefault(uri, {"name": uri.split("://")[-1], "uri": uri,
                                       "statuses": [], "min": None})
        dev["statuses"].append({"uploader": info, "created_at": status.get("created_at"),
                                "mills": status["mills"], "_id": status.get("_id")})
        if data.now - status["mills"] <= 10 * MIN and (
                dev["min"] is None or (info.get("value") or 0) < (dev["min"].get("value") or 0)):
            dev["min"] = info
    lowest = None
    for dev in devices.values():
        dev["min"] = dev["min"] or dev["statuses"][0]["uploader"]
        if lowest is None or (dev["min"].get("value") or 0) < (lowest.get("value") or 0):
            lowest = dev["min"]
    lowest = lowest or {}
    return {"level": lowest.get("level"), "display": lowest.get("display", "?%"),
            "status": lowest.get("status", "current"), "devices": devices, "min": lowest}


def _battery(status: dict) -> dict:
    up = status.get("uploader")
    up = up if isinstance(up, dict) else {}  # (an uploader's name there: "xdrip")
    battery = up.get("battery", status.get("uploaderBattery"))
    voltage = up.get("batteryVoltage")
    info: dict[str, Any] = {"value": battery if isinstance(battery, int | float) else None}
    if isinstance(battery, int | float) and not isinstance(battery, bool):
        info["display"] = f"{int(battery)}%"
        info["level"] = 100 if battery >= 95 else 75 if battery >= 55 else \
            50 if battery >= 30 else 25
        info["status"] = "urgent" if battery < 20 else "warn" if battery < 30 else "current"
    elif isinstance(voltage, int | float):
        volts = voltage / 1000 if voltage > 1000 else voltage
        info["display"] = f"{volts:.3f}v"
        info["status"] = "current"
    else:
        info["display"] = "?%"
    if up.get("isCharging") or status.get("isCharging"):
        info["display"] += "⚡"
    return info


def _recent_status(data: _Data, key: str, minutes: int = 30) -> dict | None:
    for status in data.statuses:  # (an uploader's `loop: "x"` is no Loop status)
        if isinstance(status.get(key), dict) \
                and data.now - 30 * MIN <= status["mills"] <= data.now + 5 * MIN \
                and data.now - status["mills"] <= minutes * MIN:
            return status
    return None


def iob(data: _Data, mmol: bool) -> dict:
    result: dict[str, Any] | None = None
    loop = _recent_status(data, "loop")
    openaps = _recent_status(data, "openaps")
    if loop and isinstance(loop["loop"].get("iob"), dict):
        value = loop["loop"]["iob"].get("iob")
        if isinstance(value, int | float):
            result = {"iob": value, "source": "Loop", "device": loop.get("device"),
                      "mills": loop["mills"]}
    elif openaps and isinstance(openaps["openaps"], dict):
        entry = openaps["openaps"].get("iob")
        entry = entry[0] if isinstance(entry, list) and entry else entry
        if isinstance(entry, dict) and isinstance(entry.get("iob"), int | float):
            result = {"iob": entry["iob"], "basaliob": entry.get("basaliob"),
                      "activity": entry.get("activity"), "source": "OpenAPS",
                      "device": openaps.get("device"), "mills": openaps["mills"]}
    if result is None:
        result = _pump_iob(data)
    care = _treatment_iob(data)
    if result is None:
        if care is None:
            return {}
        result = care
    elif care is not None and care["iob"]:
        result["treatmentIob"] = care["iob"]
    result["iob"] = round(result["iob"], 3)
    result["display"] = f"{result['iob']:.2f}" if result["iob"] else "0"
    result["displayLine"] = f"IOB: {result['display']}U"
    return result


def _pump_iob(data: _Data) -> dict | None:
    """The insulin on board the newest recent pump status reports itself (`pump.iob`: MiniMed
    Connect's bridge sends `bolusiob`), Nightscout's third source after Loop and OpenAPS;
    never an older status's when the newest says 0 or nothing usable."""
    for status in data.statuses:  # newest first
        if not data.now - 30 * MIN <= status["mills"] <= data.now + 5 * MIN:
            continue
        pump = status.get("pump")
        held = pump.get("iob") if isinstance(pump, dict) else None
        if not isinstance(held, dict):
            continue
        numbers = [v for v in (held.get("iob"), held.get("bolusiob"))
                   if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
        if not numbers:
            return None
        value = next((v for v in numbers if v), 0)  # Nightscout's `iob || bolusiob`, or a 0
        out = {"iob": value, "device": status.get("device"), "mills": status["mills"]}
        if "connect" in status:
            out["source"] = "MM Connect"
        return out
    return None


def _treatment_iob(data: _Data) -> dict | None:
    """Insulin on board from the careportal's doses; 0 (not nothing) when there are
    treatments but no insulin among them, as Nightscout gives it (LaMetric hides a 0)."""
    if not data.treatments:
        return None
    doses = [t for t in data.treatments if isinstance(t.get("insulin"), int | float)
             and 0 < t["insulin"] <= MAX_DOSE_U]
    if not doses:
        return {"iob": 0, "activity": 0, "lastBolus": None, "source": "Care Portal"}
    total = activity = 0.0
    last_bolus = None
    for t in doses:
        dia = _setting(data, "dia", t["mills"], 0.5, 24.0, 3.0)  # hours
        sens = _setting(data, "sens", t["mills"], 0.0, 1000.0, 0.0)
        contrib, act = bilinear(t["insulin"], data.now - t["mills"], dia, sens)
        if contrib > 0 and last_bolus is None:
            last_bolus = t
        total += contrib
        activity += act
    return {"iob": round(total, 3), "activity": activity, "lastBolus": last_bolus,
            "source": "Care Portal"}


def bilinear(insulin: float, age_ms: int, dia: float, sens: float) -> tuple[float, float]:
    """Nightscout's insulin-on-board curve (peak 75 min, scaled to the DIA): (iob, activity)."""
    if age_ms < 0:
        return 0.0, 0.0
    scale = 3.0 / dia
    peak = 75
    minutes = scale * age_ms / MIN
    if minutes < peak:
        x1 = minutes / 5 + 1
        return (insulin * (1 - 0.001852 * x1 * x1 + 0.001852 * x1),
                sens * insulin * (2 / dia / 60 / peak) * minutes)
    if minutes < 180:
        x2 = (minutes - 75) / 5
        return (insulin * (0.001323 * x2 * x2 - 0.054233 * x2 + 0.55556),
                sens * insulin * (2 / dia / 60 - (minutes - peak) * 2 / dia / 60 / (180 - peak)))
    return 0.0, 0.0


def cob(data: _Data, mmol: bool) -> dict:
    if data.profile.doc is None:
        return {}
    result = None
    loop = _recent_status(data, "loop", 10)
    openaps = _recent_status(data, "openaps", 10)
    if loop and isinstance(loop["loop"].get("cob"), dict) \
            and isinstance(loop["loop"]["cob"].get("cob"), int | float):
        result = {"cob": loop["loop"]["cob"]["cob"], "source": "Loop",
                  "device": loop.get("device"), "mills": loop["mills"]}
    elif openaps and isinstance(openaps["openaps"], dict):
        for part in ("enacted", "suggested"):
            found = openaps["openaps"].get(part)
            if isinstance(found, dict) and isinstance(found.get("COB"), int | float):
                result = {"cob": found["COB"], "source": "OpenAPS",
                          "device": openaps.get("device"), "mills": openaps["mills"]}
                break
    if result is None:
        result = _treatment_cob(data)
    result["cob"] = round(result["cob"], 1) if result["cob"] else 0
    result["display"] = result["cob"]
    result["displayLine"] = f"COB: {result['cob']}g"
    return result


def _treatment_cob(data: _Data) -> dict:
    total = 0.0
    last = None
    delay = 20 * MIN
    for t in data.treatments:
        carbs = t.get("carbs")
        if not isinstance(carbs, int | float) or not 0 < carbs <= MAX_CARBS_G:
            continue
        rate = _setting(data, "carbs_hr", t["mills"], 1.0, 1000.0, 30.0)
        absorbed = max(0.0, (data.now - t["mills"] - delay) / HOUR * rate)
        left = max(0.0, carbs - absorbed)
        if left > 0 and last is None:
            last = t
        total += left
    return {"cob": total, "lastCarbs": last, "source": "Care Portal",
            "carbs_hr": data.profile.value("carbs_hr", data.now) or 30}


def pump(data: _Data, mmol: bool) -> dict:
    status = next((s for s in data.statuses if isinstance(s.get("pump"), dict)
                   and data.now - s["mills"] <= 120 * MIN), None)
    if status is None:
        return {"data": {"level": -3, "title": "Pump Status"}}
    p = status["pump"]
    out = dict(status)
    reservoir = p.get("reservoir")
    battery = p.get("battery") if isinstance(p.get("battery"), dict) else {}
    clock = times.try_ms(p.get("clock"))
    dat: dict[str, Any] = {
        "level": 0, "title": "Pump Status", "manufacturer": p.get("manufacturer"),
        "model": p.get("model"), "extended": p.get("extended"),
        "clock": None if clock is None else {
            "value": times.iso(clock), "label": "Last Clock",
            "display": f"{max(0, (data.now - clock) // MIN)}m ago", "level": 0},
        "reservoir": None if not isinstance(reservoir, int | float) else {
            "value": reservoir, "label": "Reservoir", "display": f"{reservoir:.3g}U",
            "level": 0},
        "device": {"label": "Device", "display": status.get("device")},
    }
    if "percent" in battery:
        dat["battery"] = {"value": battery["percent"], "unit": "percent", "label": "Battery",
                          "display": f"{battery['percent']}%", "level": 0}
    elif "voltage" in battery:
        dat["battery"] = {"value": battery["voltage"], "unit": "volts", "label": "Battery",
                          "display": f"{battery['voltage']}v", "level": 0}
    if isinstance(p.get("status"), dict):
        text = p["status"].get("status") or ("suspended" if p["status"].get("suspended")
                                              else "normal")
        dat["status"] = {"value": text, "display": text, "label": "Status"}
    out["clockMills"] = clock
    out["data"] = dat
    return out


def loop(data: _Data, mmol: bool) -> dict:
    loops = [s for s in data.statuses if isinstance(s.get("loop"), dict)
             and times.try_ms(s["loop"].get("timestamp")) is not None]
    out: dict[str, Any] = {"lastLoop": None, "lastEnacted": None, "lastPredicted": None,
                           "lastOkMoment": None}
    display = {"symbol": "⚠", "code": "warning", "label": "Warning"}
    if loops:
        last = loops[0]["loop"]
        moment = times.iso(times.try_ms(last["timestamp"]))
        out["lastLoop"] = {**last, "moment": moment}
        enacted = next((s["loop"]["enacted"] for s in loops
                        if isinstance(s["loop"].get("enacted"), dict)), None)
        out["lastEnacted"] = enacted
        out["lastPredicted"] = next((s["loop"]["predicted"] for s in loops
                                     if isinstance(s["loop"].get("predicted"), dict)), None)
        ok = next((s["loop"] for s in loops if not s["loop"].get("failureReason")), None)
        out["lastOkMoment"] = times.iso(times.try_ms(ok["timestamp"])) if ok else None
        recent = data.now - times.try_ms(last["timestamp"]) <= 15 * MIN
        if last.get("failureReason") or (isinstance(last.get("enacted"), dict)
                                         and last["enacted"].get("received") is False):
            display = {"symbol": "x", "code": "error", "label": "Error"}
        elif recent and isinstance(last.get("enacted"), dict):
            display = {"symbol": "⌁", "code": "enacted", "label": "Enacted"}
        elif recent and isinstance(last.get("recommendedTempBasal"), dict):
            display = {"symbol": "⏀", "code": "recommendation", "label": "Recomendation"}
        elif recent:
            display = {"symbol": "↻", "code": "looping", "label": "Looping"}
    override = next((s["override"] for s in data.statuses
                     if isinstance(s.get("override"), dict)), None)
    if override is not None:
        out["lastOverride"] = override
    out["display"] = display
    return out


def openaps(data: _Data, mmol: bool) -> dict:
    found = [s for s in data.statuses if isinstance(s.get("openaps"), dict)]
    out: dict[str, Any] = {"seenDevices": {}, "lastEnacted": None, "lastNotEnacted": None,
                           "lastSuggested": None, "lastIOB": None, "lastMMTune": None,
                           "lastPredBGs": None}
    status = {"symbol": "⚠", "code": "warning", "label": "Warning"}
    for s in found:  # newest first
        o = s["openaps"]
        dev = str(s.get("device") or "openaps")
        out["seenDevices"].setdefault(dev, {"name": dev.split("://")[-1], "uri": dev})
        enacted, suggested = o.get("enacted"), o.get("suggested")
        if isinstance(enacted, dict):
            if enacted.get("received") or enacted.get("recieved"):
                out["lastEnacted"] = out["lastEnacted"] or enacted
            else:
                out["lastNotEnacted"] = out["lastNotEnacted"] or enacted
        if isinstance(suggested, dict):
            out["lastSuggested"] = out["lastSuggested"] or suggested
        if out["lastIOB"] is None and o.get("iob") is not None:
            out["lastIOB"] = o["iob"][0] if isinstance(o["iob"], list) and o["iob"] else o["iob"]
    last = out["lastEnacted"] or out["lastSuggested"]
    if isinstance(last, dict):
        out["lastPredBGs"] = last.get("predBGs")
        out["lastEventualBG"] = last.get("eventualBG")
        moment = times.try_ms(last.get("timestamp") or last.get("deliverAt"))
        if moment is not None:
            out["lastLoopMoment"] = times.iso(moment)
            if data.now - moment <= 15 * MIN:
                status = ({"symbol": "⌁", "code": "enacted", "label": "Enacted"}
                          if last is out["lastEnacted"] else
                          {"symbol": "↻", "code": "looping", "label": "Looping"})
    out["status"] = status
    return out


# -- profile and basal ----------------------------------------------------------------------------


class _Profile:
    """The active profile (the newest profile document, or a Profile Switch to one of its
    named profiles), with its schedules read at a time of day in its time zone."""

    def __init__(self, doc: dict | None, treatments: list[dict], now_ms: int):
        self.doc = doc
        self.active: dict = {}
        if doc is None:
            return
        store = doc.get("store") if isinstance(doc.get("store"), dict) else {}
        name = doc.get("defaultProfile")
        name = name if isinstance(name, str) else None  # a list or object names nothing
        for t in treatments:  # newest first
            if t.get("eventType") == "Profile Switch" and isinstance(t.get("profile"), str) \
                    and t["profile"] in store:
                duration = t.get("duration")
                if not isinstance(duration, int | float) or duration <= 0 or \
                        t["mills"] + duration * MIN > now_ms:
                    name = t["profile"]
                break
        self.active = store.get(name) if isinstance(store.get(name), dict) else (
            next((p for p in store.values() if isinstance(p, dict)), {}) if store else doc)
        try:
            self.zone = times.zone_named(str(self.active.get("timezone") or "UTC"))
        except ZoneInfoNotFoundError:
            self.zone = UTC

    def value(self, key: str, at_ms: int) -> float | None:
        """A schedule's value at a time (a number, or the entry in force at that time)."""
        found = self.active.get(key) if self.active else None
        if isinstance(found, int | float):
            return float(found)
        if not isinstance(found, list) or not found:
            return None
        local = datetime.fromtimestamp(at_ms / 1000, tz=UTC).astimezone(self.zone)
        second = local.hour * 3600 + local.minute * 60 + local.second
        best = None
        for item in found:
            if not isinstance(item, dict):
                continue
            start = item.get("timeAsSeconds")
            if not isinstance(start, int | float):
                text = str(item.get("time", "00:00"))
                try:
                    hours, minutes = text.split(":")[:2]
                    start = int(hours) * 3600 + int(minutes) * 60
                except ValueError:
                    start = 0
            value = documents.to_number(item.get("value"))
            if start <= second and isinstance(value, int | float):
                best = float(value)
        if best is None:
            first = documents.to_number(found[0].get("value")) if isinstance(found[0], dict) else None
            best = float(first) if isinstance(first, int | float) else None
        return best


def basal(data: _Data, mmol: bool) -> dict | None:
    scheduled = data.profile.value("basal", data.now)
    if scheduled is None:
        return None
    temp = None
    for t in data.treatments:  # newest first
        if t.get("eventType") == "Temp Basal" and isinstance(t.get("duration"), int | float) \
                and t["mills"] <= data.now < t["mills"] + t["duration"] * MIN:
            temp = t
            break
    current: dict[str, Any] = {"basal": scheduled}
    total = scheduled
    if temp is not None:
        current["treatment"] = temp
        if isinstance(temp.get("absolute"), int | float):
            total = temp["absolute"]
        elif isinstance(temp.get("percent"), int | float):
            total = scheduled * (100 + temp["percent"]) / 100
        current["tempbasal"] = total
    current["combobolusbasal"] = 0
    current["totalbasal"] = total
    mark = "T: " if temp is not None else ""
    return {"display": f"{mark}{total:.3f}U", "current": current}


def _age(data: _Data, event: str, warn_hours: int, urgent_hours: int) -> dict:
    found = data.ages.get(event)
    if found is None:
        return {"found": False, "display": "n/a ", "level": 0}
    age_h = (data.now - found["mills"]) / HOUR
    hours = math.floor(age_h)
    level = 2 if age_h >= urgent_hours else 1 if age_h >= warn_hours else 0
    return {"found": True, "age": hours, "treatmentDate": found["mills"],
            "days": hours // 24, "hours": hours % 24, "notes": found.get("notes"),
            "minFractions": round((age_h - hours) * 60), "level": level,
            "display": f"{hours}h", "displayLong": f"{hours // 24}d{hours % 24}h"}


def cage(data: _Data, mmol: bool) -> dict:
    return _age(data, "Site Change", 48, 72)


def iage(data: _Data, mmol: bool) -> dict:
    return _age(data, "Insulin Change", 96, 120)


def bage(data: _Data, mmol: bool) -> dict:
    return _age(data, "Pump Battery Change", 312, 336)


def sage(data: _Data, mmol: bool) -> dict:
    start = _age(data, "Sensor Start", 164, 166)
    change = _age(data, "Sensor Change", 164, 166)
    newest = "Sensor Change" if change["found"] and (
        not start["found"] or change["treatmentDate"] >= start["treatmentDate"]) \
        else "Sensor Start"
    return {"Sensor Start": start, "Sensor Change": change, "min": newest}


def runtimestate(data: _Data, mmol: bool) -> dict:
    return {"state": "loaded"}


_PROPERTIES = {"bgnow": bgnow, "delta": delta, "buckets": buckets, "direction": direction,
               "upbat": upbat, "iob": iob, "cob": cob, "pump": pump, "openaps": openaps,
               "loop": loop, "basal": basal, "cage": cage, "sage": sage, "iage": iage,
               "bage": bage, "runtimestate": runtimestate}
