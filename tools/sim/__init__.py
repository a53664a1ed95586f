"""Synthetic bedside nights with ground truth: sleep, CGM, wearable, audio and room sensors."""
