# Test support for the device check scripts, under MicroPython and CPython alike: a folder for
# an outbox file and none of the files an earlier run left there (the outbox's own file, its
# state, and the temporary files a rewrite leaves when power is cut).
import os


def fresh(path):
    """Create path's folder if needed and remove path and the outbox's side files."""
    try:
        os.mkdir(path.rsplit("/", 1)[0])
    except OSError:
        pass
    for p in (path, path + ".state", path + ".tmp", path + ".state.tmp"):
        try:
            os.remove(p)
        except OSError:
            pass
