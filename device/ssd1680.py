# SSD1680 e-ink controller (2.9" 128x296 panels such as GDEY029T94), driven over SPI from a
# landscape 296x128 MONO_VLSB framebuf, written as it is: no copy, no rotation in Python.
#
# Orientation: with data entry mode 0x06 (Y counter first, X decrementing from byte 15) the
# controller takes MONO_VLSB bytes in buffer order: byte b*296+x lands on gate x, source byte
# 15-b, and bit k of it is source pixel 127-(8b+k). RAM content is inverted on output (0x21),
# so 1 = ink like the renderer. Command values follow the SSD1680 datasheet and GxEPD2's
# GDEY029T94 driver; untested on a real panel here (no hardware), see tests/device.

import time

try:
    from micropython import const
except ImportError:  # CPython (host port)

    def const(x):
        return x


_DRIVER_OUTPUT = const(0x01)
_DEEP_SLEEP = const(0x10)
_DATA_ENTRY = const(0x11)
_SW_RESET = const(0x12)
_TEMP_SENSOR = const(0x18)
_MASTER_ACTIVATE = const(0x20)
_UPDATE_CTRL1 = const(0x21)
_UPDATE_CTRL2 = const(0x22)
_WRITE_BW = const(0x24)
_WRITE_PREV = const(0x26)
_BORDER = const(0x3C)
_RAM_X = const(0x44)
_RAM_Y = const(0x45)
_RAM_X_COUNT = const(0x4E)
_RAM_Y_COUNT = const(0x4F)

FULL = const(0xF7)  # clock, analog, temperature, LUT mode 1, display
PARTIAL = const(0xFC)  # LUT mode 2 (differential against the previous image)

WIDTH = const(296)  # landscape, gate direction
HEIGHT = const(128)  # source direction
_BUSY_TIMEOUT_MS = const(5000)


class PanelTimeout(OSError):
    pass


class SSD1680:
    def __init__(self, spi, cs, dc, rst, busy):
        self.spi = spi
        self.cs = cs
        self.dc = dc
        self.rst = rst
        self.busy = busy
        self.refreshes = 0
        self._one = bytearray(1)

    def _cmd(self, c, data=None):
        self._one[0] = c
        self.cs(0)
        self.dc(0)
        self.spi.write(self._one)
        if data is not None:
            self.dc(1)
            self.spi.write(data)
        self.cs(1)

    def _wait(self):
        t0 = time.ticks_ms()
        while self.busy() == 1:
            if time.ticks_diff(time.ticks_ms(), t0) > _BUSY_TIMEOUT_MS:
                raise PanelTimeout("e-ink panel stayed busy")
            time.sleep_ms(5)

    def _window(self):
        self._cmd(_RAM_X, b"\x0f\x00")  # source bytes 15 down to 0
        self._cmd(_RAM_Y, b"\x00\x00\x27\x01")  # gates 0..295
        self._cmd(_RAM_X_COUNT, b"\x0f")
        self._cmd(_RAM_Y_COUNT, b"\x00\x00")

    def init(self):
        self.rst(0)
        time.sleep_ms(10)
        self.rst(1)
        time.sleep_ms(10)
        self._cmd(_SW_RESET)
        self._wait()
        self._cmd(_DRIVER_OUTPUT, b"\x27\x01\x00")  # 296 gates
        self._cmd(_DATA_ENTRY, b"\x06")  # AM=1 (Y first), Y increment, X decrement
        self._cmd(_BORDER, b"\x05")
        self._cmd(_UPDATE_CTRL1, b"\x08\x80")  # inverse BW RAM: 1 = ink
        self._cmd(_TEMP_SENSOR, b"\x80")
        self._wait()

    def show(self, buf, full):
        """Send the whole 296x128 buffer and refresh; full clears ghosting, partial is fast."""
        if full:
            self._window()
            self._cmd(_WRITE_PREV, buf)
        self._window()
        self._cmd(_WRITE_BW, buf)
        self._cmd(_UPDATE_CTRL2, bytes((FULL if full else PARTIAL,)))
        self._cmd(_MASTER_ACTIVATE)
        self._wait()
        if not full:
            self._window()
            self._cmd(_WRITE_PREV, buf)  # the base for the next differential update
        self.refreshes += 1

    def sleep(self):
        self._cmd(_DEEP_SLEEP, b"\x01")


class RefreshPolicy:
    """When to refresh: never for an unchanged image, at most once per min_interval_ms,
    a full refresh every full_every updates (and the first) to clear ghosting."""

    def __init__(self, min_interval_ms=60000, full_every=10):
        self.min_interval_ms = min_interval_ms
        self.full_every = full_every
        self.last_crc = None
        self.last_ms = None
        self.partials = -1  # the first refresh is a full one
        self.skipped = 0

    def decide(self, crc, now_ms):
        """None (leave the panel alone), PARTIAL or FULL; records the refresh it returns."""
        if crc == self.last_crc:
            return None
        if self.last_ms is not None and now_ms - self.last_ms < self.min_interval_ms:
            self.skipped += 1
            return None
        self.last_crc = crc
        self.last_ms = now_ms
        if self.partials < 0 or self.partials >= self.full_every - 1:
            self.partials = 0
            return FULL
        self.partials += 1
        return PARTIAL
