"""BLE wearable capture: SIG byte layouts, and a night with a dropout through the real BleakClient.

Only the radio is simulated: `FakeRadio` is a bleak backend (the layer bleak's own BlueZ,
CoreBluetooth and WinRT backends sit in), plugged into the real `bleak.BleakClient` with
real GATT service objects. It replays notification bytes built here from the specs.
"""

import asyncio
import struct
from datetime import datetime

import pytest
from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError
from hypothesis import given
from hypothesis import strategies as st

from nightlink.edge.sources import ble
from nightlink.edge.sources.samples import Beat, HeartRate, SpO2

T0 = 1_768_514_400.0  # 2026-01-15 22:00:00 UTC
ADDRESS = "C4:7C:8D:6A:12:34"


# -- notification bytes, written from the SIG specs -------------------------------------------


def sf(mantissa: int, exponent: int = 0) -> int:
    """IEEE-11073 SFLOAT: 4-bit signed exponent over a 12-bit signed mantissa."""
    return (exponent & 0xF) << 12 | (mantissa & 0xFFF)


def hr_bytes(bpm: int, rr_ticks=(), *, wide=False, contact=None, energy=None) -> bytes:
    """Heart Rate Measurement (0x2A37); rr_ticks in 1/1024 s."""
    flags = 0x01 if wide else 0
    if contact is not None:
        flags |= 0x04 | (0x02 if contact else 0)
    if energy is not None:
        flags |= 0x08
    if rr_ticks:
        flags |= 0x10
    out = bytes([flags]) + (struct.pack("<H", bpm) if wide else bytes([bpm]))
    if energy is not None:
        out += struct.pack("<H", energy)
    return out + b"".join(struct.pack("<H", r) for r in rr_ticks)


def plx_bytes(spo2: int, pr: int, *, status=None, fast=None, slow=None, dss=None, pai=None):
    """PLX Continuous Measurement (0x2A5F); spo2 in tenths of a percent, pr in /min."""
    flags, tail = 0, b""
    for bit, pair in ((0x01, fast), (0x02, slow)):
        if pair is not None:
            flags |= bit
            tail += struct.pack("<HH", sf(pair[0]), sf(pair[1]))
    if status is not None:
        flags |= 0x04
        tail += struct.pack("<H", status)
    if dss is not None:
        flags |= 0x08
        tail += dss.to_bytes(3, "little")
    if pai is not None:
        flags |= 0x10
        tail += struct.pack("<H", sf(pai, -1))
    return bytes([flags]) + struct.pack("<HH", sf(spo2, -1), sf(pr)) + tail


# -- sfloat -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "value"), [
    (0x0048, 72.0),
    (0xF3CF, 97.5),  # 975 x 10^-1
    (0xFF9C, -10.0),  # -100 x 10^-1
    (0x2001, 100.0),  # 1 x 10^2
    (0x0000, 0.0),
    (0x07FD, 2045.0),
    (0x0803, -2045.0),
])
def test_sfloat__golden_values(raw, value):
    assert ble.sfloat(raw) == value


@pytest.mark.parametrize("raw", [0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801, 0xF7FF, 0x1800])
def test_sfloat__special_values_are_none(raw):
    assert ble.sfloat(raw) is None


@pytest.mark.parametrize("raw", [-1, 0x10000])
def test_sfloat__more_than_16_bits(raw):
    with pytest.raises(ValueError, match="16 bits"):
        ble.sfloat(raw)


@given(st.integers(-2045, 2045), st.integers(-8, 7))
def test_sfloat__round_trips_every_finite_value(mantissa, exponent):
    assert ble.sfloat(sf(mantissa, exponent)) == pytest.approx(mantissa * 10.0**exponent)


# -- Heart Rate Measurement ---------------------------------------------------------------------


def test_parse_heart_rate_measurement__uint8_no_rr():
    assert ble.parse_heart_rate_measurement(b"\x00\x48") == (72, [], None, None)


def test_parse_heart_rate_measurement__every_field():
    data = bytes([0x1F, 0x48, 0x00, 0x34, 0x12, 0x00, 0x04, 0x00, 0x02])
    assert data == hr_bytes(72, [1024, 512], wide=True, contact=True, energy=0x1234)
    assert ble.parse_heart_rate_measurement(data) == (72, [1000.0, 500.0], 0x1234, True)


@pytest.mark.parametrize(("flags", "contact"), [(0x00, None), (0x02, None), (0x04, False),
                                                (0x06, True)])
