"""Stage statistics of real nights, for the hypnogram simulator and as the real-data yardstick.

Source: the Dreem Open Dataset DOD-H (Guillot, Sauvet, During, Thorey, "Dreem Open Datasets:
Multi-Scored Sleep Datasets to Compare Human and Automated Sleep Staging", IEEE TNSRE 2020;
hypnograms from Dreem-Organization/dreem-learning-evaluation, MIT licence): 25 healthy adults'
in-lab PSG nights, each scored by 5 sleep technicians. Only derived numbers (bout lengths,
transition counts, sleep statistics, inter-scorer agreement) are committed, in
stage_stats.json next to this file; `python -m nightlink.tools.sim.stage_stats DIR` rebuilds it.

The consensus hypnogram of a night is the majority of its 5 scorers (a tie goes to the scorer
who agrees best with the others over the whole dataset). The inter-scorer ceiling is each
scorer against the majority of the other four, in the 4 stages the edge model calls.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from nightlink.shared.sleep_epochs import first_rem, sleep_onset

TABLE = Path(__file__).with_name("stage_stats.json")
STAGE5 = ("W", "N1", "N2", "N3", "REM")
TO4 = np.array([0, 1, 1, 2, 3])  # W, N1+N2 (Light), N3 (Deep), REM
BIN_H = 2.0  # bout statistics by 2-hour blocks since sleep onset
N_BINS = 4


def load_records(root: Path) -> list[np.ndarray]:
    """[5, n] stage arrays (-1 unscored) for each record under root/scorer_{1..5}/."""
    names = sorted(p.name for p in (root / "scorer_1").glob("*.json"))
    out = []
    for name in names:
        out.append(np.array([json.loads((root / f"scorer_{k}" / name).read_text())
                             for k in range(1, 6)], dtype=np.int64))
    return out


def _majority(votes: np.ndarray, order: list[int], k: int) -> np.ndarray:
    """Per-epoch majority of the rows of votes ([m, n], values 0..k-1); ties go to the row
    that comes first in order."""
    counts = np.stack([(votes == s).sum(axis=0) for s in range(k)])
    best = counts.max(axis=0)
    out = np.full(votes.shape[1], -1)
    for r in reversed(order):
        hit = counts[votes[r].clip(0), np.arange(votes.shape[1])] == best
        out = np.where(hit & (votes[r] >= 0), votes[r], out)
    return out


def kappa(y: np.ndarray, p: np.ndarray, k: int) -> float:
    """Cohen's kappa of two labelings over k classes."""
    cm = np.zeros((k, k))
    np.add.at(cm, (y, p), 1)
    n = cm.sum()
    po = np.trace(cm) / n
    pe = (cm.sum(0) * cm.sum(1)).sum() / n / n
    return float((po - pe) / (1 - pe)) if pe < 1 else 0.0


def _scorer_order(records: list[np.ndarray]) -> list[int]:
    """Scorers by their overall agreement with the others, best first (the tie-breaker)."""
    agree = np.zeros(5)
    for rec in records:
        ok = (rec >= 0).all(axis=0)
        for a in range(5):
            agree[a] += sum((rec[a, ok] == rec[b, ok]).sum() for b in range(5) if b != a)
    return [int(i) for i in np.argsort(-agree)]


def inter_scorer(records: list[np.ndarray], order: list[int]) -> dict:
    """Each scorer against the majority of the other four (4 stages, and 5 stages)."""
    per4, per5, acc4 = [], [], []
    for rec in records:
        ok = (rec >= 0).all(axis=0)
        r5 = rec[:, ok]
        r4 = TO4[r5]
        for a in range(5):
            others = [s for s in order if s != a]
            sub = {s: i for i, s in enumerate(others)}
            m4 = _majority(r4[others], [sub[s] for s in others], 4)
            m5 = _majority(r5[others], [sub[s] for s in others], 5)
            per4.append(kappa(r4[a], m4, 4))
            per5.append(kappa(r5[a], m5, 5))
            acc4.append(float((r4[a] == m4).mean()))
    return {"kappa4_mean": round(float(np.mean(per4)), 3),
            "kappa4_min": round(float(np.min(per4)), 3),
            "kappa4_max": round(float(np.max(per4)), 3),
            "kappa5_mean": round(float(np.mean(per5)), 3),
            "accuracy4_mean": round(float(np.mean(acc4)), 3),
            "pairs": len(per4),
            "method": "each scorer vs the majority of the other four, per record, mean"}


