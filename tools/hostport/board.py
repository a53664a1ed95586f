"""Host-port time: MicroPython's time.ticks_ms / ticks_diff / ticks_add / sleep_ms added to
CPython's `time` (a built-in module that a shim file cannot replace). install() once before
importing device code."""

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
