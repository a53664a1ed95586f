"""Wearable importers: an Apple Health export.xml fixture, FIT files written by fitwriter."""

import io
import struct
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import fitparse
import pytest

from nightlink.edge.importers import wearables
from nightlink.edge.sources.samples import Beat, HeartRate, SourceError, SpO2
from nightlink.tools.sim.fitwriter import FIT_EPOCH, FitWriter, crc16, fit_time, utc

FIXTURES = Path(__file__).parent / "fixtures"
EXPORT = FIXTURES / "apple_health_export.xml"


def cet(text: str) -> float:
    return datetime.fromisoformat(text + "+01:00").timestamp()


# -- Apple Health -------------------------------------------------------------------------------


def test_apple_time__offset_applied():
    assert wearables.apple_time("2026-01-15 23:01:02 +0100") == utc("2026-01-15T22:01:02")
    assert wearables.apple_time("2026-01-15 23:01:02 -0530") == utc("2026-01-16T04:31:02")


@pytest.mark.parametrize("text", ["2026-01-15T23:01:02+01:00", "2026-01-15 23:01:02", "",
                                  "2026-01-15 23:01:02 +01:00"])
def test_apple_time__not_an_apple_date(text):
    with pytest.raises(ValueError, match="not an Apple Health date"):
        wearables.apple_time(text)


def test_read_apple_health__whole_export_sorted_by_time():
    got = wearables.read_apple_health(EXPORT)
    assert got == [
        HeartRate(t=cet("2026-01-15 14:02:51"), bpm=88.0),
        HeartRate(t=cet("2026-01-15 23:01:02"), bpm=58.0),
        HeartRate(t=cet("2026-01-15 23:06:40"), bpm=56.0),
        Beat(t=cet("2026-01-15 23:20:11.52"), rr_ms=60_000 / 60),
        Beat(t=cet("2026-01-15 23:20:12.49"), rr_ms=60_000 / 62),
        Beat(t=cet("2026-01-15 23:20:13.50"), rr_ms=60_000 / 59),
        Beat(t=cet("2026-01-15 23:20:14.44"), rr_ms=60_000 / 64),
        SpO2(t=cet("2026-01-15 23:30:00"), pct=97.0),
        Beat(t=cet("2026-01-15 23:59:58.80"), rr_ms=60_000 / 57),
        Beat(t=cet("2026-01-15 23:59:59.85"), rr_ms=60_000 / 56),
        Beat(t=cet("2026-01-16 00:00:00.89"), rr_ms=60_000 / 58),  # past midnight: next day
        HeartRate(t=cet("2026-01-16 00:12:03"), bpm=54.5),
        SpO2(t=cet("2026-01-16 02:10:00"), pct=94.0),
    ]
    assert got.skipped == 1  # the HR record whose value is "--"


def test_read_apple_health__night_window():
    got = wearables.read_apple_health(EXPORT, start=cet("2026-01-15 23:20:12"),
                               end=cet("2026-01-16 00:00:00"))
    assert [type(s).__name__ for s in got] == ["Beat", "Beat", "Beat", "SpO2", "Beat", "Beat"]
    assert got[0].t == cet("2026-01-15 23:20:12.49")
    assert got[-1].t == cet("2026-01-15 23:59:59.85")


def test_read_apple_health__nested_correlation_records_not_read_twice(tmp_path):
    path = tmp_path / "export.xml"
    hr = ('<Record type="HKQuantityTypeIdentifierHeartRate" sourceName="W" unit="count/min" '
          'startDate="2026-01-15 23:00:00 +0000" endDate="2026-01-15 23:00:00 +0000" value="60"/>')
    path.write_text(f'<HealthData locale="en_GB">{hr}<Correlation type="X" sourceName="W" '
                    f'startDate="2026-01-15 23:00:00 +0000" endDate="2026-01-15 23:00:00 +0000">'
                    f'{hr}</Correlation></HealthData>')
    assert wearables.read_apple_health(path) == [HeartRate(t=utc("2026-01-15T23:00:00"), bpm=60.0)]


