"""The `nightlink` command: one entry point, each tier adds its verbs here."""

import logging
import sys
from pathlib import Path

import click

from nightlink import __version__
from nightlink.errors import NightlinkError


class _Group(click.Group):
    """A click group that turns Nightlink and OS errors into one sentence and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NightlinkError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}.", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="nightlink")
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
def main(verbose: bool) -> None:
    """Nightlink: offline-first bedside health runtime."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


def _register() -> None:
    from nightlink.cloud.cli import cloud
    from nightlink.edge.cli import edge
    from nightlink.tools.bench import bench
    from nightlink.tools.device_cli import device
    from nightlink.tools.simulate.cli import simulate
    from nightlink.tools.train.cli import evaluate, train

    main.add_command(simulate)
    main.add_command(bench)
    main.add_command(edge)
    main.add_command(cloud)
    main.add_command(train)
    main.add_command(evaluate)
    main.add_command(device)


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/demo"),
              show_default=True, help="Folder for the simulated night and its outputs.")
@click.option("--seed", type=int, default=3, show_default=True,
              help="Simulator seed; the default night has severe apnea and three nocturnal lows.")
@click.option("--patient", default="adult#001", show_default=True)
@click.option("--hours", type=float, default=8.0, show_default=True)
@click.option("--keep-audio-file", is_flag=True,
              help="Also write the night's audio as WAV (0.9 GB for 8 h); by default the edge "
                   "consumes it as a stream.")
def demo(out: Path, seed: int, patient: str, hours: float, keep_audio_file: bool) -> None:
    """Run the main job: simulate a night, run the edge node over it, sync it to the cloud."""
    from nightlink.tools.demo import run_demo

    run_demo(out, seed=seed, patient=patient, hours=hours, keep_audio_file=keep_audio_file,
             echo=click.echo)


_register()
