"""Nights at the edge: named in the person's zone, recorded inside their sleep schedule, and
closed (classified) once, when the wake time has passed."""

from datetime import UTC, datetime

import pytest

from nightlink.edge.features.pipeline import EdgePipeline
from nightlink.edge.node.config import ConfigError, load
from nightlink.edge.node.nights import NightCloser
from nightlink.edge.node.zone import night_label, schedule_boundary, schedule_window
from nightlink.edge.sources.samples import HeartRate
from nightlink.edge.store import EdgeStore
from nightlink.shared import features
from nightlink.shared.epoch import EPOCH_S


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _at(epoch: int) -> str:
    return datetime.fromtimestamp(epoch * EPOCH_S, UTC).strftime("%Y-%m-%d %H:%M")


@pytest.mark.parametrize(("label", "bed", "wake", "zone", "window", "hours"), [
    ("2026-01-15", "22:00", "07:30", "UTC", ("2026-01-15 22:00", "2026-01-16 07:30"), 9.5),
    ("2026-01-15", "00:30", "08:00", "UTC", ("2026-01-16 00:30", "2026-01-16 08:00"), 7.5),
    # New York in winter is UTC-5
    ("2026-01-15", "22:00", "07:30", "America/New_York",
     ("2026-01-16 03:00", "2026-01-16 12:30"), 9.5),
    # Berlin's clocks go forward that night: 22:00 to 07:00 is 8 hours, not 9
    ("2026-03-28", "22:00", "07:00", "Europe/Berlin", ("2026-03-28 21:00", "2026-03-29 05:00"), 8),
    # ... and back in October: 9 hours become 10
    ("2026-10-24", "22:00", "07:00", "Europe/Berlin", ("2026-10-24 20:00", "2026-10-25 06:00"), 10),
    # day sleepers (night shifts): a schedule across noon; the night is named by the date it
    # begins on, here midnight (08:00 to 16:00), 22:00 (07:00 to 13:00: the evening of the
    # shift) and 18:00 (23:00 to 13:00: the evening of going to bed)
    ("2026-01-15", "08:00", "16:00", "UTC", ("2026-01-15 08:00", "2026-01-15 16:00"), 8),
    ("2026-01-15", "07:00", "13:00", "UTC", ("2026-01-16 07:00", "2026-01-16 13:00"), 6),
    ("2026-01-15", "23:00", "13:00", "UTC", ("2026-01-15 23:00", "2026-01-16 13:00"), 14),
    ("2026-03-29", "08:00", "16:00", "Europe/Berlin", ("2026-03-29 06:00", "2026-03-29 14:00"), 8),
])
def test_schedule_window__local_bedtime_to_wake_in_the_zone(label, bed, wake, zone, window, hours):
    a, b = schedule_window(label, bed, wake, zone)
    assert (_at(a), _at(b)) == window
    assert (b - a) / 120 == hours
    at = schedule_boundary(bed, wake)
    assert night_label(a * EPOCH_S, zone, at) == night_label((b - 1) * EPOCH_S, zone, at) == label


@pytest.mark.parametrize(("bed", "wake", "boundary"), [
    ("22:00", "07:30", "12:00"), ("00:30", "08:00", "12:00"), ("04:00", "12:00", "12:00"),
    ("08:00", "16:00", "00:00"), ("07:00", "13:00", "22:00"), ("23:00", "13:00", "18:00"),
    ("12:00", "20:00", "12:00"), ("11:00", "19:00", "03:00"), ("10:00", "18:00", "02:00"),
])
def test_schedule_boundary__noon_unless_the_schedule_holds_it(bed, wake, boundary):
    at = schedule_boundary(bed, wake)
    assert f"{at // 60:02d}:{at % 60:02d}" == boundary


