# Feature registry: every per-epoch feature of every stream, with its unit and quantization.
# The one source of truth for the codec, the decoder, shared/WIRE.md and the reports.

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# Quantized storage types, named by their struct format character.
INT8 = "b"
UINT8 = "B"
INT16 = "h"

# Raw value that means "not measured in this epoch" for each type. Never imputed.
MISSING = {INT8: -128, UINT8: 255, INT16: -32768}
# Smallest and largest raw values that carry a measurement (the sentinel excluded).
RAW_LIMITS = {INT8: (-127, 127), UINT8: (0, 254), INT16: (-32767, 32767)}
TYPE_NAMES = {INT8: "int8", UINT8: "uint8", INT16: "int16"}

# Stream ids as they travel in the record header (one byte). Never reuse a number.
ROOM = const(1)
WEARABLE = const(2)
AUDIO = const(3)
CGM = const(4)
INFER = const(5)

# Feature fields, by position in a feature tuple.
F_NAME = const(0)
F_UNIT = const(1)
F_TYPE = const(2)
F_SCALE = const(3)
F_OFFSET = const(4)
F_LO = const(5)
F_HI = const(6)

# value = raw * scale + offset; valid values lie in [lo, hi].
# Features are append-only within a stream: a new feature goes at the end, so a
# record from an older device (fewer features) still decodes, the newer ones missing.

_ROOM = (
    ("temp_c", "degC", INT16, 0.01, 0.0, -20.0, 60.0),
    ("humidity_pct", "%", UINT8, 0.5, 0.0, 0.0, 100.0),
    ("light_lux", "lx", INT16, 1.0, 0.0, 0.0, 30000.0),
    ("co2_ppm", "ppm", INT16, 1.0, 0.0, 250.0, 10000.0),
    ("noise_dba", "dBA", UINT8, 0.5, 0.0, 0.0, 120.0),
)

_WEARABLE = (
    ("hr_mean_bpm", "bpm", INT16, 0.1, 0.0, 20.0, 250.0),
    ("hr_min_bpm", "bpm", UINT8, 1.0, 0.0, 20.0, 250.0),
    ("hr_max_bpm", "bpm", UINT8, 1.0, 0.0, 20.0, 250.0),
    ("rmssd_ms", "ms", INT16, 0.1, 0.0, 0.0, 2000.0),
    ("sdnn_ms", "ms", INT16, 0.1, 0.0, 0.0, 2000.0),
    ("spo2_mean_pct", "%", UINT8, 0.5, 0.0, 50.0, 100.0),
    ("spo2_min_pct", "%", UINT8, 0.5, 0.0, 50.0, 100.0),
    ("desat3_count", "count", UINT8, 1.0, 0.0, 0.0, 30.0),
    ("desat4_count", "count", UINT8, 1.0, 0.0, 0.0, 30.0),
    ("activity_count", "count", INT16, 1.0, 0.0, 0.0, 32000.0),
    ("movement", "flag", UINT8, 1.0, 0.0, 0.0, 1.0),
    # Cyclic variation of heart rate over the 5 minutes of beats before the epoch's end
    # (docs/apnea-from-rr.md): 0.01-0.05 Hz share of heart-rate power, 10th-90th percentile
    # swing over the last 3 minutes, rises of >= 3 % counted, and cycle regularity.
    ("cv_fraction", "ratio", UINT8, 0.004, 0.0, 0.0, 1.0),
    ("cv_swing_pct", "%", UINT8, 0.4, 0.0, 0.0, 100.0),
    ("cv_cycles", "count", UINT8, 1.0, 0.0, 0.0, 15.0),
    ("cv_regularity", "ratio", INT8, 0.01, 0.0, -1.0, 1.0),
)

