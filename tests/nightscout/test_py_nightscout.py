"""py-nightscout, the library Home Assistant's Nightscout integration uses (PyPI
`py-nightscout`, the real package, over aiohttp), against the cloud and the edge.

It appends absolute paths to the URL (so the cloud tenant's /t/{tenant} URL works), sends the
api-secret header as the SHA-1 of what the user typed, or verbatim when that starts with
`token=` (1.3.3), requires `Content-Type: application/json` replies, reads status.settings
(Home Assistant reads authDefaultRoles), and with 1.3.3 needs a numeric `delta` on every sgv.
"""

import asyncio
from datetime import UTC, datetime

import pytest
from aiohttp import ClientResponseError
from py_nightscout import Api

from tests.nightscout_uploads import xdrip_entry
from tests.support.nightscout import MIN, SECRET, SECRET_SHA1, iso, now_ms


def seed(ns) -> int:
    t = now_ms() - 20 * MIN
    h = {"api-secret": SECRET_SHA1}
    ns.post("/api/v1/entries", headers=h,
            json=[xdrip_entry(t + i * 5 * MIN, 120 + i) for i in range(4)])
    ns.post("/api/v1/treatments", headers=h, json=[
        {"eventType": "Meal Bolus", "carbs": 30, "insulin": 3.5, "created_at": iso(t),
         "enteredBy": "xdrip"}])
    ns.post("/api/v1/profile", headers=h, json={
        "defaultProfile": "Default", "startDate": iso(t), "units": "mg/dl",
        "store": {"Default": {"dia": 4, "timezone": "Europe/Berlin", "units": "mg/dl",
                              "carbratio": [{"time": "00:00", "value": 10}],
                              "sens": [{"time": "00:00", "value": 40}],
                              "basal": [{"time": "00:00", "value": 0.8}],
                              "target_low": [{"time": "00:00", "value": 90}],
                              "target_high": [{"time": "00:00", "value": 120}]}}})
    ns.post("/api/v1/devicestatus", headers=h,
            json={"device": "xDrip-phone", "created_at": iso(t), "uploader": {"battery": 80}})
    return t


@pytest.mark.parametrize("secret", ["plain", "token=", "token-sha1"])
def test_py_nightscout__everything_home_assistant_reads(ns, secret):
    t = seed(ns)
    key = {"plain": SECRET, "token=": f"token={ns.read_token}",
           "token-sha1": ns.read_token}[secret]  # HA's 1.2.2 sends sha1 of a pasted token

    async def run():
        api = Api(ns.site_url, api_secret=key)
        status = await api.get_server_status()
        sgvs = await api.get_sgvs()
        treatments = await api.get_treatments()
        profiles = await api.get_profiles()
        devices = await api.get_latest_devices_status()
        return status, sgvs, treatments, profiles, devices

    status, sgvs, treatments, profiles, devices = asyncio.run(run())
    assert status.status == "ok" and status.settings["authDefaultRoles"] == "denied"
    assert [s.sgv for s in sgvs] == [123, 122, 121, 120]  # newest first: HA shows [0]
    assert sgvs[0].delta == -1.5 and sgvs[0].direction == "Flat"
    assert treatments[0].carbs == 30 and treatments[0].eventType == "Meal Bolus"
    default = profiles.get_profile_definition_active_at(
        datetime.fromtimestamp(t / 1000 + 60, tz=UTC))
    assert default.defaultProfile == "Default"
    assert devices["xDrip-phone"].uploader.battery == 80


def test_py_nightscout__wrong_key_raises_client_response_error(ns):
    async def run():
        await Api(ns.site_url, api_secret="not-the-secret").get_sgvs()

    with pytest.raises(ClientResponseError) as info:
        asyncio.run(run())
    assert info.value.status == 401