@pytest.mark.parametrize(("text", "says"), [
    ('[night]\nbedtime = "25:00"\n', "[night] bedtime: '25:00' is not a time of day written HH:MM"),
    ('[night]\nwake = "7:30"\n', "[night] wake: '7:30' is not a time of day written HH:MM"),
    ('[night]\nbedtime = "08:00"\nwake = "07:00"\n', "[night] bedtime 08:00 to wake 07:00 is 23 h "
     "00 min; a sleep schedule is at most 16 hours"),
    ('[night]\nbedtime = "19:00"\nwake = "11:30"\n', "is 16 h 30 min"),
    ('[night]\nbedtime = 2200\n', "[night] bedtime must be text, not 2200."),
    ('[night]\nbed = "22:00"\n', "[night] unknown key 'bed'"),
    ('[night]\nbedtime = "23:30"\nwake = "00:15"\n', "23:30 to wake 00:15 is 45 min; a "
     "night needs at least 60 minutes"),
    ('[night]\nbedtime = "11:59"\nwake = "12:00"\n', "is 1 min;"),
    ("[night]\nbedtime = 22:30:30\n", "bedtime must be a time of day in whole minutes, such "
     'as "22:30", not 22:30:30.'),
    ('timezone = "Europe"\n', "timezone: 'Europe' is not a time zone name"),  # a tz folder
])
def test_config__a_wrong_schedule_names_the_key(tmp_path, text, says):
    path = tmp_path / "edge.toml"
    path.write_text(text + "[nightscout]\nenabled = false\n")
    with pytest.raises(ConfigError) as exc:
        load(path, env={})
    assert says in str(exc.value)


