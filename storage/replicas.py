"""Read replicas: which one may serve a read, and what each has replayed.

A read may go to a streaming replica when that replica is fresh enough for it:
- with a consistency token (the WAL position a write of this client committed at), only once
  the replica's `pg_last_wal_replay_lsn()` has reached the token: read-your-writes;
- without one, when its lag is at most `max_lag_ms`.
Otherwise the primary serves it. A poller thread learns every replica's replay position and
lag a few times a second on connections of its own; a call checks a replica itself (one round
trip) only when its token is ahead of what the poller last saw.

Lag is measured against the primary's own clock, not the replica's: the poller keeps a short
history of the primary's flushed WAL position, and a replica's lag is the time since the
primary first stood past the replica's replay position (0 when it has replayed everything). An
idle primary therefore shows no lag, and a replica cut off from it shows lag that grows.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import re
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage.background import Background

log = logging.getLogger(__name__)

_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_HISTORY_SECONDS = 120.0  # a lag longer than this shows as "at least this"

_committed: ContextVar[int | None] = ContextVar("blogstore_committed_lsn", default=None)


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> an int that orders like the WAL; ValueError if it is not an LSN."""
    match = _LSN.match(text.strip())
    if match is None:
        raise ValueError(f"not a WAL position: {text!r}")
    return int(match.group(1), 16) << 32 | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def note_commit(lsn: int) -> None:
    """Remember that this call committed at (or before) `lsn`: its consistency token."""
    current = _committed.get()
    if current is None or lsn > current:
        _committed.set(lsn)


def committed() -> int | None:
    """The newest WAL position this call committed at, if it wrote (server/interceptors)."""
    return _committed.get()


def forget_commits() -> None:
    _committed.set(None)


class ReplicaUnusable(Exception):
    """This replica cannot serve this read (down, behind the token, recovery conflict): the
    primary serves it instead. Never leaves storage."""


@dataclass
class Replica:
    """One replica: its pool, and what the poller (or a call) last learned of it."""

    name: str  # host:port/database, for logs and metrics labels; no credentials
    engine: Engine
    replay_lsn: int = 0
    lag_seconds: float = math.inf  # inf until the first poll, and while unreachable
    up: bool = False
    served: int = 0  # reads this replica answered (bumped under the GIL; metrics read it)
    sessions: sessionmaker[Session] = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    def down(self, why: object) -> None:
        if self.up:
            log.warning("replica %s skipped until it answers again: %s", self.name, why)
        self.up = False
        self.lag_seconds = math.inf


