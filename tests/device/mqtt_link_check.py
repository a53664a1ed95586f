# The clock's MqttLink under real MicroPython, over the real umqtt.simple and the in-process
# broker behind the socket double (tests/mpy/board): handlers per topic filter, keepalive
# pings, a take-over and a dropped connection, a broker refusing for ten minutes, a CONNACK
# refusal (said in words), a broker that closes or stays silent before its CONNACK, and Wi-Fi
# tried network by network. Prints one JSON line.
import json

import network
from mqtt_broker import BROKER
from umqtt.simple import MQTTClient, MQTTException

from nightlink.device.mqtt_link import MqttLink

CID = "nl-clock-c0ffee000001"
out = {}
feed = []
acks = []
sessions = []


def drive(link, start, end, every=100):
    """Step the link every `every` ms; the times at which a connection attempt failed."""
    failed = []
    n = link.failures
    for t in range(start, end, every):
        link.step(t)
        if link.failures != n:
            failed.append(t)
            n = link.failures
    return failed


timeouts = []
log = []


class TimedClient(MQTTClient):
    """The real client, noting the CONNACK timeout each attempt is given."""

    def connect(self, clean_session=True, timeout=None):
        timeouts.append(timeout)
        return super().connect(clean_session, timeout)


link = MqttLink(TimedClient, CID, "edge.lan", keepalive_s=60, refused=MQTTException,
                log=log.append)
link.subscribe("nl/v1/smith/+/clock/+", 0, lambda t, m: feed.append([t, m.decode()]))
link.subscribe("nl/v1/smith/c0ffee000001/+/ack", 1, lambda t, m: acks.append(t))
link.on_connect(lambda now: sessions.append(now))
BROKER.publish("nl/v1/smith/ed9e00000001/clock/glucose", b"98")  # retained before we came
link.step(0)
out["first"] = [link.up, link.connects, BROKER.subscriptions(CID)]
BROKER.publish("nl/v1/smith/c0ffee000001/room/ack", b'{"hwm": 3}', True, 1)
BROKER.publish("nl/v1/smith/ed9e00000001/clock/night", b"{}")
BROKER.publish("nl/v1/smith/c0ffee000002/room/ack", b'{"hwm": 9}', True, 1)  # another clock
BROKER.publish("nl/v1/other/ed9e00000001/clock/glucose", b"77")  # another tenant
link.step(1000)
out["dispatch"] = {"feed": list(feed), "acks": list(acks), "received": link.received}
out["published"] = link.publish("nl/v1/smith/c0ffee000001/status", "{}", True, 1)

pings = BROKER.pings
drive(link, 2000, 122000, 1000)
out["pings_in_2_min"] = BROKER.pings - pings

# Another client takes the clock's id over: the link sees its socket closed and comes back
# after its back-off, with its subscriptions, and without ever taking the other one over twice.
other = MQTTClient(CID, "edge.lan")
other.connect()
failed = drive(link, 122000, 126000)
out["takeover"] = {"failed_at": failed, "up": link.up, "connects": link.connects,
                   "subs": BROKER.subscriptions(CID), "sessions": list(sessions),
                   "takeovers": len([e for e in BROKER.log if e[0] == "takeover"])}

# The broker goes away for ten minutes: attempts back off (1 s, 2 s, ... 120 s, jittered).
BROKER.kick(CID)
BROKER.down = True
failed = drive(link, 126000, 726000)
out["down"] = {"attempts": len([e for e in BROKER.log if e[0] == "refused"]),
               "failed_at": failed}
BROKER.down = False
drive(link, 726000, 900000)
out["back"] = [link.up, link.connects, BROKER.subscriptions(CID)]

# A broker that answers CONNACK with "not authorised" is backed off from the same way.
BROKER.kick(CID)
BROKER.refuse = 5
failed = drive(link, 900000, 960000)
out["refused"] = {"failed_at": failed, "up": link.up, "error": link.error,
                  "log": log[-len(failed):] if failed else []}
BROKER.refuse = 0

# A broker (or a proxy in front of it) that closes the connection before its CONNACK, then
# one that never answers: each attempt ends at once or at its timeout, then the back-off.
drive(link, 960000, 1200000)  # back up first: the back-off starts from one second again
real_connect = BROKER._connect
BROKER.kick(CID)
BROKER._connect = lambda sock, body: setattr(sock, "closed", True)
failed = drive(link, 1200000, 1260000)
out["closed"] = {"failed_at": failed, "up": link.up, "error": link.error}
BROKER._connect = lambda sock, body: None
failed = drive(link, 1260000, 1320000)
out["silent"] = {"failed_at": failed, "up": link.up, "error": link.error}
BROKER._connect = real_connect
drive(link, 1320000, 1560000)
out["recovered"] = [link.up, link.error]
out["timeouts"] = sorted(set(timeouts))

# Wi-Fi: the first network is not there; the second joins, then the broker.
network.WLAN.available = {"attic": "another password"}
wlan = network.WLAN(network.STA_IF)
link2 = MqttLink(MQTTClient, "nl-clock-c0ffee000002", "edge.lan", wlan=wlan,
                 networks=[{"ssid": "home", "password": "correct horse"},
                           {"ssid": "attic", "password": "another password"}])
joined = None
for t in range(0, 30000, 500):
    link2.step(t)
    if link2.up and joined is None:
        joined = t
out["wifi"] = {"joined_at": joined, "ssid": link2.ssid, "tries": network.WLAN.connects,
               "active": wlan.active()}
print(json.dumps(out))
