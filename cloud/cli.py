"""`nightlink cloud …`: run the service, manage it from the command line."""

from __future__ import annotations

import click

from nightlink.errors import NightlinkError


def _settings(**overrides):
    from nightlink.cloud.config import SettingsError, load_settings

    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise NightlinkError(str(exc)) from None


def _store(settings):
    from nightlink.cloud.store import Store
    from nightlink.sql import DatabaseError

    try:
        return Store.open(settings.database_url)
    except DatabaseError as exc:
        raise NightlinkError(str(exc)) from None


@click.group()
def cloud() -> None:
    """The cloud service: history, Nightscout API, accounts, live updates."""


@cloud.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
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
    settings = _settings(database_url=database_url)
    if workers > 1:
        import uvicorn

        if database_url:
            os.environ["NIGHTLINK_DATABASE_URL"] = database_url
        _store(settings).close()  # migrate once, before the processes start
        uvicorn.run("nightlink.cloud.app:app_from_environment", factory=True, host=host,
                    port=port, workers=workers, log_level="warning", ws="websockets-sansio")
        return
    store = _store(settings)
    from nightlink.cloud.retention import RetentionWorker

    retention = RetentionWorker(store, settings.purge_after_days).start()
    worker = None
    app = None
    if not ingest_only:
        from nightlink.cloud.app import create_app

        app = create_app(settings, store)
    if not api_only:
        from nightlink.cloud.ingest import IngestWorker

        worker = IngestWorker(store, settings, client_id=client_id)
        worker.start()
        click.echo(f"Ingest subscribed to {worker.filter} on "
                   f"{settings.mqtt_host}:{settings.mqtt_port}", err=True)
    try:
        if app is not None:
            import contextlib

            import uvicorn

            server = uvicorn.Server(uvicorn.Config(app, host=host, port=port,
                                                   log_level="warning", ws="websockets-sansio"))
            # Our own handlers: uvicorn's re-raise the signal after shutting down, which
            # would skip stopping the ingest worker and closing the store.
            server.capture_signals = contextlib.nullcontext
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
            server.run()
        else:
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
    finally:
        retention.stop()
        if worker is not None:
            worker.stop()
        store.close()
    click.echo("Stopped.", err=True)


@cloud.command("create-tenant")
@click.argument("tenant")
@click.option("--name", default="", help="Display name (default: the tenant id).")
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
@click.argument("name")
@click.option("--role", type=click.Choice(["readable", "careportal", "devicestatus-upload",
                                           "admin"]), default="readable", show_default=True,
              help="readable for clocks and followers; careportal to add treatments; admin "
                   "for AndroidAPS (its NSClient v3 needs every permission).")
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


@cloud.command("broker-files")
@click.option("--acl", "acl_path", type=click.Path(dir_okay=False), required=True,
              help="Mosquitto acl_file to write.")
@click.option("--passwd", "passwd_path", type=click.Path(dir_okay=False), required=True,
              help="Mosquitto password_file to write.")
@click.option("--conf", "conf_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a mosquitto.conf using those files.")
@click.option("--port", type=int, default=8883, show_default=True, help="With --conf.")
@click.option("--certfile", default="", help="With --conf: TLS certificate (PEM).")
@click.option("--keyfile", default="", help="With --conf: TLS private key (PEM).")
@click.option("--database-url", default=None)
def broker_files(acl_path: str, passwd_path: str, conf_path: str | None, port: int,
                 certfile: str, keyfile: str, database_url: str | None) -> None:
    """Write Mosquitto's password and ACL files for every provisioned device (then SIGHUP it).

    The ingest account is NIGHTLINK_MQTT_USERNAME / NIGHTLINK_MQTT_PASSWORD.
    """
    from pathlib import Path

    from nightlink.cloud.broker_config import mosquitto_conf, mosquitto_files

    settings = _settings(database_url=database_url)
    store = _store(settings)
    try:
        n = mosquitto_files(store, acl_path, passwd_path, ingest_username=settings.mqtt_username,
                            ingest_password=settings.mqtt_password)
        if conf_path:
            try:
                text = mosquitto_conf(Path(acl_path).resolve(), Path(passwd_path).resolve(),
                                      port=port, certfile=certfile, keyfile=keyfile)
            except ValueError as exc:
                raise NightlinkError(str(exc)) from None
            Path(conf_path).write_text(text)
    finally:
        store.close()
    click.echo(f"Wrote {passwd_path} and {acl_path} for {n} devices"
               + (f", and {conf_path}." if conf_path else "."))


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
