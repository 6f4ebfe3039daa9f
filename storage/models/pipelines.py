"""Pipeline runs: a state machine with JSONB stage results and usage totals."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, FetchedValue, ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from storage.models.base import Base, created_at, uuid_pk

NOTIFY_CHANNEL = "blogstore_pipeline"


class Pipeline(Base):
    __tablename__ = "pipelines"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    article_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("articles.id", ondelete="SET NULL"), index=True
    )
    state: Mapped[str] = mapped_column(String(16), server_default="pending")
    input_config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    stage_results: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    errors: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'"))
    warnings: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'"))
    retry_count: Mapped[int] = mapped_column(server_default=text("0"))
    start_time: Mapped[dt.datetime | None]
    end_time: Mapped[dt.datetime | None]
    execution_time_ms: Mapped[int | None] = mapped_column(BigInteger)
    # Written by UsageService in the same transaction as the usage event; read-only here.
    total_cost_micros: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    llm_tokens_used: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    api_calls_made: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    create_time: Mapped[dt.datetime] = created_at()
    update_time: Mapped[dt.datetime] = mapped_column(
        server_default=text("now()"), server_onupdate=FetchedValue()
    )
    version: Mapped[int] = mapped_column(server_default=text("1"))
    create_request_id: Mapped[uuid.UUID | None]

    __mapper_args__ = {"version_id_col": version, "eager_defaults": True}
    __table_args__ = (
        CheckConstraint(
            "state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')",
            name="state_valid",
        ),
        CheckConstraint("retry_count >= 0", name="retry_count_positive"),
        Index(
            "uq_pipelines_user_id_create_request_id", "user_id", "create_request_id", unique=True
        ),
        Index("ix_pipelines_user_id_create_time", "user_id", "create_time", "id"),
        Index("ix_pipelines_user_id_state_create_time", "user_id", "state", "create_time", "id"),
        Index("ix_pipelines_state_create_time", "state", "create_time", "id"),
        Index("ix_pipelines_create_time", "create_time", "id"),
    )
