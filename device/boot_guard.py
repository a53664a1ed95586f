# Start-up guard: counts starts that did not reach a healthy main loop in a small flash file;
# after three in a row the clock boots into safe mode (status screen, no app) instead of a loop.

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


MAX_FAILED = const(3)
HEALTHY_PASSES = const(3)  # main-loop passes after which a start counts as good


class BootGuard:
    def __init__(self, path="/bootcount"):
        self.path = path
        self.failed = self._read()
        self.marked = False

    def _read(self):
        try:
            with open(self.path) as f:
                return int(f.read().strip() or "0")
        except (OSError, ValueError):
            return 0

    def _write(self, n):
        try:
            with open(self.path, "w") as f:
                f.write("%d" % n)
        except OSError:
            pass  # read-only or full flash: the guard must never stop the clock itself

    def starting(self):
        """Call first thing in main.py. True when the clock must boot into safe mode."""
        if self.failed >= MAX_FAILED:
            return True
        self._write(self.failed + 1)  # cleared by healthy() once the app runs
        return False

    def healthy(self, passes):
        """Call every main-loop pass; after a few passes the start counts as good."""
        if not self.marked and passes >= HEALTHY_PASSES:
            self._write(0)
            self.failed = 0
            self.marked = True

    def reset(self):
        """Leave safe mode (button held at boot, or after re-provisioning)."""
        self._write(0)
        self.failed = 0
