"""Prometheus metrics of the cloud processes (served at /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

INGEST_ROWS = Counter("nightlink_ingest_rows_total", "Epoch rows stored by ingest", ["stream"])
INGEST_MESSAGES = Counter("nightlink_ingest_messages_total", "MQTT messages handled", ["result"])
DEAD_LETTERS = Counter("nightlink_dead_letters_total", "Messages sent to the dead-letter table")
DEVICE_LAG = Gauge("nightlink_device_lag_seconds",
                   "Seconds between a device's newest epoch and its arrival", ["device"])
API_LATENCY = Histogram("nightlink_api_latency_seconds", "API request latency",
                        ["method", "route"],
                        buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
DEVICE_DROPS = Gauge("nightlink_device_dropped_rows", "Rows a device dropped when its outbox "
                     "was full, as it last reported", ["device", "stream"])
