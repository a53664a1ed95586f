"""The edge pipeline: samples in, one stored record per epoch per modality out.

Sources push samples in time order (`add`, `feed_audio`); `close(epoch)` reduces what
arrived for that epoch and stores the four records in one transaction, each with its
outbox row. Modalities with nothing in an epoch are stored with every feature missing.
"""

from __future__ import annotations

import bisect
import logging

import numpy as np

from nightlink.edge.features.audio import SAMPLE_RATE, AudioFeatureExtractor
from nightlink.edge.features.reducers import CgmReducer, RoomReducer, WearableReducer, to_raw
from nightlink.edge.sources.samples import Glucose, Room
from nightlink.edge.store import EdgeStore
from nightlink.shared import codec, features
from nightlink.shared.epoch import EPOCH_S, epoch_index, epoch_start
from nightlink.sql import DatabaseError

_LOGGER = logging.getLogger(__name__)
STREAM_ORDER = (features.CGM, features.WEARABLE, features.ROOM, features.AUDIO)
# Two readings this close are one reading: its time in a record is to the half minute, and two
# uploaders of one sensor date it within about that of each other. A 1-minute sensor's
# readings are 60 s apart.
SAME_READING_S = 45


class EdgePipeline:
    def __init__(self, store: EdgeStore, first_epoch: int, *, audio: bool = True,
                 live: bool = False, streams: tuple[int, ...] = STREAM_ORDER,
                 audio_rate: int = SAMPLE_RATE):
        self.store = store
        self.streams = streams
        self.epoch = first_epoch
        self.flags = codec.FLAG_LIVE if live else 0
        self.wearable = WearableReducer()
        self.cgm = CgmReducer()
        self.room = RoomReducer()
        self.audio = AudioFeatureExtractor(first_epoch, audio_rate) if audio else None
        self._audio_rows: dict[int, tuple] = {}
        self.present = {s: 0 for s in STREAM_ORDER}  # epochs with at least one feature
        self.late = 0  # samples that arrived after their epoch was closed
        self._pending: dict[int, list] = {}
        self._unwritten: tuple[int, dict] | None = None  # (epoch, rows) the store refused

    def _reduce(self, epoch: int, blank: tuple[int, ...]) -> dict[int, tuple]:
        for e in sorted(k for k in self._pending if k <= epoch):
            for sample in sorted(self._pending.pop(e), key=lambda x: x.t):
                self._route(sample)
        rows = {
            features.CGM: to_raw(features.CGM, self.cgm.close(epoch)),
            features.WEARABLE: to_raw(features.WEARABLE, self.wearable.close(epoch)),
            features.ROOM: to_raw(features.ROOM, self.room.close(epoch)),
        }
        audio = self._audio_rows.pop(epoch, None)
        rows[features.AUDIO] = to_raw(features.AUDIO, audio if audio else (None,) * len(features.features(features.AUDIO)))
        return {s: (to_raw(s, (None,) * len(features.features(s))) if s in blank else r)
                for s, r in rows.items() if s in self.streams}

    def add(self, sample) -> None:
        """Queue a sample for its epoch; samples for epochs already closed are counted late.

        Glucose goes straight to its reducer: a reading from before this epoch still
        gives later epochs their latest value, age and trend.
        """
        if isinstance(sample, Glucose):
            self.cgm.add(sample)
            return
        e = epoch_index(sample.t)
        if e < self.epoch:
            self.late += 1
            return
        self._pending.setdefault(e, []).append(sample)

    def add_late(self, readings: list[Glucose]) -> int:
        """Glucose readings that arrived after their epochs closed, carried by no epoch to
        come (an uploader catching up after the Wi-Fi or the node was away). Each goes to the
        reducer like any reading; one of an epoch already closed gets a CGM record of its own
        for that epoch, unless a reading within SAME_READING_S of it is recorded already: the
        reading itself (read again after a restart), or another uploader's copy of it (xDrip+
        and Juggluco on one sensor), which would be a second entry in the cloud. The cloud's
        entries come from the records: without this it never had these readings. Returns the
        records written."""
        latest: dict[int, Glucose] = {}
        for g in readings:
            self.cgm.add(g)
            e = epoch_index(g.t)
            if e < self.epoch and (e not in latest or g.t > latest[e].t):
                latest[e] = g
        if not latest or features.CGM not in self.streams:
            return 0
        reach = SAME_READING_S // EPOCH_S + 1
        stored = self.store.epoch_values(features.CGM, min(latest) - reach, max(latest) + reach + 1)
        # When each recorded reading was taken: a record gives it to the half minute, so it
        # is the reducer's reading within 15 s of that, where there is one (a 1-minute
        # sensor's neighbour 55 s away is then not taken for it).
        held = self.cgm.times()
        recorded = []
        for e, v in stored.items():
            if v[1] is None:
                continue
            t = epoch_start(e) + EPOCH_S - v[1] * 60
            i = bisect.bisect_left(held, t)
            near = min(held[max(0, i - 1):i + 1], key=lambda x: abs(x - t), default=None)
            recorded.append(near if near is not None and abs(near - t) <= 15.5 else t)
        written = 0
        for e in sorted(latest):
            g = latest[e]
            row = self.cgm.row(e)
            if row[1] is None or any(abs(t - g.t) <= SAME_READING_S for t in recorded):
                continue
            self.store.append(features.CGM, e, [to_raw(features.CGM, row)], flags=self.flags)
            recorded.append(g.t)
            written += 1
        return written

    def _route(self, sample) -> None:
        if isinstance(sample, Room):
            self.room.add(sample)
        else:
            self.wearable.add(sample)

    def put_audio_row(self, epoch: int, values: tuple) -> None:
        """Audio features of an epoch computed outside (the live audio source)."""
        self._audio_rows[epoch] = values

    def feed_audio(self, chunk: np.ndarray) -> None:
        if self.audio is None:
            return
        for epoch, values in self.audio.feed(chunk):
            self._audio_rows[epoch] = values

    def skip_audio_epoch(self) -> None:
        """No audio for the current audio epoch (the source dropped out)."""
        if self.audio is not None:
            self.audio.skip_epoch()

    def skip_to(self, epoch: int) -> None:
        """Go on from `epoch`, leaving the epochs before it unrecorded (the live node after
        its clock stepped forward): samples and audio rows queued for them are dropped."""
        self._pending = {e: v for e, v in self._pending.items() if e >= epoch}
        self._audio_rows = {e: v for e, v in self._audio_rows.items() if e >= epoch}
        self.epoch = max(self.epoch, epoch)

    def close(self, epoch: int, *, write: bool = True, blank: tuple[int, ...] = (),
              skip: tuple[int, ...] = ()) -> dict[int, tuple]:
        """Reduce epoch `epoch` for every stream and store it (unless write is False, when
        the epoch is already stored); return the raw rows. Streams in `blank` are reduced
        but stored as missing (the live node outside the person's sleep schedule); streams
        in `skip` are reduced but not stored (this epoch of theirs is stored already).
        When the store refuses the write (DatabaseError: a full disk), the epoch stays the
        next to close and its rows are kept: closing it again writes those same rows."""
        if self._unwritten is not None and self._unwritten[0] == epoch:
            rows = self._unwritten[1]
        else:
            rows = self._reduce(epoch, blank)
        self._unwritten = None
        if not write:
            self.epoch = epoch + 1
            return rows
        try:
            with self.store.transaction():
                for stream in STREAM_ORDER:
                    if stream in rows and stream not in skip:
                        self.store.append(stream, epoch, [rows[stream]], flags=self.flags)
        except DatabaseError:
            self._unwritten = (epoch, rows)
            raise
        for stream, row in rows.items():
            if stream in skip:
                continue
            if any(raw != b[0] for raw, b in zip(row, features.bounds(stream), strict=True)):
                self.present[stream] += 1
        self.epoch = epoch + 1
        return rows
