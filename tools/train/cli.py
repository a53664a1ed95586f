"""`nightlink train sleep|breathing|glucose` and `nightlink eval sleep|breathing|glucose --json`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from nightlink.errors import NightlinkError

MODELS = Path(__file__).resolve().parents[2] / "edge" / "models"
DEVICE = Path(__file__).resolve().parents[2] / "device"
CACHE = Path("out/cache/train")
# Held-out splits: never seen in training. Sleep and breathing: other seeds; glucose: other
# virtual patients (trained on adults, tested on adolescents and children).
TRAIN_SEEDS = range(1000, 1022)
TEST_SEEDS = range(5000, 5018)
GLUCOSE_TRAIN = range(1, 15)
GLUCOSE_VALID = range(15, 21)
GLUCOSE_TEST = range(101, 109)

_options = [
    click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=CACHE,
                 show_default=True, help="Where simulated training nights are kept between runs."),
    click.option("--models", type=click.Path(file_okay=False, path_type=Path), default=MODELS,
                 show_default=True, help="Folder of the .tflite models and their metadata."),
    click.option("--nights", type=click.IntRange(1, None), default=None,
                 help="Use only the first N nights of each split (quick runs)."),
    click.option("--hours", type=click.FloatRange(0.5, 12), default=8.0, show_default=True,
                 help="Length of each simulated night (sleep and breathing)."),
]


def _with_options(fn):
    for opt in reversed(_options):
        fn = opt(fn)
    return fn


def _take(seq, n):
    seq = list(seq)
    return seq if n is None else seq[:n]


def _need_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise NightlinkError("Training needs TensorFlow: pip install 'nightlink[train]'.") from None


@click.group()
def train():
    """Train a classifier from simulated nights and export it as int8 .tflite."""


@click.group(name="eval")
def evaluate():
    """Evaluate a committed classifier on held-out data; the last line is one JSON object."""


def _nights(seeds, cache, echo, hours=8.0):
    from nightlink.tools.train.nights import load_nights

    return load_nights(seeds, hours, cache, progress=lambda k, n: echo(f"  night {k}/{n}"))


def _train_night_model(kind: str, file: str, cache, models, nights, hours, seed) -> None:
    """Train the sleep or breathing model on the training nights and write it to models/."""
    _need_tf()
    from nightlink.tools.train import nightmodels

    data = _nights(_take(TRAIN_SEEDS, nights), cache, click.echo, hours)
    trainer = nightmodels.train_sleep if kind == "sleep" else nightmodels.train_breathing
    blob, meta = trainer(data, seed=seed)
    meta.update({"train_seeds": _take(TRAIN_SEEDS, nights), "seed": seed})
    nightmodels.write_model(models, file, blob, meta)
    click.echo(f"wrote {models / (file + '.tflite')} ({len(blob)} bytes)")


@train.command("sleep")
@_with_options
@click.option("--seed", type=int, default=11, show_default=True)
def train_sleep(cache, models, nights, hours, seed):
    """Sleep stages (Wake/Light/Deep/REM) from wearable, audio and room epochs."""
    _train_night_model("sleep", "sleep_stage", cache, models, nights, hours, seed)


@train.command("breathing")
@_with_options
@click.option("--seed", type=int, default=11, show_default=True)
def train_breathing(cache, models, nights, hours, seed):
    """Snoring and respiratory events (apnea/hypopnea starts) per epoch."""
    _train_night_model("breathing", "breathing", cache, models, nights, hours, seed)


@train.command("glucose")
@_with_options
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--device-out", type=click.Path(file_okay=False, path_type=Path), default=DEVICE,
              show_default=True, help="Where the clock's lowrisk_weights.py is written.")
@click.option("--ohio", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="OhioT1DM XML files to train on as well (real data, if you have access).")
def train_glucose(cache, models, nights, hours, seed, device_out, ohio):
    """Low risk within 30 min and a 30-minute forecast from the last hour of CGM."""
    _need_tf()
    from nightlink.edge.features.glucose_risk import LiteRtGlucose
    from nightlink.tools.train import glucose, glucose_data, nightmodels
    from nightlink.tools.train.readers import ohio_series

    tr = glucose_data.load_set(glucose_data.ADULTS, _take(GLUCOSE_TRAIN, nights), 480, cache)
    for path in ohio:
        tr.extend(ohio_series(path))
    va = glucose_data.load_set(glucose_data.ADULTS, _take(GLUCOSE_VALID, nights), 480, cache)
    model, x = glucose.train(tr, seed=seed)
    q = glucose.export(model, x[::17][:1000])
    threshold = glucose.choose_threshold(LiteRtGlucose(q.tflite), va)
    meta = {"alarm_permille": threshold, "history": glucose_data.HISTORY, "horizon_min": 30, "seed": seed,
            "train": {"patients": list(glucose_data.ADULTS), "seeds": _take(GLUCOSE_TRAIN, nights),
                      "ohio_files": [p.name for p in ohio]},
            "threshold_chosen_on": {"patients": list(glucose_data.ADULTS),
                                    "seeds": _take(GLUCOSE_VALID, nights)}}
    nightmodels.write_model(models, "glucose_risk", q.tflite, meta)
    (device_out / "lowrisk_weights.py").write_text(
        glucose.micropython_module(q, threshold, "edge/models/glucose_risk.tflite"))
    click.echo(f"wrote {models / 'glucose_risk.tflite'} ({len(q.tflite)} bytes), "
               f"{device_out / 'lowrisk_weights.py'}; alarm at {threshold} permille")


def _report(figures: dict, as_json: bool) -> None:
    if not as_json:
        for k, v in figures.items():
            click.echo(f"{k}: {v}")
    click.echo(json.dumps(figures, separators=(",", ":")))


def _classifiers(models):
    from nightlink.edge.features.classify import Classifiers

    try:
        return Classifiers(models)
    except FileNotFoundError as exc:
        raise NightlinkError(f"No trained model at {exc.filename}; run nightlink train first.") from None


def _eval_night_model(kind: str, cache, models, nights, hours, as_json) -> None:
    """Evaluate the sleep or breathing model on the held-out nights (models checked first)."""
    from nightlink.tools.train import nightmodels

    clf = _classifiers(models)
    echo = (lambda *_: None) if as_json else click.echo
    data = _nights(_take(TEST_SEEDS, nights), cache, echo, hours)
    scorer = nightmodels.eval_sleep if kind == "sleep" else nightmodels.eval_breathing
    _report(scorer(clf, data), as_json)


@evaluate.command("sleep")
@_with_options
@click.option("--json", "as_json", is_flag=True, help="Only the JSON line.")
def eval_sleep(cache, models, nights, hours, as_json):
    """Accuracy, Cohen's kappa, wake specificity, per-stage F1 and the confusion matrix."""
    _eval_night_model("sleep", cache, models, nights, hours, as_json)


