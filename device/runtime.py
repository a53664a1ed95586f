# The clock's main loop around the app: the MQTT link (Wi-Fi, broker), the edge's feed, the
# Nightscout fallback, the outbox sync and the watchdog. Time and hardware come from the
# caller, so the emulator runs this same loop on a PC (tools/device/hostport), faster.

import json

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


from nightlink.device import app
from nightlink.shared import epoch, topics
from nightlink.shared.apisecret import api_secret_hash

_FALLBACK_AFTER_MS = const(360000)  # no word from the edge for 6 minutes: ask the cloud
_POLL_MS = const(60000)
_TIME_MAX_S = 4102444800  # 2100-01-01: a later "time" is garbage
_TIME_SUFFIX = "/" + topics.CLOCK_TIME


class Runner:
    """step(now_ms) once a second or so. link: the clock's MqttLink (None: no broker), which
    this loop steps and takes the edge's feed from; http_get(url, headers) -> (status, body
    bytes) raising OSError when unreachable; sync: the outbox's ClockSync on the same link;
    set_time(unix_s): called with the time the edge tells (main.py decides whether to take it)."""

    def __init__(self, clock, link=None, http_get=None, sync=None, wdt=None, set_time=None):
        self.clock = clock
        self.set_time = set_time
        self.cfg = clock.cfg
        self.link = link
        self.http_get = http_get
        self.sync = sync
        self.wdt = wdt
        self.next_poll = 0
        self.polls = 0
        self.entries_due = False  # the carbs came: ask for the readings at the next step
        self.poll_errors = 0
        self.last_sync_ms = None
        self.now = 0
        self.started = None
        self.last_lan_ms = None
        tenant = self.cfg["device"]["tenant"]
        self.filter = topics.clock_feed_filter(tenant)
        cl = self.cfg.get("cloud")
        self.cloud_url = None
        if isinstance(cl, dict) and cl.get("url") and cl.get("api_secret"):
            # Tab-separated, as Nightscout serves it too: the model's hour of a 1-minute
            # sensor (75 readings) parses in under half the heap the same readings take as
            # JSON (16 KB against 34 KB, tests/device/test_cloud_fallback.py)
            self.cloud_url = (cl["url"].rstrip("/") + "/api/v1/entries/sgv.txt?count=%d"
                              % app.MAX_READINGS)
            self.cloud_headers = {"api-secret": api_secret_hash(cl["api_secret"]),
                                  "Accept": "text/plain"}
            # the newest carbs, which hold the predicted low off as the edge's message does
            self.carbs_url = (cl["url"].rstrip("/") + "/api/v1/treatments.json?"
                              "find%5Bcarbs%5D%5B%24gt%5D=0&count=1")
            self.carbs_headers = {"api-secret": self.cloud_headers["api-secret"],
                                  "Accept": "application/json"}
        if link is not None:
            link.subscribe(self.filter, 0, self._on_message)

    @property
    def broker_up(self):
        return self.link is not None and self.link.up

    def _on_message(self, topic, msg):
        """The edge speaks when a message brings a newer reading (a retained message the
        broker delivers again at each reconnect does not, so it cannot hold off the cloud
        fallback); any message is taken or dropped, never fatal to the loop."""
        if topic.endswith(_TIME_SUFFIX if isinstance(topic, str) else _TIME_SUFFIX.encode()):
            self._on_time(msg)
            return
        r = self.clock.readings
        newest = r[-1][0] if r else None
        try:
            taken = self.clock.on_message(topic, msg, self.now)
        except Exception:  # noqa: BLE001 - a message no rule foresaw: dropped
            self.clock.bad_messages += 1
            return
        if taken and r and r[-1][0] != newest:
            self.last_sync_ms = self.now
            self.last_lan_ms = self.now

    def _on_time(self, msg):
        """The edge's time ({"t": Unix s}); anything else is dropped and counted."""
        try:
            t = json.loads(msg)["t"]
        except Exception:  # noqa: BLE001 - not JSON, not an object, no "t"
            t = None
        if type(t) is not int or not epoch.TIME_SET_S <= t < _TIME_MAX_S:
            self.clock.bad_messages += 1
            return
        if self.set_time is not None:
            self.set_time(t)

    def _poll_cloud(self, now):
        """Nightscout fallback: only when the edge has been silent for a while. The newest
        carbs, then at the next step the readings, so the alarm judges the new readings with
        the carbs known (one request a step: the watchdog)."""
        if self.cloud_url is None or self.http_get is None:
            return
        if self.entries_due:
            self.entries_due = False
            self._poll_entries(now)
            return
        if now < self.next_poll:
            return
        if self.started is None:
            self.started = now
        heard = self.last_lan_ms if self.last_lan_ms is not None else self.started
        if self.broker_up and now - heard < _FALLBACK_AFTER_MS:
            return  # the edge answers (or may still): no need for the cloud
        self.next_poll = now + _POLL_MS
        self.polls += 1
        self._poll_carbs(now)
        self.entries_due = True

    def _poll_entries(self, now):
        try:
            status, body = self.http_get(self.cloud_url, self.cloud_headers)
            if status != 200:
                raise ValueError("HTTP %d" % status)
            entries = app.entries_text(body)
            if not entries and body.strip():
                raise ValueError("no reading in the answer")
        except Exception:  # noqa: BLE001 - unreachable, refused, garbage: try again later
            self.poll_errors += 1
            return
        if self.clock.on_entries(entries, now):
            self.last_sync_ms = now

    def _poll_carbs(self, now):
        """When carbs were last entered, from the cloud: a failure keeps what the clock had.
        With the clock's time set, none entered over 10 minutes ahead (AndroidAPS' extended
        carbs are uploaded hours ahead: the newest would hide the carbs just eaten)."""
        url = self.carbs_url
        if now >= epoch.TIME_SET_S * 1000:
            url += "&find%5Bcreated_at%5D%5B%24lte%5D=" + epoch.iso(now // 1000 + 600)
        try:
            status, body = self.http_get(url, self.carbs_headers)
            if status != 200:
                raise ValueError("HTTP %d" % status)
            t_ms = app.newest_carbs(body)
        except Exception:  # noqa: BLE001 - unreachable, refused, garbage: next poll
            self.poll_errors += 1
            return
        self.clock.alarms.set_carbs(t_ms)

    def step(self, now):
        self.now = now
        if self.link is not None:
            self.link.step(now)  # the feed's messages reach _on_message from here
        self._poll_cloud(now)
        if self.sync is not None:
            self.sync.step(now)
        self._status(now)
        self.clock.step(now)
        if self.wdt is not None:
            self.wdt.feed()

    def _status(self, now):
        link = self.clock.link
        m = self.cfg["mqtt"]
        if self.link is not None and self.link.wlan is not None:
            link["Wi-Fi"] = self.link.ssid if self.link.wifi_connected() else "not connected"
        state = "up" if self.broker_up else "down"
        if not self.broker_up and self.link is not None and self.link.error:
            state = "down: " + self.link.error  # e.g. refused the login (not authorised)
        # The state first: a long host name clipped at the panel's edge keeps the reason.
        link["Broker"] = "%s, %s:%d" % (state, m["host"], m["port"])
        if self.last_sync_ms is None:
            link["Last sync"] = "never"
        else:
            link["Last sync"] = "%d min ago (%s)" % ((now - self.last_sync_ms) // 60000,
                                                     self.clock.source)
        if self.cloud_url is not None:
            link["Cloud"] = "fallback, %d polls" % self.polls
        if self.sync is not None:
            link["Outbox"] = "%d records" % self.sync.outbox.count
