# Under MicroPython: ClockSync over a test double of umqtt.simple's MQTTClient (the network
# layer). Prints JSON for the CPython side to check.
import json
import os

import codec
import features
from clock_sync import ClockSync
from outbox import Outbox

try:
    os.mkdir("/flash")
except OSError:
    pass
PATH = "/flash/sync.bin"
DEV = "c0ffee000001"
ROW = codec.quantize_row(features.ROOM, (21.5, 45.0, 3.0, 812.0, 31.0))


class Link:
    """What the broker saw; `down` makes every call fail like a dead socket."""

    def __init__(self):
        self.published = []
        self.status = []
        self.down = False
        self.cb = None

    def client(self):
        if self.down:
            raise OSError(113)
        return self

    def set_callback(self, f):
        self.cb = f

    def connect(self, clean_session=True):
        return False

    def subscribe(self, topic, qos=0):
        pass

    def publish(self, topic, msg, retain=False, qos=0):
        if self.down:
            raise OSError(104)
        if topic.endswith("/status"):
            self.status.append(json.loads(msg))
        else:
            self.published.append(codec.decode(msg).seq)

    def check_msg(self):
        if self.down:
            raise OSError(104)

    def ping(self):
        pass

    def disconnect(self):
        pass

    def ack(self, hwm, gaps=()):
        topic = "nl/v1/fam-1/" + DEV + "/room/ack"
        self.cb(topic.encode(), json.dumps({"stream": "room", "hwm": hwm,
                                            "gaps": [list(g) for g in gaps]}).encode())


box = Outbox(PATH, capacity=8000)
for seq in range(1, 11):
    box.append(codec.encode(codec.Record(features.ROOM, b"\xc0\xff\xee\x00\x00\x01", 1, seq,
                                         1000 + seq, [ROW])))
link = Link()
sync = ClockSync(box, link.client, "fam-1", DEV, keepalive_s=30)
out = {}
sync.step(0)
out["first_pass"] = list(link.published)
sync.step(10)
link.ack(3, [(4, 5)])  # the cloud has 1..3 and 6..10 but lost 4 and 5
link.published = []
sync.step(20)
out["resent_after_gap"] = link.published[:2]
link.ack(10)
out["after_ack"] = [box.unacked(), box.next_seq(features.ROOM) - 1]

for seq in (11, 12):
    box.append(codec.encode(codec.Record(features.ROOM, b"\xc0\xff\xee\x00\x00\x01", 1, seq,
                                         1000 + seq, [ROW])))
link.down = True
sync.step(30)  # the link dies mid-pass
sync.step(40)  # still within the backoff: no attempt
waited = sync.client is None and sync.next_attempt > 40
link.down = False
link.published = []
sync.step(5000)  # after the backoff: reconnect and send what is unacknowledged
out["reconnect"] = {"connects": sync.connects, "backoff_waited": waited}
out["resent_after_reconnect"] = link.published

# Offline too long: the flash fills, the oldest records go, and the cloud is told which.
box2 = Outbox("/flash/small.bin", capacity=38 * 5)
link2 = Link()
for seq in range(1, 9):
    box2.append(codec.encode(codec.Record(features.ROOM, b"\xc0\xff\xee\x00\x00\x01", 1,
                                          seq, 2000 + seq, [ROW])))
sync2 = ClockSync(box2, link2.client, "fam-1", DEV)
sync2.step(0)
out["status"] = link2.status
out["sent_after_drops"] = link2.published
print(json.dumps(out))
