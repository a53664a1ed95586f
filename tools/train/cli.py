"""`nightlink train sleep|breathing|snore|glucose` and `nightlink eval sleep|breathing|snoring|glucose --json`."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from pathlib import Path

import click

from nightlink.errors import NightlinkError, finite_range

MODELS = Path(__file__).resolve().parents[2] / "edge" / "models"
DEVICE = Path(__file__).resolve().parents[2] / "shared"  # the clock's weights, read by the cloud too
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
    click.option("--hours", type=finite_range(0.5, 12), default=8.0, show_default=True,
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
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=11, show_default=True)
def train_sleep(cache, models, nights, hours, seed):
    """Sleep stages (Wake/Light/Deep/REM) from wearable, audio and room epochs."""
    _train_night_model("sleep", "sleep_stage", cache, models, nights, hours, seed)


@train.command("breathing")
@_with_options
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=11, show_default=True)
def train_breathing(cache, models, nights, hours, seed):
    """Snoring and respiratory events (apnea/hypopnea starts) per epoch."""
    _train_night_model("breathing", "breathing", cache, models, nights, hours, seed)


@train.command("snore")
@_with_options
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=13, show_default=True)
def train_snore(cache, models, nights, hours, seed):
    """Snoring per epoch from that epoch's audio alone, on randomised simulated bedrooms
    (--nights: how many; --hours is not used, those nights are 3 h)."""
    _need_tf()
    from nightlink.tools.train import nightmodels, snore

    seeds = _take(snore.HOUSEHOLD_TRAIN_SEEDS, nights or snore.TRAIN_NIGHTS)
    data = snore.load_epochs(seeds, snore.HOURS, snore.PER_NIGHT, cache,
                             progress=lambda k, n: click.echo(f"  night {k}/{n}"))
    blob, meta = snore.train_snore(data, seed=seed)
    meta["train_seeds"] = [seeds[0], seeds[-1]]
    nightmodels.write_model(models, "snore", blob, meta)
    click.echo(f"wrote {models / 'snore.tflite'} ({len(blob)} bytes), threshold {meta['threshold']}")


_glucose_data = click.option(
    "--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
    help="Folder of per-person CGM files (1-, 5- or 15-minute): CSVs with columns timestamp "
         "and glucose_value_mg_dl (or glucose_value_mmol_l) in any order, or CGM exports (Dexcom "
         "Clarity, LibreView, Medtronic CareLink, Nightscout or Tidepool JSON) or OhioT1DM XML, "
         "one per person (gzipped too; OhioT1DM's training and testing files are one person, "
         "by patient id) or a sub-folder per person holding any number of them; "
         "training defaults to ../shared/data/cgm-bris-t1d-open when it is there.")


_glucose_tz = click.option(
    "--tz", default=None,
    help="Whose clock the nights are on for times given in UTC: Nightscout and Tidepool JSON "
         "files, and CSV times with an offset such as Z or +01:00 (default: the JSON files' as "
         "UTC, CSV times as written); files with local clock times are read as written.")
_glucose_date_order = click.option(
    "--date-order", type=click.Choice(["auto", "dmy", "mdy"]), default="auto", show_default=True,
    help="Day-month or month-day for exports whose dates fit both (auto: as the importer decides "
         "and says in file_notes).",
    callback=lambda _ctx, _param, value: None if value == "auto" else value)


def _zone(tz: str | None) -> str | None:
    from nightlink.edge.node.zone import check_zone

    if tz is None:
        return None
    try:
        check_zone(tz, machine=False)
    except ValueError:
        raise NightlinkError(f"Unknown time zone {tz!r} for --tz; use a name such as "
                             "Europe/London.") from None
    return tz


@train.command("glucose")
@_with_options
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=7, show_default=True)
@click.option("--device-out", type=click.Path(file_okay=False, path_type=Path), default=DEVICE,
              show_default=True, help="Where the clock's lowrisk_weights.py is written.")
@click.option("--ohio", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="OhioT1DM XML files to train on as well (simulated training only).")
@_glucose_data
@click.option("--simulated", is_flag=True, help="Train on simulated patients even if real CGM is there.")
@click.option("--cv", type=click.IntRange(0, 50), default=0, show_default=True,
              help="Leave-people-out folds scored before the final model (0: none).")
@click.option("--epochs", type=click.IntRange(1, 500), default=15, show_default=True)
@click.option("--keep-every", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Keep 1 in N training rows far from any low (real CGM; shorter training).")
@click.option("--json", "as_json", is_flag=True, help="Last line: the cross-validation figures.")
@_glucose_tz
@_glucose_date_order
def train_glucose(cache, models, nights, hours, seed, device_out, ohio, data, simulated, cv, epochs,
                  keep_every, as_json, tz, date_order):
    """Low risk within 30 min and a 30-minute forecast from the last hour of CGM."""
    for option, folder in (("--device-out", device_out), ("--models", models)):
        # said before hours of training, not after the edge's model was written without
        # the clock's weights beside it
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NightlinkError(f"{option} {folder} cannot be made ({exc.strerror}).") from None
        if not os.access(folder, os.W_OK):
            raise NightlinkError(f"{option} {folder} is not a folder this user may write to.")
    from nightlink.tools.train.cgm_real import DEFAULT_DATA

    if data is None and not simulated and DEFAULT_DATA.is_dir():
        data = DEFAULT_DATA
    if data is not None and not simulated:
        _train_glucose_real(data, models, device_out, seed, cv, epochs, keep_every, as_json,
                            _zone(tz), date_order)
        return
    _train_glucose_simulated(cache, models, nights, seed, device_out, ohio)


def _train_glucose_real(data, models, device_out, seed, cv, epochs, keep_every, as_json,
                        tz=None, date_order=None) -> None:
    """Leave-people-out folds (each person tested by a model that never saw them, under a
    forecast floor and the model's own threshold chosen on that fold's training people), then
    the committed model on everyone with both chosen on everyone."""
    from dataclasses import replace

    from nightlink.tools.train import cgm_real

    echo = (lambda *_: None) if as_json else click.echo
    left_out: list[str] = []
    people = cgm_real.load_folder(data, tz=tz, date_order=date_order, skipped=left_out)
    if cv and len(people) < 2:
        raise NightlinkError(f"--cv needs at least 2 people with CGM in {data}; it has "
                             f"{len(people)}.")
    if cv and (cv > len(people) or cv < 2):
        raise NightlinkError(f"--cv needs between 2 and {len(people)} folds for {len(people)} people.")
    _need_tf()  # after the data are known good: TensorFlow's start-up lines before an error mislead
    from nightlink.edge.features.glucose_risk import AlarmPolicy, LiteRtGlucose
    from nightlink.tools.train import glucose, glucose_real, nightmodels

    _say_notes(left_out + [n for p in people for n in p.notes])
    policy = AlarmPolicy(glucose.REAL_ALARM_PERMILLE)
    result: dict = {}
    if cv:
        totals, chosen, floors, thresholds = glucose_real.new_totals(), [], [], []
        for k in range(cv):
            test = people[k::cv]
            train = [p for p in people if p not in test]
            echo(f"  fold {k + 1}/{cv}: testing {', '.join(p.name for p in test)}")
            q = _fit_real(train, seed, epochs, keep_every, as_json)
            runtime = LiteRtGlucose(q.tflite)
            fold_policy = _chosen_policy(runtime, train, policy)  # training people only
            floors.append(fold_policy.forecast_floor_mgdl)
            thresholds.append(fold_policy.alarm_permille)
            glucose_real.score(runtime, test, fold_policy, totals, chosen)
        # the policy in words with the folds' median threshold and floor (each fold its own)
        median = replace(policy, alarm_permille=sorted(thresholds)[cv // 2],
                         forecast_floor_mgdl=sorted(floors)[cv // 2])
        result = glucose_real.figures(totals, median, chosen, len(people))
        result["policy"]["text"] += "; the model's own threshold and floor chosen per fold"
        result["policy"]["forecast_floor_mgdl"] = None
        result["policy"]["forecast_floor_by_fold"] = floors
        result["policy"]["alarm_permille"] = None
        result["policy"]["alarm_permille_by_fold"] = thresholds
        result["cv_folds"] = cv
    q = _fit_real(people, seed, epochs, keep_every, as_json)
    policy = _chosen_policy(LiteRtGlucose(q.tflite), people, policy)
    meta = {"alarm_permille": policy.alarm_permille, "history": glucose.HISTORY_READINGS,
            "horizon_min": 30, "seed": seed, "policy": glucose_real.policy_dict(policy),
            "train": {"real_cgm": sorted(p.name for p in people),
                      "real_cgm_fingerprints": sorted(cgm_real.fingerprint(p) for p in people),
                      "real_cgm_days": {p.name: cgm_real.day_marks(p) for p in people},
                      "data": data.name,
                      "epochs": epochs, "keep_every": keep_every}}
    if result:
        meta["leave_people_out"] = {k: result[k] for k in glucose_real.HEADLINE if k in result}
    nightmodels.write_model(models, "glucose_risk", q.tflite, meta)
    (device_out / "lowrisk_weights.py").write_text(
        glucose.micropython_module(q, policy.alarm_permille, "edge/models/glucose_risk.tflite",
                                   policy))
    echo(f"wrote {models / 'glucose_risk.tflite'} ({len(q.tflite)} bytes), "
         f"{device_out / 'lowrisk_weights.py'}; {policy.describe()}")
    if result:
        _report(result, as_json)
    elif as_json:
        _report({"model": str(models / "glucose_risk.tflite"), "bytes": len(q.tflite),
                 "people": len(people), "policy": glucose_real.policy_dict(policy)}, True)


def _chosen_policy(runtime, people, policy):
    """The policy with the forecast floor (at the starting threshold) and then the model's own
    threshold chosen on `people`, the training people."""
    from dataclasses import replace

    from nightlink.tools.train import glucose_real

    preds = {p.name: glucose_real.predict(runtime, p) for p in people}  # once for both
    floor, _ = glucose_real.choose_floor(runtime, people, policy, preds=preds)
    policy = replace(policy, forecast_floor_mgdl=floor)
    permille, _ = glucose_real.choose_threshold(runtime, people, policy, preds=preds)
    return replace(policy, alarm_permille=permille)


MIN_TRAINING_ROWS = 288  # a day of training rows (5-minute readings with an hour before them)


def _fit_real(people, seed, epochs, keep_every, quiet: bool = False):
    """The model fitted on `people`; with `quiet` the converter's own printing goes to stderr,
    so stdout keeps only what the command reports."""
    import contextlib

    from nightlink.tools.train import glucose, glucose_real

    x, y, future = glucose_real.samples(people, keep_every=keep_every, seed=seed)
    if x.shape[0] < MIN_TRAINING_ROWS:
        raise NightlinkError(f"Too little CGM to train on from {', '.join(p.name for p in people)}: "
                             f"{x.shape[0]} readings with an hour before them, at least "
                             f"{MIN_TRAINING_ROWS} (a day) needed.")
    with contextlib.redirect_stdout(sys.stderr) if quiet else contextlib.nullcontext():
        model, xn = glucose.fit(x, y, future, seed=seed, epochs=epochs, batch_size=512)
        return glucose.export(model, xn[::max(1, xn.shape[0] // 1000)][:1000])


def _train_glucose_simulated(cache, models, nights, seed, device_out, ohio) -> None:
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
    figures = _finite(figures)
    if not as_json:
        for k, v in figures.items():
            click.echo(f"{k}: {v}")
    click.echo(json.dumps(figures, separators=(",", ":"), allow_nan=False))


def _say_notes(notes: list[str]) -> None:
    """What a reader assumed or left out, on stderr: seen without -v, stdout kept to figures."""
    for note in notes:
        click.echo(f"note: {note}", err=True)


def _finite(value):
    """The figures with every NaN or infinity as None: a rate with nothing to count (no
    apnea minute among the recordings, say) is null in JSON, never the invalid NaN."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _classifiers(models):
    from nightlink.edge.features.classify import Classifiers

    try:
        return Classifiers(models)
    except FileNotFoundError as exc:
        raise NightlinkError(f"No trained model at {exc.filename}; run nightlink train first.") from None
    except (ValueError, KeyError, RuntimeError) as exc:
        raise _unreadable_models(models, exc) from None


