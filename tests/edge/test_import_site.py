"""`nightlink edge import https://SITE`: a Nightscout site's readings into a new edge store,
read from a real Nightlink cloud's tenant Nightscout (a read token in the URL, as a replaced
edge takes its history back) and from a real edge's Nightscout (the API secret before the
host, as xDrip+ writes it); a site that cannot answer for a while is asked again after a
back-off, one that refuses is not."""

import math
import time

import httpx
import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.edge.importers.importer import import_file
from nightlink.edge.importers.nightscout_site import TRIES, read_nightscout_site
from nightlink.edge.node import nightscout_site
from nightlink.edge.sources.samples import SourceError
from nightlink.edge.store import EdgeStore
from nightlink.shared import features
from nightlink.shared.apisecret import api_secret_hash
from tests.cloud.conftest import make_app
from tests.support.servers import serve

MIN = 60_000
SECRET = "a-long-enough-secret"
NOW = time.time()
T0 = int(NOW * 1000) // MIN * MIN - 3 * 86_400_000  # three days back, on a minute


def readings(n: int, start: int = 0, step_min: int = 5) -> list[dict]:
    return [{"type": "sgv", "date": T0 + i * step_min * MIN, "sgv": 70 + (i * 7) % 150,
             "direction": "Flat", "device": "xDrip-DexcomG6"} for i in range(start, start + n)]


@pytest.fixture
def cloud_site(tmp_path):
    """A real cloud on SQLite under uvicorn, tenant fam-1 holding three days of readings;
    yields (base URL, a read token of fam-1)."""
    app = make_app(f"sqlite:///{tmp_path / 'cloud.db'}")
    store = app.state.store
    store.create_tenant("fam-1", "Family one")
    _, writer = store.tenant("fam-1").subjects.create("phone", ["admin"])
    _, reader = store.tenant("fam-1").subjects.create("new-edge", ["readable"])
    with serve(app) as url:
        r = httpx.post(f"{url}/t/fam-1/api/v1/entries", params={"token": writer},
                       json=readings(3 * 288))
        assert r.status_code == 200, r.text
        yield url, reader
    store.close()


def test_import__a_cloud_tenants_readings_by_read_token(cloud_site, store):
    url, reader = cloud_site
    result = import_file(store, f"{url}/t/fam-1?token={reader}", now=NOW)
    assert result.label == "Nightscout site"
    assert result.samples == result.entries_stored == 3 * 288  # more than one page of 288
    assert result.skipped_rows == 0 and result.notes == []
    stored = store.entries(count=10_000, type_="sgv", ascending=True)
    assert [e["sgv"] for e in stored] == [e["sgv"] for e in readings(3 * 288)]
    assert [e["date"] for e in stored] == [e["date"] for e in readings(3 * 288)]
    assert store.count_records(features.CGM) == result.epochs_written > 3 * 288 * 10 - 10
    again = import_file(store, f"{url}/t/fam-1?token={reader}", now=NOW)
    assert again.entries_stored == 0 and again.entries_duplicate == 3 * 288
    assert again.epochs_written == 0


def test_import__a_replaced_edge_calibrates_its_alarm_on_the_nights_taken_back(tmp_path,
                                                                             store):
    """Eight nights in the cloud: the new edge's clocks get a threshold calibrated on them,
    not the model's own, which an edge without history keeps for 5 nights."""
    from nightlink.edge.sync.clock_feed import predicted_low_policy

    app = make_app(f"sqlite:///{tmp_path / 'cloud.db'}")
    app.state.store.create_tenant("fam-1", "Family one")
    _, writer = app.state.store.tenant("fam-1").subjects.create("phone", ["admin"])
    _, reader = app.state.store.tenant("fam-1").subjects.create("new-edge", ["readable"])
    start = T0 - 6 * 86_400_000
    week = [{"type": "sgv", "date": start + i * 5 * MIN, "device": "xDrip-DexcomG6",
             "sgv": round(130 + 60 * math.sin(i / 20) - (45 if i % 288 in range(60, 75) else 0))}
            for i in range(9 * 288 - 24)]
    with serve(app) as url:
        r = httpx.post(f"{url}/t/fam-1/api/v1/entries", params={"token": writer}, json=week)
        assert r.status_code == 200, r.text
        assert predicted_low_policy(store, NOW, utc_offset_s=0) is None  # nothing yet
        import_file(store, f"{url}/t/fam-1?token={reader}", since=start / 1000, now=NOW)
    app.state.store.close()
    assert predicted_low_policy(store, NOW, utc_offset_s=0)["calibrated"] is True


