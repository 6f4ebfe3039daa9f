"""One Settings object, read from the environment once in the CLI and passed down."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from storage.credentials import digest


class ConfigError(ValueError):
    pass


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "blogstore"


@dataclass(frozen=True)
class ServiceKey:
    name: str
    digest: bytes = field(repr=False)


@dataclass(frozen=True)
class Settings:
    database_url: str | None = field(default=None, repr=False)  # secret: never printed
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "[::]"
    port: int = 50051
    workers: int = 1
    threads: int = 16
    max_concurrent_rpcs: int = 256
    max_watchers: int = 100
    max_concurrent_batches: int = 2
    db_pool_size: int = 0  # 0: as many connections as threads
    db_pool_timeout: float = 5.0
    db_connect_timeout: int = 5
    statement_timeout_ms: int = 30_000
    bcrypt_rounds: int = 12
    access_token_ttl_seconds: int = 86_400
    service_keys: tuple[ServiceKey, ...] = ()
    allow_registration: bool = False
    default_monthly_cost_limit_micros: int = 50_000_000  # 50.00 USD
    default_monthly_article_limit: int = 100
    page_token_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    log_level: str = "INFO"
    log_format: str = "text"
    shutdown_grace_seconds: float = 20.0
    health_interval_seconds: float = 5.0
    max_connection_age_seconds: int = 300
    metrics_port: int = 9464  # 0: no metrics endpoint
    slow_query_ms: int = 200
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None  # set: clients must present a certificate

    @property
    def pool_size(self) -> int:
        return self.db_pool_size or self.threads

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        s = _Reader(env)
        settings = cls(
            database_url=env.get("DATABASE_URL") or None,
            data_dir=Path(env["BLOGSTORE_DATA_DIR"])
            if env.get("BLOGSTORE_DATA_DIR")
            else default_data_dir(),
            host=env.get("BLOGSTORE_HOST", "[::]"),
            port=s.int("BLOGSTORE_PORT", 50051, 0, 65535),
            workers=s.int("BLOGSTORE_WORKERS", 1, 1, 64),
            threads=s.int("BLOGSTORE_THREADS", 16, 1, 1024),
            max_concurrent_rpcs=s.int("BLOGSTORE_MAX_CONCURRENT_RPCS", 256, 1, 100_000),
            max_watchers=s.int("BLOGSTORE_MAX_WATCHERS", 100, 1, 100_000),
            max_concurrent_batches=s.int("BLOGSTORE_MAX_CONCURRENT_BATCHES", 2, 1, 64),
            db_pool_size=s.int("BLOGSTORE_DB_POOL_SIZE", 0, 0, 1000),
            db_pool_timeout=s.float("BLOGSTORE_DB_POOL_TIMEOUT_SECONDS", 5.0),
            db_connect_timeout=s.int("BLOGSTORE_DB_CONNECT_TIMEOUT_SECONDS", 5, 1, 300),
            statement_timeout_ms=s.int("BLOGSTORE_STATEMENT_TIMEOUT_MS", 30_000, 1, 86_400_000),
            bcrypt_rounds=s.int("BLOGSTORE_BCRYPT_ROUNDS", 12, 12, 20),
            access_token_ttl_seconds=s.int(
                "BLOGSTORE_ACCESS_TOKEN_TTL_SECONDS", 86_400, 60, 31_536_000
            ),
            service_keys=parse_service_keys(env.get("BLOGSTORE_SERVICE_KEYS", "")),
            allow_registration=s.bool("BLOGSTORE_ALLOW_REGISTRATION", False),
            default_monthly_cost_limit_micros=s.dollars(
                "BLOGSTORE_DEFAULT_MONTHLY_COST_LIMIT", 50_000_000
            ),
            default_monthly_article_limit=s.int(
                "BLOGSTORE_DEFAULT_MONTHLY_ARTICLE_LIMIT", 100, 1, 10**9
            ),
            log_level=env.get("BLOGSTORE_LOG_LEVEL", "INFO").upper(),
            log_format=s.choice("BLOGSTORE_LOG_FORMAT", "text", ("text", "json")),
            shutdown_grace_seconds=s.float("BLOGSTORE_SHUTDOWN_GRACE_SECONDS", 20.0),
            health_interval_seconds=s.float("BLOGSTORE_HEALTH_INTERVAL_SECONDS", 5.0),
            max_connection_age_seconds=s.int(
                "BLOGSTORE_MAX_CONNECTION_AGE_SECONDS", 300, 1, 86_400 * 7
            ),
            metrics_port=s.int("BLOGSTORE_METRICS_PORT", 9464, 0, 65535),
            slow_query_ms=s.int("BLOGSTORE_SLOW_QUERY_MS", 200, 1, 86_400_000),
            tls_cert_file=s.path("BLOGSTORE_TLS_CERT_FILE"),
            tls_key_file=s.path("BLOGSTORE_TLS_KEY_FILE"),
            tls_client_ca_file=s.path("BLOGSTORE_TLS_CLIENT_CA_FILE"),
        )
        if secret := env.get("BLOGSTORE_PAGE_TOKEN_SECRET"):
            settings = dataclasses.replace(settings, page_token_secret=secret.encode())
        return settings


def parse_service_keys(raw: str) -> tuple[ServiceKey, ...]:
    """`name:key,name2:key2`; several keys (even per name) may be live at once for rotation."""
    keys = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, key = item.partition(":")
        if not sep or not name or len(key) < 16:
            raise ConfigError("BLOGSTORE_SERVICE_KEYS entries are name:key with keys of 16+ chars")
        keys.append(ServiceKey(name=name, digest=digest(key)))
    return tuple(keys)


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def int(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.env.get(name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer") from None
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low} and {high}")
        return value

    def path(self, name: str) -> Path | None:
        raw = self.env.get(name, "").strip()
        return Path(raw) if raw else None

    def float(self, name: str, default: float) -> float:
        raw = self.env.get(name)
        if raw in (None, ""):
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number") from None
        if value < 0:
            raise ConfigError(f"{name} must not be negative")
        return value

    def dollars(self, name: str, default_micros: int) -> int:
        """A positive US-dollar amount ("50.00") as integer micros, exactly (no float)."""
        raw = self.env.get(name, "").strip()
        if not raw:
            return default_micros
        try:
            micros = Decimal(raw) * 1_000_000
        except InvalidOperation:
            raise ConfigError(f"{name} must be an amount in US dollars, like 50.00") from None
        if micros <= 0 or micros != micros.to_integral_value():
            raise ConfigError(f"{name} must be positive, with at most 6 decimal places")
        return int(micros)

    def bool(self, name: str, default: bool) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.env.get(name, default).lower() or default
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}")
        return value