def _unreadable_models(models: Path, exc: Exception) -> NightlinkError:
    """A model file that is there but cannot be read (cut short, or a Git LFS pointer)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return NightlinkError(f"A model in {models} cannot be read ({first.rstrip('.')}); restore the "
                          "committed files or retrain.")


def _eval_night_model(kind: str, cache, models, nights, hours, as_json) -> None:
    """Evaluate the sleep or breathing model on the held-out nights (models checked first)."""
    from nightlink.tools.train import nightmodels

    clf = _classifiers(models)
    echo = (lambda *_: None) if as_json else click.echo
    data = _nights(_take(TEST_SEEDS, nights), cache, echo, hours)
    scorer = nightmodels.eval_sleep if kind == "sleep" else nightmodels.eval_breathing
    figures = scorer(clf, data)
    if kind == "breathing":
        figures["snoring"] = _snoring_figures(clf, cache, nights, echo)
    _report(figures, as_json)


def _snoring_figures(clf, cache, nights, echo) -> dict:
    """Snoring per epoch on held-out randomised bedrooms, with the invariance checks."""
    from nightlink.tools.train import snore

    seeds = _take(snore.TEST_SEEDS, nights or snore.EVAL_NIGHTS)
    return snore.eval_snoring(clf, seeds, snore.HOURS, cache,
                              progress=lambda k, n: echo(f"  snoring night {k}/{n}"))


def _real_data_options(what: str):
    """--json, and --data: a folder of real recordings (`what`) to score the committed model
    on, without retraining, instead of the simulated nights."""
    def add(fn):
        fn = click.option("--data", type=click.Path(exists=True, file_okay=False,
                                                    path_type=Path), default=None,
                          help=f"Score the committed {what}")(fn)
        return click.option("--json", "as_json", is_flag=True, help="Only the JSON line.")(fn)

    return add


@evaluate.command("sleep")
@_with_options
@_real_data_options("sleep model, without retraining, on real wrist nights of your own "
                    "instead, in the Walch 2019 sleep-accel layout: "
                    "motion/<id>_acceleration.txt (seconds x y z), "
                    "heart_rate/<id>_heartrate.txt (seconds,bpm) and "
                    "labels/<id>_labeled_sleep.txt (seconds stage, one per 30-s epoch: 0 wake, "
                    "1-4 N1-N4, 5 REM, or W/N1/N2/N3/R), or DREAMT's "
                    "data_64Hz/<id>_whole_df.csv files.")
def eval_sleep(cache, models, nights, hours, as_json, data):
    """Accuracy, Cohen's kappa, wake specificity, per-stage F1 and the confusion matrix, per
    input subset; with --data, from motion and from motion and heart rate on real nights."""
    if data is None:
        _eval_night_model("sleep", cache, models, nights, hours, as_json)
        return
    from nightlink.tools.train import nightmodels, readers

    clf = _classifiers(models)
    subjects = {s: functools.partial(readers.walch_night, data, s)
                for s in readers.walch_subjects(data)}
    layout = "Walch layout"
    if not subjects:
        subjects = {readers.dreamt_subject(p): functools.partial(readers.dreamt_night, p)
                    for p in readers.dreamt_files(data)}
        layout = "DREAMT"
    if not subjects:
        raise NightlinkError(f"{data} holds no labels/<id>_labeled_sleep.txt (the Walch 2019 "
                             "sleep-accel layout) nor data_64Hz/<id>_whole_df.csv (DREAMT).")
    left_out, real, with_hr, notes = [], [], [], {}
    for subject in list(subjects)[:nights] if nights else subjects:
        said: list[str] = []
        try:
            night = subjects[subject](said)
        except NightlinkError as exc:
            left_out.append(f"{subject} left out: {str(exc).rstrip('.')}.")
            continue
        thin = readers.wrist_coverage(night)
        if thin:
            left_out.append(f"{subject} left out: {thin}.")
            continue
        real.append(night)
        no_hr = readers.wrist_coverage(night, "heart rate")
        if no_hr:
            said.append(f"motion alone: {no_hr}")
        else:
            with_hr.append(night)
        if said:
            notes[subject] = said
    _say_notes(left_out + [f"{k}: {'; '.join(v)}." for k, v in notes.items()])
    if not real:
        raise NightlinkError(f"No night in {data} could be read.")
    figures = nightmodels.eval_sleep_real(clf, real, f"{layout}, {len(real)} nights", with_hr)
    figures["files_left_out"] = left_out
    figures["file_notes"] = notes
    _report(figures, as_json)


@evaluate.command("breathing")
@_with_options
@_real_data_options("heart-rhythm apnea model, without retraining, on recordings of your "
                    "own instead: <rec>_beats.csv.gz (t_min,rr_s) and <rec>_apnea_minutes.csv "
                    "(minute,apnea) per recording, as in ../shared/data/apnea-ecg-learning, or "
                    "PhysioNet's Apnea-ECG files as published (.hea, .qrs, .apn, "
                    "event-2-answers).")
def eval_breathing(cache, models, nights, hours, as_json, data):
    """Per-event F1, AHI error, and sensitivity/specificity at AHI >= 15 on simulated nights;
    with --data, per-minute and per-recording apnea figures of the heart-rhythm model on real
    recordings."""
    if data is None:
        _eval_night_model("breathing", cache, models, nights, hours, as_json)
        return
    from nightlink.edge.features import cvhr
    from nightlink.tools.train import apnea_real

    try:
        model = cvhr.RrApneaModel.load(models)
        if model is not None and not model.heads:
            raise ValueError(f"{cvhr.MODEL_FILE} has no model head")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _unreadable_models(models, exc) from None
    if model is None:
        raise NightlinkError(f"No heart-rhythm apnea model at {models / cvhr.MODEL_FILE}; run "
                             "nightlink train breathing-rr first.")
    left_out: list[str] = []
    recs = apnea_real.load_folder(data, skipped=left_out)
    _say_notes(left_out + [n for r in recs for n in r.notes])
    figures = apnea_real.score_committed(model, recs)
    figures["files_left_out"] = left_out
    figures["file_notes"] = {r.name: r.notes for r in recs if r.notes}
    _report(figures, as_json)


@evaluate.command("snoring")
@_with_options
@click.option("--clips", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Score recorded clips instead: a folder with snoring/ and other/ sound files "
                   "(any case, subfolders too; WAV, FLAC, OGG, AIFF or MP3, 8-192 kHz), put end "
                   "to end into 30-s epochs "
                   "(--nights, --cache and --hours are not used then).")
@click.option("--json", "as_json", is_flag=True, help="Only the JSON line.")
def eval_snoring(cache, models, nights, hours, clips, as_json):
    """Snoring sensitivity/specificity per epoch on held-out randomised simulated bedrooms,
    and whether a call survives gain x0.1/x10, 8-48 kHz and another night around the epoch
    (also under `snoring` in eval breathing). --hours is not used: those nights are 3 h.
    With --clips, the same model on epochs of recorded clips (real audio) instead."""
    clf = _classifiers(models)
    echo = (lambda *_: None) if as_json else click.echo
    if clips is not None:
        from nightlink.tools.train import snore

        _report(snore.real_clip_figures(clf, clips, models=models), as_json)
        return
    _report(_snoring_figures(clf, cache, nights, echo), as_json)


@evaluate.command("glucose")
@_with_options
@click.option("--json", "as_json", is_flag=True, help="Only the JSON line.")
@_glucose_data
@click.option("--people", default=None, help="Only these people of --data (comma-separated file stems or folder names).")
@click.option("--budget", type=finite_range(0, 50), default=None,
              help="False alarms a week the person accepts (default: the model's policy).")
@click.option("--persist", type=click.IntRange(1, 12), default=None,
              help="Risky predictions in a row before the alarm (default: the model's policy).")
@_glucose_tz
@_glucose_date_order
def eval_glucose(cache, models, nights, hours, as_json, data, people, budget, persist, tz,
                 date_order):
    """Forecast RMSE at 30 min and low alarms against a 70 mg/dL threshold alarm: on simulated
    adolescents and children the committed model never saw, or with --data on real CGM, nights
    and whole days apart, next to a trend alarm too (`seen_in_training` names anyone the
    model was trained on)."""
    from nightlink.edge.features.glucose_risk import LiteRtGlucose, policy_from_meta
    from nightlink.tools.train import glucose, glucose_data

    path = models / "glucose_risk.tflite"
    if not path.exists():
        raise NightlinkError(f"No trained model at {path}; run nightlink train glucose first.")
    try:
        meta = json.loads((models / "glucose_risk.json").read_text())
        runtime = LiteRtGlucose(path.read_bytes())
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise _unreadable_models(models, exc) from None
    if data is not None:
        from nightlink.tools.train import cgm_real, glucose_real

        names = _people(people)
        left_out: list[str] = []
        group = cgm_real.load_folder(data, names, _zone(tz), date_order, left_out)
        _say_notes(left_out)
        if not group:
            who = f"None of {people}" if people else "No one"
            raise NightlinkError(f"{who} has CGM readings in {data}.")
        policy = policy_from_meta(meta, budget_per_week=budget, persist=persist)
        figures = glucose_real.evaluate(runtime, group, policy)
        figures["seen_in_training"] = _seen_in_training(meta.get("train", {}), group)
        figures["file_notes"] = {p.name: p.notes for p in group if p.notes}
        figures["files_left_out"] = left_out
        if not figures.get("nights"):
            click.echo(glucose_real.EMPTY_NIGHTS_NOTE, err=True)
        _report(figures, as_json)
        return
    te = glucose_data.load_set(glucose_data.YOUTH, _take(GLUCOSE_TEST, nights), 480, cache)
    figures = glucose.evaluate(runtime, te, int(meta["alarm_permille"]))
    figures["alarm_permille"] = meta["alarm_permille"]
    _report(figures, as_json)


@evaluate.command("alerts")
@click.option("--json", "as_json", is_flag=True, help="Only the JSON line.")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Folder of per-person CGM files, as for eval glucose.")
@click.option("--people", default=None, help="Only these people of --data (comma-separated file stems or folder names).")
@_glucose_tz
@_glucose_date_order
def eval_alerts(as_json, data, people, tz, date_order):
    """The cloud's low alerts (urgent low, low, predicted low) replayed over real CGM and
    scored like the low alarm: the predicted low as the clock's model under its own policy
    (what the cloud raises without a calibration), under the threshold the cloud calibrates
    each day on the person's previous nights (`cal_`, families without a bedside node), and
    as the straight line it raised before (`line_`); the
    predicted-low alerts alone (`predicted_`) and every low alert (`all_`), nights and days
    (`day_`). Minutes per person-month of readings: every reading is a full evaluation."""
    from nightlink.tools.train import alert_replay, cgm_real
    from nightlink.tools.train.glucose_real import EMPTY_NIGHTS_NOTE

    left_out: list[str] = []
    group = cgm_real.load_folder(data, _people(people), _zone(tz), date_order, left_out)
    _say_notes(left_out)
    if not group:
        who = f"None of {people}" if people else "No one"
        raise NightlinkError(f"{who} has CGM readings in {data}.")
    figures = alert_replay.evaluate(group)
    figures["seen_in_training"] = _seen_in_training(_glucose_meta().get("train", {}), group)
    figures["files_left_out"] = left_out
    if not figures.get("nights"):
        click.echo(EMPTY_NIGHTS_NOTE, err=True)
    _report(figures, as_json)


def _glucose_meta() -> dict:
    """The committed glucose model's metadata ({} when unreadable): who it was trained on."""
    try:
        return json.loads((MODELS / "glucose_risk.json").read_text())
    except (OSError, ValueError):
        return {}


