"""`nightlink edge …`: the edge node's commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nightlink.edge.sources.samples import SourceError
from nightlink.errors import NightlinkError
from nightlink.nightscout.auth import TOKEN_ROLES

if TYPE_CHECKING:
    from nightlink.edge.store import EdgeStore


def default_db() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "nightlink" / "edge.db"


def open_store(db: Path, retention_days: int = 30, reserve_mb: int | None = None) -> EdgeStore:
    from nightlink.edge.store import EdgeStore, StoreError

    try:
        return EdgeStore(db, retention_days=retention_days,
                         reserve_bytes=None if reserve_mb is None else reserve_mb << 20)
    except StoreError as exc:
        raise NightlinkError(str(exc)) from None


@click.group()
def edge() -> None:
    """The bedside edge node: capture, features, local store."""


def _check_can_run(cfg) -> None:
    """What would stop the node at once, as one sentence before it starts: a port another
    program holds, or live audio without PortAudio (neither goes away by retrying)."""
    from nightlink.ports import check_listen

    ns = cfg.nightscout
    if ns.enabled and ns.port:
        check_listen(ns.host, ns.port, what=f"Port {ns.port} on {ns.host} (the [nightscout] port)",
                     in_use="stop the program listening there or set another port",
                     privileged="use a port above 1023")
    if cfg.audio.enabled:
        try:
            import sounddevice  # noqa: F401
        except OSError:
            raise NightlinkError("Live audio needs the PortAudio library, which is not "
                                 "installed: apt-get install libportaudio2 (or set [audio] "
                                 "enabled = false).") from None
        except ImportError:
            raise NightlinkError("Live audio needs the sounddevice package: pip install "
                                 "'nightlink[edge]' (or set [audio] enabled = false).") from None


@edge.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Edge configuration (TOML); see docs/edge.example.toml.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Edge store (overrides the configuration).")
def run(config_path: Path | None, db: Path | None) -> None:
    """Run the live node until SIGTERM or Ctrl-C."""
    from nightlink.edge.node.config import ConfigError, load
    from nightlink.edge.node.live_node import LiveNode, run_forever

    try:
        cfg = load(config_path)
    except ConfigError as exc:
        raise NightlinkError(str(exc)) from None
    _check_can_run(cfg)
    store = open_store(db or cfg.db or default_db(), cfg.retention_days, cfg.reserve_mb)
    node = LiveNode(cfg, store)
    try:
        run_forever(node)
    finally:
        store.close()
    click.echo("Stopped; every completed epoch is stored." if not node.held_at_stop else
               f"Stopped; {node.held_at_stop} epochs the store refused were not stored.",
               err=True)


@edge.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Edge configuration (TOML) with a [sync] section.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--until-empty", is_flag=True, help="Exit once the outbox is empty.")
@click.option("--timeout", type=click.FloatRange(0, 30 * 86400), default=0.0,
              help="Give up after this many seconds (0: never; at most 30 days).")
def sync(config_path: Path | None, db: Path | None, until_empty: bool, timeout: float) -> None:
    """Send the outbox to the cloud broker (what `edge run` does in the background)."""
    import signal
    import threading

    from nightlink.edge.node.config import ConfigError, load
    from nightlink.edge.sync.cloud_link import SyncClient

    if timeout != timeout:  # NaN passes a range check
        raise NightlinkError("--timeout must be a number of seconds, not nan.")
    try:
        cfg = load(config_path, nightscout_secret=False)  # sync serves no Nightscout site
    except ConfigError as exc:
        raise NightlinkError(str(exc)) from None
    if not cfg.sync.enabled:
        raise NightlinkError("Sync is not enabled: set [sync] enabled = true and its host.")
    store = open_store(db or cfg.db or default_db(), cfg.retention_days)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    timer = threading.Timer(timeout, stop.set)
    timer.daemon = True  # never keeps the command alive once the outbox is empty
    if timeout:
        timer.start()
    client = SyncClient(store, cfg.sync, cfg.tenant)
    try:
        client.run(stop, until_empty=until_empty)
    finally:
        timer.cancel()
        left = client.outbox_rows()
        store.close()
    st = client.stats
    click.echo(f"Sent {st.rows_sent} rows in {st.messages} messages ({st.bytes_sent} bytes); "
               f"{st.acked_rows} acknowledged; {'?' if left is None else left} still in the "
               "outbox.", err=True)
    if client.store_error:  # kept in the outbox: a later run sends them once space returns
        kept = "The rows" if left is None else f"{left} rows"
        raise NightlinkError(f"{kept} stay in the outbox: {client.store_error}.")
    why = client.last_error
    if not why and st.rows_sent and not st.acked_rows:
        why = (f"the broker took them but the cloud acknowledged none; is this edge (device "
               f"{client.device}) provisioned in the cloud for tenant {cfg.tenant!r}, and is "
               "`tenant` in the config right?")
    if until_empty and left:
        why = why or "the cloud had not acknowledged them when it stopped"
        raise NightlinkError(f"{left} rows could not be delivered: {_sentence(why)}")
    if left and why:  # a timed run ends as asked; it still says why rows are left
        click.echo(f"Not delivered yet: {_sentence(why)}", err=True)


def _sentence(text: str) -> str:
    return text if text.endswith(("?", ".")) else text + "."


_lan_file_options = [
    click.option("--passwd", "passwd_path", type=click.Path(dir_okay=False, path_type=Path),
                 default=None, help="The LAN broker's password_file "
                 "(default: the one the broker's configuration names, --conf or "
                 "/etc/nightlink/broker-edge/mosquitto.conf; else "
                 "/etc/mosquitto/nightlink.passwd)."),
    click.option("--acl", "acl_path", type=click.Path(dir_okay=False, path_type=Path),
                 default=None, help="The LAN broker's acl_file "
                 "(default: as for --passwd; else /etc/mosquitto/nightlink.acl)."),
    click.option("--listen", "listen_host", default="0.0.0.0", show_default=True,
                 help="The address the LAN broker listens on ([clocks] port)."),
    click.option("--persistence", default="/var/lib/mosquitto/", show_default=True,
                 help="Folder for the broker's queued messages ('' for none)."),
]


def _lan_options(f):
    for opt in reversed(_lan_file_options):
        f = opt(f)
    return f


def _lan_config(config_path: Path | None):
    """The edge configuration, checked for what the LAN broker needs (one sentence if not)."""
    from nightlink.edge.node.config import ConfigError, load
    from nightlink.edge.sync.bridge import config_problem

    try:
        cfg = load(config_path, nightscout_secret=False)
    except ConfigError as exc:
        raise NightlinkError(str(exc)) from None
    problem = config_problem(cfg)
    if problem:
        raise NightlinkError(problem)
    return cfg


def _lan_conf(cfg, db: Path | None, passwd_path, acl_path, listen_host, persistence) -> str:
    from nightlink.edge.sync.bridge import DEFAULT_ACL, DEFAULT_PASSWD, bridge_config

    store = open_store(db or cfg.db or default_db())
    try:
        device = store.device
    finally:
        store.close()
    try:
        return bridge_config(cfg, device,
                             passwd_file=(passwd_path or Path(DEFAULT_PASSWD)).absolute(),
                             acl_file=(acl_path or Path(DEFAULT_ACL)).absolute(),
                             listen_host=listen_host, persistence=persistence or None)
    except ValueError as exc:
        raise NightlinkError(str(exc)) from None


@edge.command("broker-config")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Edge configuration (TOML) with [clocks] and [sync].")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Edge store (its device id names the bridge).")
@_lan_options
def broker_config(config_path: Path | None, db: Path | None, passwd_path: Path | None,
                  acl_path: Path | None, listen_host: str, persistence: str) -> None:
    """Print a mosquitto.conf for the LAN broker: clocks' logins, bridge to the cloud broker.

    The logins come from the password and ACL files `nightlink edge broker-files` writes.
    """
    cfg = _lan_config(config_path)
    click.echo(_lan_conf(cfg, db, passwd_path, acl_path, listen_host, persistence), nl=False)


@edge.command("broker-files")
@click.option("--cloud", "cloud_url", envvar="NIGHTLINK_CLOUD_URL", required=True,
              help="The cloud's address, e.g. https://nightlink.example.org "
                   "(or NIGHTLINK_CLOUD_URL).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Edge configuration (TOML) with [clocks] and [sync].")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Edge store (with --conf: its device id names the bridge).")
@_lan_options
@click.option("--conf", "conf_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the mosquitto.conf using those files (0640 like "
              "them: it holds the bridge's password).")
def broker_files(cloud_url: str, config_path: Path | None, db: Path | None,
                 passwd_path: Path | None, acl_path: Path | None, listen_host: str,
                 persistence: str, conf_path: Path | None) -> None:
    """Write the LAN broker's password and ACL files from the cloud's list of this tenant's
    clocks (then reload the broker, as the command says). Without --passwd and --acl: the
    files the broker's configuration names (--conf, else nightlink-mosquitto@edge's)."""
    from nightlink.edge.sync.bridge import (
        check_files_tenant,
        fetch_lan_accounts,
        lan_files,
        write_broker_files,
        write_private,
    )

    cfg = _lan_config(config_path)
    passwd_path, acl_path, reload = lan_files(passwd_path, acl_path, conf_path)
    check_files_tenant(passwd_path, cfg.tenant)
    conf = (_lan_conf(cfg, db, passwd_path, acl_path, listen_host, persistence)
            if conf_path is not None else None)  # refused before anything is written
    accounts = fetch_lan_accounts(cloud_url, cfg)
    write_broker_files(accounts, passwd_path, acl_path)
    if conf_path is not None:
        write_private(conf_path, conf)
    clocks = sum(a["kind"] == "clock" for a in accounts)
    click.echo(f"Wrote {passwd_path} and {acl_path}: {clocks} clocks and "
               f"{len(accounts) - clocks} edge accounts of tenant {cfg.tenant}"
               + (f", and {conf_path}" if conf_path else "")
               + f". Reload the LAN broker to use them: {reload}.")


@edge.command("id")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Edge store (default: $XDG_DATA_HOME/nightlink/edge.db; made if missing).")
def id_(db: Path | None) -> None:
    """Print this edge node's device id (register it with the cloud as an edge device)."""
    store = open_store(db or default_db())
    try:
        click.echo(store.device)
    finally:
        store.close()


