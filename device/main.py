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
    runner = runtime.Runner(clock, _client, _http_get if cfg.get("cloud") else None, wdt=wdt)
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
        passes += 1
        guard.healthy(passes)


main()
