"""Host-port stand-in for micropython-lib's umqtt.simple: the same MQTTClient calls, carried
out by paho-mqtt (which speaks the protocol). On the board the real umqtt.simple is
installed with `mpremote mip install umqtt.simple`; device code cannot tell them apart.

Like umqtt.simple, every call is synchronous and a dead connection shows as OSError.
"""

import queue
import time

import paho.mqtt.client as mqtt

_TIMEOUT_S = 10.0
# MQTT 3.1.1 CONNACK return codes, which umqtt.simple puts into MQTTException, by the name
# paho gives them.
_RETURN_CODES = {"unsupported protocol version": 1, "client identifier not valid": 2,
                 "server unavailable": 3, "bad user name or password": 4, "not authorized": 5}


class MQTTException(Exception):
    pass


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=False, ssl_params=None):
        if isinstance(client_id, bytes):
            client_id = client_id.decode()
        self.server = server
        self.port = port or (8883 if ssl else 1883)
        self.keepalive = keepalive or 60
        self.cb = None
        self._user = user
        self._password = password
        self._ssl = ssl
        self._client_id = client_id
        self._inbox = queue.Queue()
        self._c = None
        self._lost = False

    def set_callback(self, f):
        self.cb = f

    def connect(self, clean_session=True, timeout=None):
        """Like umqtt.simple's: one attempt, returning after the broker's CONNACK; OSError
        when the broker cannot be reached, closes the connection or is silent for `timeout`
        seconds (default 10), MQTTException(return code) when it refuses the login."""
        self.disconnect()  # like umqtt.simple, which closes the old socket first
        wait_s = timeout or _TIMEOUT_S
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self._client_id,
                        clean_session=clean_session)
        c.connect_timeout = wait_s
        if self._user:
            c.username_pw_set(self._user, self._password)
        if self._ssl:
            c.tls_set()
        c.on_message = lambda _c, _u, m: self._inbox.put((m.topic.encode(), bytes(m.payload)))
        # umqtt.simple never reconnects by itself: a lost connection stays lost (OSError on
        # the next call) even if paho's thread gets it back meanwhile.
        self._lost = False
        c.on_disconnect = lambda *_a: setattr(self, "_lost", True)
        refusal = []
        c.on_connect = lambda _c, _u, _f, rc, _p: refusal.append(rc) if rc.is_failure else None
        try:
            c.connect(self.server, self.port, keepalive=self.keepalive)
        except (OSError, ValueError) as exc:
            raise OSError(f"connect failed: {exc}") from None
        c.loop_start()
        # umqtt.simple's connect() returns only after the broker's CONNACK: wait for it too,
        # and give up on the first failure (paho's thread would otherwise try again itself).
        deadline = time.monotonic() + wait_s
        while not c.is_connected():
            failure = None
            if refusal:  # umqtt.simple raises MQTTException(CONNACK return code)
                failure = MQTTException(_RETURN_CODES.get(str(refusal[0]).lower(), 5))
            elif self._lost:
                failure = OSError("connection closed before CONNACK")
            elif time.monotonic() > deadline:
                failure = OSError("no CONNACK in time")
            if failure is not None:
                c.disconnect()
                c.loop_stop()
                raise failure
            time.sleep(0.002)
        self._c = c
        return False

    def _check(self):
        if self._c is None or self._lost or not self._c.is_connected():
            raise OSError("not connected")

    def publish(self, topic, msg, retain=False, qos=0):
        self._check()
        payload = msg.encode() if isinstance(msg, str) else bytes(msg)
        info = self._c.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError(f"publish failed: {mqtt.error_string(info.rc)}")
        if qos:
            try:
                info.wait_for_publish(_TIMEOUT_S)
            except (RuntimeError, ValueError) as exc:
                raise OSError(f"publish failed: {exc}") from None
            if not info.is_published():
                raise OSError("no PUBACK in time")

    def subscribe(self, topic, qos=0):
        self._check()
        rc, _mid = self._c.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError(f"subscribe failed: {mqtt.error_string(rc)}")

    def check_msg(self):
        self._check()
        while True:
            try:
                topic, msg = self._inbox.get_nowait()
            except queue.Empty:
                return None
            if self.cb:
                self.cb(topic, msg)

    def wait_msg(self):
        self._check()
        topic, msg = self._inbox.get(timeout=self.keepalive)
        if self.cb:
            self.cb(topic, msg)

    def ping(self):
        self._check()

    def disconnect(self):
        if self._c is not None:
            self._c.disconnect()
            self._c.loop_stop()
            self._c = None
