"""The edge node's configuration: one TOML file, checked against a schema before anything starts.

A bad file gives one sentence naming the key, e.g.
"edge.toml: [audio] sample_rate must be between 8000 and 192000 Hz (…), not 4000."
Secrets come from the file or the environment (NIGHTLINK_EDGE_API_SECRET) and are refused
when they are short or a known default, unless `development = true`.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from datetime import time as dt_time
from pathlib import Path

from nightlink.edge.features.glucose_risk import BUDGET_PER_WEEK, MAX_BUDGET_PER_WEEK
from nightlink.edge.node.zone import MIN_NIGHT_MIN, check_clock_time, check_zone
from nightlink.errors import has_control_chars
from nightlink.shared import codec, topics
from nightlink.shared.epoch import MAX_SLEEP_MIN

DEFAULT_SECRETS = {"changeme", "change-me", "password", "nightscout", "secret", "token"}
MIN_SECRET = 12
SECRET_ENV = "NIGHTLINK_EDGE_API_SECRET"


class ConfigError(Exception):
    """The configuration is not valid; the message names the file and the key."""


@dataclass
class AudioConfig:
    enabled: bool = True
    device: str | int | None = None  # sounddevice input device; None = the default microphone
    sample_rate: int = 16000
    keep_raw: Path | None = None  # only when the user asks: write the raw audio there (WAV)


@dataclass
class WearableConfig:
    enabled: bool = False
    address: str = ""  # BLE address (or, on macOS, the CoreBluetooth UUID)


@dataclass
class NightscoutConfig:
    enabled: bool = True
    host: str = "0.0.0.0"  # the LAN: phones upload to the nightstand
    port: int = 1337  # 0: any free port (tests)
    api_secret: str = ""
    title: str = ""  # the site's name in apps (customTitle): the person's, e.g. "Alex"


@dataclass
class FollowerConfig:
    enabled: bool = False
    url: str = ""
    api_secret: str = ""
    token: str = ""
    interval_s: float = 60.0


@dataclass
class RoomConfig:
    enabled: bool = False
    i2c_bus: int = 1
    scd4x: bool = True  # CO2, temperature, humidity (Sensirion SCD40/41, address 0x62)
    bh1750: bool = True  # ambient light (address 0x23)
    noise_from_audio: bool = True
    mic_spl_at_0_dbfs: float = 85.0  # microphone calibration for noise_dba


@dataclass
class NightConfig:
    """The person's sleep schedule, local time: the microphone and wearable make the night's
    recording between these times, and the night is classified once the wake time passes."""

    bedtime: str = "22:00"  # any time; with wake, 1 to 16 hours (across noon: a day sleeper's)
    wake: str = "07:30"  # any time: across noon (day sleepers) moves the nights' boundary


@dataclass
class AlarmConfig:
    """The predicted-low alarm the clocks sound: how many false alarms a week the person (or
    their clinician) accepts; the edge calibrates the threshold on their recent nights to
    that, within safe bounds (edge/features/glucose_risk.py)."""

    false_alarms_per_week: float = BUDGET_PER_WEEK  # 0 .. MAX_BUDGET_PER_WEEK


@dataclass
class BrokerLink:
    """An MQTT broker to connect to."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = ""
    tls: bool = False
    ca_file: str = ""  # with tls: the CA that signed the broker's certificate ("" = the system's)
    keepalive_s: int = 30


@dataclass
class ClocksConfig(BrokerLink):
    """The LAN broker the desk clocks publish their room records to."""


@dataclass
class SyncConfig(BrokerLink):
    """The cloud broker the outbox drains to."""

    keepalive_s: int = 20  # a dead link is noticed within 1.5 keepalives (30 s)
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    connect_timeout_s: float = 10.0  # for the broker's CONNACK: several round trips on a slow link
    resend_after_s: float = 30.0  # rows not acknowledged by then go again
    live_window_epochs: int = 10  # glucose from the last 5 minutes counts as live
    backfill_rows_per_s: float = 20000.0
    backfill_batch_rows: int = 4000
    rows_per_record: int = 120
    max_inflight: int = 50
    max_outbox_rows: int = 14 * 2880 * 4  # two weeks of every stream
    status_interval_s: float = 60.0


