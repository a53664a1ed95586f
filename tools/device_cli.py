"""`nightlink device`: build, provision, flash and deploy ESP32 clocks.

The verbs are thin: the work is in `nightlink.tools.devicetool` (build, provision, flash, deploy).
Other commands (the clock emulator) join this group with `device.add_command(...)`.
"""

import click


@click.group()
def device() -> None:
    """Build, provision, flash and deploy the ESP32 desk clocks."""
