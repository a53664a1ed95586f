"""Run the clock's room-sensor sync loop on the host: device/ code, the clock's one MQTT link,
the host port's umqtt.simple, a real broker.

    PYTHONPATH=tools/device/hostport python tools/device/hostport/run_clock.py \\
        OUTBOX HOST PORT TENANT DEVICE EPOCHS [PERIOD_S [USER PASSWORD]]

Writes one room record per epoch (deterministic readings) into the flash outbox and syncs
it; exits once every record is acknowledged. Killing it at any moment is a power cut.
"""

import sys
import time

from umqtt.simple import MQTTClient, MQTTException

from nightlink.device.clock_sync import ClockSync
from nightlink.device.mqtt_link import MqttLink
from nightlink.device.outbox import Outbox
from nightlink.shared import codec, features

FIRST_EPOCH = 58950540


def reading(epoch):
    i = epoch % 1000
    return (19.0 + (i % 40) / 10.0, 40.0 + i % 20, float(i % 5), 500.0 + i % 700, 30.0 + i % 10)


def main():
    path, host, port, tenant, device, epochs = sys.argv[1:7]
    period = float(sys.argv[7]) if len(sys.argv) > 7 else 0.01
    user, password = (sys.argv[8], sys.argv[9]) if len(sys.argv) > 9 else (None, None)
    box = Outbox(path, capacity=800 * 1024, protected=(features.CGM,))
    dev = codec.device_id(device)
    link = MqttLink(MQTTClient, "clock-" + device, host, int(port), user=user,
                    password=password, keepalive_s=10, refused=MQTTException)
    sync = ClockSync(box, link, tenant, device)
    total = int(epochs)
    produced = box.next_seq(features.ROOM) - 1
    next_write = time.monotonic()
    while True:
        now = time.monotonic()
        if produced < total and now >= next_write:
            seq = box.next_seq(features.ROOM)
            epoch = FIRST_EPOCH + seq - 1
            row = codec.quantize_row(features.ROOM, reading(epoch))
            box.append(codec.encode(codec.Record(features.ROOM, dev, 1, seq, epoch, [row])))
            produced = seq
            next_write = now + period
        link.step(int(now * 1000))
        sync.step(int(now * 1000))
        if produced >= total and box.all_acked():
            break
        time.sleep(0.001)
    sys.stdout.write(f"done {produced}\n")


main()
