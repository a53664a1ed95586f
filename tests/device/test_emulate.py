"""`nightlink device emulate`: the clock firmware on the host port against a real Mosquitto,
fed by the edge's clock feed (edge/sync/clock_feed.py); screens as PNGs; battery estimate."""

import json
import time

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.edge.sources.cgm import glucose_to_entry
from nightlink.edge.sources.samples import Glucose
from nightlink.edge.store import EdgeStore
from nightlink.edge.sync.clock_feed import ClockFeed, glucose_message, night_message
from nightlink.shared import topics
from nightlink.tools.device import emulate

CONFIG = {
    "version": 1,
    "device": {"id": "a4cf12b0c3d4", "tenant": "smith"},
    "wifi": [{"ssid": "home", "password": "correct horse"}],
    "mqtt": {"host": "127.0.0.1", "port": 1},
    "tz": "UTC0",
    "thresholds": {"stale_min": 15, "nodata_min": 30},
}


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _publisher(broker):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edge-test")
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def _edge_with_readings(tmp_path, now, values):
    store = EdgeStore(tmp_path / "edge.db")
    n = len(values)
    store.add_entries(glucose_to_entry(Glucose(t=now - 60 - 300 * (n - 1 - i), sgv=v), "cgm")
                      for i, v in enumerate(values))
    return store


def test_clock_feed__glucose_message():
    now = 1768520000
    rs = [Glucose(t=now - 300 * (5 - i), sgv=v) for i, v in enumerate([100, 96, 91, 85, 80, 74])]
    m = glucose_message(rs)
    assert m == {"t": now, "sgv": 74, "trend": 5, "delta": -6,  # -1.2 mg/dL/min
                 "recent": [[now - 1500, 100], [now - 1200, 96], [now - 900, 91],
                            [now - 600, 85], [now - 300, 80]]}
    err = glucose_message(rs + [Glucose(t=now + 300, sgv=None, error_code=10)])
    assert err["sgv"] == 10 and err["delta"] is None


def test_clock_feed__night_message():
    start = 1768516200
    rs = [Glucose(t=start + 300 * i, sgv=v) for i, v in enumerate(
        [120, 100, 80, 68, 66, 64, 62, 75, 90, 110, 69, 69, 120])]
    m = night_message("2026-01-15", {"cgm": {"below_70_min": 25.0}}, rs, start, start + 3900)
    assert m["lows"] == 1  # 68..62 lasts 15 min; the later 10-minute dip does not count
    assert m["low_min"] == 25 and m["sleep_min"] is None
    assert m["curve"][:3] == [110, 74, 65] and len(m["curve"]) == 7
    assert m["tir_pct"] == round(100 * 7 / 13)  # 120 100 80 75 90 110 120


def test_emulate__real_broker_feed_then_silence(tmp_path, mosquitto):
    """The edge publishes a low reading retained; the clock (started later) shows and sounds
    it, then the readings stop and the broker dies: stale, then NO DATA, escalating."""
    now = time.time()
    store = _edge_with_readings(tmp_path, now, [96, 90, 84, 78, 71, 64])
    pub = _publisher(mosquitto)
    feed = ClockFeed(pub.publish, "smith", store.device)
    assert feed.update(store, now) == 1
    time.sleep(0.3)
    pub.loop_stop()
    pub.disconnect()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    out = tmp_path / "screens"
    events = []

    def on_line(line):
        ev = json.loads(line)
        events.append(ev)
        if ev.get("event") == "screen" and ev.get("sgv") == 64 and mosquitto.proc:
            mosquitto.stop()  # the LAN broker dies: the clock must keep going

    end = emulate.run(["--config", str(cfg), "--out", str(out), "--broker",
                 f"{mosquitto.host}:{mosquitto.port}", "--speed", "300", "--minutes", "40"],
                timeout=120, echo=on_line)
    screens = [e for e in events if e["event"] == "screen"]
    assert screens[0]["sgv"] is None  # drawn at boot, before the broker answered
    got = [e for e in screens if e["sgv"] is not None]
    assert got[0]["sgv"] == 64 and got[0]["alarm"] == "LOW", events
    assert got[0]["sounding"] == "low" and got[0]["pattern"] == 2
    fresh = [e["freshness"] for e in screens]
    assert 1 in fresh and fresh[-1] == 2  # stale, then NO DATA: never quiet
    nodata = [e for e in screens if e["freshness"] == 2]
    assert nodata[0]["alarm"].startswith("NO DATA") and nodata[0]["sounding"] == "no_data"
    assert end["screens"] == len(screens) and end["beeps"] > 0
    assert _png_size(out / "current.png") == (296, 128)
    assert (out / "current.png").read_bytes() == (out / screens[-1]["file"]).read_bytes()


