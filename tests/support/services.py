"""The test rig's servers: private Mosquitto and PostgreSQL processes on ports only this test
worker uses. The benchmarks share the same code (`nightlink.tools.services`); tests reach it
only through this module."""

from nightlink.tools.services import Broker, PostgresServer, free_port, mosquitto_binary

__all__ = ["Broker", "PostgresServer", "free_port", "mosquitto_binary"]
