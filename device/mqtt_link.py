# The clock's one network link: Wi-Fi, one broker session under one client id, keepalive
# pings, reconnects with exponential back-off and jitter, re-subscription, per-topic handlers.
# One connection attempt at a time: umqtt.simple's connect() returns after the CONNACK or
# fails (a socket timeout bounds the wait, so a silent broker never blocks the main loop).

import random

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(120000)
_WIFI_TRY_MS = const(10000)  # a network gets this long to join before the next is tried
_MAX_MESSAGES = const(8)  # messages taken per step, so one pass is never held up for long
_CONNECT_TIMEOUT_S = const(10)  # for the CONNACK: a few round trips on a slow link
# MQTT 3.1.1 CONNACK return codes (umqtt.simple raises MQTTException(code)).
_REFUSALS = ("", "protocol version not accepted", "client id not accepted", "broker unavailable",
             "bad user name or password", "not authorised")


class MqttLink:
    """Owns the clock's link; the app only registers handlers per topic filter and
    hooks for each new session, publishes, and calls step(now_ms) once per main-loop pass.

    client_class: umqtt.simple.MQTTClient (the host port's stand-in on a PC), built once
    with the one client id. wlan: the board's network.WLAN station, or None where the
    host's network carries the traffic. networks: [{"ssid", "password"}] tried in turn.
    refused: the client's exception for a broker that answers CONNACK with a refusal.
    log: fn(line) told why each attempt failed (the status screen shows `error` too).
    """

    def __init__(self, client_class, client_id, host, port=1883, user=None, password=None,
                 tls=False, keepalive_s=60, wlan=None, networks=(), refused=(), log=None,
                 connect_timeout_s=_CONNECT_TIMEOUT_S):
        self.client = client_class(client_id, host, port, user=user, password=password,
                                   keepalive=keepalive_s, ssl=tls)
        self.client.set_callback(self._dispatch)
        self.client_id = client_id
        self.host = host
        self.port = port
        self.keepalive_ms = keepalive_s * 1000
        self.connect_timeout_s = connect_timeout_s
        self.refused = refused
        self.log = log
        self.error = None  # why the last attempt failed or the session ended (None: up)
        self.wlan = wlan
        self.networks = networks
        self.ssid = None  # the network last joined (or being joined)
        self.up = False  # a broker session is open
        self.now = 0
        self.backoff = _BACKOFF_MIN_MS
        self.next_attempt = 0
        self.last_io = 0
        self.connects = 0
        self.failures = 0
        self.received = 0
        self.bad_messages = 0  # messages whose handler raised (dropped, the loop goes on)
        self._subs = []  # (filter, qos, handler, filter split at "/")
        self._on_up = []  # fn(now_ms), called after every new session
        self._net = -1
        self._net_until = 0
        if wlan is not None:
            wlan.active(True)

    # -- what the app uses -----------------------------------------------------------------

    def subscribe(self, topic_filter, qos, handler):
        """Deliver messages matching topic_filter to handler(topic str, msg bytes), on this
        session and every later one."""
        self._subs.append((topic_filter, qos, handler, topic_filter.split("/")))
        if self.up:
            try:
                self.client.subscribe(topic_filter, qos)
            except OSError:
                self._failed(self.now)

    def on_connect(self, hook):
        """hook(now_ms) runs after every new broker session (what was in flight may be lost)."""
        self._on_up.append(hook)

    def publish(self, topic, msg, retain=False, qos=0):
        """Publish now; False when the link is down or the write failed (the link then waits
        out its back-off before connecting again)."""
        if not self.up:
            return False
        try:
            self.client.publish(topic, msg, retain, qos)
        except OSError:
            self._failed(self.now)
            return False
        self.last_io = self.now
        return True

    def close(self):
        """End the session (before deep sleep: the radio goes off with the board)."""
        if self.up:
            self.up = False
            try:
                self.client.disconnect()
            except OSError:  # the link is gone already: nothing to end
                pass

    def wifi_connected(self):
        return self.wlan is None or self.wlan.isconnected()

    # -- the loop ---------------------------------------------------------------------------

    def step(self, now_ms):
        """Join Wi-Fi, open the session when the back-off allows, take waiting messages and
        ping every half keepalive. Never blocks on a refusing broker."""
        self.now = now_ms
        if not self.join_wifi(now_ms):
            if self.up:
                self._failed(now_ms)
            return
        if not self.up:
            if now_ms < self.next_attempt:
                return
            self._connect(now_ms)
            if not self.up:
                return
        try:
            for _ in range(_MAX_MESSAGES):
                if self.client.check_msg() is None:
                    break
            if self.up and now_ms - self.last_io >= self.keepalive_ms // 2:
                self.client.ping()
                self.last_io = now_ms
        except OSError:
            self._failed(now_ms)
        except MemoryError:  # a message larger than the heap: the session is dropped, not
            self._failed(now_ms)  # the loop (a retained one would stop every boot)

    def join_wifi(self, now_ms):
        """True while the station is connected; else start joining the next network when
        the last one had its time (the broker is left alone: main.py sets the clock first)."""
        w = self.wlan
        if w is None or w.isconnected():
            return True
        if self.networks and now_ms >= self._net_until:
            self._net = (self._net + 1) % len(self.networks)
            net = self.networks[self._net]
            try:
                w.disconnect()
                w.connect(net["ssid"], net.get("password", ""))
            except OSError:
                pass
            self.ssid = net["ssid"]
            self._net_until = now_ms + _WIFI_TRY_MS
        return False

    def _connect(self, now_ms):
        try:
            # A persistent session (the broker keeps acks meanwhile); the timeout bounds the
            # wait for the CONNACK.
            self.client.connect(False, self.connect_timeout_s)
        except self.refused as exc:  # CONNACK with a refusal (credentials, client id)
            code = exc.args[0] if exc.args else 0
            why = _REFUSALS[code] if 0 < code < len(_REFUSALS) else "code %s" % code
            self._failed(now_ms, "refused the login (%s)" % why)
            return
        except OSError as exc:  # unreachable, reset, or no CONNACK within the timeout
            name = _describe(exc)
            self._failed(now_ms, "did not answer in %d s" % self.connect_timeout_s
                         if name == "ETIMEDOUT" else "unreachable (%s)" % name)
            return
        except (IndexError, AssertionError):  # umqtt.simple on a socket closed before CONNACK
            self._failed(now_ms, "closed the connection before answering")
            return
        self.up = True  # from here a failure closes the session before the next attempt
        self.error = None
        self.connects += 1
        self.last_io = now_ms
        try:
            for sub in self._subs:
                self.client.subscribe(sub[0], sub[1])
        except OSError:
            self._failed(now_ms)
            return
        self.backoff = _BACKOFF_MIN_MS
        for hook in self._on_up:
            hook(now_ms)

    def _failed(self, now_ms, why="connection lost"):
        self.failures += 1
        self.close()
        # Exponential back-off with jitter: between half and all of the current delay.
        half = self.backoff // 2
        wait = half + random.getrandbits(16) % (half + 1)
        self.next_attempt = now_ms + wait
        self.backoff = min(self.backoff * 2, _BACKOFF_MAX_MS)
        self.error = why
        if self.log is not None:
            self.log("broker %s:%d %s; next try in %d.%d s" % (self.host, self.port, why,
                                                               wait // 1000, wait % 1000 // 100))

    def _dispatch(self, topic, msg):
        if isinstance(topic, bytes):
            topic = topic.decode()
        self.received += 1
        parts = topic.split("/")
        for sub in self._subs:
            if _matches(sub[3], parts):
                try:
                    sub[2](topic, msg)
                except Exception as exc:  # noqa: BLE001 - one message never stops the loop:
                    # umqtt acknowledges a QoS 1 message after this returns, so a retained one
                    # that raised came back at every start until the boot guard gave up
                    self.bad_messages += 1
                    if self.log is not None:
                        self.log("message on %s dropped: %r" % (topic, exc))


def _describe(exc):
    """An OSError in words: its errno's name where MicroPython knows it."""
    code = exc.args[0] if exc.args else None
    if isinstance(code, int):
        try:
            import errno

            return errno.errorcode[code]
        except (ImportError, AttributeError, KeyError):
            return "error %d" % code
    return str(exc)


def _matches(filt, parts):
    """MQTT filter matching on split topic levels: + is one level, # the rest."""
    n = len(filt)
    for i in range(n):
        f = filt[i]
        if f == "#":
            return True
        if i >= len(parts) or (f != "+" and f != parts[i]):
            return False
    return n == len(parts)
