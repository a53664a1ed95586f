"""Training, export and evaluation of Nightlink's classifiers (the `train` extra)."""
