"""Golden byte vectors for the wire codec: the cases, and how to regenerate the committed files.

Run `python -m tests.shared.golden` only when the wire format changes on purpose; the tests
compare both interpreters against the committed bytes, so a silent change fails them.
"""

import json
import struct
import sys
from pathlib import Path

from nightlink.shared import codec, features

GOLDEN_DIR = Path(__file__).parent / "golden"
DEV_A = bytes.fromhex("a4cf12b0c3d4")
DEV_B = bytes.fromhex("0123456789ab")
EPOCH0 = 58_950_540  # 2026-01-15T22:30:00Z


def _rec(stream, rows, seq=1, boot=3, epoch=EPOCH0, device=DEV_A, flags=0):
    return codec.Record(
        stream, device, boot, seq, epoch, [codec.quantize_row(stream, r) for r in rows], flags
    )


def valid_records():
    """(name, Record) for every valid single-record vector."""
    return [
        ("room_1", _rec(features.ROOM, [(21.37, 45.5, 3.0, 812.0, 31.5)], flags=codec.FLAG_LIVE)),
        (
            "room_missing",
            _rec(features.ROOM, [(19.02, None, 0.0, None, 28.0), (None, None, None, None, None)], seq=7),
        ),
        (
            "wearable_1",
            _rec(
                features.WEARABLE,
                [(58.3, 55.0, 62.0, 48.7, 61.2, 96.5, 94.0, 1.0, 0.0, 12.0, 0.0,
                  0.708, 18.4, 4.0, 0.26)],
                seq=4_000_000_000,
                boot=0xFFFFFFFF,
            ),
        ),
        (
            "audio_1",
            _rec(
                features.AUDIO,
                [
                    (
                        -62.5, -31.0, 812.0, 2450.0, 0.352, -512.3, 88.1, -12.4, 7.7, -3.2, 1.1,
                        -0.5, 0.0, 2.2, -1.9, 0.4, 0.3, -0.2, 41.5, 12.0, 8.5, 6.0, 0.62, 0.81,
                        14.25, 12.4, 3.0, 27.5, 0.52, 0.548, 29.25, 0.868, 106.0, 512.0,
                        0.232, 27.0, 4.0, 3.5, -1.0, -0.5, -0.5, 0.892, 0.744, 2.85, 1.25, 0.084,
                    )
                ],
                device=DEV_B,
            ),
        ),
        (
            "cgm_falling",
            _rec(
                features.CGM,
                [
                    (92.0, 2.5, -6.0, -1.2, 5.0, None),
                    (None, 7.5, None, None, 8.0, 9.0),
                    (39.0, 0.0, -21.0, -4.2, 7.0, None),
                ],
                seq=123456,
                epoch=EPOCH0 + 2880 * 365,
            ),
        ),
    ]


def old_layout_room():
    """A room record from an older clock that sent only the first three features."""
    payload = struct.pack("<hBh", 2000, 90, 0)
    head = struct.pack(
        "<BBBB6sIIIH", codec.VERSION, features.ROOM, 0, 3, DEV_A, 1, 2, EPOCH0, 1
    )
    body = head + payload
    return body + struct.pack("<I", codec.crc32(body))


def _reseal(body):
    """Give damaged bytes a correct CRC, so the test sees the check behind the CRC."""
    return body + struct.pack("<I", codec.crc32(body))


def invalid_vectors():
    """(name, bytes, exception class name) that every decoder must reject."""
    good = codec.encode(valid_records()[0][1])
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0x01
    wrong_version = _reseal(bytes([2]) + good[1:-4])
    unknown_stream = _reseal(bytes([1, 200]) + good[2:-4])
    # temp_c raw 7000 = 70.00 degC, above the valid 60 degC.
    out_of_range = bytearray(good[:-4])
    struct.pack_into("<h", out_of_range, codec.HEADER_SIZE, 7000)
    return [
        ("bad_crc", bytes(bad_crc), "CrcError"),
        ("wrong_version", wrong_version, "VersionError"),
        ("unknown_stream", unknown_stream, "StreamError"),
        ("truncated_header", good[:10], "TruncatedError"),
        ("truncated_payload", good[:-6], "TruncatedError"),
        ("out_of_range", _reseal(bytes(out_of_range)), "RangeError"),
    ]


def describe(rec):
    """JSON-able view of a decoded record, the same in both interpreters."""
    return {
        "stream": rec.stream,
        "device": codec.device_name(rec.device),
        "boot": rec.boot,
        "seq": rec.seq,
        "epoch": rec.epoch,
        "flags": rec.flags,
        "rows": [list(r) for r in rec.rows],
        "values": rec.values(),
    }


def build():
    """Every vector: name -> {file, bytes, kind, expect | error}."""
    out = {}
    recs = valid_records()
    for name, rec in recs:
        out[name] = {"kind": "record", "bytes": codec.encode(rec), "expect": describe(rec)}
    old = old_layout_room()
    out["room_old_layout"] = {
        "kind": "record",
        "bytes": old,
        "expect": describe(codec.decode(old)),
    }
    batch = codec.encode_batch([r for _, r in recs])
    out["batch_all"] = {
        "kind": "batch",
        "bytes": batch,
        "expect": [describe(r) for _, r in recs],
    }
    out["batch_zlib"] = {
        "kind": "batch",
        "bytes": codec.encode_batch([r for _, r in recs], compress=True),
        "expect": [describe(r) for _, r in recs],
    }
    for name, data, err in invalid_vectors():
        out[name] = {"kind": "record", "bytes": data, "error": err}
    return out


def write(directory=GOLDEN_DIR):
    directory.mkdir(parents=True, exist_ok=True)
    index = {}
    for name, case in build().items():
        (directory / f"{name}.bin").write_bytes(case["bytes"])
        entry = {k: v for k, v in case.items() if k != "bytes"}
        entry["file"] = f"{name}.bin"
        index[name] = entry
    (directory / "cases.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN_DIR)
