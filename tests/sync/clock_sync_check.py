# Under MicroPython: ClockSync on the clock's MqttLink over a test double of umqtt.simple's
# MQTTClient (the network layer). Prints JSON for the CPython side to check.
import json
import os

from nightlink.device.clock_sync import ClockSync
from nightlink.device.mqtt_link import MqttLink
from nightlink.device.outbox import Outbox
from nightlink.shared import codec, features

try:
    os.mkdir("/flash")
except OSError:
    pass
PATH = "/flash/sync.bin"
DEV = "c0ffee000001"
ROW = codec.quantize_row(features.ROOM, (21.5, 45.0, 3.0, 812.0, 31.0))


class Net:
    """What the broker saw; `down` makes every call fail like a dead socket."""

    def __init__(self):
        self.published = []
        self.status = []
        self.down = False
        self.cb = None
        self.ids = []
        self.subs = []

    def client(self, client_id, server, port=0, user=None, password=None, keepalive=0,
               ssl=False):
        self.ids.append(client_id)
        return Client(self)

    def ack(self, hwm, gaps=()):
        topic = "nl/v1/fam-1/" + DEV + "/room/ack"
        self.cb(topic.encode(), json.dumps({"stream": "room", "hwm": hwm,
                                            "gaps": [list(g) for g in gaps]}).encode())


class Client:
    """umqtt.simple.MQTTClient's calls, carried out on a Net."""

    def __init__(self, net):
        self.net = net

    def set_callback(self, f):
        self.net.cb = f

    def connect(self, clean_session=True, timeout=None):
        if self.net.down:
            raise OSError(113)
        return False

    def subscribe(self, topic, qos=0):
        self.net.subs.append((topic, qos))

    def publish(self, topic, msg, retain=False, qos=0):
        if self.net.down:
            raise OSError(104)
        if topic.endswith("/status"):
            self.net.status.append(json.loads(msg))
        else:
            self.net.published.append(codec.decode(msg).seq)

    def check_msg(self):
        if self.net.down:
            raise OSError(104)

    def ping(self):
        pass

    def disconnect(self):
        pass


def step(link, sync, now):
    link.step(now)
    sync.step(now)


box = Outbox(PATH, capacity=8000)
for seq in range(1, 11):
    box.append(codec.encode(codec.Record(features.ROOM, b"\xc0\xff\xee\x00\x00\x01", 1, seq,
                                         1000 + seq, [ROW])))
net = Net()
link = MqttLink(net.client, "nl-clock-" + DEV, "broker", keepalive_s=30)
sync = ClockSync(box, link, "fam-1", DEV)
out = {}
step(link, sync, 0)
out["first_pass"] = list(net.published)
out["subscribed"] = list(net.subs)
step(link, sync, 10)
net.ack(3, [(4, 5)])  # the cloud has 1..3 and 6..10 but lost 4 and 5
net.published = []
step(link, sync, 20)
out["resent_after_gap"] = net.published[:2]
net.ack(10)
out["after_ack"] = [box.unacked(), box.next_seq(features.ROOM) - 1]

for seq in (11, 12):
    box.append(codec.encode(codec.Record(features.ROOM, b"\xc0\xff\xee\x00\x00\x01", 1, seq,
                                         1000 + seq, [ROW])))
net.down = True
step(link, sync, 30)  # the link dies mid-pass
step(link, sync, 40)  # still within the back-off: no attempt
waited = not link.up and link.next_attempt > 40
net.down = False
net.published = []
step(link, sync, 5000)  # after the back-off: reconnect and send what is unacknowledged
out["reconnect"] = {"connects": link.connects, "backoff_waited": waited,
                    "clients": net.ids, "subs_after": len(net.subs)}
out["resent_after_reconnect"] = net.published

