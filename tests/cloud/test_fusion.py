"""Fusion of one night on the epoch grid, against figures worked out by hand."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from nightlink.cloud import fusion
from nightlink.cloud.reports import render, settings
from nightlink.cloud.store import Store
from nightlink.shared import features
from nightlink.tools.bench.report import put_epochs, put_glucose

UTC_Z = ZoneInfo("UTC")
NIGHT = "2026-01-15"
E0 = int(datetime(2026, 1, 15, 23, 0, tzinfo=UTC).timestamp()) // 30
# 16 epochs (8 minutes): 2 min awake, light, deep, 1 min awake, light, REM, light, awake.
STAGES = [0, 0, 0, 0, 1, 1, 2, 2, 0, 0, 1, 3, 3, 1, 0, 0]


def ms(epoch):
    return epoch * 30_000


@pytest.fixture
def data(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'f.db'}")
    store.create_tenant("p1", "Patient")
    yield store.tenant("p1")
    store.close()


def classifier_night(data):
    rows = {}
    for i, s in enumerate(STAGES):
        rows[E0 + i] = {"sleep_stage": s, "stage_conf": 0.9, "snore": int(i in (5, 6)),
                        "apnea_events": int(i in (5, 11)), "desat3": int(i in (6, 7, 12)),
                        "desat4": int(i == 12), "low_risk": 0.0, "forecast30_mgdl": 120}
    put_epochs(data, features.INFER, rows)
    put_glucose(data, [(ms(E0 + 4), 100), (ms(E0 + 6), 120), (ms(E0 + 10), 140),
                       (ms(E0 + 12), 120), (ms(E0 + 15), 5)])  # 5: a sensor error code


def test_fuse__sleep_metrics_by_hand(data):
    classifier_night(data)
    doc = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))
    s = doc["sleep"]
    assert s["source"] == "classifier"
    assert (s["tib_min"], s["tst_min"], s["se_pct"], s["sol_min"], s["waso_min"]) == \
        (8.0, 4.0, 50.0, 2.0, 1.0)
    assert s["rem_latency_min"] is None  # its one REM run (2 epochs) is below the minimum bout
    assert s["stage_pct"] == {"light": 50.0, "deep": 25.0, "rem": 25.0}
    assert s["unscored_min"] == 0
    assert s["onset_ms"] == ms(E0 + 4) and s["final_wake_ms"] == ms(E0 + 14)


def test_fuse__breathing_from_classifier(data):
    classifier_night(data)
    b = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))["breathing"]
    # 8 sleep epochs = 1/15 h: 2 apneas -> AHI 30; desat3 flagged in 6, 7 and 12: the edge
    # counts each desaturation in the epoch where it is confirmed, so 3 -> ODI3 45 (cyclic
    # desaturations a minute apart flag neighbouring epochs: they are not one).
    assert b["apnea_events"] == 2 and b["ahi"] == pytest.approx(30)
    assert b["ahi_severity"] == "severe" and b["ahi_source"] == "classifier"
    assert b["odi3"] == pytest.approx(45) and b["odi4"] == pytest.approx(15)
    assert b["snore_pct"] == 25.0


def test_fuse__odi_from_the_edges_counts_where_the_wearable_rows_came(data):
    classifier_night(data)
    # Epoch 7 held two desaturations (40-s cycles), 12 one; the others none.
    put_epochs(data, features.WEARABLE, {E0 + i: {"spo2_mean_pct": 93.0, "desat3_count":
                                                  {6: 1, 7: 2, 12: 1}.get(i, 0),
                                                  "desat4_count": int(i == 12)}
                                         for i in range(len(STAGES))})
    b = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))["breathing"]
    assert b["odi_source"] == "classifier"
    assert b["odi3"] == pytest.approx(60) and b["odi4"] == pytest.approx(15)


def test_fuse__nocturnal_glucose_and_by_stage(data):
    classifier_night(data)
    doc = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))
    g = doc["glucose"]
    assert g["period"] == "sleep" and g["n"] == 4
    assert g["summary"]["mean"] == 120 and g["summary"]["sd"] == pytest.approx((800 / 3) ** 0.5)
    assert g["bands"]["in_range"] == 100 and g["lows"] == []
    by = doc["findings"]["glucose_by_stage"]
    assert by["light"] == {"n": 2, "mean": 120.0, "sd": pytest.approx(28.3, abs=0.05)}
    assert by["deep"]["n"] == 1 and by["rem"]["mean"] == 120.0
    assert doc["findings"]["around_desaturations"]["near"]["n"] == 4
    assert doc["coverage"]["inference"] == 1.0 and doc["coverage"]["wearable"] == 0.0
    assert doc["coverage"]["sensor_errors"] == 1


def test_fuse__fallback_without_classifier_is_labelled(data):
    """No inference rows: wearable movement gives sleep/wake only, audio pauses give apnea
    candidates, the wearable's counts give the ODI; every figure says where it came from.
    Rows whose features are all missing count as no data."""
    wear, aud = {}, {}
    for i in range(20):
        moved = int(i <= 3 or i == 19)
        wear[E0 + i] = {"hr_mean_bpm": 60.0, "movement": moved, "desat3_count": int(i in (9, 15)),
                        "desat4_count": 0, "spo2_mean_pct": 95.0}
        aud[E0 + i] = {"silence_max_s": 12.0 if i in (8, 9, 14) else 2.0, "snore_ratio": 0.1}
    wear[E0 + 40] = {}  # a row with nothing measured, well after the night
    put_epochs(data, features.WEARABLE, wear)
    put_epochs(data, features.AUDIO, aud)
    doc = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))
    s, b = doc["sleep"], doc["breathing"]
    # awake when >= 3 of the 5 epochs around move: 0-3; the lone movement at 19 is not
    # enough. Asleep: 4-19 = 16 epochs.
    assert s["source"] == "actigraphy" and s["stage_pct"] is None and s["rem_latency_min"] is None
    assert (s["tib_min"], s["tst_min"], s["sol_min"], s["waso_min"]) == (10.0, 8.0, 2.0, 0.0)
    assert b["source"] == "raw features" and "audio pauses" in b["ahi_source"]
    # Counted over the 20-epoch recording (1/6 h), as actigraphy would call post-apnea
    # arousals awake: 2 events -> 12/h, mild.
    assert b["basis"] == "recording" and "per hour of recording" in b["ahi_source"]
    assert b["apnea_events"] == 2 and b["ahi"] == pytest.approx(12)
    assert b["ahi_severity"] == "mild"
    assert b["odi_source"] == "wearable desaturation counts"
    assert b["odi3"] == pytest.approx(12)
    assert doc["coverage"]["inference"] == 0.0 and doc["coverage"]["audio"] == 1.0
    assert doc["glucose"]["period"] == "sleep" and doc["glucose"]["summary"] is None


def test_fuse__no_sleep_data_uses_consensus_night_and_never_invents_sleep(data):
    put_glucose(data, [(int(datetime(2026, 1, 16, h, 0, tzinfo=UTC).timestamp() * 1000), 100 + h)
                       for h in range(0, 8)])
    doc = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))
    assert doc["recording"] is None and doc["sleep"]["tst_min"] is None
    assert doc["breathing"]["ahi"] is None
    assert doc["glucose"]["period"] == "00:00-06:00" and doc["glucose"]["n"] == 6
    assert doc["has_data"]


def test_fuse__low_with_stage_heart_rate_and_arousal(data):
    n = 120  # one hour
    rows, wear = {}, {}
    for i in range(n):
        s = 0 if i < 10 or i >= n - 4 else (2 if 30 <= i <= 70 else 1)
        if i == 62:
            s = 0  # an arousal during the low
        rows[E0 + i] = {"sleep_stage": s}
        wear[E0 + i] = {"hr_mean_bpm": 75.0 if 40 <= i <= 70 else 60.0, "movement": 0}
    put_epochs(data, features.INFER, rows)
    put_epochs(data, features.WEARABLE, wear)
    # Readings every 5 min (10 epochs): 65 at epochs 40 to 70 (4 readings, 20 min), then 100.
    put_glucose(data, [(ms(E0 + i), 65 if 40 <= i <= 70 else 100) for i in range(0, n, 10)])
    doc = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))
    (low,) = doc["glucose"]["lows"]
    assert (low["level"], low["minutes"], low["nadir"]) == (1, 20.0, 65)
    (f,) = doc["findings"]["lows"]
    assert f["stage_at_start"] == "deep"
    assert f["hr_before"] == 60.0 and f["hr_during"] == 75.0 and f["hr_response"] == 15.0
    assert f["arousal"] and f["arousal_ms"] == ms(E0 + 62)


def test_fuse__a_low_without_sleep_or_wearable_data_has_no_arousal_finding(data):
    """CGM alone (a family without a bedside node): whether the person woke is not known,
    not "none seen"."""
    at = E0 + 240  # 01:00: inside the consensus night (00:00-06:00) used without sleep
    put_glucose(data, [(ms(at + i), 65 if 40 <= i <= 70 else 100) for i in range(0, 120, 10)])
    doc = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))
    (f,) = doc["findings"]["lows"]
    assert f["arousal"] is None and f["arousal_ms"] is None and f["stage_at_start"] is None


def test_fused_night__cached_until_late_data_arrives(data):
    classifier_night(data)
    doc = settings.fused_night(data, NIGHT, UTC_Z)
    first = settings.cache_info(data, NIGHT)
    assert settings.fused_night(data, NIGHT, UTC_Z) == doc
    assert settings.cache_info(data, NIGHT)["computed_at"] == first["computed_at"]
    # A late row from a second device: an apnea in a sleep epoch.
    put_epochs(data, features.INFER, {E0 + 7: {"sleep_stage": 2, "apnea_events": 1}},
               device="0000000000aa")
    assert settings.cache_info(data, NIGHT)["stamp"] != fusion.stamp(data, NIGHT, UTC_Z)
    again = settings.fused_night(data, NIGHT, UTC_Z)
    assert again["breathing"]["apnea_events"] == 3 and doc["breathing"]["apnea_events"] == 2
    # A late glucose reading changes it too.
    put_glucose(data, [(ms(E0 + 8), 160)])
    assert settings.fused_night(data, NIGHT, UTC_Z)["glucose"]["n"] == 5


def test_night_window__dst_changes(data):
    berlin = ZoneInfo("Europe/Berlin")
    a, b = fusion.night_window("2026-03-28", berlin)  # clocks go forward that night
    assert (b - a) * 30 == 23 * 3600
    a, b = fusion.night_window("2026-10-24", berlin)  # and back
    assert (b - a) * 30 == 25 * 3600
    a, _ = fusion.night_window("2026-01-15", berlin)
    assert a * 30 == datetime(2026, 1, 15, 11, 0, tzinfo=UTC).timestamp()
    assert fusion.night_of(datetime(2026, 3, 29, 3, 0, tzinfo=UTC).timestamp(), berlin) == \
        "2026-03-28"


@pytest.mark.parametrize(("ahi", "sev"), [(0, "normal"), (4.9, "normal"), (5, "mild"),
                                          (14.9, "mild"), (15, "moderate"), (30, "severe"),
                                          (None, None)])
def test_severity__aasm_bands(ahi, sev):
    assert fusion.severity(ahi) == sev


def test_pearson__ci_and_not_enough_nights():
    r = fusion.pearson([1, 2, 3, 4], [2, 4, 6, 8])
    assert r["r"] is None and not r["enough"] and r["n"] == 4
    r = fusion.pearson([1, 2, 3, 4, 5, None], [2, 4, 5, 4, 5, 9])
    assert r["n"] == 5 and r["enough"]
    # sxx = 10, syy = 6, sxy = 6 by hand: r = 6 / sqrt(60); slope = 6 / 10
    assert r["r"] == pytest.approx(6 / 60 ** 0.5) and r["slope"] == pytest.approx(0.6)
    lo, hi = r["ci"]
    assert lo < r["r"] < hi and -1 < lo and hi < 1


def test_fused_night__both_backends(cloud_db_url):
    """Migration 6, the cache and the report queries on SQLite and PostgreSQL alike."""
    from nightlink.cloud.reports.summary import build_report

    store = Store.open(cloud_db_url)
    try:
        store.create_tenant("p1", "Patient")
        data = store.tenant("p1")
        settings.set_patient_settings(data, tz="Europe/Berlin", targets="older", report_days=7)
        ps = settings.patient_settings(data)
        assert (ps.tz.key, ps.targets, ps.report_days) == ("Europe/Berlin", "older", 7)
        classifier_night(data)
        doc = settings.fused_night(data, NIGHT, ps.tz)
        assert doc["breathing"]["apnea_events"] == 2
        assert settings.fused_night(data, NIGHT, ps.tz) == doc
        put_epochs(data, features.INFER, {E0 + 7: {"sleep_stage": 2, "apnea_events": 1}},
                   device="0000000000aa")
        assert settings.fused_night(data, NIGHT, ps.tz)["breathing"]["apnea_events"] == 3
        rep = build_report(data, ps, end_day="2026-01-16")
        assert rep["days"] == 7 and rep["summary"]["n"] == 4
        user = store.create_user("u@example.org", "x")
        assert settings.user_units(store, user["id"]) == "mg/dL"
        settings.set_user_units(store, user["id"], "mmol/L")
        assert settings.user_units(store, user["id"]) == "mmol/L"
        assert data.purge() > 0
        assert settings.cache_info(data, NIGHT) is None
    finally:
        store.close()


def test_fuse__unstaged_epochs_are_neither_latency_nor_sleep(data):
    """Wearable rows for an hour before the classifier's first stage (another edge, a failed
    close) and a hole inside the night: sleep-onset latency counts from the first staged
    epoch and efficiency over the staged time, not over the unstaged stretch."""
    wear = {E0 - 120 + i: {"hr_mean_bpm": 60.0} for i in range(120 + len(STAGES))}
    put_epochs(data, features.WEARABLE, wear)
    classifier_night(data)
    s = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))["sleep"]
    assert (s["tib_min"], s["unscored_min"]) == (68.0, 60.0)
    assert (s["tst_min"], s["se_pct"], s["sol_min"], s["waso_min"]) == (4.0, 50.0, 2.0, 1.0)


def test_fuse__a_recording_that_nothing_staged_has_no_sleep_figures(data):
    """Audio rows but no stage and no movement: no sleep figures (not a night of 0 min sleep
    at 0 % efficiency, which would read as a sleepless night)."""
    put_epochs(data, features.AUDIO, {E0 + i: {"loud_mean_dbfs": -50.0} for i in range(960)})
    s = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))["sleep"]
    assert s["tib_min"] == 480.0 and s["source"] is None
    assert (s["tst_min"], s["se_pct"], s["sol_min"]) == (None, None, None)


def test_fuse__classifier_rows_that_stage_nothing_leave_the_actigraphy_fallback(data):
    """Stream 5 rows without a stage (epochs with no signal of the person) do not make the
    night "classifier": the wearable's movement still stages it."""
    put_epochs(data, features.INFER, {E0 + i: {"low_risk": 0.1} for i in range(len(STAGES))})
    put_epochs(data, features.WEARABLE,
               {E0 + i: {"movement": 1.0 if i < 4 else 0.0} for i in range(len(STAGES))})
    s = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))["sleep"]
    assert s["source"] == "actigraphy" and s["tst_min"] > 0


