# The clock's entry point on the board (runs after boot.py): hardware from the config's pins,
# the app in runtime.Runner, a watchdog, and safe mode after three failed starts.

import gc
import time

import epoch
import machine

import boot_guard
import config

_CONFIG = "/config.json"
_WDT_MS = 30000


def _hardware(cfg):
    import annunciator
    import app
    import ssd1680

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


def _wifi(cfg):
    import network

    w = network.WLAN(network.STA_IF)
    w.active(True)
    for net in cfg["wifi"]:
        w.connect(net["ssid"], net.get("password", ""))
        for _ in range(100):
            if w.isconnected():
                return w
            time.sleep_ms(100)
    return w


def _client(cfg):
    from umqtt.simple import MQTTClient

    m = cfg["mqtt"]
    return MQTTClient("nl-clock-" + cfg["device"]["id"], m["host"], m["port"],
                      user=m.get("user"), password=m.get("password"), keepalive=60,
                      ssl=m.get("tls", False))


def _http_get(url, headers):
    import requests  # mpremote mip install requests

    r = requests.get(url, headers=headers)
    try:
        return r.status_code, r.content
    finally:
        r.close()


def _room(cfg):
    """The room epochs' outbox, its MQTT sync and the sensors the config names."""
    import features

    import clock_sync
    import outbox
    import sensors

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
    box = outbox.Outbox("/outbox.bin", protected=(features.CGM,))
    dev = cfg["device"]
    sync = clock_sync.ClockSync(box, lambda: _client(cfg), dev["tenant"], dev["id"])
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


def safe_mode(guard, errors):
    """Status screen only: no app, no alarms logic that crashed; the button leaves it."""
    import app

    cfg, _ = config.load(_CONFIG)
    c = app.Clock(cfg, ["Safe mode: the clock failed to start %d times." % guard.failed]
                  + list(errors), _hardware(cfg))
    btn = machine.Pin(cfg["pins"]["button"], machine.Pin.IN, machine.Pin.PULL_UP)
    c.step(epoch.unix_now() * 1000)
    while btn() == 1:
        time.sleep_ms(200)
    guard.reset()
    machine.reset()


def main():
    guard = boot_guard.BootGuard()
    cfg, errors = config.load(_CONFIG)
    if guard.starting():
        safe_mode(guard, errors)
        return
    wdt = machine.WDT(timeout=_WDT_MS)
    import app
    import runtime

    hw = _hardware(cfg)
    vbus = machine.Pin(cfg["pins"]["vbus"], machine.Pin.IN)
    clock = app.Clock(cfg, errors, hw, usb=vbus() == 1)
    w = _wifi(cfg)
    try:
        import ntptime

        ntptime.settime()
    except (ImportError, OSError):
        pass  # keep the RTC's time; readings carry their own timestamps
    clock.link["Wi-Fi"] = cfg["wifi"][0]["ssid"] if w.isconnected() else "not connected"
    sync, room, probes = _room(cfg)
    runner = runtime.Runner(clock, _client, _http_get if cfg.get("cloud") else None, sync=sync,
                            wdt=wdt)
    btn = machine.Pin(cfg["pins"]["button"], machine.Pin.IN, machine.Pin.PULL_UP)
    pressed = False
    passes = 0
    gc.collect()
    while True:
        now = epoch.unix_now() * 1000
        down = btn() == 0
        if down and not pressed:
            clock.button(now)
        pressed = down
        runner.step(now)
        if hw.annunciator is not None:
            for _ in range(20):  # one second of alarm pattern between passes
                hw.annunciator.tick(epoch.unix_now() * 1000 + _ * 50)
                time.sleep_ms(50)
        if room is not None and passes % 5 == 0:  # a room sample every ~5 s
            room.add(now // 1000, _sample(probes))
        passes += 1
        guard.healthy(passes)


main()
