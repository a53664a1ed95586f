"""`nightlink edge replay DIR`: the edge pipeline over a night's files.

Reads the night's manifest and files (the simulator's layout), feeds every sample in time
order through the same pipeline a live night uses, as fast as possible or paced in real time.
Bad rows, a truncated or unreadable audio file, or a missing file cost only their own data:
the rest of the night continues and the gaps are recorded.

A night that kept no audio file can still have audio features when the caller passes an
`audio_stream` that regenerates it (the simulator does: `nightlink simulate replay`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from nightlink.edge.features.audio import EPOCH_SAMPLES, MAX_RATE, MIN_RATE, SAMPLE_RATE
from nightlink.edge.features.night_summary import night_columns
from nightlink.edge.features.pipeline import STREAM_ORDER, EdgePipeline
from nightlink.edge.node.nights import finish_night
from nightlink.edge.node.zone import check_zone, night_label
from nightlink.edge.sources.samples import Beat, Glucose, Motion, Room, SourceError, SpO2
from nightlink.edge.store import EdgeStore
from nightlink.shared import features
from nightlink.shared.epoch import EPOCH_S, epoch_start, iso_epoch

_LOGGER = logging.getLogger(__name__)

# A night's audio as a stream, for nights that kept no file: given the night's manifest, an
# iterator of 16 kHz mono int16 chunks of any size, or None when it cannot give this night's.
AudioStream = Callable[[dict], Iterator[np.ndarray] | None]


@dataclass
class ReplayResult:
    night: str
    first_epoch: int
    epochs: int
    records: int
    present: dict[str, int]  # epochs with data this replay stored, per stream
    bad_rows: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)  # epochs the store held already
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    summary: dict = field(default_factory=dict)


def _rows(path: Path, name: str, parse: Callable[[dict], object], bad: dict[str, int],
          problems: list[str]) -> Iterator:
    """Samples from a CSV file in time order; a row that does not parse, or whose time or
    value is not a finite number in range, is counted and skipped. Rows written out of order
    (newest first, say) are sorted, and the problems say so."""
    try:
        fh = path.open(newline="", encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        problems.append(f"{name} cannot be read ({exc.strerror}); the night has no {name} data.")
        return iter(())
    samples = []
    with fh:
        reader = csv.DictReader(fh)
        for row in reader:
            try:
                sample = parse(row)
                if not math.isfinite(sample.t):
                    raise ValueError("time")
            except (KeyError, ValueError, TypeError, AttributeError):
                bad[name] = bad.get(name, 0) + 1
                if bad[name] == 1:
                    _LOGGER.warning("%s line %d is not valid; skipping it", name, reader.line_num)
                continue
            samples.append(sample)
    times = [s.t for s in samples]
    if any(b < a for a, b in zip(times, times[1:], strict=False)):
        samples.sort(key=lambda s: s.t)
        problems.append(f"{name} has rows out of time order; they were put in order.")
    return iter(samples)


def _finite(value: float, low: float, high: float) -> float:
    """`value` when it is a number in [low, high], else ValueError (the row is counted bad)."""
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(value)
    return value


def _glucose(row: dict) -> Glucose:
    """A cgm.csv row; sensor error codes (sgv < 39) stay errors, never glucose."""
    t = int(row["epoch_ms"]) / 1000.0
    code = (row.get("error_code") or "").strip()
    sgv = int(code) if code else int(row["sgv_mgdl"])
    if sgv < 39:
        return Glucose(t, None, sgv, source="replay")
    return Glucose(t, sgv, source="replay")


def _opt(row, key):
    """A room reading, None when the cell is empty or not a finite number (a missing value)."""
    v = row.get(key, "")
    value = float(v) if v not in ("", None) else None
    return value if value is not None and math.isfinite(value) else None


def _merged(iters: list[Iterator]) -> Iterator:
    """Samples of several time-ordered sources, merged by time."""
    import heapq

    return heapq.merge(*iters, key=lambda s: s.t)


def sample_streams(sim_dir: Path, start: float, bad: dict[str, int], problems: list[str]):
    """Time-ordered samples of every non-audio source of a simulated night."""
    return _merged([
        _rows(sim_dir / "rr.csv", "rr.csv",
              lambda r: Beat(start + float(r["t_s"]), _finite(float(r["rr_ms"]), 1.0, 10_000.0)),
              bad, problems),
        _rows(sim_dir / "spo2.csv", "spo2.csv",  # a fraction (0.95) is not a percentage
              lambda r: SpO2(start + float(r["t_s"]), _finite(float(r["spo2_pct"]), 1.5, 100.0)),
              bad, problems),
        _rows(sim_dir / "accel.csv", "accel.csv",
              lambda r: Motion(start + float(r["t_s"]), *(_finite(float(r[k]), -1e6, 1e6)
                                                          for k in ("ax", "ay", "az"))),
              bad, problems),
        _rows(sim_dir / "cgm.csv", "cgm.csv", _glucose, bad, problems),
        _rows(sim_dir / "room.csv", "room.csv",
              lambda r: Room(epoch_start(int(r["epoch"])), _opt(r, "temp_c"),
                               _opt(r, "humidity_pct"), _opt(r, "light_lux"),
                               _opt(r, "co2_ppm"), _opt(r, "noise_dba")), bad, problems),
    ])


class _Shifted(io.RawIOBase):
    """A file seen from `base` on: the samples of a WAV whose header gives no length."""

    def __init__(self, f, base: int):
        self.f, self.base = f, base
        f.seek(base)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        at = self.f.seek(pos + self.base if whence == 0 else pos, whence)
        if at < self.base:
            at = self.f.seek(self.base)
        return at - self.base

    def tell(self) -> int:
        return self.f.tell() - self.base

    def readinto(self, b) -> int:
        return self.f.readinto(b)

    def close(self) -> None:
        self.f.close()
        super().close()


# WAV format codes (and WAVE_FORMAT_EXTENSIBLE's sub-format) and bits -> libsndfile subtype
_WAV_SUBTYPES = {(1, 8): "PCM_U8", (1, 16): "PCM_16", (1, 24): "PCM_24", (1, 32): "PCM_32",
                 (3, 32): "FLOAT", (3, 64): "DOUBLE"}


def _unsized_wav(path: Path, f, problems: list[str]):
    """A WAV whose header says it holds no samples but whose file goes on (a recorder stopped
    before it wrote the length): its samples read to the end of the file, and said so.
    Returns the original file when there is nothing more to read."""
    with open(path, "rb") as raw:
        head = raw.read(1 << 16)
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if cid == b"fmt " and size >= 16:
            code, channels, _rate, _bps, _align, bits = struct.unpack(
                "<HHIIHH", head[pos + 8:pos + 24])
            if code == 0xFFFE and size >= 40:  # extensible: the sub-format's first 2 bytes
                code = struct.unpack("<H", head[pos + 32:pos + 34])[0]
            fmt = (code, channels, bits)
        elif cid == b"data":
            data = pos + 8
            break
        pos += 8 + size + (size & 1)
    subtype = _WAV_SUBTYPES.get(fmt[::2]) if fmt else None
    size = path.stat().st_size
    if data is None or subtype is None or size - data < fmt[1] * fmt[2] // 8:
        return f
    after = head[data:data + 8]
    if len(after) == 8 and after[:4].isalpha() and data + 8 + struct.unpack(
            "<I", after[4:])[0] <= size:
        return f  # an empty data chunk followed by another chunk (LIST...): really empty
    rate = f.samplerate
    f.close()
    problems.append(f"{path.name}'s header gives no length (a recording that was not closed "
                    "properly); its samples are read to the end of the file.")
    return soundfile.SoundFile(_Shifted(open(path, "rb"), data), mode="r", format="RAW",
                               samplerate=rate, channels=fmt[1], subtype=subtype,
                               endian="LITTLE")


class _AudioFile:
    """One epoch of samples at a time from a WAV/FLAC file; None once it ends or fails."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        self.f = None
        self.floats, self.said_nan = False, False
        try:
            self.f = soundfile.SoundFile(str(path))
            if self.f.frames == 0 and self.f.format in ("WAV", "WAVEX"):
                self.f = _unsized_wav(path, self.f, problems)
        except (RuntimeError, TypeError, soundfile.LibsndfileError) as exc:
            problems.append(f"{path.name} cannot be read as audio ({exc}); the night has no "
                            "audio features.")
            return
        self.rate = self.f.samplerate
        self.floats = self.f.subtype in ("FLOAT", "DOUBLE")
        if not MIN_RATE <= self.rate <= MAX_RATE:
            problems.append(
                f"{path.name} is sampled at {self.rate} Hz; Nightlink takes {MIN_RATE}-"
                f"{MAX_RATE} Hz, so the night has no audio features."
            )
            self.f.close()
            self.f = None
            self.rate = SAMPLE_RATE  # no samples will come; the extractor stays at its own
        self.epoch_samples = self.rate * EPOCH_S  # the extractor resamples to its own rate

    def next_epoch(self) -> np.ndarray | None:
        if self.f is None:
            return None
        try:
            if self.floats:  # float samples: read as floats, never truncated to 0 as integers
                block = self.f.read(self.epoch_samples, dtype="float32", always_2d=True)
                if not np.isfinite(block).all():
                    if not self.said_nan:
                        self.problems.append(f"{self.path.name} holds samples that are not "
                                             "numbers (NaN or infinity); they are read as 0.")
                        self.said_nan = True
                    block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
                block = np.clip(block.mean(axis=1) * 32768.0, -32768, 32767).round().astype(np.int16)
            else:
                block = self.f.read(self.epoch_samples, dtype="int16", always_2d=True)
                block = (block[:, 0] if block.shape[1] == 1  # several channels: their mean
                         else block.mean(axis=1).round().astype(np.int16))
        except (RuntimeError, soundfile.LibsndfileError) as exc:
            self.problems.append(f"{self.path.name} became unreadable ({exc}); audio stops there.")
            self.close()
            return None
        if block.shape[0] < self.epoch_samples:
            self.problems.append(
                f"{self.path.name} ends {self.f.frames / self.rate:.0f} s into the night, "
                "before the night does; the remaining epochs have no audio features."
            )
            self.close()
            return None
        return block

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None


