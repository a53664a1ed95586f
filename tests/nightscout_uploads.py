"""What Nightscout uploaders send, shared by the edge and cloud endpoint tests."""

from datetime import UTC, datetime


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def xdrip_entry(date_ms: int, sgv: int, delta: float = -1.5, direction: str = "Flat",
                device: str = "xDrip-DexcomG6") -> dict:
    """An sgv entry exactly as xDrip+ uploads it."""
    return {
        "device": device,
        "date": date_ms,
        "dateString": iso(date_ms),
        "sgv": sgv,
        "delta": delta,
        "direction": direction,
        "type": "sgv",
        "filtered": sgv * 1000 + 250,
        "unfiltered": sgv * 1000 - 480,
        "rssi": 100,
        "noise": 1,
        "sysTime": iso(date_ms),
    }