def _rem_latency(hyp: np.ndarray) -> float | None:
    """REM latency (minutes) of a 5-stage hypnogram by the edge's and the cloud's rule."""
    codes = [int(s) for s in hyp]
    onset = sleep_onset(codes)
    rem = first_rem(codes, onset, 4)
    return (rem - onset) / 2.0 if rem is not None else None


def rem_latency_inter_scorer(records: list[np.ndarray], order: list[int]) -> dict:
    """The human ceiling for REM latency: each scorer's REM latency against that of the
    majority of the other four, by the same rule as the edge and the cloud (minutes)."""
    errors = []
    for rec in records:
        for a in range(5):
            others = [s for s in order if s != a]
            sub = {s: i for i, s in enumerate(others)}
            own = _rem_latency(rec[a])
            rest = _rem_latency(_majority(rec[others], [sub[s] for s in others], 5))
            if own is not None and rest is not None:
                errors.append(abs(own - rest))
    return {"median": round(float(np.median(errors)), 1),
            "p90": round(float(np.percentile(errors, 90)), 1),
            "max": round(float(np.max(errors)), 1), "pairs": len(errors),
            "method": "|REM latency of a scorer - that of the majority of the other four|, "
                      "minutes, every scorer of every record"}


def consensus(rec: np.ndarray, order: list[int]) -> np.ndarray:
    """The night's majority hypnogram, unscored epochs at either end trimmed."""
    hyp = _majority(rec, order, 5)
    scored = np.flatnonzero(hyp >= 0)
    hyp = hyp[scored[0]:scored[-1] + 1]
    # An unscored epoch inside the night takes the stage before it.
    for i in np.flatnonzero(hyp < 0):
        hyp[i] = hyp[i - 1]
    return hyp


def night_stats(hyp: np.ndarray) -> dict:
    """Sleep statistics of one hypnogram (5 stages), AASM definitions with the edge's and the
    cloud's minimum bouts (nightlink.shared.sleep_epochs) (minutes)."""
    asleep = hyp != 0
    codes = hyp.tolist()
    onset = sleep_onset(codes)
    last = int(hyp.size - 1 - np.argmax(asleep[::-1]))
    rem = first_rem(codes, onset, 4)
    rem = rem - onset if rem is not None else None
    # Strict AASM, one epoch is enough: what a scorer's own hypnogram says.
    strict = int(np.argmax(asleep))
    strict_rem = first_rem(codes, strict, 4, min_len=1)
    period = hyp[onset:last + 1]
    wakes = int(((period[1:] == 0) & (period[:-1] != 0)).sum())
    return {"sol_min": onset / 2.0, "rem_latency_min": rem / 2.0 if rem is not None else None,
            "sol_min_single_epoch": strict / 2.0,
            "rem_latency_min_single_epoch": (strict_rem - strict) / 2.0
            if strict_rem is not None else None,
            "tst_min": float(asleep.sum()) / 2.0, "waso_min": float((period == 0).sum()) / 2.0,
            "final_wake_epochs": int(hyp.size - 1 - last),
            "awakenings_per_h": wakes / (period.size / 120.0),
            "pct": {STAGE5[s]: float((period == s).mean() * 100) for s in range(1, 5)}}


def _bouts(hyp: np.ndarray, onset: int, last: int):
    """(stage, length, block, next stage) of every bout of the sleep period."""
    period = hyp[onset:last + 1]
    edges = np.flatnonzero(np.diff(period)) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [period.size]))
    out = []
    for j, (a, b) in enumerate(zip(starts, ends, strict=True)):
        block = min(int(a / 120.0 / BIN_H), N_BINS - 1)
        nxt = int(period[ends[j]]) if j + 1 < starts.size else -1
        out.append((int(period[a]), int(b - a), block, nxt))
    return out


