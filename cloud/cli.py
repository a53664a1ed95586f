"""`nightlink cloud …`: run the service, manage it from the command line."""

from __future__ import annotations

import click

from nightlink.errors import NightlinkError
from nightlink.nightscout.auth import TOKEN_ROLES

# No WebSocket protocol pings from uvicorn: the live feed sends its own ping every 20 s
# (cloud/live.py), which keeps connections alive through NAT, lets browsers close a silent
# socket after 45 s, and makes the server notice a dead peer when the write fails; socket.io
# has Engine.IO's ping. uvicorn's per-connection ping timers cost 5 % of a core at 10,000 idle
# connections even at a 60-s interval (`nightlink bench live`: idle CPU 7.6 % with them,
# 2.1 % without; docs/live.md).
WS_PING_S = None

def _settings(*, serving: bool = False, **overrides):
    """The settings; only the server (`serving`) needs its secrets, the other commands sign
    nothing. The group's --env-file, when given, is read instead of ./.env."""
    from nightlink.cloud.config import SettingsError, load_settings

    env_file = click.get_current_context().meta.get(_ENV_FILE)
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return load_settings(serving=serving, env_file=env_file, **given)
    except SettingsError as exc:
        msg = str(exc)
        for key in given:  # a value from an option: name the option the user typed
            env = "NIGHTLINK_" + key.upper()
            if msg.startswith(env + ":"):
                msg = "--" + key.replace("_", "-") + msg[len(env):]
        raise NightlinkError(msg) from None


def startup_notes(settings, *, api: bool) -> list[str]:
    """What the operator must know when the server starts, said without -v: development
    mode, and public sign-up (on by default, so an upgrade from a version without it would
    otherwise open it unannounced)."""
    notes = []
    if settings.env == "development":
        notes.append("Development mode (NIGHTLINK_ENV=development): default secrets are "
                     "accepted; never expose this server.")
    if api and settings.signup_enabled:
        mail = (f"confirmation links are mailed through {settings.smtp_host}"
                if settings.smtp_host else
                f"with no NIGHTLINK_SMTP_HOST the confirmation links are written to "
                f"{settings.mail_dir}/ for you to forward")
        notes.append("Public sign-up is on: anyone who reaches this server can create an "
                     f"account and a tenant ({mail}); NIGHTLINK_SIGNUP_ENABLED=false turns it "
                     "off.")
    base = settings.public_base_url.rstrip("/")
    if api and settings.env == "production" and _local_or_plain(base):
        notes.append(f"NIGHTLINK_PUBLIC_BASE_URL is {base}: the links in mails (sign-up, "
                     "invitations) and on the sharing page lead there; set it to the https "
                     "address people reach this server at (browsers also keep the app's "
                     "offline copy and alerts on locked phones to https pages).")
    if api:
        notes.append(f"Alerts reach locked phones (Web Push) through {settings.push_hosts}, "
                     f"signed for {settings.push_contact()}." if settings.push_key else
                     "No alerts reach locked phones: NIGHTLINK_PUSH_KEY is not set (`nightlink "
                     "cloud push-key` makes one); the app says so to those who turn sound on.")
    return notes


