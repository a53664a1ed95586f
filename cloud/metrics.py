"""Prometheus metrics of the cloud processes (served at /metrics).

Label values come only from bounded sets: stream names this build knows (anything else is
counted as "other"), provisioned devices, and fixed words. A device cannot add series by
what it writes in a message.
"""

from prometheus_client import Counter, Gauge, Histogram

from nightlink.shared import features

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
INGEST_RATE_LIMITED = Counter(
    "nightlink_ingest_rate_limited_total", "Messages held back (not acknowledged) because "
    "their device was over its rate limit (the log names the device)")
INGEST_DB_RETRIES = Counter("nightlink_ingest_db_retries_total",
                            "Messages tried again because the database refused a write")
INGEST_RESTARTS = Counter("nightlink_ingest_restarts_total",
                          "Ingest consumer threads restarted by the supervisor", ["why"])
INGEST_BROKER_FAILURES = Counter("nightlink_ingest_broker_failures_total",
                                 "Failed or lost connections of the ingest to its broker")
LIVE_CLIENTS = Gauge("nightlink_live_clients", "Live clients connected to this process",
                     ["transport"])
LIVE_DROPPED = Counter(
    "nightlink_live_dropped_total", "Live messages dropped because a client (websocket, "
    "socketio) or an in-process subscriber (hub) fell behind; the client is told to resync",
    ["transport"])

PUSHES = Counter("nightlink_push_deliveries_total", "Alert pushes to browsers' push services, "
                 "by outcome (delivered, gone: forgotten, failed: after its tries)", ["result"])

OTHER_STREAM = "other"
_STREAM_NAMES = frozenset(s[features.S_NAME] for s in features.STREAMS)


def stream_label(name) -> str:
    """A stream name as a label value: a known stream's name, else "other"."""
    return name if name in _STREAM_NAMES else OTHER_STREAM
