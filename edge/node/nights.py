"""Closing a night at the edge: its summary, and the classifiers' outputs (stream 5).

A replayed night is closed when its files end. The live node records the night between the
person's bedtime and wake time ([night] in its configuration) and closes it once the wake
time has passed (or, after being down, when it starts again), once per night: the classifier
rows it stores are what the cloud's fused report stages the night from, so writing them twice
would leave the first copy in charge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from nightlink.edge.features.classify import classify_night
from nightlink.edge.features.night_summary import night_columns, summarize_night
from nightlink.edge.node.zone import (
    MIN_NIGHT_MIN,
    night_label,
    schedule_boundary,
    schedule_window,
)
from nightlink.edge.store import EdgeStore
from nightlink.shared import clinical, features
from nightlink.shared.epoch import EPOCH_S, epoch_start, iso_epoch
from nightlink.sql import DatabaseError

_LOGGER = logging.getLogger(__name__)
CATCH_UP_NIGHTS = 3  # after being down, the node closes at most this many past nights
SCHEDULE_META = "night_schedule"  # the live node's "bedtime-wake", for imports into its store
REPORTED_SCHEDULE_META = "night_schedule_set"  # the same when the person set it: to the cloud
MIN_RECORDING_EPOCHS = MIN_NIGHT_MIN * 60 // EPOCH_S  # less recorded in the schedule: no night
RECORDING_STREAMS = (features.WEARABLE, features.AUDIO)  # what makes a night's recording


def unusable_audio(audio: dict[str, np.ndarray]) -> tuple[str, str] | None:
    """shared.clinical.unusable_audio on a night's audio feature columns."""
    return clinical.unusable_audio(zip(audio["loud_mean_dbfs"].tolist(),
                                       audio["loud_max_dbfs"].tolist(),
                                       audio["flatness"].tolist(), strict=True))


def finish_night(store: EdgeStore, first: int, count: int, label: str, *,
                 cols: dict | None = None, beats: dict | None = None,
                 classify: bool = True, if_open: bool = False,
                 import_id: int | None = None) -> dict | None:
    """Summarise epochs [first, first + count) as night `label`, with the classifiers'
    figures and stream 5 rows unless classify is False; store and return the summary. A
    microphone that recorded no usable sound is said (`audio_unusable`), marked as a gap and
    left out of the figures (a silent night would read as calm sleep without apneas, a
    clipped one as a night of loud snoring). With if_open, a night found closed inside the
    transaction (by another process sharing the store: the live node and an import) is left
    as it is and None returned. `import_id`: the import closing it, which lists it in the
    same transaction (undoing the import removes it)."""
    cols = cols if cols is not None else night_columns(store, first, count)
    dead = unusable_audio(cols["audio"])
    if dead:
        _LOGGER.warning("night %s: %s", label, dead[0])
        cols = {**cols, "audio": {k: np.full(count, np.nan) for k in cols["audio"]}}
    with store.transaction():  # all or nothing: a failed close leaves no stream 5 rows behind
        if if_open and is_closed(store.night(label)):
            return None
        # the microphone's verdict for the night, replacing an earlier summary's
        store.put_night_gap("audio", first, first + count, dead[1] if dead else None,
                            clinical.NO_SOUND)
        classified = (classify_night(store, first, count, streams={**cols, **(beats or {})})
                      if classify else None)
        summary = summarize_night(store, first, count, cols)
        if classified:
            summary.update(classified)
        if dead:
            summary["audio_unusable"] = dead[0]
        if classify:  # closed, with figures or (no models) without: never closed again
            summary["classified"] = classified is not None
        store.put_night(label, summary)
        if import_id is not None:
            store.imported(import_id, nights=[label], epochs=(first, first + count - 1))
    return summary


def is_closed(summary: dict | None) -> bool:
    """Whether a night went through finish_night's classifier pass (a partial summary written
    when the node stopped mid-night did not)."""
    return summary is not None and ("classified" in summary or "sleep" in summary)


