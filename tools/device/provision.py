"""`nightlink device provision`: register a clock with the cloud and bake its identity in.

Signs in to the cloud API (`/api/nl/v1/auth/login`), registers a new device id
(`POST /api/nl/v1/tenants/{tenant}/devices`), and writes the returned MQTT account into the
clock's `/config.json` inside a freshly built filesystem image. The broker password exists
only in that image: it is never printed, logged or written anywhere else.

Given the edge node's address, the clock talks to the edge's LAN broker (port 1883, no TLS
on the LAN unless asked); that broker learns the new account when the edge runs
`nightlink edge broker-files`, which fetches the tenant's accounts from the cloud.
`register_edge` registers the edge node itself, whose account its bridge and sync use.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import httpx

from nightlink.errors import NightlinkError, cloud_url, http_detail
from nightlink.tools.device.build import BuildResult, build, check_compiler, validate_config

_LOGGER = logging.getLogger(__name__)
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
API = "/api/nl/v1"
LAN_PORT = 1883  # the edge's LAN broker (docs/edge.example.toml, [clocks] port)
LAN_TLS_PORT = 8883


@dataclass
class Provisioned:
    device_id: str
    name: str
    mqtt_username: str
    mqtt_host: str
    mqtt_port: int
    result: BuildResult
    via_edge: bool = False  # the clock talks to the edge's LAN broker, not the cloud's


def parse_wifi(values: tuple[str, ...] | list[str]) -> list[dict]:
    """'SSID:PASS' (split at the first colon; 'SSID' alone is an open network)."""
    nets = []
    for v in values:
        ssid, _, password = v.partition(":")
        if not ssid:
            raise NightlinkError("A --wifi value needs the network name before the colon "
                                 "(SSID:PASSWORD).")
        nets.append({"ssid": ssid, "password": password})
    return nets


class CloudClient:
    """The calls provisioning (and revoking) needs, with one-sentence errors."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = cloud_url(url)
        self.http = httpx.Client(base_url=self.url, timeout=timeout)
        self.token: str | None = None

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, **kw) -> httpx.Response:
        return self._send("POST", path, **kw)

    def _send(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            return self.http.request(method, path, **kw)
        except httpx.TimeoutException:
            raise NightlinkError(f"The cloud at {self.url} did not answer in time.") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise NightlinkError(f"Cannot reach the cloud at {self.url} ({reason}).") from None

    def login(self, email: str, password: str) -> None:
        r = self._post(f"{API}/auth/login", json={"email": email, "password": password})
        if r.status_code == 401:
            raise NightlinkError(f"The cloud refused the sign-in for {email}: wrong email or "
                                 "password.")
        if r.status_code == 429:
            raise NightlinkError("The cloud refused the sign-in: too many attempts; wait a "
                                 "minute and try again.")
        if r.status_code == 404:
            raise NightlinkError(f"{self.url} is not a Nightlink cloud (no sign-in endpoint).")
        if r.status_code != 200:
            raise NightlinkError(f"The cloud's sign-in failed (HTTP {r.status_code}: "
                                 f"{http_detail(r)}).")
        self.token = r.json()["access_token"]

    def read_token(self, tenant: str, label: str) -> str:
        """A read-only access token of the tenant's Nightscout (for a clock's cloud fallback:
        it may read the readings, never write)."""
        r = self._post(f"{API}/tenants/{tenant}/read-tokens", json={"label": label},
                       headers={"Authorization": f"Bearer {self.token}"})
        if r.status_code != 201:
            raise NightlinkError(f"The cloud refused a read token for tenant {tenant!r} "
                                 f"(HTTP {r.status_code}: {http_detail(r)}).")
        return r.json()["token"]

    def add_device(self, tenant: str, device_id: str, label: str, kind: str = "clock") -> dict:
        r = self._post(f"{API}/tenants/{tenant}/devices",
                       json={"device_id": device_id, "kind": kind, "label": label},
                       headers={"Authorization": f"Bearer {self.token}"})
        if r.status_code in (403, 404):
            raise NightlinkError(f"The cloud will not add a device to tenant {tenant!r} for "
                                 f"this account ({http_detail(r)}).")
        if r.status_code != 201:
            raise NightlinkError(f"The cloud refused the device (HTTP {r.status_code}: "
                                 f"{http_detail(r)}).")
        return r.json()


    def revoke_device(self, tenant: str, device_id: str) -> None:
        """Revoke a clock or edge: its MQTT account goes when the brokers' files are next
        written, a clock's cloud-fallback token at once."""
        r = self._send("DELETE", f"{API}/tenants/{tenant}/devices/{device_id}",
                       headers={"Authorization": f"Bearer {self.token}"})
        if r.status_code == 404:
            raise NightlinkError(f"Tenant {tenant!r} has no active device {device_id} this "
                                 f"account may see ({http_detail(r)}).")
        if r.status_code == 403:
            raise NightlinkError(f"The cloud will not revoke devices of tenant {tenant!r} for "
                                 f"this account ({http_detail(r)}).")
        if r.status_code != 204:
            raise NightlinkError(f"The cloud refused to revoke {device_id} (HTTP "
                                 f"{r.status_code}: {http_detail(r)}).")


def clock_config(device: dict, tenant: str, name: str, wifi: list[dict],
                 mqtt_host: str | None = None, mqtt_port: int | None = None,
                 mqtt_tls: bool | None = None, units: str | None = None,
                 tz: str | None = None) -> dict:
    """The clock's /config.json (device/CONFIG.md) for a freshly provisioned device.

    mqtt_host is the edge node's LAN address: its broker listens on 1883 without TLS unless
    mqtt_port or mqtt_tls say otherwise. Without it, the clock talks to the cloud's broker
    at the address and port the cloud gave (TLS on 8883).
    """
    if mqtt_host:
        tls = bool(mqtt_tls)
        host, port = mqtt_host, mqtt_port or (LAN_TLS_PORT if tls else LAN_PORT)
    else:
        host, port = device["mqtt_host"], mqtt_port or device["mqtt_port"]
        tls = bool(mqtt_tls) if mqtt_tls is not None else port == LAN_TLS_PORT
    cfg = {
        "version": 1,
        "device": {"id": device["device_id"], "name": name, "tenant": tenant},
        "wifi": wifi,
        "mqtt": {"host": host, "port": port, "user": device["mqtt_username"],
                 "password": device["mqtt_password"], "tls": tls},
    }
    if units:
        cfg["units"] = units
    if tz:
        cfg["tz"] = tz  # a POSIX rule (provision makes one of a zone's name: posix_tz)
    return cfg


_IANA = re.compile(r"[A-Za-z_]+(?:/[A-Za-z0-9_+-]+)+")  # Europe/Amsterdam, Etc/GMT+8


def posix_tz(name: str) -> str:
    """The POSIX TZ rule the clock's firmware reads (device/tzrule.py) for a zone given by its
    IANA name (Europe/Amsterdam: the rule in the last line of its TZif file, as the edge's
    `timezone` names it), or the rule itself when one is given."""
    import zoneinfo
    from importlib import resources

    from nightlink.shared.epoch import zone_file

    unknown = NightlinkError(f"--tz {name} is no time zone known here; give an IANA name such "
                             "as Europe/Amsterdam or a POSIX rule.")
    if name not in zoneinfo.available_timezones() or zone_file(name):  # ("localtime": ours)
        if _IANA.fullmatch(name):  # Area/City: a zone, not a rule, but none known here
            raise unknown
        return name  # a POSIX rule (CET-1CEST,M3.5.0,M10.5.0/3); the config check reads it
    data = None
    for folder in zoneinfo.TZPATH:
        path = Path(folder) / name
        if path.is_file():
            data = path.read_bytes()
            break
    if data is None:
        try:
            data = resources.files("tzdata").joinpath("zoneinfo", *name.split("/")).read_bytes()
        except (ModuleNotFoundError, FileNotFoundError, OSError, ValueError):
            raise unknown from None
    # TZif version 2 and later end in "\n<POSIX rule>\n" (RFC 8536); version 1 has no rule
    footer = data[:-1].rsplit(b"\n", 1)[-1].decode("ascii", "replace") \
        if data.endswith(b"\n") and data[4:5] in (b"2", b"3", b"4") else ""
    if not data.startswith(b"TZif") or not footer:
        raise NightlinkError(f"--tz {name}: its zone file holds no POSIX rule; give the rule "
                             "itself (CET-1CEST,M3.5.0,M10.5.0/3).")
    return footer


def provision(out: Path, *, cloud: str | CloudClient, tenant: str, name: str, email: str,
              password: str, wifi: list[dict], target: str, flash_size: int | None = None,
              firmware: Path | None = None, mqtt_host: str | None = None,
              mqtt_port: int | None = None, mqtt_tls: bool | None = None,
              units: str | None = None, tz: str | None = None,
              cloud_fallback: bool = False) -> Provisioned:
    """Register one clock and write its image to `out`; nothing secret leaves the image.
    `cloud_fallback`: the clock also gets a read-only token of the tenant's Nightscout in the
    cloud, which it reads once a minute while its edge is silent (a home the person is not in
    tonight, the edge down)."""
    if not _SLUG.match(tenant):
        raise NightlinkError(f"The tenant {tenant!r} is not a tenant name (a-z, 0-9, _ and -).")
    if not 1 <= len(name) <= 32:
        raise NightlinkError("The clock's --name must be 1 to 32 characters.")
    # Check everything but the credentials before the cloud mints an account: a clock
    # registered without an image is left over in the cloud.
    check_compiler()
    tz = posix_tz(tz) if tz else None  # the zone's rule, read once
    stand_in = {"device_id": "0" * 12, "mqtt_host": mqtt_host or "localhost",
                "mqtt_port": mqtt_port or 1883, "mqtt_username": tenant + "." + "0" * 12,
                "mqtt_password": "-" * 24}
    validate_config(clock_config(stand_in, tenant, name, wifi, mqtt_host, mqtt_port, mqtt_tls,
                                 units, tz))
    if firmware is not None:
        from nightlink.tools.device.firmware import read_firmware
        from nightlink.tools.device.targets import TARGETS

        fw = read_firmware(firmware, expect=target)
        fw.data_partition(flash_size or TARGETS[target].default_flash)
    _refuse_other_clock(Path(out), tenant)
    client = cloud if isinstance(cloud, CloudClient) else CloudClient(cloud)
    try:
        if client.token is None:
            client.login(email, password)
        device_id = secrets.token_hex(6)
        device = client.add_device(tenant, device_id, name)
        token = client.read_token(tenant, f"clock-{device_id}") if cloud_fallback else None
    finally:
        if client is not cloud:
            client.close()
    cfg = clock_config(device, tenant, name, wifi, mqtt_host, mqtt_port, mqtt_tls, units, tz)
    if token is not None:  # sent as its SHA-1 in the api-secret header, as a secret is
        cfg["cloud"] = {"url": f"{client.url.rstrip('/')}/t/{tenant}", "api_secret": token}
    _LOGGER.info("registered clock %s (%s) in tenant %s", device_id, name, tenant)
    try:
        result = build(out, target, flash_size=flash_size, firmware=firmware, config=cfg,
                       device_id=device_id)
    except NightlinkError as exc:
        raise NightlinkError(f"{str(exc).rstrip('.')} (clock {device_id} is registered in the "
                             "cloud without an image; revoke it there).") from None
    return Provisioned(device_id, name, device["mqtt_username"], cfg["mqtt"]["host"],
                       cfg["mqtt"]["port"], result, via_edge=bool(mqtt_host))


def _refuse_other_clock(out: Path, tenant: str) -> None:
    """Refuse, before the cloud registers a clock, an --out that holds another clock's image:
    written over, that clock's only copy of its broker password would be gone (a second
    clock provisioned by the same command line), while it stays registered."""
    from nightlink.tools.device.build import load_build

    try:
        info = load_build(out)
    except (NightlinkError, OSError, ValueError):  # no build there, or none that reads
        return
    device_id = info.get("device_id") if isinstance(info, dict) else None
    if device_id:
        raise NightlinkError(
            f"{out} holds the image of clock {device_id} already; give this clock another "
            f"--out (or, once clock {device_id} is flashed, remove {out}; if it never will be, "
            f"revoke it: nightlink device revoke {device_id} --tenant {tenant} --cloud …).")


def edge_next_step(cloud_url: str) -> str:
    """The command the operator runs on the edge so its LAN broker lets new clocks in."""
    return (f"nightlink edge broker-files --cloud {cloud_url.rstrip('/')} --config EDGE.toml, "
            "then reload the LAN broker as it says")


def check_device_id(value: str, what: str, where: str) -> None:
    """Refuse, in one sentence, what is not a device id (12 lowercase hex digits)."""
    if not re.fullmatch(r"[0-9a-f]{12}", value):
        raise NightlinkError(f"{value!r} is not {what} (12 lowercase hex digits, {where}).")


def revoke(*, cloud: str, tenant: str, device_id: str, email: str, password: str) -> None:
    """Revoke a clock or edge node of the tenant, signed in as `email`."""
    check_device_id(device_id, "a device id",
                    "as the device list or `nightlink edge id` shows it")
    client = CloudClient(cloud)
    try:
        client.login(email, password)
        client.revoke_device(tenant, device_id)
    finally:
        client.close()


def register_edge(out: Path, *, cloud: str, tenant: str, edge_id: str, email: str,
                  password: str, label: str = "Edge node", ca_file: str = "") -> dict:
    """Register an edge node (its id from `nightlink edge id`) and write its cloud account as
    the [sync] section for its configuration to `out` (mode 0600: it holds the password)."""
    if not _SLUG.match(tenant):
        raise NightlinkError(f"The tenant {tenant!r} is not a tenant name (a-z, 0-9, _ and -).")
    check_device_id(edge_id, "an edge device id", "as `nightlink edge id` prints it")
    if out.exists():
        raise NightlinkError(f"{out} exists already; give another --out (it would hold the "
                             "new password).")
    try:  # made before the cloud mints the password: one that cannot be written is lost
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise NightlinkError(f"{out} cannot be written ({exc.strerror}); give another "
                             "--out.") from None
    try:
        client = CloudClient(cloud)  # a bad address is refused here
        try:
            client.login(email, password)
            device = client.add_device(tenant, edge_id, label, kind="edge")
        finally:
            client.close()
        port = int(device["mqtt_port"])
        tls = device.get("mqtt_tls", port == LAN_TLS_PORT)  # a cloud before mqtt_tls: by port
        text = (f"# The edge node {edge_id}'s cloud account (tenant {tenant}); copy this "
                "section\n# into the edge's configuration, then delete this file.\n"
                "[sync]\nenabled = true\n"
                f"host = {_toml(device['mqtt_host'])}\nport = {port}\n"
                f"tls = {'true' if tls else 'false'}\n"
                + (f"ca_file = {_toml(ca_file)}\n" if ca_file else "")
                + f"username = {_toml(device['mqtt_username'])}\n"
                f"password = {_toml(device['mqtt_password'])}\n")
    except BaseException:  # nothing written: no empty file that refuses the next try
        os.close(fd)
        out.unlink(missing_ok=True)
        raise
    with os.fdopen(fd, "w") as f:
        f.write(text)
    _LOGGER.info("registered edge %s in tenant %s", edge_id, tenant)
    return device


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
