"""Room records from the desk clocks, received over the LAN broker.

The edge subscribes to `nl/v1/{tenant}/+/+` (data topics only), checks each message's topic
and bytes with the shared validators, and keeps every row in its store, under the clock's
own device id and sequence numbers, queued for the cloud. A payload that does not decode, or
whose device id is not the one in its topic, goes to the dead-letter table with the reason;
nothing else is held up. The cloud, not the edge, acknowledges the rows to the clocks (through
the broker bridge).
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time

import paho.mqtt.client as mqtt

from nightlink.edge.store import EdgeStore
from nightlink.shared import codec, features, topics

_LOGGER = logging.getLogger(__name__)


class RecordRejected(ValueError):
    """A clock's message that cannot be stored; the message is the dead-letter reason."""


def accept(store: EdgeStore, topic: str, payload: bytes) -> int:
    """Store the rows of one clock message; return how many were new. RecordRejected if bad."""
    try:
        kind, _tenant, device, stream = topics.parse(topic)
    except topics.TopicError as exc:
        raise RecordRejected(str(exc)) from None
    if kind in ("cmd", "status"):
        return 0  # the cloud's commands to a clock, a clock's health report: not for the edge
    if kind != "data":
        raise RecordRejected(f"{topic} is not a data topic.")
    try:
        if codec.is_batch(payload):
            records, errors = codec.decode_batch(payload)
            if errors:
                i, exc = errors[0]
                raise RecordRejected(f"record {i + 1} of the batch: {exc}")
        else:
            records = [codec.decode(payload)]
    except codec.WireError as exc:
        raise RecordRejected(f"{type(exc).__name__}: {exc}") from None
    new = 0
    for rec in records:
        if codec.device_name(rec.device) != device:
            raise RecordRejected(
                f"the record's device id {codec.device_name(rec.device)} is not the topic's "
                f"device {device}."
            )
        if features.stream(rec.stream)[features.S_NAME] != stream:
            raise RecordRejected(f"a {features.stream(rec.stream)[features.S_NAME]} record on the {stream} topic.")
        for row in codec.split(rec):
            if store.put_foreign(codec.encode(row)) is not None:
                new += 1
    return new


def jitter_s(failures: int, rng: random.Random, ceiling: float = 30.0) -> float:
    """Extra random wait before the next attempt after `failures` failed ones in a row: up
    to a doubling bound (1, 2, 4 … s, at most `ceiling`), so edges restarted together do
    not retry in step; paho's own delay (doubling from 1 s to 60 s) comes on top."""
    if failures <= 0:
        return 0.0
    return rng.uniform(0.0, min(ceiling, 2.0 ** (failures - 1)))


class ClockLink:
    """A paho client on the LAN broker; messages are handed to `deliver(topic, payload)`.

    Paho reconnects by itself with a doubling delay; `on_pre_connect` adds a random wait
    that grows with the failures in a row (refused logins, TLS errors, no broker)."""

    WARN_EVERY_S = 60.0  # a failing link is said at most this often

    def __init__(self, cfg, tenant: str, deliver, *, client_id: str = "",
                 rng: random.Random | None = None):
        self.cfg = cfg
        self.where = f"{cfg.host}:{cfg.port}"
        self.failures = 0
        self.last_error = ""  # why the last attempt failed, in words ("" once connected)
        self._warned_at = -1e9
        self.rng = rng or random.Random()
        self._halt = threading.Event()  # cuts a jitter wait short when the link stops
        self.filter = f"{topics.PREFIX}/{topics.check_name('tenant', tenant)}/+/+"
        self.deliver = deliver
        self.connected = False
        self._refused = ""  # the broker's refusal of the login, said when it then closes
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not client_id)
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            self.client.tls_set(ca_certs=cfg.ca_file or None)
        self.client.reconnect_delay_set(1, 60)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_pre_connect = self._before_attempt
        self.client.on_connect_fail = lambda *_: self._failed(self._diagnose())
        self.client.on_message = lambda _c, _u, msg: self.deliver(msg.topic, bytes(msg.payload))

    def _before_attempt(self, _client, _userdata) -> None:
        self._halt.wait(jitter_s(self.failures, self.rng))

    def _failed(self, why: str) -> None:
        """An attempt that failed: counted (the jitter grows) and said, at most once a
        minute, with the number of attempts, since the clocks' feed (their low alarm) waits
        on this link."""
        self.failures += 1
        self.last_error = why
        now = time.monotonic()
        if now - self._warned_at >= self.WARN_EVERY_S:
            self._warned_at = now
            _LOGGER.warning("the clocks' LAN broker %s: %s (%d attempt%s so far; the clocks get "
                            "no glucose from this edge until it answers); trying again",
                            self.where, why, self.failures, "" if self.failures == 1 else "s")

    def _diagnose(self) -> str:
        """Why a connection could not be opened (paho does not say): the name, the port,
        the TLS handshake, tried again briefly here."""
        host, port = self.cfg.host, self.cfg.port
        try:
            addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
        except (socket.gaierror, UnicodeError) as exc:
            return f"the name {host!r} is not found ({getattr(exc, 'strerror', None) or exc})"
        try:
            with socket.create_connection(addr[:2], timeout=3) as sock:
                if not self.cfg.tls:
                    return "it closed the connection before the login"
                ctx = ssl.create_default_context(cafile=self.cfg.ca_file or None)
                with ctx.wrap_socket(sock, server_hostname=host):
                    return "the connection failed after the TLS handshake"
        except ssl.SSLError as exc:
            return (f"TLS failed ({getattr(exc, 'verify_message', None) or exc.reason or exc})"
                    "; is `tls` right for this port?")
        except ConnectionRefusedError:
            return "connection refused (nothing listens on that port)"
        except TimeoutError:
            return "no answer within 3 s"
        except OSError as exc:
            return f"cannot reach it ({exc.strerror or exc})"

    def _on_connect(self, client, _userdata, _flags, reason_code, _props):
        if reason_code.is_failure:  # counted when the broker then closes the connection
            user = f" as {self.cfg.username!r}" if self.cfg.username else ""
            self._refused = f"refused the edge's login{user} ({reason_code})"
            return
        if self.failures:
            _LOGGER.warning("the clocks' LAN broker %s answers again; the clocks' feed goes on",
                            self.where)
        self.failures = 0
        self.last_error = ""
        self.connected = True
        client.subscribe(self.filter, qos=1)

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props):
        if not self.connected:  # an attempt that never got in (a refused login, TLS)
            why, self._refused = self._refused, ""
            self._failed(why or f"it closed the connection before the login ({reason_code})")
            return
        self.connected = False
        self.last_error = f"connection lost ({reason_code})"
        _LOGGER.warning("the clocks' LAN broker %s: connection lost (%s); reconnecting",
                        self.where, reason_code)

    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        self._halt.set()
        self.client.disconnect()
        self.client.loop_stop()
