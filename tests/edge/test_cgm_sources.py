"""CGM: Nightscout entries, a follower of a real local server (sources/cgm.py), Clarity and
LibreView CSVs (importers/cgm_csv.py)."""

import math
import re
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nightlink.edge.importers import cgm_csv
from nightlink.edge.node import nightscout_site
from nightlink.edge.sources import cgm
from nightlink.edge.sources.samples import Glucose, SourceError
from nightlink.shared.apisecret import api_secret_hash
from tests.support.servers import serve

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "follow-me-secret-2026"
MIN = 60_000


def ts(text: str, tz: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


# -- entries <-> Glucose --------------------------------------------------------------------------


def test_entry_to_glucose__xdrip_entry():
    e = {"type": "sgv", "date": 1_763_600_000_123, "sgv": 123, "direction": "FortyFiveDown",
         "device": "xDrip-DexcomG6"}
    assert cgm.entry_to_glucose(e) == Glucose(t=1_763_600_000.123, sgv=123,
                                             direction="FortyFiveDown", source="xDrip-DexcomG6")


@pytest.mark.parametrize("sgv", [0, 5, 10, 38])
def test_entry_to_glucose__error_code_never_glucose(sgv):
    g = cgm.entry_to_glucose({"type": "sgv", "date": 1_763_600_000_000, "sgv": sgv})
    assert g.sgv is None and g.error_code == sgv


def test_entry_to_glucose__39_is_low_glucose():
    g = cgm.entry_to_glucose({"type": "sgv", "date": 1_763_600_000_000, "sgv": 39})
    assert g.sgv == 39 and g.error_code is None


@pytest.mark.parametrize(("entry", "says"), [
    ({"type": "mbg", "date": 1, "mbg": 90}, "not an sgv entry"),
    ({"type": "sgv", "sgv": 90}, "no date"),
    ({"type": "sgv", "date": 1_763_600_000_000, "sgv": "ninety"}, "must be a number"),
    ({"type": "sgv", "date": 1_763_600_000_000, "sgv": 3.1}, "looks like mmol/L"),
    ({"type": "sgv", "date": 1_763_600_000_000, "sgv": 4000}, "not a glucose value"),
    ({"type": "sgv", "date": 1_763_600_000_000, "sgv": -5}, "not a glucose value"),
    ({"type": "sgv", "date": 1_763_600_000_000, "sgv": float("inf")}, "must be a number"),
    ({"type": "sgv", "date": 1_763_600_000, "sgv": 90}, "before 2000 (seconds, not ms?)"),
    ({"type": "sgv", "date": "yesterday", "sgv": 90}, "not an ISO 8601 time"),
])
def test_entry_to_glucose__not_a_reading_raises(entry, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        cgm.entry_to_glucose(entry)


@pytest.mark.parametrize("entry", [
    {"sgv": "90", "date": "1763600000000"},  # text, as some uploaders send (Nightscout reads it)
    {"type": "sgv", "sgv": 90, "dateString": "2025-11-20T00:53:20.000Z"},
    {"type": "sgv", "sgv": 89.6, "sysTime": "2025-11-20T01:53:20+01:00"},
])
def test_entry_to_glucose__the_forms_nightscout_accepts(entry):
    g = cgm.entry_to_glucose(entry)
    assert (g.t, g.sgv) == (1_763_600_000.0, 90)


def test_glucose_to_entry__fields():
    g = Glucose(t=1_763_600_000.5, sgv=101, direction="Flat", source="x")
    assert cgm.glucose_to_entry(g, "nightlink-edge") == {
        "type": "sgv", "date": 1_763_600_000_500, "dateString": "2025-11-20T00:53:20.500Z",
        "sgv": 101, "device": "nightlink-edge", "direction": "Flat"}


def test_glucose_to_entry__error_code_and_empty():
    assert cgm.glucose_to_entry(Glucose(t=1e9, sgv=None, error_code=9), "d")["sgv"] == 9
    with pytest.raises(ValueError):
        cgm.glucose_to_entry(Glucose(t=1e9, sgv=None), "d")


@given(t_ms=st.integers(946_684_800_000, 4_102_444_800_000),
       value=st.integers(0, 1000),
       direction=st.sampled_from([None, "Flat", "DoubleUp", "NOT COMPUTABLE"]))
def test_entry_glucose__round_trip(t_ms, value, direction):
    g = cgm.entry_to_glucose({"type": "sgv", "date": t_ms, "sgv": value, "direction": direction,
                             "device": "dev"})
    e = cgm.glucose_to_entry(g, "dev")
    assert e["date"] == t_ms and e["sgv"] == value and e.get("direction") == direction
    assert cgm.entry_to_glucose(e) == g


def test_readings_from_store__oldest_first_since(store):
    t0 = 1_763_600_000_000
    store.add_entries([{"type": "sgv", "date": t0 + i * 5 * MIN, "sgv": 100 + i}
                       for i in (3, 1, 0, 2)] + [{"type": "mbg", "date": t0, "mbg": 90},
                                                 {"type": "sgv", "date": t0 + 20 * MIN, "sgv": 3}])
    got = cgm.readings_from_store(store, t0 + 5 * MIN)
    assert [(g.t, g.sgv, g.error_code) for g in got] == [
        ((t0 + 5 * MIN) / 1000, 101, None), ((t0 + 10 * MIN) / 1000, 102, None),
        ((t0 + 15 * MIN) / 1000, 103, None), ((t0 + 20 * MIN) / 1000, None, 3)]


# -- following a real local Nightscout server ---------------------------------------------------


def upload(url: str, entries: list[dict]) -> None:
    r = httpx.post(url + "/api/v1/entries", json=entries,
                   headers={"api-secret": api_secret_hash(SECRET)})
    assert r.status_code == 200, r.text


def sgvs(t0: int, n: int, start: int = 0) -> list[dict]:
    return [{"type": "sgv", "date": t0 + i * 5 * MIN, "sgv": 80 + i % 200, "direction": "Flat",
             "device": "xDrip-LibreReceiver"} for i in range(start, start + n)]


@pytest.fixture
def server(store):
    with serve(nightscout_site.create_app(store, SECRET)) as url:
        yield url


def test_follower__polls_new_readings_only(server):
    t0 = int(time.time() * 1000) - 10 * 5 * MIN
    upload(server, sgvs(t0, 5))
    with cgm.NightscoutFollower(server, api_secret=SECRET) as f:
        first = f.poll()
        assert [g.sgv for g in first] == [80, 81, 82, 83, 84]  # oldest first
        assert first[0].t == t0 / 1000 and first[0].source == "xDrip-LibreReceiver"
        assert f.last_ms == t0 + 4 * 5 * MIN
        assert f.poll() == []
        upload(server, sgvs(t0, 3, start=5) + [{"type": "sgv", "date": t0 + 8 * 5 * MIN,
                                                 "sgv": 2}])
        second = f.poll()
    assert [(g.sgv, g.error_code) for g in second] == [(85, None), (86, None), (87, None),
                                                       (None, 2)]


def test_follower__pages_back_after_a_long_outage(server):
    t0 = int(time.time() * 1000) - 700 * 5 * MIN
    upload(server, sgvs(t0, 1))
    with cgm.NightscoutFollower(server, api_secret=SECRET) as f:
        assert len(f.poll()) == 1
        upload(server, sgvs(t0, 650, start=1))  # more than two pages of 288
        got = f.poll()
    assert len(got) == 650
    assert [g.t for g in got] == sorted(g.t for g in got)
    assert got[0].t == (t0 + 5 * MIN) / 1000


def test_follower__read_token(server):
    upload(server, sgvs(int(time.time() * 1000) - 10 * MIN, 2))
    with cgm.NightscoutFollower(server, token=nightscout_site.access_token(SECRET)) as f:
        assert len(f.poll()) == 2


@pytest.mark.parametrize("kw", [{}, {"api_secret": "wrong-secret-value"}, {"token": "edge-x"}])
def test_follower__refused_credentials_source_error(server, kw):
    with cgm.NightscoutFollower(server, **kw) as f, pytest.raises(SourceError) as err:
        f.poll()
    assert str(err.value) == f"Nightscout at {server} refused the API secret or token (HTTP 401)."


def test_follower__non_200_names_status(server):
    with cgm.NightscoutFollower(server + "/elsewhere", api_secret=SECRET) as f, \
            pytest.raises(SourceError, match=r"answered HTTP 404 to /api/v1/entries/sgv.json\.$"):
        f.poll()


def test_follower__unreachable_source_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{port}"
        with cgm.NightscoutFollower(url, api_secret=SECRET, timeout_s=2) as f, \
                pytest.raises(SourceError, match=rf"^Nightscout at {url} could not be reached"):
            f.poll()


def test_follower__uses_given_client_and_query(store):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    client = httpx.Client(transport=httpx.MockTransport(handler))
    f = cgm.NightscoutFollower("http://nightscout_site.example/", api_secret=SECRET, client=client,
                              since_ms=1_763_600_000_000)
    assert f.poll() == []
    (req,) = seen
    assert req.url.path == "/api/v1/entries/sgv.json"
    assert req.url.params["find[date][$gt]"] == "1763600000000"
    assert req.url.params["count"] == "288"
    assert req.headers["api-secret"] == api_secret_hash(SECRET)


def _site(pages, seen=None, **response):
    """A client whose site answers every GET with the next of `pages` (the last repeats)."""
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        body = pages[min(len(seen or [None]) - 1, len(pages) - 1)] if seen is not None \
            else pages[-1]
        if isinstance(body, httpx.Response):
            return body
        return httpx.Response(200, json=body, **response)
    return httpx.Client(transport=httpx.MockTransport(handler))


def _entries(t0_ms, n, step=5 * MIN, sgv=100):
    return [{"type": "sgv", "date": t0_ms + i * step, "sgv": sgv + i} for i in range(n)]


def test_follower__an_entry_dated_ahead_of_the_clock_does_not_hold_the_follower():
    """A phone with a wrong clock uploads a reading dated 2 hours ahead: it is refused, and
    the lows that come next are still fetched (the follower used to ask only for entries
    after that time, and the clock's alarm went quiet)."""
    now = 1_763_600_000.0
    t = int(now * 1000)
    seen = []
    client = _site([[{"type": "sgv", "date": t + 2 * 3600_000, "sgv": 130}],
                    _entries(t + 5 * MIN, 2, sgv=52)], seen)
    f = cgm.NightscoutFollower("https://ns.example", client=client, since_ms=t - MIN,
                               clock=lambda: now)
    assert f.poll() == [] and f.future == 1 and f.last_ms == t - MIN
    now += 600
    got = f.poll()
    assert [g.sgv for g in got] == [52, 53]
    assert seen[1].url.params["find[date][$gt]"] == str(t - MIN)


def _honest_site(entries, seen):
    """A site that answers as cgm-remote-monitor does: find[date][$gt]/[$lt] and count
    honoured, newest first."""
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        p = request.url.params
        gt, lt = int(p.get("find[date][$gt]", -1)), int(p.get("find[date][$lt]", 10**15))
        got = sorted((e for e in entries if gt < e["date"] < lt), key=lambda e: -e["date"])
        return httpx.Response(200, json=got[: int(p["count"])])
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_follower__a_day_of_entries_dated_ahead_does_not_hide_the_real_ones():
    """A phone a day ahead uploaded 300 readings: a site that honours find is asked for none
    of them, and the real fall below is fetched."""
    now = 1_763_600_000.0
    t = int(now * 1000)
    wrong = _entries(t + 86_400_000, 300)
    real = _entries(t - 12 * 5 * MIN, 12, sgv=49)
    seen = []
    f = cgm.NightscoutFollower("https://ns.example", client=_honest_site(wrong + real, seen),
                               since_ms=t - 13 * 5 * MIN, clock=lambda: now)
    got = f.poll()
    assert [g.sgv for g in got] == list(range(49, 61)) and f.future == 0
    assert int(seen[0].url.params["find[date][$lt]"]) == t + 300_001


def test_follower__a_site_that_ignores_find_is_asked_once_per_poll():
    """xDrip+'s web service answers the newest `count` entries whatever `find` says: the
    follower keeps the new ones and stops paging when a page brings nothing new."""
    t = int(time.time() * 1000) - 300 * 5 * MIN
    day = _entries(t, 288)[::-1]  # newest first, as the site sends them
    seen = []
    f = cgm.NightscoutFollower("http://127.0.0.1:17580", client=_site([day], seen))
    assert len(f.poll()) == 288 and len(seen) == 2  # a full page: one more to check
    seen.clear()
    assert f.poll() == [] and len(seen) == 1
    seen.clear()  # the phone's clock now a day fast: its newest are all ahead, still one ask
    ahead = cgm.NightscoutFollower("http://127.0.0.1:17580", client=_site(
        [_entries(int(time.time() * 1000) + 86_400_000, 288)[::-1]], seen))
    assert ahead.poll() == [] and len(seen) <= 2


@pytest.mark.parametrize(("url", "base", "secret", "token"), [
    ("https://my-secret-1234@ns.example/api/v1/", "https://ns.example", "my-secret-1234", None),
    ("https://ns.example/?token=reader-abc123", "https://ns.example", None, "reader-abc123"),
    ("https://host.example/t/fam-1/api/v1/entries", "https://host.example/t/fam-1", None, None),
    ("http://192.168.1.20:1337/", "http://192.168.1.20:1337", None, None),
    ("https://ab/cd+ef1234@ns.example/", "https://ns.example", "ab/cd+ef1234", None),
    ("https://me:s3cret-value@ns.example", "https://ns.example", "s3cret-value", None),
    ("https://me:p%40ss%2Fw0rd@ns.example", "https://ns.example", "p@ss/w0rd", None),
    ("https://ns.example/api/v1?token=ab@cd", "https://ns.example", None, "ab@cd"),
    ("http://S3CRET-1234@[fe80::1%25wlan0]:1337/", "http://[fe80::1%25wlan0]:1337",
     "S3CRET-1234", None),
    ("https://ns.example/API/V1/entries.json?token=t-1", "https://ns.example", None, "t-1"),
])
def test_follower__urls_as_people_copy_them(url, base, secret, token):
    seen = []
    f = cgm.NightscoutFollower(url, client=_site([[]], seen))
    assert f.url == base and "secret" not in f.url and "token" not in f.url
    f.poll()
    assert str(seen[0].url).startswith(base + "/api/v1/entries/sgv.json?")
    assert seen[0].headers.get("api-secret") == (api_secret_hash(secret) if secret else None)
    assert seen[0].url.params.get("token") == token
    assert "authorization" not in seen[0].headers


def test_follower__http_redirected_to_https_on_the_same_host_is_followed():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            return httpx.Response(307, headers={"Location": "https://ns.example/api/v1/x"})
        return httpx.Response(200, json=_entries(int(time.time() * 1000) - 10 * MIN, 2))

    f = cgm.NightscoutFollower("http://ns.example", api_secret=SECRET,
                               client=httpx.Client(transport=httpx.MockTransport(handler)))
    assert len(f.poll()) == 2 and f.url == "https://ns.example"


def test_follower__a_redirect_elsewhere_is_said_not_followed():
    client = _site([httpx.Response(302, headers={"Location": "https://evil.example/x?t=1"})])
    f = cgm.NightscoutFollower("https://ns.example", api_secret=SECRET, client=client)
    with pytest.raises(SourceError, match=r"moved to https://evil.example/x \(HTTP 302\); use"):
        f.poll()


@pytest.mark.parametrize(("reply", "says", "after"), [
    (httpx.Response(403, text="Authentication failed - check api-secret"),
     "refused the API secret or token (HTTP 403)", None),
    (httpx.Response(429, headers={"Retry-After": "120"}), "answered HTTP 429", 120.0),
    (httpx.Response(200, content=b"[" + b"{}," * 3_000_000 + b"{}]"), "sent more than 8 MB",
     None),
])
def test_follower__refusals_are_one_sentence_with_the_wait_asked_for(reply, says, after):
    f = cgm.NightscoutFollower("https://ns.example", client=_site([reply]))
    with pytest.raises(SourceError, match=re.escape(says)) as err:
        f.poll()
    assert err.value.retry_after_s == after


def test_follower__a_slow_site_is_said_to_be_slow():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    f = cgm.NightscoutFollower("https://ns.example", timeout_s=4,
                               client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(SourceError, match=r"did not answer within 4 s \(ReadTimeout\)"):
        f.poll()


# -- Dexcom Clarity -------------------------------------------------------------------------------


def test_clarity__mgdl_export():
    got = cgm_csv.read_dexcom_clarity_csv(FIXTURES / "clarity_mgdl.csv", tz="America/New_York")
    assert len(got) == 38 and got.skipped == 2
    assert got.skipped_lines == [52, 53]
    assert got[0] == Glucose(t=ts("2026-11-19T22:00:13", "America/New_York"), sgv=142,
                             source="dexcom-clarity")
    assert got[0].t == ts("2026-11-20T03:00:13")
    assert got[1].direction == "Flat"  # -0.4 mg/dL/min
    assert [g.t for g in got] == sorted(g.t for g in got)
    values = [g.sgv for g in got]
    assert values.count(cgm_csv.CLARITY_LOW_SGV) == 2 and cgm_csv.CLARITY_LOW_SGV == 39
    assert values.count(cgm_csv.CLARITY_HIGH_SGV) == 2 and cgm_csv.CLARITY_HIGH_SGV == 401
    assert all(g.error_code is None for g in got)
    assert 79 not in values  # the calibration row is not a reading


def test_clarity__mmol_export_across_dst_start():
    got = cgm_csv.read_dexcom_clarity_csv(FIXTURES / "clarity_mmol.csv", tz="Europe/Amsterdam")
    assert [g.sgv for g in got] == [101, 97, 39, 56, 216, 401]
    assert got.skipped == 1
    assert got[0].t == ts("2026-03-29T00:50:00")  # 01:50 CET
    assert [g.t for g in got] == sorted(g.t for g in got)


def test_clarity__default_tz_utc():
    got = cgm_csv.read_dexcom_clarity_csv(FIXTURES / "clarity_mgdl.csv")
    assert got[0].t == ts("2026-11-19T22:00:13")


@pytest.mark.parametrize("name", ["not_an_export.csv", "libreview_mgdl.csv"])
def test_clarity__not_an_export_source_error(name):
    path = FIXTURES / name
    with pytest.raises(SourceError) as err:
        cgm_csv.read_dexcom_clarity_csv(path)
    msg = str(err.value)
    assert msg.startswith(f"{path} is not a Dexcom Clarity export: ") and msg.endswith(".")
    assert msg.count(". ") == 0


def test_clarity__missing_file_and_bad_zone(tmp_path):
    with pytest.raises(SourceError, match="cannot be read"):
        cgm_csv.read_dexcom_clarity_csv(tmp_path / "nope.csv")
    with pytest.raises(SourceError, match="is not a known time zone"):
        cgm_csv.read_dexcom_clarity_csv(FIXTURES / "clarity_mgdl.csv", tz="Mars/Olympus")


def test_clarity__empty_file(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SourceError, match="is not a Dexcom Clarity export"):
        cgm_csv.read_dexcom_clarity_csv(tmp_path / "empty.csv")


# -- LibreView ------------------------------------------------------------------------------------


def test_libreview__mgdl_export():
    got = cgm_csv.read_libreview_csv(FIXTURES / "libreview_mgdl.csv", tz="America/Chicago")
    assert len(got) == 26 and got.skipped == 2
    assert got[0] == Glucose(t=ts("2026-11-19T23:00", "America/Chicago"), sgv=118,
                             source="libreview")
    scans = [g for g in got if (g.t - got[0].t) % 900]
    assert [(g.t - got[0].t, g.sgv) for g in scans] == [(82 * 60, 86), (187 * 60, 70)]
    assert [g.t for g in got] == sorted(g.t for g in got)
    assert min(g.sgv for g in got) == 64


def test_libreview__mmol_day_first_detected():
    got = cgm_csv.read_libreview_csv(FIXTURES / "libreview_mmol.csv", tz="Europe/Amsterdam")
    assert [g.sgv for g in got] == [117, 110, 104, 70, 63]
    assert got[0].t == ts("2026-11-19T22:00:00")


def test_libreview__day_first_override(tmp_path):
    p = tmp_path / "lv.csv"
    p.write_text("Glucose Data,Generated on,01-02-2026 09:14 UTC,Generated by,X\n"
                 "Device,Serial Number,Device Timestamp,Record Type,Historic Glucose mg/dL,"
                 "Scan Glucose mg/dL\nLibre,1,01-02-2026 03:00,0,100,\n")
    assert cgm_csv.read_libreview_csv(p)[0].t == ts("2026-01-02T03:00")
    assert cgm_csv.read_libreview_csv(p, day_first=True)[0].t == ts("2026-02-01T03:00")


def test_libreview__not_an_export_source_error():
    path = FIXTURES / "clarity_mgdl.csv"
    with pytest.raises(SourceError) as err:
        cgm_csv.read_libreview_csv(path)
    assert str(err.value).startswith(f"{path} is not a LibreView export: ")


def test_imports__feed_the_nightscout_store(store):
    """Imported readings become entries the local endpoint serves, with sensor limits kept."""
    got = cgm_csv.read_dexcom_clarity_csv(FIXTURES / "clarity_mgdl.csv")
    stored, dupes = store.add_entries(cgm.glucose_to_entry(g, "dexcom-clarity") for g in got)
    assert (stored, dupes) == (38, 0)
    back = cgm.readings_from_store(store, 0)
    assert [g.sgv for g in back] == [g.sgv for g in got]
    assert datetime.fromtimestamp(back[0].t, tz=UTC).isoformat() == "2026-11-19T22:00:13+00:00"


def test_readings_between__entries_that_are_no_reading_are_passed_once(store):
    """An uploader sending mmol/L as sgv (5.5): stored (as Nightscout stores it), not a
    reading; the mark goes past it so the live node does not read it again every pass."""
    t = 1_763_600_000_000
    store.add_entries([{"type": "sgv", "date": t, "sgv": 120},
                       {"type": "sgv", "date": t + 5 * MIN, "sgv": 5.5},
                       {"type": "sgv", "date": t + 10 * MIN + 86_400_000, "sgv": 99}])
    got, newest = cgm.readings_between(store, t, t + 3_600_000)
    assert [g.sgv for g in got] == [120] and newest == t + 5 * MIN  # the one ahead waits


def test_uploader_check__two_peoples_phones_on_one_site_are_said_once_an_hour():
    from nightlink.edge.sources.cgm import UploaderCheck

    check, said = UploaderCheck(), []
    t = 1_768_510_800.0
    for k in range(6):  # Alex's xDrip+ and Bea's Juggluco, every 5 minutes, far apart
        for g in (Glucose(t + 300 * k, 141 + k, source="xdrip-alex"),
                  Glucose(t + 300 * k + 12, 62, source="juggluco-bea")):
            said.append(check.add(g, g.t))
    warnings = [s for s in said if s]
    assert len(warnings) == 1 and said.index(warnings[0]) == 3  # the third disagreement
    assert "'xdrip-alex' 142 and 'juggluco-bea' 62 mg/dL 0 min apart" in warnings[0]
    assert "each person needs an edge and a tenant of their own" in warnings[0]
    assert not check.quiet(t + 1800) and check.quiet(t + 1500 + 12 + 3600)


def test_uploader_check__two_apps_on_one_sensor_and_one_phone_are_not_said():
    from nightlink.edge.sources.cgm import UploaderCheck

    check = UploaderCheck()
    t = 1_768_510_800.0
    said = []
    for k in range(24):  # xDrip+ calibrated 30 mg/dL above Juggluco, and a fast fall
        v = 250 - 8 * k
        said.append(check.add(Glucose(t + 300 * k, v + 30, source="xdrip"), t + 300 * k))
        said.append(check.add(Glucose(t + 300 * k + 40, v, source="juggluco"), t + 300 * k))
    one = UploaderCheck()
    said += [one.add(Glucose(t + 300 * k, 120 + 60 * math.sin(k / 3), source="xdrip"),
                     t + 300 * k) for k in range(24)]
    assert not any(said)


@pytest.mark.parametrize("jitter", [0.0, 5.0])
def test_late_readings__a_one_minute_sensors_neighbours_are_not_taken_for_copies(tmp_path,
                                                                                  jitter):
    """Two readings of a 1-minute sensor (Libre 3) arrive after their epochs closed, their
    times a few seconds off the minute (dated when the phone got them): both get records. A
    record dates its reading to the half minute, which made a neighbour 55 s away look like
    the same reading."""
    import random

    from nightlink.edge.features.pipeline import EdgePipeline
    from nightlink.edge.store import EdgeStore
    from nightlink.shared import features
    from nightlink.shared.epoch import epoch_index

    missed = 0
    for seed in range(40):
        rng = random.Random(seed)
        store = EdgeStore(tmp_path / f"edge-{seed}.db")
        t0 = 1_767_000_000 + rng.uniform(0, 30)
        ts = [t0 + 60 * i + (rng.uniform(-jitter, jitter) if i else 0) for i in range(20)]
        p = EdgePipeline(store, epoch_index(t0), audio=False, streams=(features.CGM,))
        for i in (i for i in range(20) if i not in (10, 11)):
            while p.epoch < epoch_index(ts[i]):
                p.close(p.epoch)
            p.add(Glucose(t=ts[i], sgv=100 + i))
        while p.epoch <= epoch_index(ts[-1]) + 1:
            p.close(p.epoch)
        missed += 2 - p.add_late([Glucose(t=ts[i], sgv=100 + i) for i in (10, 11)])
        store.close()
    assert missed == 0


@pytest.mark.parametrize("device", ["xDrip-DexcomG5", "nightscout"])
def test_uploader_check__two_phones_with_one_app_name_are_said_too(device):
    """The same app on both children's phones sends the same device name (or none): their
    readings interleave under one uploader, 60 and 180 mg/dL two minutes apart."""
    from nightlink.edge.sources.cgm import UploaderCheck

    check = UploaderCheck()
    t = 1_768_510_800.0
    said = [check.add(Glucose(t + 120 * k, 60 if k % 2 else 180, source=device), t + 120 * k)
            for k in range(30)]
    warnings = [s for s in said if s]
    assert len(warnings) == 1 and f"{device!r} (twice)" in warnings[0]


def test_uploader_check__one_persons_fast_fall_and_a_calibration_are_not_said():
    from nightlink.edge.sources.cgm import UploaderCheck

    check = UploaderCheck()
    t = 1_768_510_800.0
    values = [250 - 9 * k for k in range(20)] + [70, 120, 121, 122]  # a calibration's step
    said = [check.add(Glucose(t + 300 * k, v, source="xdrip"), t + 300 * k)
            for k, v in enumerate(values)]
    assert not any(said)
