"""Room sensor byte protocols (Sensirion SCD4x, ROHM BH1750) against datasheet values."""

import pytest

from nightlink.edge.sources.room_i2c import RoomSensors, parse_scd4x_words, scd4x_measurement
from nightlink.shared.sensirion import crc8
from tests.edge.test_live import FakeI2CBus


def test_crc8__sensirion_datasheet_example():
    assert crc8(b"\xbe\xef") == 0x92


def test_scd4x__measurement_conversion():
    data = bytes([0x01, 0xF4]) + bytes([crc8(b"\x01\xf4")])
    data += bytes([0x66, 0x67, crc8(b"\x66\x67")]) + bytes([0x5E, 0xB9, crc8(b"\x5e\xb9")])
    co2, temp, rh = scd4x_measurement(data)
    assert co2 == 500
    assert temp == pytest.approx(-45 + 175 * 0x6667 / 65535)
    assert rh == pytest.approx(100 * 0x5EB9 / 65535)


@pytest.mark.parametrize(("data", "match"), [(b"\x01\xf4\x00", "CRC"), (b"\x01", "3 expected")])
def test_scd4x__bad_words(data, match):
    with pytest.raises(ValueError, match=match):
        parse_scd4x_words(data, 1)


def test_room_sensors__read_and_survive_a_missing_sensor():
    bus = FakeI2CBus()
    room = RoomSensors(bus, sleep=lambda s: None).read(100.0)
    assert (room.co2_ppm, round(room.temp_c, 2), round(room.humidity_pct)) == (812, 21.5, 45)
    assert room.light_lux == 100
    bus_without_light = FakeI2CBus()
    sensors = RoomSensors(bus_without_light, sleep=lambda s: None)
    real = bus_without_light.i2c_rdwr

    def no_bh1750(*msgs):
        if msgs[0].addr == 0x23:
            raise OSError(121, "Remote I/O error")
        return real(*msgs)

    bus_without_light.i2c_rdwr = no_bh1750
    room = sensors.read(130.0)
    assert room.light_lux is None and room.co2_ppm == 812 and sensors.errors == 1
