"""Live bedroom audio: microphone chunks to audio features on the 30-s epoch grid.

The features themselves are computed by `nightlink.edge.features.audio`; this source only
decides which samples belong to which epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from nightlink.edge.features.audio import SAMPLE_RATE, AudioFeatureExtractor
from nightlink.edge.features.pipeline import EdgePipeline
from nightlink.edge.sources.samples import Room
from nightlink.shared.epoch import EPOCH_S, epoch_index, epoch_start

_LOGGER = logging.getLogger(__name__)
WAV_HEADER_MAX = 4096  # bytes before the samples in a WAV this node wrote (44 in practice)
MAX_DRIFT_S = 2.0  # audio clock vs wall clock disagreement (real seconds): samples were lost


class KeptAudio:
    """Raw audio the user asked to keep (`[audio] keep_raw`): only inside the sleep schedule,
    one WAV per night beside the configured path (`night.wav` gives `night-2026-01-15.wav`),
    so a file never grows past what a WAV header can count; a node started again within the
    same night appends to that night's file, never overwriting what was kept."""

    def __init__(self, path, rate: int, night_of: Callable[[float], str | None]):
        from pathlib import Path

        self.path, self.rate, self.night_of = Path(path), rate, night_of
        self.file = None
        self.label: str | None = None

    def write(self, chunk: np.ndarray, t: float) -> None:
        """Keep a chunk whose first sample is at t, if t lies inside a night's schedule."""
        label = self.night_of(t)
        if label is None:
            self.close()  # outside the schedule: the night's file is complete on disk
            return
        if label != self.label:
            self.close()
            self.file, self.label = self._open(label), label
        self.file.write(chunk)

    def _open(self, label: str):
        import soundfile

        stem, suffix = self.path.stem, self.path.suffix or ".wav"
        for n in range(1, 100):
            target = self.path.with_name(f"{stem}-{label}{'' if n == 1 else f'-{n}'}{suffix}")
            if not target.exists():
                _LOGGER.warning("raw audio of night %s is being kept in %s, as configured",
                                label, target)
                return soundfile.SoundFile(str(target), "w", self.rate, 1, "PCM_16")
            try:  # read-only first: opening for writing and closing rewrites the file
                info = soundfile.info(str(target))
            except (RuntimeError, OSError):  # unreadable: leave it, write the next name
                continue
            # A run that was killed leaves samples past the length its header gives (the
            # header is written on close): appending would write over them, so such a file
            # is left as it is (its audio all there for any tool that reads to the end).
            whole = target.stat().st_size <= WAV_HEADER_MAX + info.frames * 2
            if whole and (info.samplerate, info.channels, info.subtype) == \
                    (self.rate, 1, "PCM_16"):
                f = soundfile.SoundFile(str(target), "r+")
                f.seek(0, soundfile.SEEK_END)
                _LOGGER.warning("raw audio of night %s is being added to %s, as configured",
                                label, target)
                return f
            # another rate, or cut off: a file of its own
        raise OSError(f"no free name for the raw audio of night {label} beside {self.path}")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.file, self.label = None, None


class LiveAudio:
    """Microphone chunks to audio features on the epoch grid.

    The first samples are dropped up to the next epoch boundary; a gap or jump in the
    stream's timing (an overflow, a device that went away) restarts the alignment, so
    an epoch is never assembled from samples that do not belong together.
    """

    def __init__(self, pipeline: EdgePipeline, keep_raw: KeptAudio | None = None,
                 noise_offset_db: float | None = None, *, speed: float = 1.0,
                 rate: int = SAMPLE_RATE):
        self.pipeline = pipeline
        # A callback late by some real time looks `speed` times later on a virtual clock
        # running faster (tests, demos): the tolerance is scaled so it means the same.
        self.max_drift_s = MAX_DRIFT_S * max(1.0, speed)
        self.noise_offset_db = noise_offset_db  # mic calibration: room noise = dBFS + this
        self.extractor: AudioFeatureExtractor | None = None
        self.expected_t: float | None = None
        self.keep_raw = keep_raw  # only if the user asked
        self.realigned = 0
        self.rate = rate  # the microphone's sample rate; the extractor resamples it

    def push(self, chunk: np.ndarray, t_first: float, overflow: bool = False) -> None:
        """Add a chunk; t_first is the clock's estimate of its first sample's time.

        Time is counted in samples once the stream runs; the clock's estimate only
        matters when it disagrees by more than MAX_DRIFT_S (samples were lost).
        """
        if self.expected_t is not None:
            if overflow or abs(t_first - self.expected_t) > self.max_drift_s:
                _LOGGER.warning("audio stream lost samples (%.2f s off); realigning on the "
                                "epoch grid", t_first - self.expected_t)
                self.extractor = None
                self.realigned += 1
            else:
                t_first = self.expected_t
        self.expected_t = t_first + chunk.size / self.rate
        if self.keep_raw is not None:
            self.keep_raw.write(chunk, t_first)
        if self.extractor is None:
            e = epoch_index(t_first)
            if epoch_start(e) < t_first - 1e-6:
                e += 1  # start on the next boundary
            boundary = epoch_start(e)
            skip = int(round((boundary - t_first) * self.rate))
            if skip >= chunk.size:
                return
            chunk = chunk[skip:]
            self.extractor = AudioFeatureExtractor(epoch_index(boundary), self.rate)
        for epoch, values in self.extractor.feed(chunk):
            self.pipeline.put_audio_row(epoch, values)
            if self.noise_offset_db is not None:
                self.pipeline.add(Room(epoch_start(epoch) + EPOCH_S / 2,
                                       noise_dba=values[0] + self.noise_offset_db))