def recorded_span(store: EdgeStore, first: int, end: int) -> tuple[int, int] | None:
    """[a, b) from the first to the last epoch in [first, end) where the wearable or the
    microphone measured anything; None without any."""
    held = [e for s in RECORDING_STREAMS for e, vals in store.epoch_values(s, first, end).items()
            if any(v is not None for v in vals)]
    return (min(held), max(held) + 1) if held else None


@dataclass
class SpanClosed:
    """What NightCloser.close_span did: nights closed (with their summaries), found closed,
    failed (with why)."""

    summaries: dict[str, dict] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def closed(self) -> list[str]:
        return list(self.summaries)


class NightCloser:
    """Closes each night of a live node once its wake time has passed."""

    def __init__(self, store: EdgeStore, bedtime: str, wake: str, zone: str = "",
                 delay_s: float = 0.0):
        self.store, self.bedtime, self.wake, self.zone = store, bedtime, wake, zone
        # noon, unless the schedule holds noon (a day sleeper's): where one night ends
        self.boundary = schedule_boundary(bedtime, wake)
        self.delay_s = delay_s
        self.settled: set[str] = set()  # nights closed, or found without a recording
        self.import_id: int | None = None  # the import closing nights (edge/store/imports.py)
        self.refused: set[str] = set()  # nights whose close the store refused (a full disk)

    def window(self, label: str) -> tuple[int, int]:
        return schedule_window(label, self.bedtime, self.wake, self.zone)

    def label(self, t: float) -> str:
        """The night the moment t (Unix seconds) belongs to."""
        return night_label(t, self.zone, self.boundary)

    def recording(self, epoch: int) -> bool:
        """Whether an epoch lies inside its night's sleep schedule."""
        return self.recording_night(epoch * EPOCH_S) is not None

    def recording_night(self, t: float) -> str | None:
        """The night whose sleep schedule holds the moment t (Unix seconds), else None."""
        label = self.label(t)
        a, b = self.window(label)
        return label if a <= t // EPOCH_S < b else None

    def due(self, now_s: float) -> list[str]:
        """Nights whose wake time (plus the closing delay) has passed, newest first: the last
        few, and any older one the node stopped in the middle of (its partial summary) within
        the store's retention; those already settled left out."""
        from datetime import date, timedelta

        today = date.fromisoformat(self.label(now_s))
        labels = [(today - timedelta(days=back)).isoformat()
                  for back in range(CATCH_UP_NIGHTS + 1)]
        oldest = (today - timedelta(days=self.store.retention_days)).isoformat()
        for n in reversed(self.store.night_labels(oldest)):
            if n < labels[-1] and n not in self.settled:  # each closed one read once a run
                if is_closed(self.store.night(n)):
                    self.settled.add(n)
                else:
                    labels.append(n)
        return [label for label in labels if label not in self.settled
                and self.window(label)[1] * EPOCH_S + self.delay_s <= now_s]

    def _close(self, label: str) -> dict | None:
        """Close one night; None when it is closed already or has under an hour recorded."""
        a, b = self.window(label)
        had = self.store.night(label)
        if is_closed(had):
            first = had.get("first_epoch", a)
            if first + had.get("epochs", 0) <= a or first >= b:  # another schedule's sleep
                _LOGGER.warning(
                    "night %s was closed under another sleep schedule (from %s); what was "
                    "recorded from %s to %s is kept but not summarised as a night", label,
                    iso_epoch(first), iso_epoch(a), iso_epoch(b))
            return None
        span = recorded_span(self.store, a, b)
        if span is None:
            _LOGGER.debug("night %s: nothing recorded in the schedule", label)
            return None
        if span[1] - span[0] < MIN_RECORDING_EPOCHS:
            _LOGGER.info("night %s: under %d minutes recorded in the schedule; not classified",
                         label, MIN_NIGHT_MIN)
            return None
        t, rr = self.store.beats_between(epoch_start(span[0]), epoch_start(span[1]))
        beats = {"beats": {"t_s": t, "rr_ms": rr, "start_s": float(epoch_start(span[0]))}} \
            if t.size else None
        return finish_night(self.store, span[0], span[1] - span[0], label, beats=beats,
                            if_open=True, import_id=self.import_id)

    def close_span(self, first_s: float, last_s: float, now_s: float) -> SpanClosed:
        """Close the nights whose schedule meets [first_s, last_s] (what an import stored)
        and whose wake time (plus the closing delay) has passed. Nights found closed (by the
        live node, or an earlier import) keep their summary and classifier rows; a night
        still to come is left to the live node's close at its wake time; one with under an
        hour recorded is none of these. A night whose close fails is named with the reason
        and left open (as the live node does), and the others go on."""
        from datetime import date, timedelta

        out = SpanClosed()
        day = date.fromisoformat(self.label(first_s - 86400))
        last = date.fromisoformat(self.label(last_s))
        while day <= last:
            label = day.isoformat()
            day += timedelta(days=1)
            a, b = self.window(label)
            if b * EPOCH_S <= first_s or a * EPOCH_S > last_s \
                    or b * EPOCH_S + self.delay_s > now_s:
                continue
            try:
                summary = self._close(label)
            except Exception as exc:  # noqa: BLE001 - a store or classifier failing on one night
                _LOGGER.exception("night %s could not be closed", label)
                out.failed.append((label, f"{type(exc).__name__}: {exc}"[:200]))
                continue
            if summary is not None:
                out.summaries[label] = summary
            elif is_closed(self.store.night(label)):  # before, or by the live node meanwhile
                out.kept.append(label)
        return out

    def close_due(self, now_s: float) -> list[str]:
        """Close every night that is due and not yet classified; the nights closed."""
        closed = []
        for label in self.due(now_s):
            self.settled.add(label)
            try:
                summary = self._close(label)
            except DatabaseError as exc:  # a full disk: tried again (retry_refused)
                self.refused.add(label)
                _LOGGER.warning("night %s could not be closed (%s); it is tried again once the "
                                "store takes writes", label, exc)
                continue
            except Exception:  # a failing classifier or store must not stop the node recording
                _LOGGER.exception("night %s could not be closed; it keeps its raw records", label)
                continue
            if summary is None:
                continue
            closed.append(label)
            sleep = summary.get("sleep") or {}
            _LOGGER.info("night %s closed: %d epochs, sleep from %s, %s min asleep", label,
                         summary["epochs"], ", ".join(sleep.get("sleep_inputs") or []) or
                         "nothing", "unknown" if sleep.get("tst_min") is None
                         else sleep["tst_min"])
        return closed

    def retry_refused(self) -> None:
        """The nights whose close the store refused are due again (it takes writes)."""
        self.settled -= self.refused
        self.refused.clear()


