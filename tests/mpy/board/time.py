# Board double of `time` for the MicroPython tests: the port's own clock functions, but time(),
# the ticks and the sleeps on a virtual clock that only sleeps move on (SPEED times as far as
# asked), so a night passes in seconds. Found before the port's frozen `time` (sys.path '').
from utime import gmtime, localtime, mktime  # noqa: F401  (the built-in module's other name)

_clock = [0, 1]  # virtual ms since 1970, speed


def set_clock(unix_s, speed=1):
    _clock[0] = int(unix_s * 1000)
    _clock[1] = speed


def set_unix(unix_s):
    """The RTC set (machine.RTC().datetime in the board double): the speed stays."""
    _clock[0] = int(unix_s * 1000)


def time():
    return _clock[0] // 1000


def time_ns():
    return _clock[0] * 1000000


def sleep_ms(ms):
    _clock[0] += int(ms * _clock[1])


def sleep_us(us):
    sleep_ms(us / 1000)


def sleep(s):
    sleep_ms(s * 1000)


def ticks_ms():
    return _clock[0] & 0x3FFFFFFF


def ticks_us():
    return (_clock[0] * 1000) & 0x3FFFFFFF


def ticks_cpu():
    return ticks_us()


def ticks_add(t, delta):
    return (t + delta) & 0x3FFFFFFF


def ticks_diff(a, b):
    return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000