def test_parse_heart_rate_measurement__contact_bits(flags, contact):
    assert ble.parse_heart_rate_measurement(bytes([flags, 60]))[3] is contact


def test_parse_heart_rate_measurement__rr_in_1024ths():
    _, rr, _, _ = ble.parse_heart_rate_measurement(hr_bytes(58, [1057, 998, 1100]))
    assert rr == [1057 * 1000 / 1024, 998 * 1000 / 1024, 1100 * 1000 / 1024]


@pytest.mark.parametrize(("data", "message"), [
    (b"", "truncated"),
    (b"\x00", "truncated"),
    (b"\x01\x48", "truncated"),  # uint16 heart rate, one byte of it
    (b"\x08\x48\x01", "truncated"),  # energy expended cut short
    (b"\x10\x48\x00\x04\x01", "half an RR"),
    (b"\x00\x48\x00", "more than its flags"),
])
def test_parse_heart_rate_measurement__garbled(data, message):
    with pytest.raises(ValueError, match=message):
        ble.parse_heart_rate_measurement(data)


# -- PLX ----------------------------------------------------------------------------------------


def test_parse_plx_continuous__normal_pair():
    assert plx_bytes(975, 62) == bytes([0x00, 0xCF, 0xF3, 0x3E, 0x00])
    assert ble.parse_plx_continuous(plx_bytes(975, 62)) == (97.5, 62.0)


def test_parse_plx_continuous__every_optional_field():
    data = plx_bytes(964, 58, fast=(95, 60), slow=(97, 57), status=1 << 7, dss=0x000100, pai=42)
    assert len(data) == 1 + 4 + 4 + 4 + 2 + 3 + 2
    assert ble.parse_plx_continuous(data) == (96.4, 58.0)


@pytest.mark.parametrize("bit", [10, 11, 13, 15])
def test_parse_plx_continuous__unusable_status(bit):
    assert ble.parse_plx_continuous(plx_bytes(975, 62, status=1 << bit)) == (None, None)


def test_parse_plx_continuous__questionable_status_keeps_value():
    assert ble.parse_plx_continuous(plx_bytes(975, 62, status=1 << 14)) == (97.5, 62.0)


def test_parse_plx_continuous__nan_spo2():
    data = bytes([0]) + struct.pack("<HH", 0x07FF, sf(62))
    assert ble.parse_plx_continuous(data) == (None, 62.0)


@pytest.mark.parametrize(("data", "message"), [
    (b"\x00\xcf\xf3\x3e", "truncated"),
    (bytes([0x04]) + plx_bytes(975, 62)[1:], "truncated"),  # status announced, missing
    (bytes([0x01]) + plx_bytes(975, 62)[1:] + b"\x00\x00", "truncated"),  # half a fast pair
    (plx_bytes(975, 62) + b"\x00", "more than its flags"),
    (plx_bytes(1500, 62), "outside 0-100"),
])
def test_parse_plx_continuous__garbled(data, message):
    with pytest.raises(ValueError, match=message):
        ble.parse_plx_continuous(data)


def test_parse_plx_spot_check__with_time_stamp():
    data = (bytes([0x03]) + struct.pack("<HH", sf(981, -1), sf(64))
            + struct.pack("<HBBBBB", 2026, 1, 15, 23, 1, 2) + struct.pack("<H", 1 << 7))
    assert ble.parse_plx_spot_check(data) == (98.1, 64.0, datetime(2026, 1, 15, 23, 1, 2))


def test_parse_plx_spot_check__clock_not_set():
    data = (bytes([0x11]) + struct.pack("<HH", sf(981, -1), sf(64))
            + struct.pack("<HBBBBB", 2000, 1, 1, 0, 0, 3))
    assert ble.parse_plx_spot_check(data) == (98.1, 64.0, None)


@pytest.mark.parametrize("data", [
    bytes([0x01]) + struct.pack("<HH", sf(981, -1), sf(64)) + b"\xea\x07\x01",
    bytes([0x01]) + struct.pack("<HH", sf(981, -1), sf(64)) + struct.pack("<HBBBBB", 2026, 13, 1,
                                                                          0, 0, 0),
])
def test_parse_plx_spot_check__garbled(data):
    with pytest.raises(ValueError, match="truncated|impossible time stamp"):
        ble.parse_plx_spot_check(data)


# -- the radio layer: a bleak backend with a scripted wearable on the other side ----------------


class Clock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


