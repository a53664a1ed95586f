"""Host-port stand-in for MicroPython's `machine`, at the lowest layer only: pins, SPI, I2C
and I2S buses, PWM, ADC, RTC (with its memory), WDT and deep sleep. They record what the
firmware did so tests and the emulator can look; nothing here pretends to be a sensor. I2C
devices are doubles registered by address (see tests/device/test_sensors.py). The module also
runs under MicroPython, as the board double of the MicroPython tests."""

import time

if not hasattr(time, "ticks_ms"):  # CPython: the host port's MicroPython time functions
    import board

    board.install()

DEEPSLEEP_RESET = 4
PWRON_RESET = 1
WDT_RESET = 3
SOFT_RESET = 5

_state = {"reset_cause": PWRON_RESET, "rtc_memory": b"", "slept_ms": [], "resets": 0,
          "rtc_set": []}


def _unix(y, mo, d, h, mi, s):
    """Unix seconds of a UTC calendar time (days from the civil date, proleptic Gregorian)."""
    y -= 1 if mo <= 2 else 0
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + h * 3600 + mi * 60 + s


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 2
    IRQ_RISING = 1
    levels = {}  # pin id -> value, for inputs set by tests

    def __init__(self, pin_id, mode=-1, pull=-1, value=None):
        self.id = pin_id
        self.mode = mode
        self.history = []  # (ms, value) of every write
        self.handler = None
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return Pin.levels.get(self.id, 0)
        Pin.levels[self.id] = 1 if v else 0
        self.history.append((time.ticks_ms(), 1 if v else 0))
        if len(self.history) > 64:
            self.history.pop(0)
        return None

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=0):
        self.handler = handler


class PWM:
    def __init__(self, pin, freq=2000, duty_u16=0):
        self.pin = pin
        self.f = freq
        self.d = duty_u16

    def freq(self, f=None):
        if f is None:
            return self.f
        self.f = f
        return None

    def duty_u16(self, d=None):
        if d is None:
            return self.d
        self.d = d
        self.pin.value(1 if d else 0)
        return None

    def deinit(self):
        self.d = 0


class SPI:
    def __init__(self, bus_id, baudrate=1000000, sck=None, mosi=None, miso=None, **kw):
        self.written = bytearray()
        self.writes = 0

    def write(self, buf):
        self.written += bytes(buf)
        self.writes += 1


class I2C:
    devices = {}  # address -> object with readfrom(n) and writeto(data)

    def __init__(self, bus_id=0, scl=None, sda=None, freq=400000):
        pass

    def scan(self):
        return sorted(I2C.devices)

    def _dev(self, addr):
        d = I2C.devices.get(addr)
        if d is None:
            raise OSError(19, "ENODEV")  # what the board raises for no ACK
        return d

    def writeto(self, addr, buf, stop=True):
        self._dev(addr).writeto(bytes(buf))
        return len(buf)

    def readfrom(self, addr, n, stop=True):
        return bytes(self._dev(addr).readfrom(n))

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf))
        buf[: len(data)] = data

    def writeto_mem(self, addr, reg, buf):
        self.writeto(addr, bytes((reg,)) + bytes(buf))

    def readfrom_mem(self, addr, reg, n):
        self.writeto(addr, bytes((reg,)))
        return self.readfrom(addr, n)

    def readfrom_mem_into(self, addr, reg, buf):
        buf[:] = self.readfrom_mem(addr, reg, len(buf))


class I2S:
    RX = 0
    TX = 1
    MONO = 0
    STEREO = 1
    source = None  # fn(buf) -> bytes filled, for tests that give the microphone a sound

    def __init__(self, bus_id, sck=None, ws=None, sd=None, mode=0, bits=16, format=0,
                 rate=16000, ibuf=4096):
        self.rate = rate

    def readinto(self, buf):
        return I2S.source(buf) if I2S.source is not None else 0

    def deinit(self):
        pass


class ADC:
    ATTN_11DB = 3
    values = {}  # pin id -> raw 12-bit value

    def __init__(self, pin, atten=None):
        self.pin = pin

    def read(self):
        return ADC.values.get(getattr(self.pin, "id", self.pin), 0)

    def read_uv(self):
        return self.read() * 3300000 // 4095


class RTC:
    def datetime(self, dt=None):
        """Read or set the time as (year, month, day, weekday, hour, minute, second, subsec);
        setting it moves the board's virtual clock (time.set_unix) where there is one."""
        if dt is None:
            t = time.gmtime(int(time.time()))
            return (t[0], t[1], t[2], t[6] + 1, t[3], t[4], t[5], 0)
        unix_s = _unix(dt[0], dt[1], dt[2], dt[4], dt[5], dt[6])
        _state["rtc_set"].append(unix_s)
        if hasattr(time, "set_unix"):
            time.set_unix(unix_s)
        return None

    def memory(self, data=None):
        if data is None:
            return _state["rtc_memory"]
        if len(data) > 2048:
            raise ValueError("RTC memory holds 2048 bytes on the ESP32")
        _state["rtc_memory"] = bytes(data)
        return None


class WDT:
    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.fed = 0
        _state["wdt"] = self

    def feed(self):
        self.fed += 1


class DeepSleep(Exception):
    """Raised by deepsleep(): the host port's way of ending the program like the board does."""


def deepsleep(ms=0):
    _state["slept_ms"].append(ms)
    _state["reset_cause"] = DEEPSLEEP_RESET
    raise DeepSleep(ms)


def lightsleep(ms=0):
    _state["slept_ms"].append(ms)


def reset_cause():
    return _state["reset_cause"]


def reset():
    _state["resets"] += 1
    _state["reset_cause"] = SOFT_RESET
    raise DeepSleep(0)


def unique_id():
    return b"\xa4\xcf\x12\xb0\xc3\xd4"
