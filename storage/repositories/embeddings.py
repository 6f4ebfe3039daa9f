"""Embeddings of articles and competitor articles: all-or-nothing writes and k-NN search.

Search strategy. The HNSW index holds every user's vectors; PostgreSQL applies the owner,
model and live-article filters after the index has produced its `hnsw.ef_search` nearest
candidates, so a user owning 1% of the vectors would see ~0.4 of 40 candidates survive.
pgvector 0.6 (pgserver's) has no iterative scan. So, per table and query:

- the user's vectors of the model are counted, up to EXACT_SCAN_MAX + 1, through the
  (user_id, model) index; at most EXACT_SCAN_MAX: an exact scan of just those vectors (a
  MATERIALIZED CTE: the planner cannot swap in the HNSW index), recall 1.0;
- more: the HNSW index, with ef_search raised so that the expected number of surviving
  candidates is OVERSAMPLE x the limit (ef_search = limit x OVERSAMPLE / share, share = the
  user's vectors / the table's, at least MIN_EF_SEARCH, capped at pgvector's 1000); with
  pgvector >= 0.8 also `hnsw.iterative_scan = strict_order`, which keeps scanning until the
  limit is met.

BENCHMARKS.md "Similarity search" has the latencies and recalls behind these numbers.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, delete, func, literal, select, text
from sqlalchemy.dialects.postgresql import insert

from storage.actors import Actor
from storage.embeddings import SchemaStatus, article_embeddings, competitor_embeddings
from storage.errors import FailedPrecondition, NotFound
from storage.models import Article, Competitor, CompetitorArticle
from storage.models.articles import BASIC_COLUMNS
from storage.repositories.base import owned_by

EXACT_SCAN_MAX = 10_000
OVERSAMPLE = 10
MIN_EF_SEARCH = 100
MAX_EF_SEARCH = 1000  # pgvector's limit


@dataclass(frozen=True, slots=True)
class Target:
    """An article (`competitor` False) or competitor article and, once resolved, its owner."""

    id: uuid.UUID
    competitor: bool = False


@dataclass(frozen=True, slots=True)
class Neighbour:
    id: uuid.UUID
    competitor: bool
    distance: float
    row: Any = None  # the article's BASIC columns, or the CompetitorArticle


@dataclass(frozen=True, slots=True)
class Query:
    """Resolved query: whose vectors, which model, the vector, and an article to leave out."""

    user_id: uuid.UUID
    model: str
    vector: Sequence[float]
    exclude: uuid.UUID | None = None


class EmbeddingRepository:
    def __init__(self, session: Any, actor: Actor) -> None:
        self.session = session
        self.actor = actor

    # -- writes ----------------------------------------------------------------------------
    def owners(self, targets: Sequence[Target]) -> dict[Target, uuid.UUID]:
        """Each target's owner; a target the actor cannot see is NotFound (all or nothing)."""
        scope = self.actor.owner_scope()
        found: dict[Target, uuid.UUID] = {}
        article_ids = [t.id for t in targets if not t.competitor]
        if article_ids:
            stmt = select(Article.id, Article.user_id).where(Article.id.in_(article_ids))
            if scope is not None:
                stmt = stmt.where(owned_by(Article.user_id, scope))
            found.update({Target(i): u for i, u in self.session.execute(stmt)})
        competitor_ids = [t.id for t in targets if t.competitor]
        if competitor_ids:
            stmt = (
                select(CompetitorArticle.id, Competitor.user_id)
                .join(Competitor, Competitor.id == CompetitorArticle.competitor_id)
                .where(CompetitorArticle.id.in_(competitor_ids))
            )
            if scope is not None:
                stmt = stmt.where(owned_by(Competitor.user_id, scope))
            found.update({Target(i, True): u for i, u in self.session.execute(stmt)})
        for target in targets:
            if target not in found:
                kind = "competitor article" if target.competitor else "article"
                raise NotFound(kind, target.id)
        return found

    def write(
        self,
        owners: Mapping[Target, uuid.UUID],
        values: Mapping[Target, tuple[str, Sequence[float]]],
    ) -> tuple[int, int]:
        """Set the targets in `values` (model, vector); clear the other targets of `owners`.

        Returns (set, cleared). Rows go in sorted by id: two concurrent batches touching the
        same articles take their row locks in one order instead of deadlocking.
        """
        set_count = cleared = 0
        for competitor, table in ((False, article_embeddings), (True, competitor_embeddings)):
            key = _key(table)
            rows = [
                {key.name: t.id, "user_id": owners[t], "model": m, "embedding": list(v)}
                for t, (m, v) in sorted(values.items(), key=lambda kv: kv[0].id)
                if t.competitor is competitor
            ]
            if rows:
                stmt = insert(table)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[key],
                    set_={
                        "model": stmt.excluded.model,
                        "embedding": stmt.excluded.embedding,
                        "update_time": func.now(),
                    },
                )
                self.session.execute(stmt, rows)
                set_count += len(rows)
            clear = sorted(t.id for t in owners if t.competitor is competitor and t not in values)
            if clear:
                result = self.session.execute(delete(table).where(key.in_(clear)))
                cleared += result.rowcount  # pyright: ignore[reportAttributeAccessIssue]
        return set_count, cleared

    def set_for_competitor_urls(
        self,
        competitor_id: uuid.UUID,
        owner: uuid.UUID,
        by_url: Mapping[str, tuple[str, Sequence[float]]],
    ) -> int:
        """Set embeddings of a competitor's articles named by (normalized) URL: the upsert's."""
        stmt = select(CompetitorArticle.id, CompetitorArticle.url).where(
            CompetitorArticle.competitor_id == competitor_id,
            CompetitorArticle.url.in_(list(by_url)),
        )
        ids = {url: i for i, url in self.session.execute(stmt)}
        values = {Target(ids[url], True): v for url, v in by_url.items() if url in ids}
        return self.write({t: owner for t in values}, values)[0]

    # -- search ----------------------------------------------------------------------------
    def query_of(self, article_id: uuid.UUID, user_id: uuid.UUID | None) -> Query:
        """The query an article stands for: its owner, its embedding's model and vector."""
        scope = self.actor.owner_scope()
        stmt = (
            select(Article.user_id, article_embeddings.c.model, article_embeddings.c.embedding)
            .select_from(Article)
            .outerjoin(article_embeddings, article_embeddings.c.article_id == Article.id)
            .where(Article.id == article_id)
        )
        for owner in {scope, user_id} - {None}:
            stmt = stmt.where(owned_by(Article.user_id, owner))
        row = self.session.execute(stmt).one_or_none()
        if row is None:
            raise NotFound("article", article_id)
        if row.model is None:
            raise FailedPrecondition(
                f"article {article_id} has no embedding: set one (SetEmbeddings) or query by vector"
            )
        return Query(row.user_id, row.model, row.embedding, exclude=article_id)

    def nearest(
        self, query: Query, *, competitors: bool, limit: int, status: SchemaStatus
    ) -> list[Neighbour]:
        """The `limit` nearest live articles (and competitor articles) of the query's user."""
        found = self._nearest(article_embeddings, query, limit, status)
        if competitors:
            found += self._nearest(competitor_embeddings, query, limit, status)
        found.sort(key=lambda n: (n.distance, str(n.id)))
        found = found[:limit]
        return self._with_rows(found)

    def _nearest(
        self, table: Table, query: Query, limit: int, status: SchemaStatus
    ) -> list[Neighbour]:
        competitor = table is competitor_embeddings
        key = _key(table)
        mine = [table.c.user_id == query.user_id, table.c.model == query.model]
        count = self.session.scalar(
            select(func.count()).select_from(
                select(literal(1)).where(*mine).limit(EXACT_SCAN_MAX + 1).subquery()
            )
        )
        if not count:
            return []
        distance = table.c.embedding.cosine_distance(query.vector)
        candidates = select(key.label("id"), distance.label("distance")).where(*mine)
        if not competitor:  # live articles only, never the query's own
            candidates = candidates.join(Article, Article.id == key).where(
                Article.delete_time.is_(None)
            )
            if query.exclude is not None:
                candidates = candidates.where(key != query.exclude)
        if count <= EXACT_SCAN_MAX:
            exact = candidates.cte("exact").prefix_with("MATERIALIZED")
            stmt = select(exact.c.id, exact.c.distance).order_by(exact.c.distance).limit(limit)
        else:
            self._tune_hnsw(table, count, limit, status)
            stmt = candidates.order_by(distance).limit(limit)
        return [Neighbour(i, competitor, float(d)) for i, d in self.session.execute(stmt)]

    def _tune_hnsw(self, table: Table, count: int, limit: int, status: SchemaStatus) -> None:
        total = self.session.scalar(
            text("SELECT greatest(reltuples, 1) FROM pg_class WHERE oid = to_regclass(:t)"),
            {"t": table.name},
        )
        share = min(1.0, count / max(float(total or 1), count))
        ef_search = min(MAX_EF_SEARCH, max(MIN_EF_SEARCH, math.ceil(limit * OVERSAMPLE / share)))
        self.session.execute(
            text("SELECT set_config('hnsw.ef_search', :v, true)"), {"v": str(ef_search)}
        )
        if status.iterative_scan:
            self.session.execute(
                text("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
            )

    def _with_rows(self, found: list[Neighbour]) -> list[Neighbour]:
        article_ids = [n.id for n in found if not n.competitor]
        competitor_ids = [n.id for n in found if n.competitor]
        rows: dict[uuid.UUID, Any] = {}
        if article_ids:
            stmt = select(*BASIC_COLUMNS).where(Article.id.in_(article_ids))
            rows.update({r.id: r for r in self.session.execute(stmt)})
        if competitor_ids:
            stmt = select(CompetitorArticle).where(CompetitorArticle.id.in_(competitor_ids))
            rows.update({r.id: r for r in self.session.scalars(stmt)})
        return [
            Neighbour(n.id, n.competitor, n.distance, rows[n.id]) for n in found if n.id in rows
        ]


def _key(table: Table) -> Any:
    return table.c.article_id if table is article_embeddings else table.c.competitor_article_id
