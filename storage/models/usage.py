"""The usage ledger (append-only), its monthly rollups, and per-user limits.

Money is BIGINT micros of US dollars: sums are exact and never pass through float.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from storage.models.base import Base, created_at, updated_at, uuid_pk

_NON_NEGATIVE = (
    "input_tokens", "output_tokens", "cost_micros", "articles_generated", "api_calls",
)  # fmt: skip


# Character limits of a usage event's text columns (the service checks them first).
EVENT_TEXT_LIMITS = {"service": 50, "model": 100, "operation": 100}


class UsageEvent(Base):
    __tablename__ = "usage_events"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    pipeline_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("pipelines.id", ondelete="SET NULL")
    )
    article_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("articles.id", ondelete="SET NULL")
    )
    service: Mapped[str] = mapped_column(String(EVENT_TEXT_LIMITS["service"]))
    model: Mapped[str] = mapped_column(String(EVENT_TEXT_LIMITS["model"]), server_default="")
    operation: Mapped[str] = mapped_column(
        String(EVENT_TEXT_LIMITS["operation"]), server_default=""
    )
    input_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cost_micros: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    articles_generated: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    api_calls: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    request_id: Mapped[uuid.UUID]
    event_time: Mapped[dt.datetime]
    month: Mapped[dt.date]  # the UTC month of event_time (first day)
    create_time: Mapped[dt.datetime] = created_at()

    __table_args__ = (
        *(CheckConstraint(f"{c} >= 0", name=f"{c}_non_negative") for c in _NON_NEGATIVE),
        Index("uq_usage_events_user_id_request_id", "user_id", "request_id", unique=True),
        Index("ix_usage_events_user_id_event_time", "user_id", "event_time", "id"),
        Index("ix_usage_events_event_time", "event_time", "id"),
        Index("ix_usage_events_pipeline_id", "pipeline_id"),
        Index("ix_usage_events_article_id", "article_id"),
    )


class UsageMonth(Base):
    """One user's totals for one UTC month, kept in the same transaction as each event."""

    __tablename__ = "usage_monthly"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    month: Mapped[dt.date] = mapped_column(primary_key=True)
    cost_micros: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    articles_generated: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    input_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    api_calls: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    event_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    update_time: Mapped[dt.datetime] = updated_at()

    __table_args__ = (CheckConstraint("extract(day from month) = 1", name="month_first_day"),)


class UsageLimit(Base):
    """Per-user overrides; NULL means the configured default."""

    __tablename__ = "usage_limits"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    cost_limit_micros: Mapped[int | None] = mapped_column(BigInteger)
    article_limit: Mapped[int | None] = mapped_column(BigInteger)
    update_time: Mapped[dt.datetime] = updated_at()

    __table_args__ = (
        CheckConstraint("cost_limit_micros > 0", name="cost_limit_positive"),
        CheckConstraint("article_limit > 0", name="article_limit_positive"),
    )