@dataclass
class EdgeConfig:
    path: Path | None = None
    db: Path | None = None
    tenant: str = "home"
    retention_days: int = 30
    reserve_mb: int = 8  # kept beside the store, deleted to start on a full disk (0: none)
    development: bool = False
    close_delay_s: float = 5.0  # an epoch is closed this long after it ends (late samples)
    timezone: str = ""  # IANA zone the person sleeps in ("" = the machine's); names the nights
    night_given: bool = False  # set by load(): whether the file has a [night] section
    audio: AudioConfig = field(default_factory=AudioConfig)
    wearable: WearableConfig = field(default_factory=WearableConfig)
    nightscout: NightscoutConfig = field(default_factory=NightscoutConfig)
    follower: FollowerConfig = field(default_factory=FollowerConfig)
    room: RoomConfig = field(default_factory=RoomConfig)
    night: NightConfig = field(default_factory=NightConfig)
    alarm: AlarmConfig = field(default_factory=AlarmConfig)
    clocks: ClocksConfig = field(default_factory=ClocksConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)


_SECTIONS = {
    "audio": AudioConfig,
    "wearable": WearableConfig,
    "nightscout": NightscoutConfig,
    "follower": FollowerConfig,
    "room": RoomConfig,
    "night": NightConfig,
    "alarm": AlarmConfig,
    "clocks": ClocksConfig,
    "sync": SyncConfig,
}


_NOT_KEYS = {"path", "night_given"}  # fields load() fills in, not keys of the file


def _fail(where: str, msg: str):
    sep = " " if where.endswith("]") else ": "
    raise ConfigError(f"{where}{sep}{msg}")


def _check_type(where: str, key: str, value, default):
    """Coerce a TOML value to the type of the field's default, or fail naming the key."""
    want = type(default)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            _fail(where, f"{key} must be true or false, not {value!r}.")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, f"{key} must be a whole number, not {value!r}.")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(where, f"{key} must be a number, not {value!r}.")
        if not math.isfinite(value):  # TOML has nan and inf; no setting means either
            _fail(where, f"{key} must be a finite number, not {value!r}.")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            _fail(where, f"{key} must be text, not {value!r}.")
        return value
    del want
    return value


def _section(name: str, cls, data: dict, file: str):
    obj = cls()
    where = f"{file}: [{name}]" if name else file
    known = set(cls.__dataclass_fields__)
    for key, value in data.items():
        if key not in known or key in _SECTIONS or key in _NOT_KEYS:
            _fail(where, f"unknown key {key!r} (known: {', '.join(sorted(known - _NOT_KEYS))}).")
        default = getattr(obj, key)
        if key in ("db", "keep_raw"):
            if not isinstance(value, str) or not value:
                _fail(where, f"{key} must be a file path.")
            value = Path(value).expanduser()
        elif key in ("bedtime", "wake") and isinstance(value, dt_time):
            # a TOML local time (bedtime = 22:30:00) is as good as the text "22:30"
            if value.second or value.microsecond or value.tzinfo is not None:
                _fail(where, f"{key} must be a time of day in whole minutes, such as "
                             f"\"22:30\", not {value.isoformat()}.")
            value = value.strftime("%H:%M")
        elif key == "device":
            if not isinstance(value, str | int) or isinstance(value, bool):
                _fail(where, "device must be a device name or number.")
        elif default is not None:
            value = _check_type(where, key, value, default)
        setattr(obj, key, value)
    return obj