class _AudioStream:
    """One epoch of samples at a time from chunks of any size; None once they end."""

    def __init__(self, chunks: Iterator[np.ndarray]):
        self.it = chunks
        self.pending = np.zeros(0, dtype=np.int16)

    def next_epoch(self) -> np.ndarray | None:
        while self.pending.size < EPOCH_SAMPLES:
            chunk = next(self.it, None)
            if chunk is None:
                return None
            self.pending = np.concatenate((self.pending, chunk))
        out, self.pending = self.pending[:EPOCH_SAMPLES], self.pending[EPOCH_SAMPLES:]
        return out

    def close(self):
        pass


MAX_EPOCHS = 2 * 24 * 60  # a day and a night: more is a wrong unit, not a night
PLAUSIBLE_START_S = (631_152_000, 4_102_444_800)  # 1990 to 2100


def load_manifest(sim_dir: Path) -> dict:
    """The night's manifest, checked: an epoch grid of whole numbers (a plausible first epoch,
    1 to MAX_EPOCHS epochs) and a list of files, each with a path."""
    path = sim_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        grid = manifest["epoch_grid"]
        first, count = grid["first_epoch"], grid["epoch_count"]
        files = manifest.get("files", [])
    except FileNotFoundError:
        raise SourceError(f"{sim_dir} holds no manifest.json; is it a simulated night?") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise SourceError(f"{path} is not a valid night manifest ({exc}).") from None
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in (first, count))
    if not whole or not 1 <= count <= MAX_EPOCHS:
        raise SourceError(f"{path}: epoch_grid needs first_epoch and epoch_count as whole numbers, "
                          f"1 to {MAX_EPOCHS} epochs of {EPOCH_S} s (got {first!r}, {count!r}).")
    if not PLAUSIBLE_START_S[0] <= epoch_start(first) < PLAUSIBLE_START_S[1]:
        raise SourceError(f"{path}: first_epoch {first} is not a night between 1990 and 2100; "
                          f"it counts {EPOCH_S}-s epochs since 1970.")
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("path"), str)
                                              for f in files):
        raise SourceError(f"{path}: files needs to be a list of objects with a path.")
    zone = manifest.get("timezone", "")
    try:
        check_zone(zone if isinstance(zone, str) else repr(zone))
    except ValueError as exc:
        raise SourceError(f"{path}: timezone {exc}.") from None
    return manifest


