"""The LAN broker on the edge node, its accounts, and its bridge to the cloud broker.

The desk clocks publish to a Mosquitto on the edge (LAN, works when the internet is down);
a Mosquitto bridge forwards their data and status to the cloud broker and brings the
cloud's acknowledgements and commands back, with a persistent session and QoS 1 both ways.

The LAN broker takes no anonymous clients: every clock signs in with the MQTT account
provisioning minted for it (`{tenant}.{device}`). The cloud is the one list of a tenant's
devices; the edge fetches their accounts (the `$7$` password hashes the cloud keeps, never a
password) and ACL lines from `GET /api/nl/v1/tenants/{tenant}/devices/lan-accounts`, signing
in with its own MQTT account ([sync] username and password), and writes the broker's
password_file and acl_file from them. The edge's own LAN clients (the clocks' records in,
their glucose feed out) use that same account. `nightlink edge broker-config` prints the
configuration, `nightlink edge broker-files` writes the two files (those the LAN broker's
configuration already names, when no paths are given); a SIGHUP (systemctl reload
nightlink-mosquitto@edge, or mosquitto for Debian's own broker) makes the broker read them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx

from nightlink.edge.node.config import EdgeConfig
from nightlink.errors import NightlinkError, http_detail, one_line_each
from nightlink.errors import cloud_url as checked_cloud_url
from nightlink.shared import topics

DEFAULT_PASSWD = "/etc/mosquitto/nightlink.passwd"  # Debian's own broker serving the clocks
DEFAULT_ACL = "/etc/mosquitto/nightlink.acl"
UNIT_CONF = Path("/etc/nightlink/broker-edge/mosquitto.conf")  # nightlink-mosquitto@edge's
DEFAULT_PERSISTENCE = "/var/lib/mosquitto/"
LAN_ACCOUNTS = "/api/nl/v1/tenants/{tenant}/devices/lan-accounts"
FILE_MODE = 0o640  # the broker's group reads them; nobody else (they hold password hashes)

# What may reach the files: an account `tenant.device`, a Mosquitto `$7$` hash, ACL lines.
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\.[0-9a-f]{12}$")
_HASH = re.compile(r"^\$7\$[0-9]+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$")
_ACL_LINE = re.compile(r"^(user [a-z0-9_.-]+|topic (read|write|readwrite|deny) [A-Za-z0-9_/+#.-]+)$")


def lan_files(passwd: Path | None, acl: Path | None,
              conf: Path | None) -> tuple[Path, Path, str]:
    """(password file, ACL file, the command that makes the broker read them): the files
    given; else those the LAN broker's configuration names (`conf`, else the one
    nightlink-mosquitto@edge reads), so that letting a clock in later needs no paths; a
    configuration about to be written first gets `passwd` and `acl` beside it; else Debian's
    own broker's. The unit to reload follows the files' folder: `broker-X` under the units is
    `nightlink-mosquitto@X`."""
    if passwd is None or acl is None:
        named = _conf_files(conf if conf is not None else UNIT_CONF)
        if conf is not None and not named:  # a new configuration: its files beside it
            named = {"password_file": conf.parent / "passwd", "acl_file": conf.parent / "acl"}
        if len(named) == 1:  # a configuration naming one: the other beside it
            (folder,) = {p.parent for p in named.values()}
            named = {"password_file": folder / "passwd", "acl_file": folder / "acl", **named}
        passwd = passwd or named.get("password_file") or Path(DEFAULT_PASSWD)
        acl = acl or named.get("acl_file") or Path(DEFAULT_ACL)
    folder = passwd.absolute().parent.name
    unit = f"nightlink-mosquitto@{folder[len('broker-'):]}" \
        if folder.startswith("broker-") and len(folder) > len("broker-") else "mosquitto"
    return passwd, acl, f"systemctl reload {unit}"


def _conf_files(conf: Path) -> dict[str, Path]:
    """The password_file and acl_file a mosquitto.conf names (none when there is none);
    NightlinkError when it is there but cannot be read (not silently Debian's files)."""
    try:
        lines = conf.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise NightlinkError(f"The LAN broker's configuration {conf} cannot be read "
                             f"({type(exc).__name__}); run this as root or name the files "
                             "with --passwd and --acl.") from None
    found = {}
    for line in lines:
        key, *value = line.split(None, 1) or [""]
        if key in ("password_file", "acl_file") and value and value[0].strip():
            found[key] = Path(value[0].strip())
    return found


def config_problem(cfg: EdgeConfig) -> str | None:
    """The one thing missing for the LAN broker's configuration, as a sentence (None: ok)."""
    where = f"{cfg.path}: [sync]" if cfg.path else None
    if where is None:
        return ("The LAN broker's configuration needs the edge's configuration file: give "
                "--config FILE with a [sync] section (the cloud broker's host and this edge's "
                "MQTT account).")
    if not cfg.sync.enabled:
        return (f"{where} is not enabled; the bridge needs enabled = true and the cloud "
                "broker's host.")
    if not cfg.sync.username or not cfg.sync.password:
        return (f"{where} username and password are not set; they are this edge's MQTT "
                "account, minted when the edge was registered with the cloud (its device id: "
                "`nightlink edge id`).")
    return None


def bridge_config(cfg: EdgeConfig, device: str, *, passwd_file: str | Path = DEFAULT_PASSWD,
                  acl_file: str | Path = DEFAULT_ACL, listen_host: str = "0.0.0.0",
                  persistence: str | Path | None = DEFAULT_PERSISTENCE, extra: str = "") -> str:
    """mosquitto.conf text for the edge's LAN broker: per-device logins from the password and
    ACL files, a listener on [clocks]'s port, and a bridge to [sync]'s broker.

    With `persistence` (a folder), queued messages survive a restart of the LAN broker.
    """
    one_line_each(listen=listen_host, persistence=persistence or "", passwd=passwd_file,
                  acl=acl_file)
    t = topics.check_name("tenant", cfg.tenant)
    prefix = f"{topics.PREFIX}/{t}/"
    s = cfg.sync
    lines = [
        "# Written by `nightlink edge broker-config`; regenerate rather than edit.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {passwd_file}",
        f"acl_file {acl_file}",
        f"max_packet_size {topics.MAX_PACKET_BYTES}",
        f"listener {cfg.clocks.port} {listen_host}",
        *(["persistence true", f"persistence_location {persistence}"] if persistence else []),
        "",
        "connection nightlink-cloud",
        f"address {s.host}:{s.port}",
        f"remote_clientid nl-bridge-{device}",
        "cleansession false",
        "bridge_protocol_version mqttv311",
        "try_private false",
        "restart_timeout 2 30",
        f"keepalive_interval {s.keepalive_s}",
        # Out: every clock's data and status. In: their acks and commands.
        f"topic {prefix}+/+ out 1",
        f"topic {prefix}+/+/{topics.ACK} in 1",
        f"topic {prefix}+/{topics.CMD} in 1",
    ]
    if s.username:
        lines += [f"remote_username {s.username}", f"remote_password {s.password}"]
    if s.tls:
        ca = (f"bridge_cafile {s.ca_file}" if s.ca_file else "bridge_capath /etc/ssl/certs")
        lines += [ca, "bridge_insecure false"]
    return "\n".join(lines) + "\n" + extra


def fetch_lan_accounts(cloud_url: str, cfg: EdgeConfig, *, timeout: float = 10.0,
                       transport: httpx.BaseTransport | None = None) -> list[dict]:
    """The tenant's device accounts for the LAN broker, from the cloud; NightlinkError with
    one sentence when the cloud cannot be asked or refuses."""
    url = checked_cloud_url(cloud_url)
    path = LAN_ACCOUNTS.format(tenant=topics.check_name("tenant", cfg.tenant))
    try:
        with httpx.Client(base_url=url, timeout=timeout, transport=transport) as http:
            r = http.get(path, auth=(cfg.sync.username, cfg.sync.password))
    except httpx.TimeoutException:
        raise NightlinkError(f"The cloud at {url} did not answer in time.") from None
    except httpx.TransportError as exc:
        raise NightlinkError(f"Cannot reach the cloud at {url} "
                             f"({str(exc) or type(exc).__name__}).") from None
    if r.status_code == 401:
        raise NightlinkError(f"The cloud refused this edge's account ([sync] username and "
                             f"password): {http_detail(r)}.")
    if r.status_code in (403, 404):
        raise NightlinkError(f"The cloud at {url} gives no LAN accounts for tenant "
                             f"{cfg.tenant!r} to this edge ({http_detail(r)}).")
    if r.status_code != 200:
        raise NightlinkError(f"The cloud's LAN accounts request failed (HTTP {r.status_code}: "
                             f"{http_detail(r)}).")
    try:
        accounts = r.json()["accounts"]
        for a in accounts:
            check_account(a)
    except (ValueError, KeyError, TypeError) as exc:
        raise NightlinkError(f"The cloud's answer is not a list of LAN accounts ({exc}).") from None
    return accounts


def check_account(account: dict) -> None:
    """ValueError unless the account's lines are safe to put into the broker's files."""
    if not _USERNAME.match(account["mqtt_username"]):
        raise ValueError(f"the account name {account['mqtt_username']!r} is not tenant.device")
    if not _HASH.match(account["mqtt_password_hash"]):
        raise ValueError(f"{account['mqtt_username']} has no Mosquitto $7$ password hash")
    for line in account["acl"]:
        if not isinstance(line, str) or not _ACL_LINE.match(line):
            raise ValueError(f"{line!r} is not an ACL line")


def check_files_tenant(passwd_path: Path, tenant: str) -> None:
    """Refuse to write over a LAN broker's password file that holds another tenant's
    accounts: one LAN broker serves one person's clocks, and rewriting it for a second
    person's edge locked the first one's clock and edge out without a word."""
    try:
        names = [ln.split(":", 1)[0] for ln in passwd_path.read_text(encoding="utf-8",
                                                                  errors="replace").splitlines()
                 if ":" in ln]
    except FileNotFoundError:
        return
    except OSError as exc:
        raise NightlinkError(f"Cannot read {passwd_path} ({exc.strerror or exc}).") from None
    others = sorted({n.split(".", 1)[0] for n in names if "." in n} - {tenant})
    if others:
        raise NightlinkError(
            f"{passwd_path} holds the LAN broker accounts of tenant {others[0]!r}, not "
            f"{tenant!r}: one LAN broker serves one person's clocks, so give this edge a "
            "broker of its own (--passwd, --acl and --conf in a folder of their own, and "
            "another listener port), or remove the file if that edge is gone.")


def write_broker_files(accounts: list[dict], passwd_path: Path | str,
                       acl_path: Path | str) -> None:
    """Write the LAN broker's password_file and acl_file (each whole or not at all)."""
    passwd = [f"{a['mqtt_username']}:{a['mqtt_password_hash']}" for a in accounts]
    acl = ["# Written by `nightlink edge broker-files` from the cloud's device list; do not edit."]
    for a in accounts:
        acl += ["", *a["acl"]]
    write_private(Path(passwd_path), "\n".join(passwd) + "\n")
    write_private(Path(acl_path), "\n".join(acl) + "\n")


def write_private(path: Path, text: str) -> None:
    """Write to a temporary name and rename, so the broker never reads half a file. A file it
    replaces keeps its owner, group and mode (never readable by other users); a new one is
    0640 and, written by root, in group mosquitto: the broker drops to that user before it
    reads the files again on SIGHUP. The configuration goes the same way: it holds the
    bridge's password."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, _mode(path))
        _keep_owner(tmp, path)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise NightlinkError(f"Cannot write {path} ({exc.strerror or exc}).") from None


def _mode(path: Path) -> int:
    """The replaced file's mode without any access for other users, else 0640."""
    try:
        return path.stat().st_mode & 0o770
    except FileNotFoundError:
        return FILE_MODE


def _keep_owner(tmp: Path, path: Path) -> None:
    if not hasattr(os, "chown"):
        return
    try:
        st = path.stat()
        uid, gid = st.st_uid, st.st_gid
    except FileNotFoundError:
        if os.geteuid() != 0:
            return
        import grp

        try:
            uid, gid = 0, grp.getgrnam("mosquitto").gr_gid
        except KeyError:
            return
    try:
        os.chown(tmp, uid, gid)
    except PermissionError:
        pass  # not ours to give away: the file keeps this user's ownership
