"""Engine and pool from settings, and the embedded PostgreSQL used when no URL is given."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool

from storage import deadlines
from storage.replicas import Replica, Replicas, replica_name

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "blogstore"
PING_AFTER_IDLE_SECONDS = 2.0


def normalize_url(url: str) -> URL:
    """Accept postgres:// and postgresql:// URLs; always use the psycopg2 driver."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername="postgresql+psycopg2")


def libpq_dsn(url: str) -> str:
    """The URL as libpq takes it, for a raw psycopg2 connection (LISTEN, tests)."""
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def mask_url(url: str | URL) -> str:
    """The URL with its password hidden: the only form a database URL may be logged in."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
        return parsed.render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is still a secret
        return "<unparsable database url>"


def make_engine(
    url: str,
    *,
    pool_size: int,
    max_overflow: int = 0,
    pool_timeout: float = 5.0,
    connect_timeout: int = 5,
    tcp_user_timeout_ms: int = 30_000,
    application_name: str = "blogstore",
) -> Engine:
    """A pooled engine that fails fast when the database is slow or gone.

    keepalives and tcp_user_timeout stop a black-holed server from hanging a thread for the
    kernel's default of many minutes; pre-ping drops connections the server has closed.
    """
    engine = create_engine(
        normalize_url(url),
        poolclass=ObservedQueuePool,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_recycle=1800,
        hide_parameters=True,  # errors must never echo bound values (hashes, emails)
        connect_args={
            "connect_timeout": connect_timeout,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": tcp_user_timeout_ms,
            "application_name": application_name,
        },
    )
    deadlines.install(engine, connect_timeout)  # before the pre-ping: it can hang too
    ping_when_idle(engine)
    return engine


def make_replicas(
    urls: list[str],
    *,
    primary_url: str,
    pool_size: int,
    max_lag_ms: int,
    pool_timeout: float = 5.0,
    connect_timeout: int = 5,
) -> Replicas | None:
    """One pooled engine per read replica (None without any), and the poller of their lag.

    Each pool may grow as large as the primary's (every request thread may be reading), but
    opens connections only as reads need them. A replica fails fast, since the primary is
    there to answer instead: a connect timeout of 2 s (libpq's least) and a pool wait of 1 s.
    """
    if not urls:
        return None
    engines = [
        make_engine(
            url,
            pool_size=pool_size,
            pool_timeout=min(pool_timeout, 1.0),
            connect_timeout=min(connect_timeout, 2),
            application_name="blogstore-replica",
        )
        for url in urls
    ]
    return Replicas(
        [Replica(replica_name(engine.url), engine) for engine in engines],
        primary_dsn=libpq_dsn(primary_url),
        replica_dsns=[libpq_dsn(url) for url in urls],
        max_lag_ms=max_lag_ms,
    )


class ObservedQueuePool(QueuePool):
    """A QueuePool that reports each checkout's wait (seconds, timed out?) to `on_wait`.

    The hook for server/telemetry (the pool wait histogram and timeouts); None costs nothing.
    The wait includes opening a new connection when the pool has room for one, and never
    outlasts the current call's budget (storage/deadlines.py).
    """

    on_wait: Callable[[float, bool], None] | None = None
    _sqla_logger_namespace = "sqlalchemy.pool.impl.QueuePool"  # SQLAlchemy's quiet logger
    _configured_timeout: float = 30.0

    @property  # type: ignore[override]
    def _timeout(self) -> float:
        return deadlines.pool_timeout(self._configured_timeout)

    @_timeout.setter
    def _timeout(self, value: float) -> None:
        self._configured_timeout = value

    def _do_get(self) -> Any:
        on_wait = self.on_wait
        if on_wait is None:
            return super()._do_get()
        started = time.perf_counter()
        try:
            connection = super()._do_get()
        except sa_exc.TimeoutError:
            on_wait(time.perf_counter() - started, True)
            raise
        on_wait(time.perf_counter() - started, False)
        return connection

    def recreate(self) -> QueuePool:
        pool = super().recreate()
        pool._configured_timeout = self._configured_timeout  # type: ignore[attr-defined]
        pool.on_wait = self.on_wait  # type: ignore[attr-defined] - same class
        return pool


def ping_when_idle(engine: Engine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Pre-ping, but only connections that sat idle: a busy pool skips a round trip per call.

    A connection used moments ago is almost surely alive; one that idled may have been cut
    (server restart, proxy timeout). A failed ping raises DisconnectionError, and the pool
    then retries the checkout with a fresh connection. Errors on connections that die in
    active use invalidate the pool and surface as UNAVAILABLE, which clients retry.
    """

    @event.listens_for(engine, "checkin")
    def _remember(dbapi_connection: Any, record: Any) -> None:
        record.info["checkin_time"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_in = record.info.get("checkin_time")
        if checked_in is None or time.monotonic() - checked_in < idle_seconds:
            return
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            if not dbapi_connection.autocommit:
                dbapi_connection.rollback()
        except Exception as error:
            raise sa_exc.DisconnectionError() from error


def behind_pooler(dbapi_connection: Any) -> bool:
    """Whether a connection pooler (PgBouncer, ...) stands between this psycopg2 connection and
    PostgreSQL, so that two transactions may run on different server connections.

    The handshake's BackendKeyData names the backend's pid when the client talks to PostgreSQL
    itself, even through a TCP proxy or a port mapping; a pooler hands each client a key of its
    own (PgBouncer: random), since the server connection behind it changes. Leaves no
    transaction open.
    """
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    if not dbapi_connection.autocommit:
        dbapi_connection.rollback()
    return row is None or row[0] != dbapi_connection.get_backend_pid()


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) a pgserver cluster in data_dir and return a URL to its database.

    The cluster keeps its data across restarts and stops when the last process using it exits.
    """
    import pgserver  # imported lazily: only the embedded mode needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    # get_server is pgserver's documented entry point, re-exported without __all__
    server = pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")  # pyright: ignore[reportPrivateImportUsage]
    admin_url = server.get_uri("postgres")
    engine = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": EMBEDDED_DATABASE}
        )
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{EMBEDDED_DATABASE}"'))
    engine.dispose()
    log.info("embedded PostgreSQL running in %s", data_dir)
    return server.get_uri(EMBEDDED_DATABASE)


def create_extension(connection: Any, name: str, command: str) -> None:
    """CREATE EXTENSION `name` in a savepoint, so a refusal (no privilege) leaves the caller's
    transaction usable; a refusal is a RuntimeError naming what a superuser must run, then
    `command` (the blogstore command to run again)."""
    try:
        with connection.begin_nested():
            connection.execute(text(f"CREATE EXTENSION IF NOT EXISTS {name}"))
    except Exception as error:  # noqa: BLE001 - any refusal is reported, not fatal
        raise RuntimeError(
            f"CREATE EXTENSION {name} failed ({type(error).__name__}): a superuser must run "
            f"`CREATE EXTENSION {name}` in this database, then `blogstore {command}`"
        ) from None