def load(path: Path | None, env: dict | None = None, *,
         nightscout_secret: bool = True) -> EdgeConfig:
    """Read and check a configuration file (None: the defaults). nightscout_secret=False
    for commands that serve no Nightscout site (the LAN broker's configuration)."""
    env = os.environ if env is None else env
    data: dict = {}
    file = str(path) if path else "defaults"
    if path is not None:
        if Path(path).exists() and not Path(path).is_file():  # a folder, a FIFO: no waiting
            raise ConfigError(f"{path}: not a configuration file (a folder or a device).")
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc}).") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a UTF-8 text file (TOML is text).") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    top = {k: v for k, v in data.items() if k not in _SECTIONS}
    cfg = _section("", EdgeConfig, top, file)
    cfg.path = Path(path) if path else None
    cfg.night_given = "night" in data
    for name, cls in _SECTIONS.items():
        sub = data.get(name, {})
        if not isinstance(sub, dict):
            _fail(file, f"[{name}] must be a table.")
        setattr(cfg, name, _section(name, cls, sub, file))
    _validate(cfg, file, env, nightscout_secret)
    return cfg


def _check_schedule(night: NightConfig, where: str) -> None:
    times = {}
    for key in ("bedtime", "wake"):
        try:
            times[key] = check_clock_time(getattr(night, key))
        except ValueError as exc:
            _fail(where, f"{key}: {exc}.")
    bed, wake = times["bedtime"], times["wake"]
    minutes = ((wake[0] - bed[0]) * 60 + wake[1] - bed[1]) % (24 * 60)
    if minutes > MAX_SLEEP_MIN:
        _fail(where, f"bedtime {night.bedtime} to wake {night.wake} is {minutes // 60} h "
                     f"{minutes % 60:02d} min; a sleep schedule is at most "
                     f"{MAX_SLEEP_MIN // 60} hours (is one of the times the wrong way round?).")
    if minutes < MIN_NIGHT_MIN:
        _fail(where, f"bedtime {night.bedtime} to wake {night.wake} is {minutes} min; a "
                     f"night needs at least {MIN_NIGHT_MIN} minutes in bed to be closed and "
                     "staged.")


