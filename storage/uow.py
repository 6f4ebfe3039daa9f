"""Unit of work: one transaction per call, bounded by the call's deadline.

`Database.run(caller, work)` opens a session, sets `statement_timeout` for this transaction only
(`SET LOCAL` semantics via set_config(..., true)), hands `work` a `Tx` with the repositories,
commits once, and runs the whole transaction again on serialization failures and deadlocks.

`Database.read(caller, work)` is the same for work that only reads and tolerates staleness: a
replica may serve it (storage/replicas.py picks one fresh enough for the caller's consistency
token), else the primary; `run` always goes to the primary.

`Database.query(caller, statement, params)` is the hot-path variant for single statements
(storage/queries.py): one round trip, prepared once per pooled connection, same timeout rule.
Behind a pooler (PgBouncer in transaction mode) it is sent unprepared instead: Database's
`prepare` ("auto" finds out per connection, storage.engine.behind_pooler).
"""

from __future__ import annotations

import contextlib
import functools
import random
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property
from types import SimpleNamespace
from typing import Any, TypeVar

import psycopg2
from sqlalchemy import Engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from storage import deadlines, rls
from storage.actors import Caller
from storage.engine import behind_pooler
from storage.errors import (
    DeadlineExceeded,
    DomainError,
    Retryable,
    Unavailable,
    is_connection_failure,
    translate,
)
from storage.models import AuditEvent
from storage.replicas import Replica, Replicas, ReplicaUnusable, note_commit, wal_position
from storage.repositories.articles import ArticleRepository
from storage.repositories.audit import AuditRepository, event_values
from storage.repositories.competitors import CompetitorRepository
from storage.repositories.credentials import CredentialRepository
from storage.repositories.embeddings import EmbeddingRepository
from storage.repositories.pipelines import PipelineRepository
from storage.repositories.tags import TagRepository
from storage.repositories.usage import UsageRepository
from storage.repositories.user_settings import UserSecretRepository, UserSettingsRepository
from storage.repositories.users import UserRepository

T = TypeVar("T")

# With the row-level security context (storage/rls.py): role, user and scope.
_SET_TIMEOUT = text(f"SELECT set_config('statement_timeout', :ms, true), {rls.BIND_SQL}")
# Database.read: the same, read only, so a write that strays into a read fails on the
# primary as it would on a replica.
_SET_READ_ONLY = text(
    "SELECT set_config('statement_timeout', :ms, true), "
    f"set_config('transaction_read_only', 'on', true), {rls.BIND_SQL}"
)
_TIMEOUT = f"set_config('statement_timeout', %(timeout_ms)s, true), {rls.PYFORMAT_SQL}"
_NO_FLUSH = "set_config('synchronous_commit', 'off', true)"
_CUSTOM_PLANS = "set_config('plan_cache_mode', 'force_custom_plan', true)"
_GENERIC_PLANS = "set_config('plan_cache_mode', 'force_generic_plan', true)"
_PLACEHOLDER = re.compile(r"(?<![\w$])\$(\d+)\b")  # $n, not inside an identifier
_PYFORMAT = re.compile(r"%\((\w+)\)s")  # %(name)s


# Around each Database.query round trip: given the statement and the caller, a context manager
# (server/telemetry installs one that times, logs slow statements and traces; storage knows
# nothing of what it does).
StatementObserver = Callable[["Prepared", Caller], AbstractContextManager[Any]]
_UNOBSERVED = contextlib.nullcontext()


def _unobserved(statement: Prepared, caller: Caller) -> AbstractContextManager[Any]:
    return _UNOBSERVED


_UUID_AS_TEXT = psycopg2.extensions.new_type((2950,), "UUID_AS_TEXT", lambda value, _: value)


