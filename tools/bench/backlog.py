"""A synthetic multi-night backlog in an edge store, for sync tests and benchmarks.

Values follow a bounded random walk per feature, so they compress like real features do
(neighbouring epochs are close), not like noise.
"""

from __future__ import annotations

import random

from nightlink.edge.store import EdgeStore
from nightlink.shared import features
from nightlink.shared.epoch import EPOCHS_PER_DAY

NIGHT_EPOCHS = 960
FIRST_EPOCH = 58950540  # 2026-01-15T22:30:00Z


def fill_backlog(store: EdgeStore, nights: int, seed: int = 1,
                 first_epoch: int = FIRST_EPOCH) -> int:
    """Write `nights` nights (960 epochs each) of rows for every stream; return rows written."""
    rng = random.Random(seed)
    store.start_boot()
    walk = {sid: [rng.randint(lo, hi) for _m, lo, hi in features.bounds(sid)]
            for sid in (features.CGM, features.WEARABLE, features.ROOM, features.AUDIO)}
    written = 0
    for n in range(nights):
        base = first_epoch + n * EPOCHS_PER_DAY
        with store.transaction():
            for i in range(NIGHT_EPOCHS):
                for sid, cur in walk.items():
                    for k, (_m, lo, hi) in enumerate(features.bounds(sid)):
                        step = max(1, (hi - lo) // 200)
                        cur[k] = min(hi, max(lo, cur[k] + rng.randint(-step, step)))
                    store.append(sid, base + i, [tuple(cur)])
                    written += 1
    return written
