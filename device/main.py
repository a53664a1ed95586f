# The clock's entry point on the board (runs after boot.py): hardware from the config's pins,
# one MQTT link for the edge's feed and the outbox sync, a watchdog, safe mode after 3 failures.

import gc
import time

import machine

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


from nightlink.device import boot_guard, config
from nightlink.shared import epoch

_WDT_MS = const(30000)
_KEEPALIVE_S = const(60)
_WIFI_BOOT_MS = const(10000)  # per network: how long the start waits for Wi-Fi before NTP
_SAMPLE_EVERY = const(5)  # passes (about a second each) between room samples
_HTTP_TIMEOUT_S = const(10)  # the cloud fallback's request: never longer (the watchdog: 30)
_NTP_EVERY = const(60)  # passes between tries to set the time while it is not set
_NTP_KNOWN_EVERY = const(3600)  # ... while the RTC or the edge gave it but NTP never answered
_EDGE_TIME_SLACK_S = const(2)  # the edge's time is taken when the RTC is further off


def _hardware(cfg):
    from nightlink.device import annunciator, app, ssd1680

    p = cfg["pins"]
    spi = machine.SPI(1, baudrate=4000000, sck=machine.Pin(p["epd_sck"]),
                      mosi=machine.Pin(p["epd_mosi"]))
    panel = ssd1680.SSD1680(spi, machine.Pin(p["epd_cs"], machine.Pin.OUT, value=1),
                            machine.Pin(p["epd_dc"], machine.Pin.OUT),
                            machine.Pin(p["epd_rst"], machine.Pin.OUT),
                            machine.Pin(p["epd_busy"], machine.Pin.IN))
    panel.init()
    pwm = machine.PWM(machine.Pin(p["buzzer"]), freq=2700, duty_u16=0)

    def buzz(on):
        pwm.duty_u16(32768 if on else 0)

    ann = annunciator.Annunciator(buzz, machine.Pin(p["led"], machine.Pin.OUT))
    return app.Hardware(panel, ann)


def _link(cfg):
    """The clock's one MQTT link: one client under the clock's id, the config's networks."""
    import network
    from umqtt.simple import MQTTClient, MQTTException

    from nightlink.device import mqtt_link

    m = cfg["mqtt"]
    return mqtt_link.MqttLink(MQTTClient, "nl-clock-" + cfg["device"]["id"], m["host"],
                              m["port"], user=m.get("user"), password=m.get("password"),
                              tls=m.get("tls", False), keepalive_s=_KEEPALIVE_S,
                              wlan=network.WLAN(network.STA_IF), networks=cfg["wifi"],
                              refused=MQTTException)


def _start_wifi(link, networks, wdt):
    """Give Wi-Fi a few seconds at start, so the clock's time is set before anything else."""
    t0 = time.ticks_ms()
    wait = _WIFI_BOOT_MS * len(networks)  # no networks (not provisioned): no wait
    while not link.join_wifi(epoch.unix_now() * 1000):
        if time.ticks_diff(time.ticks_ms(), t0) > wait:
            return False
        wdt.feed()  # up to 10 s per network: longer than the watchdog's 30 s with several
        time.sleep_ms(100)
    return True


def _http_get(url, headers):
    import requests  # mpremote mip install requests

    r = requests.get(url, headers=headers, timeout=_HTTP_TIMEOUT_S)
    try:
        return r.status_code, r.content
    finally:
        r.close()


def _room(cfg, link, root):
    """The room epochs' outbox, its sync over the link and the sensors the config names."""
    from nightlink.device import clock_sync, outbox, sensors
    from nightlink.shared import features

    p = cfg["pins"]
    s = cfg["sensors"]
    i2c = machine.I2C(0, scl=machine.Pin(p["scl"]), sda=machine.Pin(p["sda"]))
    probes = {}
    if s["temp"] == "sht4x":
        probes["temp"] = sensors.SHT4x(i2c)
    elif s["temp"] == "bme280":
        probes["temp"] = sensors.BME280(i2c)
    if s["light"] == "bh1750":
        probes["light"] = sensors.BH1750(i2c)
    if s["co2"] == "scd4x":
        probes["co2"] = sensors.SCD4x(i2c)
    if s["mic"]:
        i2s = machine.I2S(0, sck=machine.Pin(p["i2s_sck"]), ws=machine.Pin(p["i2s_ws"]),
                          sd=machine.Pin(p["i2s_sd"]), mode=machine.I2S.RX, bits=32,
                          format=machine.I2S.MONO, rate=16000, ibuf=8192)
        probes["mic"] = sensors.MicLevel(i2s)
    box = outbox.Outbox(root + "outbox.bin", protected=(features.CGM,))
    dev = cfg["device"]
    sync = clock_sync.ClockSync(box, link, dev["tenant"], dev["id"])
    boot = int.from_bytes(machine.unique_id()[-2:], "little") ^ (epoch.unix_now() & 0xFFFF)
    return sync, sensors.RoomEpochs(box, dev["id"], boot), probes


