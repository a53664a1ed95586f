"""A simulated night through the edge replay, its audio regenerated from the night's seed when
no audio file was kept (`nightlink simulate replay`, the demo, the benchmarks, training)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from nightlink.edge.node.replay import ReplayResult
    from nightlink.edge.store import EdgeStore


def night_audio(manifest: dict) -> Iterator[np.ndarray] | None:
    """The simulator's audio of the night in `manifest` as a stream, or None if the night was
    not simulated (no seed)."""
    if "seed" not in manifest:
        return None
    from nightlink.tools.sim.audio import audio_chunks

    return audio_chunks(manifest["seed"], manifest["patient"], manifest["hours"])


def replay(sim_dir: Path, store: EdgeStore, **options) -> ReplayResult:
    """`nightlink.edge.node.replay.replay` with the simulator's audio stream: audio "auto"
    (the default) uses the night's file, else regenerates the audio; "stream" always does."""
    from nightlink.edge.node.replay import replay as edge_replay

    return edge_replay(sim_dir, store, audio_stream=night_audio, **options)