def _people(people: str | None) -> list[str] | None:
    """--people as file stems; None when not given. Empty names (",P02") are no one's."""
    if people is None:
        return None
    names = [n.strip() for n in people.split(",") if n.strip()]
    if not names:
        raise NightlinkError(f"--people {people!r} names no one; give file stems such as P01,P02.")
    return names


def _seen_in_training(train: dict, group) -> list[str]:
    """Who of `group` the model was trained on: by their readings, so another data set's P01
    is not taken for the training set's: a digest of their first two weeks, or their days
    (dates and daily means) for a copy reformatted, rounded, trimmed or put on UTC; by file
    name for a model trained before the digests were kept."""
    from nightlink.tools.train import cgm_real

    if "real_cgm_fingerprints" in train:
        seen = set(train["real_cgm_fingerprints"])
        days = train.get("real_cgm_days", {})
        return sorted(p.name for p in group if cgm_real.fingerprint(p) in seen
                      or cgm_real.trained_on(p, days))
    names = set(train.get("real_cgm", []))
    return sorted(p.name for p in group if p.name in names)


# -- heart-rhythm apnea (real recordings) -------------------------------------------------------


@train.command("breathing-rr")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), multiple=True,
              help="Folder of <rec>_beats.csv.gz and <rec>_apnea_minutes.csv, or of PhysioNet's "
                   "WFDB files (default: ../shared/data/apnea-ecg-learning); give it again to "
                   "train on several folders' recordings together.")
