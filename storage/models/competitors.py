"""Competitors a user monitors and the articles found on their sites."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from storage.models.base import Base, created_at, updated_at, uuid_pk

MIN_CHECK_FREQUENCY_HOURS = 1
MAX_CHECK_FREQUENCY_HOURS = 720
MAX_NAME_LENGTH = 200  # a competitor's name
MAX_AUTHOR_LENGTH = 200  # a competitor article's author
DEFAULT_CHECK_FREQUENCY_HOURS = 24
# When a competitor's lease ends; -infinity when it has none. What ClaimDueCompetitors tests
# (`<= now()`: free to claim) and what ix_competitors_due keys, so the test is in the index.
LEASE_END = "coalesce(lease_expire_time, '-infinity')"


class Competitor(Base):
    __tablename__ = "competitors"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Normalized by storage.normalize.normalize_domain; unique per user.
    domain: Mapped[str] = mapped_column(String(260))
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), server_default="")
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    check_frequency_hours: Mapped[int] = mapped_column(
        server_default=text(str(DEFAULT_CHECK_FREQUENCY_HOURS))
    )
    next_check_time: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    last_check_time: Mapped[dt.datetime | None]
    last_error: Mapped[str] = mapped_column(Text, server_default="")
    # Set by ClaimDueCompetitors: while it lies in the future no other claim returns the row.
    lease_expire_time: Mapped[dt.datetime | None]
    # "metadata" is reserved on declarative classes, hence the attribute name.
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default="{}")
    create_request_id: Mapped[uuid.UUID | None]
    version: Mapped[int] = mapped_column(server_default=text("1"))
    create_time: Mapped[dt.datetime] = created_at()
    update_time: Mapped[dt.datetime] = updated_at()

    __mapper_args__ = {"version_id_col": version, "eager_defaults": True}
    __table_args__ = (
        UniqueConstraint("user_id", "domain"),
        UniqueConstraint("user_id", "create_request_id"),
        CheckConstraint(
            f"check_frequency_hours BETWEEN {MIN_CHECK_FREQUENCY_HOURS} "
            f"AND {MAX_CHECK_FREQUENCY_HOURS}",
            name="check_frequency_hours_range",
        ),
        CheckConstraint("length(domain) > 0", name="domain_not_empty"),
        # The due-check scan of ClaimDueCompetitors: active rows by next_check_time.
        # ClaimDueCompetitors (migration 0022): a leased row is passed over inside the index.
        Index(
            "ix_competitors_due",
            "next_check_time",
            text(LEASE_END),
            postgresql_where=text("is_active"),
        ),
        Index("ix_competitors_user_id_create_time_id", "user_id", "create_time", "id"),
        Index("ix_competitors_create_time_id", "create_time", "id"),
    )


class CompetitorArticle(Base):
    __tablename__ = "competitor_articles"

    id: Mapped[uuid.UUID] = uuid_pk()
    competitor_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("competitors.id", ondelete="CASCADE")
    )
    # Normalized by storage.normalize.normalize_url; unique per competitor.
    url: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text, server_default="")
    publish_date: Mapped[dt.datetime | None]
    author: Mapped[str] = mapped_column(String(MAX_AUTHOR_LENGTH), server_default="")
    word_count: Mapped[int] = mapped_column(server_default=text("0"))
    main_topics: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    keywords: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    social_shares: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    backlinks: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    discover_time: Mapped[dt.datetime] = created_at()
    analyze_time: Mapped[dt.datetime | None]
    # Bumped by every upsert of the article; retention drops articles not seen for N days.
    last_seen_time: Mapped[dt.datetime] = created_at()

    __table_args__ = (
        UniqueConstraint("competitor_id", "url"),
        CheckConstraint(
            "word_count >= 0 AND social_shares >= 0 AND backlinks >= 0", name="counts_not_negative"
        ),
        # Statistics over the last 30 days of discoveries.
        Index(
            "ix_competitor_articles_competitor_id_discover_time", "competitor_id", "discover_time"
        ),
        Index("ix_competitor_articles_last_seen_time_id", "last_seen_time", "id"),
    )


# ListCompetitorArticles: newest publish date first (none last), keyset on (publish_date, id).
Index(
    "ix_competitor_articles_competitor_id_publish_date_id",
    CompetitorArticle.competitor_id,
    CompetitorArticle.publish_date.desc().nulls_last(),
    CompetitorArticle.id.desc(),
)
