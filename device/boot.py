# Runs first at every start: holding the button while the clock powers up clears the failed-
# start count, so the next start leaves safe mode. Everything else happens in main.py.

import machine

from nightlink.device import boot_guard, config

cfg, _errors = config.load("/config.json")
if machine.Pin(cfg["pins"]["button"], machine.Pin.IN, machine.Pin.PULL_UP)() == 0:
    boot_guard.BootGuard().reset()
