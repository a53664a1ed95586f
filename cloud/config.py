"""Cloud settings from the environment (prefix NIGHTLINK_) or a .env file, checked at start.

The environment is production unless NIGHTLINK_ENV=development says otherwise, so a server
started with no settings at all refuses the default JWT secret with one sentence instead of
signing sign-in tokens anyone could forge. The command-line tools that sign nothing (tenants,
accounts, broker files) load `ToolSettings`, which need no secret.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nightlink.cloud.push import PUSH_HOSTS

DEFAULT_SECRETS = {"", "changeme", "change-me", "secret", "nightlink", "development"}
MIN_SECRET = 32
MIN_SECRET_BITS = 72  # length x the characters' Shannon entropy (as they occur in it): 32
# random digits give 99 on average (the lowest of 300,000 draws 75.9), 32 random hex 116;
# "ab" drawn 40 times about 40, "a" x 26 + "bcdef1" 38, "a" x 79 + "b" 9


class SettingsError(ValueError):
    """The settings are not usable; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NIGHTLINK_", env_file=".env",
                                      env_file_encoding="utf-8", extra="ignore")

    env: Literal["development", "production", "test"] = "production"
    database_url: str = "sqlite:///nightlink-cloud.db"
    jwt_secret: str = "changeme"
    access_token_minutes: int = Field(15, ge=1, le=24 * 60)
    refresh_token_days: int = Field(30, ge=1, le=365)
    login_attempts_per_minute: int = Field(5, ge=1, le=1000)
    # MQTT: the broker the ingest workers subscribe to and publish acks on.
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(1883, ge=1, le=65535)
    mqtt_username: str = ""
    mqtt_password: str = ""
    mqtt_tls: bool = False
    mqtt_ca_file: str = ""  # with TLS: a private CA that signed the broker's certificate
    mqtt_shared_group: str = "ingest"  # "" subscribes without a shared subscription
    # First administrator, created at start when no user exists yet.
    admin_email: str = ""
    admin_password: str = ""
    public_base_url: str = "http://127.0.0.1:8000"
    tenant_domain: str = ""  # e.g. "nightlink.example" so fam-1.nightlink.example names fam-1
    purge_after_days: int = Field(30, ge=1, le=3650)
    # Sign-up (a new account with its own tenant) and the mail it sends: verification links
    # and invitations go out by SMTP when smtp_host is set, else into mail_dir as .eml files
    # (an operator without a mail server hands the link over themselves).
    signup_enabled: bool = True
    signups_per_hour: int = Field(20, ge=1, le=100000)
    smtp_host: str = ""
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = True
    mail_from: str = "Nightlink <nightlink@localhost>"
    mail_dir: str = "nightlink-mail"
    invite_days: int = Field(7, ge=1, le=90)
    # Nightscout's `cors` option: the origin browser apps (Nightscout Reporter) may read the
    # Nightscout APIs from; "" sends no CORS headers.
    nightscout_cors_origin: str = "*"
    # MQTT ingest: a device over its token bucket is slowed down (held, unacknowledged), not
    # refused; a consumer with no progress for ingest_stall_s is replaced; broker and
    # database refusals back off with jitter up to their ceilings.
    # An edge catching up sends ~40-80 messages a second (its backfill bucket, resends after
    # a reconnect); a rate below that delays acks, which brings more resends: keep a margin.
    ingest_rate_per_s: float = Field(500.0, gt=0, le=100000)
    ingest_burst: int = Field(5000, ge=1, le=1000000)
    ingest_stall_s: float = Field(60.0, ge=1, le=3600)
    ingest_max_held: int = Field(2000, ge=1, le=1000000)
    mqtt_connect_timeout_s: float = Field(15.0, gt=0, le=300)
    # The bearer token /metrics asks of a scraper (its series name every device of every
    # tenant); a production server without one serves no metrics.
    metrics_token: str = ""
    mqtt_backoff_max_s: float = Field(30.0, ge=1, le=3600)
    db_backoff_max_s: float = Field(30.0, ge=0.1, le=3600)
    # HTTP: the largest request body (after decompression), and uploads per tenant (writes
    # wait up to upload_queue_s for a token, then 429 with Retry-After; rate 0 = no limit).
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    upload_rate_per_min: float = Field(60.0, ge=0, le=100000)
    upload_burst: int = Field(600, ge=1, le=1000000)
    upload_queue_s: float = Field(10.0, ge=0, le=300)
    # Web Push (cloud/push.py): the server's P-256 key that signs every push (a secret:
    # `nightlink cloud push-key` makes one; "" sends none), and the contact push services
    # may write to about them ("" takes mail_from's address).
    push_key: str = ""
    push_subject: str = ""
    # the push services the cloud posts to (host names, each with its subdomains; "*": any)
    push_hosts: str = ",".join(PUSH_HOSTS)

    @field_validator("push_key")
    @classmethod
    def _push_key(cls, v: str) -> str:
        if v.strip():
            from nightlink.cloud.push import load_key

            load_key(v)  # a PushKeyError (a ValueError) names the key through pydantic
        return v.strip()

    @field_validator("push_subject")
    @classmethod
    def _push_subject(cls, v: str) -> str:
        if v and not v.startswith(("mailto:", "https://")):
            raise ValueError("must be a mailto: or https: URL (RFC 8292)")
        return v

    def push_host_list(self) -> tuple[str, ...]:
        return tuple(h.strip().lower().rstrip(".") for h in self.push_hosts.split(",")
                     if h.strip())

    def push_contact(self) -> str:
        """push_subject, else mailto: the address mail is sent from."""
        if self.push_subject:
            return self.push_subject
        address = self.mail_from.rsplit("<", 1)[-1].rstrip(">").strip()
        return f"mailto:{address}"

    @field_validator("mqtt_ca_file")
    @classmethod
    def _ca_file(cls, v: str) -> str:
        if v and not Path(v).is_file():
            raise ValueError(f"{v} is not a readable file")
        return v

    @field_validator("database_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return v

    @model_validator(mode="after")
    def _secrets(self):
        if self.env != "development":
            if self.jwt_secret.lower() in DEFAULT_SECRETS or len(self.jwt_secret) < MIN_SECRET:
                raise ValueError(
                    f"NIGHTLINK_JWT_SECRET must be set to a random value of at least {MIN_SECRET} "
                    f"characters (e.g. `openssl rand -hex 32`) because NIGHTLINK_ENV is "
                    f"{self.env}; only NIGHTLINK_ENV=development accepts the default"
                )
            if _patterned(self.jwt_secret):  # "a" * 32, "changeme" * 4
                raise ValueError(
                    "NIGHTLINK_JWT_SECRET repeats a few characters or a short pattern; it must "
                    "be a random value (e.g. `openssl rand -hex 32`)"
                )
            if self.metrics_token and (len(self.metrics_token) < MIN_SECRET
                                       or _patterned(self.metrics_token)):
                raise ValueError(
                    f"NIGHTLINK_METRICS_TOKEN must be a random value of at least {MIN_SECRET} "
                    "characters (e.g. `openssl rand -hex 32`)")
            if self.admin_password and len(self.admin_password) < 12:
                raise ValueError("NIGHTLINK_ADMIN_PASSWORD must be at least 12 characters")
            if self.env == "production" and self.push_key and not _public_contact(
                    self.push_contact()):
                raise ValueError(
                    f"NIGHTLINK_PUSH_SUBJECT must name a contact on a public domain (push "
                    f"services refuse {self.push_contact()}): set it to mailto:you@your-domain "
                    f"or set NIGHTLINK_MAIL_FROM")
        return self

    @model_validator(mode="after")
    def _database(self):
        """In production the database is named: a command run without the service's settings
        would otherwise make ./nightlink-cloud.db and report its work done there."""
        if self.env == "production" and "database_url" not in self.model_fields_set:
            raise ValueError(
                "NIGHTLINK_DATABASE_URL is not set: give the service's settings with --env-file "
                "/etc/nightlink/cloud.env (or NIGHTLINK_ENV_FILE), or set it; only "
                "NIGHTLINK_ENV=development uses ./nightlink-cloud.db")
        return self


def _public_contact(contact: str) -> bool:
    """Whether a VAPID contact names a public domain (Apple refuses mailto:…@localhost)."""
    from urllib.parse import urlsplit

    host = (contact.rsplit("@", 1)[-1] if contact.startswith("mailto:")
            else urlsplit(contact).hostname or "").lower().rstrip(">").strip()
    return "." in host and not host.endswith(
        (".localhost", ".local", ".localdomain", ".internal", ".invalid", ".test", ".example",
         ".home.arpa", ".lan"))


def _patterned(secret: str) -> bool:
    """Whether a secret is no random value: too little variety for its length (its length
    times the Shannon entropy of its characters' frequencies under MIN_SECRET_BITS: a few
    characters, or one that makes up most of it), or a unit of up to 16 characters repeated
    (random hex equals itself shifted by k with a chance of 16**-(len - k))."""
    n = len(secret)
    counts = [secret.count(c) for c in set(secret)]
    bits = -sum(k * math.log2(k / n) for k in counts)  # n x entropy per character
    return bits < MIN_SECRET_BITS or any(secret[k:] == secret[:-k] for k in range(1, min(17, n)))


class ToolSettings(Settings):
    """Settings for commands that sign no token (the database, the broker accounts): the
    secrets the server needs are not asked for."""

    @model_validator(mode="after")
    def _secrets(self):
        return self


def _known_keys(env_file: str) -> None:
    """SettingsError naming a NIGHTLINK_ setting the service's settings file gives that no
    setting has: `NIGHTLINK_SIGNUP_ENABLD=false` would otherwise leave sign-up on, unsaid."""
    import difflib

    from dotenv import dotenv_values

    try:
        given = dotenv_values(env_file, encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return  # said by the settings' own reading below
    known = [f"NIGHTLINK_{name.upper()}" for name in Settings.model_fields]
    for key in given:
        if key.upper().startswith("NIGHTLINK_") and key.upper() not in known:
            near = difflib.get_close_matches(key.upper(), known, n=1)
            raise SettingsError(f"{env_file}: {key} is not a setting"
                                + (f"; did you mean {near[0]}?" if near else "."))


def load_settings(*, serving: bool = True, env_file: str | None = None,
                  **overrides) -> Settings:
    """Settings from the environment (and `env_file`, else ./.env), with overrides;
    SettingsError with one sentence if bad. `serving=False` skips the server's secrets."""
    from pydantic import ValidationError

    if env_file is not None:
        overrides["_env_file"] = env_file
    env_path = env_file if env_file is not None else ".env"
    if Path(env_path).exists() and not Path(env_path).is_file():  # a folder, a FIFO: no wait
        raise SettingsError(f"{env_path}: not a settings file (a folder or a device).")
    if env_file is not None and Path(env_file).is_file():
        _known_keys(env_file)
    try:
        return (Settings if serving else ToolSettings)(**overrides)
    except UnicodeDecodeError:
        raise SettingsError(f"{env_path}: not a UTF-8 text file of NIGHTLINK_*= lines.") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "NIGHTLINK_" + str(err["loc"][0]).upper() if err["loc"] else "the settings"
        msg = err["msg"].removeprefix("Value error, ")
        raise SettingsError(f"{where}: {msg}." if err["loc"] else f"{msg}.") from None


# A host the tenant domain's own site uses rather than a tenant (www.DOMAIN for the portal).
NOT_TENANT_LABELS = frozenset({"www"})


def subdomain_tenant(host: str, domain: str) -> str | None:
    """The tenant a Host header names as `{tenant}.{domain}` (port and case ignored); None for
    another host, `www`, or a deeper name (a.b.{domain} names no tenant)."""
    domain = domain.lower().strip(".")
    host = host.split(":")[0].lower().rstrip(".")
    if not domain or not host.endswith("." + domain):
        return None
    label = host[: -len(domain) - 1]
    return None if "." in label or label in NOT_TENANT_LABELS else label
