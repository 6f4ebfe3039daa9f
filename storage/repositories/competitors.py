"""Competitors: scoped CRUD, crawler leases, article upserts and SQL-computed statistics."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    any_,
    case,
    delete,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert

from storage.errors import Conflict
from storage.models import Competitor, CompetitorArticle
from storage.repositories.base import ScopedRepository
from storage.repositories.paging import Cursor, Page, newest_first, to_page

RECENT = dt.timedelta(days=30)
TRENDING_TOPICS = 10


@dataclass(frozen=True, slots=True)
class CompetitorStats:
    total_articles: int = 0
    new_articles_30d: int = 0
    trending_topics: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class ArticleInput:
    """One article of an upsert. Empty values ('', 0, [], None) keep what is stored."""

    url: str
    title: str = ""
    publish_date: dt.datetime | None = None
    author: str = ""
    word_count: int = 0
    main_topics: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    social_shares: int = 0
    backlinks: int = 0
    analyze_time: dt.datetime | None = None


_MERGED_FIELDS = [f.name for f in dataclasses.fields(ArticleInput) if f.name != "url"]


def merge_by_url(articles: Iterable[ArticleInput]) -> list[ArticleInput]:
    """Merge articles with the same (normalized) URL the way the upsert merges with a stored row.

    A later article's non-empty fields win; its empty fields keep the earlier values. So a batch
    means the same as its articles sent one by one, in order. First-seen order is kept.
    """
    merged: dict[str, ArticleInput] = {}
    for article in articles:
        earlier = merged.get(article.url)
        if earlier is None:
            merged[article.url] = article
            continue
        changes = {
            name: getattr(article, name) for name in _MERGED_FIELDS if getattr(article, name)
        }
        merged[article.url] = dataclasses.replace(earlier, **changes)
    return list(merged.values())


@dataclass(frozen=True, slots=True)
class UpsertResult:
    created: int
    updated: int


class CompetitorRepository(ScopedRepository[Competitor]):
    model = Competitor
    resource = "competitor"

    # -- competitors -----------------------------------------------------------------------

    def create(
        self, values: dict[str, Any], request_id: uuid.UUID | None
    ) -> tuple[Competitor, bool]:
        """Insert a competitor; if `request_id` was used before by this user (for this
        domain), return that one and False."""
        return self.create_once(
            values, request_id, same=lambda competitor: competitor.domain == values["domain"]
        )

    def list(
        self,
        *,
        user_id: uuid.UUID | None,
        is_active: bool | None,
        after: Cursor | None,
        limit: int,
    ) -> Page[Competitor]:
        """Newest first; user_id None lists every user's competitors (privileged actors only)."""
        stmt = self.scoped(select(Competitor))
        if user_id is not None:
            stmt = stmt.where(Competitor.user_id == user_id)
        if is_active is not None:
            stmt = stmt.where(Competitor.is_active == is_active)
        rows = self.session.scalars(newest_first(stmt, Competitor, after, limit)).all()
        return to_page(rows, limit)

    def update(
        self, competitor: Competitor, etag_version: int | None, changes: dict[str, Any]
    ) -> Competitor:
        """Apply changes if the etag is current; the versioned flush re-checks it."""
        self._check_version(competitor, etag_version)
        for field, value in changes.items():
            setattr(competitor, field, value)
        self.session.flush()
        return competitor

    def delete(self, competitor: Competitor, etag_version: int | None) -> None:
        """Delete the competitor; its articles go with it (ON DELETE CASCADE)."""
        self._check_version(competitor, etag_version)
        self.session.execute(delete(Competitor).where(Competitor.id == competitor.id))

    @staticmethod
    def _check_version(competitor: Competitor, etag_version: int | None) -> None:
        if etag_version is not None and etag_version != competitor.version:
            raise Conflict("the competitor changed meanwhile (stale etag)")

    # -- crawler leases: storage/repositories/competitor_jobs.py (one statement each) ------

    # -- articles --------------------------------------------------------------------------

    def upsert_articles(
        self, competitor_id: uuid.UUID, articles: Sequence[ArticleInput]
    ) -> UpsertResult:
        """Insert or update by (competitor_id, url) in one INSERT ... ON CONFLICT statement.

        `articles` must have distinct URLs (see merge_by_url): one statement cannot touch a row
        twice. An empty incoming value keeps the stored one; discover_time is never changed.
        """
        if not articles:
            return UpsertResult(0, 0)
        stmt = insert(CompetitorArticle).values(
            [
                {
                    **dataclasses.asdict(article),
                    "competitor_id": competitor_id,
                    "main_topics": list(article.main_topics),
                    "keywords": list(article.keywords),
                }
                for article in articles
            ]
        )
        new = stmt.excluded
        stored = CompetitorArticle

        def unless_empty(name: str, empty: object) -> object:
            return func.coalesce(func.nullif(new[name], empty), getattr(stored, name))

        def unless_none(name: str) -> object:
            return func.coalesce(new[name], getattr(stored, name))

        def unless_no_items(name: str) -> object:
            return case((func.cardinality(new[name]) == 0, getattr(stored, name)), else_=new[name])

        stmt = stmt.on_conflict_do_update(
            index_elements=[CompetitorArticle.competitor_id, CompetitorArticle.url],
            set_={
                "title": unless_empty("title", ""),
                "publish_date": unless_none("publish_date"),
                "author": unless_empty("author", ""),
                "word_count": unless_empty("word_count", 0),
                "main_topics": unless_no_items("main_topics"),
                "keywords": unless_no_items("keywords"),
                "social_shares": unless_empty("social_shares", 0),
                "backlinks": unless_empty("backlinks", 0),
                "analyze_time": unless_none("analyze_time"),
                "last_seen_time": func.now(),
            },
        ).returning(literal_column("xmax = 0").label("inserted"))
        inserted = self.session.scalars(stmt).all()
        created = sum(1 for flag in inserted if flag)
        return UpsertResult(created=created, updated=len(inserted) - created)

    def list_articles(
        self,
        competitor_id: uuid.UUID,
        *,
        start_publish_time: dt.datetime | None,
        end_publish_time: dt.datetime | None,
        keyword: str,
        after: tuple[dt.datetime | None, uuid.UUID] | None,
        limit: int,
    ) -> Page[CompetitorArticle]:
        """Newest publish date first, articles without one last; keyset on (publish_date, id)."""
        article = CompetitorArticle
        stmt = select(article).where(article.competitor_id == competitor_id)
        if start_publish_time is not None:
            stmt = stmt.where(article.publish_date >= start_publish_time)
        if end_publish_time is not None:
            stmt = stmt.where(article.publish_date < end_publish_time)
        if keyword:
            stmt = stmt.where(literal(keyword) == any_(article.keywords))
        if after is not None:
            published, last_id = after
            if published is None:
                stmt = stmt.where(article.publish_date.is_(None), article.id < last_id)
            else:
                stmt = stmt.where(
                    or_(
                        tuple_(article.publish_date, article.id) < tuple_(published, last_id),
                        article.publish_date.is_(None),
                    )
                )
        stmt = stmt.order_by(article.publish_date.desc().nulls_last(), article.id.desc())
        rows = self.session.scalars(stmt.limit(limit + 1)).all()
        if len(rows) <= limit:
            return Page(rows, None)
        last = rows[limit - 1]
        return Page(rows[:limit], (last.publish_date, last.id))  # type: ignore[arg-type]

    # -- statistics ------------------------------------------------------------------------

    def stats(self, competitor_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CompetitorStats]:
        """Statistics for a whole page of competitors in one statement (no N+1)."""
        if not competitor_ids:
            return {}
        rows = self.session.execute(
            text(
                f"SELECT c.id, {STATS_COLUMNS} FROM unnest(CAST(:ids AS uuid[])) AS c(id) "
                + stats_joins("c.id", ":recent")
            ),
            {"ids": list(competitor_ids), "recent": RECENT},
        )
        return {row.id: stats_of(row) for row in rows}