@edge.command("status")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="The node's edge.toml (its `db`).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Edge store (default: the config's db, else "
                   "$XDG_DATA_HOME/nightlink/edge.db).")
def status(config_path: Path | None, db: Path | None) -> None:
    """Say how a running (or stopped) node's links and sources stand, from its store: each
    source's state and why, the outbox, the last night, the dead letters."""
    import time as _time

    from nightlink.edge.node.config import ConfigError, load

    cfg = None
    if config_path is not None:
        try:
            cfg = load(config_path, nightscout_secret=False)
        except ConfigError as exc:
            raise NightlinkError(str(exc)) from None
    path = db or (cfg.db if cfg is not None else None) or default_db()
    if not Path(path).is_file():
        raise NightlinkError(f"There is no edge store at {path}: pass --db or --config.")
    store = open_store(path)
    try:
        click.echo(f"Edge {store.device}, store {path}")
        sources = store.sources()
        for name, row in sorted(sources.items()):
            click.echo(f"  {name:<10} {row['kind']:<11} {row['state']}"
                       + (f"  ({row['detail']})" if row["detail"] else ""))
        _say_stale(store, sources, _time.time())
        click.echo(f"Outbox: {store.outbox_size()} rows and {store.doc_outbox_size()} treatment "
                   "changes waiting for the cloud")
        newest = store.newest_night()
        if newest is None:
            click.echo("Nights: none closed yet")
        else:
            ago = (_time.time() - newest[2]) / 3600
            click.echo(f"Last night summarized: {newest[0]} ({ago:.0f} h ago)")
        dead = store.dead_letters()
        if dead:
            click.echo(f"Dead letters: {len(dead)}; the newest: {dead[-1]['source']}: "
                       f"{dead[-1]['reason'][:200]}")
    finally:
        store.close()