def close_before_change(store: EdgeStore, schedule: str, zone: str, delay_s: float,
                        now_s: float) -> list[str]:
    """Nights recorded under the store's previous schedule (SCHEDULE_META) that wait to be
    closed, the node having been down over their wake time when the schedule changed to
    `schedule` ("bedtime-wake"): closed under the old one, before the new one looks for
    them in its own windows (where nothing was recorded). The nights closed."""
    before = (store.meta(SCHEDULE_META) or "").split("-")
    if len(before) != 2 or "-".join(before) == schedule:
        return []
    try:
        closer = NightCloser(store, before[0], before[1], zone, delay_s)
    except ValueError:  # not a schedule this build reads
        return []
    return closer.close_due(now_s)


def partial_summary(store: EdgeStore, closer: NightCloser, last_epoch: int) -> str | None:
    """On stopping inside a night's schedule: summarise what is recorded of it so far (not
    classified: the night closes at its wake time), unless it is already closed."""
    label = closer.label(last_epoch * EPOCH_S)
    a, b = closer.window(label)
    if not a <= last_epoch < b or is_closed(store.night(label)):
        return None
    span = recorded_span(store, a, last_epoch + 1)
    if span is None:
        return None
    finish_night(store, span[0], span[1] - span[0], label, classify=False)
    return label