def gatt(profile: dict[str, list[str]]) -> BleakGATTServiceCollection:
    services = BleakGATTServiceCollection()
    handle = 1
    for service_uuid, chars in profile.items():
        service = BleakGATTService(None, handle, service_uuid)
        services.add_service(service)
        handle += 1
        for char_uuid in chars:
            services.add_characteristic(BleakGATTCharacteristic(
                None, handle, char_uuid, ["notify"], lambda: 20, service))
            handle += 3  # value handle, then the CCCD
    return services


HR_AND_PLX = {ble.HEART_RATE_SERVICE: [ble.HEART_RATE_MEASUREMENT],
              ble.PULSE_OXIMETER_SERVICE: [ble.PLX_CONTINUOUS],
              "0000180f-0000-1000-8000-00805f9b34fb": ["00002a19-0000-1000-8000-00805f9b34fb"]}
KIND_UUID = {"hr": ble.HEART_RATE_MEASUREMENT, "plx": ble.PLX_CONTINUOUS}


class Wearable:
    """The device on the far side of the radio, replaying a script shared by every connection.

    Script items: ("hr"|"plx", t, bytes) notifications; ("drop", t) an unsolicited disconnect;
    ("vanish", t) a link that dies without a disconnect event; ("late", t, bytes) an HR
    notification the dead link delivers at the next connect attempt; ("back", t) the time of
    the next connection.
    """

    def __init__(self, script, *, profile=HR_AND_PLX, failures=()):
        self.clock = Clock()
        self.script = list(script)
        self.pos = 0
        self.profile = profile
        self.failures = list(failures)  # per connect attempt: True = device not found
        self.connects = 0
        self.done = asyncio.Event()
        self.stale = None  # (dead radio, bytes): delivered once the link has moved on

    def attach(self, radio):
        self.connects += 1
        if self.failures and self.failures.pop(0):
            raise BleakError(f"Device with address {radio.address} was not found.")
        if self.stale is not None:
            dead, data = self.stale
            self.stale = None
            dead.callbacks[ble.HEART_RATE_MEASUREMENT](bytearray(data))
        if self.pos < len(self.script) and self.script[self.pos][0] == "back":
            self.clock.now = self.script[self.pos][1]
            self.pos += 1
        radio.services = gatt(self.profile)
        radio.connected = True
        asyncio.get_running_loop().create_task(self.play(radio))

    async def play(self, radio):
        await radio.subscribed.wait()
        while self.pos < len(self.script):
            kind, t, *payload = self.script[self.pos]
            self.pos += 1
            self.clock.now = t
            if kind in ("drop", "vanish"):
                radio.connected = False
                if kind == "drop":
                    radio._disconnected_callback()
                if self.pos < len(self.script) and self.script[self.pos][0] == "late":
                    self.stale = (radio, self.script[self.pos][2])
                    self.pos += 1
                if self.pos == len(self.script):
                    self.done.set()
                return
            radio.callbacks[KIND_UUID[kind]](bytearray(payload[0]))
            await asyncio.sleep(0)
        self.done.set()


class FakeRadio(BaseBleakClient):
    """A bleak backend whose air interface is a `Wearable` object."""

    def __init__(self, address, *, wearable, **kwargs):
        super().__init__(address, **kwargs)
        self.wearable = wearable
        self.connected = False
        self.callbacks = {}
        self.subscribed = asyncio.Event()

    @property
    def mtu_size(self):
        return 23

    @property
    def is_connected(self):
        return self.connected

    async def connect(self, pair, **kwargs):
        await asyncio.sleep(0)
        self.wearable.attach(self)

    async def disconnect(self):
        self.connected = False

    async def pair(self, *args, **kwargs):
        pass

    async def unpair(self):
        pass

    async def read_gatt_char(self, characteristic, **kwargs):
        raise BleakError("The test wearable has no readable characteristics.")

    async def read_gatt_descriptor(self, descriptor, **kwargs):
        raise BleakError("The test wearable has no descriptors.")

    async def write_gatt_char(self, characteristic, data, response):
        raise BleakError("The test wearable takes no writes.")

    async def write_gatt_descriptor(self, descriptor, data):
        raise BleakError("The test wearable takes no writes.")

    async def start_notify(self, characteristic, callback, **kwargs):
        self.callbacks[characteristic.uuid] = callback
        wanted = {u for chars in self.wearable.profile.values() for u in chars} & {
            ble.HEART_RATE_MEASUREMENT, ble.PLX_CONTINUOUS, ble.PLX_SPOT_CHECK}
        if set(self.callbacks) == wanted:
            self.subscribed.set()

    async def stop_notify(self, characteristic):
        self.callbacks.pop(characteristic.uuid, None)


