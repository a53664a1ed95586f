"""Edge benchmarks: the streaming audio pipeline against the naive librosa approach, and the
size of a whole night on the wire.

Each measured run happens in a child process pinned to one core with one BLAS thread,
so its peak RSS and speed are its own.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nightlink.shared import codec, features

_ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process image (VmHWM; ru_maxrss would include the
    parent's peak from before exec on Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _pin_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def _child(mode: str, wav: Path) -> dict:
    """Run one measurement in a fresh interpreter; return its JSON figures."""
    env = {**os.environ, **_ONE_THREAD}
    proc = subprocess.run(
        [sys.executable, "-m", "nightlink.tools.bench.edge", mode, str(wav)],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pack_night(records: list[codec.Record], per_record: int = 120) -> tuple[int, int]:
    """Bytes on the wire of a night's rows packed into records of `per_record` epochs, in
    batches: (uncompressed, compressed as backfill goes)."""
    packed = codec.pack_runs(records, per_record)
    groups = [packed[i : i + 64] for i in range(0, len(packed), 64)]
    raw = sum(len(codec.encode_batch(g)) for g in groups)
    deflated = sum(len(codec.encode_batch(g, compress=True)) for g in groups)
    return raw, deflated


def stream_audio(wav: Path) -> dict:
    """The edge's way: read one epoch at a time, keep only features."""
    _pin_one_core()
    t0 = time.perf_counter()
    import soundfile

    from nightlink.edge.features.audio import EPOCH_SAMPLES, AudioFeatureExtractor
    from nightlink.edge.features.reducers import to_raw

    import_s = time.perf_counter() - t0
    recs = []
    t = time.perf_counter()
    with soundfile.SoundFile(str(wav)) as f:
        ex = AudioFeatureExtractor(0, f.samplerate)
        frames = f.frames
        for block in f.blocks(blocksize=EPOCH_SAMPLES, dtype="int16"):
            for epoch, values in ex.feed(block):
                recs.append(codec.Record(features.AUDIO, bytes(6), 1, epoch + 1, epoch,
                                         [to_raw(features.AUDIO, values)]))
    seconds = time.perf_counter() - t
    raw, deflated = pack_night(recs)
    return {
        "audio_s": frames / 16000.0,
        "seconds": seconds,
        "import_s": import_s,
        "peak_rss_mb": _peak_rss_mb(),
        "epochs": len(recs),
        "bytes_packed": raw,
        "bytes_deflated": deflated,
    }


def naive_audio(wav: Path) -> dict:
    """What a user would write: load the whole file, run librosa.feature.* on it."""
    _pin_one_core()
    import librosa

    t = time.perf_counter()
    y, sr = librosa.load(str(wav), sr=16000)
    kw = {"n_fft": 512, "hop_length": 512}
    feats = [
        librosa.feature.rms(y=y, frame_length=512, hop_length=512),
        librosa.feature.spectral_centroid(y=y, sr=sr, **kw),
        librosa.feature.spectral_rolloff(y=y, sr=sr, **kw),
        librosa.feature.spectral_flatness(y=y, **kw),
        librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13, n_mels=40, **kw),
    ]
    per_epoch = 16000 * 30 // 512
    n = feats[0].shape[1] // per_epoch
    [f[:, : n * per_epoch].reshape(f.shape[0], n, per_epoch).mean(axis=2) for f in feats]
    return {"audio_s": y.size / sr, "seconds": time.perf_counter() - t,
            "peak_rss_mb": _peak_rss_mb(), "epochs": n}


