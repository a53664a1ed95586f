# Runs under MicroPython (and CPython): the outbox's read head. Draining costs a bounded
# number of record reads per record (CRC checks, never decodes); the head survives a reboot;
# a state that names another file is not trusted; power cuts around a rewrite lose nothing.
# Prints JSON.
import json
import os

import outbox_meter
from flashfs import fresh

from nightlink.device import outbox as outbox_mod
from nightlink.device.outbox import Outbox
from nightlink.shared import codec, features

PATH = "/flash/head.bin"
DEV = b"\xa4\xcf\x12\xb0\xc3\xd4"
ROW = codec.quantize_row(features.ROOM, (21.5, 45.0, 3.0, 812.0, 31.0))
outbox_meter.install()
count = outbox_meter.count


def fill(box, n, stream=features.ROOM, epoch=1000, rows=1):
    for i in range(n):
        seq = box.next_seq(stream)
        box.append(codec.encode(codec.Record(stream, DEV, 1, seq, epoch + rows * i,
                                             [ROW] * rows)))


def seqs(records):
    return [codec.peek_header(r)[codec.H_SEQ] for r in records]


out = {}

# A drain the way the sync drains: batches of 8 handed out after what is in flight, each
# acknowledged on the next pass.
fresh(PATH)
box = Outbox(PATH)
N = 600
fill(box, N)
outbox_meter.reset()
sent = {}
acked = 0
passes = 0
order = []
while not box.all_acked():
    if sent:
        box.ack(features.ROOM, sent[features.ROOM])
    batch = box.pending(sent, 8)
    order += seqs(batch)
    if batch:
        sent[features.ROOM] = codec.peek_header(batch[-1])[codec.H_SEQ]
    passes += 1
out["drain"] = {"passes": passes, "order_ok": order == list(range(1, N + 1)),
                "decodes": count["decodes"], "crc_checks": count["crc_checks"], "size": box.size}

# The head is saved as it moves (every 8 KiB) and used after a reboot.
fresh(PATH)
box = Outbox(PATH)
fill(box, 300)  # 38 bytes a record: 11400 bytes
box.ack(features.ROOM, 250)
box.pending({}, 8)  # the head moves on as the sync asks for more
count["crc_checks"] = 0
box = Outbox(PATH)  # reboot
recovery_crc = count["crc_checks"]
out["head_after_reboot"] = {"head": box.head, "count": box.count, "unacked": box.unacked(),
                            "first": seqs(box.pending(limit=1)), "next": box.next_seq(1),
                            "recovery_crc": recovery_crc}

# A state whose head names another file (the record there is not the one it saved) is not
# trusted: the whole file is scanned.
with open(PATH + ".state", "rb") as f:
    state = f.read()
fresh(PATH)
box = Outbox(PATH)
fill(box, 300, features.ROOM, 5000, 2)  # 46 bytes a record: no record starts at that offset
with open(PATH + ".state", "wb") as f:
    f.write(state)  # acked up to 250 and a head at 250's offset, for other records
box = Outbox(PATH)
out["foreign_state"] = {"head": box.head, "count": box.count, "size": box.size,
                        "torn": box.torn, "unacked": box.unacked()}


class CutBefore:
    """os for the outbox, with a power cut just before the file is swapped in."""

    def __init__(self, path):
        self.path = path

    def rename(self, a, b):
        if b == self.path:
            raise KeyboardInterrupt  # the power goes; nothing after this runs
        os.rename(a, b)

    def remove(self, p):
        os.remove(p)

    def stat(self, p):
        return os.stat(p)


def cut_during(action):
    outbox_mod.os = CutBefore(PATH)
    try:
        action()
        happened = False
    except KeyboardInterrupt:
        happened = True
    outbox_mod.os = os
    return happened


# A power cut in a rewrite after acks: the old file is still there, nothing unsent is lost.
fresh(PATH)
box = Outbox(PATH, capacity=38 * 40)
fill(box, 39)
box.ack(features.ROOM, 20)
box.pending({}, 8)  # the head moves past the 20
cut = cut_during(lambda: box.ack(features.ROOM, 21))  # 3/4 full, a quarter acked: rewrite
box = Outbox(PATH, capacity=38 * 40)
out["cut_in_ack_rewrite"] = {"cut": cut, "count": box.count, "unacked": box.unacked(),
                             "pending": seqs(box.pending(limit=100)),
                             "next": box.next_seq(features.ROOM)}

# A power cut in a rewrite that drops records for room: the drops are already on record
# (reported, so the cloud can step over them), and no record is lost without being counted.
fresh(PATH)
box = Outbox(PATH, capacity=38 * 10)
fill(box, 10)
cut = cut_during(lambda: fill(box, 1, features.ROOM, 2000))
box = Outbox(PATH, capacity=38 * 10)
kept = seqs(box.pending(limit=100))
out["cut_in_drop_rewrite"] = {"cut": cut, "drops": box.drops.get(features.ROOM, 0),
                              "dropped": box.dropped.get(features.ROOM), "kept": kept}
print(json.dumps(out))
