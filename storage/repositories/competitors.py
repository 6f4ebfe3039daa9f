"""Competitors: scoped CRUD, crawler leases, article upserts and SQL-computed statistics."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    DateTime,
    any_,
    case,
    delete,
    distinct,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    update,
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

    # -- crawler leases --------------------------------------------------------------------

    def claim_due(self, *, limit: int, lease_seconds: int) -> Sequence[Competitor]:
        """Lease up to `limit` due competitors in one statement.

        The SELECT locks candidate rows with FOR UPDATE SKIP LOCKED, so concurrent claims
        skip each other's rows instead of waiting; a row that another claim leased meanwhile
        fails the re-checked lease condition. The lease is bookkeeping, not an edit: version
        (etag) and update_time stay as they are.
        """
        now = func.now()
        due = (
            select(Competitor.id)
            .where(
                Competitor.is_active,
                Competitor.next_check_time <= now,
                or_(Competitor.lease_expire_time.is_(None), Competitor.lease_expire_time <= now),
            )
            .order_by(Competitor.next_check_time)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        # MATERIALIZED: the locking SELECT runs once, whatever the plan. Inlined, the planner
        # may choose a nested loop that re-runs it per row and leases rows beyond `limit`.
        chosen = self.scoped(due).cte("due").prefix_with("MATERIALIZED")
        stmt = (
            update(Competitor)
            .where(Competitor.id.in_(select(chosen.c.id)))
            .values(
                lease_expire_time=now + func.make_interval(0, 0, 0, 0, 0, 0, lease_seconds),
                update_time=Competitor.update_time,
            )
            .returning(Competitor)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        rows = self.session.scalars(stmt).all()
        return sorted(rows, key=lambda c: (c.next_check_time, c.id))

    def record_check(
        self, competitor: Competitor, check_time: dt.datetime | None, error: str
    ) -> Competitor:
        """Stamp a finished check, schedule the next one and release the lease."""
        checked = func.now() if check_time is None else literal(check_time, DateTime(timezone=True))
        stmt = (
            update(Competitor)
            .where(Competitor.id == competitor.id)
            .values(
                last_check_time=checked,
                last_error=error,
                next_check_time=checked
                + func.make_interval(0, 0, 0, 0, Competitor.check_frequency_hours),
                lease_expire_time=None,
                version=Competitor.version + 1,
            )
            .returning(Competitor)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        return self.session.scalars(stmt).one()

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
        """Statistics for a whole page of competitors in two aggregate queries (no N+1).

        Trending topics count each article once per topic, whether the topic is among its
        main_topics, its keywords or both; ties are broken by the topic's byte order.
        """
        if not competitor_ids:
            return {}
        article = CompetitorArticle
        recent = article.discover_time >= func.now() - RECENT
        counts = self.session.execute(
            select(
                article.competitor_id,
                func.count(),
                func.count().filter(recent),
            )
            .where(article.competitor_id.in_(competitor_ids))
            .group_by(article.competitor_id)
        ).all()
        per_article = (
            select(
                article.competitor_id,
                article.id.label("article_id"),
                func.unnest(func.array_cat(article.main_topics, article.keywords)).label("topic"),
            )
            .where(article.competitor_id.in_(competitor_ids), recent)
            .subquery()
        )
        articles = func.count(distinct(per_article.c.article_id))
        ranked = (
            select(
                per_article.c.competitor_id,
                per_article.c.topic,
                articles.label("articles"),
                func.row_number()
                .over(
                    partition_by=per_article.c.competitor_id,
                    order_by=(articles.desc(), per_article.c.topic.collate("C")),
                )
                .label("rank"),
            )
            .group_by(per_article.c.competitor_id, per_article.c.topic)
            .subquery()
        )
        trending = self.session.execute(
            select(ranked.c.competitor_id, ranked.c.topic, ranked.c.articles)
            .where(ranked.c.rank <= TRENDING_TOPICS)
            .order_by(ranked.c.competitor_id, ranked.c.rank)
        ).all()
        topics: dict[uuid.UUID, list[tuple[str, int]]] = {}
        for competitor_id, topic, count in trending:
            topics.setdefault(competitor_id, []).append((topic, count))
        return {
            competitor_id: CompetitorStats(total, new, tuple(topics.get(competitor_id, ())))
            for competitor_id, total, new in counts
        }
