# Room sensors behind thin drivers (SHT4x, BME280, BH1750, SCD4x on I2C; an I2S microphone's
# level) and the 30-s room epoch they feed: mean of the samples -> shared codec -> flash outbox.
# Drivers take a machine.I2C-like bus; a read that fails gives None (missing), never a crash.

import math
import time

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


from nightlink.shared import codec, epoch, features
from nightlink.shared.sensirion import crc8

SHT4X_ADDR = const(0x44)
BH1750_ADDR = const(0x23)
SCD4X_ADDR = const(0x62)
BME280_ADDR = const(0x76)


def _words(buf, n):
    """n 16-bit words from Sensirion frames (word, CRC); None if any CRC is wrong."""
    out = []
    for i in range(n):
        w = buf[3 * i : 3 * i + 2]
        if crc8(w) != buf[3 * i + 2]:
            return None
        out.append((w[0] << 8) | w[1])
    return out


class SHT4x:
    """Temperature (degC) and humidity (%) in high precision (datasheet: 0xFD, 8.3 ms)."""

    def __init__(self, i2c, addr=SHT4X_ADDR):
        self.i2c = i2c
        self.addr = addr

    def read(self):
        try:
            self.i2c.writeto(self.addr, b"\xfd")
            time.sleep_ms(10)
            w = _words(self.i2c.readfrom(self.addr, 6), 2)
        except OSError:
            return None, None
        if w is None:
            return None, None
        t = -45 + 175 * w[0] / 65535
        rh = -6 + 125 * w[1] / 65535
        return t, min(100.0, max(0.0, rh))


class BH1750:
    """Illuminance (lx), one-time high-resolution mode (0x20, up to 180 ms), raw / 1.2."""

    def __init__(self, i2c, addr=BH1750_ADDR):
        self.i2c = i2c
        self.addr = addr

    def read(self):
        try:
            self.i2c.writeto(self.addr, b"\x01")  # power on
            self.i2c.writeto(self.addr, b"\x20")
            time.sleep_ms(180)
            b = self.i2c.readfrom(self.addr, 2)
        except OSError:
            return None
        return ((b[0] << 8) | b[1]) / 1.2


class SCD4x:
    """CO2 (ppm) in low-power periodic mode (0x21AC: one value every 30 s)."""

    def __init__(self, i2c, addr=SCD4X_ADDR):
        self.i2c = i2c
        self.addr = addr
        self.started = False

    def start(self):
        try:
            self.i2c.writeto(self.addr, b"\x21\xac")
            self.started = True
        except OSError:
            self.started = False

    def read(self):
        """(co2 ppm, degC, %) or Nones when no new value is ready."""
        if not self.started:
            self.start()
            return None, None, None
        try:
            self.i2c.writeto(self.addr, b"\xe4\xb8")  # get_data_ready_status
            time.sleep_ms(1)
            ready = _words(self.i2c.readfrom(self.addr, 3), 1)
            if ready is None or ready[0] & 0x07FF == 0:
                return None, None, None
            self.i2c.writeto(self.addr, b"\xec\x05")  # read_measurement
            time.sleep_ms(1)
            w = _words(self.i2c.readfrom(self.addr, 9), 3)
        except OSError:
            return None, None, None
        if w is None:
            return None, None, None
        return w[0], -45 + 175 * w[1] / 65535, 100 * w[2] / 65535