class Replicas(Background):
    """The replicas of one primary, with the poller that keeps their positions current."""

    def __init__(
        self,
        replicas: list[Replica],
        *,
        primary_dsn: str,
        replica_dsns: list[str],
        max_lag_ms: int,
        interval: float = 0.15,
        connect_timeout: int = 2,
    ) -> None:
        self.replicas = replicas
        self.max_lag_seconds = max_lag_ms / 1000
        self.interval = interval
        self.primary_served = 0  # reads that could have gone to a replica but did not
        self._dsns = [primary_dsn, *replica_dsns]
        self._connect_timeout = connect_timeout
        self._connections: list[Any] = [None] * len(self._dsns)
        self._history: deque[tuple[float, int]] = deque()  # (monotonic, primary flushed LSN)
        self._turn = itertools.count()
        super().__init__("replica-poller")

    # -- choosing ---------------------------------------------------------------------------
    def choose(self, token: int | None) -> tuple[Replica, bool] | None:
        """A replica for a read, and whether the call must check the token there first
        (it is ahead of what the poller last saw); None: the primary serves it."""
        fresh = [r for r in self.replicas if r.up and r.lag_seconds <= self.max_lag_seconds]
        if not fresh:
            return None
        start = next(self._turn)
        for i in range(len(fresh)):  # round robin over the fresh ones
            replica = fresh[(start + i) % len(fresh)]
            if token is None or replica.replay_lsn >= token:
                return replica, False
        # All behind the token as last seen: the newest one may have caught up since.
        return max(fresh, key=lambda r: r.replay_lsn), True

    def check(self, replica: Replica, dbapi: Any, token: int) -> None:
        """On a connection to `replica`: raise ReplicaUnusable unless it replayed `token`."""
        with dbapi.cursor() as cursor:
            cursor.execute("SELECT pg_last_wal_replay_lsn()::text")
            row = cursor.fetchone()
        replayed = parse_lsn(row[0]) if row and row[0] else 0
        replica.replay_lsn = max(replica.replay_lsn, replayed)
        if replayed < token:
            raise ReplicaUnusable(f"{replica.name} has not replayed {format_lsn(token)}")

    # -- polling ----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop polling (start(): at once, then every `interval`) and close its connections."""
        super().stop()
        for i in range(len(self._connections)):
            self._close(i)

    def dispose(self) -> None:
        self.stop()
        for replica in self.replicas:
            replica.engine.dispose()

    def _run(self) -> None:
        while True:
            try:
                self.poll()
            except Exception:  # the poller must outlive any surprise
                log.exception("replica poll failed")
            if self._stop.wait(self.interval):
                return

    def poll(self) -> None:
        """The primary's flushed position, then each replica's replay position and lag."""
        now = time.monotonic()
        primary = self._ask(0, "SELECT pg_current_wal_flush_lsn()::text, pg_is_in_recovery()")
        if primary is not None and primary[0]:
            self._history.append((now, parse_lsn(primary[0])))
        while self._history and self._history[0][0] < now - _HISTORY_SECONDS:
            if len(self._history) == 1:
                break
            self._history.popleft()
        for i, replica in enumerate(self.replicas, start=1):
            row = self._ask(
                i, "SELECT pg_last_wal_replay_lsn()::text, pg_is_in_recovery()", replica
            )
            if row is None:
                continue
            replayed, in_recovery = row
            if not in_recovery or not replayed:  # promoted, or not a streaming replica
                replica.down("it is not replaying WAL (promoted, or not a standby)")
                continue
            replica.replay_lsn = max(replica.replay_lsn, parse_lsn(replayed))
            if not replica.up:
                log.info("replica %s serving reads", replica.name)
            replica.lag_seconds = self._lag(replica.replay_lsn, time.monotonic())
            replica.up = True

    def _lag(self, replayed: int, now: float) -> float:
        """Seconds since the primary first stood past `replayed` (0: nothing missing)."""
        if not self._history:
            return math.inf  # the primary does not answer: nothing to measure against
        for seen_at, position in self._history:
            if position > replayed:
                return now - seen_at
        return 0.0

    def _ask(self, index: int, sql: str, replica: Replica | None = None) -> Any:
        """One row from connection `index` (0: the primary), reconnecting as needed; None
        (and the replica marked down) when it does not answer."""
        try:
            if self._connections[index] is None:
                connection = psycopg2.connect(
                    self._dsns[index],
                    connect_timeout=self._connect_timeout,
                    application_name="blogstore-replica-poller",
                    options="-c statement_timeout=2000",
                )
                connection.autocommit = True
                self._connections[index] = connection
            with self._connections[index].cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchone()
        except psycopg2.Error as error:
            self._close(index)
            if replica is not None:
                replica.down(str(error).strip().splitlines()[0] if str(error) else error)
            return None

    def _close(self, index: int) -> None:
        connection, self._connections[index] = self._connections[index], None
        if connection is not None:
            with contextlib.suppress(psycopg2.Error):
                connection.close()


def replica_name(url: Any) -> str:
    """host:port/database of a sqlalchemy URL: a label without credentials."""
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def wal_position(engine: Engine) -> int:
    """The primary's WAL insert position now: at or past every commit made before the call."""
    connection = engine.raw_connection()
    try:
        dbapi: Any = connection.dbapi_connection
        assert dbapi is not None
        dbapi.autocommit = True  # one round trip: no BEGIN, no ROLLBACK
        try:
            with dbapi.cursor() as cursor:
                cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
                row = cursor.fetchone()
        finally:
            if not dbapi.closed:
                dbapi.autocommit = False
        return parse_lsn(row[0])
    finally:
        connection.close()
