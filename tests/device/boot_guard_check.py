# Safe mode after three failed starts, under MicroPython (or CPython). Prints JSON.
import json
import os

from nightlink.device import boot_guard

PATH = "/tmp_bootcount" if hasattr(os, "uname") and os.uname()[0] == "webassembly" else "bc"
try:
    os.remove(PATH)
except OSError:
    pass
out = []
for _ in range(4):  # four starts that crash before the main loop is healthy
    g = boot_guard.BootGuard(PATH)
    out.append(g.starting())
g = boot_guard.BootGuard(PATH)
g.reset()  # button held at boot
g = boot_guard.BootGuard(PATH)
safe = g.starting()
for p in range(1, 5):
    g.healthy(p)
g2 = boot_guard.BootGuard(PATH)
print(json.dumps({"starts": out, "after_reset": safe, "count_after_healthy": g2.failed}))
