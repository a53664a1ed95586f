"""The embedded MQTT broker (amqtt) that the one-machine demo runs instead of Mosquitto."""

from __future__ import annotations

import asyncio
import logging
import threading

_LOGGER = logging.getLogger(__name__)


class EmbeddedBroker:
    """amqtt on 127.0.0.1 in a background thread; `.host`, `.port`, `.stop()`."""

    def __init__(self, port: int = 0):
        from nightlink.tools.services import free_port

        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._broker = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqtt",
                                        daemon=True)

    def start(self) -> EmbeddedBroker:
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):  # amqtt warns about its own defaults
            logging.getLogger(name).setLevel(logging.ERROR)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # Loopback only, one machine: anonymous clients, no $SYS topics, no packet logs.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }
        self._thread.start()

        async def boot():
            self._broker = Broker(config)
            await self._broker.start()

        # start() returns once the listener is bound; no probe connection (amqtt logs those).
        asyncio.run_coroutine_threadsafe(boot(), self._loop).result(15)
        return self

    def stop(self) -> None:
        if self._broker is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(10)
            except (RuntimeError, TimeoutError, OSError) as exc:
                _LOGGER.warning("embedded broker shutdown: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
