"""The `nightlink` command: one entry point, each tier adds its verbs here."""

import importlib
import logging
import sys
from pathlib import Path

import click

from nightlink import __version__
from nightlink.errors import NightlinkError
from nightlink.sql import DatabaseError

# Each tier's commands, imported only when used (so `nightlink cloud serve` loads no
# simulator and `nightlink --help` loads nothing): name -> (module:attribute, one-line help).
_LAZY = {
    "bench": ("nightlink.tools.bench.cli:bench", "Measure NAME and print its figures."),
    "cloud": ("nightlink.cloud.cli:cloud", "The cloud service: API, ingest, tenants, tokens."),
    "device": ("nightlink.tools.device.cli:device",
               "The desk clock: build, provision, flash, deploy, emulate."),
    "edge": ("nightlink.edge.cli:edge", "The bedside edge node: capture, features, local store."),
    "eval": ("nightlink.tools.train.cli:evaluate", "Score the committed models."),
    "simulate": ("nightlink.tools.sim.cli:simulate", "Synthetic nights with ground truth."),
    "train": ("nightlink.tools.train.cli:train", "Train the classifiers (needs the train extra)."),
}


# click 8.2+ raises this for a group run without its command; 8.1 prints the help itself
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Group(click.Group):
    """A click group that loads tier commands lazily and turns Nightlink, OS and database
    errors into one sentence and exit code 2."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *_LAZY})

    def get_command(self, ctx, name):
        if name not in _LAZY:
            return super().get_command(ctx, name)
        target, _ = _LAZY[name]
        module, attribute = target.split(":")
        try:
            return getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as exc:
            extra = {"cloud": "cloud", "edge": "edge", "device": "device-tools",
                     "simulate": "sim", "train": "train", "eval": "train"}.get(name, "dev")
            raise click.ClickException(
                f"`nightlink {name}` needs the {extra} extra ({exc.name} is missing): "
                f"pip install 'nightlink[{extra}]'.") from None

    def format_commands(self, ctx, formatter):
        rows = [(name, _LAZY[name][1]) if name in _LAZY else
                (name, (super(_Group, self).get_command(ctx, name).get_short_help_str(60)))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _NO_ARGS_IS_HELP as exc:  # `nightlink cloud`: its help
            click.echo(exc.ctx.get_help() if exc.ctx is not None else ctx.get_help())
            sys.exit(0)
        except click.UsageError as exc:  # a bad option or argument: one sentence, not usage
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            message = " ".join(exc.format_message().split()).rstrip(".")  # choices on one line
            click.echo(f"error: {message} (see '{where} --help').", err=True)
            sys.exit(2)
        except NightlinkError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}.", err=True)
            sys.exit(2)
        except DatabaseError as exc:  # a store locked past its wait, a full disk
            click.echo(f"error: the database refused: {str(exc).rstrip('.')}.", err=True)
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


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/demo"),
              show_default=True, help="Folder for the simulated night and its outputs.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=3, show_default=True,
              help="Simulator seed; the default night has severe apnea and three nocturnal lows.")
@click.option("--patient", default="adult#001", show_default=True)
@click.option("--hours", type=float, default=8.0, show_default=True)
@click.option("--nights", type=click.IntRange(1, 90), default=14, show_default=True,
              help="Nights to simulate, ending with the --seed night, with simulated daytime "
                   "CGM between them; the earlier ones skip the audio to stay fast.")
@click.option("--keep-audio-file", is_flag=True,
              help="Also write the night's audio as WAV (0.9 GB for 8 h); by default the edge "
                   "consumes it as a stream.")
def demo(out: Path, seed: int, patient: str, hours: float, nights: int,
         keep_audio_file: bool) -> None:
    """Run the main job: simulate nights, run the edge node over them, sync them to the cloud."""
    from nightlink.tools.demo.run import run_demo

    run_demo(out, seed=seed, patient=patient, hours=hours, keep_audio_file=keep_audio_file,
             echo=click.echo, nights=nights)