class _FileOrSite(click.Path):
    """An export file that must exist, or a Nightscout site's URL, kept as text."""

    def convert(self, value, param, ctx):
        from nightlink.edge.importers.nightscout_site import is_site

        if isinstance(value, str) and is_site(value):
            return value.strip()
        path = super().convert(value, param, ctx)
        if not Path(path).is_file():  # a named pipe or a device: reading it never ends
            self.fail(f"{click.format_filename(path)} is not a regular file.", param, ctx)
        return path


def _say_stale(store, sources: dict, now: float) -> None:
    """Say when the states above may be old: the running node stores an epoch every 30 s,
    and its states stay as they were when it was killed or its store refused writes."""
    from nightlink.shared.epoch import epoch_start
    from nightlink.sql import storage_problem

    why = storage_problem(str(store.path))
    if why:
        click.echo(f"Storage: {why}.")
    running = any(r["state"] != "stopped" for r in sources.values())
    last = store.last_own_epoch()
    if not running or last is None:
        return
    # (a node just started has stored no epoch yet, but has said how its sources stand)
    newest = max([epoch_start(last + 1), *(r["updated_at"] or 0 for r in sources.values())])
    ago = now - newest
    if ago > 180:
        click.echo(f"The node has stored nothing for {ago / 60:.0f} min: it is not running "
                   "(the states above are from when it stopped) or its store refuses writes "
                   "(see its log).")


