"""Room sensors read over I2C on a Raspberry Pi: Sensirion SCD4x (CO2, temperature, humidity)
and ROHM BH1750 (light). The bus is an smbus2.SMBus or anything with the same `i2c_rdwr`.

Byte protocols follow the datasheets: SCD4x words are big-endian with a CRC-8
(polynomial 0x31, init 0xFF) after each word; BH1750 gives a big-endian count, lux = count / 1.2.
"""

from __future__ import annotations

import logging
import time

from nightlink.edge.sources.samples import Room, SourceError
from nightlink.shared.sensirion import crc8

_LOGGER = logging.getLogger(__name__)

SCD4X_ADDR = 0x62
SCD4X_START_PERIODIC = 0x21B1
SCD4X_DATA_READY = 0xE4B8
SCD4X_READ_MEASUREMENT = 0xEC05
BH1750_ADDR = 0x23
BH1750_ONE_TIME_HIGH_RES = 0x20


def parse_scd4x_words(data: bytes, n: int) -> list[int]:
    """n 16-bit words, each followed by its CRC; ValueError naming the bad word."""
    if len(data) < 3 * n:
        raise ValueError(f"SCD4x sent {len(data)} bytes, {3 * n} expected.")
    words = []
    for i in range(n):
        chunk = data[3 * i : 3 * i + 2]
        if crc8(chunk) != data[3 * i + 2]:
            raise ValueError(f"SCD4x word {i} failed its CRC check.")
        words.append((chunk[0] << 8) | chunk[1])
    return words


def scd4x_measurement(data: bytes) -> tuple[float, float, float]:
    """(co2 ppm, temperature degC, humidity %) from the 9-byte read_measurement answer."""
    co2, t_raw, rh_raw = parse_scd4x_words(data, 3)
    return float(co2), -45.0 + 175.0 * t_raw / 65535.0, 100.0 * rh_raw / 65535.0


class RoomSensors:
    """Reads the sensors that answer; a sensor that stops answering is retried, not fatal."""

    def __init__(self, bus, *, scd4x: bool = True, bh1750: bool = True, sleep=time.sleep):
        self.bus = bus
        self.sleep = sleep
        self.scd4x = scd4x
        self.bh1750 = bh1750
        self.errors = 0
        if scd4x:
            self._command(SCD4X_ADDR, SCD4X_START_PERIODIC)

    def _command(self, addr: int, cmd: int) -> None:
        from smbus2 import i2c_msg

        self.bus.i2c_rdwr(i2c_msg.write(addr, [cmd >> 8, cmd & 0xFF]))

    def _read(self, addr: int, cmd: int, n: int) -> bytes:
        from smbus2 import i2c_msg

        self._command(addr, cmd)
        self.sleep(0.001)
        msg = i2c_msg.read(addr, n)
        self.bus.i2c_rdwr(msg)
        return bytes(msg)

    def read(self, t: float) -> Room:
        """One Room sample at time t with whatever the sensors gave (None where they failed)."""
        co2 = temp = rh = lux = None
        if self.scd4x:
            try:
                ready = parse_scd4x_words(self._read(SCD4X_ADDR, SCD4X_DATA_READY, 3), 1)[0]
                if ready & 0x07FF:
                    co2, temp, rh = scd4x_measurement(
                        self._read(SCD4X_ADDR, SCD4X_READ_MEASUREMENT, 9)
                    )
            except (OSError, ValueError) as exc:
                self.errors += 1
                _LOGGER.warning("SCD4x read failed: %s", exc)
        if self.bh1750:
            try:
                from smbus2 import i2c_msg

                self.bus.i2c_rdwr(i2c_msg.write(BH1750_ADDR, [BH1750_ONE_TIME_HIGH_RES]))
                self.sleep(0.18)  # high-resolution conversion takes up to 180 ms
                msg = i2c_msg.read(BH1750_ADDR, 2)
                self.bus.i2c_rdwr(msg)
                raw = bytes(msg)
                lux = ((raw[0] << 8) | raw[1]) / 1.2
            except OSError as exc:
                self.errors += 1
                _LOGGER.warning("BH1750 read failed: %s", exc)
        return Room(t, temp_c=temp, humidity_pct=rh, light_lux=lux, co2_ppm=co2)


def open_bus(number: int):
    """The Pi's I2C bus; SourceError with a sentence if there is none."""
    try:
        from smbus2 import SMBus
    except ImportError:
        raise SourceError("Room sensors need the smbus2 package (pip install smbus2).") from None
    try:
        return SMBus(number)
    except OSError as exc:
        raise SourceError(f"I2C bus {number} cannot be opened ({exc.strerror}).") from None