def test_import__since_bounds_what_is_asked_for(cloud_site, store):
    url, reader = cloud_site
    since = (T0 + 2 * 86_400_000) / 1000  # the last of the three days
    result = import_file(store, f"{url}/t/fam-1?token={reader}", since=since, now=NOW)
    assert result.samples == 288
    assert min(e["date"] for e in store.entries(count=1000, type_="sgv")) == since * 1000


def test_site__an_old_since_asks_only_for_one_imports_span():
    """--since two years back: entries after since + 120 days are not asked for (they used
    to be read, page by page, and dropped)."""
    asked = []

    def site(request):
        asked.append(dict(request.url.params))
        return httpx.Response(200, json=[])

    since = NOW - 730 * 86400
    with httpx.Client(transport=httpx.MockTransport(site)) as client, \
            pytest.raises(SourceError):
        read_nightscout_site("https://ns.example.org", since, NOW, until_s=since + 120 * 86400,
                             client=client)
    assert int(asked[0]["find[date][$lt]"]) == int((since + 120 * 86400) * 1000) + 1


def test_import__refused_token_stores_nothing_and_is_not_asked_again(cloud_site, store):
    url, _ = cloud_site
    said = []
    with pytest.raises(SourceError) as err:
        import_file(store, f"{url}/t/fam-1?token=nope-0123456789abcdef", now=NOW,
                    say=said.append)
    assert str(err.value) == (f"Nightscout at {url}/t/fam-1 refused the API secret or token "
                              "(HTTP 401).")
    assert said == []  # no retry for a refusal
    assert store.entries(count=10) == []


def test_import__another_edges_site_with_the_secret_before_the_host(tmp_path, store):
    old = EdgeStore(tmp_path / "old.db")
    with serve(nightscout_site.create_app(old, SECRET)) as url:
        one_minute = readings(600, step_min=1)  # Libre 3: 600 readings, three pages
        r = httpx.post(url + "/api/v1/entries", json=one_minute,
                       headers={"api-secret": api_secret_hash(SECRET)})
        assert r.status_code == 200, r.text
        with_secret = url.replace("http://", f"http://{SECRET}@") + "/api/v1/"
        result = import_file(store, with_secret, since=T0 / 1000, now=NOW)
    old.close()
    assert result.entries_stored == 600
    assert [e["date"] for e in store.entries(count=1000, type_="sgv", ascending=True)
            ] == [e["date"] for e in one_minute]


class FlakySite(httpx.BaseTransport):
    """A site whose first answers are an overloaded proxy's or a refused connection."""

    def __init__(self, failures: list):
        self.failures = failures
        self.asked = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.asked += 1
        if self.failures:
            fail = self.failures.pop(0)
            if isinstance(fail, Exception):
                raise fail
            return httpx.Response(fail, headers={"Retry-After": "7"} if fail == 429 else {},
                                  request=request)
        return httpx.Response(200, json=readings(3), request=request)


def test_site__an_overloaded_site_is_asked_again_after_a_growing_wait_with_jitter():
    site = FlakySite([503, httpx.ConnectError("Connection refused"), 429, 502])
    said, slept = [], []
    with httpx.Client(transport=site) as client:
        name, got = read_nightscout_site("https://ns.example.org/?token=t-0123456789abcdef",
                                         T0 / 1000, NOW, client=client, say=said.append,
                                         sleep=slept.append)
    assert name == "https://ns.example.org" and len(got) == 3 and site.asked == 5
    assert said[0] == ("Nightscout at https://ns.example.org answered HTTP 503 to "
                       "/api/v1/entries/sgv.json; asking again in "
                       f"{slept[0]:.0f} s (try 2 of {TRIES}).")
    assert "could not be reached (ConnectError: Connection refused)" in said[1]
    assert 1.0 <= slept[0] <= 2.0 and 2.0 <= slept[1] <= 4.0  # doubled, with jitter
    assert slept[2] == 7.0  # the wait the site asked for
    assert 4.0 <= slept[3] <= 16.0


