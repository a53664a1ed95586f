# Calls into shared/ that must give the same answers under CPython and MicroPython.
# Run as a script; `nightlink.shared` imports the same way in both; prints one JSON line.
import json

from nightlink.shared import apisecret, clinical, codec, epoch, features, topics, units

T0 = 1768516200  # 2026-01-15T22:30:00Z


def _packed():
    row = (2000, 90, 0, 400, 60)
    recs = [codec.Record(features.ROOM, b"abcdef", 1, s, e, [row])
            for s, e in ((1, 100), (2, 101), (3, 102), (4, 110), (5, 111))]
    packed = codec.pack_runs(recs, 2)
    back = [r for p in packed for r in codec.split(p)]
    return [[p.seq, p.epoch, p.count] for p in packed] + [[r.seq for r in back]]


def _header(buf):
    h = codec.peek_header(buf)
    return [h[codec.H_VERSION], h[codec.H_STREAM], h[codec.H_FLAGS], h[codec.H_NFEAT],
            list(h[codec.H_DEVICE]), h[codec.H_BOOT], h[codec.H_SEQ], h[codec.H_EPOCH],
            h[codec.H_COUNT], codec.last_seq(h)]


_REC = codec.encode(codec.Record(features.ROOM, b"abcdef", 7, 41, 58950540,
                                 [(2000, 90, 0, 400, 60)] * 3, codec.FLAG_LIVE))


def _damaged(i):
    b = bytearray(_REC)
    b[i] ^= 0x10
    return bytes(b)


