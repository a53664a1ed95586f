"""The `nightlink` command: one entry point, each tier adds its verbs here."""

import logging
import sys
import time
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
    from nightlink.edge.cli import edge
    from nightlink.tools.bench import bench
    from nightlink.tools.simulate.cli import simulate

    main.add_command(simulate)
    main.add_command(bench)
    main.add_command(edge)


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/demo"),
              show_default=True, help="Folder for the simulated night and its outputs.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--patient", default="adult#001", show_default=True)
@click.option("--hours", type=float, default=8.0, show_default=True)
def demo(out: Path, seed: int, patient: str, hours: float) -> None:
    """Run the main job: simulate a night and summarise what it holds."""
    from nightlink.tools.simulate.night import simulate_night
    from nightlink.tools.simulate.summary import summarize

    started = time.monotonic()
    manifest = simulate_night(out, seed=seed, patient=patient, hours=hours)
    click.echo(summarize(out, manifest))
    click.echo(f"\nSimulated in {time.monotonic() - started:.1f} s into {out}/")


_register()