def _validate(cfg: EdgeConfig, file: str, env, nightscout_secret: bool = True) -> None:
    try:
        topics.check_name("tenant", cfg.tenant)
    except topics.TopicError as exc:
        _fail(file, f"tenant: {exc}")
    if not 1 <= cfg.retention_days <= 3650:
        _fail(file, f"retention_days must be between 1 and 3650 days, not {cfg.retention_days}.")
    if not 0 <= cfg.reserve_mb <= 1024:
        _fail(file, f"reserve_mb must be between 0 and 1024, not {cfg.reserve_mb}.")
    if not 0 <= cfg.close_delay_s <= 25:
        _fail(file, "close_delay_s must be between 0 and 25 seconds.")
    try:
        check_zone(cfg.timezone)
    except ValueError as exc:
        _fail(file, f"timezone: {exc}.")
    _check_schedule(cfg.night, f"{file}: [night]")
    if not 0 <= cfg.alarm.false_alarms_per_week <= MAX_BUDGET_PER_WEEK:
        _fail(f"{file}: [alarm]", f"false_alarms_per_week must be between 0 and "
                                  f"{MAX_BUDGET_PER_WEEK:g} (two a night), not "
                                  f"{cfg.alarm.false_alarms_per_week}.")
    from nightlink.edge.features.audio import MAX_RATE, MIN_RATE

    if not MIN_RATE <= cfg.audio.sample_rate <= MAX_RATE:
        _fail(f"{file}: [audio]", f"sample_rate must be between {MIN_RATE} and {MAX_RATE} Hz "
              f"(the features are computed at 16000 after resampling), not "
              f"{cfg.audio.sample_rate}.")
    if cfg.wearable.enabled and not cfg.wearable.address:
        _fail(f"{file}: [wearable]", "address is needed when the wearable is enabled.")
    ns = cfg.nightscout
    if not 0 <= ns.port < 65536:
        _fail(f"{file}: [nightscout]", f"port must be 0..65535, not {ns.port}.")
    if len(ns.title) > 60 or has_control_chars(ns.title):
        _fail(f"{file}: [nightscout]", "title must be one line of at most 60 characters, "
                                       "such as the person's name.")
    if ns.enabled and nightscout_secret:
        ns.api_secret = ns.api_secret or env.get(SECRET_ENV, "")
        check_secret(ns.api_secret, f"{file}: [nightscout] api_secret", cfg.development)
    cl = cfg.clocks
    if not cl.username:  # the edge signs in on its LAN broker with its own device account
        cl.username, cl.password = cfg.sync.username, cfg.sync.password
    sy = cfg.sync
    if not 0 < sy.reconnect_min_s <= sy.reconnect_max_s:
        _fail(f"{file}: [sync]", "reconnect_min_s must be more than 0 and at most "
                                 "reconnect_max_s.")
    if not 0 < sy.connect_timeout_s <= 300:
        _fail(f"{file}: [sync]", "connect_timeout_s must be between 0 and 300 seconds.")
    for name, link in (("clocks", cl), ("sync", sy)):
        where = f"{file}: [{name}]"
        if link.ca_file and not Path(link.ca_file).is_file():
            _fail(where, f"ca_file {link.ca_file} is not a readable file.")
        if not 0 < link.port < 65536:
            _fail(where, f"port must be 1..65535, not {link.port}.")
        if not 1 <= link.keepalive_s <= 3600:
            _fail(where, f"keepalive_s must be between 1 and 3600 seconds, not "
                         f"{link.keepalive_s}.")
        for key in ("host", "username", "password"):  # written into mosquitto.conf lines too
            value = getattr(link, key)
            if has_control_chars(value):
                _fail(where, f"{key} holds a line break or another control character.")
        if link.enabled and not link.host.strip():
            _fail(where, "host is needed when the link is enabled.")
    for key, low in (("rows_per_record", 1), ("max_inflight", 1), ("max_outbox_rows", 1),
                     ("backfill_batch_rows", 1), ("live_window_epochs", 1),
                     ("backfill_rows_per_s", 1), ("resend_after_s", 1),
                     ("status_interval_s", 1)):
        if not getattr(sy, key) >= low:
            _fail(f"{file}: [sync]", f"{key} must be at least {low}, not {getattr(sy, key)}.")
    if sy.rows_per_record > codec.MAX_COUNT:
        _fail(f"{file}: [sync]", f"rows_per_record must be at most {codec.MAX_COUNT} (a day of "
                                 f"epochs, the wire's limit), not {sy.rows_per_record}.")
    if not 0 <= cfg.room.i2c_bus <= 16:
        _fail(f"{file}: [room]", f"i2c_bus must be between 0 and 16, not {cfg.room.i2c_bus}.")
    fo = cfg.follower
    if fo.enabled:
        from nightlink.edge.sources.cgm import safe_url, site_url

        if not fo.url.startswith(("http://", "https://")):
            _fail(f"{file}: [follower]",
                  f"url must start with http:// or https://, not {safe_url(fo.url)!r}.")
        try:
            site_url(fo.url)
        except ValueError as exc:
            _fail(f"{file}: [follower]", f"url: {exc}.")
        if fo.interval_s < 10:
            _fail(f"{file}: [follower]", "interval_s must be at least 10 seconds.")


def check_secret(secret: str, where: str, development: bool) -> None:
    """Refuse a missing, short or default secret (a short one is allowed in development)."""
    if not secret:
        raise ConfigError(f"{where} is not set (or set {SECRET_ENV}).")
    if has_control_chars(secret):  # apps cannot type it
        raise ConfigError(f"{where} holds a line break or another control character.")
    if (secret.lower() in DEFAULT_SECRETS or len(secret) < MIN_SECRET
            or guessable(secret)) and not development:
        raise ConfigError(
            f"{where} is a default or shorter than {MIN_SECRET} characters, or a pattern "
            "(a word and digits, a few characters repeated); choose a real secret (or set "
            "development = true on a test machine).")


def guessable(secret: str) -> bool:
    """A secret of length enough that is still among the first guesses: blank, under 5
    different characters, a unit repeated ("changemechangeme"), or a default word with
    digits and punctuation around it ("password1234", "Nightscout!2024")."""
    n = len(secret)
    word = "".join(c for c in secret.lower() if c.isalpha())
    return (not secret.strip() or len(set(secret)) < 5
            or any(secret[k:] == secret[:-k] for k in range(1, min(17, n)))
            or word in DEFAULT_SECRETS or word in ("", "apisecret", "letmein", "qwerty",
                                                  "admin"))
