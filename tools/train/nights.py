"""Per-epoch training tables from simulated nights: the edge's own features next to the truth.

Each night runs through the same code as production (simulator -> edge replay -> stored epoch
records), so the models learn from what the edge really computes. Tables are cached as .npz
files keyed by seed, patient and length, so training and evaluation share the work.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nightlink.edge.features.night_summary import night_columns
from nightlink.shared import features

_LOGGER = logging.getLogger(__name__)
CACHE_VERSION = 6  # 2: simulator with real stage statistics and per-night sleepers; 3: first REM on
# time; 4: desaturations counted one by one through cyclic runs (edge reducer); 5: that
# counter with a median level, a baseline of 30 s or more, and recoveries that are not events;
# 6: its baseline keeps the dips that were not desaturations
STAGE4 = {"Wake": 0, "Light": 1, "Deep": 2, "REM": 3}
STAGE_NAMES = ("Wake", "Light", "Deep", "REM")
# Model input streams, in column order.
INPUT_STREAMS = (features.WEARABLE, features.AUDIO, features.ROOM)
RESP_EVENTS = ("apnea", "hypopnea")


def input_names() -> list[str]:
    return [f"{features.stream(s)[features.S_NAME]}.{n}" for s in INPUT_STREAMS for n in features.names(s)]


@dataclass
class Night:
    """One night: X (epochs x features, NaN = missing), per-epoch labels and truth events."""

    seed: int
    patient: str
    first_epoch: int
    x: np.ndarray  # float32 [n, len(input_names())]
    stage: np.ndarray  # int8 [n] 0..3
    snore: np.ndarray  # uint8 [n]
    resp: np.ndarray  # uint8 [n]: epoch overlaps an apnea or hypopnea
    desat3: np.ndarray  # uint8 [n]
    desat4: np.ndarray  # uint8 [n]
    events: np.ndarray  # float64 [k, 3]: kind (0 apnea, 1 hypopnea), start_s, end_s
    ahi_truth: float

    @property
    def n(self) -> int:
        return int(self.stage.size)


def _overlap_mask(n: int, spans: list[tuple[float, float]]) -> np.ndarray:
    m = np.zeros(n, dtype=np.uint8)
    for a, b in spans:
        i, j = int(a // 30), int(np.ceil(b / 30))
        m[max(i, 0):min(j, n)] = 1
    return m


def night_from_dirs(sim_dir: Path, store) -> Night:
    """Build the table from a simulated night folder and the edge store it was replayed into."""
    manifest = json.loads((sim_dir / "manifest.json").read_text())
    first = int(manifest["epoch_grid"]["first_epoch"])
    n = int(manifest["epoch_grid"]["epoch_count"])
    cols = night_columns(store, first, n, INPUT_STREAMS)
    x = np.array([col for s in cols.values() for col in s.values()], dtype=np.float32).T
    with open(sim_dir / "truth" / "hypnogram.csv", newline="") as fh:
        stage = np.array([STAGE4[r["stage4"]] for r in csv.DictReader(fh)], dtype=np.int8)
    spans: dict[str, list] = {"snore": [], "resp": [], "d3": [], "d4": []}
    events = []
    with open(sim_dir / "truth" / "events.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            a, b = float(r["start_s"]), float(r["end_s"])
            if r["type"] == "snore":
                spans["snore"].append((a, b))
            elif r["type"] in RESP_EVENTS:
                spans["resp"].append((a, b))
                events.append((RESP_EVENTS.index(r["type"]), a, b))
            elif r["type"] == "desaturation":
                drop = float(dict(kv.split("=") for kv in r["detail"].split(";"))["drop_pct"])
                spans["d3"].append((a, b))
                if drop >= 4.0:
                    spans["d4"].append((a, b))
    return Night(
        seed=int(manifest["seed"]), patient=manifest["patient"], first_epoch=first,
        x=x, stage=stage[:n],
        snore=_overlap_mask(n, spans["snore"]), resp=_overlap_mask(n, spans["resp"]),
        desat3=_overlap_mask(n, spans["d3"]), desat4=_overlap_mask(n, spans["d4"]),
        events=np.array(events, dtype=np.float64).reshape(-1, 3),
        ahi_truth=float(manifest["summary"]["ahi_truth"]),
    )


def simulate_table(seed: int, patient: str, hours: float) -> Night:
    """Simulate a night, replay it through the edge pipeline, and return its table."""
    from nightlink.edge.store import EdgeStore
    from nightlink.tools.sim.night import simulate_night
    from nightlink.tools.sim.replay import replay

    with tempfile.TemporaryDirectory(prefix="nl-train-") as tmp:
        sim = Path(tmp) / "night"
        simulate_night(sim, seed=seed, patient=patient, hours=hours, audio_format=None)
        store = EdgeStore(Path(tmp) / "edge.db")
        try:
            replay(sim, store, audio="stream", classify=False)
            return night_from_dirs(sim, store)
        finally:
            store.close()


def _cache_path(cache: Path, seed: int, patient: str, hours: float) -> Path:
    """The cached table's file; named after the feature columns too, so a table stored
    before a feature was added is never split into the wrong columns."""
    tag = patient.replace("#", "")
    columns = zlib.crc32(",".join(input_names()).encode())
    return cache / f"night-v{CACHE_VERSION}-{columns:08x}-{seed}-{tag}-{hours:g}h.npz"


def load_night(seed: int, patient: str, hours: float, cache: Path | None) -> Night:
    """The night's table, from the cache when it is there."""
    if cache is not None:
        path = _cache_path(cache, seed, patient, hours)
        if path.exists():
            z = np.load(path, allow_pickle=False)
            return Night(seed, patient, int(z["first_epoch"]), z["x"], z["stage"], z["snore"],
                         z["resp"], z["desat3"], z["desat4"], z["events"], float(z["ahi_truth"]))
    _LOGGER.info("simulating night seed=%d patient=%s hours=%g", seed, patient, hours)
    night = simulate_table(seed, patient, hours)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, first_epoch=night.first_epoch, x=night.x, stage=night.stage,
                            snore=night.snore, resp=night.resp, desat3=night.desat3,
                            desat4=night.desat4, events=night.events, ahi_truth=night.ahi_truth)
        tmp.replace(path)
    return night


def adult(i: int) -> str:
    return f"adult#{i % 10 + 1:03d}"


def load_nights(seeds, hours: float, cache: Path | None, progress=None) -> list[Night]:
    out = []
    for k, seed in enumerate(seeds):
        out.append(load_night(seed, adult(seed), hours, cache))
        if progress:
            progress(k + 1, len(seeds))
    return out
