"""The usage ledger: idempotent appends, race-free monthly limits, exact sums in SQL."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, String, cast, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from storage.actors import Actor
from storage.errors import InvalidArgument, NotFound, QuotaExceeded
from storage.models import Article, Pipeline, UsageEvent, UsageLimit, UsageMonth
from storage.repositories.paging import Page, after_key, to_page

GROUP_BY = ("service", "model", "day", "user")
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


@dataclass(frozen=True)
class ReportRow:
    key: str
    cost_micros: int
    input_tokens: int
    output_tokens: int
    event_count: int


def month_of(moment: dt.datetime) -> dt.date:
    """The first day of `moment`'s month in UTC."""
    return moment.astimezone(dt.UTC).date().replace(day=1)


class UsageRepository:
    def __init__(self, session: Session, actor: Actor) -> None:
        self.session = session
        self.actor = actor

    def record(
        self, values: dict[str, Any], limits: Limits
    ) -> tuple[UsageEvent, MonthTotals, bool]:
        """Append an event and add it to its month and pipeline, or change nothing.

        The event insert comes first: a concurrent call with the same request_id waits on its
        unique entry and then finds it (a retry: the first event is returned, nothing is
        written). The month's totals grow by one conditional upsert whose WHERE is the limit
        check, so concurrent writers cannot both squeeze under the limit.
        """
        event = self.session.scalars(
            insert(UsageEvent)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["user_id", "request_id"])
            .returning(UsageEvent)
        ).one_or_none()
        if event is None:
            first = self.session.scalars(
                select(UsageEvent).where(
                    UsageEvent.user_id == values["user_id"],
                    UsageEvent.request_id == values["request_id"],
                )
            ).one()
            if any(getattr(first, k) != values[k] for k in (*_TOTALS, "service", "pipeline_id")):
                raise InvalidArgument({"request_id": "was already used for a different event"})
            return first, self.month(first.user_id, first.month), False
        if event.article_id is not None:
            self._require_article(event)
        totals = self._add_to_month(event, limits)
        if event.pipeline_id is not None:
            self._add_to_pipeline(event)
        return event, totals, True

    def _add_to_month(self, event: UsageEvent, limits: Limits) -> MonthTotals:
        amounts = {name: getattr(event, name) for name in _TOTALS}
        if amounts["cost_micros"] > limits.cost_micros or (
            amounts["articles_generated"] > limits.articles
        ):
            raise self._over_limit(event, limits)
        stmt = insert(UsageMonth).values(
            user_id=event.user_id, month=event.month, event_count=1, **amounts
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["user_id", "month"],
            set_={
                **{name: getattr(UsageMonth, name) + stmt.excluded[name] for name in _TOTALS},
                "event_count": UsageMonth.event_count + 1,
                "update_time": func.now(),
            },
            where=(UsageMonth.cost_micros + stmt.excluded.cost_micros <= limits.cost_micros)
            & (UsageMonth.articles_generated + stmt.excluded.articles_generated <= limits.articles),
        ).returning(*(getattr(UsageMonth, n) for n in (*_TOTALS, "event_count")))
        row = self.session.execute(stmt).one_or_none()
        if row is None:  # the WHERE said no: the month is (or would go) over a limit
            raise self._over_limit(event, limits)
        return MonthTotals(event.user_id, event.month, *row)

    def _over_limit(self, event: UsageEvent, limits: Limits) -> QuotaExceeded:
        current = self.month(event.user_id, event.month)
        subject = f"user:{event.user_id}/month:{event.month:%Y-%m}"
        violations = {}
        if current.cost_micros + event.cost_micros > limits.cost_micros:
            violations[f"{subject}/cost_micros"] = (
                f"{current.cost_micros} + {event.cost_micros} exceeds the limit of "
                f"{limits.cost_micros} micros"
            )
        if current.articles_generated + event.articles_generated > limits.articles:
            violations[f"{subject}/articles"] = (
                f"{current.articles_generated} + {event.articles_generated} exceeds the limit "
                f"of {limits.articles} articles"
            )
        return QuotaExceeded("the monthly usage limit would be exceeded", violations)

    def _add_to_pipeline(self, event: UsageEvent) -> None:
        """Keep the pipeline's totals (and bump its version, so watchers see the change)."""
        updated = self.session.execute(
            update(Pipeline)
            .where(Pipeline.id == event.pipeline_id, Pipeline.user_id == event.user_id)
            .values(
                total_cost_micros=Pipeline.total_cost_micros + event.cost_micros,
                llm_tokens_used=Pipeline.llm_tokens_used + event.input_tokens + event.output_tokens,
                api_calls_made=Pipeline.api_calls_made + event.api_calls,
                version=Pipeline.version + 1,
            )
            .returning(Pipeline.id)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if updated is None:
            raise NotFound("pipeline", event.pipeline_id)

    def _require_article(self, event: UsageEvent) -> None:
        found = self.session.scalar(
            select(Article.id).where(
                Article.id == event.article_id, Article.user_id == event.user_id
            )
        )
        if found is None:
            raise NotFound("article", event.article_id)

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
        self, filters: EventFilters, *, after: tuple | None, limit: int
    ) -> Page[UsageEvent]:
        stmt = self._events(select(UsageEvent), filters)
        if after is not None:
            stmt = stmt.where(
                after_key((UsageEvent.event_time, UsageEvent.id), after, descending=True)
            )
        stmt = stmt.order_by(UsageEvent.event_time.desc(), UsageEvent.id.desc()).limit(limit + 1)
        rows = self.session.scalars(stmt).all()
        return to_page(rows, limit, key=lambda e: (e.event_time, e.id))

    def cost_report(self, filters: EventFilters, group_by: str) -> tuple[list[ReportRow], int]:
        """Sums per group and the total, computed by PostgreSQL (exact: BIGINT -> NUMERIC)."""
        key: ColumnElement[Any] = {
            "service": UsageEvent.service,
            "model": UsageEvent.model,
            "day": func.to_char(func.timezone("UTC", UsageEvent.event_time), "YYYY-MM-DD"),
            "user": cast(UsageEvent.user_id, String),
        }[group_by]
        sums = (
            func.coalesce(func.sum(UsageEvent.cost_micros), 0),
            func.coalesce(func.sum(UsageEvent.input_tokens), 0),
            func.coalesce(func.sum(UsageEvent.output_tokens), 0),
            func.count(),
        )
        stmt = self._events(select(key.label("key"), *sums), filters).group_by(key)
        rows = [
            ReportRow(k, int(c), int(i), int(o), int(n))
            for k, c, i, o, n in self.session.execute(stmt.order_by(sums[0].desc(), key))
        ]
        total = self.session.scalar(self._events(select(sums[0]), filters))
        return rows, int(total)

    def _events(self, stmt: Select[Any], f: EventFilters) -> Select[Any]:
        owner = self.actor.owner_scope()
        conditions = [
            UsageEvent.user_id == owner if owner else None,
            UsageEvent.user_id == f.user_id if f.user_id else None,
            UsageEvent.pipeline_id == f.pipeline_id if f.pipeline_id else None,
            UsageEvent.service == f.service if f.service else None,
            UsageEvent.event_time >= f.start_time if f.start_time else None,
            UsageEvent.event_time < f.end_time if f.end_time else None,
        ]
        return stmt.where(*(c for c in conditions if c is not None))

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