def test_fuse__breathing_only_from_rows_that_carry_it(data):
    """A night staged without audio or oximetry: no snoring share, AHI or ODI (not 0 %,
    "normal"), where the edge left them out of its rows."""
    put_epochs(data, features.INFER,
               {E0 + i: {"sleep_stage": s, "stage_conf": 0.9} for i, s in enumerate(STAGES)})
    b = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))["breathing"]
    assert b["source"] == "classifier"
    assert (b["snore_pct"], b["ahi"], b["ahi_severity"], b["odi3"]) == (None, None, None, None)


@pytest.mark.parametrize("mic, says", [
    ({"loud_mean_dbfs": -120.0, "loud_max_dbfs": -120.0, "flatness": 0.0, "silence_max_s": 30.0,
      "snore_ratio": 0.0}, "silent"),
    ({"loud_mean_dbfs": -0.5, "loud_max_dbfs": 0.0, "flatness": 0.9, "silence_max_s": 0.0,
      "snore_ratio": 0.9}, "clipped at full scale")])
def test_fuse__a_dead_microphone_gives_no_breathing_figures_and_says_so(data, mic, says):
    """Without classifier rows a silent microphone read as one long breathing pause, a
    clipped one as a night of snoring; the edge's check leaves such audio out here too."""
    wear = {E0 + i: {"hr_mean_bpm": 60.0, "movement": int(i < 3)} for i in range(240)}
    aud = {E0 + i: dict(mic) for i in range(240)}
    aud[E0 + 5] = {"loud_mean_dbfs": -50.0, "loud_max_dbfs": -30.0, "flatness": 0.3,
                   "silence_max_s": 12.0, "snore_ratio": 0.9}  # one usable epoch in 240
    put_epochs(data, features.WEARABLE, wear)
    put_epochs(data, features.AUDIO, aud)
    b = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))["breathing"]
    assert b["source"] == "raw features"
    assert (b["ahi"], b["apnea_events"], b["snore_pct"], b["ahi_source"]) == (None, None, None, None)
    assert says in b["audio_unusable"] and "in 239 of 240 epochs" in b["audio_unusable"]


