"""`nightlink demo`: simulated nights through the edge, an embedded broker (`broker.py`), the
cloud and the emulated clock (`run.py`), ending with the reports (`report.py`)."""