def _local_or_plain(url: str) -> bool:
    """Whether an address is no public https one (http, localhost, a loopback address)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:  # "https://[::1"
        return True
    return (parts.scheme != "https" or not host or host in ("localhost", "::1", "0.0.0.0")
            or host.endswith(".localhost") or host.startswith(("127.", "::ffff:127.")))


def _store(settings):
    from nightlink.cloud.store import Store
    from nightlink.sql import DatabaseError

    try:
        return Store.open(settings.database_url)
    except DatabaseError as exc:
        raise NightlinkError(str(exc)) from None


_ENV_FILE = "nightlink.cloud.env_file"


@click.group()
@click.option("--env-file", type=click.Path(exists=True, dir_okay=False), default=None,
              envvar="NIGHTLINK_ENV_FILE",
              help="Read NIGHTLINK_* settings from this file (e.g. /etc/nightlink/cloud.env) "
                   "instead of ./.env; the environment still wins.")
@click.pass_context
def cloud(ctx: click.Context, env_file: str | None) -> None:
    """The cloud service: history, Nightscout API, accounts, live updates."""
    ctx.meta[_ENV_FILE] = env_file


def _check_port(host: str, port: int) -> None:
    """Fail with one sentence, before anything starts, when the API cannot listen there
    (uvicorn would log a traceback-like line and exit 3 later)."""
    from nightlink.ports import check_listen

    check_listen(host, port, what=f"Port {port} on {host}", in_use="choose another with --port",
                 privileged="choose one above 1023 with --port")


def _announce_ingest(worker, settings, stop) -> None:
    """Say where the ingest worker connects, and once it is connected, say that: the
    broker may be down at start, and the worker keeps trying."""
    import threading

    where = f"{settings.mqtt_host}:{settings.mqtt_port}"
    click.echo(f"Ingest connecting to {where} for {worker.filter} …", err=True)

    def wait():
        while not stop.is_set():
            if worker.connected.wait(0.5):
                click.echo(f"Ingest connected to {where}, subscribed to {worker.filter}.",
                           err=True)
                return

    threading.Thread(target=wait, name="ingest-announce", daemon=True).start()


@cloud.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--database-url", default=None, help="Overrides NIGHTLINK_DATABASE_URL.")
@click.option("--api-only", is_flag=True, help="Serve the API without an ingest worker.")
@click.option("--ingest-only", is_flag=True, help="Run an ingest worker without the API.")
@click.option("--client-id", default="", help="Ingest MQTT client id (a persistent session).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="API processes (with --api-only; the API is stateless).")
def serve(host: str, port: int, database_url: str | None, api_only: bool, ingest_only: bool,
          client_id: str, workers: int) -> None:
    """Run the API and an MQTT ingest worker (settings from NIGHTLINK_* variables)."""
    import os
    import signal
    import threading

    if api_only and ingest_only:
        raise NightlinkError("Choose at most one of --api-only and --ingest-only.")
    if workers > 1 and not api_only:
        raise NightlinkError("Several --workers need --api-only; run ingest workers apart.")
    settings = _settings(serving=True, database_url=database_url)
    if not ingest_only:
        _check_port(host, port)
    if workers > 1:
        import uvicorn

        if database_url:
            os.environ["NIGHTLINK_DATABASE_URL"] = database_url
        env_file = click.get_current_context().meta.get(_ENV_FILE)
        if env_file:  # the worker processes read the same settings file
            os.environ["NIGHTLINK_ENV_FILE"] = os.path.abspath(env_file)
        _store(settings).close()  # migrate once, before the processes start
        for note in startup_notes(settings, api=not ingest_only):  # once the store opened
            click.echo(note, err=True)
        uvicorn.run("nightlink.cloud.app:app_from_environment", factory=True, host=host,
                    port=port, workers=workers, log_level="warning", ws="websockets-sansio",
                    ws_ping_interval=WS_PING_S)
        return
    store = _store(settings)
    for note in startup_notes(settings, api=not ingest_only):  # not before a database error
        click.echo(note, err=True)
    from nightlink.cloud.retention import RetentionWorker

    # SIGTERM and Ctrl-C stop cleanly from here on, during start-up too (systemd may stop a
    # service that is still starting): our handlers, not uvicorn's, which re-raise the
    # signal after shutting down and would skip stopping the ingest and closing the store.
    stop = threading.Event()
    server = None

    def _stop(*_):
        stop.set()
        if server is not None:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    retention = RetentionWorker(store, settings.purge_after_days).start()
    worker = None
    app = None
    announced = threading.Event()
    if not ingest_only:
        from nightlink.cloud.app import create_app, served

        app = served(create_app(settings, store))
    if not api_only:
        from nightlink.cloud.ingest import IngestWorker

        worker = IngestWorker(store, settings, client_id=client_id)
        worker.start()
        _announce_ingest(worker, settings, announced)
    try:
        if app is not None:
            import contextlib

            import uvicorn

            server = uvicorn.Server(uvicorn.Config(app, host=host, port=port,
                                                   log_level="warning", ws="websockets-sansio",
                                                   ws_ping_interval=WS_PING_S))
            server.capture_signals = contextlib.nullcontext
            server.should_exit = stop.is_set()
            try:
                server.run()
            except SystemExit:  # uvicorn's way of saying it could not start
                pass
            if not server.started and not stop.is_set():
                raise NightlinkError(f"The API could not start on {host} port {port}; "
                                     "see the message above.")
        else:
            stop.wait()
    finally:
        announced.set()
        retention.stop()
        if worker is not None:
            worker.stop()
        store.close()
    click.echo("Stopped.", err=True)


def _a_name(ctx, param, value: str) -> str:
    """A name shown on pages, PDFs, mails and exports, checked as the API checks one."""
    from nightlink.cloud.routes.fields import NAME_MAX, one_line

    try:
        if len(value) <= NAME_MAX:
            return one_line(value)
    except ValueError:
        pass
    raise click.BadParameter(f"a name is at most {NAME_MAX} characters on one line, without "
                             "control characters.")


@cloud.command("create-tenant")
@click.argument("tenant")
@click.option("--name", default="", callback=_a_name,
              help="Display name (default: the tenant id).")
@click.option("--public-read", is_flag=True, help="Let anyone read its Nightscout API.")
@click.option("--database-url", default=None)
def create_tenant(tenant: str, name: str, public_read: bool, database_url: str | None) -> None:
    """Create a tenant (one patient's space) and print its new upload secret once."""
    import secrets

    from nightlink.cloud.store import ConflictError
    from nightlink.shared.topics import TopicError

    store = _store(_settings(database_url=database_url))
    try:
        store.create_tenant(tenant, name or tenant, public_read=public_read)
        secret = secrets.token_urlsafe(24)
        store.set_api_secret(tenant, secret)
        store.audit("tenant.create", tenant_id=tenant, via="cli")
        store.audit("key.create", tenant_id=tenant, kind="api-secret", via="cli")
    except (ConflictError, TopicError) as exc:
        raise NightlinkError(str(exc)) from None
    finally:
        store.close()
    click.echo(f"Tenant {tenant} created. Nightscout API secret (shown once): {secret}")


@cloud.command()
@click.argument("tenant")
@click.argument("name", callback=_a_name)
@click.option("--role", type=click.Choice(TOKEN_ROLES), default="readable", show_default=True,
              help="readable for clocks and followers; careportal to add treatments; oref0rig "
                   "for an OpenAPS rig; admin for AndroidAPS (its NSClient v3 needs every "
                   "permission).")
@click.option("--database-url", default=None)
def token(tenant: str, name: str, role: str, database_url: str | None) -> None:
    """Make an access token for an app on a tenant's Nightscout; print it once."""
    from nightlink.cloud.store import NotFoundError

    store = _store(_settings(database_url=database_url))
    try:
        _, value = store.tenant(tenant).subjects.create(name, [role])
        store.audit("key.create", tenant_id=tenant, kind="token", label=name, role=role,
                    via="cli")
    except (NotFoundError, ValueError) as exc:
        raise NightlinkError(str(exc)) from None
    finally:
        store.close()
    click.echo(f"Access token for {name} ({role}) on {tenant}, shown once: {value}")


def _owner(spec: str | None) -> tuple[int, int] | None:
    """USER[:GROUP] (names or numbers) as uid and gid; USER alone takes that user's group."""
    import grp
    import pwd

    if not spec:
        return None
    user, _, group = spec.partition(":")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdecimal() else pwd.getpwnam(user)
    except KeyError:
        raise NightlinkError(f"No user {user!r} on this machine (--owner).") from None
    if not group:
        return entry.pw_uid, entry.pw_gid
    try:
        gid = int(group) if group.isdecimal() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise NightlinkError(f"No group {group!r} on this machine (--owner).") from None
    return entry.pw_uid, gid


def _mode(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        mode = int(text, 8)
        if not 0 <= mode <= 0o777:
            raise ValueError(text)
    except ValueError:
        raise NightlinkError(f"--mode takes octal permissions such as 0640, not {text!r}.") \
            from None
    if mode & 0o007:
        raise NightlinkError(f"--mode {text} would let every user read the broker's "
                             "accounts; use 0640 or 0600.")
    return mode


def _not_an_empty_database(store, passwd, ingest: str) -> None:
    """Refuse to write the broker's accounts from a database that has never had a tenant
    while the password file lets devices in: the wrong database (a mistyped URL), or one being
    restored. Written, the file would lock every edge and clock out at the broker's reload."""
    from nightlink.cloud.broker_config import passwd_accounts

    if store.has_tenants():
        return
    devices = [user for user in passwd_accounts(passwd) if user != ingest]
    if devices:
        raise NightlinkError(
            f"The database has no tenant at all, but {passwd} lets {len(devices)} devices in; "
            "not writing it (the wrong NIGHTLINK_DATABASE_URL, or a restore in progress?). "
            "If this database is right, remove the file first.")


def _broker_can_read(path) -> bool:
    """Whether the user mosquitto may read `path` (True when there is no such user here or
    the file is missing: nothing to say then)."""
    import grp
    import pwd

    try:
        user = pwd.getpwnam("mosquitto")
        st = path.stat()
    except (KeyError, OSError):
        return True
    groups = {user.pw_gid, *(g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem)}
    return bool(st.st_mode & 0o004 or (st.st_gid in groups and st.st_mode & 0o040)
                or (st.st_uid == user.pw_uid and st.st_mode & 0o400))


@cloud.command("push-key")
def push_key() -> None:
    """Print a new Web Push key for NIGHTLINK_PUSH_KEY (a secret: keep it with the others;
    changing it later makes every browser subscribe again)."""
    from nightlink.cloud.push import load_key, new_key, public_key

    key = new_key()
    click.echo(f"NIGHTLINK_PUSH_KEY={key}")
    click.echo(f"# public half, which browsers are given: {public_key(load_key(key))}", err=True)


@cloud.command("broker-files")
@click.option("--acl", "acl_path", type=click.Path(dir_okay=False), required=True,
              help="Mosquitto acl_file to write.")
@click.option("--passwd", "passwd_path", type=click.Path(dir_okay=False), required=True,
              help="Mosquitto password_file to write.")
@click.option("--conf", "conf_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a mosquitto.conf using those files.")
@click.option("--port", type=click.IntRange(1, 65535), default=8883, show_default=True,
              help="With --conf: the listener's port.")
@click.option("--bind", default="", help="With --conf: the address to listen on "
              "(default: every interface, as devices connect from outside).")
@click.option("--certfile", default="", help="With --conf: TLS certificate (PEM).")
@click.option("--keyfile", default="", help="With --conf: TLS private key (PEM).")
@click.option("--persistence-dir", default="/var/lib/mosquitto/", show_default=True,
              help="With --conf: where the broker keeps queued messages (its user writes it).")
@click.option("--owner", default=None, metavar="USER[:GROUP]",
              help="Owner of the files (default: an existing file keeps its own; a new one "
                   "written by root gets the group mosquitto).")
@click.option("--mode", "mode_text", default=None, metavar="OCTAL",
              help="Permissions of the files (default: an existing file keeps its own; a new "
                   "one 0640); never readable by every user.")
@click.option("--database-url", default=None)
def broker_files(acl_path: str, passwd_path: str, conf_path: str | None, port: int, bind: str,
                 certfile: str, keyfile: str, persistence_dir: str, owner: str | None,
                 mode_text: str | None, database_url: str | None) -> None:
    """Write Mosquitto's password and ACL files for every provisioned device (then SIGHUP it).

    The ingest account is NIGHTLINK_MQTT_USERNAME / NIGHTLINK_MQTT_PASSWORD. Rewriting keeps
    each file's owner, group and mode, so the broker (which reads them again on SIGHUP as
    the user `mosquitto`) still can.
    """
    from pathlib import Path

    from nightlink.cloud.broker_config import mosquitto_conf, mosquitto_files, write_private

    uid_gid, mode = _owner(owner), _mode(mode_text)
    paths = [Path(p).resolve() for p in (acl_path, passwd_path, conf_path) if p]
    if len(set(paths)) < len(paths):
        raise NightlinkError("--acl, --passwd and --conf must be three different files (one "
                             "would overwrite another).")
    settings = _settings(database_url=database_url)
    store = _store(settings)
    written: list[Path] = []
    try:
        _not_an_empty_database(store, Path(passwd_path), settings.mqtt_username)
        text = mosquitto_conf(Path(acl_path).resolve(), Path(passwd_path).resolve(),
                              port=port, host=bind, certfile=certfile, keyfile=keyfile,
                              persistence_dir=persistence_dir) if conf_path else ""
        n = mosquitto_files(store, acl_path, passwd_path, ingest_username=settings.mqtt_username,
                            ingest_password=settings.mqtt_password, owner=uid_gid, mode=mode,
                            written=written)
        if conf_path:
            if write_private(Path(conf_path), text, owner=uid_gid, mode=mode):
                written.append(Path(conf_path))
    except ValueError as exc:
        raise NightlinkError(str(exc)) from None
    finally:
        store.close()
    # The timer runs this every two minutes: its journal says when the accounts changed.
    names = [str(p) for p in written]
    click.echo((f"Wrote {' and '.join(names)}" if names else
                f"Unchanged: {passwd_path} and {acl_path}" + (f" and {conf_path}" if conf_path else ""))
               + f" ({n} devices).")
    for path in (certfile, keyfile) if conf_path else ():
        if path and not _broker_can_read(Path(path)):
            click.echo(f"warning: Mosquitto 2 opens {path} only after dropping to the user "
                       f"mosquitto, which cannot read it; give it the group mosquitto and "
                       f"mode 0640.", err=True)
    if conf_path:
        click.echo(f"The broker listens on port {port} of "
                   + (f"{bind}." if bind else "every interface (--bind to choose one).")
                   + ("" if certfile else " Without --certfile it speaks plain MQTT."))


@cloud.command()
@click.option("--older-than-days", type=click.IntRange(1, 3650), default=None,
              help="Default: NIGHTLINK_PURGE_AFTER_DAYS (30).")
@click.option("--database-url", default=None)
def purge(older_than_days: int | None, database_url: str | None) -> None:
    """Delete for good the tenants that were deleted more than 30 days ago."""
    from nightlink.cloud.retention import purge_deleted

    settings = _settings(database_url=database_url)
    store = _store(settings)
    try:
        gone = purge_deleted(store, older_than_days or settings.purge_after_days)
    finally:
        store.close()
    click.echo(f"Purged {len(gone)} tenants" + (f": {', '.join(gone)}." if gone else "."))


# -- accounts and grants: the operator's door when no one can sign in yet ------------------

MIN_PASSWORD = 12  # as the API's account and password-change bodies


def _password(email: str) -> str:
    """A new password from NIGHTLINK_PASSWORD, else typed twice at a terminal, else one line
    on stdin; never a command-line argument, which other users can see in the process list."""
    import os
    import sys

    password = os.environ.get("NIGHTLINK_PASSWORD", "")
    if not password:
        if sys.stdin.isatty():
            password = click.prompt(f"Password for {email}", hide_input=True,
                                    confirmation_prompt=True, err=True)
        else:
            password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        raise NightlinkError(f"The password must be at least {MIN_PASSWORD} characters "
                             "(from NIGHTLINK_PASSWORD, the prompt or stdin).")
    return password


def _user(store, email: str) -> dict:
    from nightlink.cloud.store import NotFoundError

    try:
        return store.user_by_email(email)
    except NotFoundError as exc:
        raise NightlinkError(str(exc)) from None


def _open_store(database_url: str | None):
    return _store(_settings(database_url=database_url))


@cloud.group()
def accounts() -> None:
    """People who sign in: add, list, remove, set a password."""


@accounts.command("add")
@click.argument("email")
@click.option("--name", default="", callback=_a_name, help="Display name.")
@click.option("--admin", is_flag=True, help="An administrator (reaches every tenant).")
@click.option("--database-url", default=None)
def accounts_add(email: str, name: str, admin: bool, database_url: str | None) -> None:
    """Create an account; the password comes from NIGHTLINK_PASSWORD or a prompt."""
    import re

    from nightlink.cloud import auth
    from nightlink.cloud.routes.fields import EMAIL
    from nightlink.cloud.store import ConflictError

    if not re.match(EMAIL, email) or len(email) > 254:
        raise NightlinkError(f"{email!r} is not an email address.")
    password = _password(email)
    store = _open_store(database_url)
    try:
        user = store.create_user(email, auth.hash_password(password), name=name,
                                 is_admin=admin)
        store.audit("account.create", user_id=user["id"], email=user["email"], is_admin=admin,
                    via="cli")
    except ConflictError as exc:
        raise NightlinkError(str(exc)) from None
    finally:
        store.close()
    click.echo(f"Account {user['email']} created" + (" (administrator)." if admin else "."))


@accounts.command("list")
@click.option("--database-url", default=None)
def accounts_list(database_url: str | None) -> None:
    """Every account, with the tenants it may open and its role there."""
    store = _open_store(database_url)
    try:
        for user in store.users():
            where = ", ".join(f"{m['tenant_id']} ({m['role']})"
                              for m in store.memberships(user["id"]))
            click.echo("\t".join([user["email"], "admin" if user["is_admin"] else "-",
                                  user["name"] or "-", where or "-"]))
    finally:
        store.close()


@accounts.command("remove")
@click.argument("email")
@click.option("--database-url", default=None)
def accounts_remove(email: str, database_url: str | None) -> None:
    """Delete an account (as its owner could): its grants and sessions end now."""
    import time

    store = _open_store(database_url)
    try:
        user = _user(store, email)
        if user["is_admin"] and not store.other_admins(user["id"]):
            raise NightlinkError(f"{user['email']} is the last administrator; add another "
                                 "before removing this one.")
        with store.transaction():
            for membership in store.memberships(user["id"]):
                store.revoke(membership["tenant_id"], user["id"])
            store.set_user(user["id"], deleted_at=time.time())
            store.revoke_refresh_tokens(user["id"])
            store.audit("account.delete", user_id=user["id"], email=user["email"], via="cli")
    finally:
        store.close()
    click.echo(f"Account {user['email']} removed; its sessions and grants have ended.")


@accounts.command("password")
@click.argument("email")
@click.option("--database-url", default=None)
def accounts_password(email: str, database_url: str | None) -> None:
    """Set an account's password (NIGHTLINK_PASSWORD or a prompt); its sessions end."""
    from nightlink.cloud import auth

    password = _password(email)
    store = _open_store(database_url)
    try:
        user = _user(store, email)
        store.set_user(user["id"], password_hash=auth.hash_password(password))
        store.revoke_refresh_tokens(user["id"])
        store.audit("password.reset", user_id=user["id"], email=user["email"], via="cli")
    finally:
        store.close()
    click.echo(f"Password of {user['email']} set; its other sessions have ended.")


@cloud.group()
def grants() -> None:
    """Who may open which tenant, with which role."""


@grants.command("add")
@click.argument("email")
@click.argument("tenant")
@click.option("--role", type=click.Choice(["patient", "caregiver", "doctor", "admin"]),
              required=True, help="patient and admin may change the tenant; caregiver and "
                                  "doctor may read it.")
@click.option("--database-url", default=None)
def grants_add(email: str, tenant: str, role: str, database_url: str | None) -> None:
    """Give an account a role in a tenant (replaces the role it had there)."""
    from nightlink.cloud.store import NotFoundError

    store = _open_store(database_url)
    try:
        user = _user(store, email)
        store.grant(tenant, user["id"], role, by=None)
        store.audit("grant", tenant_id=tenant, user_id=user["id"], email=user["email"],
                    role=role, via="cli")
    except NotFoundError as exc:
        raise NightlinkError(str(exc)) from None
    finally:
        store.close()
    click.echo(f"{user['email']} is now {role} of {tenant}.")


@grants.command("list")
@click.argument("tenant", required=False)
@click.option("--database-url", default=None)
def grants_list(tenant: str | None, database_url: str | None) -> None:
    """The members of one tenant, or of every tenant: tenant, email, role."""
    from nightlink.cloud.store import NotFoundError

    store = _open_store(database_url)
    try:
        if tenant:
            store.get_tenant(tenant)
        for tenant_id in [tenant] if tenant else store.tenant_ids():
            for member in store.members(tenant_id):
                click.echo("\t".join([tenant_id, member["email"], member["role"]]))
    except NotFoundError as exc:
        raise NightlinkError(str(exc)) from None
    finally:
        store.close()


@grants.command("remove")
@click.argument("email")
@click.argument("tenant")
@click.option("--database-url", default=None)
def grants_remove(email: str, tenant: str, database_url: str | None) -> None:
    """End an account's access to a tenant; its next request there is refused."""
    store = _open_store(database_url)
    try:
        user = _user(store, email)
        role = store.role(tenant, user["id"])
        if role is None:
            raise NightlinkError(f"{user['email']} has no grant in {tenant}.")
        store.revoke(tenant, user["id"])
        store.audit("revoke", tenant_id=tenant, user_id=user["id"], role=role, via="cli")
    finally:
        store.close()
    click.echo(f"{user['email']} may no longer open {tenant}.")