def test_fuse__a_quiet_but_working_microphone_is_kept(data):
    aud = {E0 + i: {"loud_mean_dbfs": -70.0, "loud_max_dbfs": -55.0, "flatness": 0.4,
                    "silence_max_s": 12.0 if i in (8, 9, 14) else 2.0, "snore_ratio": 0.1}
           for i in range(20)}
    put_epochs(data, features.AUDIO, aud)
    b = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))["breathing"]
    assert b["audio_unusable"] is None and b["apnea_events"] == 2


def test_fuse__a_15_minute_sensor_with_every_reading_is_fully_covered(data):
    a, b = fusion.night_window(NIGHT, UTC_Z)
    put_glucose(data, [(ms(e), 110) for e in range(a, b, 30)])  # every 15 minutes, all there
    cov = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))["coverage"]
    assert cov["glucose_readings"] == pytest.approx(1.0)


RR_SCREEN = {"ahi_estimate": 57.2, "breathing_inputs": ["rr"], "screen": "possible sleep apnea: "
             "suggest seeing a doctor", "rr": {"apnea_index": 57.2}, "spo2": None,
             "ahi": None, "apnea_events": None}


def test_fuse__the_edges_apnea_screen_from_heart_rhythm_is_the_nights_figure(data):
    """A ring or watch with beat-to-beat intervals and no audio: the rows carry stages but no
    events; the edge's screen from heart rhythm (reported with its status) is the night's
    AHI, said to be that estimate. Where the rows have their own AHI it stays, the screen
    beside it. A malformed screen is left out; a late one is picked up (cache)."""
    put_epochs(data, features.INFER,
               {E0 + i: {"sleep_stage": s, "stage_conf": 0.9} for i, s in enumerate(STAGES)})
    assert settings.fused_night(data, NIGHT, UTC_Z)["breathing"]["ahi"] is None
    data.put_night(NIGHT, {"breathing": RR_SCREEN, "device": "ed9e00000001"})
    b = settings.fused_night(data, NIGHT, UTC_Z)["breathing"]  # the cache saw the report
    assert b["ahi"] == 57.2 and b["ahi_severity"] == "severe"
    assert b["ahi_source"].startswith("the edge's apnea screen from heart rhythm")
    assert b["screen"] == {"ahi_estimate": 57.2, "inputs": ["rr"], "severity": "severe",
                           "message": "possible sleep apnea: suggest seeing a doctor"}
    for bad in ({"ahi_estimate": "57", "breathing_inputs": ["rr"]},
                {"ahi_estimate": 1e9, "breathing_inputs": ["rr"]},
                {"ahi_estimate": 20.0, "breathing_inputs": ["ecg"]},
                {"ahi_estimate": 20.0, "breathing_inputs": [["rr"]]},
                {"ahi_estimate": 20.0, "breathing_inputs": [{"a": 1}]}, "screen", None):
        data.put_night(NIGHT, {"breathing": bad})
        b = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))["breathing"]
        assert b["ahi"] is None and "screen" not in b