@click.option("--models", type=click.Path(file_okay=False, path_type=Path), default=MODELS,
              show_default=True, help="Folder of the models and their metadata.")
@click.option("--cv", type=click.IntRange(0, 100), default=5, show_default=True,
              help="Folds of whole recordings scored before the final model (0: none).")
@click.option("--json", "as_json", is_flag=True, help="Last line: the cross-validation figures.")
def train_breathing_rr(data, models, cv, as_json):
    """Apnea minutes from RR intervals alone (cyclic variation of heart rate), on real
    recordings: grouped cross-validation, then the committed model on every recording."""
    from nightlink.tools.train import apnea_real

    folders = list(data) or [apnea_real.DEFAULT_DATA]
    for folder in folders:
        if not folder.is_dir():
            raise NightlinkError(f"No recordings folder at {folder}; pass --data.")
    echo = (lambda *_: None) if as_json else click.echo
    left_out: list[str] = []
    sources: list[str] = []
    recs = apnea_real.load_folders(folders, skipped=left_out, sources=sources)
    _say_notes(left_out)
    if cv and not 2 <= cv <= len(recs):
        raise NightlinkError(f"--cv needs between 2 and {len(recs)} folds for {len(recs)} recordings.")
    meta, figures = apnea_real.train_and_validate(
        recs, cv, progress=lambda kind, k, n: echo(f"  {kind}: fold {k}/{n}"),
        source="; ".join(sources))
    path = apnea_real.write_model(models, meta)
    echo(f"wrote {path} ({path.stat().st_size} bytes)")
    _report(figures or {"model": str(path), "bytes": path.stat().st_size,
                        "recordings": len(recs)}, as_json)
