"""`nightlink edge run`: the live bedside node.

Every configured source runs as its own task and pushes timestamped samples into the
pipeline; an epoch closer stores each epoch a few seconds after it ends. A source that
fails is logged, marked in the store's source table and retried; the others go on.
On SIGTERM or Ctrl-C the node stops its sources and exits between two epochs, so nothing
is half-written (every epoch is one transaction).

The event loop runs no statement on the store: the pipeline (draining samples, closing
epochs and nights) and every read or write of the node's own run in one thread of their
own, one at a time and in order (`_stored`), and the Nightscout endpoint's in worker
threads. A store that waits (another program writing it, an SD card stalling) holds that
thread, not the microphone's, wearable's or clocks' links, nor the endpoint's other
requests and sockets. The tests enforce it (`NIGHTLINK_STRICT_LOOP=1`, nightlink/sql.py).

Raw audio stays in memory, one epoch at a time; it is written to disk only when the
configuration names a file for it (`[audio] keep_raw`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from nightlink.backoff import Backoff
from nightlink.edge.features.audio import SAMPLE_RATE
from nightlink.edge.features.pipeline import EdgePipeline
from nightlink.edge.features.reducers import CGM_MAX_AGE_MIN
from nightlink.edge.node.config import EdgeConfig
from nightlink.edge.node.nights import (
    RECORDING_STREAMS,
    REPORTED_SCHEDULE_META,
    SCHEDULE_META,
    NightCloser,
    close_before_change,
    partial_summary,
)
from nightlink.edge.node.zone import ZONE_META, zone_name
from nightlink.edge.sources.cgm import (
    FUTURE_S,
    NightscoutFollower,
    UploaderCheck,
    entry_to_glucose,
    glucose_to_entry,
    readings_between,
)
from nightlink.edge.sources.microphone import KeptAudio, LiveAudio
from nightlink.edge.sources.samples import Beat, SourceError
from nightlink.edge.store import EdgeStore, free_bytes
from nightlink.shared.epoch import EPOCH_S, epoch_index, epoch_start, iso_epoch
from nightlink.sql import DatabaseError

_LOGGER = logging.getLogger(__name__)
RETRY_MIN_S = 2.0
RETRY_MAX_S = 60.0
PRUNE_EVERY_EPOCHS = 120  # apply the retention window once an hour
CHECK_NIGHTS_EVERY_EPOCHS = 2  # whether a night's wake time has passed, once a minute
ROOM_EVERY_S = 5.0  # room sensors read this often
CLOCK_STEP_S = 300.0  # the clock moving by more than this at once is a step, not a delay
FUTURE_STORE_S = 86400.0  # stored epochs further ahead of the clock than this were misdated
LATE_MAX_S = 86400.0  # a reading arriving after newer ones gets its epoch up to a day back
UNSTORED_MAX = 120  # readings refused by the store kept for the clocks: hours of uploads
RECALIBRATE_S = 6 * 3600.0  # the predicted-low threshold follows the person's recent nights
RECALIBRATE_RETRY_S = 600.0  # ... and is tried again this soon when the store cannot be read
BEATS_AT_ONCE = 600  # beats buffered (10 minutes of a strap's) are written even between closes


@dataclass
class TimeBase:
    """Time for the node. By default the system clock itself, so a correction (NTP setting a
    Raspberry Pi's clock after a boot without a real-time clock, a resume from suspend) is
    followed; with `t0` or `speed` > 1 a virtual clock starting at t0 and running `speed`
    times faster (tests, demos)."""

    speed: float = 1.0
    t0: float = 0.0
    m0: float = 0.0

    def __post_init__(self):
        self.wall = self.speed == 1.0 and not self.t0
        self.t0 = self.t0 or time.time()
        self.m0 = time.monotonic()

    def now(self) -> float:
        if self.wall:
            return time.time()
        return self.t0 + (time.monotonic() - self.m0) * self.speed

    def offset(self) -> float:
        """now() less the monotonic clock's elapsed time: constant while the clock runs, it
        jumps when the clock is set (or the machine resumes: the monotonic clock stops in
        suspend), and not when the node is merely slow."""
        return self.now() - time.monotonic() * self.speed


class LiveNode:
    """All sources of one bedside node, feeding one pipeline and one store."""

    def __init__(
        self,
        cfg: EdgeConfig,
        store: EdgeStore,
        *,
        clock: TimeBase | None = None,
        audio_backend=None,
        i2c_bus=None,
        wearable_client_factory: Callable | None = None,
        follower_client=None,
    ):
        self.cfg = cfg
        self.store = store
        self.clock = clock or TimeBase()
        self.audio_backend = audio_backend
        self.i2c_bus = i2c_bus
        self.wearable_client_factory = wearable_client_factory
        self.follower_client = follower_client
        self.samples: queue.SimpleQueue = queue.SimpleQueue()  # (kind, payload) from any thread
        self.epochs_closed = 0
        self.last_closed: int | None = None  # the last epoch this run stored
        self._offset = self.clock.offset()  # to tell a clock step from a slow loop
        self.clock_rows = 0  # rows received from desk clocks
        self.sync_client = None
        self.pipeline: EdgePipeline | None = None
        self._beats: list[tuple[float, float]] = []  # drained, not yet in the store
        self.live_audio: LiveAudio | None = None
        self.first_epoch: int | None = None  # the first epoch this run closes
        self.server_port: int | None = None
        self._last_entry_ms = 0
        self._late_cursor = 0  # srvModified of the last entry change looked at for late ones
        self._late_held: list = []  # late readings the store refused to record, tried again
        # readings of uploads the store refused (a full disk): the clocks get them from here
        self.unstored: deque = deque(maxlen=UNSTORED_MAX)
        self.held_at_stop = 0  # complete epochs not stored when the node stopped
        self.refusing = False  # the store refuses the epochs' writes now
        self.late_readings = 0  # readings that arrived after newer ones, given epoch records
        self.uploaders = UploaderCheck()
        self._uploaders_warned = False
        self.nights: NightCloser | None = None
        self._meta_due: dict[str, str] = {}  # meta the store refused at the start
        self._store_pool: ThreadPoolExecutor | None = None  # the store's thread, while running
        self._store_ident: int | None = None
        self._keep: KeptAudio | None = None

    # -- helpers -----------------------------------------------------------------------

    async def _stored(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) in the store's thread (one thread: the calls run in the order
        made), its result or exception; the event loop goes on meanwhile."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._store_pool, call)

    def _status(self, source: str, kind: str, state: str, detail: str = "") -> None:
        """Record a source's state for `nightlink edge status`, in the store's thread without
        waiting for it; a store that refuses the write (a full disk) leaves the old state
        there, and must not stop the caller, which is often reporting that very failure."""
        pool = self._store_pool
        if pool is not None and threading.get_ident() != self._store_ident:
            pool.submit(self._set_status, source, kind, state, detail)
        else:
            self._set_status(source, kind, state, detail)

    def _set_status(self, source: str, kind: str, state: str, detail: str) -> None:
        try:
            self.store.set_source(source, kind, state, detail)
        except DatabaseError as exc:
            _LOGGER.debug("the state of %s was not recorded: %s", source, exc)

    async def _retrying(self, name: str, kind: str, body, stop: asyncio.Event) -> None:
        """Run body() until stop; on any failure mark the source and retry after a back-off
        with jitter (a source never dies silently: an unexpected error is logged with its
        trace and retried like the others)."""
        backoff = Backoff(RETRY_MIN_S, RETRY_MAX_S)
        while not stop.is_set():
            try:
                await body(stop)
                return
            except Exception as exc:  # noqa: BLE001 - any failure is retried, never fatal
                delay = backoff.next()
                expected = isinstance(exc, SourceError | OSError | ValueError | RuntimeError
                                      | DatabaseError)
                _LOGGER.warning("%s failed: %s; retrying in %.0f s", name,
                                exc if expected else f"{type(exc).__name__}: {exc}", delay,
                                exc_info=not expected)
                self._status(name, kind, "retrying", str(exc))
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay / self.clock.speed)
            except TimeoutError:
                pass

    # -- sources -----------------------------------------------------------------------

    async def _audio(self, stop: asyncio.Event) -> None:
        backend = self.audio_backend
        if backend is None:
            try:
                import sounddevice as backend  # noqa: N813
            except (ImportError, OSError) as exc:
                raise SourceError(
                    f"Live audio needs PortAudio (apt-get install libportaudio2): {exc}."
                ) from None
        clock = self.clock
        rate = self.cfg.audio.sample_rate
        if rate < SAMPLE_RATE:
            _LOGGER.warning("[audio] sample_rate %d Hz: below %d Hz the features that need the "
                            "whole 0-8 kHz band are not measured, so sleep stages and the audio "
                            "apnea estimate read less of the room; use 16000 or more if the "
                            "microphone allows", rate, SAMPLE_RATE)

        def callback(indata, frames, time_info, status):
            del time_info
            overflow = bool(status and getattr(status, "input_overflow", False))
            if status:
                _LOGGER.warning("audio input status: %s", status)
            t_first = clock.now() - frames / rate
            self.samples.put(("audio", (indata[:, 0].copy(), t_first, overflow)))

        stream = backend.InputStream(
            samplerate=rate, channels=1, dtype="int16", blocksize=rate // 2,
            device=self.cfg.audio.device, callback=callback,
        )
        with stream:
            self._status("audio", "microphone", "live")
            await stop.wait()

    async def _wearable(self, stop: asyncio.Event) -> None:
        from nightlink.edge.sources.ble import WearableLink

        link = WearableLink(
            self.cfg.wearable.address,
            lambda s: self.samples.put(("sample", s)),
            client_factory=self.wearable_client_factory,
            clock=self.clock.now,
        )
        self._status("wearable", "ble", "connecting")
        await link.run(stop)

    async def _room(self, stop: asyncio.Event) -> None:
        from nightlink.edge.sources.room_i2c import RoomSensors, open_bus

        bus = self.i2c_bus if self.i2c_bus is not None else open_bus(self.cfg.room.i2c_bus)
        sensors = RoomSensors(bus, scd4x=self.cfg.room.scd4x, bh1750=self.cfg.room.bh1750,
                              sleep=lambda s: None)
        self._status("room", "i2c", "live")
        while not stop.is_set():
            t = self.clock.now()
            self.samples.put(("sample", await asyncio.to_thread(sensors.read, t)))
            await asyncio.sleep(ROOM_EVERY_S / self.clock.speed)

    async def _nightscout(self, stop: asyncio.Event) -> None:
        import uvicorn

        from nightlink.edge.node.nightscout_site import create_app

        ns = self.cfg.nightscout
        app = create_app(self.store, ns.api_secret, development=self.cfg.development,
                         name=ns.title or "Nightlink edge", keep=self.unstored.extend)
        config = uvicorn.Config(app, host=ns.host, port=ns.port, log_level="warning",
                                ws="websockets-sansio",
                                lifespan="off")
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # the node handles signals
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if task.done():
            task.result()
            raise SourceError(f"The Nightscout endpoint could not listen on port {ns.port}.")
        self.server_port = server.servers[0].sockets[0].getsockname()[1]
        try:
            self._status("nightscout", "upload", "listening", f"port {self.server_port}")
            await stop.wait()
        finally:  # whatever ends this, the server goes with it
            server.should_exit = True
            await task

    async def _follower(self, stop: asyncio.Event) -> None:
        """Poll the followed site every interval_s. One follower for the whole run, starting
        after the newest reading already stored (a restart does not fetch weeks again); a
        site that fails is retried after a back-off with jitter (at least what its
        Retry-After asks), said in the log and the source's status, and polling goes on."""
        fo = self.cfg.follower
        # the newest reading stored, not one dated ahead of the clock
        newest = await self._stored(self.store.entries, count=1, type_="sgv",
                                    date_lte=int((self.clock.now() + FUTURE_S) * 1000))
        follower = NightscoutFollower(fo.url, api_secret=fo.api_secret or None,
                                      token=fo.token or None, interval_s=fo.interval_s,
                                      client=self.follower_client, clock=self.clock.now,
                                      since_ms=int(newest[0]["date"]) if newest else None)
        self._status("follower", "nightscout", "following", follower.url)
        backoff = Backoff(fo.interval_s, max(fo.interval_s * 8, 600.0))  # never faster than
        # a healthy site is polled
        failing = None
        while not stop.is_set():
            wait = fo.interval_s
            mark = follower.last_ms
            try:
                readings = await asyncio.to_thread(follower.poll)
            except Exception as exc:  # noqa: BLE001 - the follower must outlive any reply
                wait = max(backoff.next(), getattr(exc, "retry_after_s", None) or 0.0)
                said = str(exc) if isinstance(exc, SourceError) else \
                    f"{follower.url}: {type(exc).__name__}: {exc}"
                if said != failing:  # once per kind of failure, not every poll
                    _LOGGER.warning("follower: %s; trying again in %.0f s", said.rstrip("."),
                                    wait,
                                    exc_info=not isinstance(exc, SourceError))
                failing = said
                self._status("follower", "nightscout", "retrying", said)
            else:
                if failing is not None:
                    _LOGGER.warning("follower: %s answers again", follower.url)
                    self._status("follower", "nightscout", "following", follower.url)
                failing = None
                backoff.reset()
                if readings:
                    try:
                        await self._stored(self.store.add_entries,
                                           [glucose_to_entry(g, "follower") for g in readings])
                    except DatabaseError as exc:  # the clocks get them from memory, and
                        self.unstored.extend(readings)  # they are fetched again to be stored
                        follower.last_ms = mark
                        _LOGGER.debug("followed readings not stored: %s", exc)
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait / self.clock.speed)
            except TimeoutError:
                pass

    async def _clocks(self, stop: asyncio.Event) -> None:
        from nightlink.edge.sync.clock_link import ClockLink

        link = ClockLink(self.cfg.clocks, self.cfg.tenant,
                         lambda topic, payload: self.samples.put(("clock", (topic, payload))))
        link.start()
        self._status("clocks", "mqtt", "connecting", f"{self.cfg.clocks.host}:{self.cfg.clocks.port}")
        was: tuple | None = None
        from nightlink.edge.sync.clock_feed import (  # glucose, night summary, alarm policy
            ClockFeed,
            predicted_low_policy,
            system_clock_synchronized,
        )

        # The time goes to the clocks only from the system clock, not a replay's virtual one;
        # whether NTP keeps it right is asked (timedatectl) off the event loop, once a minute.
        synced: list[bool | None] = [None]
        feed = ClockFeed(link.client.publish, self.cfg.tenant, self.store.device,
                         (lambda: synced[0]) if self.clock.wall else None)
        recalibrate_at = 0.0  # the predicted-low threshold follows the person's recent nights
        unread = None  # why the store could not be read for the clocks, said once
        try:
            while not stop.is_set():
                if self.clock.wall and link.connected and self.clock.now() >= feed.next_time_s:
                    # the clocks' time is due at this pass's update: ask right before it
                    synced[0] = await asyncio.to_thread(system_clock_synchronized)
                try:
                    if self.clock.now() >= recalibrate_at:
                        recalibrate_at = self.clock.now() + RECALIBRATE_RETRY_S
                        # nights in the person's zone, not the machine's; the policy before
                        # stays while the store cannot give them
                        feed.alarm = await asyncio.to_thread(
                            predicted_low_policy, self.store, self.clock.now(),
                            budget_per_week=self.cfg.alarm.false_alarms_per_week,
                            zone=self.cfg.timezone,
                            night=(self.cfg.night.bedtime, self.cfg.night.wake))
                        recalibrate_at = self.clock.now() + RECALIBRATE_S
                    if link.connected and not (was and was[0]):
                        feed.forget()  # a broker restarted may have lost the retained ones
                    if link.connected:
                        await self._stored(feed.update, self.store, self.clock.now(),
                                           extra=tuple(self.unstored))
                except DatabaseError as exc:  # the link stays up: the next pass tries again
                    if unread is None:
                        _LOGGER.warning("clocks: the store cannot be read (%s); the clocks "
                                        "keep what they were sent", exc)
                    unread = str(exc)
                else:
                    if unread is not None:
                        _LOGGER.warning("clocks: the store can be read again")
                    unread = None
                state = (link.connected, link.last_error, round(feed.skew_s / 60))
                if state != was:
                    was = state
                    self._status("clocks", "mqtt", "subscribed" if link.connected else
                                 f"connecting: {link.last_error}" if link.last_error else
                                 "connecting", link.filter + (
                                     f"; the uploads are dated {state[2]} min ahead of this "
                                     "machine's clock (see the log)" if state[2] else ""))
                try:
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
                except TimeoutError:
                    pass
        finally:
            link.stop()

    def _clock_message(self, topic: str, payload: bytes) -> None:
        from nightlink.edge.sync.clock_link import RecordRejected, accept

        try:
            self.clock_rows += accept(self.store, topic, payload)
        except RecordRejected as exc:
            self.store.dead_letter(f"mqtt:{topic}", str(exc), payload)

    async def _sync(self, stop: asyncio.Event) -> None:
        import threading

        from nightlink.edge.sync.cloud_link import SyncClient

        client = SyncClient(self.store, self.cfg.sync, self.cfg.tenant)
        self.sync_client = client
        halt = threading.Event()
        where = f"{self.cfg.sync.host}:{self.cfg.sync.port}"
        self._status("sync", "mqtt", "connecting", where)
        worker = asyncio.create_task(asyncio.to_thread(client.run, halt))
        said = None
        try:
            while not stop.is_set():  # the link's state and why, for `nightlink edge status`
                state = ("connected" if client.connected else "connecting") + (
                    f": {client.last_error}" if client.last_error else "")
                if state != said:
                    said = state
                    self._status("sync", "mqtt", state, where)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                except TimeoutError:
                    pass
        finally:  # whatever ends this, the link's thread goes with it
            halt.set()
            await worker

    # -- the loop ------------------------------------------------------------------------

    def _drain(self, beats_now: bool = False) -> None:
        """Move queued samples into the pipeline (on the event loop thread only). The beats
        kept for the night's apnea screen are written with the epoch's close (`beats_now`),
        once every 30 s, not at every pass: a strap sends one a second, and each write is
        a durable commit on the SD card."""
        while True:
            try:
                kind, payload = self.samples.get_nowait()
            except queue.Empty:
                break
            if kind == "audio":
                self.live_audio.push(*payload)
            elif kind == "clock":
                try:
                    self._clock_message(*payload)
                except DatabaseError as exc:  # the rows reach the cloud from the clock itself;
                    _LOGGER.debug("a clock's rows were not kept here: %s", exc)  # not here
            else:
                self.pipeline.add(payload)
                if isinstance(payload, Beat):  # kept for the night's apnea screen
                    self._beats.append((payload.t, payload.rr_ms))
        late, self._late_held = self._late_held + self._late_entries(), []
        # Glucose uploaded to the local endpoint (or fetched by the follower) since last time,
        # up to now: one dated ahead of this clock (an uploader's wrong clock) is no reading
        # yet; taken, it would move the mark past every real reading to come.
        readings, newest = readings_between(self.store, self._last_entry_ms + 1,
                                            int(self.clock.now() * 1000))
        # Of several readings at once (a phone catching up after a gap), those dated in
        # epochs already closed and older than the newest are carried by no epoch to come.
        last_t = max((g.t for g in readings), default=None)
        self._check_uploaders(readings)
        for g in readings:
            if epoch_index(g.t) < self.pipeline.epoch and g.t < last_t:
                late.append(g)
            else:
                self.pipeline.add(g)
        if newest is not None:  # past entries that are no reading too: read once
            self._last_entry_ms = max(self._last_entry_ms, newest)
        # The writes last: a store refusing them (a full disk) keeps them for the next pass
        # and leaves every reading above in the pipeline.
        if late:
            try:
                written = self.pipeline.add_late(late)
            except DatabaseError:
                self._late_held = late
                raise
            self.late_readings += written
            if written:
                _LOGGER.info("%d glucose readings that came after their epochs closed were "
                             "given records of their own", written)
        if self._beats and (beats_now or len(self._beats) >= BEATS_AT_ONCE):
            self.store.add_beats(self._beats)
            self._beats = []

    def _check_uploaders(self, readings) -> None:
        """Say it (log and `edge status`) when two uploaders' recent readings disagree."""
        now = self.clock.now()
        for g in readings:
            if now - g.t > 15 * 60:
                continue  # a backlog or an import: only live readings are compared
            said = self.uploaders.add(g, now)
            if said:
                _LOGGER.warning("%s", said)
                self._status("glucose", "uploaders", "disagree", said)
                self._uploaders_warned = True
        if self._uploaders_warned and self.uploaders.quiet(now):
            self._uploaders_warned = False
            self._status("glucose", "uploaders", "agree", "no disagreement for an hour")

    def _late_entries(self) -> list:
        """Readings stored since the last pass but dated before the newest one already read
        (an uploader catching up after a gap: xDrip+'s backfill, a G7's), up to a day old:
        the pass by date never returns them."""
        rows = self.store.docs.history("entries", self._late_cursor, limit=5000)
        if not rows:
            return []
        self._late_cursor = max(r.srv_modified for r in rows)
        oldest = (self.clock.now() - LATE_MAX_S) * 1000
        late = []
        for r in rows:
            if r.valid and r.kind == "sgv" and oldest <= r.date_ms <= self._last_entry_ms:
                try:
                    late.append(entry_to_glucose(r.view()))
                except ValueError:
                    continue
        return late

    async def _closer(self, stop: asyncio.Event) -> None:
        """Close each epoch when it is over. A store that refuses a write (a full disk, a
        filesystem gone read-only) holds the epoch, kept in memory with what comes after it,
        and it is tried again after a back-off with jitter, said once in the log and in
        `edge status`; once the store takes writes again the epochs held are written one by
        one, and the node goes on as before."""
        backoff = Backoff(RETRY_MIN_S, RETRY_MAX_S)
        refused: str | None = None
        while not stop.is_set():
            e = self.pipeline.epoch
            await self._wait(stop, epoch_start(e) + EPOCH_S + self.cfg.close_delay_s)
            if stop.is_set():
                break
            await asyncio.sleep(0)  # epochs held in an outage are written one per pass: the
            # endpoint and the clocks' feed go on between them
            try:
                await self._stored(self._close, e)
            except DatabaseError as exc:
                if refused is None and await self._stored(
                        self._use_reserve, f"the store refused the epoch of {iso_epoch(e)} "
                        f"({exc})"):
                    continue  # the reserve's room: the epoch again at once
                delay = backoff.next()
                if refused is None:  # once an outage (its words change: the bytes free)
                    _LOGGER.warning("the store refused the epoch of %s (%s); the epochs from "
                                    "then on are kept in memory and tried again every %.0f s "
                                    "or less", iso_epoch(e), exc, RETRY_MAX_S)
                    self._status("store", "sqlite", "refusing writes", str(exc))
                refused = str(exc)
                self.refusing = True
                if self.store.db.alone:  # opened read-only: writes wait for it to be shared
                    await self._stored(self.store.renew_reserve)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay / self.clock.speed)
                except TimeoutError:
                    pass
                continue
            again = refused is not None
            if again:
                _LOGGER.warning("the store takes writes again: the epochs from %s on are "
                                "being written", iso_epoch(e))
                self._status("store", "sqlite", "writing", str(self.store.path))
                refused, self.refusing = None, False
                backoff.reset()
            if again or self.epochs_closed % PRUNE_EVERY_EPOCHS == 0:
                await self._stored(self.nights.retry_refused)  # nights the store refused to close
                await self._stored(self.store.renew_reserve)  # made again once there is room

    def _use_reserve(self, why: str) -> int:
        """A write refused on a full filesystem: the reserve's room (its bytes, 0: none)."""
        free = free_bytes(self.store.path)
        if not self.store.reserve_bytes or free is None or free >= self.store.reserve_bytes:
            return 0
        return self.store.use_reserve(why)

    async def _check_store(self) -> None:
        """Read the whole store once at start (SQLite's quick_check, on a connection of its
        own): a damaged page (an SD card's, a power cut's) fails only the reads that reach
        it, so without this the node would run on, its glucose missing for the clocks, with
        errors that do not say what to do."""
        from nightlink.sql import quick_check, recovery

        if self.store.db.alone:  # no other connection may read it: at the next start
            _LOGGER.info("the store's check waits for the next start (the store is open for "
                         "this node alone)")
            return
        damage = await asyncio.to_thread(quick_check, str(self.store.path))
        if damage is None:
            self._status("store", "sqlite", "sound", str(self.store.path))
            return
        _LOGGER.error("the store %s is damaged (%s): what reads the damaged part fails; %s",
                      self.store.path, damage, recovery(str(self.store.path)))
        self._status("store", "sqlite", "damaged", damage)

    def _close(self, e: int) -> None:
        """Close epoch e and do what is due after it; DatabaseError leaves e the next to
        close."""
        self._drain(beats_now=True)
        # Outside the sleep schedule the microphone and wearable make no recording (the
        # room sensors and the CGM run all day).
        self.pipeline.close(e, blank=() if self.nights.recording(e) else RECORDING_STREAMS)
        self.epochs_closed += 1
        self.last_closed = e
        try:  # what follows the epoch: its failure is not the epoch's, which is stored
            if self._meta_due:  # refused at the start
                self._write_meta()
            self._follow_a_step_forward()
            # A night closes once every epoch up to now is stored: not while epochs held in
            # a storage outage are still being written.
            if self.epochs_closed % CHECK_NIGHTS_EVERY_EPOCHS == 0 and \
                    self.pipeline.epoch >= epoch_index(self.clock.now()) - 1:
                self.nights.close_due(self.clock.now())
            if self.epochs_closed % PRUNE_EVERY_EPOCHS == 0:
                pruned = self.store.prune(e)
                if pruned:
                    _LOGGER.info("retention: removed %d synced records", pruned)
        except DatabaseError as exc:
            _LOGGER.warning("after the epoch of %s the store refused a night's close, a gap "
                            "or the retention (%s); tried again later", iso_epoch(e), exc)

    def _write_meta(self) -> None:
        """Write the time zone and sleep schedule (for the cloud and imports) where the store
        holds others; those written are no longer due."""
        for key, value in list(self._meta_due.items()):
            if (self.store.meta(key) or "") != value:
                self.store.set_meta(key, value)
            del self._meta_due[key]

    def _follow_a_step_forward(self) -> None:
        """When the clock has jumped ahead (set by NTP, or the machine slept), go on from the
        epoch it is in now rather than closing every epoch in between one by one; the skipped
        span is recorded as a gap and said. A node that was only slow (a long close, a busy
        disk) catches up epoch by epoch instead, keeping what it queued."""
        offset = self.clock.offset()
        stepped, self._offset = offset - self._offset, offset
        now = self.clock.now()
        due = epoch_start(self.pipeline.epoch) + EPOCH_S + self.cfg.close_delay_s
        if stepped <= CLOCK_STEP_S or now - due <= CLOCK_STEP_S:
            return
        resume = epoch_index(now)
        _LOGGER.warning("the clock moved forward by %.0f min at once (set by the network, or "
                        "the machine slept): nothing is recorded from %s to %s",
                        (now - due) / 60, iso_epoch(self.pipeline.epoch), iso_epoch(resume))
        self.store.add_gap("node", self.pipeline.epoch, resume, "clock stepped forward")
        self.pipeline.skip_to(resume)

    async def _wait(self, stop: asyncio.Event, t: float) -> None:
        said = False
        while not stop.is_set() and self.clock.now() < t:
            try:
                await self._stored(self._drain)
            except DatabaseError:
                pass  # the closer's own pass says it, and tries again
            behind = t - self.clock.now()
            if behind > CLOCK_STEP_S + EPOCH_S + self.cfg.close_delay_s and not said:
                # The clock went back: epochs already stored are never written twice, so
                # recording resumes once it reaches the next epoch not yet stored.
                _LOGGER.warning("the clock went back by %.0f min: nothing is recorded until "
                                "it reaches %s again", behind / 60, iso_epoch(epoch_index(t)))
                said = True
            await asyncio.sleep(min(0.2, max(0.0, behind / self.clock.speed)))

    def _first_epoch(self, next_epoch: int) -> int:
        """The first epoch to record: the next one, or after the last this node stored when
        the clock is now earlier than that (set back since), so no epoch is stored twice.
        Stored epochs more than a day ahead were dated by a wrong clock: said, not waited for."""
        last = self.store.last_own_epoch()
        if last is None or last < next_epoch:
            return next_epoch
        ahead_s = (last + 1 - next_epoch) * EPOCH_S
        if ahead_s > FUTURE_STORE_S:
            _LOGGER.warning("the store holds epochs up to %s, %.1f days ahead of this clock: "
                            "they were dated by a wrong clock; recording starts now",
                            iso_epoch(last), ahead_s / 86400)
            return next_epoch
        _LOGGER.warning("the clock is %.0f min behind the last epoch stored (%s): recording "
                        "starts after it, so no epoch is stored twice", ahead_s / 60,
                        iso_epoch(last))
        return last + 1

    async def run(self, stop: asyncio.Event) -> None:
        """Run until stop is set; returns after the last complete epoch is stored."""
        guard = self.store.db.loop_guard
        self._store_pool = ThreadPoolExecutor(1, "nightlink-store", initializer=self._store_is)
        self.store.db.loop_guard = True  # strict mode: a statement on the loop raises
        try:
            await self._stored(self._start)
            await self._run(stop)
        finally:
            pool, self._store_pool = self._store_pool, None
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
            self.store.db.loop_guard = guard

    def _store_is(self) -> None:
        self._store_ident = threading.get_ident()

    def _start(self) -> None:
        """Begin the run in the store: the boot, nights missed while down, the first epoch."""
        try:
            self.store.start_boot()
        except DatabaseError as exc:  # a filesystem full to the last byte
            try:
                if not self._use_reserve(f"the store refused the start ({exc})"):
                    raise
                self.store.start_boot()
            except DatabaseError as again:  # no reserve left: the node starts all the same,
                self.store.boot_due = True  # its start counted with the first record stored
                _LOGGER.warning("the store refused the start (%s): the node starts without "
                                "writing to it; what it cannot write is kept in memory and "
                                "written once there is room", again)
        night = self.cfg.night
        schedule = f"{night.bedtime}-{night.wake}"  # an import into this store closes nights so
        close_before_change(self.store, schedule, self.cfg.timezone, self.cfg.close_delay_s,
                            self.clock.now())
        self.nights = NightCloser(self.store, night.bedtime, night.wake, self.cfg.timezone,
                                  self.cfg.close_delay_s)
        self.nights.close_due(self.clock.now())  # nights that ended while the node was down
        # The zone goes to the cloud with the node's status report: the patient's reports use
        # it until someone sets the patient's own.
        named = zone_name(self.cfg.timezone)
        # the cloud's nights follow the schedule the person set, not the defaults (another
        # home's node left at its defaults would move them back and forth)
        reported = schedule if self.cfg.night_given else ""
        self._meta_due = {**({ZONE_META: named} if named else {}), SCHEDULE_META: schedule,
                          REPORTED_SCHEDULE_META: reported}
        try:
            self._write_meta()
        except DatabaseError as exc:  # a full disk: written after the first epoch stored
            _LOGGER.warning("the store refused the time zone and sleep schedule (%s); they are "
                            "written once it takes writes", exc)
        where = self.cfg.timezone or "the machine's time zone"
        self._status("night", "schedule", "running", f"{night.bedtime}-{night.wake} {where}")
        if not self.cfg.night_given:
            _LOGGER.warning("recording nights from %s to %s (%s), the defaults: set [night] "
                            "bedtime and wake to the person's own times", night.bedtime,
                            night.wake, where)
        first = self._first_epoch(epoch_index(self.clock.now()) + 1)  # the next full epoch
        self.first_epoch = first
        self.pipeline = EdgePipeline(self.store, first, audio=False, live=True)
        keep = None
        if self.cfg.audio.enabled and self.cfg.audio.keep_raw:
            keep = KeptAudio(self.cfg.audio.keep_raw, self.cfg.audio.sample_rate,
                             self.nights.recording_night)
        offset = c_room.mic_spl_at_0_dbfs if (c_room := self.cfg.room).noise_from_audio else None
        self.live_audio = LiveAudio(self.pipeline, keep, offset, speed=self.clock.speed,
                                    rate=self.cfg.audio.sample_rate)
        self._keep = keep
        # Readings from the last hours give the first epochs their latest value and trend.
        self._last_entry_ms = int((epoch_start(first) - 60 * CGM_MAX_AGE_MIN) * 1000) - 1
        self._late_cursor = self.store.docs.last_modified("entries") or 0

    async def _run(self, stop: asyncio.Event) -> None:
        jobs = []
        c = self.cfg
        if c.audio.enabled:
            jobs.append(("audio", "microphone", self._audio))
        if c.wearable.enabled:
            jobs.append(("wearable", "ble", self._wearable))
        if c.room.enabled:
            jobs.append(("room", "i2c", self._room))
        if c.nightscout.enabled:
            jobs.append(("nightscout", "upload", self._nightscout))
        if c.follower.enabled:
            jobs.append(("follower", "nightscout", self._follower))
        if c.clocks.enabled:
            jobs.append(("clocks", "mqtt", self._clocks))
        if c.sync.enabled:
            jobs.append(("sync", "mqtt", self._sync))
        tasks = [asyncio.create_task(self._retrying(n, k, body, stop)) for n, k, body in jobs]
        tasks.append(asyncio.create_task(self._check_store()))
        closer = asyncio.create_task(self._closer(stop))
        try:
            await stop.wait()
        finally:
            for t in tasks:
                try:
                    await asyncio.wait_for(t, timeout=5)
                except TimeoutError:
                    t.cancel()
            await closer
            await self._stored(self._finish, jobs)

    def _finish(self, jobs: list) -> None:
        """End the run in the store: what is held in memory, tonight so far, the states."""
        if self._beats:  # those of the epoch under way, for the night's screen
            try:
                self.store.add_beats(self._beats)
                self._beats = []
            except DatabaseError as exc:
                _LOGGER.warning("%d beats of the last seconds were not stored (%s)",
                                len(self._beats), exc)
        if self._keep is not None:
            self._keep.close()
        if self.last_closed is not None:  # what there is of tonight so far, if inside
            try:  # the schedule
                partial_summary(self.store, self.nights, self.last_closed)
            except DatabaseError as exc:
                _LOGGER.warning("tonight's summary so far was not stored (%s)", exc)
        held = epoch_index(self.clock.now()) - self.pipeline.epoch
        # (the epoch under way is not complete; one within close_delay_s is not closed)
        self.held_at_stop = max(0, held - 1) if self.refusing else 0
        if self.held_at_stop:
            _LOGGER.warning("stopped with %d epochs the store refused not stored (from %s)",
                            self.held_at_stop, iso_epoch(self.pipeline.epoch))
        for name, kind, _ in jobs:
            self._status(name, kind, "stopped")
        self._status("night", "schedule", "stopped")
        self._status("store", "sqlite", "stopped", str(self.store.path))
        _LOGGER.info("stopped after %d epochs", self.epochs_closed)


def run_forever(node: LiveNode) -> None:
    """Run a node until SIGTERM or Ctrl-C."""
    import signal

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await node.run(stop)

    asyncio.run(main())