@evaluate.command("breathing")
@_with_options
@click.option("--json", "as_json", is_flag=True, help="Only the JSON line.")
def eval_breathing(cache, models, nights, hours, as_json):
    """Per-event F1, AHI error, and sensitivity/specificity at AHI >= 15."""
    _eval_night_model("breathing", cache, models, nights, hours, as_json)


@evaluate.command("glucose")
@_with_options
@click.option("--json", "as_json", is_flag=True, help="Only the JSON line.")
def eval_glucose(cache, models, nights, hours, as_json):
    """Forecast RMSE at 30 min and low alerts against a 70 mg/dL threshold alarm, on
    adolescents and children the model never saw."""
    from nightlink.edge.features.glucose_risk import LiteRtGlucose
    from nightlink.tools.train import glucose, glucose_data

    path = models / "glucose_risk.tflite"
    if not path.exists():
        raise NightlinkError(f"No trained model at {path}; run nightlink train glucose first.")
    meta = json.loads((models / "glucose_risk.json").read_text())
    te = glucose_data.load_set(glucose_data.YOUTH, _take(GLUCOSE_TEST, nights), 480, cache)
    figures = glucose.evaluate(LiteRtGlucose(path.read_bytes()), te, int(meta["alarm_permille"]))
    figures["alarm_permille"] = meta["alarm_permille"]
    _report(figures, as_json)

