"""One Settings object, read from the environment once in the CLI and passed down.

Each setting is declared once below, with its bounds; its environment variable is
`BLOGSTORE_<FIELD NAME>` (only `DATABASE_URL` has no prefix). `Settings(...)` takes values
as keyword arguments and nothing from the environment; `Settings.from_env()` reads it.
"""

from __future__ import annotations

import contextvars
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretBytes,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

from storage.credentials import digest
from storage.embeddings import DEFAULT_DIMENSIONS, MAX_DIMENSIONS
from storage.lifecycle.partitions import DEFAULT_AHEAD
from storage.rls import APP_ROLE
from storage.secrets import Keyring, parse_keyring, parse_keys

ENV_PREFIX = "BLOGSTORE_"


class ConfigError(ValueError):
    """One line per bad value, each naming its environment variable and what it accepts."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "blogstore"


@dataclass(frozen=True)
class ServiceKey:
    name: str
    digest: bytes = field(repr=False)


def parse_service_keys(raw: object) -> tuple[ServiceKey, ...]:
    """`name:key,name2:key2`; several keys (even per name) may be live at once for rotation."""
    if not isinstance(raw, str):
        return tuple(raw)  # type: ignore[arg-type]  # already parsed (Settings.replace)
    keys = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, key = item.partition(":")
        if not sep or not name or len(key) < 16:
            raise ValueError("entries are name:key, with keys of 16 or more characters")
        keys.append(ServiceKey(name=name, digest=digest(key)))
    return tuple(keys)


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# The environment a from_env() call reads (None: Settings(...) reads no environment at all).
_ENVIRONMENT: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "blogstore_environment", default=None
)


class _Environment(EnvSettingsSource):
    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _ENVIRONMENT.get() or {}
        return {name.lower(): value for name, value in env.items() if value != ""}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        validate_default=True,
        populate_by_name=True,
    )

    database_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )
    data_dir: Path = Field(default_factory=default_data_dir)
    host: str = "[::]"
    port: int = Field(50051, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    threads: int = Field(16, ge=1, le=1024)
    max_concurrent_rpcs: int = Field(256, ge=1, le=100_000)
    max_watchers: int = Field(100, ge=1, le=100_000)
    max_concurrent_batches: int = Field(2, ge=1, le=64)
    db_pool_size: int = Field(0, ge=0, le=1000)  # 0: as many connections as threads
    db_pool_timeout_seconds: float = Field(5.0, gt=0, le=300)
    db_connect_timeout_seconds: int = Field(5, ge=1, le=300)
    statement_timeout_ms: int = Field(30_000, ge=1, le=86_400_000)
    bcrypt_rounds: int = Field(12, ge=12, le=20)
    access_token_ttl_seconds: int = Field(86_400, ge=60, le=31_536_000)
    service_keys: Annotated[tuple[ServiceKey, ...], NoDecode] = ()
    allow_registration: bool = False
    default_monthly_cost_limit: Decimal = Field(
        Decimal("50.00"), gt=0, le=10**9, decimal_places=6
    )  # US dollars
    default_monthly_article_limit: int = Field(100, ge=1, le=10**9)
    page_token_secret: SecretBytes = Field(
        default_factory=lambda: SecretBytes(secrets.token_bytes(32))
    )
    log_level: Annotated[LogLevel, BeforeValidator(_upper)] = "INFO"
    log_format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = "text"
    shutdown_grace_seconds: float = Field(20.0, ge=0, le=3600)
    health_interval_seconds: float = Field(5.0, ge=0.1, le=3600)
    max_connection_age_seconds: int = Field(300, ge=1, le=86_400 * 7)
    metrics_port: int = Field(9464, ge=0, le=65535)  # 0: no metrics endpoint
    slow_query_ms: int = Field(200, ge=1, le=86_400_000)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None  # set: clients must present a certificate
    # Retention (`blogstore retention`); 0 turns a policy off.
    retention_deleted_article_days: int = Field(30, ge=0, le=36_500)
    retention_revisions_per_article: int = Field(50, ge=0, le=1_000_000)
    retention_revision_days: int = Field(365, ge=0, le=36_500)
    retention_pipeline_days: int = Field(180, ge=0, le=36_500)
    retention_usage_event_months: int = Field(24, ge=0, le=1200)
    retention_audit_event_days: int = Field(730, ge=0, le=36_500)
    retention_competitor_article_days: int = Field(180, ge=0, le=36_500)
    retention_batch_size: int = Field(1000, ge=1, le=100_000)
    retention_lock_timeout_ms: int = Field(200, ge=1, le=60_000)
    backup_dir: Path | None = None  # None: <data_dir>/backups (see backup_directory)
    backup_keep_hourly: int = Field(48, ge=0, le=100_000)
    backup_keep_daily: int = Field(14, ge=0, le=100_000)
    backup_keep_weekly: int = Field(8, ge=0, le=100_000)
    backup_compression: int = Field(1, ge=0, le=9)  # gzip level of pg_dump -Fc
    # Protections (README "Limits and protections").
    login_max_failures: int = Field(5, ge=1, le=1000)  # failed logins before back-off starts
    login_backoff_seconds: float = Field(1.0, gt=0, le=3600)  # first wait; doubles per failure
    login_backoff_max_seconds: float = Field(900.0, gt=0, le=86_400)
    bcrypt_threads: int = Field(1, ge=1, le=64)  # password hashing pool, apart from requests
    max_watchers_per_principal: int = Field(0, ge=0, le=100_000)  # 0: 10% of max, at least 5
    max_batches_per_principal: int = Field(1, ge=1, le=64)
    max_calls_per_principal: int = Field(0, ge=0, le=1024)  # 0: half the threads, at least 1
    # Failed logins from one forwarded end-user address (any login) before back-off starts.
    login_max_failures_per_address: int = Field(20, ge=1, le=100_000)
    # Calls each service principal has in flight: 0: three quarters of the threads, at least 1.
    max_calls_per_service: int = Field(0, ge=0, le=1024)
    # The role every transaction of the service runs as (row-level security; storage/rls.py).
    # "none": no switch, the connecting user's own rights (as the tables' owner: no RLS).
    db_role: str = Field(APP_ROLE, pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # Keys of user secrets (storage/secrets.py): `key_id:key,...`, each key 32 random bytes in
    # URL-safe base64; the first encrypts, all decrypt. Unset: secret RPCs are refused.
    secret_keys: SecretStr | None = None
    # The LLM call log (usage events): keep the prompt and completion texts (off: dropped),
    # each cut to this many bytes of UTF-8, and clear them after this many days (0: never).
    usage_log_text: bool = False
    usage_log_text_max_bytes: int = Field(65_536, ge=1, le=262_144)
    retention_usage_text_days: int = Field(30, ge=0, le=36_500)
    # Values per embedding vector (storage/embeddings.py): the vector(n) columns are made with
    # it, and calls with another length are INVALID_ARGUMENT. At most 2000 (pgvector's HNSW).
    embedding_dimensions: int = Field(DEFAULT_DIMENSIONS, ge=1, le=MAX_DIMENSIONS)
    # Live API keys and access tokens kept in memory per process (server/credential_cache.py):
    # at most this many, each at most this many seconds (0 in either: every call reads the
    # database). Revocations reach every process by NOTIFY.
    credential_cache_size: int = Field(10_000, ge=0, le=1_000_000)
    credential_cache_ttl_seconds: int = Field(60, ge=0, le=86_400)
    # GetArticle replies kept in memory per process (server/article_cache.py): at most this
    # many entries (one per article and view) and this many bytes of encoded replies (0 in
    # either: every call reads the database). Changes reach every process by NOTIFY.
    # 128 MiB holds ~6,000 articles of ~20 KB in the FULL view (BENCHMARKS.md: the service
    # key's 5,000-article working set is 97 MB; at 64 MiB a third of its calls missed).
    article_cache_entries: int = Field(10_000, ge=0, le=1_000_000)
    article_cache_bytes: int = Field(128 * 1024 * 1024, ge=0, le=64 * 1024**3)
    # Streaming replicas of the primary that serve reads (storage/replicas.py), comma-separated
    # URLs; each gets a pool as large as the primary's. A replica whose lag is over the limit
    # serves only reads whose consistency token it has replayed.
    replica_urls: SecretStr | None = None
    replica_max_lag_ms: int = Field(1000, ge=0, le=3_600_000)
    # The ledgers' monthly partitions (server/partitions.py): months created ahead of the
    # current one, by each server process at start and hourly.
    partitions_ahead: int = Field(DEFAULT_AHEAD, ge=0, le=120)
    # Behind a connection pooler (PgBouncer in transaction mode): the session-bound work (the
    # LISTEN connection, migrations' advisory lock, pg_dump) goes to this URL, straight to
    # PostgreSQL. Unset: DATABASE_URL (see `direct_url`).
    direct_database_url: SecretStr | None = None
    # Server-side PREPARE of the hot statements (storage/uow.py): "auto" prepares unless the
    # connection turns out to go through a pooler (PgBouncer: storage.engine.behind_pooler),
    # where a later transaction may run on another server connection without the statement.
    db_prepare: Annotated[Literal["auto", "on", "off"], BeforeValidator(_lower)] = "auto"
    # gRPC's HTTP/2 BDP probing, which grows each stream's receive window with the link's
    # bandwidth-delay product. Off (default): windows stay 64 KB, so the batches waiting for a
    # slot hold ~nothing (issue 17); on: faster uploads of large requests over slow links.
    http2_bdp_probe: bool = False
    # How long one user's next RecordUsage group may wait for the calls just answered to come
    # back (storage/usage_batch.py): fuller groups, fewer statements and flushes.
    usage_group_wait_ms: int = Field(5, ge=0, le=100)

    @field_validator("service_keys", mode="before")
    @classmethod
    def _parse_service_keys(cls, raw: object) -> tuple[ServiceKey, ...]:
        return parse_service_keys(raw)

    @field_validator("secret_keys")
    @classmethod
    def _check_secret_keys(cls, keys: SecretStr | None) -> SecretStr | None:
        if keys is not None:
            parse_keys(keys.get_secret_value())  # ValueError names the entry, not the key
        return keys

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: Any, **_others: Any
    ) -> tuple[Any, ...]:
        return (init_settings, _Environment(settings_cls))

    @property
    def replica_url_list(self) -> list[str]:
        """BLOGSTORE_REPLICA_URLS, split on commas (empty: no replicas)."""
        raw = self.replica_urls.get_secret_value() if self.replica_urls else ""
        return [url.strip() for url in raw.split(",") if url.strip()]

    @property
    def direct_url(self) -> str | None:
        """Where session-bound work connects: BLOGSTORE_DIRECT_DATABASE_URL, else DATABASE_URL."""
        url = self.direct_database_url or self.database_url
        return url.get_secret_value() if url else None

    @property
    def pool_size(self) -> int:
        return self.db_pool_size or self.threads

    @property
    def watchers_per_principal(self) -> int:
        return self.max_watchers_per_principal or max(5, self.max_watchers // 10)

    @property
    def calls_per_principal(self) -> int:
        return self.max_calls_per_principal or max(1, self.threads // 2)

    @property
    def calls_per_service(self) -> int:
        return self.max_calls_per_service or max(1, self.threads * 3 // 4)

    @property
    def secret_keyring(self) -> Keyring | None:
        """The keys of user secrets, or None when BLOGSTORE_SECRET_KEYS is unset."""
        return parse_keyring(self.secret_keys.get_secret_value()) if self.secret_keys else None

    @property
    def backup_directory(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    @property
    def default_monthly_cost_limit_micros(self) -> int:
        return int(self.default_monthly_cost_limit * 1_000_000)

    def replace(self, **changes: object) -> Settings:
        """A copy with the given fields changed (None leaves a field as it is), validated."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values.update({k: v for k, v in changes.items() if v is not None})
        return _validated(lambda: type(self)(**values))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from `env` (default os.environ); ConfigError lists every bad value."""
        token = _ENVIRONMENT.set(os.environ if env is None else env)
        try:
            return _validated(cls)
        finally:
            _ENVIRONMENT.reset(token)


SECRET_FIELDS = frozenset(
    {
        "database_url",
        "direct_database_url",
        "service_keys",
        "page_token_secret",
        "secret_keys",
        "replica_urls",
    }  # fmt: skip
)


def variable_name(name: str) -> str:
    """The environment variable of a Settings field."""
    if name == "database_url":
        return "DATABASE_URL"
    return ENV_PREFIX + name.upper()


def _validated(build: Any) -> Settings:
    try:
        return build()
    except ValidationError as error:
        raise ConfigError("\n".join(_describe(e) for e in error.errors())) from None


def _describe(error: Any) -> str:
    """`BLOGSTORE_PORT: must be between 0 and 65535 (got 'x')`; never the value of a secret."""
    name = str(error["loc"][0]) if error["loc"] else ""
    info = Settings.model_fields.get(name)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"].startswith(("greater_than", "less_than")) or error["type"].endswith(
        "_parsing"
    ):
        message = _accepted_range(info) or message
    got = "" if name in SECRET_FIELDS else f" (got {error['input']!r})"
    variable = variable_name(name) if info else name
    return f"{variable}: {message[:1].lower()}{message[1:]}{got}"


def _accepted_range(info: Any) -> str | None:
    bounds = {key: getattr(rule, key) for rule in info.metadata for key in ("ge", "gt", "le")
              if getattr(rule, key, None) is not None}  # fmt: skip
    if "le" not in bounds:
        return None
    if "ge" in bounds:
        return f"must be between {bounds['ge']} and {bounds['le']}"
    return f"must be above {bounds['gt']} and at most {bounds['le']}"
