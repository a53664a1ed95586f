"""Mosquitto password and ACL files from the provisioned devices (per-device MQTT accounts).

Each device's account is named `{tenant}.{device_id}` and its password is kept only as a
Mosquitto 2 PBKDF2-SHA512 hash (`$7$<iterations>$<base64 salt>$<base64 hash>`, the format
`mosquitto_passwd` writes), so the stored hash goes into the password file as it is. After
writing the files, send the broker SIGHUP to reload them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from nightlink.cloud.store import Store
from nightlink.shared import topics

# What mosquitto_passwd 2.0 writes: 101 iterations, a 12-byte salt, a 64-byte SHA-512 hash.
# The count is low; it is safe here because every device password is 32 random characters.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12


def device_username(tenant_id: str, device_id: str) -> str:
    """The MQTT account of one device: unique, and names the tenant it belongs to."""
    return f"{tenant_id}.{device_id}"


def new_device_password() -> str:
    return secrets.token_urlsafe(24)


def mosquitto_hash(password: str, *, salt: bytes | None = None,
                   iterations: int = PBKDF2_ITERATIONS) -> str:
    """A Mosquitto 2 `$7$` password hash (PBKDF2-HMAC-SHA512)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def mosquitto_verify(password_hash: str, password: str) -> bool:
    """True if the password matches a `$7$` hash (ours or mosquitto_passwd's)."""
    try:
        _, kind, iterations, salt, digest = password_hash.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), base64.b64decode(salt),
                                  int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(expected, got)


def device_acl(tenant_id: str, device_id: str, kind: str = "clock") -> list[str]:
    """ACL lines for one device: publish below its prefix, receive its acks and commands.

    An edge node is also its tenant's gateway: its LAN broker bridges the tenant's clocks,
    so it may publish below any device of that tenant (never another tenant's), and the
    ingest still checks that every device it stores for is provisioned for that tenant.
    """
    prefix = topics.device_prefix(tenant_id, device_id)
    lines = [
        f"user {device_username(tenant_id, device_id)}",
        f"topic write {prefix}#",
        f"topic read {prefix}+/{topics.ACK}",
        f"topic read {prefix}{topics.CMD}",
    ]
    if kind == "edge":
        tenant_prefix = f"{topics.PREFIX}/{tenant_id}/"
        lines += [f"topic write {tenant_prefix}+/+", f"topic read {tenant_prefix}+/+/{topics.ACK}",
                  f"topic read {tenant_prefix}+/{topics.CMD}"]
    return lines


def ingest_acl(username: str) -> list[str]:
    """ACL lines for the cloud ingest account: read every device, answer with acks and commands."""
    return [
        f"user {username}",
        f"topic read {topics.PREFIX}/#",
        f"topic write {topics.PREFIX}/+/+/+/{topics.ACK}",
        f"topic write {topics.PREFIX}/+/+/{topics.CMD}",
    ]


def mosquitto_files(store: Store, acl_path: Path | str, passwd_path: Path | str, *,
                    ingest_username: str = "", ingest_password: str = "") -> int:
    """Write the password file and the ACL file for every active device of a tenant that is
    not deleted (and the ingest account when given); return the number of device accounts.

    Files are written to a temporary name and renamed, so the broker never reads half a file.
    """
    passwd_lines, acl_lines = [], ["# Written by nightlink.cloud.broker_config; do not edit."]
    if ingest_username:
        if not ingest_password:
            raise ValueError("The ingest account needs a password.")
        passwd_lines.append(f"{ingest_username}:{mosquitto_hash(ingest_password)}")
        acl_lines += ["", *ingest_acl(ingest_username)]
    live = set(store.tenant_ids())
    devices = [d for d in store.active_devices()
               if d["tenant_id"] in live and d["mqtt_password_hash"].startswith("$7$")]
    for d in devices:
        passwd_lines.append(f"{d['mqtt_username']}:{d['mqtt_password_hash']}")
        acl_lines += ["", *device_acl(d["tenant_id"], d["id"], d["kind"])]
    _write(Path(passwd_path), passwd_lines)
    _write(Path(acl_path), acl_lines)
    return len(devices)


def _write(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


def mosquitto_conf(acl_path: Path | str, passwd_path: Path | str, *, port: int = 8883,
                   host: str = "", certfile: str = "", keyfile: str = "", cafile: str = "",
                   persistence_dir: str = "/var/lib/mosquitto/") -> str:
    """A Mosquitto configuration for the cloud broker: TLS when a certificate is given, no
    anonymous clients, the generated password and ACL files, persistent sessions."""
    if bool(certfile) != bool(keyfile):
        raise ValueError("TLS needs both a certificate and its key.")
    lines = [
        "# Written by `nightlink cloud broker-files`; regenerate rather than edit.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {passwd_path}",
        f"acl_file {acl_path}",
        "persistence true",
        f"persistence_location {persistence_dir}",
        "max_queued_messages 100000",
        "",
        f"listener {port}{' ' + host if host else ''}",
    ]
    if certfile:
        lines += [f"certfile {certfile}", f"keyfile {keyfile}", "tls_version tlsv1.2"]
        if cafile:
            lines.append(f"cafile {cafile}")
    return "\n".join(lines) + "\n"