@dataclass(frozen=True)
class Prepared:
    """A statement compiled once with $n placeholders, for Database.query."""

    name: str
    body: str  # SQL with $1..$n
    params: tuple[str, ...]  # parameter names, in $n order
    types: tuple[str, ...]  # their SQL types, for PREPARE
    constants: dict[str, Any] = field(default_factory=dict)  # values of the literal parameters
    uuids_as_text: bool = False  # rows headed for protobuf: skip str -> UUID -> str
    # False for bookkeeping writes on read paths (a credential's last use): the commit does
    # not wait for the WAL flush. A crash may lose the last few such updates, never data.
    durable: bool = True
    # Plan with the actual values every time: List and Search plans depend on them (a
    # generic plan may sort a whole table where an index scan reads 51 rows).
    custom_plans: bool = False
    # A read that tolerates staleness: a replica may serve it (storage/replicas.py).
    replica_ok: bool = False
    # It writes: with replicas, its commit position becomes the call's consistency token.
    writes: bool = False
    # Reuse the generic plan from the first call: for statements whose plan does not depend
    # on the values but which "auto" replans every time (a LIMIT $n makes the generic plan
    # look costlier, so it is never chosen: ClaimDueCompetitors spent 0.4 ms per call of
    # PostgreSQL's CPU planning).
    generic_plans: bool = False
    # What telemetry calls it (slow-query log, metrics, spans) if not its name: a statement
    # moved off the session keeps the name it was logged and counted under there.
    label: str = ""

    def sql(self, *, prepare: bool) -> str:
        execute = f"EXECUTE {self.name}({', '.join(f'%(p{i})s' for i in range(len(self.params)))})"
        if not prepare:
            return self._prefix + execute
        body = self.body.replace("%", "%%")  # the string also carries pyformat parameters
        prepare_sql = f"PREPARE {self.name} ({', '.join(self.types)}) AS {body}; "
        return self._prefix + prepare_sql + execute

    @classmethod
    def from_pyformat(cls, name: str, sql: str, types: dict[str, str], **options: Any) -> Prepared:
        """`sql` written for the session (%(name)s parameters) as a Prepared: each parameter
        becomes $n in order of first use, typed by `types`."""
        params = tuple(dict.fromkeys(_PYFORMAT.findall(sql)))
        number = {param: n for n, param in enumerate(params, 1)}
        body = _PYFORMAT.sub(lambda m: f"${number[m.group(1)]}", sql)
        return cls(name, body, params, tuple(types[p] for p in params), **options)

    @cached_property
    def unprepared_sql(self) -> str:
        """The statement without PREPARE (behind PgBouncer in transaction mode, where the next
        transaction may find another server connection): each $n becomes its value cast to
        the type PREPARE would have declared, so it plans and types the same way."""
        body = self.body.replace("%", "%%")

        def bind(match: re.Match[str]) -> str:
            n = int(match.group(1))
            return f"CAST(%(p{n - 1})s AS {self.types[n - 1]})"

        return self._prefix + _PLACEHOLDER.sub(bind, body)

    @cached_property
    def _prefix(self) -> str:
        settings = [_TIMEOUT]
        settings += [] if self.durable else [_NO_FLUSH]
        settings += [_CUSTOM_PLANS] if self.custom_plans else []
        settings += [_GENERIC_PLANS] if self.generic_plans else []
        return f"SELECT {', '.join(settings)}; "


class Tx:
    """What a unit of work sees: the session's repositories, scoped to the caller."""

    def __init__(self, session: Session, caller: Caller) -> None:
        self.session = session
        self.caller = caller
        self.actor = caller.actor

    @cached_property
    def pipelines(self) -> PipelineRepository:
        return PipelineRepository(self.session, self.actor)

    @cached_property
    def usage(self) -> UsageRepository:
        return UsageRepository(self.session, self.actor)

    @cached_property
    def users(self) -> UserRepository:
        return UserRepository(self.session, self.actor)

    @cached_property
    def articles(self) -> ArticleRepository:
        return ArticleRepository(self.session, self.actor, self.caller)

    @cached_property
    def tags(self) -> TagRepository:
        return TagRepository(self.session, self.actor)

    @cached_property
    def credentials(self) -> CredentialRepository:
        return CredentialRepository(self.session, self.actor)

    @cached_property
    def competitors(self) -> CompetitorRepository:
        return CompetitorRepository(self.session, self.actor)

    @cached_property
    def user_settings(self) -> UserSettingsRepository:
        return UserSettingsRepository(self.session, self.actor)

    @cached_property
    def user_secrets(self) -> UserSecretRepository:
        return UserSecretRepository(self.session, self.actor)

    @cached_property
    def embeddings(self) -> EmbeddingRepository:
        return EmbeddingRepository(self.session, self.actor)

    @cached_property
    def audit_events(self) -> AuditRepository:
        return AuditRepository(self.session, self.actor)

    def audit(
        self,
        action: str,
        resource_type: str,
        resource_id: object,
        *,
        user_id: object = None,
        **details: Any,
    ) -> None:
        """Record a mutation; it commits or rolls back with the change itself (the values:
        storage.repositories.audit.event_values)."""
        values = event_values(
            self.caller, action, resource_type, resource_id, user_id=user_id, details=details
        )
        self.session.add(AuditEvent(**values))


