"""The clock's host port: CPython stand-ins for the board-only modules, so device/ code runs
unchanged on a PC against a real broker. Put this folder first on PYTHONPATH (with device/
and shared/) to run device code the way the board imports it."""
