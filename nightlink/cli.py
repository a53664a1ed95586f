"""The `nightlink` command: one entry point, each tier adds its verbs here."""

import json
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
    from nightlink.cloud.cli import cloud
    from nightlink.edge.cli import edge
    from nightlink.tools.bench import bench
    from nightlink.tools.simulate.cli import simulate

    main.add_command(simulate)
    main.add_command(bench)
    main.add_command(edge)
    main.add_command(cloud)


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/demo"),
              show_default=True, help="Folder for the simulated night and its outputs.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--patient", default="adult#001", show_default=True)
@click.option("--hours", type=float, default=8.0, show_default=True)
@click.option("--keep-audio-file", is_flag=True,
              help="Also write the night's audio as WAV (0.9 GB for 8 h); by default the edge "
                   "consumes it as a stream.")
def demo(out: Path, seed: int, patient: str, hours: float, keep_audio_file: bool) -> None:
    """Run the main job: simulate a night, run the edge node over it, summarise both."""
    from nightlink.edge.replay import replay
    from nightlink.edge.store import EdgeStore
    from nightlink.tools.simulate.night import simulate_night
    from nightlink.tools.simulate.summary import summarize

    started = time.monotonic()
    manifest = simulate_night(out, seed=seed, patient=patient, hours=hours,
                              audio_format="wav" if keep_audio_file else None)
    click.echo(summarize(out, manifest))
    click.echo(f"\nSimulated in {time.monotonic() - started:.1f} s into {out}/")

    db = out / "edge.db"
    for suffix in ("", "-wal", "-shm"):  # a fresh edge store for each demo run
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    store = EdgeStore(db)
    try:
        result = replay(out, store, audio="auto")
        click.echo(f"\nEdge node: {result.records} epoch records from {result.epochs} epochs in "
                   f"{result.seconds:.1f} s into {db}")
        for name, n in result.present.items():
            click.echo(f"  {name:9s} {n}/{result.epochs} epochs with data")
        click.echo("  night summary: " + json.dumps(result.summary, separators=(",", ":")))
        click.echo(f"  waiting in the outbox for sync: {store.outbox_size()} records")
    finally:
        store.close()


_register()
