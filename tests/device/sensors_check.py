# Room sensor drivers against register-level doubles of the chips (the I2C bus is the only
# thing doubled), and 30-s room epochs into the flash outbox. MicroPython or CPython; JSON out.
import json
import time

if not hasattr(time, "sleep_ms"):  # CPython: the host port's time
    import board

    board.install()

from flashfs import fresh

from nightlink.device import sensors
from nightlink.device.outbox import Outbox
from nightlink.shared import codec, features


def frame(*words):
    out = bytearray()
    for w in words:
        b = bytes(((w >> 8) & 0xFF, w & 0xFF))
        out += b + bytes((sensors.crc8(b),))
    return bytes(out)


class Bus:
    """Answers like the chips do; records the commands written."""

    def __init__(self):
        self.cmds = []
        self.broken_crc = False
        self.regs = {}

    def writeto(self, addr, data):
        self.cmds.append((addr, bytes(data)))

    def readfrom(self, addr, n):
        last = self.cmds[-1][1]
        if addr == 0x44:  # SHT4x: 0x6666 -> 25.0 degC, 0x8000 -> 56.5 %
            f = frame(0x6666, 0x8000)
            if self.broken_crc:
                f = f[:2] + bytes((f[2] ^ 1,)) + f[3:]
            return f
        if addr == 0x23:  # BH1750: 0x01F4 = 500 -> 416.7 lx
            return b"\x01\xf4"
        if addr == 0x62:
            if last == b"\xe4\xb8":
                return frame(0x8006)  # data ready
            return frame(812, 0x6666, 0x8000)
        raise OSError(19)

    def readfrom_mem(self, addr, reg, n):
        return self.regs[reg][:n]

    def writeto_mem(self, addr, reg, data):
        self.cmds.append((addr, bytes((reg,)) + bytes(data)))


out = {"crc_beef": sensors.crc8(b"\xbe\xef")}
bus = Bus()
t, rh = sensors.SHT4x(bus).read()
out["sht4x"] = [round(t, 2), round(rh, 2)]
bus.broken_crc = True
out["sht4x_bad_crc"] = list(sensors.SHT4x(bus).read())
out["bh1750"] = round(sensors.BH1750(bus).read(), 1)
scd = sensors.SCD4x(bus)
first = scd.read()  # starts the periodic mode
co2, t2, rh2 = scd.read()
out["scd4x"] = [list(first), co2, round(t2, 2), round(rh2, 2)]
out["scd4x_cmds"] = [c[1].hex() for c in bus.cmds if c[0] == 0x62]
out["missing_chip"] = list(sensors.SHT4x(bus, 0x45).read())

# BME280 with the datasheet's worked calibration (Bosch's BME280 example values)
b = Bus()
cal = bytearray(26)
for i, v in enumerate((27504, 26435, 64536)):  # dig_T1..T3 (T3 = -1000)
    cal[2 * i] = v & 0xFF
    cal[2 * i + 1] = v >> 8
cal[25] = 75  # dig_H1
b.regs[0x88] = bytes(cal)
b.regs[0xE1] = bytes((0x6A, 0x01, 0x00, 0x14, 0x2E, 0x03, 0x1E))  # H2=362 H3=0 H4=334 H5=50 H6=30
b.regs[0xF7] = bytes((0, 0, 0, 0x7E, 0xED, 0x00, 0x6A, 0x5E))  # adc_T=519888, adc_H=27230
t3, rh3 = sensors.BME280(b).read()
out["bme280"] = [round(t3, 2), round(rh3, 1)]

PATH = "/flash/room.bin"
fresh(PATH)
box = Outbox(PATH, capacity=8000)
room = sensors.RoomEpochs(box, "a4cf12b0c3d4", 1)
T0 = 1768516200  # an epoch boundary
for s in range(0, 60, 5):  # the clock after a power cut, before NTP: counting from 2000
    room.add(946684800 + 40 + s, (19.0, 40.0, 3.0, 600.0, 30.0))
out["skipped_unset_clock"] = room.skipped
for s in range(0, 90, 5):  # three epochs of 5-s samples; CO2 only every 30 s, light missing
    room.add(T0 + s, (20.0 + s / 100, 45.0, None, 800.0 if s % 30 == 0 else None, 31.0))
room.flush()
recs = []
for rec in box.pending({}, 10):
    r = codec.decode(rec)
    recs.append([r.seq, r.epoch - T0 // 30, [None if v is None else round(v, 2)
                                            for v in r.values()[0]]])
out["records"] = recs
out["room_stream"] = features.ROOM
print(json.dumps(out))