def _hrv_record(path: Path, start: str, times: list[str]) -> Path:
    """An export with one HRV record starting at `start` ("2026-01-15 23:20:11 +0100") whose
    beat list holds beats at these clock times, 60 bpm."""
    beats = "".join(f'<InstantaneousBeatsPerMinute bpm="60" time="{t}"/>' for t in times)
    path.write_text(
        '<HealthData locale="de_DE"><Record type="HKQuantityTypeIdentifierHeartRateVariabilitySDNN"'
        f' sourceName="W" unit="ms" startDate="{start}" endDate="{start}" value="40">'
        f'<HeartRateVariabilityMetadataList>{beats}</HeartRateVariabilityMetadataList></Record>'
        '</HealthData>')
    return path


@pytest.mark.parametrize(("time", "start", "expected"), [
    ("11:20:11.52 PM", "2026-01-15 23:20:11", "2026-01-15 23:20:11.52"),
    ("23:20:11,52", "2026-01-15 23:20:11", "2026-01-15 23:20:11.52"),  # 24-hour, decimal comma
    ("12:00:01.5 AM", "2026-01-16 00:00:01", "2026-01-16 00:00:01.5"),
    ("12:00:01.5 AM", "2026-01-15 23:59:58", "2026-01-16 00:00:01.5"),  # past midnight
    ("12:20:11 PM", "2026-01-15 12:20:10", "2026-01-15 12:20:11"),
])
def test_read_apple_health__beat_time_formats(tmp_path, time, start, expected):
    path = _hrv_record(tmp_path / "export.xml", f"{start} +0100", [time])
    assert wearables.read_apple_health(path) == [Beat(t=cet(expected), rr_ms=1000.0)]


def test_read_apple_health__beats_placed_at_their_record_across_a_clock_change(tmp_path):
    """Apple writes a record's dates in the offset of the export, its beats' clock times as
    read when recorded. A real record (an Apple Watch export quoted publicly):
    startDate="2017-11-22 19:14:47 -0400" with beats at "6:14:48.94 PM" (recorded in summer
    time, exported in winter time): the beats belong a second after the start, not an hour
    before it; past midnight, not 23 hours after it."""
    utc = datetime(2017, 11, 22, 23, 14, 47, tzinfo=UTC).timestamp()
    got = wearables.read_apple_health(_hrv_record(
        tmp_path / "a.xml", "2017-11-22 19:14:47 -0400", ["6:14:48.94 PM", "6:14:49.94 PM"]))
    assert [round(b.t - utc, 2) for b in got] == [1.94, 2.94]
    midnight = datetime(2017, 11, 23, 4, 14, 47, tzinfo=UTC).timestamp()
    got = wearables.read_apple_health(_hrv_record(
        tmp_path / "b.xml", "2017-11-23 00:14:47 -0400", ["11:14:48.94 PM", "11:14:49.94 PM"]))
    assert [round(b.t - midnight, 2) for b in got] == [1.94, 2.94]
    got = wearables.read_apple_health(_hrv_record(  # a list running past midnight
        tmp_path / "c.xml", "2026-01-15 23:59:59 +0100", ["11:59:59.5 PM", "12:00:00.5 AM"]))
    assert [b.t for b in got] == [cet("2026-01-15 23:59:59.5"), cet("2026-01-16 00:00:00.5")]


def test_read_apple_health__bad_beat_is_skipped(tmp_path):
    path = tmp_path / "export.xml"
    path.write_text(
        '<HealthData locale="ja_JP"><Record type="HKQuantityTypeIdentifierHeartRateVariabilitySDNN"'
        ' sourceName="W" unit="ms" startDate="2026-01-15 23:20:11 +0900" '
        'endDate="2026-01-15 23:21:11 +0900" value="40"><HeartRateVariabilityMetadataList>'
        '<InstantaneousBeatsPerMinute bpm="60" time="午後11:20:11.52"/>'
        '</HeartRateVariabilityMetadataList></Record>'
        '<Record type="HKQuantityTypeIdentifierOxygenSaturation" sourceName="W" unit="%" '
        'startDate="2026-01-15 23:30:00 +0900" endDate="2026-01-15 23:30:00 +0900" value="1.3"/>'
        '</HealthData>', encoding="utf-8")
    got = wearables.read_apple_health(path)
    assert got == [] and got.skipped == 2


