"""`nightlink simulate`: generate synthetic bedside nights with ground truth."""

import time
from pathlib import Path

import click

from nightlink.tools.sim.night import simulate_night
from nightlink.tools.sim.summary import summarize


@click.group()
def simulate() -> None:
    """Generate synthetic nights (CGM, wearable, audio, room) with ground truth."""


@simulate.command()
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder to write the night into (created if missing).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), required=True, help="Same seed, byte-identical files.")
@click.option("--patient", default="adult#001", show_default=True,
              help="UVA/Padova virtual patient, e.g. adult#001, adolescent#003, child#010.")
@click.option("--hours", type=float, default=8.0, show_default=True, help="Time in bed.")
@click.option("--audio-format", type=click.Choice(["wav", "flac"]), default="wav",
              show_default=True)
@click.option("--no-audio", is_flag=True, help="Skip the audio recording (much faster).")
@click.option("--no-dropouts", is_flag=True,
              help="Keep every sample (no wearable, CGM or room-sensor outages).")
def night(out: Path, seed: int, patient: str, hours: float, audio_format: str,
          no_audio: bool, no_dropouts: bool) -> None:
    """Simulate one night into OUT and print its summary."""
    started = time.monotonic()
    manifest = simulate_night(out, seed=seed, patient=patient, hours=hours,
                              audio_format=None if no_audio else audio_format,
                              dropouts=not no_dropouts)
    click.echo(summarize(out, manifest))
    click.echo(f"Elapsed {time.monotonic() - started:.1f} s")


def _replay_command() -> click.Command:
    from nightlink.edge.cli import replay_command
    from nightlink.tools.sim.replay import night_audio

    return replay_command(night_audio, help="Run the edge pipeline over the simulated night in "
                          "NIGHT_DIR, its audio regenerated from the seed when no file was kept.")


simulate.add_command(_replay_command())
