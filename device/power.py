# Power: USB or battery, the clock's state kept in RTC memory across deep sleep, and a battery
# life estimate from the duty cycle (currents below, with where each figure comes from).

import json

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


# Average currents in microamps and durations in milliseconds of each part of a wake-up.
# ESP32-WROOM-32 datasheet: deep sleep with RTC timer 10 uA; modem sleep / CPU 80-240 MHz
# 20-68 mA; Wi-Fi RX ~100 mA, TX bursts up to 240 mA; a DHCP-cached reconnect plus MQTT
# CONNECT/SUBSCRIBE/retained message takes about 1.5-3 s at ~110 mA average (figure here 2.5 s).
# SSD1680 panels (GDEY029T94 spec): ~5 mA while refreshing, 0.6 s partial, 3 s full, ~1 uA
# asleep. Sensors: SHT4x 0.4 uA idle, one measurement ~0.3 mJ; BH1750 0.12 mA for 120 ms;
# SCD41 single shot 5 s at ~15 mA average (low-power use), I2S MEMS mic ~0.6 mA while on.
# Regulator quiescent current (e.g. ME6211) ~40 uA, battery divider 10 uA.
SLEEP_UA = const(10 + 40 + 10 + 2)  # ESP32 deep sleep + LDO + divider + panel/sensors idle
AWAKE_UA = const(30000)  # CPU on, radio off: app pass, rendering
WIFI_UA = const(110000)
WIFI_MS = const(2500)
APP_MS = const(400)  # one pass: alarms, draw, CRC
EPD_UA = const(5000)
EPD_PARTIAL_MS = const(600)
EPD_FULL_MS = const(3000)
SCD4X_UA = const(15000)
SCD4X_MS = const(5000)
MIC_UA = const(600)
MIC_MS = const(1000)  # a one-second level sample per wake
USABLE = 85  # percent of the rated capacity usable down to the brown-out voltage


def estimate(battery_mah, wake_s, wakes, partials, fulls, wifi_sessions, co2_reads,
             mic_reads, awake_ms_extra=0):
    """Battery life from a duty cycle counted over `wakes` wake-ups `wake_s` apart.
    Returns a dict: average current (uA), charge per day (mAh) and days on the cell."""
    if wakes <= 0:
        raise ValueError("the duty cycle needs at least one wake-up")
    period_ms = wakes * wake_s * 1000
    uas = 0  # microamp-milliseconds over the period
    awake = wakes * APP_MS + awake_ms_extra
    uas += awake * AWAKE_UA
    uas += wifi_sessions * WIFI_MS * WIFI_UA
    uas += partials * EPD_PARTIAL_MS * EPD_UA + fulls * EPD_FULL_MS * EPD_UA
    uas += co2_reads * SCD4X_MS * SCD4X_UA + mic_reads * MIC_MS * MIC_UA
    busy = awake + wifi_sessions * WIFI_MS
    uas += max(0, period_ms - busy) * SLEEP_UA
    avg_ua = uas // period_ms
    per_day_mah = avg_ua * 24 / 1000
    days = battery_mah * USABLE / 100 / per_day_mah
    return {"average_ua": avg_ua, "mah_per_day": round(per_day_mah, 2),
            "days": round(days, 1), "battery_mah": battery_mah, "wake_s": wake_s}


# -- state across deep sleep ---------------------------------------------------------------

_MAGIC = "NL1"


def save_state(clock, rtc):
    """The clock's readings, trend, snoozes and refresh counters into RTC memory (2 KB)."""
    a = clock.alarms
    snoozed = []
    for k in a.snoozed:
        snoozed.append([k, a.snoozed[k][0], a.snoozed[k][1]])
    st = {"m": _MAGIC, "r": clock.readings[-12:], "tr": clock.trend, "d": clock.delta,
          "s": snoozed, "p": clock.policy.partials, "c": clock.policy.last_crc,
          "src": clock.source, "st": a.started_ms, "u": a.urgent_open, "l": a.low_open}
    data = json.dumps(st)
    if len(data) > 2000:
        st["r"] = clock.readings[-6:]
        data = json.dumps(st)
    rtc.memory(data.encode())
    return len(data)


def restore_state(clock, rtc):
    """True when RTC memory held a state (a wake from deep sleep), which is now restored."""
    raw = rtc.memory()
    if not raw:
        return False
    try:
        st = json.loads(raw)
        if st.get("m") != _MAGIC:
            return False
        for t, sgv in st["r"]:
            clock.add_reading(t, sgv)
        clock.trend = st["tr"]
        clock.delta = st["d"]
        for k, until, pat in st["s"]:
            clock.alarms.snoozed[k] = (until, pat)
        clock.policy.partials = st["p"]
        clock.policy.last_crc = st["c"]
        clock.source = st["src"]
        # when the clock started hearing nothing, and an urgent low or a low not yet over (a
        # state written by an older firmware has none of them)
        clock.alarms.started_ms = st.get("st")
        clock.alarms.urgent_open = st.get("u") is True
        clock.alarms.low_open = st.get("l") is True
    except (ValueError, KeyError, TypeError):
        return False
    return True


def on_usb(vbus):
    """vbus: a Pin reading the USB 5 V through a divider (1 = powered by USB)."""
    return vbus() == 1


def battery_percent(mv):
    """Rough Li-ion state of charge from the cell voltage (3.3 V empty, 4.15 V full)."""
    if mv <= 3300:
        return 0
    if mv >= 4150:
        return 100
    return (mv - 3300) * 100 // 850
