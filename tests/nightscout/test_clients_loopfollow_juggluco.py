"""LoopFollow and Juggluco, from their own source.

LoopFollow (loopandlearn/LoopFollow, LoopFollow/Helpers/NightscoutUtils.swift,
provisionReadOnlyToken): given the API secret it GETs /api/v2/authorization/subjects (header
`api-secret`: SHA-1 hex) and reuses the `accessToken` of a subject named "LoopFollow"; else it
POSTs {"name": "LoopFollow", "roles": ["readable"]}, takes `_id` from the reply (an object or
a one-item list) and makes the token itself as Nightscout does: "loopfollow-" + the first 16
hex of SHA-1(SHA-1 hex of the secret + _id). A token pasted in a URL is taken only if it
matches `^[^-\\s]+-[0-9a-fA-F]{16}$` (NightscoutSettingsViewModel.processURL).

Juggluco (j-kaltes/Juggluco, Common/src/main/cpp/net/watchserver/uploader.cpp and
uploadtreatment.cpp): in v1 mode every treatment is a PUT /api/v1/treatments with its own
24-hex `_id` and `"eventType": "<none>"`, so the insulin and the carbs of one meal arrive as two
treatments in the same second; a removed one is DELETE /api/v1/treatments/<_id>. Nightscout
keys both on `_id` (lib/server/treatments.js upsertQueryFor: identifier, else _id, else
created_at + eventType).
"""

import hashlib
import re
from datetime import UTC, datetime

from tests.support.nightscout import MIN, SECRET_SHA1, now_ms

LOOPFOLLOW_TOKEN = re.compile(r"^[^-\s]+-[0-9a-fA-F]{16}$")


def _loopfollow_token(subject_id: str) -> str:
    return "loopfollow-" + hashlib.sha1((SECRET_SHA1 + subject_id).encode()).hexdigest()[:16]


def test_loopfollow__provisions_a_read_token_from_the_api_secret(ns):
    h = {"api-secret": SECRET_SHA1, "Accept": "application/json"}
    before = ns.get("/api/v2/authorization/subjects", headers=h)
    assert before.status_code == 200
    assert not [s for s in before.json() if s["name"] == "LoopFollow"]
    r = ns.post("/api/v2/authorization/subjects", headers={"api-secret": SECRET_SHA1},
                json={"name": "LoopFollow", "roles": ["readable"]})
    assert r.status_code == 200
    created = r.json()[0] if isinstance(r.json(), list) else r.json()
    token = _loopfollow_token(created["_id"])  # what LoopFollow computes and then uses
    assert created["accessToken"] == token
    status = ns.get(f"/api/v1/status.json?token={token}")
    assert status.status_code == 200
    assert ["*:*:read"] in status.json()["authorized"]["permissionGroups"]
    assert ns.get(f"/api/v1/entries.json?count=1&token={token}").status_code == 200
    assert ns.post(f"/api/v1/treatments?token={token}",
                   json={"eventType": "Note", "notes": "x"}).status_code == 401  # read only
    # A later run finds it and reuses it, instead of making another subject each time.
    listed = [s for s in ns.get("/api/v2/authorization/subjects", headers=h).json()
              if s["name"] == "LoopFollow"]
    assert [s["accessToken"] for s in listed] == [token]


def test_tokens__nightscouts_shape_and_only_shown_to_the_secret_they_came_from(ns):
    random_token = ns.token("Grandma's phone", ["readable"])  # made by the site's own tools
    assert LOOPFOLLOW_TOKEN.match(random_token), random_token
    h = {"api-secret": SECRET_SHA1}
    subjects = ns.get("/api/v2/authorization/subjects", headers=h).json()
    grandma = [s for s in subjects if s["name"] == "Grandma's phone"]
    assert grandma and "accessToken" not in grandma[0]  # random: shown once, when made
    # A subject made with an admin token is random too (no secret to derive it from).
    admin = ns.token("admin tool", ["admin"])
    r = ns.post(f"/api/v2/authorization/subjects?token={admin}",
                json={"name": "Watch", "roles": ["readable"]})
    assert r.status_code == 200
    watch = r.json()
    assert watch["accessToken"] != "watch-" + hashlib.sha1(
        (SECRET_SHA1 + watch["_id"]).encode()).hexdigest()[:16]
    listed = ns.get(f"/api/v2/authorization/subjects?token={admin}").json()
    assert all("accessToken" not in s for s in listed)  # an admin token is not the secret