def replay(
    sim_dir: Path,
    store: EdgeStore,
    *,
    realtime: bool = False,
    speed: float = 1.0,
    audio: str = "auto",
    audio_stream: AudioStream | None = None,
    on_epoch: Callable[[int], None] | None = None,
    classify: bool = True,
    timezone: str | None = None,
) -> ReplayResult:
    """Replay a night into the store.

    audio: "auto" (the night's audio file, else `audio_stream`'s, else none), "file", "stream"
    (`audio_stream`'s, which must be given) or "none". With classify, the edge's models
    (edge/features/classify.py) add stream 5 records and their figures to the night summary.
    timezone: the zone that names the night (None: the manifest's `timezone`, else the
    machine's).
    """
    if audio == "stream" and audio_stream is None:
        raise ValueError('audio="stream" needs the audio_stream that regenerates the night\'s audio.')
    manifest = load_manifest(sim_dir)
    first = int(manifest["epoch_grid"]["first_epoch"])
    count = int(manifest["epoch_grid"]["epoch_count"])
    start = float(epoch_start(first))
    bad: dict[str, int] = {}
    problems: list[str] = []
    started = time.monotonic()
    # Epochs this node already holds (an earlier replay, an import, the live node) are kept
    # as they are: stored again they would be synced twice under new sequence numbers.
    held = {s: {r.epoch for r in store.records(s, first, first + count, device=store.device)}
            for s in STREAM_ORDER}
    if any(held.values()):
        problems.append("Already in the store from this node, kept as they were: " + ", ".join(
            f"{len(e)} epochs of {features.stream(s)[features.S_NAME]}"
            for s, e in held.items() if e) + ".")

    audio_path = next((sim_dir / f["path"] for f in manifest.get("files", [])
                       if f["path"].startswith("audio.")), None)
    source = None
    if audio in ("auto", "file") and audio_path is not None and audio_path.exists():
        source = _AudioFile(audio_path, problems)
    elif audio == "file" or (audio == "auto" and audio_stream is None):
        problems.append(f"{audio_path.name}, named in the manifest, is not in {sim_dir}; the night "
                        "has no audio features." if audio_path is not None else
                        "The night has no audio file; the night has no audio features.")
    elif audio in ("auto", "stream"):
        chunks = audio_stream(manifest)
        if chunks is None:
            problems.append("The night's audio cannot be regenerated; the night has no audio "
                            "features.")
        else:
            source = _AudioStream(chunks)

    store.start_boot()
    pipe = EdgePipeline(store, first, audio=source is not None,
                        audio_rate=getattr(source, "rate", SAMPLE_RATE))
    samples = sample_streams(sim_dir, start, bad, problems)
    pending = next(samples, None)
    audio_gap_from = None
    beat_t: list[float] = []  # the night's beats, for the heart-rhythm apnea screen
    beat_rr: list[float] = []
    for i in range(count):
        epoch = first + i
        end = epoch_start(epoch) + EPOCH_S
        while pending is not None and pending.t < end:
            if pending.t >= start:
                pipe.add(pending)
                if isinstance(pending, Beat):
                    beat_t.append(pending.t)
                    beat_rr.append(pending.rr_ms)
            pending = next(samples, None)
        if source is not None:
            block = source.next_epoch()
            if block is None:
                if audio_gap_from is None:
                    audio_gap_from = epoch
                pipe.skip_audio_epoch()
            else:
                pipe.feed_audio(block)
        pipe.close(epoch, skip=tuple(s for s, e in held.items() if epoch in e))
        if on_epoch:
            on_epoch(i + 1)
        if realtime:
            wait = started + (i + 1) * EPOCH_S / speed - time.monotonic()
            if wait > 0:
                time.sleep(wait)
    if source is not None:
        source.close()
    if audio_gap_from is not None:
        store.add_gap("audio", audio_gap_from, first + count, "audio source ended early")
    for p in problems:
        _LOGGER.warning("%s", p)

    night = night_label(start, manifest.get("timezone", "") if timezone is None else timezone)
    written = count * len(STREAM_ORDER) - sum(len(e) for e in held.values())
    summary = store.night(night) if not written else None
    if summary is None:  # (nothing new: the night's summary and classifier rows stand)
        cols = night_columns(store, first, count)  # read once for classifiers and summary
        beats = ({"beats": {"t_s": np.array(beat_t), "rr_ms": np.array(beat_rr),
                            "start_s": start}} if beat_t else {})
        summary = finish_night(store, first, count, night, cols=cols, beats=beats,
                               classify=classify)
    if summary.get("audio_unusable"):
        problems.append(summary["audio_unusable"])
    for stream in STREAM_ORDER:
        if len(held[stream]) == count:
            continue  # all kept as they were: its source's state stands
        name = features.stream(stream)[features.S_NAME]
        state = "replayed" if pipe.present[stream] else "no data"
        kept = f", {len(held[stream])} kept as they were" if held[stream] else ""
        store.set_source(name, "replay", state, f"{pipe.present[stream]}/{count} epochs with "
                                                f"data from {iso_epoch(first)}{kept}")
    return ReplayResult(
        night=night,
        first_epoch=first,
        epochs=count,
        records=written,
        present={features.stream(s)[features.S_NAME]: pipe.present[s] for s in STREAM_ORDER},
        kept={features.stream(s)[features.S_NAME]: len(held[s]) for s in STREAM_ORDER},
        bad_rows=bad,
        problems=problems,
        seconds=time.monotonic() - started,
        summary=summary,
    )
