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
from nightlink.errors import one_line_each
from nightlink.shared import topics

# What mosquitto_passwd 2.0 writes: 101 iterations, a 12-byte salt, a 64-byte SHA-512 hash.
# The count is low; it is safe here because every device password is 32 random characters.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
# The user Debian's mosquitto package runs the broker as (it starts as root, then drops to it).
BROKER_GROUP = "mosquitto"


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
                    ingest_username: str = "", ingest_password: str = "",
                    owner: tuple[int, int] | None = None, mode: int | None = None,
                    written: list[Path] | None = None) -> int:
    """Write the password file and the ACL file for every active device of a tenant that is
    not deleted (and the ingest account when given); return the number of device accounts.
    The files actually replaced (not those already exactly so) are added to `written`.

    Files are written to a temporary name and renamed, so the broker never reads half a file;
    see `write_private` for who may read them. The ingest account keeps its hash while its
    password is unchanged, so a run with nothing new leaves both files as they were.
    """
    passwd_lines, acl_lines = [], ["# Written by nightlink.cloud.broker_config; do not edit."]
    if ingest_username:
        if not ingest_password:
            raise ValueError("The ingest account needs a password (NIGHTLINK_MQTT_PASSWORD).")
        known = passwd_accounts(Path(passwd_path)).get(ingest_username, "")
        kept = known if mosquitto_verify(known, ingest_password) else ""
        passwd_lines.append(f"{ingest_username}:{kept or mosquitto_hash(ingest_password)}")
        acl_lines += ["", *ingest_acl(ingest_username)]
    live = set(store.tenant_ids())
    devices = [d for d in store.active_devices()
               if d["tenant_id"] in live and d["mqtt_password_hash"].startswith("$7$")]
    for d in devices:
        passwd_lines.append(f"{d['mqtt_username']}:{d['mqtt_password_hash']}")
        acl_lines += ["", *device_acl(d["tenant_id"], d["id"], d["kind"])]
    for path, lines in ((Path(passwd_path), passwd_lines), (Path(acl_path), acl_lines)):
        if write_private(path, "\n".join(lines) + "\n", owner=owner, mode=mode) and written is not None:
            written.append(path)
    return len(devices)


def passwd_accounts(passwd_path: Path) -> dict[str, str]:
    """The accounts of an existing password file, name to hash ({} when there is none)."""
    try:
        text = passwd_path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return {}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def default_owner(path: Path) -> tuple[int, int, int]:
    """Owner, group and mode for (re)writing a broker file: an existing file keeps its own
    (without any access for other users); a new one gets the group `mosquitto` when the
    writer is root or a member of it, because Mosquitto 2 opens its files only after
    dropping to that user (at start and on every SIGHUP); else the writer's group. Mode
    0640 when new."""
    import grp

    try:
        st = path.stat()
        return st.st_uid, st.st_gid, st.st_mode & 0o770
    except FileNotFoundError:
        pass
    gid = os.getegid()
    try:
        broker = grp.getgrnam(BROKER_GROUP).gr_gid
        if os.geteuid() == 0 or broker in os.getgroups():
            gid = broker
    except KeyError:
        pass
    return os.geteuid(), gid, 0o640


def write_private(path: Path, text: str, *, owner: tuple[int, int] | None = None,
                  mode: int | None = None) -> bool:
    """Replace `path` with `text` atomically, never readable by other users, with the owner,
    group and mode of `default_owner` unless given; False when it already was exactly so.

    The temporary file is created 0600 and only then given its owner and mode, so the hashes
    are never readable by anyone else, not even for a moment.
    """
    if mode is not None and mode & 0o007:
        raise ValueError(f"The mode {mode:04o} would let every user read {path}; "
                         "use 0640 or 0600.")
    uid, gid, keep = default_owner(path)
    uid, gid = owner or (uid, gid)
    mode = keep if mode is None else mode
    data = text.encode("utf-8")
    try:
        st = path.stat()
        if ((st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, mode)
                and path.read_bytes() == data):
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            if (uid, gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, uid, gid)
        except PermissionError:
            raise ValueError(f"Only root may give {path} the owner {_name(uid, gid)}; run as "
                             "root, or as that owner, or choose another with --owner.") from None
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    return True


def _name(uid: int, gid: int) -> str:
    import grp
    import pwd

    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"{user}:{group}"


def mosquitto_conf(acl_path: Path | str, passwd_path: Path | str, *, port: int = 8883,
                   host: str = "", certfile: str = "", keyfile: str = "", cafile: str = "",
                   persistence_dir: str = "/var/lib/mosquitto/") -> str:
    """A Mosquitto configuration for the cloud broker: TLS when a certificate is given, no
    anonymous clients, the generated password and ACL files, persistent sessions."""
    if bool(certfile) != bool(keyfile):
        raise ValueError("TLS needs both a certificate and its key.")
    one_line_each(acl=acl_path, passwd=passwd_path, bind=host, certfile=certfile,
                  keyfile=keyfile, cafile=cafile, persistence_dir=persistence_dir)
    lines = [
        "# Written by `nightlink cloud broker-files`; regenerate rather than edit.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {passwd_path}",
        f"acl_file {acl_path}",
        "persistence true",
        f"persistence_location {persistence_dir}",
        "max_queued_messages 100000",
        f"max_packet_size {topics.MAX_PACKET_BYTES}",
        "",
        f"listener {port}{' ' + host if host else ''}",
    ]
    if certfile:
        lines += [f"certfile {certfile}", f"keyfile {keyfile}", "tls_version tlsv1.2"]
        if cafile:
            lines.append(f"cafile {cafile}")
    return "\n".join(lines) + "\n"