def test_config__a_toml_time_of_day_is_as_good_as_text(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text("[night]\nbedtime = 22:30:00\nwake = 06:45:00\n[nightscout]\nenabled = false\n")
    cfg = load(path, env={})
    assert (cfg.night.bedtime, cfg.night.wake) == ("22:30", "06:45")


def test_night_closer__a_night_stopped_midway_is_closed_however_long_the_node_was_down(
        tmp_path):
    """The last 3 nights are always looked at; an older one only when the node stopped in
    its middle (its partial summary says it holds a recording), within the retention."""
    from nightlink.edge.node.nights import is_closed, partial_summary

    store = EdgeStore(tmp_path / "e.db")
    closer = NightCloser(store, "22:00", "07:30", "UTC")
    first = int(_utc("2026-01-10 23:00") // EPOCH_S)
    pipe = EdgePipeline(store, first, audio=False, live=True)
    for k in range(150):
        pipe.add(HeartRate((first + k) * EPOCH_S + 5, 60.0 + k % 7))
        pipe.close(first + k)
    assert partial_summary(store, closer, first + 149) == "2026-01-10"
    now = _utc("2026-01-16 20:00")  # five nights later
    assert "2026-01-10" in closer.due(now)
    assert "2026-01-10" in closer.close_due(now) and is_closed(store.night("2026-01-10"))
    assert "2026-01-10" not in NightCloser(store, "22:00", "07:30", "UTC").due(now)
    store.close()


def test_config__a_schedule_after_midnight_is_accepted(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('timezone = "Europe/Berlin"\n[night]\nbedtime = "01:00"\nwake = "09:00"\n'
                    "[nightscout]\nenabled = false\n")
    cfg = load(path, env={})
    assert (cfg.night.bedtime, cfg.night.wake, cfg.timezone) == ("01:00", "09:00", "Europe/Berlin")


def test_config__a_day_sleeper_s_schedule_is_accepted(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('[night]\nbedtime = "08:30"\nwake = "16:00"\n[nightscout]\nenabled = false\n')
    cfg = load(path, env={})
    assert (cfg.night.bedtime, cfg.night.wake) == ("08:30", "16:00")


def test_night_closer__a_day_sleeper_s_night_is_recorded_closed_and_named(tmp_path):
    """A night-shift worker asleep 08:00 to 16:00: recorded inside that, closed once 16:00
    has passed, named by the date it is on, summarised whole (not cut at noon)."""
    from nightlink.edge.node.nights import partial_summary

    store = EdgeStore(tmp_path / "e.db")
    closer = NightCloser(store, "08:00", "16:00", "UTC", delay_s=5)
    bed = int(_utc("2026-01-15 08:00") // EPOCH_S)
    wake = int(_utc("2026-01-15 16:00") // EPOCH_S)
    assert [closer.recording(bed - 1), closer.recording(bed), closer.recording(wake - 1),
            closer.recording(wake)] == [False, True, True, False]
    assert closer.recording_night(_utc("2026-01-15 12:30")) == "2026-01-15"
    pipe = EdgePipeline(store, bed, audio=False, live=True)
    for k in range(wake - bed):
        pipe.add(HeartRate((bed + k) * EPOCH_S + 5, 60.0 + k % 7))
        pipe.close(bed + k)
    assert partial_summary(store, closer, bed + 300) == "2026-01-15"  # stopped at 10:30
    assert "2026-01-15" not in closer.due(_utc("2026-01-15 16:00:04"))
    assert closer.due(_utc("2026-01-15 16:00:05"))[0] == "2026-01-15"
    assert closer.close_due(_utc("2026-01-15 16:01")) == ["2026-01-15"]
    assert store.night("2026-01-15")["epochs"] == wake - bed  # 8 hours, across noon
    store.close()


def test_night_closer__recording_inside_the_schedule_and_nights_due_after_wake(tmp_path):
    store = EdgeStore(tmp_path / "e.db")
    closer = NightCloser(store, "22:00", "07:30", "UTC", delay_s=5)
    e = int(_utc("2026-01-15 21:59:30") // EPOCH_S)
    assert [closer.recording(e + k) for k in range(3)] == [False, True, True]
    wake = int(_utc("2026-01-16 07:30") // EPOCH_S)
    assert [closer.recording(wake - 1), closer.recording(wake)] == [True, False]
    assert "2026-01-15" not in closer.due(_utc("2026-01-16 07:30:04"))
    assert closer.due(_utc("2026-01-16 07:30:05"))[0] == "2026-01-15"
    # nothing recorded: settled without a summary, and not looked at again
    assert closer.close_due(_utc("2026-01-16 08:00")) == []
    assert store.night("2026-01-15") is None and "2026-01-15" in closer.settled
    assert "2026-01-15" not in closer.due(_utc("2026-01-16 08:01"))
    store.close()


def test_pipeline__streams_blanked_outside_the_schedule_are_stored_as_missing(tmp_path):
    store = EdgeStore(tmp_path / "e.db")
    first = int(_utc("2026-01-16 07:29") // EPOCH_S)
    pipe = EdgePipeline(store, first, audio=False, live=True)
    audio_row = tuple(1.0 for _ in features.features(features.AUDIO))
    for k in range(2):
        pipe.put_audio_row(first + k, audio_row)
        pipe.add(HeartRate((first + k) * EPOCH_S + 10, 58.0))
        pipe.close(first + k, blank=() if k == 0 else (features.WEARABLE, features.AUDIO))
    audio = store.epoch_values(features.AUDIO, first, first + 2)
    wear = store.epoch_values(features.WEARABLE, first, first + 2)
    assert audio[first][0] is not None and wear[first][0] == pytest.approx(58.0)
    assert all(v is None for v in audio[first + 1] + wear[first + 1])
    store.close()


def test_the_example_configuration_loads_with_the_documented_schedule():
    from pathlib import Path

    from nightlink.edge.node.config import EdgeConfig

    example = Path(__file__).resolve().parents[2] / "docs" / "edge.example.toml"
    cfg = load(example, env={"NIGHTLINK_EDGE_API_SECRET": "a-long-enough-secret"})
    assert cfg.night == EdgeConfig().night and cfg.timezone == ""


@pytest.mark.parametrize(("kind", "dead"), [("zeros", True), ("stuck", True),
                                            ("clipped", True), ("quiet room", False)])
def test_finish_night__a_dead_microphone_is_said_and_left_out(tmp_path, kind, dead):
    """The live node's nights get the same check as a replay's, from the stored features."""
    import numpy as np

    from nightlink.edge.features.audio import EPOCH_SAMPLES, AudioFeatureExtractor
    from nightlink.edge.node.nights import finish_night

    rng = np.random.default_rng(1)
    block = {"zeros": np.zeros(EPOCH_SAMPLES, np.int16),
             "stuck": np.full(EPOCH_SAMPLES, 900, np.int16),
             "clipped": np.clip(rng.normal(0, 3e5, EPOCH_SAMPLES), -32768, 32767),
             "quiet room": rng.normal(0, 40, EPOCH_SAMPLES)}[kind].astype(np.int16)
    _e, row = AudioFeatureExtractor(0, 16000).feed(block)[0]
    store = EdgeStore(tmp_path / "e.db")
    first = int(_utc("2026-01-15 23:00") // EPOCH_S)
    pipe = EdgePipeline(store, first, audio=False, live=True)
    for k in range(130):
        pipe.put_audio_row(first + k, row)
        pipe.close(first + k)
    finish_night(store, first, 100, "2026-01-15", classify=False)  # a stop mid-night
    summary = finish_night(store, first, 130, "2026-01-15", classify=False)
    assert ("audio_unusable" in summary) == dead
    # one gap over the night, not one per summary
    assert [(g["start_epoch"], g["end_epoch"]) for g in store.gaps("audio")] == \
        ([(first, first + 130)] if dead else [])
    if dead:
        assert "of 130 epochs: the microphone recorded no usable sound" in summary["audio_unusable"]
    store.close()


def test_night_closer__a_failing_close_is_logged_and_recording_goes_on(tmp_path, monkeypatch,
                                                                       caplog):
    from nightlink.edge.node import nights

    store = EdgeStore(tmp_path / "e.db")
    first = int(_utc("2026-01-15 23:00") // EPOCH_S)
    pipe = EdgePipeline(store, first, audio=False, live=True)
    for k in range(130):
        pipe.add(HeartRate((first + k) * EPOCH_S + 5, 60.0))
        pipe.close(first + k)

    def broken(*_a, **_k):
        raise RuntimeError("the interpreter could not be built")

    monkeypatch.setattr(nights, "finish_night", broken)
    closer = NightCloser(store, "22:00", "07:30", "UTC")
    assert closer.close_due(_utc("2026-01-16 08:00")) == []
    assert "night 2026-01-15 could not be closed" in caplog.text
    assert "2026-01-15" in closer.settled  # not retried every minute
    store.close()



def _heart_rate_night(tmp_path):
    """A store with 130 epochs (65 min) of heart rate alone from 23:00 UTC; (store, first)."""
    store = EdgeStore(tmp_path / "e.db")
    first = int(_utc("2026-01-15 23:00") // EPOCH_S)
    pipe = EdgePipeline(store, first, audio=False, live=True)
    for k in range(130):
        pipe.add(HeartRate((first + k) * EPOCH_S + 5, 60.0 + (k % 7)))
        pipe.close(first + k)
    return store, first

def test_finish_night__a_close_that_fails_half_way_leaves_no_classifier_rows(tmp_path,
                                                                            monkeypatch):
    """The classifier's rows and the summary are stored together or not at all, so the next
    attempt cannot store a second copy of them."""
    from nightlink.edge.node import nights

    store, first = _heart_rate_night(tmp_path)

    def broken(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(nights, "summarize_night", broken)
    with pytest.raises(OSError):
        nights.finish_night(store, first, 130, "2026-01-15")
    assert store.count_records(features.INFER) == 0 and store.night("2026-01-15") is None
    monkeypatch.undo()
    summary = nights.finish_night(store, first, 130, "2026-01-15")
    assert summary["classified"] is True and nights.is_closed(store.night("2026-01-15"))
    assert store.count_records(features.INFER) == 2  # one record per hour of the night
    store.close()


@pytest.mark.parametrize("label", ["2026-03-28", "2026-10-24", "2026-07-01"])
def test_schedule_window__the_machines_zone_follows_its_summer_time(machine_zone, label):
    """Without a `timezone`, the machine's zone at that date (not today's offset) places the
    schedule, and a night's label agrees with it."""
    machine_zone("Europe/Berlin")
    assert schedule_window(label, "22:00", "07:30") == schedule_window(label, "22:00", "07:30",
                                                                       "Europe/Berlin")
    a, b = schedule_window(label, "22:00", "07:30")
    assert night_label(a * EPOCH_S) == night_label((b - 1) * EPOCH_S) == label


def test_live_audio__raw_audio_asked_for_is_kept_only_inside_the_schedule(tmp_path):
    import numpy as np
    import soundfile

    from nightlink.edge.sources.microphone import KeptAudio, LiveAudio

    store = EdgeStore(tmp_path / "e.db")
    closer = NightCloser(store, "22:00", "07:30", "UTC")
    t0 = _utc("2026-01-15 21:59:50")  # 10 s before bedtime
    pipe = EdgePipeline(store, int(t0 // EPOCH_S), audio=False, live=True)

    def run(start, seconds, value):
        keep = KeptAudio(tmp_path / "raw.wav", 16000, closer.recording_night)
        mic = LiveAudio(pipe, keep)
        for k in range(2 * seconds):  # half-second chunks
            mic.push(np.full(8000, value, np.int16), start + 0.5 * k)
        keep.close()

    run(t0, 20, 100)  # the last 10 s are inside the schedule
    night = tmp_path / "raw-2026-01-15.wav"
    assert soundfile.info(str(night)).frames == 20 * 8000
    assert not (tmp_path / "raw.wav").exists()
    run(t0 + 60, 5, 200)  # the node started again that night: added, not overwritten
    kept = soundfile.read(str(night), dtype="int16")[0]
    assert kept.size == 30 * 8000 and kept[0] == 100 and kept[-1] == 200
    run(_utc("2026-01-16 23:00:00"), 2, 300)  # the next night: a file of its own
    assert soundfile.info(str(tmp_path / "raw-2026-01-16.wav")).frames == 4 * 8000
    # a run killed mid-night leaves samples past its header's length: not written over
    with (tmp_path / "raw-2026-01-16.wav").open("ab") as raw:  # as a killed run leaves it
        raw.write(np.full(8000, 400, np.int16).tobytes())
    size = (tmp_path / "raw-2026-01-16.wav").stat().st_size
    run(_utc("2026-01-16 23:20:00"), 1, 500)
    assert (tmp_path / "raw-2026-01-16.wav").stat().st_size == size
    assert soundfile.info(str(tmp_path / "raw-2026-01-16-2.wav")).frames == 2 * 8000
    store.close()


def test_config__whether_the_schedule_was_set_is_known_and_not_a_key(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text("[nightscout]\nenabled = false\n")
    assert load(path, env={}).night_given is False
    path.write_text('[night]\nbedtime = "23:00"\n[nightscout]\nenabled = false\n')
    assert load(path, env={}).night_given is True
    path.write_text("night_given = true\n[nightscout]\nenabled = false\n")
    with pytest.raises(ConfigError, match="unknown key 'night_given'"):
        load(path, env={})


def test_zone_name__the_machines_zone_by_its_iana_name(monkeypatch):
    from nightlink.edge.node.zone import zone_name

    assert zone_name("Asia/Tokyo") == "Asia/Tokyo"
    monkeypatch.setenv("TZ", ":America/Chicago")
    assert zone_name() == "America/Chicago"
    monkeypatch.setenv("TZ", "Europe")  # a folder: not a zone; the machine's link decides
    assert zone_name() != "Europe"


def test_finish_night__a_microphone_that_came_back_leaves_no_gap_from_an_earlier_summary(
        tmp_path):
    """Muted for the first hour (a stop then summarises it as dead), then working: the
    night's close finds the audio usable and the partial summary's gap goes."""
    import numpy as np

    from nightlink.edge.features.audio import EPOCH_SAMPLES, AudioFeatureExtractor
    from nightlink.edge.node.nights import finish_night

    rng = np.random.default_rng(2)
    silent = AudioFeatureExtractor(0, 16000).feed(np.zeros(EPOCH_SAMPLES, np.int16))[0][1]
    room = AudioFeatureExtractor(0, 16000).feed(
        rng.normal(0, 40, EPOCH_SAMPLES).astype(np.int16))[0][1]
    store = EdgeStore(tmp_path / "e.db")
    first = int(_utc("2026-01-15 23:00") // EPOCH_S)
    pipe = EdgePipeline(store, first, audio=False, live=True)
    for k in range(600):
        pipe.put_audio_row(first + k, silent if k < 120 else room)
        pipe.close(first + k)
    finish_night(store, first, 120, "2026-01-15", classify=False)
    assert len(store.gaps("audio")) == 1
    summary = finish_night(store, first, 600, "2026-01-15", classify=False)
    assert "audio_unusable" not in summary and store.gaps("audio") == []
    store.close()


def test_summary__an_input_the_night_did_not_have_is_no_figure_not_zero(tmp_path):
    """Heart rate alone: no oximeter, no accelerometer, no CGM. The summary leaves their
    figures out (None), and the clocks' night message has no lows, instead of "0 lows",
    "ODI 0" and "0 minutes low" that read as a good night."""
    from nightlink.edge.features.night_summary import summarize_night
    from nightlink.edge.sync.clock_feed import night_message

    store, first = _heart_rate_night(tmp_path)
    s = summarize_night(store, first, 130)
    assert s["wearable"]["hr_mean"] is not None
    assert (s["wearable"]["odi3"], s["wearable"]["odi4"], s["wearable"]["movement_epochs"]) \
        == (None, None, None)
    assert (s["cgm"]["below_70_min"], s["cgm"]["below_54_min"], s["cgm"]["above_180_min"]) \
        == (None, None, None)
    msg = night_message("2026-01-15", s, [], first * EPOCH_S, (first + 130) * EPOCH_S)
    assert (msg["lows"], msg["low_min"], msg["tir_pct"]) == (None, None, None)
    store.close()


def test_live_close__the_nights_beats_give_the_beats_head(tmp_path):
    """A live node keeps the wearable's beats in its store (the wire carries only per-epoch
    features), so the night's close scores heart rhythm with the beats head, as a replay
    does, not the weaker stored-epoch head; beats older than 3 days are pruned."""
    import numpy as np

    from nightlink.edge.sources.samples import Beat
    from tests.edge.test_cvhr import synthetic_beats

    store = EdgeStore(tmp_path / "e.db")
    start = _utc("2026-01-15 23:00")
    first = int(start // EPOCH_S)
    t, rr = synthetic_beats(100, 80.0, swing_bpm=20.0, seed=1)
    t = t + start
    n = 200  # 100 minutes
    pipe = EdgePipeline(store, first, audio=False, live=True)
    for e in range(n):
        inside = (t >= (first + e) * EPOCH_S) & (t < (first + e + 1) * EPOCH_S)
        for ti, ri in zip(t[inside], rr[inside], strict=True):
            pipe.add(Beat(float(ti), float(ri)))
        pipe.close(first + e)
    store.add_beats(list(zip(t.tolist(), rr.tolist(), strict=True)))
    store.add_beats([(float(t[0]), float(rr[0]))])  # a beat drained twice is kept once
    got_t, got_rr = store.beats_between(start, start + n * EPOCH_S)
    inside = t < start + n * EPOCH_S
    assert got_t.size == inside.sum() and np.allclose(got_rr, rr[inside])
    closer = NightCloser(store, "22:00", "07:30", "UTC")
    assert closer.close_due(_utc("2026-01-16 08:00")) == ["2026-01-15"]
    rr_screen = store.night("2026-01-15")["breathing"]["rr"]
    assert rr_screen["source"] == "beats+epochs" and rr_screen["apnea_index"] >= 15
    store.prune(first + n + 4 * 2880)
    assert store.beats_between(start, start + n * EPOCH_S)[0].size == 0
    store.close()


def _record(store, a_s: float, b_s: float) -> None:
    a, b = int(a_s // EPOCH_S), int(b_s // EPOCH_S)
    pipe = EdgePipeline(store, a, audio=False, live=True)
    for k in range(b - a):
        pipe.add(HeartRate((a + k) * EPOCH_S + 5, 60.0 + k % 7))
        pipe.close(a + k)


def test_night_closer__a_changed_schedule_closes_the_old_one_s_night_first(tmp_path):
    """Down over the wake time of a 22:00-07:30 night and started again with a day sleeper's
    08:00-16:00: that night is closed under the schedule it was recorded in (the new one's
    window on that date holds nothing)."""
    from nightlink.edge.node.nights import SCHEDULE_META, close_before_change

    store = EdgeStore(tmp_path / "e.db")
    store.set_meta(SCHEDULE_META, "22:00-07:30")
    _record(store, _utc("2026-01-15 22:00"), _utc("2026-01-16 07:30"))
    now = _utc("2026-01-16 09:00")
    assert close_before_change(store, "22:00-07:30", "UTC", 5, now) == []  # unchanged
    assert close_before_change(store, "08:00-16:00", "UTC", 5, now) == ["2026-01-15"]
    assert store.night("2026-01-15")["epochs"] == 19 * 60  # 9.5 hours
    store.close()


def test_night_closer__a_night_named_like_another_schedule_s_is_said(tmp_path, caplog):
    """The last day shift's sleep (08:00-16:00 on the 15th) and, under 22:00-07:30 from that
    evening, a night of the same name: kept, not summarised over the first, and said."""
    import logging

    store = EdgeStore(tmp_path / "e.db")
    _record(store, _utc("2026-01-15 08:00"), _utc("2026-01-15 16:00"))
    assert NightCloser(store, "08:00", "16:00", "UTC").close_due(
        _utc("2026-01-15 16:01")) == ["2026-01-15"]
    _record(store, _utc("2026-01-15 22:00"), _utc("2026-01-16 07:30"))
    caplog.set_level(logging.WARNING)
    assert NightCloser(store, "22:00", "07:30", "UTC").close_due(_utc("2026-01-16 07:31")) == []
    assert "night 2026-01-15 was closed under another sleep schedule" in caplog.text
    assert store.night("2026-01-15")["epochs"] == 16 * 60  # the day's sleep stays
    store.close()


def test_night_closer__a_close_the_store_refused_is_tried_again_once_it_takes_writes(
        tmp_path, monkeypatch, caplog):
    """A full disk (the node started on one, or it filled): the night's close is said in one
    line, not retried every minute, and closed once the store takes writes again (the live
    node's retry_refused), not only at the next start."""
    from nightlink.edge.node import nights
    from nightlink.edge.node.nights import is_closed
    from nightlink.sql import DatabaseError

    store, _ = _heart_rate_night(tmp_path)
    finish = nights.finish_night

    def full(*_a, **_k):
        raise DatabaseError("database or disk is full")

    monkeypatch.setattr(nights, "finish_night", full)
    closer = NightCloser(store, "22:00", "07:30", "UTC")
    assert closer.close_due(_utc("2026-01-16 08:00")) == []
    assert closer.close_due(_utc("2026-01-16 08:01")) == []  # not every minute
    said = [r for r in caplog.records if "night 2026-01-15 could not be closed" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is None, said  # one line, no traceback
    monkeypatch.setattr(nights, "finish_night", finish)
    closer.retry_refused()
    assert closer.close_due(_utc("2026-01-16 08:02")) == ["2026-01-15"]
    assert is_closed(store.night("2026-01-15"))
    store.close()
