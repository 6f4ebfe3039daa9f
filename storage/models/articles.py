"""Articles, their revisions, and the search vector PostgreSQL keeps for them."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    FetchedValue,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from storage.content import MAX_SLUG_LENGTH
from storage.models.base import Base, created_at, uuid_pk
from storage.provenance import MAX_NAME_CHARS, MAX_REQUEST_ID_CHARS, MAX_STAGE_CHARS
from storage.rules import ARTICLE_TEXT_LIMITS as _TEXT

# Content beyond this many characters is stored but not indexed: tsvector is capped at 1 MiB.
SEARCH_CONTENT_CHARS = 100_000
# Title weighs A; excerpt, keywords and tags B; content C. Functions must be immutable here,
# hence blogstore_join() (an IMMUTABLE array_to_string created by the migration).
# RANK_VECTOR is the A and B part alone: ~0.5 KB, so it stays inline in the row, while
# search_vector (~12 KB for a 9 KB article) is TOASTed. Search matches on search_vector and
# ranks on rank_vector, so ranking 1,000 candidates never reads TOAST (migration 0007).
RANK_VECTOR = (
    "setweight(to_tsvector('english'::regconfig, coalesce(title, '')), 'A') || "
    "setweight(to_tsvector('english'::regconfig, coalesce(excerpt, '') || ' ' || "
    "coalesce(primary_keyword, '') || ' ' || blogstore_join(secondary_keywords) || ' ' || "
    "blogstore_join(tags)), 'B')"
)
SEARCH_VECTOR = (
    f"{RANK_VECTOR} || "
    f"setweight(to_tsvector('english'::regconfig, left(content_markdown, {SEARCH_CONTENT_CHARS})),"
    " 'C')"
)

# Published, live, and changed since PublishArticle last pushed it. The List filter repeats
# it exactly, so PostgreSQL sees that ix_articles_needs_sync covers it. `(...) IS TRUE`, not
# the bare comparison: PostgreSQL guesses 1/3 for a comparison of two columns (and then
# walked a whole order index at 100k articles for 3 rows), but estimates a boolean test
# from the statistics migration 0015 creates on that expression (articles_version_synced).
NEEDS_SYNC = (
    "status = 'published' AND delete_time IS NULL AND (version > wp_synced_version) IS TRUE"
)


# What a version's provenance kind may be: storage.actors.ActorKind's values.
MADE_BY_KIND_VALID = "made_by_kind IN ('user', 'admin', 'service', 'anonymous', 'system')"


class MadeBy:
    """Provenance columns (storage/provenance.py): who made a version, in which call, and by
    which pipeline stage. NULL on versions made before migration 0016."""

    made_by_kind: Mapped[str | None] = mapped_column(String(16))
    made_by_id: Mapped[uuid.UUID | None]
    made_by_name: Mapped[str | None] = mapped_column(String(MAX_NAME_CHARS))
    made_request_id: Mapped[str | None] = mapped_column(String(MAX_REQUEST_ID_CHARS))
    made_pipeline_id: Mapped[uuid.UUID | None]
    made_pipeline_stage: Mapped[str | None] = mapped_column(String(MAX_STAGE_CHARS))


class Article(MadeBy, Base):
    __tablename__ = "articles"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    pipeline_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("pipelines.id", ondelete="SET NULL", use_alter=True)
    )
    title: Mapped[str] = mapped_column(String(_TEXT["title"]))
    slug: Mapped[str] = mapped_column(String(MAX_SLUG_LENGTH))
    content_markdown: Mapped[str] = mapped_column(Text)
    content_html: Mapped[str] = mapped_column(Text)
    excerpt: Mapped[str] = mapped_column(Text, server_default="")
    meta_title: Mapped[str] = mapped_column(String(_TEXT["meta_title"]), server_default="")
    meta_description: Mapped[str] = mapped_column(
        String(_TEXT["meta_description"]), server_default=""
    )
    primary_keyword: Mapped[str] = mapped_column(
        String(_TEXT["primary_keyword"]), server_default=""
    )
    secondary_keywords: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    seo_score: Mapped[float] = mapped_column(Float, server_default=text("0"))
    wp_post_id: Mapped[int | None] = mapped_column(BigInteger)
    wp_url: Mapped[str] = mapped_column(String(_TEXT["wp_url"]), server_default="")
    wp_status: Mapped[str] = mapped_column(String(_TEXT["wp_status"]), server_default="")
    status: Mapped[str] = mapped_column(String(16), server_default="draft")
    word_count: Mapped[int]
    reading_time_minutes: Mapped[int]
    internal_links: Mapped[int]
    external_links: Mapped[int]
    content_hash: Mapped[str] = mapped_column(String(64))
    publish_time: Mapped[dt.datetime | None]
    create_time: Mapped[dt.datetime] = created_at()
    # Kept by the articles_set_update_time trigger; FetchedValue makes the ORM read it back.
    update_time: Mapped[dt.datetime] = mapped_column(
        server_default=text("now()"), server_onupdate=FetchedValue()
    )
    delete_time: Mapped[dt.datetime | None]
    version: Mapped[int] = mapped_column(server_default=text("1"))
    create_request_id: Mapped[uuid.UUID | None]
    # WordPress sync state (migration 0015): the remote post's modified time and the version
    # PublishArticle last pushed (NULL: never pushed through it, so never `needs_sync`).
    wp_modified_time: Mapped[dt.datetime | None]
    wp_synced_version: Mapped[int | None]
    search_vector: Mapped[Any] = mapped_column(
        TSVECTOR, Computed(SEARCH_VECTOR, persisted=True), deferred=True
    )
    rank_vector: Mapped[Any] = mapped_column(
        TSVECTOR, Computed(RANK_VECTOR, persisted=True), deferred=True
    )

    __mapper_args__ = {"version_id_col": version, "eager_defaults": True}
    __table_args__ = (
        CheckConstraint("status IN ('draft', 'published', 'archived')", name="status_valid"),
        CheckConstraint("seo_score >= 0 AND seo_score <= 100", name="seo_score_range"),
        CheckConstraint("slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'", name="slug_format"),
        CheckConstraint(MADE_BY_KIND_VALID, name="made_by_kind_valid"),
        # Slug unique per user among live articles: a deleted article frees its slug.
        Index(
            "uq_articles_user_id_slug_live",
            "user_id",
            "slug",
            unique=True,
            postgresql_where=text("delete_time IS NULL"),
        ),
        Index("uq_articles_user_id_create_request_id", "user_id", "create_request_id", unique=True),
        # One index per List order and filter; all keyset-friendly (order columns, then id).
        Index("ix_articles_create_time", "create_time", "id"),
        Index("ix_articles_user_id_create_time", "user_id", "create_time", "id"),
        Index("ix_articles_user_id_status_create_time", "user_id", "status", "create_time", "id"),
        Index(
            "ix_articles_user_id_primary_keyword",
            "user_id",
            "primary_keyword",
            "create_time",
            "id",
        ),
        Index(
            "ix_articles_user_id_publish_time",
            "user_id",
            text("publish_time DESC NULLS LAST"),
            text("id DESC"),
        ),
        Index("ix_articles_user_id_title", "user_id", "title", "id"),
        # The same orders across users, for admins and services (migration 0008).
        Index("ix_articles_title", "title", "id"),
        Index("ix_articles_publish_time", text("publish_time DESC NULLS LAST"), text("id DESC")),
        Index("ix_articles_pipeline_id", "pipeline_id"),
        # Retention's walk over soft-deleted articles (only those are in it).
        Index(
            "ix_articles_delete_time_id",
            "delete_time",
            "id",
            postgresql_where=text("delete_time IS NOT NULL"),
        ),
        # Content dedupe (migration 0015): the content_hash filter and the if_content_exists
        # check, for one user or across users (the hash leads), live or deleted.
        Index("ix_articles_content_hash_user_id", "content_hash", "user_id"),
        # A WordPress post belongs to at most one live article of a user.
        Index(
            "uq_articles_user_id_wp_post_id_live",
            "user_id",
            "wp_post_id",
            unique=True,
            postgresql_where=text("delete_time IS NULL AND wp_post_id IS NOT NULL"),
        ),
        # needs_sync: only the articles out of sync are in it, so it stays small.
        Index(
            "ix_articles_needs_sync",
            "user_id",
            "create_time",
            "id",
            postgresql_where=text(NEEDS_SYNC),
        ),
        Index("ix_articles_tags", "tags", postgresql_using="gin"),
        Index("ix_articles_search_vector", "search_vector", postgresql_using="gin"),
    )


# What reads return: every column but the two search vectors (PostgreSQL's own index data).
ARTICLE_COLUMNS = tuple(
    c for c in Article.__table__.c if c.name not in ("search_vector", "rank_vector")
)
BASIC_COLUMNS = tuple(  # ArticleView BASIC: without the content
    c for c in ARTICLE_COLUMNS if c.name not in ("content_markdown", "content_html")
)


class ArticleRevision(MadeBy, Base):
    """An article as it was before a change: a JSON snapshot of its fields.

    `actor_id` is who replaced this version; the `made_*` columns say who made it.
    """

    __tablename__ = "article_revisions"

    id: Mapped[uuid.UUID] = uuid_pk()
    article_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    article_version: Mapped[int]
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSONB)
    actor_id: Mapped[uuid.UUID | None]
    create_time: Mapped[dt.datetime] = created_at()

    __table_args__ = (
        CheckConstraint(MADE_BY_KIND_VALID, name="made_by_kind_valid"),
        Index("ix_article_revisions_article_id_create_time", "article_id", "create_time", "id"),
        Index("ix_article_revisions_create_time_id", "create_time", "id"),  # retention by age
    )
