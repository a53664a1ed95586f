# Buzzer and LED for the alarms: a pattern number in, pin levels out, driven by tick(now_ms)
# from the main loop. The pins are callables (machine.Pin / a PWM duty setter on the board).

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


# pattern: (beeps per burst, beep ms, gap ms, burst period ms); index = alarms pattern number
_PATTERNS = (
    (0, 0, 0, 1000),  # silent
    (1, 120, 0, 300000),  # chirp: one short beep every 5 minutes
    (3, 200, 200, 60000),  # warning: three beeps every minute
    (4, 250, 150, 10000),  # urgent: four beeps every 10 seconds
    (1, 400, 200, 600),  # siren: without pause
)


class Annunciator:
    def __init__(self, buzzer, led):
        self.buzzer = buzzer  # buzzer(1) sounds, buzzer(0) stops
        self.led = led
        self.pattern = 0
        self.start = 0
        self.on = False
        self.beeps = 0  # beeps started since boot (tests count them)
        self.led_on = False

    def set(self, pattern, now_ms):
        """Change the pattern (restarts its burst so a new alarm is heard at once)."""
        if pattern != self.pattern:
            self.pattern = pattern
            self.start = now_ms
            if pattern == 0 and self.on:
                self._buzz(False)
        led = pattern != 0
        if led != self.led_on:
            self.led_on = led
            self.led(1 if led else 0)

    def _buzz(self, on):
        self.on = on
        self.buzzer(1 if on else 0)
        if on:
            self.beeps += 1

    def tick(self, now_ms):
        n, beep, gap, period = _PATTERNS[self.pattern]
        phase = (now_ms - self.start) % period
        on = False
        if n and phase < n * (beep + gap):
            on = phase % (beep + gap) < beep
        if on != self.on:
            self._buzz(on)