CALLS = [
    ("apisecret.api_secret_hash", lambda: [apisecret.api_secret_hash(s) for s in
                                           ("", "a secret of 12+", "caf\u00e9-token-\u00fc")], ()),
    ("clinical.ahi_severity", lambda: [clinical.ahi_severity(a)
                                       for a in (None, 0, 4.9, 5, 14.99, 15, 29.9, 30, 80)], ()),
    ("clinical.unusable_audio", lambda: [clinical.unusable_audio(e) for e in (
        [(-120.0, -120.0, 0.0)] * 9 + [(-50.0, -30.0, 0.3), (None, None, None)],
        [(-0.5, 0.0, 0.9)] * 8 + [(-60.0, -60.0, 0.0), (-50.0, -30.0, 0.3)],
        [(-120.0, -120.0, 0.0)] * 8 + [(-50.0, -30.0, 0.3)] * 2,
        [(float("nan"), float("nan"), float("nan"))], [],
        [(-28.5, -28.5, None)] * 10,  # a stuck value from an 8 kHz source: no flatness
        [(-45.0, -44.0, float("nan"))] * 10)], ()),  # an 8 kHz quiet room's steady hiss
    ("topics.data_topic", topics.data_topic, ("fam-1", "a4cf12b0c3d4", "room")),
    ("topics.ack_topic", topics.ack_topic, ("fam-1", "a4cf12b0c3d4", "cgm")),
    ("topics.cmd_topic", topics.cmd_topic, ("fam-1", "a4cf12b0c3d4")),
    ("topics.device_prefix", topics.device_prefix, ("t", "d")),
    ("topics.parse data", topics.parse, ("nl/v1/fam-1/a4cf12b0c3d4/room",)),
    ("topics.parse ack", topics.parse, ("nl/v1/fam-1/a4cf12b0c3d4/room/ack",)),
    ("topics.parse cmd", topics.parse, ("nl/v1/fam-1/a4cf12b0c3d4/cmd",)),
    ("topics.parse status", topics.parse, ("nl/v1/fam-1/a4cf12b0c3d4/status",)),
    ("topics.status_topic", topics.status_topic, ("fam-1", "a4cf12b0c3d4")),
    ("topics.parse wrong prefix", topics.parse, ("nl/v2/a/b/c",)),
    ("topics.parse too deep", topics.parse, ("nl/v1/a/b/c/d/e",)),
    ("topics.parse reserved", topics.parse, ("nl/v1/a/b/ack/ack",)),
    ("topics.parse wildcard", topics.parse, ("nl/v1/+/b/c",)),
    ("topics.parse upper", topics.parse, ("nl/v1/Fam/b/c",)),
    ("topics.parse empty", topics.parse, ("nl/v1//b/c",)),
    ("topics.check_name long", topics.check_name, ("tenant", "x" * 33)),
    ("topics.check_name dash", topics.check_name, ("tenant", "-x")),
    ("topics.check_publish ok", topics.check_publish_topic, ("nl/v1/a/b/c",)),
    ("topics.check_publish hash", topics.check_publish_topic, ("nl/v1/#",)),
    ("topics.check_publish nul", topics.check_publish_topic, ("a\0b",)),
    ("epoch.epoch_index", epoch.epoch_index, (T0 + 29,)),
    ("epoch.epoch_index float", epoch.epoch_index, (T0 + 30.5,)),
    ("epoch.epoch_start", epoch.epoch_start, (58950540,)),
    ("epoch.epoch_offset", epoch.epoch_offset, (T0 + 47,)),
    ("epoch.iso", epoch.iso, (T0,)),
    ("epoch.iso_epoch", epoch.iso_epoch, (58950541,)),
    ("epoch.night_of evening", epoch.night_of, (T0,)),
    ("epoch.night_of morning", epoch.night_of, (T0 + 8 * 3600,)),
    ("epoch.night_of offset", epoch.night_of, (T0 + 14 * 3600, -6 * 3600)),
    ("units.to_mmoll", units.to_mmoll, (100,)),
    ("units.from_mmoll", units.from_mmoll, (3.9,)),
    ("units.format mgdl", units.format_glucose, (98.4,)),
    ("units.format mmol", units.format_glucose, (98, units.MMOLL)),
    ("units.format low", units.format_glucose, (39,)),
    ("units.format high", lambda: [units.format_glucose(g) for g in (400, 401, 999)], ()),
    ("units.format error", units.format_glucose, (5,)),
    ("units.format unknown error", units.format_glucose, (7,)),
    ("units.format none", units.format_glucose, (None,)),
    ("units.format bad unit", units.format_glucose, (98, "mg")),
    ("units.band", lambda: [units.band(g) for g in (40, 53, 54, 69, 70, 180, 181, 250, 251)], ()),
    ("units.trend", lambda: [units.trend(r) for r in (None, 3.5, 2.5, 1.5, 0, -1, -1.5, -2.5, -3.5)], ()),
    ("units.direction", units.direction, (-2.5,)),
    ("units.trend_of", lambda: [units.trend_of(d) for d in ("Flat", "TripleUp", "x", "DoubleDown")], ()),
    ("features.row_format", lambda: [features.row_format(s[0]) for s in features.STREAMS], ()),
    ("features.bounds cgm", features.bounds, (features.CGM,)),
    ("features.quantize", lambda: [features.quantize(f, f[5]) for f in features.features(features.AUDIO)], ()),
    ("codec.quantize_row range", codec.quantize_row, (features.ROOM, (70.0, 1, 1, 400, 1))),
    ("codec.quantize_row count", codec.quantize_row, (features.ROOM, (20.0,))),
    ("codec.quantize_row stream", codec.quantize_row, (99, (1,))),
    ("codec.device_id", lambda: list(codec.device_id("a4cf12b0c3d4")), ()),
    ("codec.device_id bad", codec.device_id, ("A4CF12B0C3D4",)),
    ("codec.crc32 soft", lambda: [codec.crc32(b"123456789"), codec.crc32_soft(b"123456789")], ()),
    ("codec.pack_runs", _packed, ()),
    ("codec.record_size", lambda: [codec.record_size(s[0], 1) for s in features.STREAMS], ()),
    ("codec.peek_header", _header, (_REC,)),
    ("codec.peek_header header only", _header, (_REC[:codec.HEADER_SIZE],)),
    ("codec.peek_header short", _header, (_REC[:codec.HEADER_SIZE - 1],)),
    ("codec.peek_header version", _header, (b"\x02" + _REC[1:],)),
    ("codec.check", lambda: list(codec.check(_REC)) == list(codec.peek_header(_REC)), ()),
    ("codec.check payload damaged", codec.check, (_damaged(30),)),
    ("codec.check cut", codec.check, (_REC[:-1],)),
]


def run():
    out = {}
    for name, fn, args in CALLS:
        try:
            res = fn(*args)
            if isinstance(res, tuple):
                res = list(res)
            out[name] = {"ok": res}
        except ValueError as exc:
            out[name] = {"error": type(exc).__name__}
    return out


print(json.dumps(run()))