_AUDIO = (
    ("loud_mean_dbfs", "dBFS", UINT8, 0.5, -120.0, -120.0, 0.0),
    ("loud_max_dbfs", "dBFS", UINT8, 0.5, -120.0, -120.0, 0.0),
    ("centroid_hz", "Hz", UINT8, 32.0, 0.0, 0.0, 8000.0),
    ("rolloff_hz", "Hz", UINT8, 32.0, 0.0, 0.0, 8000.0),
    ("flatness", "ratio", UINT8, 0.004, 0.0, 0.0, 1.0),
    ("mfcc0_mean", "dB", INT16, 0.1, 0.0, -1000.0, 200.0),
    ("mfcc1_mean", "dB", INT8, 2.0, 0.0, -250.0, 250.0),
    ("mfcc2_mean", "dB", INT8, 1.0, 0.0, -127.0, 127.0),
    ("mfcc3_mean", "dB", INT8, 1.0, 0.0, -127.0, 127.0),
    ("mfcc4_mean", "dB", INT8, 1.0, 0.0, -127.0, 127.0),
    ("mfcc5_mean", "dB", INT8, 1.0, 0.0, -127.0, 127.0),
    ("mfcc6_mean", "dB", INT8, 1.0, 0.0, -127.0, 127.0),
    ("mfcc7_mean", "dB", INT8, 1.0, 0.0, -127.0, 127.0),
    ("mfcc8_mean", "dB", INT8, 1.0, 0.0, -127.0, 127.0),
    ("mfcc9_mean", "dB", INT8, 1.0, 0.0, -127.0, 127.0),
    ("mfcc10_mean", "dB", INT8, 1.0, 0.0, -127.0, 127.0),
    ("mfcc11_mean", "dB", INT8, 1.0, 0.0, -127.0, 127.0),
    ("mfcc12_mean", "dB", INT8, 1.0, 0.0, -127.0, 127.0),
    ("mfcc0_std", "dB", UINT8, 0.5, 0.0, 0.0, 127.0),
    ("mfcc1_std", "dB", UINT8, 0.5, 0.0, 0.0, 127.0),
    ("mfcc2_std", "dB", UINT8, 0.5, 0.0, 0.0, 127.0),
    ("mfcc3_std", "dB", UINT8, 0.5, 0.0, 0.0, 127.0),
    ("snore_ratio", "ratio", UINT8, 0.004, 0.0, 0.0, 1.0),
    ("breath_periodicity", "ratio", UINT8, 0.004, 0.0, 0.0, 1.0),
    ("breath_rate_bpm", "1/min", UINT8, 0.25, 0.0, 0.0, 60.0),
    ("silence_max_s", "s", UINT8, 0.5, 0.0, 0.0, 120.0),
    ("transient_count", "count", UINT8, 1.0, 0.0, 0.0, 254.0),
    # Snore features: 60-3500 Hz, gain- and rate-invariant (docs/audio-features.md).
    ("sn_level_over_floor_db", "dB", UINT8, 0.25, 0.0, 0.0, 60.0),
    ("sn_active_frac", "ratio", UINT8, 0.004, 0.0, 0.0, 1.0),
    ("sn_low_ratio", "ratio", UINT8, 0.004, 0.0, 0.0, 1.0),
    ("sn_low_depth_db", "dB", UINT8, 0.25, 0.0, 0.0, 60.0),
    ("sn_harmonicity", "ratio", UINT8, 0.004, 0.0, 0.0, 1.0),
    ("sn_pitch_hz", "Hz", UINT8, 2.0, 0.0, 0.0, 500.0),
    ("sn_centroid_hz", "Hz", UINT8, 16.0, 0.0, 0.0, 4000.0),
    ("sn_flatness", "ratio", UINT8, 0.004, 0.0, 0.0, 1.0),
    ("sn_cep1", "dB", INT8, 0.5, 0.0, -63.0, 63.0),
    ("sn_cep2", "dB", INT8, 0.5, 0.0, -63.0, 63.0),
    ("sn_cep3", "dB", INT8, 0.5, 0.0, -63.0, 63.0),
    ("sn_cep4", "dB", INT8, 0.5, 0.0, -63.0, 63.0),
    ("sn_cep5", "dB", INT8, 0.5, 0.0, -63.0, 63.0),
    ("sn_cep6", "dB", INT8, 0.5, 0.0, -63.0, 63.0),
    ("sn_env_periodicity", "ratio", UINT8, 0.004, 0.0, 0.0, 1.0),
    ("sn_pitched_frac", "ratio", UINT8, 0.004, 0.0, 0.0, 1.0),
    ("sn_flux_db", "dB", UINT8, 0.05, 0.0, 0.0, 12.0),
    ("sn_burst_s", "s", UINT8, 0.125, 0.0, 0.0, 30.0),
    ("sn_syllable_mod", "ratio", UINT8, 0.004, 0.0, 0.0, 1.0),
)