def _sample(probes):
    t = rh = lux = co2 = noise = None
    if "temp" in probes:
        t, rh = probes["temp"].read()
    if "light" in probes:
        lux = probes["light"].read()
    if "co2" in probes:
        co2 = probes["co2"].read()[0]
    if "mic" in probes:
        noise = probes["mic"].read()
    return (t, rh, lux, co2, noise)


def safe_mode(guard, errors, root="/"):
    """Status screen only: no app, no alarms logic that crashed; the button leaves it."""
    from nightlink.device import app

    cfg, _ = config.load(root + "config.json")
    c = app.Clock(cfg, ["Safe mode: the clock failed to start %d times." % guard.failed]
                  + list(errors), _hardware(cfg))
    btn = machine.Pin(cfg["pins"]["button"], machine.Pin.IN, machine.Pin.PULL_UP)
    c.step(epoch.unix_now() * 1000)
    while btn() == 1:
        time.sleep_ms(200)
    guard.reset()
    machine.reset()


def main(root="/", passes=-1):
    """Start the clock and run its loop: forever on the board; `passes` > 0 stops it after
    that many passes and returns (runner, room) so a test can look at what was wired."""
    guard = boot_guard.BootGuard(root + "bootcount")
    cfg, errors = config.load(root + "config.json")
    if guard.starting():
        safe_mode(guard, errors, root)
        return None
    wdt = machine.WDT(timeout=_WDT_MS)
    from nightlink.device import app, runtime

    hw = _hardware(cfg)
    vbus = machine.Pin(cfg["pins"]["vbus"], machine.Pin.IN)
    clock = app.Clock(cfg, errors, hw, usb=vbus() == 1)
    link = _link(cfg)
    ntp = [_start_wifi(link, cfg["wifi"], wdt) and _set_time()]

    def edge_time(unix_s):
        # A LAN with no NTP server: the edge's time, until NTP answers (it is then preferred).
        if not ntp[0] and abs(unix_s - epoch.unix_now()) > _EDGE_TIME_SLACK_S:
            _set_rtc(unix_s)

    sync, room, probes = _room(cfg, link, root)
    runner = runtime.Runner(clock, link, _http_get if cfg.get("cloud") else None, sync=sync,
                            wdt=wdt, set_time=edge_time)
    btn = machine.Pin(cfg["pins"]["button"], machine.Pin.IN, machine.Pin.PULL_UP)
    pressed = False
    n = 0
    gc.collect()
    while n != passes:
        now = epoch.unix_now() * 1000
        down = btn() == 0
        if down and not pressed:
            clock.button(now)
        pressed = down
        runner.step(now)
        if hw.annunciator is not None:
            for i in range(20):  # one second of alarm pattern between passes
                hw.annunciator.tick(epoch.unix_now() * 1000 + i * 50)
                time.sleep_ms(50)
        if n % _SAMPLE_EVERY == 0:
            room.add(now // 1000, _sample(probes))
        every = _NTP_EVERY if epoch.unix_now() < epoch.TIME_SET_S else _NTP_KNOWN_EVERY
        if not ntp[0] and n % every == 0 and link.wifi_connected():
            ntp[0] = _set_time()  # Wi-Fi came late after a power cut, or no NTP on this LAN
        n += 1
        guard.healthy(n)
    return runner, room


def _set_time():
    """Set the RTC from NTP; True when NTP answered. Until the time is known (from NTP, the
    edge, or an RTC set before a soft reset) readings' ages, quiet hours and the shown time
    are wrong, so the loop tries again every minute while Wi-Fi is up, and every hour while
    only the RTC or the edge gave the time."""
    try:
        import ntptime

        ntptime.settime()
        return True
    except Exception:  # noqa: BLE001 - no NTP module, no answer, a bad reply
        return False


def _set_rtc(unix_s):
    """Set the board's RTC to Unix seconds (as ntptime does: UTC, weekday 1 = Monday)."""
    y, mo, d, h, mi, s = epoch.gmtime(unix_s)
    machine.RTC().datetime((y, mo, d, (unix_s // 86400 + 3) % 7 + 1, h, mi, s, 0))


if __name__ == "__main__":
    main()