def bench_edge_audio(hours: float = 8.0, naive: bool = True) -> dict:
    """Stream an H-hour synthetic recording through the audio pipeline (and the naive way)."""
    from nightlink.tools.sim.night import simulate_night

    with tempfile.TemporaryDirectory(prefix="nl-bench-audio-") as tmp:
        night = Path(tmp) / "night"
        simulate_night(night, seed=1, hours=hours)
        wav = night / "audio.wav"
        cold = [_child("import", wav)["import_s"] for _ in range(2)]
        s = _child("stream", wav)
        if "error" in s:
            raise RuntimeError(f"the streaming run failed: {s['error']}")
        out = {
            "hours": hours,
            "rtf": round(s["audio_s"] / s["seconds"], 1),
            "seconds": round(s["seconds"], 2),
            "peak_rss_mb": round(s["peak_rss_mb"], 1),
            "cold_start_s": round(cold[1], 3),
            "bytes_per_epoch": round(s["bytes_packed"] / s["epochs"], 1),
            "bytes_per_night": s["bytes_packed"],
            "bytes_per_night_deflated": s["bytes_deflated"],
            "naive_rtf": None,
            "naive_peak_rss_mb": None,
        }
        if naive:
            n = _child("naive", wav)
            if "error" in n:
                out["naive_error"] = n["error"]
            else:
                out["naive_rtf"] = round(n["audio_s"] / n["seconds"], 1)
                out["naive_peak_rss_mb"] = round(n["peak_rss_mb"], 1)
    return out


def bench_edge_night(hours: float = 8.0) -> dict:
    """Replay a whole simulated night; size of all its epochs on the wire, and of its summary."""
    from nightlink.edge.store import EdgeStore
    from nightlink.tools.sim.night import simulate_night
    from nightlink.tools.sim.replay import replay

    with tempfile.TemporaryDirectory(prefix="nl-bench-night-") as tmp:
        night = Path(tmp) / "night"
        simulate_night(night, seed=1, hours=hours, audio_format=None)
        store = EdgeStore(Path(tmp) / "edge.db")
        t = time.perf_counter()
        result = replay(night, store, audio="stream")
        seconds = time.perf_counter() - t
        recs = list(store.records())
        recs.sort(key=lambda r: (r.stream, r.seq))
        raw, deflated = pack_night(recs)
        per_stream = {}
        for sid, name, *_ in features.STREAMS:
            per_stream[name] = pack_night([r for r in recs if r.stream == sid])[1]
        store.close()
    return {
        "hours": hours,
        "seconds": round(seconds, 2),
        "records": len(recs),
        "bytes_per_night": raw,
        "bytes_per_night_deflated": deflated,
        "deflated_by_stream": per_stream,
        "summary_bytes": len(json.dumps(result.summary, separators=(",", ":"))),
    }


def bench_classify(hours: float = 8.0) -> dict:
    """All three edge models over a stored night: load once, then classify (best of 3)."""
    from nightlink.edge.features import classify
    from nightlink.edge.features.night_summary import night_columns
    from nightlink.edge.store import EdgeStore
    from nightlink.tools.sim.night import simulate_night
    from nightlink.tools.sim.replay import replay

    with tempfile.TemporaryDirectory(prefix="nl-bench-classify-") as tmp:
        night = Path(tmp) / "night"
        simulate_night(night, seed=1, hours=hours, audio_format=None)
        store = EdgeStore(Path(tmp) / "edge.db")
        result = replay(night, store, audio="stream", classify=False)
        t = time.perf_counter()
        clf = classify.Classifiers()
        load_s = time.perf_counter() - t
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            streams = night_columns(store, result.first_epoch, result.epochs)
            clf.run(streams, streams["cgm"]["glucose_mgdl"])
            runs.append(time.perf_counter() - t)
        t = time.perf_counter()
        classify.classify_night(store, result.first_epoch, result.epochs, clf)
        with_store = time.perf_counter() - t
        store.close()
    sizes = {p.stem: p.stat().st_size for p in sorted(classify.MODELS.glob("*.tflite"))}
    from nightlink.edge.features import cvhr

    rr = classify.MODELS / cvhr.MODEL_FILE  # the heart-rhythm apnea model is its JSON weights
    sizes[rr.stem] = rr.stat().st_size
    return {"hours": hours, "epochs": result.epochs, "load_s": round(load_s, 3),
            "night_s": round(min(runs), 3), "night_with_store_s": round(with_store, 3),
            "model_bytes": sizes}


if __name__ == "__main__":
    mode, path = sys.argv[1], Path(sys.argv[2])
    if mode == "import":
        t0 = time.perf_counter()
        import nightlink.edge.features.audio  # noqa: F401

        figures = {"import_s": time.perf_counter() - t0}
    elif mode == "stream":
        figures = stream_audio(path)
    else:
        figures = naive_audio(path)
    sys.stdout.write(json.dumps(figures) + "\n")