_CGM = (
    ("glucose_mgdl", "mg/dL", INT16, 1.0, 0.0, 39.0, 600.0),
    ("minutes_since", "min", UINT8, 0.5, 0.0, 0.0, 120.0),
    ("delta5_mgdl", "mg/dL", INT8, 1.0, 0.0, -100.0, 100.0),
    ("roc_mgdl_min", "mg/dL/min", INT8, 0.05, 0.0, -6.0, 6.0),
    ("direction", "trend", UINT8, 1.0, 0.0, 0.0, 9.0),
    ("sensor_error", "code", UINT8, 1.0, 0.0, 0.0, 38.0),
)

# Classifier outputs per epoch (edge models, see tools/train and edge/features/classify.py).
# sleep_stage: 0 wake, 1 light (N1+N2), 2 deep (N3), 3 REM. Flags are 1 when the epoch
# holds (part of) that event; apnea_events counts apnea candidates starting in the epoch.
_INFER = (
    ("sleep_stage", "stage", UINT8, 1.0, 0.0, 0.0, 3.0),
    ("stage_conf", "ratio", UINT8, 0.004, 0.0, 0.0, 1.0),
    ("snore", "flag", UINT8, 1.0, 0.0, 0.0, 1.0),
    ("apnea_events", "count", UINT8, 1.0, 0.0, 0.0, 3.0),
    ("desat3", "flag", UINT8, 1.0, 0.0, 0.0, 1.0),
    ("desat4", "flag", UINT8, 1.0, 0.0, 0.0, 1.0),
    ("low_risk", "ratio", UINT8, 0.004, 0.0, 0.0, 1.0),
    ("forecast30_mgdl", "mg/dL", INT16, 1.0, 0.0, 39.0, 600.0),
)

# (id, name, modality, priority, features). Priority 0 is highest (sent first).
STREAMS = (
    (ROOM, "room", "room sensors", 2, _ROOM),
    (WEARABLE, "wearable", "wearable", 2, _WEARABLE),
    (AUDIO, "audio", "bedroom audio", 3, _AUDIO),
    (CGM, "cgm", "glucose", 1, _CGM),
    (INFER, "inference", "classifier outputs", 2, _INFER),
)

S_ID = const(0)
S_NAME = const(1)
S_MODALITY = const(2)
S_PRIORITY = const(3)
S_FEATURES = const(4)


def stream(stream_id):
    """The stream tuple for an id, or None if this build does not know it."""
    for s in STREAMS:
        if s[S_ID] == stream_id:
            return s
    return None


def stream_by_name(name):
    """The stream tuple for a name such as "room", or None."""
    for s in STREAMS:
        if s[S_NAME] == name:
            return s
    return None


def features(stream_id):
    """The feature tuples of a stream, in wire order."""
    s = stream(stream_id)
    return s[S_FEATURES] if s else ()


def names(stream_id):
    """Feature names of a stream, in wire order."""
    return [f[F_NAME] for f in features(stream_id)]


def row_format(stream_id, nfeat=-1):
    """struct format of one epoch row (the first nfeat features), little-endian."""
    feats = features(stream_id)
    if nfeat < 0:
        nfeat = len(feats)
    return "<" + "".join(f[F_TYPE] for f in feats[:nfeat])


def quantize(feature, value):
    """Raw integer for a physical value, rounded half away from zero (same in both interpreters)."""
    x = (value - feature[F_OFFSET]) / feature[F_SCALE]
    if x >= 0:
        return int(x + 0.5)
    return -int(-x + 0.5)


def dequantize(feature, raw):
    """Physical value for a raw integer (no sentinel check)."""
    return raw * feature[F_SCALE] + feature[F_OFFSET]


_BOUNDS = {}


def bounds(stream_id):
    """Per feature (missing sentinel, lowest valid raw, highest valid raw), computed once."""
    b = _BOUNDS.get(stream_id)
    if b is None:
        b = tuple((MISSING[f[F_TYPE]],) + raw_bounds(f) for f in features(stream_id))
        _BOUNDS[stream_id] = b
    return b


def raw_bounds(feature):
    """Raw integers for the feature's valid range [lo, hi], clipped to what the type can hold."""
    t = feature[F_TYPE]
    lo = quantize(feature, feature[F_LO])
    hi = quantize(feature, feature[F_HI])
    tlo, thi = RAW_LIMITS[t]
    return (lo if lo > tlo else tlo, hi if hi < thi else thi)