@edge.command(name="import")
@click.argument("path", type=_FileOrSite(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["auto", "clarity", "libreview", "carelink",
                                                    "nightscout", "apple-health", "fit"]),
              default="auto", show_default=True,
              help="Dexcom Clarity CSV, LibreView CSV, Medtronic CareLink CSV, Nightscout JSON "
              "(entries.json) or text (entries.txt/.tsv/.csv), Tidepool JSON, Apple Health "
              "export.xml or a Garmin/Fitbit FIT file; auto tells them apart.")
@click.option("--tz", default=None, metavar="ZONE",
              help="Time zone of the export's local times (CSV exports), e.g. "
                   "Europe/Amsterdam (default: this machine's zone).")
@click.option("--since", default=None, metavar="YYYY-MM-DD",
              help="Import what was recorded from this day on (in --tz); by default the "
                   "newest 120 days of a file spanning more, and the last retention_days "
                   "(30) of a site.")
@click.option("--date-order", type=click.Choice(["auto", "dmy", "mdy"]), default="auto",
              show_default=True, help="Day-month or month-day, for a CSV export whose dates "
              "fit both (auto: from the file, else its language).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="The node's edge.toml: its store, and the sleep schedule and "
              "zone that name and bound the nights (default: 22:00-07:30 in --tz).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Edge store (default: the config's db, else "
                   "$XDG_DATA_HOME/nightlink/edge.db).")
@click.option("--dry-run", is_flag=True, help="Read and check the file, say what it holds and "
              "when (in --tz), and store nothing.")
