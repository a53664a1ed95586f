"""Host-port time: MicroPython's time.ticks_ms / ticks_diff / ticks_add / sleep_ms added to
CPython's `time` (a built-in module that a shim file cannot replace). install() once before
importing device code; fast_clock() instead puts the board's clock on a virtual one."""

import time


def install():
    if hasattr(time, "ticks_ms"):
        return
    time.ticks_ms = lambda: int(time.monotonic() * 1000) & 0x3FFFFFFF
    time.ticks_us = lambda: int(time.monotonic() * 1000000) & 0x3FFFFFFF
    time.ticks_add = lambda t, d: (t + d) & 0x3FFFFFFF
    time.ticks_diff = lambda a, b: ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000
    time.sleep_ms = lambda ms: time.sleep(ms / 1000)
    time.sleep_us = lambda us: time.sleep(us / 1000000)


class FastClock:
    """The board's time (time.time, ticks, sleep_ms) on a virtual clock starting at
    `unix_s` that only the firmware's own sleeps move on, `speed` times as far as asked: a
    night in seconds. time.monotonic and time.sleep stay real for the host's libraries
    (paho's network thread, the umqtt stand-in's waits)."""

    def __init__(self, unix_s, speed=1):
        self.ms = int(unix_s * 1000)
        self.speed = speed

    def sleep_ms(self, ms):
        self.ms += int(ms * self.speed)


def fast_clock(unix_s, speed=1):
    """Install a FastClock as CPython's board time; returns it."""
    install()
    c = FastClock(unix_s, speed)
    time.time = lambda: c.ms / 1000
    time.time_ns = lambda: c.ms * 1000000
    time.ticks_ms = lambda: c.ms & 0x3FFFFFFF
    time.ticks_us = lambda: (c.ms * 1000) & 0x3FFFFFFF
    time.sleep_ms = c.sleep_ms
    time.sleep_us = lambda us: c.sleep_ms(us / 1000)
    time.set_unix = lambda unix_s: setattr(c, "ms", int(unix_s * 1000))  # machine.RTC sets it
    return c
