"""The test rig's servers: private Mosquitto and PostgreSQL processes on ports only this test
worker uses. The benchmarks share the same code (`nightlink.tools.services`); tests reach it
only through this module."""

import grp
import os
import pwd

import pytest

from nightlink.tools.services import Broker, PostgresServer, free_port, mosquitto_binary

__all__ = ["Broker", "PostgresServer", "free_port", "mosquitto_binary", "needs_mosquitto_user"]


def needs_mosquitto_user() -> None:
    """Skip, saying why, unless a broker can start as root and drop to the user mosquitto
    (as Debian's package runs it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the broker must start as root and drop to the user mosquitto")
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    try:
        pwd.getpwnam("mosquitto")
        grp.getgrnam("mosquitto")
    except KeyError:
        pytest.skip("no user and group mosquitto (Debian's mosquitto package makes them)")
