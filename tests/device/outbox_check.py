# Runs under MicroPython (and CPython): the flash outbox through appends, a torn write, a
# reboot, acks, and a full disk. Prints JSON.
import json

from flashfs import fresh

from nightlink.device.outbox import Outbox
from nightlink.shared import codec, features

PATH = "/flash/outbox.bin"
fresh(PATH)

DEV = b"\xa4\xcf\x12\xb0\xc3\xd4"
ROW = codec.quantize_row(features.ROOM, (21.5, 45.0, 3.0, 812.0, 31.0))
out = {}


def record(box, epoch):
    seq = box.next_seq(features.ROOM)
    return codec.encode(codec.Record(features.ROOM, DEV, 1, seq, epoch, [ROW]))


box = Outbox(PATH, capacity=4000)
for i in range(50):
    box.append(record(box, 1000 + i))
out["after_50"] = [box.count, box.size, box.next_seq(features.ROOM)]

# A power cut in the middle of the 51st write: half a frame reaches flash.
half = record(box, 1050)
with open(PATH, "ab") as f:
    f.write(b"\x24\x00" + half[:10])

box = Outbox(PATH, capacity=4000)  # reboot
out["reboot"] = [box.count, box.torn, box.next_seq(features.ROOM)]

pend = box.pending(limit=100)
out["pending"] = [len(pend), codec.decode(pend[0]).seq, codec.decode(pend[-1]).seq]
box.ack(features.ROOM, 20)
out["after_ack_20"] = [box.unacked(), len(box.pending(limit=100))]
box.ack(features.ROOM, 50)
out["after_ack_all"] = [box.unacked(), box.size, box.next_seq(features.ROOM)]

box = Outbox(PATH, capacity=4000)  # reboot with an empty file: seq continues from the state
out["seq_after_empty_reboot"] = box.next_seq(features.ROOM)

# Offline for long: the file fills up and the oldest records make room.
for i in range(200):
    box.append(record(box, 2000 + i))
out["full"] = [box.count, box.size <= 4000, box.drops.get(features.ROOM, 0)]
box = Outbox(PATH, capacity=4000)
out["drops_persist"] = box.drops.get(features.ROOM, 0) > 0
out["dropped_ranges"] = box.dropped.get(features.ROOM)
first = codec.decode(box.pending(limit=1)[0])
out["oldest_kept_seq"] = first.seq
print(json.dumps(out))