def test_emulate__cli_replay_battery(tmp_path):
    cgm = tmp_path / "cgm.csv"
    rows = ["time,epoch_ms,sgv_mgdl,bg_true_mgdl,error_code"]
    t0 = 1768516200000
    for i in range(48):  # 4 hours, a low in the middle
        v = 120 - 3 * i if i < 20 else 60 + 4 * (i - 20)
        rows.append(f"x,{t0 + 300000 * i},{v},{v},")
    cgm.write_text("\n".join(rows) + "\n")
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    r = CliRunner().invoke(main, ["device", "emulate", "--config", str(cfg), "--out",
                                  str(tmp_path / "s"), "--replay", str(cgm), "--battery",
                                  "--quiet"])
    assert r.exit_code == 0, r.output
    end = json.loads(r.stdout.strip().splitlines()[-1])
    b = end["battery"]
    assert b["battery_mah"] == 2000 and b["wake_s"] == 300
    assert 0.3 < b["average_ua"] / 1000 < 5 and 15 < b["days"] < 300
    assert "days on 2000 mAh" in r.stderr
    assert end["screens"] >= 40  # one wake (and refresh) per reading


def test_emulate__bad_input(tmp_path):
    r = CliRunner().invoke(main, ["device", "emulate", "--config", str(tmp_path / "no.json")])
    assert r.exit_code == 2 and "does not exist" in r.output
    cfg = tmp_path / "config.json"
    for text, says in (("{}", "The clock configuration is not valid: "), ("[]", "not a JSON "
                       "object"), ("\xff{", "is not JSON")):
        cfg.write_text(text, encoding="latin-1")  # as `device build` refuses them
        r = CliRunner().invoke(main, ["device", "emulate", "--config", str(cfg)])
        assert r.exit_code == 2 and says in r.output, r.output
    cfg.write_text(json.dumps(CONFIG))
    for args, says in ((["--broker", "x"], "HOST:PORT"), (["--broker", "h:abc"], "HOST:PORT"),
                       (["--speed", "nan"], "--speed must be"),
                       (["--minutes", "-5"], "--minutes must be")):
        r = CliRunner().invoke(main, ["device", "emulate", "--config", str(cfg), *args])
        assert r.exit_code == 2 and says in r.output, (args, r.output)
    # A replay or summary that is not what the emulator reads is one sentence, before it runs.
    bad = tmp_path / "bad.csv"
    for text, says in (("hello\nworld\n", "needs the columns epoch_ms and sgv_mgdl"),
                       ("epoch_ms,sgv_mgdl,error_code\n", "holds no readings"),
                       ("epoch_ms,sgv_mgdl,error_code\n1768510800000,abc,\n", "row 2"),
                       ("\xff\xfe", "cannot be read")):
        bad.write_text(text, encoding="latin-1")
        r = CliRunner().invoke(main, ["device", "emulate", "--config", str(cfg), "--replay",
                                      str(bad)])
        assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output, r.output
    bad.write_text("[1, 2]")
    r = CliRunner().invoke(main, ["device", "emulate", "--config", str(cfg), "--summary",
                                  str(bad)])
    assert r.exit_code == 2 and "not a JSON object" in r.output, r.output


@pytest.mark.parametrize("kind", ["glucose", "night", "time"])
def test_clock_feed_topic__not_bridged_nor_ingested(kind):
    t = topics.clock_feed_topic("smith", "edge-1", kind)
    assert t == f"nl/v1/smith/edge-1/clock/{kind}"
    with pytest.raises(topics.TopicError):
        topics.parse(t)  # the ingest and the clock link drop it; the bridge pattern +/+ skips it
    assert mqtt.topic_matches_sub(topics.clock_feed_filter("smith"), t)
    assert not mqtt.topic_matches_sub("nl/v1/smith/+/+", t)
    assert not mqtt.topic_matches_sub(topics.INGEST_FILTER, t)


def test_emulator_runner_exists():
    assert emulate.RUNNER.is_file() and emulate.RUNNER.parent.name == "hostport"


def test_emulate__an_image_without_the_device_tools_extra_says_so(tmp_path, monkeypatch):
    import sys

    image = tmp_path / "fs-esp32.img"
    image.write_bytes(b"\x03\x00\x00\x00littlefs" + bytes(4096))
    monkeypatch.setitem(sys.modules, "littlefs", None)  # an install with the edge extra only
    r = CliRunner().invoke(main, ["device", "emulate", "--config", str(image)])
    assert r.exit_code == 2 and "device-tools extra" in r.output, r.output