# Offline too long: the flash fills, the oldest records go, and the cloud is told which.
box2 = Outbox("/flash/small.bin", capacity=38 * 5)
net2 = Net()
for seq in range(1, 9):
    box2.append(codec.encode(codec.Record(features.ROOM, b"\xc0\xff\xee\x00\x00\x01", 1,
                                          seq, 2000 + seq, [ROW])))
link2 = MqttLink(net2.client, "nl-clock-" + DEV, "broker")
sync2 = ClockSync(box2, link2, "fam-1", DEV)
step(link2, sync2, 0)
out["status"] = net2.status
out["sent_after_drops"] = net2.published

# Acks a fuzzing run sent: each raised in the loop and, retained, at every start (safe mode);
# hwm 2**32 - 1 marked every later row as sent and wedged the outbox at the next start.
def session(path, boot, rows, epoch):
    """An outbox at path holding `rows` one-row records of `boot`, and a session on it."""
    box = Outbox(path, capacity=8000)
    for seq in range(1, rows + 1):
        box.append(codec.encode(codec.Record(features.ROOM, b"\xc0\xff\xee\x00\x00\x01",
                                             boot, seq, epoch + seq, [ROW])))
    net = Net()
    link = MqttLink(net.client, "nl-clock-" + DEV, "broker")
    sync = ClockSync(box, link, "fam-1", DEV)
    step(link, sync, 0)
    return box, net, link, sync


box3, net3, link3, sync3 = session("/flash/acks.bin", 1, 3, 3000)
ack_topic = ("nl/v1/fam-1/" + DEV + "/room/ack").encode()
raised = []
for body in (b'{"hwm": 4294967295}', b'{"hwm": 1e308}', b'{"hwm": 4}', b'{"hwm": "2"}',
             b'{"hwm": 1, "gaps": [[]]}', b'{"hwm": 1, "gaps": 5}', b'{"hwm": 1, "gaps": "x"}',
             b'{"hwm": 1, "gaps": [["a", 2]]}', b'{"hwm": 1, "gaps": {"a": 1}}',
             b'{"hwm": 1, "gaps": [null]}', b'{"hwm": -1}'):
    try:
        net3.cb(ack_topic, body)
    except Exception as e:  # noqa: BLE001
        raised.append(type(e).__name__)
out["hostile_acks"] = [raised, box3.unacked(), sync3.bad_acks, sync3.catch_ups,
                      box3.next_seq(features.ROOM)]
net3.cb(ack_topic, b'{"hwm": 3}')
out["good_ack_after"] = box3.unacked()

# A reflashed clock numbers from 1 again; the cloud's mark (1000) is of its earlier life.
# Before, that ack marked every row under it as sent, unsent; ignored, the clock would get
# no ack for as long as its earlier life lasted. Its numbering goes on after the mark.
box4, net4, link4, sync4 = session("/flash/reflash.bin", 7, 2, 4000)
net4.cb(ack_topic, b'{"hwm": 1000}')
reflash = [box4.unacked(), box4.next_seq(features.ROOM)]
box4.append(codec.encode(codec.Record(features.ROOM, b"\xc0\xff\xee\x00\x00\x01", 7,
                                      box4.next_seq(features.ROOM), 4003, [ROW])))
reflash.append(Outbox("/flash/reflash.bin", capacity=8000).next_seq(features.ROOM))  # reboot
step(link4, sync4, 10)
net4.cb(ack_topic, b'{"hwm": 1001}')
reflash += [box4.unacked(), net4.published]
out["reflash"] = reflash


def broken(topic, msg):
    raise KeyError("a handler's own bug")


link3.subscribe("nl/v1/fam-1/" + DEV + "/+/cmd", 1, broken)
try:
    net3.cb(("nl/v1/fam-1/" + DEV + "/x/cmd").encode(), b"{}")
    out["handler_error"] = ["dropped", link3.bad_messages]
except Exception as e:  # noqa: BLE001
    out["handler_error"] = ["raised " + type(e).__name__, 0]
print(json.dumps(out))
