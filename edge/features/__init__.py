"""From samples to features, and from features to a night's figures.

`audio.py` streaming bedroom-audio features (loudness, spectrum, MFCC, snoring, breathing,
silences), `reducers.py` wearable, CGM and room features per epoch, `pipeline.py` both into
one stored record per epoch and stream, `night_summary.py` a night's summary, `classify.py`
and `glucose_risk.py` the int8 classifiers over a stored night.
"""