def test_fuse__rows_with_their_own_ahi_keep_it_beside_the_edges_screen(data):
    classifier_night(data)
    data.put_night(NIGHT, {"breathing": {**RR_SCREEN, "ahi_estimate": 12.0}})
    b = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))["breathing"]
    assert b["ahi"] == pytest.approx(30) and b["ahi_source"] == "classifier"
    assert b["screen"]["ahi_estimate"] == 12.0 and b["screen"]["severity"] == "mild"


def test_fuse__two_homes_the_edge_that_recorded_the_person_decides(data):
    """A child with an edge at each parent's home sleeps at one of them. The empty home's
    edge (here the lower device id, which used to win every epoch) records and stages its
    room all night; the night's sleep and breathing come from the edge whose glucose and
    wearable rows say it recorded the child, and so does the apnea screen."""
    empty, home = "000000000001", "ffffffffffff"
    put_epochs(data, features.INFER, {E0 + i: {"sleep_stage": 2, "stage_conf": 0.9,
                                               "apnea_events": 1} for i in range(16)},
               device=empty)
    put_epochs(data, features.INFER, {E0 + i: {"sleep_stage": s, "stage_conf": 0.9,
                                               "apnea_events": 0}
                                      for i, s in enumerate(STAGES)}, device=home)
    put_epochs(data, features.CGM, {E0 + i: {"glucose_mgdl": 120, "minutes_since": 1.0}
                                    for i in range(16)}, device=home)
    put_epochs(data, features.WEARABLE, {E0 + i: {"hr_mean_bpm": 58} for i in range(16)},
               device=home)
    put_epochs(data, features.CGM, {E0 + i: {} for i in range(16)}, device=empty)
    data.put_night(NIGHT, {"breathing": {"ahi_estimate": 8.3}, "device": empty,
                           "by_device": {empty: {"ahi_estimate": 8.3},
                                         home: {"ahi_estimate": 2.8}}})
    assert data.night_devices(E0, E0 + 16) == [home, empty]
    nd = fusion.load_night(data, NIGHT, UTC_Z)
    assert nd.edge["device"] == home and nd.edge["breathing"] == {"ahi_estimate": 2.8}
    s = fusion.fuse(nd)["sleep"]
    assert s["stage_pct"] == {"light": 50.0, "deep": 25.0, "rem": 25.0}
    assert s["tst_min"] == 4.0  # the child's night, not 8 minutes of the empty room's deep


