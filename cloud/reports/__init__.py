"""Doctors' reports: patient settings, the fused-night cache, the 14-day report, charts,
HTML and PDF rendering, CSV and JSON exports."""