def build(root: Path) -> dict:
    records = load_records(root)
    order = _scorer_order(records)
    hyps = [consensus(r, order) for r in records]
    per_night = [night_stats(h) for h in hyps]
    length = {(s, b): [] for s in range(5) for b in range(N_BINS)}
    trans = np.zeros((N_BINS, 5, 5), dtype=np.int64)
    epoch_trans = np.zeros((5, 5), dtype=np.int64)
    first = np.zeros(5, dtype=np.int64)
    for h in hyps:
        asleep = h != 0
        onset, last = int(np.argmax(asleep)), int(h.size - 1 - np.argmax(asleep[::-1]))
        bouts = _bouts(h, onset, last)
        first[bouts[0][0]] += 1
        for s, n, b, nxt in bouts:
            length[(s, b)].append(n)
            if nxt >= 0:
                trans[b, s, nxt] += 1
        np.add.at(epoch_trans, (h[onset:last][:, None], h[onset + 1:last + 1][:, None]), 1)

    def hist(values):
        """[[length, bouts], ...] of the bout lengths (epochs)."""
        lengths, counts = np.unique(values, return_counts=True)
        return [[int(a), int(b)] for a, b in zip(lengths, counts, strict=True)]

    bout_lengths = {}
    for s in range(5):
        pooled = [n for b in range(N_BINS) for n in length[(s, b)]]
        # Wake bouts pooled over the night; a block with few bouts of a stage takes the pool.
        bout_lengths[STAGE5[s]] = [
            hist(length[(s, b)]) if s != 0 and len(length[(s, b)]) >= 15 else hist(pooled)
            for b in range(N_BINS)]

    def summary(key):
        v = [x[key] for x in per_night if x[key] is not None]
        return {"mean": round(float(np.mean(v)), 2), "sd": round(float(np.std(v)), 2),
                "median": round(float(np.median(v)), 2), "min": round(float(np.min(v)), 2),
                "max": round(float(np.max(v)), 2)}

    return {
        "source": "Dreem Open Dataset DOD-H (Guillot et al., IEEE TNSRE 2020), 25 PSG nights "
                  "scored by 5 technicians; consensus = majority of the 5; MIT licence",
        "nights": len(hyps),
        "stages": list(STAGE5),
        "bin_hours": BIN_H,
        "sol_epochs": sorted(int(x["sol_min"] * 2) for x in per_night),
        "final_wake_epochs": sorted(x["final_wake_epochs"] for x in per_night),
        "rem_latency_epochs": sorted(int(x["rem_latency_min"] * 2) for x in per_night
                                     if x["rem_latency_min"] is not None),
        "first_stage_counts": first.tolist(),
        "bout_transition_counts": trans.tolist(),
        "bout_length_counts": bout_lengths,
        "epoch_transition_counts": epoch_trans.tolist(),
        "night": {k: summary(k) for k in ("sol_min", "rem_latency_min", "sol_min_single_epoch",
                                          "rem_latency_min_single_epoch", "tst_min", "waso_min",
                                          "awakenings_per_h")},
        "night_definitions": "sol_min, rem_latency_min: onset at the first run of 2 sleep "
                             "epochs, REM at the first run of 3 (nightlink.shared.sleep_epochs, "
                             "as the edge and cloud report them); *_single_epoch: one epoch is "
                             "enough (AASM read literally)",
        "stage_pct_of_sleep_period": {STAGE5[s]: round(float(np.mean(
            [x["pct"][STAGE5[s]] for x in per_night])), 2) for s in range(1, 5)},
        "inter_scorer": inter_scorer(records, order),
        "rem_latency_inter_scorer": rem_latency_inter_scorer(records, order),
    }


def load_table(path: Path = TABLE) -> dict:
    return json.loads(path.read_text())


def main(argv: list[str]) -> None:
    root = Path(argv[0]) if argv else Path("/work/shared/data/dreem-dodh/scorers")
    TABLE.write_text(json.dumps(build(root), indent=1) + "\n")
    sys.stdout.write(f"wrote {TABLE}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
