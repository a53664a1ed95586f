"""Wire codec under CPython: round trips, corruption, and every rejection path."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nightlink.shared import codec, features

DEV = bytes.fromhex("a4cf12b0c3d4")


def _raw_value(bounds):
    missing, lo, hi = bounds
    return st.one_of(st.just(missing), st.integers(lo, hi))


@st.composite
def records(draw):
    sid = draw(st.sampled_from([s[features.S_ID] for s in features.STREAMS]))
    count = draw(st.integers(1, 40))
    row = st.tuples(*[_raw_value(b) for b in features.bounds(sid)])
    return codec.Record(
        sid,
        draw(st.binary(min_size=6, max_size=6)),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(0, 2**32 - count)),  # its rows' seqs and epochs are u32
        draw(st.integers(0, 2**32 - count)),
        draw(st.lists(row, min_size=count, max_size=count)),
        draw(st.sampled_from([0, codec.FLAG_LIVE])),
    )


@settings(max_examples=300, deadline=None)
@given(records())
def test_codec__round_trip(rec):
    data = codec.encode(rec)
    assert len(data) == codec.record_size(rec.stream, rec.count)
    assert codec.peek_length(data) == len(data)
    assert codec.decode(data) == rec


@settings(max_examples=50, deadline=None)
@given(st.lists(records(), min_size=1, max_size=8))
def test_codec__batch_round_trip(recs):
    recs_out, errors = codec.decode_batch(codec.encode_batch(recs))
    assert errors == []
    assert recs_out == recs


@settings(max_examples=100, deadline=None)
@given(records(), st.data())
def test_codec__any_corrupted_byte_is_detected(rec, data):
    buf = bytearray(codec.encode(rec))
    i = data.draw(st.integers(0, len(buf) - 1))
    buf[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(codec.WireError):
        codec.decode(bytes(buf))


@settings(max_examples=200, deadline=None)
@given(records())
def test_codec__peek_header_and_check_agree_with_decode(rec):
    data = codec.encode(rec)
    h = codec.peek_header(data[: codec.HEADER_SIZE])  # the header alone is enough
    assert (h[codec.H_VERSION], h[codec.H_STREAM], h[codec.H_FLAGS], h[codec.H_DEVICE],
            h[codec.H_BOOT], h[codec.H_SEQ], h[codec.H_EPOCH], h[codec.H_COUNT]) == (
        codec.VERSION, rec.stream, rec.flags, rec.device, rec.boot, rec.seq, rec.epoch,
        rec.count)
    assert h[codec.H_NFEAT] == len(features.features(rec.stream))
    assert codec.last_seq(h) == rec.seq + rec.count - 1
    assert codec.check(data) == codec.peek_header(data)
    framed = b"xx" + data + b"yy"
    assert codec.check(framed, 2, len(data)) == h


def test_codec__check_finds_what_decode_finds():
    """check() refuses every damaged record decode() refuses, without reading rows."""
    rec = codec.Record(features.ROOM, DEV, 1, 5, 100, [(2000, 90, 0, 400, 60)] * 4)
    data = codec.encode(rec)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(codec.WireError) as via_decode:
            codec.decode(bytes(bad))
        with pytest.raises(codec.WireError) as via_check:
            codec.check(bytes(bad))
        assert type(via_check.value) is type(via_decode.value), i


def test_codec__physical_values_round_trip_to_quantum():
    values = (21.37, 45.5, 3.0, 812.0, 31.5)
    rec = codec.Record(features.ROOM, DEV, 1, 1, 100, [codec.quantize_row(features.ROOM, values)])
    assert codec.decode(codec.encode(rec)).values() == [[pytest.approx(v) for v in values]]


def test_codec__missing_is_none_never_zero():
    rec = codec.Record(features.CGM, DEV, 1, 1, 100, [codec.quantize_row(features.CGM, (None,) * 6)])
    assert codec.decode(codec.encode(rec)).values() == [[None] * 6]


@pytest.mark.parametrize(
    "values",
    [(60.01, 1, 1, 400, 1), (20, -1, 1, 400, 1), (20, 1, 1, 249, 1), (20, float("nan"), 1, 400, 1)],
)
def test_codec__quantize_row__out_of_range(values):
    with pytest.raises(codec.RangeError):
        codec.quantize_row(features.ROOM, values)


def test_codec__encode__raw_out_of_range():
    rec = codec.Record(features.ROOM, DEV, 1, 1, 100, [(6001, 0, 0, 400, 0)])
    with pytest.raises(codec.RangeError, match="temp_c"):
        codec.encode(rec)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("rows", [], "1..2880"), ("device", b"\x01", "6 bytes"), ("flags", 0x80, "flag")],
)
def test_codec__encode__rejects_bad_record(field, value, match):
    rec = codec.Record(features.ROOM, DEV, 1, 1, 100, [(2000, 90, 0, 400, 60)])
    setattr(rec, field, value)
    with pytest.raises(codec.WireError, match=match):
        codec.encode(rec)


def test_codec__decode__trailing_bytes():
    data = codec.encode(codec.Record(features.ROOM, DEV, 1, 1, 100, [(2000, 90, 0, 400, 60)]))
    with pytest.raises(codec.WireError, match="were given"):
        codec.decode(data + b"\x00")
    # In a longer buffer, peek_length frames the record.
    assert codec.decode(b"xx" + data + b"yy", 2, codec.peek_length(b"xx" + data, 2)).seq == 1


def test_codec__decode__unknown_flag_with_valid_crc():
    body = bytearray(codec.encode(codec.Record(features.ROOM, DEV, 1, 1, 100, [(2000, 90, 0, 400, 60)])))
    body[2] = 0x40
    body[-4:] = struct.pack("<I", codec.crc32(bytes(body[:-4])))
    with pytest.raises(codec.WireError, match="flag"):
        codec.decode(bytes(body))


def test_codec__decode__newer_layout_is_refused():
    body = bytearray(codec.encode(codec.Record(features.ROOM, DEV, 1, 1, 100, [(2000, 90, 0, 400, 60)])))
    body[3] = 6  # a future clock sending a sixth room feature
    with pytest.raises(codec.StreamError, match="knows 5"):
        codec.decode(bytes(body))


def test_codec__batch__one_bad_record_costs_only_itself():
    recs = [codec.Record(features.ROOM, DEV, 1, s, 100 + s, [(2000, 90, 0, 400, 60)]) for s in range(3)]
    data = bytearray(codec.encode_batch(recs))
    second = codec.BATCH_HEADER_SIZE + 4 + codec.record_size(features.ROOM, 1) + 4
    data[second + 10] ^= 0xFF  # inside the second record's boot id
    got, errors = codec.decode_batch(bytes(data))
    assert [r.seq for r in got] == [0, 2]
    assert [(i, type(e)) for i, e in errors] == [(1, codec.CrcError)]


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda b: b[:4], codec.TruncatedError),
        (lambda b: b"XX" + b[2:], codec.WireError),
        (lambda b: b[:2] + b"\x09" + b[3:], codec.VersionError),
        (lambda b: b[:3] + b"\x02" + b[4:], codec.WireError),
        (lambda b: b[:-1], codec.TruncatedError),
        (lambda b: b + b"\x00", codec.WireError),
        (lambda b: b[:4] + b"\x00\x00" + b[6:], codec.WireError),
    ],
    ids=["short_header", "magic", "version", "flags", "cut_record", "trailing", "zero_count"],
)
def test_codec__batch__rejects_damaged_frame(mutate, error):
    data = codec.encode_batch([codec.Record(features.ROOM, DEV, 1, 1, 100, [(2000, 90, 0, 400, 60)])])
    with pytest.raises(error):
        codec.decode_batch(mutate(data))


def test_codec__device_name_round_trip():
    assert codec.device_name(codec.device_id("a4cf12b0c3d4")) == "a4cf12b0c3d4"
    with pytest.raises(codec.WireError):
        codec.device_id("a4cf12b0c3")


def test_codec__encode_into_preallocated_buffer():
    rec = codec.Record(features.ROOM, DEV, 1, 1, 100, [(2000, 90, 0, 400, 60)] * 3)
    buf = bytearray(200)
    n = codec.encode_into(buf, 10, rec)
    assert bytes(buf[10 : 10 + n]) == codec.encode(rec)
    with pytest.raises(codec.WireError, match="too small"):
        codec.encode_into(bytearray(20), 0, rec)


def test_codec__crc_matches_zlib():
    import zlib

    for data in (b"", b"a", bytes(range(256)) * 3):
        assert codec.crc32(data) == codec.crc32_soft(data) == zlib.crc32(data)


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), min_size=1, max_size=6))
def test_codec__split_and_pack_keep_every_row(recs):
    rows = [r for rec in recs for r in codec.split(rec)]
    assert all(r.count == 1 for r in rows)
    packed = codec.pack_runs(rows, max_count=50)
    again = [r for rec in packed for r in codec.split(rec)]
    key = lambda r: (r.device, r.stream, r.boot, r.seq, r.epoch, tuple(r.rows[0]))  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, rows))
    assert all(p.count <= 50 for p in packed)


def test_codec__pack_runs__merges_only_continuing_rows():
    row = (2000, 90, 0, 400, 60)
    mk = lambda seq, epoch, boot=1: codec.Record(features.ROOM, DEV, boot, seq, epoch, [row])  # noqa: E731
    recs = [mk(1, 100), mk(2, 101), mk(3, 102), mk(4, 110), mk(5, 111), mk(6, 112, boot=2)]
    packed = codec.pack_runs(recs, max_count=2)
    assert [(p.seq, p.epoch, p.count) for p in packed] == [
        (1, 100, 2), (3, 102, 1), (4, 110, 2), (6, 112, 1)
    ]


@settings(max_examples=30, deadline=None)
@given(st.lists(records(), min_size=1, max_size=8))
def test_codec__compressed_batch_round_trip(recs):
    data = codec.encode_batch(recs, compress=True)
    assert data[3] == codec.BATCH_ZLIB
    assert codec.decode_batch(data) == (recs, [])


def test_codec__compressed_batch__damage_and_bombs():
    recs = [codec.Record(features.ROOM, DEV, 1, s, 100 + s, [(2000, 90, 0, 400, 60)]) for s in range(50)]
    data = bytearray(codec.encode_batch(recs, compress=True))
    assert len(data) < len(codec.encode_batch(recs)) / 2
    for i in range(codec.BATCH_HEADER_SIZE, len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x55
        with pytest.raises(codec.WireError):
            got, errors = codec.decode_batch(bytes(bad))
            assert errors  # damage inside a record that survived inflation: reported per record
            raise codec.WireError("reported")
    with pytest.raises(codec.TruncatedError):
        codec.decode_batch(bytes(data[:-3]))
    import zlib

    bomb = bytes(data[: codec.BATCH_HEADER_SIZE]) + zlib.compress(b"\0" * (5 << 20))
    with pytest.raises(codec.WireError, match="expands beyond"):
        codec.decode_batch(bomb)


@pytest.mark.parametrize(("seq", "epoch"), [(0xFFFFFFFE, 100), (1, 0xFFFFFFFE)])
def test_codec__decode__rows_numbered_past_u32_are_refused(seq, epoch):
    """Three rows from seq (or epoch) 2**32 - 2 were stored as seq 2**32 (epoch 2**32, year
    6053): the cloud's marks and reads take u32."""
    row = (2000, 90, 0, 400, 60)
    with pytest.raises(codec.WireError, match="runs past 2"):
        codec.encode(codec.Record(features.ROOM, DEV, 1, seq, epoch, [row] * 3))
    # as a sender that does not check would write it: two rows, the count patched to three
    body = bytearray(codec.encode(codec.Record(features.ROOM, DEV, 1, seq, epoch, [row] * 2)))
    body[codec.HEADER_SIZE - 2:codec.HEADER_SIZE] = struct.pack("<H", 3)
    body[-4:-4] = body[codec.HEADER_SIZE:codec.HEADER_SIZE + len(body[codec.HEADER_SIZE:-4]) // 2]
    body[-4:] = struct.pack("<I", codec.crc32(bytes(body[:-4])))
    with pytest.raises(codec.WireError, match="runs past 2"):
        codec.decode(bytes(body))
    one = codec.decode(codec.encode(codec.Record(features.ROOM, DEV, 1, seq, epoch, [row] * 2)))
    assert len(one.rows) == 2  # the last row at 2**32 - 1 is still a row
