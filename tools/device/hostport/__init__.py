"""The clock's host port: CPython stand-ins for the board-only modules (machine, network,
framebuf, umqtt.simple, and MicroPython's time functions in board.py), so device/ code runs
unchanged on a PC against a real broker. Put this folder on PYTHONPATH; `nightlink.device`
and `nightlink.shared` import from the installed package, as they do from /lib/nightlink on
the board."""
