"""The usage ledger (append-only), its monthly rollups, and per-user limits.

Money is BIGINT micros of US dollars: sums are exact and never pass through float.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from storage.models.base import Base, created_at, updated_at, uuid_pk

_NON_NEGATIVE = (
    "input_tokens", "output_tokens", "cost_micros", "articles_generated", "api_calls",
)  # fmt: skip


# Character limits of a usage event's text columns (the service checks them first).
EVENT_TEXT_LIMITS = {
    "service": 50, "model": 100, "operation": 100, "prompt_name": 100, "prompt_version": 100,
    "error_message": 2000,
}  # fmt: skip
# How the call behind an event ended. Only "ok" events may carry articles_generated: a failed
# call never counts against the article limit (its cost counts against the cost limit).
USAGE_STATUSES = ("ok", "error", "timeout", "rate_limited")
MAX_DURATION_MS = 86_400_000  # one day
MAX_PARAMETERS_BYTES = 16 * 1024  # a call's parameters (Struct), encoded
# Texts that retention clears; the partial index below holds only rows that still have one.
HAS_TEXT = "input_text IS NOT NULL OR output_text IS NOT NULL"


class UsageEvent(Base):
    """Range-partitioned by UTC month of event_time (migration 0020; storage/lifecycle/
    partitions.py): the primary key holds the partition key, and request_id's uniqueness
    lives in UsageRequestId."""

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
    event_time: Mapped[dt.datetime] = mapped_column(primary_key=True)
    month: Mapped[dt.date]  # the UTC month of event_time (first day)
    create_time: Mapped[dt.datetime] = created_at()
    # The call behind the event (migration 0013). NULL duration: the caller did not say.
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20), server_default="ok")
    error_message: Mapped[str] = mapped_column(
        String(EVENT_TEXT_LIMITS["error_message"]), server_default=""
    )
    prompt_name: Mapped[str] = mapped_column(
        String(EVENT_TEXT_LIMITS["prompt_name"]), server_default=""
    )
    prompt_version: Mapped[str] = mapped_column(
        String(EVENT_TEXT_LIMITS["prompt_version"]), server_default=""
    )
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    input_text: Mapped[str | None] = mapped_column(Text)
    output_text: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        *(CheckConstraint(f"{c} >= 0", name=f"{c}_non_negative") for c in _NON_NEGATIVE),
        CheckConstraint(f"duration_ms BETWEEN 0 AND {MAX_DURATION_MS}", name="duration_ms_range"),
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{s}'" for s in USAGE_STATUSES)),
            name="status_valid",
        ),
        CheckConstraint("status = 'ok' OR articles_generated = 0", name="failed_call_no_articles"),
        Index("ix_usage_events_user_id_event_time", "user_id", "event_time", "id"),
        Index("ix_usage_events_event_time", "event_time", "id"),
        Index("ix_usage_events_pipeline_id", "pipeline_id"),
        Index("ix_usage_events_article_id", "article_id"),
        # ListUsageEvents' status filter: failures are few (a small index, written by failed
        # calls only), and a user's page of them is one range here instead of a walk through
        # all the user's events (figures: migration 0013).
        Index(
            "ix_usage_events_user_id_status_failed",
            "user_id",
            "status",
            "event_time",
            "id",
            postgresql_where=text("status <> 'ok'"),
        ),
        Index(
            "ix_usage_events_event_time_id_with_text",
            "event_time",
            "id",
            postgresql_where=text(HAS_TEXT),
        ),
        {"postgresql_partition_by": "RANGE (event_time)"},
    )


class UsageRequestId(Base):
    """A usage event's idempotency key, unique across all months (migration 0020 says why
    this is a table of its own), written by blogstore_record_usage() before the event."""

    __tablename__ = "usage_request_ids"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID]
    event_time: Mapped[dt.datetime]


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
