"""The usage ledger's reads and limits (appends: storage/usage_batch.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, String, cast, func, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import defer

from storage.models import UsageEvent, UsageLimit, UsageMonth
from storage.repositories.base import ScopedRepository
from storage.repositories.paging import Page, after_key, to_page

_TOTALS = ("cost_micros", "articles_generated", "input_tokens", "output_tokens", "api_calls")


@dataclass(frozen=True)
class Limits:
    cost_micros: int
    articles: int


@dataclass(frozen=True)
class MonthTotals:
    user_id: uuid.UUID
    month: dt.date
    cost_micros: int = 0
    articles_generated: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    api_calls: int = 0
    event_count: int = 0


@dataclass(frozen=True)
class EventFilters:
    user_id: uuid.UUID | None = None
    pipeline_id: uuid.UUID | None = None
    service: str | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    model: str | None = None
    status: str | None = None  # one of USAGE_STATUSES
    operation: str | None = None
    prompt_name: str | None = None


@dataclass(frozen=True)
class ReportRow:
    key: str
    cost_micros: int
    input_tokens: int
    output_tokens: int
    event_count: int
    p50_duration_ms: int | None  # None: no event of the group carries a duration
    p95_duration_ms: int | None


def month_of(moment: dt.datetime) -> dt.date:
    """The first day of `moment`'s month in UTC."""
    return moment.astimezone(dt.UTC).date().replace(day=1)


class UsageRepository(ScopedRepository[UsageEvent]):
    """Reads of the ledger; events are appended by storage/usage_batch.py, whose SQL
    function (migrations 0006, 0023) refuses a request_id reused for a different event."""

    model = UsageEvent
    resource = "usage event"

    # -- reads ---------------------------------------------------------------------------
    def month(self, user_id: uuid.UUID, month: dt.date) -> MonthTotals:
        row = self.session.execute(
            select(*(getattr(UsageMonth, n) for n in (*_TOTALS, "event_count"))).where(
                UsageMonth.user_id == user_id, UsageMonth.month == month
            )
        ).one_or_none()
        return MonthTotals(user_id, month, *row) if row else MonthTotals(user_id, month)

    def list_months(
        self, user_id: uuid.UUID, *, after: tuple | None, limit: int
    ) -> Page[MonthTotals]:
        stmt = select(UsageMonth).where(UsageMonth.user_id == user_id)
        if after is not None:
            stmt = stmt.where(UsageMonth.month < dt.date.fromisoformat(after[0]))
        rows = self.session.scalars(stmt.order_by(UsageMonth.month.desc()).limit(limit + 1)).all()
        totals = [
            MonthTotals(r.user_id, r.month, *(getattr(r, n) for n in (*_TOTALS, "event_count")))
            for r in rows
        ]
        return to_page(totals, limit, key=lambda m: (m.month.isoformat(),))

    def list_events(
        self, filters: EventFilters, *, after: tuple | None, limit: int, texts: bool = False
    ) -> Page[UsageEvent]:
        """A page, newest first. Without `texts`, input_text and output_text are not loaded
        (and must not be read: the rows leave the session)."""
        stmt = self._events(select(UsageEvent), filters)
        if not texts:
            stmt = stmt.options(defer(UsageEvent.input_text), defer(UsageEvent.output_text))
        if after is not None:
            stmt = stmt.where(
                after_key((UsageEvent.event_time, UsageEvent.id), after, descending=True)
            )
        stmt = stmt.order_by(UsageEvent.event_time.desc(), UsageEvent.id.desc()).limit(limit + 1)
        rows = self.session.scalars(stmt).all()
        return to_page(rows, limit, key=lambda e: (e.event_time, e.id))

    def cost_report(self, filters: EventFilters, group_by: str) -> tuple[list[ReportRow], int]:
        """Sums per group and the total, computed by PostgreSQL (exact: BIGINT -> NUMERIC),
        with each group's p50 and p95 duration_ms (percentile_disc: durations some event had;
        events without a duration are left out, as the aggregate skips NULLs)."""
        key: ColumnElement[Any] = {
            "service": UsageEvent.service,
            "model": UsageEvent.model,
            "day": func.to_char(func.timezone("UTC", UsageEvent.event_time), "YYYY-MM-DD"),
            "user": cast(UsageEvent.user_id, String),
            "operation": UsageEvent.operation,
            "status": literal("USAGE_STATUS_") + func.upper(UsageEvent.status),
        }[group_by]
        sums = (
            func.coalesce(func.sum(UsageEvent.cost_micros), 0),
            func.coalesce(func.sum(UsageEvent.input_tokens), 0),
            func.coalesce(func.sum(UsageEvent.output_tokens), 0),
            func.count(),
            *(
                func.percentile_disc(fraction).within_group(UsageEvent.duration_ms)
                for fraction in (0.5, 0.95)
            ),
        )
        stmt = self._events(select(key.label("key"), *sums), filters).group_by(key)
        rows = [
            ReportRow(k, int(c), int(i), int(o), int(n), p50, p95)
            for k, c, i, o, n, p50, p95 in self.session.execute(stmt.order_by(sums[0].desc(), key))
        ]
        total = self.session.scalar(self._events(select(sums[0]), filters))
        return rows, int(total)

    def _events(self, stmt: Select, f: EventFilters) -> Select:
        conditions = [
            UsageEvent.user_id == f.user_id if f.user_id else None,
            UsageEvent.pipeline_id == f.pipeline_id if f.pipeline_id else None,
            UsageEvent.service == f.service if f.service else None,
            UsageEvent.event_time >= f.start_time if f.start_time else None,
            UsageEvent.event_time < f.end_time if f.end_time else None,
            UsageEvent.model == f.model if f.model else None,
            UsageEvent.status == f.status if f.status else None,
            UsageEvent.operation == f.operation if f.operation else None,
            UsageEvent.prompt_name == f.prompt_name if f.prompt_name else None,
        ]
        return self.scoped(stmt).where(*(c for c in conditions if c is not None))

    # -- limits --------------------------------------------------------------------------
    def limits_override(self, user_id: uuid.UUID) -> tuple[int | None, int | None]:
        row = self.session.execute(
            select(UsageLimit.cost_limit_micros, UsageLimit.article_limit).where(
                UsageLimit.user_id == user_id
            )
        ).one_or_none()
        return (row[0], row[1]) if row else (None, None)

    def set_limits(
        self, user_id: uuid.UUID, cost_limit_micros: int | None, article_limit: int | None
    ) -> None:
        stmt = insert(UsageLimit).values(
            user_id=user_id, cost_limit_micros=cost_limit_micros, article_limit=article_limit
        )
        self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=["user_id"],
                set_={
                    "cost_limit_micros": stmt.excluded.cost_limit_micros,
                    "article_limit": stmt.excluded.article_limit,
                    "update_time": func.now(),
                },
            )
        )