def import_(path: Path | str, fmt: str, tz: str | None, since: str | None, date_order: str,
            config_path: Path | None, db: Path | None, dry_run: bool) -> None:
    """Import a CGM or wearable export into the edge store, and summarise the nights it
    completes (sleep, the apnea screen, glucose) as the live node does at wake time.

    PATH may also be a Nightscout site's URL (https://SITE/?token=READ-TOKEN, or with
    the API secret before the host, https://SECRET@SITE, or in NIGHTSCOUT_API_SECRET):
    its CGM readings are imported, by default the last retention_days (30)."""
    import time as _time
    from datetime import date, datetime, time
    from zoneinfo import ZoneInfo

    from nightlink.edge.importers.importer import import_file
    from nightlink.edge.importers.nightscout_site import SiteName
    from nightlink.edge.node.config import ConfigError, load
    from nightlink.edge.node.zone import check_zone, zone_name
    from nightlink.edge.sources.cgm import site_url
    from nightlink.sql import DatabaseError

    try:  # read before the file, so a bad configuration stores nothing
        cfg = load(config_path, nightscout_secret=False)
    except ConfigError as exc:
        raise NightlinkError(str(exc)) from None

    if tz is None:
        machine = zone_name("")
        tz, whose = ((machine, "this machine's zone") if machine else
                     ("UTC", "this machine's zone could not be read"))
    else:
        whose = ""
        try:
            check_zone(tz, machine=False)
        except ValueError as exc:
            raise NightlinkError(f"--tz: {exc}.") from None
    since_s = None
    if since is not None:
        try:
            since_s = datetime.combine(date.fromisoformat(since), time(0),
                                       ZoneInfo(tz)).timestamp()
        except ValueError:
            raise NightlinkError(f"--since {since!r} is not a date such as 2026-11-01.") from None
    site = isinstance(path, str)
    if site:
        try:  # the site's address as messages name it: no secret, token or /api/v1/
            shown = SiteName(site_url(path)[0])
        except ValueError as exc:
            raise NightlinkError(f"{exc}.") from None
        if since_s is None:
            since_s = _time.time() - cfg.retention_days * 86400
    where = Path(db or cfg.db or default_db())
    scratch = None
    if dry_run and not where.exists():  # a dry run makes no store: one of its own, gone after
        import tempfile

        scratch = tempfile.TemporaryDirectory(prefix="nightlink-dry-run-")
        where = Path(scratch.name) / "edge.db"
    made = not where.exists()
    store = open_store(where)
    try:
        if site:
            start = datetime.fromtimestamp(since_s, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
            click.echo(f"Reading {shown} from {start} ({tz} time)...")
        result = import_file(store, path, fmt, tz, None if date_order == "auto" else date_order,
                             since=since_s, dry_run=dry_run,
                             site_secret=os.environ.get("NIGHTSCOUT_API_SECRET") or None,
                             say=lambda text: click.echo(text, err=True))
    except SourceError as exc:
        store.close()
        if made:  # a refused file leaves no empty store (and no new edge identity) behind
            for leftover in (where, where.with_name(where.name + "-wal"),
                             where.with_name(where.name + "-shm")):
                leftover.unlink(missing_ok=True)
        raise NightlinkError(str(exc)) from None
    except BaseException:
        store.close()
        raise
    _say_imported(shown if site else path, result, tz, whose, dry_run=dry_run)
    if dry_run:
        store.close()
        if scratch is not None:
            scratch.cleanup()
        for note in result.notes:
            click.echo(f"note: {note}")
        return
    try:  # the import is stored and said: now the nights it completes
        closer, schedule = _import_closer(store, cfg, config_path, tz)
        closer.import_id = result.import_id  # each night listed as it is closed
        done = closer.close_span(*result.span, _time.time())
    except DatabaseError as exc:
        raise NightlinkError(f"The edge store refused a night's summary ({exc}); what was "
                             "imported stays, and importing the file again closes the "
                             "night.") from None
    finally:
        store.close()
    _say_nights(done, schedule)
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"Stored as import {result.import_id}; `nightlink edge imports --undo "
               f"{result.import_id}` removes it.")


@edge.command("imports")
@click.option("--undo", "undo", type=click.IntRange(min=1), default=None, metavar="N",
              help="Remove import N: its readings, epochs, beats and the nights it "
                   "summarised, here and (at the next sync) in the cloud.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="The node's edge.toml (its `db`).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Edge store (default: the config's db, else "
                   "$XDG_DATA_HOME/nightlink/edge.db).")