def _juggluco(_id: str, sec: int, **values) -> dict:
    created = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + ".000Z"
    return {"_id": _id, "date": sec * 1000, "eventType": "<none>", "enteredBy": "Juggluco",
            "created_at": created, "carbs": None, "insulin": None} | values


def test_juggluco__insulin_and_carbs_in_the_same_second_stay_two_treatments(ns):
    sec = now_ms() // 1000 - 10 * MIN // 1000
    insulin, carbs, note = ("ba0e12" + "b" * 18, "ba0e13" + "b" * 18, "ba0e14" + "b" * 18)
    h = {"api-secret": SECRET_SHA1}
    for body in (_juggluco(insulin, sec, insulin=4.5, notes="Rapid-Acting", insulinType="Fiasp"),
                 _juggluco(carbs, sec, carbs=30),
                 _juggluco(note, sec, notes="Walk 7")):
        r = ns.put("/api/v1/treatments", headers=h, json=body)
        assert r.status_code == 200, r.text
    got = {d["_id"]: d for d in ns.get("/api/v1/treatments.json?count=10", headers=h).json()}
    assert set(got) == {insulin, carbs, note}
    assert got[insulin]["insulin"] == 4.5 and got[carbs]["carbs"] == 30
    # Edited in Juggluco: the same _id again replaces that one only.
    ns.put("/api/v1/treatments", headers=h, json=_juggluco(insulin, sec, insulin=5.0))
    got = {d["_id"]: d for d in ns.get("/api/v1/treatments.json?count=10", headers=h).json()}
    assert got[insulin]["insulin"] == 5.0 and got[carbs]["carbs"] == 30 and len(got) == 3
    # Removed in Juggluco: deleted by its _id, the others stay.
    r = ns.delete(f"/api/v1/treatments/{carbs}", headers=h)
    assert r.status_code == 200
    left = {d["_id"] for d in ns.get("/api/v1/treatments.json?count=10", headers=h).json()}
    assert left == {insulin, note}


def test_treatments_without_an_id_in_the_same_second_still_merge_as_nightscout_does(ns):
    # An uploader that names nothing gets Nightscout's last resort: created_at + eventType.
    t = now_ms() - 20 * MIN
    h = {"api-secret": SECRET_SHA1}
    for grams in (20, 25):
        ns.post("/api/v1/treatments", headers=h,
                json={"eventType": "Meal Bolus", "created_at": t, "carbs": grams})
    meals = [d for d in ns.get("/api/v1/treatments.json?count=10", headers=h).json()
             if d["eventType"] == "Meal Bolus"]
    assert [d["carbs"] for d in meals] == [25]


def test_a_copy_that_names_nothing_still_merges_into_a_named_treatment(ns):
    """The app's _id is the treatment's identity, and its created_at + eventType still pairs
    up: the same meal sent again without an id (another uploader, a socket dbAdd) updates it
    rather than counting the carbs twice, as Nightscout's upsert does."""
    sec = now_ms() // 1000 - 30 * MIN // 1000
    h = {"api-secret": SECRET_SHA1}
    named = _juggluco("ba0e15" + "b" * 18, sec, eventType="Carb Correction", carbs=20)
    assert ns.put("/api/v1/treatments", headers=h, json=named).status_code == 200
    copy = {k: v for k, v in named.items() if k != "_id"} | {"carbs": 25}
    assert ns.post("/api/v1/treatments", headers=h, json=copy).status_code == 200
    meals = [d for d in ns.get("/api/v1/treatments.json?count=10", headers=h).json()
             if d["eventType"] == "Carb Correction"]
    assert [(d["_id"], d["carbs"]) for d in meals] == [(named["_id"], 25)]
