"""Device tooling: build the clock's filesystem image, provision it, flash it, deploy to it,
and run its firmware on this PC (`hostport/`, `emulate.py`); `cli.py` is `nightlink device`."""