def test_site__a_site_down_for_good_ends_in_one_sentence():
    site = FlakySite([503] * TRIES)
    slept = []
    with httpx.Client(transport=site) as client, pytest.raises(SourceError) as err:
        read_nightscout_site("https://ns.example.org", T0 / 1000, NOW, client=client,
                             say=lambda _: None, sleep=slept.append)
    assert str(err.value) == ("Nightscout at https://ns.example.org answered HTTP 503 to "
                              "/api/v1/entries/sgv.json.")
    assert site.asked == TRIES and len(slept) == TRIES - 1


def test_site__a_site_that_ignores_date_queries_is_said():
    """xDrip+'s web service answers every query with its newest entries."""
    newest = readings(288, start=500)
    with httpx.Client(transport=httpx.MockTransport(
            lambda r: httpx.Response(200, json=newest[::-1]))) as client:
        _, got = read_nightscout_site("http://127.0.0.1:17580", T0 / 1000, NOW, client=client)
    assert len(got) == 288
    assert got.notes == [
        "http://127.0.0.1:17580 sent only its newest 288 readings, back to "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(newest[0]['date'] / 1000))} UTC: it "
        "does not seem to take date queries (xDrip+'s web service does not), so the older "
        "part of the span was not imported."]


def test_site__no_readings_in_the_span_is_said():
    with httpx.Client(transport=httpx.MockTransport(
            lambda r: httpx.Response(200, json=[]))) as client, \
            pytest.raises(SourceError) as err:
        read_nightscout_site("https://ns.example.org", T0 / 1000, NOW, client=client)
    assert str(err.value).startswith("Nightscout at https://ns.example.org has no glucose "
                                     "readings from ")


def test_cli__import_from_a_site(cloud_site, tmp_path):
    url, reader = cloud_site
    db = tmp_path / "edge.db"
    r = CliRunner().invoke(main, ["edge", "import", f"{url}/t/fam-1?token={reader}",
                                  "--db", str(db), "--tz", "UTC"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith(f"Reading {url}/t/fam-1 from ")  # the token is not shown
    assert reader not in r.output
    assert lines[1].startswith(f"{url}/t/fam-1 (Nightscout site): 864 readings, 0 bad rows "
                               "skipped; ")
    assert "864 entries stored, 0 duplicates" in lines[1]


@pytest.mark.parametrize("source, says", [
    ("https://", "error: 'https:' is not an http:// or https:// URL.\n"),
    ("https://ns.invalid/?token=t", "error: Nightscout at https://ns.invalid could not be "
                                    "reached (ConnectError: "),
    ("http://127.0.0.1:9/", "Nightscout at http://127.0.0.1:9 could not be reached"),
])
def test_cli__a_bad_or_unreachable_site_is_one_sentence_exit_2(source, says, tmp_path,
                                                               monkeypatch):
    monkeypatch.setattr("nightlink.edge.importers.nightscout_site.TRIES", 1)
    r = CliRunner().invoke(main, ["edge", "import", source, "--db", str(tmp_path / "e.db")])
    assert r.exit_code == 2 and says in r.output, r.output


def test_cli__the_api_secret_from_the_environment(tmp_path):
    old = EdgeStore(tmp_path / "old.db")
    with serve(nightscout_site.create_app(old, SECRET)) as url:
        r = httpx.post(url + "/api/v1/entries", json=readings(12),
                       headers={"api-secret": api_secret_hash(SECRET)})
        assert r.status_code == 200, r.text
        args = ["edge", "import", url, "--db", str(tmp_path / "new.db"), "--tz", "UTC",
                "--since", time.strftime("%Y-%m-%d", time.gmtime(T0 / 1000))]
        refused = CliRunner().invoke(main, args)
        taken = CliRunner().invoke(main, args, env={"NIGHTSCOUT_API_SECRET": SECRET})
    old.close()
    assert refused.exit_code == 2 and "refused the API secret or token (HTTP 401)" in \
        refused.output
    assert taken.exit_code == 0, taken.output
    assert "12 entries stored" in taken.output and SECRET not in taken.output