class BME280:
    """Temperature and humidity with the datasheet's compensation (section 8.1, doubles)."""

    def __init__(self, i2c, addr=BME280_ADDR):
        self.i2c = i2c
        self.addr = addr
        self.cal = None

    def _calibrate(self):
        c = self.i2c.readfrom_mem(self.addr, 0x88, 26)
        h = self.i2c.readfrom_mem(self.addr, 0xE1, 7)

        def s16(v):
            return v - 65536 if v > 32767 else v

        t1 = c[0] | (c[1] << 8)
        t2 = s16(c[2] | (c[3] << 8))
        t3 = s16(c[4] | (c[5] << 8))
        h1 = c[25]
        h2 = s16(h[0] | (h[1] << 8))
        h3 = h[2]
        h4 = (h[3] << 4) | (h[4] & 0x0F)
        h4 = h4 - 4096 if h4 > 2047 else h4
        h5 = (h[5] << 4) | (h[4] >> 4)
        h5 = h5 - 4096 if h5 > 2047 else h5
        h6 = h[6] - 256 if h[6] > 127 else h[6]
        self.cal = (t1, t2, t3, h1, h2, h3, h4, h5, h6)

    def read(self):
        try:
            if self.cal is None:
                self._calibrate()
            self.i2c.writeto_mem(self.addr, 0xF2, b"\x01")  # humidity x1
            self.i2c.writeto_mem(self.addr, 0xF4, b"\x25")  # temp x1, pressure x1, forced
            time.sleep_ms(10)
            d = self.i2c.readfrom_mem(self.addr, 0xF7, 8)
        except OSError:
            return None, None
        t1, t2, t3, h1, h2, h3, h4, h5, h6 = self.cal
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        v1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
        v2 = ((adc_t / 131072.0 - t1 / 8192.0) ** 2) * t3
        t_fine = v1 + v2
        t = t_fine / 5120.0
        h = t_fine - 76800.0
        h = (adc_h - (h4 * 64.0 + h5 / 16384.0 * h)) * (
            h2 / 65536.0 * (1.0 + h6 / 67108864.0 * h * (1.0 + h3 / 67108864.0 * h)))
        h = h * (1.0 - h1 * h / 524288.0)
        return t, min(100.0, max(0.0, h))


class MicLevel:
    """Sound level from an I2S MEMS microphone (e.g. INMP441: -26 dBFS at 94 dB SPL), as the
    unweighted RMS level in dB SPL; read(n) fills a preallocated buffer of 32-bit samples.
    No A-weighting filter on the board: noise_dba is an approximation."""

    def __init__(self, i2s, samples=1024, dbfs_at_94=-26.0):
        self.i2s = i2s
        self.buf = bytearray(samples * 4)
        self.offset = 94.0 - dbfs_at_94

    def read(self):
        try:
            n = self.i2s.readinto(self.buf)
        except OSError:
            return None
        if not n:
            return None
        b = self.buf
        acc = 0.0
        count = n // 4
        for i in range(0, count * 4, 4):
            v = (b[i + 1] | (b[i + 2] << 8) | (b[i + 3] << 16))  # top 24 bits, little endian
            if v & 0x800000:
                v -= 0x1000000
            acc += v * v
        rms = math.sqrt(acc / count) / 8388608.0
        if rms <= 0:
            return 0.0
        return max(0.0, min(120.0, 20 * math.log10(rms) + self.offset))


class RoomEpochs:
    """Collects samples; at each 30-s epoch boundary appends one ROOM record to the outbox."""

    def __init__(self, outbox, device_name, boot):
        self.outbox = outbox
        self.dev = codec.device_id(device_name)
        self.boot = boot
        self.epoch = None
        self.sums = [0.0] * 5
        self.ns = [0] * 5
        self.written = 0
        self.skipped = 0  # samples taken before the clock was set

    def add(self, unix_s, values):
        """values: (temp_c, humidity_pct, light_lux, co2_ppm, noise_dba), None = missing.
        A sample while the clock was never set (after a power cut, before NTP or the edge
        answers: the board counts from 2000) is dropped: it has no real time to be filed at,
        and rows dated 2000 would be synced and stored as a night long past."""
        if unix_s < epoch.TIME_SET_S:
            self.skipped += 1
            return
        e = epoch.epoch_index(unix_s)
        if self.epoch is not None and e != self.epoch:
            self.flush()
        self.epoch = e
        for i in range(5):
            v = values[i]
            if v is not None:
                self.sums[i] += v
                self.ns[i] += 1

    def flush(self):
        if self.epoch is None:
            return False
        vals = []
        feats = features.features(features.ROOM)
        for i in range(5):
            if self.ns[i]:
                v = self.sums[i] / self.ns[i]
                lo, hi = feats[i][features.F_LO], feats[i][features.F_HI]
                vals.append(lo if v < lo else (hi if v > hi else v))
            else:
                vals.append(None)
            self.sums[i] = 0.0
            self.ns[i] = 0
        if self.ns is not None and vals == [None] * 5:
            return False
        row = codec.quantize_row(features.ROOM, vals)
        seq = self.outbox.next_seq(features.ROOM)
        self.outbox.append(codec.encode(codec.Record(features.ROOM, self.dev, self.boot, seq,
                                                     self.epoch, [row])))
        self.written += 1
        return True