def night(wearable, *, stop_when_done=True, run_for=None, **kwargs):
    """Run a WearableLink against the wearable through the real BleakClient; return it."""
    samples, states = [], []

    def factory(address, **kw):
        return BleakClient(address, backend=FakeRadio, wearable=wearable, **kw)

    link = ble.WearableLink(ADDRESS, samples.append, client_factory=factory,
                            clock=wearable.clock, reconnect_min_s=0.001, reconnect_max_s=0.004,
                            on_state=states.append, **kwargs)

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(link.run(stop))
        if run_for is None:
            await wearable.done.wait()
        else:
            await run_for(wearable)
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(main(), 10))
    return link, samples, states


def beat_script(groups, start=T0):
    """HR notifications for RR groups (1/1024 s ticks), each sent at its last beat's time.

    Returns the script items and the beats they carry, by notification.
    """
    items, carried, t = [], [], start
    for ticks in groups:
        beats = []
        for tick in ticks:
            t += tick / 1024
            beats.append(Beat(t=t, rr_ms=tick * 1000 / 1024))
        items.append(("hr", t, hr_bytes(round(60 * 1024 / ticks[-1]), ticks)))
        carried.append(beats)
    return items, carried


def assert_same_beats(got, want):
    assert [b.rr_ms for b in got] == [b.rr_ms for b in want]
    assert [b.t for b in got] == pytest.approx([b.t for b in want], abs=1e-9)


# -- the link -----------------------------------------------------------------------------------


def test_wearable_link__beats_and_spo2_around_a_dropout():
    groups = [[1024], [1000, 1048], [990], [1010, 1020, 1005], [1030], [998, 1002], [1012]]
    items, carried = beat_script(groups)
    t_drop = items[3][1] + 4.0  # supervision timeout after the 4th notification
    # Beats the strap measured while the link was down are gone; it resumes 90 s later.
    after, carried_after = beat_script(groups[4:], start=items[3][1] + 90.0)
    script = [items[0], ("plx", T0 + 1.5, plx_bytes(975, 60)), *items[1:4],
              ("drop", t_drop), ("late", t_drop + 0.5, hr_bytes(60, [1024])),
              ("back", after[0][1] - 1.5),
              after[0], ("plx", after[0][1] + 0.1, plx_bytes(962, 61)), *after[1:]]
    wearable = Wearable(script, failures=[False, True, True])  # two failed reconnects

    link, samples, states = night(wearable)

    want_beats = [b for group in carried[:4] + carried_after for b in group]
    assert_same_beats([s for s in samples if isinstance(s, Beat)], want_beats)
    assert [s for s in samples if isinstance(s, SpO2)] == [
        SpO2(t=T0 + 1.5, pct=97.5), SpO2(t=after[0][1] + 0.1, pct=96.2)]
    # With an HR strap present the oximeter's pulse rate is not passed on.
    assert not [s for s in samples if isinstance(s, HeartRate)]
    assert link.dropouts == [(items[3][1], after[0][1] - 1.5)]
    assert states == ["connecting", "connected", "disconnected", "connecting", "disconnected",
                      "connecting", "disconnected", "connecting", "connected", "disconnected"]
    assert wearable.connects == 4
    assert link.state == "disconnected"
    assert link.garbled == 0


def test_wearable_link__samples_in_order_without_duplicates():
    groups = [[1000 + 7 * i, 990 - 3 * i] for i in range(20)]
    items, carried = beat_script(groups[:10])
    after, carried_after = beat_script(groups[10:], start=items[-1][1] + 60)
    script = items + [("drop", items[-1][1] + 1), ("back", after[0][1] - 2.5)] + after
    link, samples, _ = night(Wearable(script))
    times = [s.t for s in samples]
    assert times == sorted(times)
    assert len(set(times)) == len(times) == 40
    assert_same_beats(samples, [b for group in carried + carried_after for b in group])
    assert link.dropouts == [(items[-1][1], after[0][1] - 2.5)]


def test_wearable_link__early_notification_keeps_beat_spacing():
    # The second notification arrives 0.3 s before its last beat could have happened.
    script = [("hr", T0 + 1.0, hr_bytes(60, [1024])),
              ("hr", T0 + 2.7, hr_bytes(60, [1024, 1024])),
              ("hr", T0 + 5.0, hr_bytes(60, [1024]))]
    _, samples, _ = night(Wearable(script))
    assert [s.t for s in samples] == pytest.approx([T0 + 1.0, T0 + 2.0, T0 + 3.0, T0 + 5.0])
    assert [s.rr_ms for s in samples] == [1000.0] * 4