def imports(undo: int | None, config_path: Path | None, db: Path | None) -> None:
    """List the imports in the edge store (what each holds), or undo one."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from nightlink.edge.node.config import ConfigError, load
    from nightlink.edge.store.imports import ImportUndoError
    from nightlink.sql import DatabaseError

    try:
        cfg = load(config_path, nightscout_secret=False)
    except ConfigError as exc:
        raise NightlinkError(str(exc)) from None
    path = Path(db or cfg.db or default_db())
    if not path.is_file():
        raise NightlinkError(f"There is no edge store at {path}: pass --db or --config.")
    store = open_store(path)
    try:
        if undo is not None:
            try:
                row = store.import_row(undo)
                gone = store.undo_import(undo)
            except ImportUndoError as exc:
                raise NightlinkError(str(exc)) from None
            click.echo(f"Import {undo} ({Path(row.source).name}) undone: {gone['entries']} "
                       f"entries, {gone['records']} epoch records ({gone['queued']} of them "
                       f"still waiting for the cloud), {gone['beats']} beats and "
                       f"{gone['nights']} night summaries removed. The cloud removes its copy "
                       "when this node next reports to it.")
            for other in store.overlapping(row):
                click.echo(f"Import {other.id} ({Path(other.source).name}) overlaps it: where "
                           f"both held a reading's epochs or beats they were import {undo}'s "
                           "and are gone; import that file again to put them back (its "
                           "entries stay).")
            if gone["nights"]:  # what else was recorded those nights (the live node's)
                import time as _time

                store.start_boot()  # its summaries never under an import's boot
                closer, schedule = _import_closer(store, cfg, config_path, row.tz or "UTC")
                done = closer.close_span(row.first_s, row.last_s, _time.time())
                if done.summaries:
                    click.echo("Its nights summarised again from what else was recorded:")
                _say_nights(done, schedule)
            return
        rows = store.imports()
        if not rows:
            click.echo(f"No imports in {path}.")
            return
        for row in rows:
            tz = row.tz if row.tz else "UTC"
            try:
                zone = ZoneInfo(tz)
            except (ValueError, KeyError):
                zone, tz = ZoneInfo("UTC"), "UTC"
            when = (" to ".join(datetime.fromtimestamp(t, zone).strftime("%Y-%m-%d %H:%M")
                                for t in (row.first_s, row.last_s)) + f" ({tz})"
                    if row.first_s is not None else "no readings")
            imported = datetime.fromtimestamp(row.at).strftime("%Y-%m-%d %H:%M")  # here
            if row.undone_at is not None:
                state = "undone"
            else:
                held = store.import_counts(row)
                state = (f"{held['entries']} entries, {held['records']} epoch records, "
                         f"{held['beats']} beats, {held['nights']} nights summarised")
            click.echo(f"{row.id:>4}  {imported}  {Path(row.source).name} ({row.format}, "
                       f"{row.samples} readings, {when}): {state}")
    except DatabaseError as exc:
        raise NightlinkError(f"The edge store {path} refused it ({exc}); nothing was "
                             "changed.") from None
    finally:
        store.close()


def _import_closer(store, cfg, config_path: Path | None, tz: str):
    """The NightCloser an import closes nights with, and how its schedule was chosen: the
    configuration's, else the schedule and zone the live node using this store recorded,
    else 22:00-07:30 in --tz."""
    from nightlink.edge.node.nights import SCHEDULE_META, NightCloser
    from nightlink.edge.node.zone import ZONE_META

    night = cfg.night
    if config_path is not None:
        return (NightCloser(store, night.bedtime, night.wake, cfg.timezone, cfg.close_delay_s),
                "the configuration's schedule")
    recorded = (store.meta(SCHEDULE_META) or "").split("-")
    if len(recorded) == 2:
        zone = store.meta(ZONE_META) or ""
        return (NightCloser(store, recorded[0], recorded[1], zone, cfg.close_delay_s),
                f"the node's schedule, {recorded[0]}-{recorded[1]} "
                f"{zone or 'local time'}")
    return (NightCloser(store, night.bedtime, night.wake, tz, cfg.close_delay_s),
            f"{night.bedtime}-{night.wake} {tz}")


def _say_imported(path: Path, result, tz: str, whose: str, *, dry_run: bool = False) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from nightlink.edge.importers.importer import LOCAL_TIME_FORMATS

    skipped = f"{result.skipped_rows} bad rows skipped" + (
        f" (first: {result.first_bad})" if result.first_bad else "")
    entries = (f"; {result.entries_stored} entries stored, {result.entries_duplicate} "
               "duplicates (already stored, or listed twice)"
               if result.format in ("clarity", "libreview", "carelink", "nightscout",
                                     "nightscout-site") else "")
    done = ("nothing stored (--dry-run)" if dry_run else
            f"{result.epochs_written} epochs written, {result.epochs_kept} already "
            f"stored{entries}")
    click.echo(f"{path.name} ({result.label}): {result.samples} readings, {skipped}; {done}.")
    a, b = (datetime.fromtimestamp(t, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
            for t in result.span)
    click.echo(f"From {a} to {b} ({tz} time{', ' + whose if whose else ''})" + (
        "; if that is not when it was recorded, give the export's own --tz."
        if result.format in LOCAL_TIME_FORMATS else "."))


def _say_nights(done, schedule: str) -> None:
    """One line per night summarised (a count and the newest three past 7), the nights kept
    and the nights that failed."""
    closed, summaries = done.closed, done.summaries
    if len(summaries) > 7:  # a long export: the count, and the newest nights in full
        click.echo(f"{len(summaries)} nights summarised ({schedule}), {closed[0]} to "
                   f"{closed[-1]}; the newest:")
        summaries = dict(list(summaries.items())[-3:])
    elif summaries:
        click.echo(f"Nights in {schedule}:")
    for label, summary in summaries.items():
        used = _inputs_used(summary)
        click.echo(f"Night {label} summarised" + (f": {_inputs_line(used)}." if used else
                                                  " (no classifiers here)."))
    kept = done.kept
    if kept:
        click.echo("Already summarised, kept as they were (this file's readings are stored "
                   "but not in their summaries): " + (
                       ", ".join(kept) if len(kept) <= 7 else
                       f"{len(kept)} nights, {kept[0]} to {kept[-1]}") + ".")
    for label, why in done.failed:
        click.echo(f"Night {label} could not be summarised ({why}); importing the file again "
                   "tries again.")


def replay_command(audio_stream=None, *, help: str) -> click.Command:
    """The `replay` command: `nightlink edge replay`, and `nightlink simulate replay` with the
    simulator's `audio_stream` (see nightlink.edge.node.replay.AudioStream)."""
    audio_help = ("Audio from the night's file, regenerated from its seed (stream), or none."
                  if audio_stream else "Audio from the night's file, or none (stream: "
                  "`nightlink simulate replay`).")

    @click.command("replay", help=help)
    @click.argument("night_dir", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Edge store (default: $XDG_DATA_HOME/nightlink/edge.db).")
    @click.option("--realtime", is_flag=True, help="Pace the replay at the night's own speed.")
    @click.option("--speed", type=float, default=1.0, show_default=True,
                  help="With --realtime: how many times faster than real time.")
    @click.option("--audio", type=click.Choice(["auto", "file", "stream", "none"]),
                  default="auto", show_default=True, help=audio_help)
    @click.option("--tz", "tz", default=None, metavar="ZONE",
                  help="Zone the person slept in, which names the night (default: the "
                       "manifest's timezone, else this machine's).")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON line.")
    def replay(night_dir: Path, db: Path | None, realtime: bool, speed: float, audio: str,
               tz: str | None, as_json: bool) -> None:
        from nightlink.edge.node.replay import load_manifest
        from nightlink.edge.node.replay import replay as run_replay

        if speed <= 0:
            raise NightlinkError("--speed must be more than 0.")
        if audio == "stream" and audio_stream is None:
            raise NightlinkError("`nightlink edge replay` takes audio only from the night's file; "
                                 "`nightlink simulate replay --audio stream` regenerates a "
                                 "simulated night's audio.")
        if not night_dir.exists():
            raise NightlinkError(f"No such folder: {night_dir}.")
        if tz is not None:
            from nightlink.edge.node.zone import check_zone

            try:
                check_zone(tz, machine=False)
            except ValueError as exc:
                raise NightlinkError(f"--tz: {exc}.") from None
        try:
            manifest = load_manifest(night_dir)
        except SourceError as exc:
            raise NightlinkError(str(exc)) from None
        store = open_store(db or default_db())
        total = int(manifest["epoch_grid"]["epoch_count"])
        try:
            with click.progressbar(length=total, label="Replaying epochs", file=sys.stderr,
                                   show_pos=True) as bar:
                last = [0]

                def tick(done: int) -> None:
                    bar.update(done - last[0])
                    last[0] = done

                result = run_replay(night_dir, store, realtime=realtime, speed=speed,
                                    audio=audio, audio_stream=audio_stream, on_epoch=tick,
                                    timezone=tz)
        finally:
            store.close()
        used = _inputs_used(result.summary)
        if as_json:
            click.echo(json.dumps({
                "night": result.night, "epochs": result.epochs, "records": result.records,
                "present": result.present, "bad_rows": result.bad_rows,
                "problems": result.problems, "seconds": round(result.seconds, 2), **used,
            }, sort_keys=True, default=str))
            return
        click.echo(f"Night {result.night}: {result.epochs} epochs, {result.records} records "
                   f"stored in {result.seconds:.1f} s into {db or default_db()}")
        for name, n in result.present.items():
            kept = result.kept.get(name, 0)
            click.echo(f"  {name:9s} {n}/{result.epochs} epochs with data"
                       + (f" ({kept} already stored, kept as they were)" if kept else ""))
        if used:
            click.echo(f"  {_inputs_line(used)}")
        for name, n in result.bad_rows.items():
            click.echo(f"  {name}: {n} bad rows skipped")
        for p in result.problems:
            click.echo(f"  note: {p}")
        if audio != "none" and audio_stream is None and "seed" in manifest \
                and result.present["audio"] == 0 and not result.kept.get("audio"):
            click.echo("  note: `nightlink simulate replay` regenerates a simulated night's audio.")

    return replay


def _inputs_used(summary: dict) -> dict:
    """Which inputs a night's classifiers used and the headline figures they gave, from its
    summary ({} when the night was not classified)."""
    sleep, breathing = summary.get("sleep"), summary.get("breathing")
    if not isinstance(sleep, dict) or not isinstance(breathing, dict):
        return {}
    return {"sleep_inputs": sleep.get("sleep_inputs") or [], "tst_min": sleep.get("tst_min"),
            "breathing_inputs": breathing.get("breathing_inputs") or [],
            "ahi_estimate": breathing.get("ahi_estimate"), "screen": breathing.get("screen")}


def _inputs_line(used: dict) -> str:
    """"sleep from …; apnea screen from …: N an hour" from _inputs_used's figures."""
    return (f"sleep from {', '.join(used['sleep_inputs']) or 'nothing'}; apnea screen from "
            f"{', '.join(used['breathing_inputs']) or 'nothing'}"
            + (f": {used['ahi_estimate']} an hour" if used["ahi_estimate"] is not None else ""))


edge.add_command(replay_command(help="Run the edge pipeline over the night in NIGHT_DIR (its "
                                     "manifest.json and files)."))


@edge.command()
@click.argument("name")
@click.option("--role", type=click.Choice(TOKEN_ROLES), default="readable", show_default=True,
              help="readable for clocks and followers; careportal to add treatments; oref0rig "
                   "for an OpenAPS rig; admin for AndroidAPS (its NSClient v3 needs every "
                   "permission).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None)
def token(name: str, role: str, db: Path | None) -> None:
    """Make an access token for an app on the local Nightscout; print it once."""
    store = open_store(db or default_db())
    try:
        _, value = store.subjects.create(name, [role])
    except ValueError as exc:
        raise NightlinkError(str(exc)) from None
    finally:
        store.close()
    click.echo(f"Access token for {name} ({role}), shown once: {value}")