# A competitor's statistics as columns beside it, for any statement that has its id (stats()
# above, and the lease statements of storage/repositories/competitor_jobs.py).
# Trending topics count each recent article once per topic, whether the topic is among its
# main_topics, its keywords or both; ties are broken by the topic's byte order.
STATS_COLUMNS = (
    "counts.total_articles, counts.new_articles_30d, "
    "trending.topics AS trending_topics, trending.topic_counts AS trending_counts"
)


def stats_joins(competitor_id: str, recent: str) -> str:
    """The LATERAL joins behind STATS_COLUMNS; `competitor_id` and `recent` (the RECENT
    interval) are SQL expressions of the enclosing statement."""
    newer = f"a.discover_time >= now() - {recent}"
    order = 't.articles DESC, t.topic COLLATE "C"'
    return (
        " LEFT JOIN LATERAL (SELECT count(*) AS total_articles, "
        f"count(*) FILTER (WHERE {newer}) AS new_articles_30d "
        f"FROM competitor_articles a WHERE a.competitor_id = {competitor_id}) counts ON true"
        f" LEFT JOIN LATERAL (SELECT array_agg(t.topic ORDER BY {order}) AS topics, "
        f"array_agg(t.articles ORDER BY {order}) AS topic_counts FROM ("
        "SELECT topic, count(DISTINCT a.id) AS articles FROM competitor_articles a "
        "CROSS JOIN LATERAL unnest(array_cat(a.main_topics, a.keywords)) AS topic "
        f"WHERE a.competitor_id = {competitor_id} AND {newer} GROUP BY topic "
        f'ORDER BY articles DESC, topic COLLATE "C" LIMIT {TRENDING_TOPICS}) t) trending ON true'
    )


def stats_of(row: Any) -> CompetitorStats:
    """The statistics in a row with STATS_COLUMNS."""
    topics = zip(row.trending_topics or (), row.trending_counts or (), strict=True)
    return CompetitorStats(row.total_articles, row.new_articles_30d, tuple(topics))
