"""Every SQL statement: the slow-query log, its counter, and the hot path's span.

Two paths reach the database. The ORM's statements pass SQLAlchemy's cursor events, which
`install()` listens to; Database.query's prepared statements use a raw DBAPI cursor and call
the observer that storage/uow.py accepts (`observe`). Both end in `SlowQueryLog.check`.

A statement is named, never quoted: the Prepared's name on the hot path ("blogstore_get_article";
its label if it has one), the verb and first table for the ORM ("UPDATE articles"). Parameter
values never appear.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event

from server.context import current_caller, current_method

log = logging.getLogger("blogstore.slow_query")

_VERB = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(\w+)", re.DOTALL)
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE|JOIN)\s+"?(\w+)', re.IGNORECASE)
_FUNCTION = re.compile(r"(\w+)\s*\(")
# A WITH statement is named for its first write (`WITH ... AS (INSERT INTO articles ...)`).
_WRITE = re.compile(
    r'\b(INSERT)\s+INTO\s+"?(\w+)|(?<!FOR )\b(UPDATE)\s+"?(\w+)|\b(DELETE)\s+FROM\s+"?(\w+)',
    re.IGNORECASE,
)
_NAMES: dict[str, str] = {}
_MAX_NAMES = 1024


def statement_name(sql: str) -> str:
    """`VERB table` (or `VERB function` for a SELECT without a table): short and bounded."""
    name = _NAMES.get(sql)
    if name is None:
        verb = _VERB.match(sql)
        write = _WRITE.search(sql) if verb and verb.group(1).upper() == "WITH" else None
        if write is not None:
            found = [g for g in write.groups() if g]
            name = f"{found[0].upper()} {found[1]}"
        else:
            target = _TABLE.search(sql) or _FUNCTION.search(sql, verb.end() if verb else 0)
            name = verb.group(1).upper() if verb else "SQL"
            name = f"{name} {target.group(1)}" if target else name
        if len(_NAMES) < _MAX_NAMES:
            _NAMES[sql] = name
    return name


class SlowQueryLog:
    def __init__(
        self, threshold_ms: int, count: Callable[[str], None] | None, tracing: Any = None
    ) -> None:
        self.threshold = threshold_ms / 1000
        self.count = count
        self.tracing = tracing

    def check(self, name: str, seconds: float, request_id: str | None = None) -> None:
        if seconds < self.threshold:
            return
        method = current_method()
        request_id = current_caller().request_id if request_id is None else request_id
        log.warning(
            "slow query %s %.1fms in %s request_id=%s",
            name,
            seconds * 1000,
            method or "-",
            request_id or "-",
            extra={
                "statement": name,
                "duration_ms": round(seconds * 1000, 2),
                "rpc_method": method,
                "request_id": request_id,
            },
        )
        if self.count is not None:
            self.count(name)

    def observe(self, statement: Any, caller: Any) -> Any:
        """storage.uow.StatementObserver: times (and, tracing, spans) one Database.query."""
        if self.tracing is not None:
            return _TracedStatement(self, statement, caller)
        return _TimedStatement(self, statement, caller)

    def install(self, engine: Any) -> None:
        """Time the engine's (ORM) statements; failures count too (a statement timeout)."""

        @event.listens_for(engine, "before_cursor_execute")
        def _started(conn, cursor, statement, parameters, context, executemany) -> None:
            context._blogstore_started = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def _ended(conn, cursor, statement, parameters, context, executemany) -> None:
            self._ended(context, statement)

        @event.listens_for(engine, "handle_error")
        def _failed(exception_context: Any) -> None:
            if exception_context.execution_context is not None:
                self._ended(exception_context.execution_context, exception_context.statement)

    def _ended(self, context: Any, statement: str | None) -> None:
        started = getattr(context, "_blogstore_started", None)
        if started is not None:
            elapsed = time.perf_counter() - started
            if elapsed >= self.threshold:
                self.check(statement_name(statement or ""), elapsed)


class _TimedStatement:
    __slots__ = ("log", "statement", "caller", "started")

    def __init__(self, log: SlowQueryLog, statement: Any, caller: Any) -> None:
        self.log, self.statement, self.caller = log, statement, caller

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        elapsed = time.perf_counter() - self.started
        if elapsed >= self.log.threshold:
            name = self.statement.label or self.statement.name
            self.log.check(name, elapsed, self.caller.request_id)


class _TracedStatement(_TimedStatement):
    __slots__ = ("span",)

    def __enter__(self) -> None:
        name = self.statement.label or self.statement.name
        self.span = self.log.tracing.statement_span(name, self.statement.body)
        self.span.__enter__()
        super().__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        super().__exit__(*exc_info)
        self.span.__exit__(*exc_info)