def test_wearable_link__garbled_notifications_are_skipped(caplog):
    script = [("hr", T0 + 1, hr_bytes(60, [1024])),
              ("hr", T0 + 2, b"\x10\x3c\x00"),  # half an RR interval
              ("plx", T0 + 2.5, b"\x04\xcf\xf3"),  # truncated
              ("hr", T0 + 3, hr_bytes(60, [1024, 1024]))]
    link, samples, _ = night(Wearable(script))
    assert link.garbled == 2
    assert [s.t for s in samples] == pytest.approx([T0 + 1, T0 + 2, T0 + 3])
    assert "half an RR interval" in caplog.text
    assert link.dropouts == []


def test_wearable_link__heart_rate_without_rr_and_no_contact():
    script = [("hr", T0 + 1, hr_bytes(57)),
              ("hr", T0 + 2, hr_bytes(0, contact=False)),
              ("hr", T0 + 3, hr_bytes(58, [1000], contact=False)),
              ("hr", T0 + 4, hr_bytes(300, wide=True, contact=True))]
    _, samples, _ = night(Wearable(script))
    assert samples == [HeartRate(t=T0 + 1, bpm=57.0), HeartRate(t=T0 + 4, bpm=300.0)]


def test_wearable_link__oximeter_only_gives_pulse_rate():
    profile = {ble.PULSE_OXIMETER_SERVICE: [ble.PLX_CONTINUOUS]}
    script = [("plx", T0 + 1, plx_bytes(971, 55)),
              ("plx", T0 + 2, plx_bytes(971, 55, status=1 << 13)),  # measurement unavailable
              ("plx", T0 + 3, plx_bytes(968, 56, status=1 << 7))]
    _, samples, _ = night(Wearable(script, profile=profile))
    assert samples == [SpO2(t=T0 + 1, pct=97.1), HeartRate(t=T0 + 1, bpm=55.0),
                       SpO2(t=T0 + 3, pct=96.8), HeartRate(t=T0 + 3, bpm=56.0)]


def test_wearable_link__link_dying_silently_is_noticed_by_polling():
    script = [("hr", T0 + 1, hr_bytes(60, [1024])), ("vanish", T0 + 10),
              ("back", T0 + 30), ("hr", T0 + 31, hr_bytes(60, [1024]))]
    link, samples, _ = night(Wearable(script), poll_s=0.005)
    assert [s.t for s in samples] == [T0 + 1, T0 + 31]
    assert link.dropouts == [(T0 + 1, T0 + 30)]


def test_wearable_link__stop_during_a_dropout_closes_it():
    script = [("hr", T0 + 1, hr_bytes(60, [1024])), ("drop", T0 + 5)]
    wearable = Wearable(script, failures=[False] + [True] * 1000)

    async def until_three_retries(w):
        await w.done.wait()
        while w.connects < 4:
            await asyncio.sleep(0.001)
        w.clock.now = T0 + 600

    link, _, states = night(wearable, run_for=until_three_retries)
    assert link.dropouts == [(T0 + 1, T0 + 600)]
    assert states[-1] == "disconnected"
    assert link.state == "disconnected"


def test_wearable_link__unreachable_device_never_crashes():
    wearable = Wearable([], failures=[True] * 1000)

    async def a_few_attempts(w):
        while w.connects < 5:
            await asyncio.sleep(0.001)

    link, samples, states = night(wearable, run_for=a_few_attempts)
    assert samples == [] and link.dropouts == []
    assert set(states) == {"connecting", "disconnected"}


def test_wearable_link__device_without_the_profiles_is_retried(caplog):
    wearable = Wearable([], profile={"0000180f-0000-1000-8000-00805f9b34fb":
                                     ["00002a19-0000-1000-8000-00805f9b34fb"]})

    async def a_few_attempts(w):
        while w.connects < 3:
            await asyncio.sleep(0.001)

    link, samples, _ = night(wearable, run_for=a_few_attempts)
    assert samples == [] and link.dropouts == []
    assert "offers neither Heart Rate Measurement nor PLX" in caplog.text


def test_reconnect_delay__doubles_with_jitter_up_to_the_cap():
    link = ble.WearableLink(ADDRESS, lambda s: None, reconnect_min_s=1, reconnect_max_s=60)
    for attempt, cap in [(0, 1), (1, 2), (2, 4), (5, 32), (6, 60), (40, 60), (10_000, 60)]:
        delays = [link.reconnect_delay(attempt) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays)
        assert len(set(delays)) > 1