def _staged(data, first, stages):
    put_epochs(data, features.INFER, {
        first + i: {"sleep_stage": s, "stage_conf": 0.9, "snore": 0, "apnea_events": 0,
                    "desat3": 0, "desat4": 0, "low_risk": 0.0, "forecast30_mgdl": 120}
        for i, s in enumerate(stages)})


@pytest.mark.parametrize("nap_h", [15, 19])  # an afternoon nap; one 3 hours before bed
def test_fuse__a_nap_recorded_in_the_nights_window_is_apart_from_the_night(data, nap_h):
    """The night's figures are its main sleep's: a nap the node recorded hours before bed
    does not lengthen its time in bed nor move its sleep onset; it is listed apart."""
    classifier_night(data)
    alone = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))
    nap = int(datetime(2026, 1, 15, nap_h, 0, tzinfo=UTC).timestamp()) // 30
    _staged(data, nap, [0] * 2 + [1] * 4 + [0] * 2)  # 2 minutes asleep (the night: 4)
    doc = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))
    assert doc["sleep"] == alone["sleep"] and doc["recording"] == alone["recording"]
    assert doc["breathing"] == alone["breathing"]
    assert doc["apart"] == [{"start_ms": ms(nap), "end_ms": ms(nap + 8), "minutes": 4.0}]
    assert alone["apart"] == []
    html = render.night_html(doc, fusion.timeline(fusion.load_night(data, NIGHT, UTC_Z), doc),
                             tenant="p1", tenant_name="Ann", unit="mg/dL")
    assert f"also recorded 2026-01-15 {nap_h}:00 to {nap_h}:04 (a separate sleep" in html


def test_fuse__a_gap_of_under_3_hours_in_the_night_stays_one_night(data):
    """The node restarted for two hours in the night: one sleep, its time in bed across."""
    _staged(data, E0, [0] * 4 + [1] * 56)
    _staged(data, E0 + 60 + 240, [1] * 60)  # 2 hours later
    doc = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))
    assert doc["apart"] == [] and doc["sleep"]["tib_min"] == (60 + 240 + 60) / 2
    # a longer sleep later in the window is the night; the first becomes the one apart
    _staged(data, E0 + 60 + 240 + 60 + 360, [1] * 400)
    doc = fusion.fuse(fusion.load_night(data, NIGHT, UTC_Z))
    assert doc["sleep"]["tib_min"] == 200.0 and len(doc["apart"]) == 1
    assert doc["apart"][0]["minutes"] == 180.0
