"""Live wearable capture over Bluetooth LE: Heart Rate (0x180D) and Pulse Oximeter (0x1822).

The parsers follow the Bluetooth SIG byte layouts; `WearableLink` keeps one device connected
through the night with bleak, reconnecting with backoff and recording the dropouts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Callable
from datetime import datetime

from bleak import BleakClient
from bleak.exc import BleakError

from nightlink.edge.sources.samples import Beat, HeartRate, SpO2

_LOGGER = logging.getLogger(__name__)

HEART_RATE_SERVICE = "0000180d-0000-1000-8000-00805f9b34fb"
HEART_RATE_MEASUREMENT = "00002a37-0000-1000-8000-00805f9b34fb"
PULSE_OXIMETER_SERVICE = "00001822-0000-1000-8000-00805f9b34fb"
PLX_SPOT_CHECK = "00002a5e-0000-1000-8000-00805f9b34fb"
PLX_CONTINUOUS = "00002a5f-0000-1000-8000-00805f9b34fb"

# IEEE 11073-20601 SFLOAT mantissas that are not numbers: NaN, NRes, +INF, -INF, reserved.
_SFLOAT_SPECIAL = frozenset((0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801))
# PLX Measurement Status bits that mean "no usable value": demonstration data, testing data,
# measurement unavailable, invalid measurement detected.
_PLX_STATUS_UNUSABLE = (1 << 10) | (1 << 11) | (1 << 13) | (1 << 15)
_RR_UNIT_MS = 1000 / 1024  # Heart Rate Measurement RR intervals are in 1/1024 s

Sample = Beat | HeartRate | SpO2


# -- parsers --------------------------------------------------------------------------------------


def sfloat(raw: int) -> float | None:
    """Decode an IEEE-11073 16-bit SFLOAT; None for NaN, NRes, +/-INF and the reserved value."""
    if not 0 <= raw <= 0xFFFF:
        raise ValueError(f"An SFLOAT is 16 bits, and {raw!r} does not fit.")
    mantissa = raw & 0x0FFF
    if mantissa in _SFLOAT_SPECIAL:
        return None
    exponent = raw >> 12
    if exponent >= 8:
        exponent -= 16
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    if exponent < 0:
        return mantissa / 10 ** -exponent  # division keeps 975e-1 at exactly 97.5
    return float(mantissa * 10**exponent)


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise ValueError(f"The {what} notification is truncated: {len(data)} bytes where its "
                         f"flags announce {size} ({data.hex()}).")


def _no_trailing(data: bytes, size: int, what: str) -> None:
    if len(data) > size:
        raise ValueError(f"The {what} notification has {len(data) - size} bytes more than its "
                         f"flags announce ({data.hex()}).")


def parse_heart_rate_measurement(
    data: bytes,
) -> tuple[int, list[float], int | None, bool | None]:
    """Parse Heart Rate Measurement (0x2A37): (bpm, RR intervals in ms, energy kJ, contact).

    contact is None when the sensor does not report skin contact.
    """
    data = bytes(data)
    what = "Heart Rate Measurement"
    _need(data, 2, what)
    flags = data[0]
    if flags & 0x01:
        _need(data, 3, what)
        bpm = data[1] | data[2] << 8
        i = 3
    else:
        bpm = data[1]
        i = 2
    contact = bool(flags & 0x02) if flags & 0x04 else None
    energy = None
    if flags & 0x08:
        _need(data, i + 2, what)
        energy = data[i] | data[i + 1] << 8
        i += 2
    rr: list[float] = []
    if flags & 0x10:
        rest = data[i:]
        if len(rest) % 2:
            raise ValueError(f"The {what} notification ends in half an RR interval "
                             f"({data.hex()}).")
        rr = [v * _RR_UNIT_MS for v in struct.unpack(f"<{len(rest) // 2}H", rest)]
        i = len(data)
    _no_trailing(data, i, what)
    return bpm, rr, energy, contact


def _spo2_pr(data: bytes, what: str) -> tuple[float | None, float | None]:
    spo2, pr = sfloat(data[1] | data[2] << 8), sfloat(data[3] | data[4] << 8)
    if spo2 is not None and not 0 <= spo2 <= 100:
        raise ValueError(f"The {what} notification gives SpO2 {spo2} %, outside 0-100 "
                         f"({data.hex()}).")
    if pr is not None and not 0 <= pr <= 400:
        raise ValueError(f"The {what} notification gives a pulse rate of {pr}/min "
                         f"({data.hex()}).")
    return spo2, pr


def _unusable(data: bytes, status_at: int) -> bool:
    return bool((data[status_at] | data[status_at + 1] << 8) & _PLX_STATUS_UNUSABLE)


def parse_plx_continuous(data: bytes) -> tuple[float | None, float | None]:
    """Parse PLX Continuous Measurement (0x2A5F): (SpO2 %, pulse rate /min), the Normal pair.

    Either is None when the device sent a special value or flagged the measurement as
    unavailable, invalid, or demonstration/testing data.
    """
    data = bytes(data)
    what = "PLX Continuous Measurement"
    _need(data, 5, what)
    flags = data[0]
    i = 5
    if flags & 0x01:  # SpO2PR-Fast
        i += 4
    if flags & 0x02:  # SpO2PR-Slow
        i += 4
    status_at = None
    if flags & 0x04:  # Measurement Status, uint16
        status_at = i
        i += 2
    if flags & 0x08:  # Device and Sensor Status, uint24
        i += 3
    if flags & 0x10:  # Pulse Amplitude Index, SFLOAT
        i += 2
    _need(data, i, what)
    _no_trailing(data, i, what)
    if status_at is not None and _unusable(data, status_at):
        return None, None
    return _spo2_pr(data, what)


def parse_plx_spot_check(data: bytes) -> tuple[float | None, float | None, datetime | None]:
    """Parse PLX Spot-Check Measurement (0x2A5E): (SpO2 %, pulse rate /min, device time).

    The device time is naive (the oximeter's own clock) and None when absent or not set.
    """
    data = bytes(data)
    what = "PLX Spot-Check Measurement"
    _need(data, 5, what)
    flags = data[0]
    i = 5
    when = None
    if flags & 0x01:  # Timestamp, Date Time (7 bytes)
        _need(data, i + 7, what)
        year, month, day, hour, minute, second = struct.unpack_from("<HBBBBB", data, i)
        i += 7
        if not flags & 0x10 and year and month and day:  # bit 4: device clock is not set
            try:
                when = datetime(year, month, day, hour, minute, second)
            except ValueError as exc:
                raise ValueError(f"The {what} notification has an impossible time stamp "
                                 f"({data.hex()}).") from exc
    status_at = None
    if flags & 0x02:
        status_at = i
        i += 2
    if flags & 0x04:
        i += 3
    if flags & 0x08:
        i += 2
    _need(data, i, what)
    _no_trailing(data, i, what)
    if status_at is not None and _unusable(data, status_at):
        return None, None, when
    spo2, pr = _spo2_pr(data, what)
    return spo2, pr, when


# -- the link -------------------------------------------------------------------------------------


class WearableLink:
    """One BLE wearable kept connected through the night; its notifications become samples.

    client_factory(address, disconnected_callback=...) builds the client, `BleakClient` by
    default. `dropouts` holds (last data before the loss, reconnection) pairs, and a dropout
    still open when `run` stops ends at the stop time. Failed first connections are not
    dropouts: the night's data had not started.
    """

    def __init__(
        self,
        address: str,
        on_sample: Callable[[Sample], None],
        *,
        client_factory: Callable[..., BleakClient] | None = None,
        clock: Callable[[], float] = time.time,
        reconnect_min_s: float = 1,
        reconnect_max_s: float = 60,
        on_state: Callable[[str], None] | None = None,
        poll_s: float = 5.0,
        rng: random.Random | None = None,
    ):
        self.address = address
        self.state = "disconnected"
        self.dropouts: list[tuple[float, float]] = []
        self.garbled = 0  # notifications that could not be parsed
        self._on_sample = on_sample
        self._on_state = on_state
        self._factory = client_factory or BleakClient
        self._clock = clock
        self._min_s = reconnect_min_s
        self._max_s = reconnect_max_s
        self._poll_s = poll_s
        self._rng = rng or random.Random()
        self._session = 0  # bumped on every loss: late notifications of a dead link are dropped
        self._has_hr = False
        self._last_beat_t: float | None = None
        self._last_data_t: float | None = None
        self._dropout_start: float | None = None

    def reconnect_delay(self, attempt: int) -> float:
        """Seconds before reconnect attempt `attempt` (0-based): doubling, capped, jittered."""
        delay = min(self._max_s, self._min_s * 2 ** min(attempt, 30))
        return self._rng.uniform(delay / 2, delay)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stream and reconnect until `stop` is set; radio failures never escape."""
        attempt = 0
        try:
            while not stop.is_set():
                self._set_state("connecting")
                lost = asyncio.Event()
                client = None
                connected = False
                try:
                    client = self._factory(self.address,
                                           disconnected_callback=lambda _c, e=lost: e.set())
                    await client.connect()
                    if not await self._subscribe(client, self._session):
                        _LOGGER.error("Wearable %s offers neither Heart Rate Measurement nor "
                                      "PLX measurements; retrying later.", self.address)
                    else:
                        connected = True
                        self._connected()
                        attempt = 0
                        await self._wait_until_lost(client, lost, stop)
                except (TimeoutError, BleakError, OSError) as exc:
                    _LOGGER.warning("Wearable %s: %s: %s", self.address, type(exc).__name__, exc)
                finally:
                    self._session += 1
                    if client is not None:
                        await self._close(client)
                if connected and not stop.is_set():
                    self._lost()
                self._set_state("disconnected")
                if stop.is_set():
                    break
                delay = self.reconnect_delay(attempt)
                attempt += 1
                _LOGGER.info("Reconnecting to wearable %s in %.1f s.", self.address, delay)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
        finally:
            if self._dropout_start is not None:
                self.dropouts.append((self._dropout_start, max(self._dropout_start,
                                                               self._clock())))
                self._dropout_start = None
            self._set_state("disconnected")

    # -- connection steps

    async def _subscribe(self, client, session: int) -> bool:
        services = client.services
        hr = _characteristic(services, HEART_RATE_SERVICE, HEART_RATE_MEASUREMENT)
        plx = _characteristic(services, PULSE_OXIMETER_SERVICE, PLX_CONTINUOUS)
        spot = _characteristic(services, PULSE_OXIMETER_SERVICE, PLX_SPOT_CHECK)
        self._has_hr = hr is not None
        if hr is not None:
            await client.start_notify(hr, lambda _c, d: self._heart_rate(session, d))
        if plx is not None:
            await client.start_notify(plx, lambda _c, d: self._plx(session, d, spot=False))
        if spot is not None:
            await client.start_notify(spot, lambda _c, d: self._plx(session, d, spot=True))
        return hr is not None or plx is not None or spot is not None

    async def _wait_until_lost(self, client, lost: asyncio.Event, stop: asyncio.Event) -> None:
        # The disconnected callback is the signal; polling is_connected is the backstop.
        while not lost.is_set() and not stop.is_set():
            waits = [asyncio.ensure_future(lost.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waits, timeout=self._poll_s,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if not client.is_connected:
                return

    async def _close(self, client) -> None:
        try:
            await client.disconnect()
        except (TimeoutError, BleakError, OSError) as exc:
            _LOGGER.debug("Disconnecting wearable %s: %s", self.address, exc)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self._on_state is not None:
                self._on_state(state)

    def _connected(self) -> None:
        now = self._clock()
        if self._dropout_start is not None:
            self.dropouts.append((self._dropout_start, max(self._dropout_start, now)))
            _LOGGER.info("Wearable %s is back after %.0f s without data.", self.address,
                         now - self._dropout_start)
            self._dropout_start = None
        else:
            _LOGGER.info("Wearable %s connected.", self.address)
        self._last_data_t = now
        self._set_state("connected")

    def _lost(self) -> None:
        self._dropout_start = self._last_data_t
        _LOGGER.warning("Lost wearable %s.", self.address)

    # -- notifications

    def _heart_rate(self, session: int, data: bytearray) -> None:
        if session != self._session:
            return
        now = self._clock()
        try:
            bpm, rrs, _energy, contact = parse_heart_rate_measurement(data)
        except ValueError as exc:
            self._garbled(exc)
            return
        self._last_data_t = now
        if contact is False:
            return
        rrs = [rr for rr in rrs if rr > 0]
        if not rrs:
            if bpm > 0:
                self._on_sample(HeartRate(t=now, bpm=float(bpm)))
            return
        # The last beat is at the notification time and the earlier ones walk back by their RR;
        # a notification that arrives early is pushed so its first beat keeps its RR after the
        # previous notification's last beat (no overlap, no reordering).
        end = now
        total_s = sum(rrs) / 1000
        if self._last_beat_t is not None and end < self._last_beat_t + total_s:
            end = self._last_beat_t + total_s
        times, after_ms = [], 0.0
        for rr in reversed(rrs):
            times.append(end - after_ms / 1000)
            after_ms += rr
        for t, rr in zip(reversed(times), rrs, strict=True):
            self._on_sample(Beat(t=t, rr_ms=rr))
        self._last_beat_t = end

    def _plx(self, session: int, data: bytearray, *, spot: bool) -> None:
        if session != self._session:
            return
        now = self._clock()
        try:
            if spot:
                spo2, pulse, _when = parse_plx_spot_check(data)
            else:
                spo2, pulse = parse_plx_continuous(data)
        except ValueError as exc:
            self._garbled(exc)
            return
        self._last_data_t = now
        if spo2 is not None:
            self._on_sample(SpO2(t=now, pct=spo2))
        if pulse is not None and not self._has_hr:
            self._on_sample(HeartRate(t=now, bpm=pulse))

    def _garbled(self, exc: ValueError) -> None:
        self.garbled += 1
        _LOGGER.warning("Skipped a notification from wearable %s: %s", self.address, exc)


def _characteristic(services, service_uuid: str, char_uuid: str):
    service = services.get_service(service_uuid)
    return None if service is None else service.get_characteristic(char_uuid)