def _under_budget(method: Callable[..., T]) -> Callable[..., T]:
    """Run a Database method under its caller's budget (storage/deadlines.py): the pool wait,
    connect timeout and deadline watchdog of every connection it checks out follow it."""

    @functools.wraps(method)
    def budgeted(self: Database, caller: Caller, *args: Any, **kwargs: Any) -> T:
        token = deadlines.enter(self._deadline(caller))  # (no generator: every call runs this)
        try:
            return method(self, caller, *args, **kwargs)
        finally:
            deadlines.reset(token)

    return budgeted


class Database:
    def __init__(
        self,
        engine: Engine,
        *,
        statement_timeout_ms: int = 30_000,
        max_attempts: int = 4,
        observe: StatementObserver = _unobserved,
        role: str = rls.NO_ROLE,
        on_connection_failure: Callable[[], None] | None = None,
        replicas: Replicas | None = None,
        prepare: str = "auto",
    ) -> None:
        """`role`: what every transaction switches to (SET LOCAL ROLE); NO_ROLE stays the
        connecting user (lifecycle commands, which run as the tables' owner).
        `on_connection_failure`: called (cheaply, from the request thread) when a call finds
        the database unreachable or hung; server/health re-checks readiness at once.
        `prepare`: "on", "off", or "auto" (per connection: on unless behind a pooler)."""
        if prepare not in ("auto", "on", "off"):
            raise ValueError(f"prepare must be auto, on or off, not {prepare!r}")
        self.prepare = prepare
        self.on_connection_failure = on_connection_failure
        self.engine = engine
        self.replicas = replicas  # storage/replicas.py: where Database.read may go
        self.role = role
        self.statement_timeout_ms = statement_timeout_ms
        self.max_attempts = max_attempts
        self.observe = observe
        self._sessions = sessionmaker(engine, expire_on_commit=False, autoflush=False)

    @_under_budget
    def run(self, caller: Caller, work: Callable[[Tx], T]) -> T:
        """Run `work` in one transaction on the primary and commit; raise only domain errors
        or bugs. With replicas, the commit's WAL position becomes the call's consistency
        token (storage/replicas.py)."""
        result = self._transaction(self._sessions, caller, work)
        self._note_commit()
        return result

    def _note_commit(self) -> None:
        """With replicas: the primary's WAL position after a commit, as the call's token."""
        if self.replicas is None:
            return
        # A failure here leaves the write committed all the same, without a token.
        with contextlib.suppress(sa_exc.SQLAlchemyError, psycopg2.Error):
            note_commit(wal_position(self.engine))

    @_under_budget
    def read(self, caller: Caller, work: Callable[[Tx], T]) -> T:
        """Run `work`, which only reads, where staleness is allowed: on a replica fresh enough
        for the caller's consistency token (or within the lag limit without one), else on the
        primary. A replica that fails or lags is skipped, never a failed call. Read only."""
        chosen = None if self.replicas is None else self.replicas.choose(caller.read_after)
        if chosen is not None:
            replica, check = chosen
            try:
                result = self._transaction(
                    replica.sessions, caller, work, replica=replica, check=check
                )
            except ReplicaUnusable:
                pass
            else:
                replica.served += 1
                return result
        if self.replicas is not None:
            self.replicas.primary_served += 1
        return self._transaction(self._sessions, caller, work, read_only=True)

    def _transaction(
        self,
        sessions: sessionmaker[Session],
        caller: Caller,
        work: Callable[[Tx], T],
        *,
        read_only: bool = False,
        replica: Replica | None = None,
        check: bool = False,
    ) -> T:
        """One transaction, run again on serialization failures and deadlocks; on a replica,
        any failure of the database (not of the work) raises ReplicaUnusable instead."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                with sessions() as session, session.begin():
                    settings = rls.context(caller.actor, self.role)
                    statement = _SET_READ_ONLY if read_only or replica else _SET_TIMEOUT
                    session.execute(statement, {"ms": str(self._timeout_ms(caller)), **settings})
                    if check and replica is not None and caller.read_after is not None:
                        dbapi = session.connection().connection.dbapi_connection
                        assert self.replicas is not None
                        self.replicas.check(replica, dbapi, caller.read_after)
                    return work(Tx(session, caller))
            except (sa_exc.SQLAlchemyError, psycopg2.Error) as error:
                if replica is not None:
                    raise self._replica_failure(replica, error) from None
                domain = self._failure(error)
                if domain is None:
                    raise
                if isinstance(domain, Retryable) and attempt < self.max_attempts:
                    time.sleep(random.uniform(0, 0.01 * 2**attempt))
                    continue
                raise domain from None
        raise AssertionError("unreachable")

    @_under_budget
    def query(
        self, caller: Caller, statement: Prepared, params: dict[str, Any]
    ) -> list[SimpleNamespace]:
        """Run one prepared statement in one round trip; rows come back as attribute records.

        For hot single-statement calls: autocommit (no BEGIN/COMMIT round trips), the timeout
        set in the same simple-query string (which PostgreSQL runs as one implicit
        transaction, so set_config(..., true) is the statement's SET LOCAL), and the
        statement PREPAREd once per connection, in that same string, then EXECUTEd.
        """
        chosen = None
        if statement.replica_ok and self.replicas is not None:
            chosen = self.replicas.choose(caller.read_after)
            if chosen is None:
                self.replicas.primary_served += 1
        if chosen is not None:
            try:
                rows = self._query(caller, statement, params, *chosen)
            except ReplicaUnusable:
                assert self.replicas is not None
                self.replicas.primary_served += 1
            else:
                chosen[0].served += 1
                return rows
        rows = self._query(caller, statement, params)
        if statement.writes:
            self._note_commit()
        return rows

    def _query(
        self,
        caller: Caller,
        statement: Prepared,
        params: dict[str, Any],
        replica: Replica | None = None,
        check: bool = False,
    ) -> list[SimpleNamespace]:
        """Database.query on the primary, or on `replica` (checking the caller's token there
        first when `check`), where a database failure raises ReplicaUnusable."""
        timeout = self._timeout_ms(caller)
        engine = self.engine if replica is None else replica.engine
        try:  # a new connection, or a failed ping's reconnect, raises the driver's error
            connection = engine.raw_connection()
        except (sa_exc.SQLAlchemyError, psycopg2.Error) as error:
            if replica is not None:
                raise self._replica_failure(replica, error) from None
            raise (self._failure(error) or error) from None
        dbapi = connection.dbapi_connection
        assert dbapi is not None  # a checked-out connection has its DBAPI connection
        info = connection.info
        params = {**statement.constants, **params}
        values = {**{f"p{i}": params[name] for i, name in enumerate(statement.params)},
                  "timeout_ms": str(timeout), **rls.context(caller.actor, self.role)}  # fmt: skip
        try:
            dbapi.autocommit = True
            if check and replica is not None and caller.read_after is not None:
                assert self.replicas is not None
                self.replicas.check(replica, dbapi, caller.read_after)
            if "prepared_statements" not in info:  # a new connection: may it PREPARE?
                server_side = self.prepare == "on" or (
                    self.prepare == "auto" and not behind_pooler(dbapi)
                )
                info["prepared_statements"] = set() if server_side else None
            prepared: set[str] | None = info["prepared_statements"]
            with self.observe(statement, caller):
                if prepared is None:
                    names, rows = self._execute_unprepared(dbapi, statement, values)
                else:
                    names, rows = self._execute(dbapi, statement, prepared, values)
        except psycopg2.Error as error:
            if dbapi.closed:
                connection.invalidate()
            if replica is not None:
                raise self._replica_failure(replica, error) from None
            raise (self._failure(error) or error) from None
        finally:
            if not dbapi.closed:
                dbapi.autocommit = False
            connection.close()
        return [SimpleNamespace(**dict(zip(names, row, strict=True))) for row in rows]

    @staticmethod
    def _execute_unprepared(
        dbapi: Any, statement: Prepared, values: dict[str, Any]
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        with dbapi.cursor() as cursor:
            if statement.uuids_as_text:
                psycopg2.extensions.register_type(_UUID_AS_TEXT, cursor)
            cursor.execute(statement.unprepared_sql, values)
            names = [column.name for column in cursor.description or ()]
            return names, (cursor.fetchall() if names else [])

    @staticmethod
    def _execute(
        dbapi: Any, statement: Prepared, prepared: set[str], values: dict[str, Any]
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """EXECUTE, PREPAREing first when this connection has not seen the statement.

        A PREPARE outlives a failed transaction, so after any attempt the statement counts as
        prepared; the two definite answers (26000: not prepared, 42P05: already prepared)
        correct that bookkeeping and retry once.
        """
        for attempt in (1, 2):
            prepare = statement.name not in prepared
            try:
                with dbapi.cursor() as cursor:
                    if statement.uuids_as_text:
                        psycopg2.extensions.register_type(_UUID_AS_TEXT, cursor)
                    cursor.execute(statement.sql(prepare=prepare), values)
                    names = [column.name for column in cursor.description or ()]
                    return names, (cursor.fetchall() if names else [])
            except psycopg2.Error as error:
                if error.pgcode == "26000" and attempt == 1:
                    prepared.discard(statement.name)
                    continue
                if error.pgcode == "42P05" and attempt == 1:
                    prepared.add(statement.name)
                    continue
                raise
            finally:
                if prepare:
                    prepared.add(statement.name)
        raise AssertionError("unreachable")

    def _replica_failure(self, replica: Replica, error: BaseException) -> Exception:
        """What a failed read on a replica raises: ReplicaUnusable (the primary serves it)
        when the replica is unreachable, busy or cancelled the read for recovery; the
        domain error when the read itself is at fault (or out of time)."""
        domain = translate(error)
        spent = deadlines.current()
        if spent is not None and spent.fired:
            return DeadlineExceeded("the database did not answer within the call's deadline")
        if isinstance(domain, Unavailable | Retryable) or domain is None:
            if is_connection_failure(error):
                replica.down(type(error).__name__)
            return ReplicaUnusable(str(error))
        return domain

    def _failure(self, error: BaseException) -> DomainError | None:
        """The domain error for a failed call; a connection failure also tells health."""
        domain = translate(error)
        spent = deadlines.current()
        if spent is not None and spent.fired:  # the watchdog cut a connection left unanswered
            domain = DeadlineExceeded("the database did not answer within the call's deadline")
        elif not (isinstance(domain, Unavailable) and is_connection_failure(error)):
            return domain
        if self.on_connection_failure is not None:
            self.on_connection_failure()
        return domain

    def _deadline(self, caller: Caller) -> float:
        """When the watchdog cuts this call's connection: its deadline; without one, twice the
        statement timeout (no single call holds a connection that long with a live database)."""
        if caller.deadline is not None:
            return caller.deadline
        return time.monotonic() + 2 * self.statement_timeout_ms / 1000

    def _timeout_ms(self, caller: Caller) -> int:
        if caller.deadline is None:
            return self.statement_timeout_ms
        remaining_ms = int((caller.deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            raise DeadlineExceeded("the call's deadline has passed")
        return min(self.statement_timeout_ms, remaining_ms)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.replicas is not None:
            self.replicas.dispose()