@pytest.mark.parametrize(("content", "message"), [
    (b"date,sgv\n2026-01-15,120\n", "XML is broken"),
    (b'<?xml version="1.0"?><gpx version="1.1"></gpx>', "root element is <gpx>"),
    (b'<HealthData locale="en_US"><Record type="HKQuantityTypeIdentifierHeartRate" ',
     "XML is broken"),
    (b"PK\x03\x04\x14\x00\x08\x00", "zip archive"),
    (b"", "XML is broken"),
])
def test_read_apple_health__not_an_export(tmp_path, content, message):
    path = tmp_path / "export.xml"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=f"export.xml is not an Apple Health export: .*{message}"):
        wearables.read_apple_health(path)


IOS16_HEAD = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE HealthData [
<!ELEMENT HealthData (ExportDate,Me,(Record|Correlation|Workout)*)>
<!ATTLIST VisionPrescription
  type             CDATA #REQUIRED
<!ELEMENT RightEye EMPTY>
]>
"""
HR_RECORD = ('<Record type="HKQuantityTypeIdentifierHeartRate" sourceName="{}" '
             'unit="count/min" startDate="2026-01-15 23:0{}:00 +0100" '
             'endDate="2026-01-15 23:00:00 +0100" value="6{}"/>\n')


def test_read_apple_health__ios16_broken_dtd_and_control_characters(tmp_path):
    """iOS 16 and later write an internal DTD that is not well-formed; some exports hold a
    vertical tab in a source name. Both are dropped while streaming, the records read."""
    path = tmp_path / "export.xml"
    body = "".join(HR_RECORD.format("Apple\x0bWatch" if i == 1 else "W", i, i) for i in range(3))
    path.write_bytes(IOS16_HEAD + b'<HealthData locale="en_US">\n' + body.encode()
                     + b"</HealthData>\n")
    got = wearables.read_apple_health(path)
    assert [(s.t, s.bpm) for s in got] == [(cet(f"2026-01-15T23:0{i}:00"), 60 + i)
                                           for i in range(3)]


def test_read_apple_health__missing_file(tmp_path):
    with pytest.raises(SourceError, match="nothing.xml cannot be read: No such file"):
        wearables.read_apple_health(tmp_path / "nothing.xml")


def _traced(read, path):
    """(what read(path) returns, the peak of Python's memory while it ran)."""
    tracemalloc.start()
    try:
        got = read(path)
        return got, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_read_apple_health__large_export_in_bounded_memory(tmp_path):
    path = tmp_path / "export.xml"
    step = ('<Record type="HKQuantityTypeIdentifierStepCount" sourceName="Anna’s iPhone" '
            'sourceVersion="17.2" unit="count" creationDate="2026-01-15 22:58:00 +0100" '
            'startDate="2026-01-15 22:50:11 +0100" endDate="2026-01-15 22:51:02 +0100" '
            'value="31"><MetadataEntry key="HKWasUserEntered" value="0"/></Record>\n')
    hr = ('<Record type="HKQuantityTypeIdentifierHeartRate" sourceName="W" unit="count/min" '
          'startDate="2026-01-15 23:{:02d}:00 +0100" endDate="2026-01-15 23:00:00 +0100" '
          'value="60"/>\n')
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('<HealthData locale="en_US">\n')
        for i in range(60_000):
            fh.write(step if i % 1000 else hr.format(i // 1000))
        fh.write("</HealthData>\n")
    assert path.stat().st_size > 15_000_000
    got, peak = _traced(wearables.read_apple_health, path)
    assert len(got) == 60
    assert peak < 3_000_000  # keeping the tree would take well over 50 MB


# -- FIT ----------------------------------------------------------------------------------------

NIGHT = utc("2026-01-15T22:00:00")


def test_crc16__fit_sdk_check_value():
    # CRC-16/ARC, which the FIT SDK nibble table computes: "123456789" -> 0xBB3D.
    assert crc16(b"123456789") == 0xBB3D


def test_fitwriter__fitparse_reads_it_back():
    w = FitWriter()
    w.file_id(NIGHT)
    w.record(NIGHT, heart_rate=58, spo2_tenths=971)
    w.hrv([1000, 1020, 0xFFFF])
    messages = list(fitparse.FitFile(io.BytesIO(w.to_bytes())).get_messages())  # checks CRC
    assert [m.name for m in messages] == ["file_id", "record", "hrv"]
    assert messages[1].get_value("timestamp") == datetime(2026, 1, 15, 22, 0, 0)
    assert messages[1].get_value("heart_rate") == 58
    assert messages[1].get_value("saturated_hemoglobin_percent") == 97.1
    assert messages[2].get_value("time") == (1.0, 1.02, None)


def write(tmp_path, w: FitWriter, name="night.fit") -> Path:
    path = tmp_path / name
    path.write_bytes(w.to_bytes())
    return path


def test_read_fit__records_beats_and_spo2(tmp_path):
    w = FitWriter()
    w.file_id(NIGHT)
    w.record(NIGHT, heart_rate=58)
    w.hrv([1000, 1020, 0xFFFF, 0xFFFF, 0xFFFF])
    w.record(NIGHT + 1, heart_rate=59, spo2_tenths=965)
    w.hrv([990])
    w.record(NIGHT + 2, heart_rate=0xFF)  # invalid heart rate: none this second
    w.hrv([1010, 1005])
    w.spo2_data(NIGHT + 3, 94)
    got = wearables.read_fit(write(tmp_path, w))
    assert got == [
        HeartRate(t=NIGHT, bpm=58.0),
        Beat(t=pytest.approx(NIGHT + 1.0), rr_ms=1000.0),
        HeartRate(t=NIGHT + 1, bpm=59.0),
        SpO2(t=NIGHT + 1, pct=96.5),
        Beat(t=pytest.approx(NIGHT + 2.02), rr_ms=1020.0),
        SpO2(t=NIGHT + 3, pct=94.0),
        Beat(t=pytest.approx(NIGHT + 3.01), rr_ms=990.0),
        Beat(t=pytest.approx(NIGHT + 4.02), rr_ms=1010.0),
        Beat(t=pytest.approx(NIGHT + 5.025), rr_ms=1005.0),
    ]
    assert got.skipped == 0


def test_read_fit__a_garmin_monitoring_file_across_the_16_bit_wrap(tmp_path):
    """A watch's all-day file: heart rate every minute timed by timestamp_16 after a full
    timestamp, across the point where the 16-bit count wraps (every 18.2 hours)."""
    start = FIT_EPOCH + (fit_time(NIGHT) | 0xFFFF) - 30 * 60 + 1  # wraps 30 min in
    w = FitWriter()
    w.file_id(start, kind=32)  # monitoring_b
    w.monitoring_info(start)
    hr = {start + 60 * i: 50 + i % 20 for i in range(120)}
    for t, bpm in hr.items():
        if t == start + 3600:
            w.monitoring(t, short=False, activity_type=8)  # a full timestamp, no heart rate
        w.monitoring(t, bpm)
    w.monitoring(start + 121 * 60, 0xFF)  # invalid: no reading
    got = wearables.read_fit(write(tmp_path, w))
    assert got == [HeartRate(t=float(t), bpm=float(bpm)) for t, bpm in hr.items()]
    assert got.activity is None  # all-day monitoring is no workout


def test_read_fit__monitoring_before_any_full_timestamp_is_not_placed(tmp_path):
    w = FitWriter()
    w.monitoring(NIGHT, 60)  # no full timestamp yet: its time cannot be known
    w.monitoring(NIGHT + 60, 61, short=False)
    w.monitoring(NIGHT + 120, 62)
    assert wearables.read_fit(write(tmp_path, w)) == [HeartRate(t=NIGHT + 60, bpm=61.0),
                                                      HeartRate(t=NIGHT + 120, bpm=62.0)]


def test_read_fit__beat_clock_restarts_after_a_gap(tmp_path):
    w = FitWriter()
    w.record(NIGHT, heart_rate=60)
    w.hrv([1000, 1000])
    for s in range(1, 40):  # strap lost the beat stream for half a minute
        w.record(NIGHT + s, heart_rate=60)
    w.hrv([800])
    beats = [s for s in wearables.read_fit(write(tmp_path, w)) if isinstance(s, Beat)]
    assert [b.t for b in beats] == [NIGHT + 1, NIGHT + 2, NIGHT + 39.8]


def test_read_fit__beats_before_any_timestamp_are_skipped(tmp_path):
    w = FitWriter()
    w.hrv([1000, 1000])
    w.record(NIGHT, heart_rate=60)
    got = wearables.read_fit(write(tmp_path, w))
    assert got == [HeartRate(t=NIGHT, bpm=60.0)] and got.skipped == 2


def test_read_fit__unknown_messages_ignored(tmp_path):
    w = FitWriter()
    w.record(NIGHT, heart_rate=61)
    w.message(5, 0xFF00, [(253, (0x86, "I"), int(NIGHT) - FIT_EPOCH + 5), (0, (0x02, "B"), 97)])
    w.message(6, 20, [(253, (0x86, "I"), int(NIGHT) - FIT_EPOCH + 6), (200, (0x02, "B"), 97)])
    assert wearables.read_fit(write(tmp_path, w)) == [HeartRate(t=NIGHT, bpm=61.0)]


def night_bytes() -> bytes:
    w = FitWriter()
    w.file_id(NIGHT)
    for s in range(10):
        w.record(NIGHT + s, heart_rate=60)
        w.hrv([1000])
    return w.to_bytes()


@pytest.mark.parametrize(("damage", "message"), [
    (lambda b: b[:60] + bytes([b[60] ^ 0x01]) + b[61:], "CRC"),
    (lambda b: b[:-20], "Tried to read 1 bytes"),  # truncated
    (lambda b: b[:8] + b"GPX!" + b[12:], "Invalid .FIT File Header"),
    (lambda b: b"date,sgv\n2026-01-15,120\n", "Invalid .FIT File Header"),
    (lambda b: b"", "Tried to read 12 bytes"),
    # a data message for a local type never defined, with a correct file CRC
    (lambda b: with_records(b, b"\x0f\x00"), "invalid local message type 15"),
])
def test_read_fit__corrupt(tmp_path, damage, message):
    path = tmp_path / "broken.fit"
    path.write_bytes(damage(night_bytes()))
    with pytest.raises(SourceError, match=f"broken.fit is not a readable FIT file: .*{message}"):
        wearables.read_fit(path)


def test_read_fit__fields_fitparse_cannot_decode_one_sentence(tmp_path):
    """A record whose timestamp is defined as two uint32 values (CRC valid): fitparse raises
    TypeError, which is told as one sentence, not a traceback."""
    w = FitWriter()
    w.file_id(NIGHT)
    w.raw(struct.pack("<BBBHB", 0x41, 0, 0, 20, 2) + struct.pack("<BBB", 253, 8, 0x86)
          + struct.pack("<BBB", 3, 1, 0x02))
    t = int(NIGHT) - FIT_EPOCH
    w.raw(bytes([1]) + struct.pack("<II", t, t) + bytes([70]))
    path = tmp_path / "odd.fit"
    path.write_bytes(w.to_bytes())
    with pytest.raises(SourceError) as err:
        wearables.read_fit(path)
    assert str(err.value) == (f"{path} is not a readable FIT file: fitparse cannot decode it "
                              "(TypeError).")


def test_read_fit__missing_file(tmp_path):
    with pytest.raises(SourceError, match="gone.fit cannot be read: No such file"):
        wearables.read_fit(tmp_path / "gone.fit")


def with_records(data: bytes, extra: bytes) -> bytes:
    """The FIT file with extra record bytes appended, header size and both CRCs redone."""
    records = data[14:-2] + extra
    header = struct.pack("<BBHI4s", 14, 0x20, 2132, len(records), b".FIT")
    header += struct.pack("<H", crc16(header))
    body = header + records
    return body + struct.pack("<H", crc16(body))



@pytest.mark.parametrize("start", ["0001-01-01 00:00:00 +0100", "9999-12-31 23:59:59 -0100",
                                   "1899-01-01 00:00:00 +0000"])
def test_read_apple_health__a_date_outside_any_recording_is_a_skipped_record(tmp_path, start):
    """Year 1 moved back by its offset is year 0: the import stopped with a traceback."""
    path = tmp_path / "export.xml"
    bad = HR_RECORD.format("W", 0, 0).replace("2026-01-15 23:00:00 +0100", start, 1)
    path.write_text(f'<HealthData locale="en_US">{HR_RECORD.format("W", 1, 1)}{bad}'
                    "</HealthData>")
    got = wearables.read_apple_health(path)
    assert [s.bpm for s in got] == [61] and got.skipped == 1


def test_read_apple_health__an_unknown_encoding_is_one_sentence(tmp_path):
    path = tmp_path / "export.xml"
    path.write_text('<?xml version="1.0" encoding="x-bogus"?><HealthData></HealthData>')
    with pytest.raises(SourceError, match="export.xml is not an Apple Health export: the XML"):
        wearables.read_apple_health(path)


@pytest.mark.parametrize(("unit", "value"), [("count/min", "1e300"), ("count/s", "1e307"),
                                             ("count/min", "5"), ("count/min", "100000")])
def test_read_apple_health__a_heart_rate_no_person_has_is_skipped(tmp_path, unit, value):
    """1e300 bpm was stored as it was, and 1e307 count/s became infinity."""
    path = tmp_path / "export.xml"
    bad = (HR_RECORD.format("W", 0, 0).replace('value="60"', f'value="{value}"')
           .replace("count/min", unit))
    path.write_text(f'<HealthData locale="en_US">{bad}{HR_RECORD.format("W", 1, 1)}'
                    "</HealthData>")
    got = wearables.read_apple_health(path)
    assert [s.bpm for s in got] == [61] and got.skipped == 1


@pytest.mark.parametrize("bpm", ["1e-320", "1e-300", "100000"])
def test_read_apple_health__a_beat_list_with_an_impossible_rate_is_skipped(tmp_path, bpm):
    """bpm 1e-320 gave an RR interval of 6e324 ms (infinity) in the beats table."""
    path = tmp_path / "export.xml"
    path.write_text(
        '<HealthData locale="en_US"><Record type="HKQuantityTypeIdentifierHeartRateVariabilitySDNN"'
        ' sourceName="W" unit="ms" startDate="2026-01-15 23:20:11 +0100" '
        'endDate="2026-01-15 23:21:11 +0100" value="40"><HeartRateVariabilityMetadataList>'
        '<InstantaneousBeatsPerMinute bpm="60" time="11:20:11.52 PM"/>'
        f'<InstantaneousBeatsPerMinute bpm="{bpm}" time="11:20:12.52 PM"/>'
        '</HeartRateVariabilityMetadataList></Record></HealthData>', encoding="utf-8")
    got = wearables.read_apple_health(path)
    assert got == [] and got.skipped == 1


def test_read_fit__messages_are_not_all_held(tmp_path):
    """fitparse keeps every parsed message for a second pass; the reader makes none, so a
    day of a watch's 1-second records is read holding the samples, not the messages."""
    w = FitWriter()
    w.file_id(NIGHT)
    for k in range(40_000):
        w.record(NIGHT + k, heart_rate=55 + k % 30)
    path = tmp_path / "day.fit"
    path.write_bytes(w.to_bytes())
    got, peak = _traced(wearables.read_fit, path)
    assert len(got) == 40_000 and got[-1] == HeartRate(t=NIGHT + 39_999, bpm=float(55 + 39_999 % 30))
    assert peak < 10_000_000, peak  # 4.5 MB here; every message held, 22 MB
