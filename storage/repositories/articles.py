"""Articles: scoped reads, slug allocation, multi-row inserts, revisions, ranked search."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import REGCONFIG, insert
from sqlalchemy.orm import Session

from storage import content
from storage.actors import Actor
from storage.errors import AlreadyExists, Conflict, FailedPrecondition, NotFound
from storage.models import Article, ArticleRevision
from storage.models.articles import ARTICLE_COLUMNS
from storage.repositories.changes import apply_changes
from storage.repositories.paging import Page, after_key, newest_first, to_page

# The fields a revision restores; status, publishing and ownership stay as they are.
CONTENT_FIELDS = (
    "title", "slug", "content_markdown", "content_html", "excerpt", "meta_title",
    "meta_description", "primary_keyword", "secondary_keywords", "tags", "seo_score",
)  # fmt: skip
SNAPSHOT_FIELDS = (
    "id", "user_id", "pipeline_id", *CONTENT_FIELDS, "wp_post_id", "wp_url", "wp_status",
    "status", "word_count", "reading_time_minutes", "internal_links", "external_links",
    "content_hash", "publish_time", "create_time", "update_time", "delete_time", "version",
)  # fmt: skip
_DERIVED_INPUTS = {"content_markdown", "content_html", "wp_url"}
ORDER_BY = ("create_time desc", "publish_time desc", "title")
_INSERT_CHUNK = 100
SEARCH_CANDIDATES = 1000  # rank at most the newest N matches: bounded work for common words
# ts_headline's cost grows with its input (~0.11 ms per 1,000 characters per hit, measured):
# snippets come from the excerpt and HEADLINE_CHARS of the content, starting HEADLINE_LEAD
# characters before the first occurrence of the query's first term (else at the start).
HEADLINE_CHARS = 1500
HEADLINE_LEAD = 300
_QUERY_TERM = re.compile(r"(!?)'((?:[^']|'')+)'")
_SLUG_ROUNDS = 20
_ENGLISH = cast(literal("english"), REGCONFIG)


@dataclass(frozen=True)
class ArticleFilters:
    user_id: uuid.UUID | None = None
    status: str | None = None
    primary_keyword: str | None = None
    tag: str | None = None
    pipeline_id: uuid.UUID | None = None
    start_create_time: dt.datetime | None = None
    end_create_time: dt.datetime | None = None
    start_publish_time: dt.datetime | None = None
    end_publish_time: dt.datetime | None = None
    show_deleted: bool = False


@dataclass
class NewArticle:
    """Column values for one article; `slug` empty means derive it from the title."""

    values: dict[str, Any]
    request_id: uuid.UUID | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    # Fixed at construction: create_many fills values["slug"] in, and a transaction retried
    # after a deadlock must still treat that slug as derived, not as given.
    slug_given: bool = field(init=False)

    def __post_init__(self) -> None:
        self.slug_given = bool(self.values.get("slug"))


@dataclass(frozen=True)
class SearchHit:
    article: Any  # a Core row with the article's columns
    rank: float
    snippet: str


def with_derived(values: dict[str, Any]) -> dict[str, Any]:
    """`values` plus the fields the server computes from the markdown."""
    derived = content.derive(
        values["content_markdown"], values.get("content_html", ""), values.get("wp_url", "")
    )
    return {**values, **dataclasses.asdict(derived)}


_BASIC_COLUMNS = tuple(
    c for c in ARTICLE_COLUMNS if c.name not in ("content_markdown", "content_html")
)


def _columns(full: bool) -> tuple[Any, ...]:
    return ARTICLE_COLUMNS if full else _BASIC_COLUMNS


class ArticleRepository:
    def __init__(self, session: Session, actor: Actor) -> None:
        self.session = session
        self.actor = actor

    # -- reads ---------------------------------------------------------------------------
    def _scoped(self, stmt: Select[Any]) -> Select[Any]:
        owner = self.actor.owner_scope()
        return stmt if owner is None else stmt.where(Article.user_id == owner)

    def get(self, article_id: uuid.UUID) -> Article:
        article = self.session.scalars(
            self._scoped(select(Article).where(Article.id == article_id))
        ).one_or_none()
        if article is None:
            raise NotFound("article", article_id)
        return article

    def get_by_slug(self, user_id: uuid.UUID, slug: str) -> Article:
        """The live article with this slug, else the most recently deleted one."""
        stmt = (
            self._scoped(select(Article))
            .where(Article.user_id == user_id, Article.slug == slug)
            .order_by(Article.delete_time.desc().nulls_first())
            .limit(1)
        )
        article = self.session.scalars(stmt).one_or_none()
        if article is None:
            raise NotFound("article", slug)
        return article

    # -- search --------------------------------------------------------------------------
    def search(
        self, query: str, filters: ArticleFilters, *, after: tuple | None, limit: int,
        full: bool,
    ) -> Page[SearchHit]:  # fmt: skip
        """Rank the newest SEARCH_CANDIDATES matches; headline only the returned page."""
        tsquery = func.websearch_to_tsquery(_ENGLISH, query)
        nodes, tree = self.session.execute(
            select(func.numnode(tsquery), func.querytree(tsquery))
        ).one()
        if not nodes:
            return Page([], None)  # empty or only stop words: nothing can match
        # Match on search_vector (GIN), rank on the small rank_vector (no TOAST reads).
        owner = self.actor.owner_scope()
        selected, values = filtered(
            select(Article.id, Article.create_time, Article.rank_vector), filters, owner
        )
        candidates = (
            selected.where(Article.search_vector.op("@@")(tsquery))
            .order_by(Article.create_time.desc(), Article.id.desc())
            .limit(SEARCH_CANDIDATES)
            .cte("candidates")
        )
        in_title = func.ts_filter(candidates.c.rank_vector, literal("{a}")).op(
            "@@", is_comparison=True
        )(tsquery)
        # A title hit scores 1 + (0..1); an excerpt, keyword or tag hit 0..1; a content-only
        # hit 0, so titles lead, then the other fields, then content, newest first.
        rank = (
            case((in_title, 1.0), else_=0.0)
            + cast(func.ts_rank(candidates.c.rank_vector, tsquery, 32), Float)
        ).label("rank")
        ranked = select(candidates.c.id, candidates.c.create_time, rank).subquery()
        page_stmt = select(ranked.c.id, ranked.c.rank, ranked.c.create_time)
        if after is not None:
            page_stmt = page_stmt.where(
                after_key(
                    (ranked.c.rank, ranked.c.create_time, ranked.c.id), after, descending=True
                )
            )
        page_rows = self.session.execute(
            page_stmt.order_by(
                ranked.c.rank.desc(), ranked.c.create_time.desc(), ranked.c.id.desc()
            ).limit(limit + 1),
            values,
        ).all()
        more = len(page_rows) > limit
        page_rows = page_rows[:limit]
        if not page_rows:
            return Page([], None)
        text = Article.excerpt + " " + _snippet_window(tree)
        escaped = func.replace(
            func.replace(func.replace(text, "&", "&amp;"), "<", "&lt;"), ">", "&gt;"
        )
        snippet = func.ts_headline(
            _ENGLISH, escaped, tsquery,
            "MaxFragments=2, MinWords=8, MaxWords=24, StartSel=<b>, StopSel=</b>",
        )  # fmt: skip
        stmt = select(*_columns(full), snippet.label("snippet")).where(
            Article.id.in_([r.id for r in page_rows])
        )
        by_id = {row.id: (row, row.snippet) for row in self.session.execute(stmt)}
        hits = [
            SearchHit(by_id[r.id][0], r.rank, by_id[r.id][1]) for r in page_rows if r.id in by_id
        ]
        last = page_rows[-1]
        return Page(hits, (last.rank, last.create_time, last.id) if more else None)

    # -- writes --------------------------------------------------------------------------
    def create_many(self, items: Sequence[NewArticle]) -> list[Any]:
        """Insert all items (multi-row INSERTs) or raise; returns them in input order.

        Rows go in with ON CONFLICT DO NOTHING; an item that did not land either met its own
        request_id (a retry: the earlier article is returned), or its derived slug was taken
        (it gets the next free suffix and another round), or its given slug was taken
        (ALREADY_EXISTS, and the transaction rolls back).
        """
        results: dict[uuid.UUID, Any] = {}
        pending = list(items)
        replayed = self._by_request_ids(pending)
        for item in pending:
            if item.request_id in replayed:
                results[item.id] = replayed[item.request_id]
        pending = [i for i in pending if i.id not in results]
        derived = {i.id for i in pending if not i.slug_given}
        self._assign_slugs(pending, derived, first_round=True)
        for _ in range(_SLUG_ROUNDS):
            if not pending:
                break
            inserted = self._insert(pending)
            results.update(inserted)
            pending = [i for i in pending if i.id not in inserted]
            if not pending:
                break
            replayed = self._by_request_ids(pending)
            for item in pending:
                if item.request_id in replayed:
                    results[item.id] = replayed[item.request_id]
            pending = [i for i in pending if i.id not in results]
            for item in pending:
                if item.id not in derived:
                    raise AlreadyExists("article", "slug")
            self._assign_slugs(pending, derived, first_round=False)
        if pending:
            raise AlreadyExists("article", "slug")
        return [results[item.id] for item in items]

    def _insert(self, items: Sequence[NewArticle]) -> dict[uuid.UUID, Any]:
        """INSERT ... ON CONFLICT DO NOTHING in chunks of _INSERT_CHUNK rows; the inserted
        articles by id.

        One statement compiled once and executed with many parameter sets (SQLAlchemy's
        insertmanyvalues sends each chunk as one multi-row INSERT): compiling a fresh
        100-row VALUES statement per chunk was 60% of a batch's server CPU. RETURNING leaves
        out the content, which the caller already holds and which is taken from the item.
        """
        now = self.session.scalar(select(func.now()))  # the transaction's clock: publish_time
        # Sorted by (user, slug): concurrent imports then take the unique index's row locks in
        # one order, so two batches with colliding slugs queue instead of deadlocking.
        items = sorted(items, key=lambda i: (str(i.values["user_id"]), i.values["slug"]))
        stmt = insert(Article).on_conflict_do_nothing().returning(*_BASIC_COLUMNS)
        by_id = {i.id: i for i in items}
        inserted: dict[uuid.UUID, Any] = {}
        for start in range(0, len(items), _INSERT_CHUNK):
            rows = [
                {
                    **i.values,
                    "id": i.id,
                    "create_request_id": i.request_id,
                    "publish_time": now if i.values.get("status") == "published" else None,
                }
                for i in items[start : start + _INSERT_CHUNK]
            ]
            for row in self.session.execute(stmt, rows):
                values = by_id[row.id].values
                inserted[row.id] = SimpleNamespace(
                    **row._asdict(),
                    content_markdown=values["content_markdown"],
                    content_html=values["content_html"],
                )
        return inserted

    def _by_request_ids(self, items: Sequence[NewArticle]) -> dict[uuid.UUID, Article]:
        keys = [(i.values["user_id"], i.request_id) for i in items if i.request_id]
        if not keys:
            return {}
        stmt = select(Article).where(
            or_(*(and_(Article.user_id == u, Article.create_request_id == r) for u, r in keys))
        )
        return {a.create_request_id: a for a in self.session.scalars(stmt)}

    def _assign_slugs(
        self, items: Sequence[NewArticle], derived: set[uuid.UUID], *, first_round: bool
    ) -> None:
        """Give derived slugs a free suffix, against the database and within the batch."""
        todo = [i for i in items if i.id in derived]
        if not todo:
            return
        base_of = {i.id: content.slug_from_title(i.values["title"]) for i in todo}
        pairs = {(i.values["user_id"], base_of[i.id]) for i in todo}
        taken_pairs = set() if first_round else self._taken_slugs(pairs)
        taken_pairs |= {
            (i.values["user_id"], i.values["slug"]) for i in items if i.id not in derived
        }
        taken: dict[uuid.UUID, set[str]] = {}
        for owner, slug in taken_pairs:
            taken.setdefault(owner, set()).add(slug)
        for item in todo:
            mine = taken.setdefault(item.values["user_id"], set())
            item.values["slug"] = content.next_free_slug(base_of[item.id], mine)
            mine.add(item.values["slug"])

    def _taken_slugs(self, bases: set[tuple[uuid.UUID, str]]) -> set[tuple[uuid.UUID, str]]:
        conditions = [
            and_(
                Article.user_id == user_id,
                or_(Article.slug == base, Article.slug.like(base + "-%")),
            )
            for user_id, base in bases
        ]
        stmt = select(Article.user_id, Article.slug).where(
            Article.delete_time.is_(None), or_(*conditions)
        )
        return {(u, s) for u, s in self.session.execute(stmt)}

    def update(
        self, article: Article, version: int | None, changes: dict[str, Any], *,
        revision: bool = True, publish_now: bool = False,
    ) -> Article:  # fmt: skip
        """Apply changes if `version` is current; keep the previous version as a revision.

        Becoming PUBLISHED stamps publish_time once; `publish_now` (PublishArticle) restamps it.
        """
        if version is not None and version != article.version:
            raise Conflict("the article changed meanwhile (stale etag)")
        if _DERIVED_INPUTS & changes.keys():
            merged = {
                "content_markdown": article.content_markdown,
                "wp_url": article.wp_url,
                # New markdown without new HTML is re-rendered; otherwise the HTML stays.
                "content_html": "" if "content_markdown" in changes else article.content_html,
                **changes,
            }
            changes = with_derived(merged)
        if revision:
            self.session.add(
                ArticleRevision(
                    article_id=article.id,
                    article_version=article.version,
                    snapshot=snapshot(article),
                    actor_id=self.actor.user_id,
                )
            )
        if publish_now or (changes.get("status") == "published" and not article.publish_time):
            changes = {**changes, "publish_time": func.now()}
        return apply_changes(self.session, article, changes)

    def soft_delete(self, article: Article, version: int | None) -> Article:
        if article.delete_time is not None:
            return article
        return self.update(article, version, {"delete_time": func.now()}, revision=False)

    def undelete(self, article: Article) -> Article:
        if article.delete_time is None:
            raise FailedPrecondition("the article is not deleted")
        return self.update(article, None, {"delete_time": None}, revision=False)

    # -- revisions -----------------------------------------------------------------------
    def list_revisions(
        self, article_id: uuid.UUID, *, after: tuple | None, limit: int
    ) -> Page[ArticleRevision]:
        self.get(article_id)  # scope and existence
        stmt = select(ArticleRevision).where(ArticleRevision.article_id == article_id)
        rows = self.session.scalars(newest_first(stmt, ArticleRevision, after, limit)).all()
        return to_page(rows, limit)

    def get_revision(self, article_id: uuid.UUID, revision_id: uuid.UUID) -> ArticleRevision:
        revision = self.session.scalars(
            select(ArticleRevision).where(
                ArticleRevision.id == revision_id, ArticleRevision.article_id == article_id
            )
        ).one_or_none()
        if revision is None:
            raise NotFound("revision", revision_id)
        return revision


def snapshot(article: Article) -> dict[str, Any]:
    """A JSON-safe copy of the article's fields."""
    out: dict[str, Any] = {}
    for name in SNAPSHOT_FIELDS:
        value = getattr(article, name)
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, dt.datetime):
            value = value.isoformat()
        out[name] = value
    return out


def from_snapshot(data: dict[str, Any]) -> Article:
    """A transient (never added to a session) Article built from a snapshot."""
    values: dict[str, Any] = {}
    for name in SNAPSHOT_FIELDS:
        value = data.get(name)
        if value is not None and name in ("id", "user_id", "pipeline_id"):
            value = uuid.UUID(value)
        elif value is not None and name.endswith("_time"):
            value = dt.datetime.fromisoformat(value)
        values[name] = value
    return Article(**values)


# Filters as conditions on parameters named after the field, so that a statement's SQL
# depends only on which filters are set (queries.list_articles prepares one per shape).
_FILTER_CONDITIONS = {
    "user_id": Article.user_id == bindparam("user_id"),
    "status": Article.status == bindparam("status"),
    "primary_keyword": Article.primary_keyword == bindparam("primary_keyword"),
    "tag": Article.tags.contains(bindparam("tag")),
    "pipeline_id": Article.pipeline_id == bindparam("pipeline_id"),
    "start_create_time": Article.create_time >= bindparam("start_create_time"),
    "end_create_time": Article.create_time < bindparam("end_create_time"),
    "start_publish_time": Article.publish_time >= bindparam("start_publish_time"),
    "end_publish_time": Article.publish_time < bindparam("end_publish_time"),
}


def filter_values(f: ArticleFilters, owner: uuid.UUID | None) -> dict[str, Any]:
    """The parameters of the filters that are set (`owner`: the caller's scope, if any)."""
    values = {name: getattr(f, name) for name in _FILTER_CONDITIONS if getattr(f, name)}
    if "tag" in values:
        values["tag"] = [values["tag"]]  # tags @> ARRAY[tag]
    if owner is not None:
        values["owner"] = owner
    return values


def filtered(
    stmt: Select[Any], f: ArticleFilters, owner: uuid.UUID | None
) -> tuple[Select[Any], dict[str, Any]]:
    """`stmt` limited to the owner's live rows matching `f`, and the parameters it needs."""
    values = filter_values(f, owner)
    conditions = [_FILTER_CONDITIONS[name] for name in values if name != "owner"]
    if owner is not None:
        conditions.append(Article.user_id == bindparam("owner"))
    if not f.show_deleted:
        conditions.append(Article.delete_time.is_(None))
    return stmt.where(*conditions), values


def list_statement(
    f: ArticleFilters, owner: uuid.UUID | None, *, order_by: str, after: tuple | None, full: bool
) -> Select[Any]:
    """A List page in `order_by` (one of ORDER_BY) after the cursor `after`, LIMIT :limit.

    The cursor's values are the parameters after_0 and after_1 (list_values gives them).
    """
    stmt, _ = filtered(select(*_columns(full)), f, owner)
    if order_by == "publish_time desc":  # never-published articles last
        if after is not None:
            stmt = stmt.where(_after_publish_time(after[0] is None))
        keys = (Article.publish_time.desc().nulls_last(), Article.id.desc())
    else:
        columns, descending = (
            ((Article.title, Article.id), False)
            if order_by == "title"
            else ((Article.create_time, Article.id), True)
        )
        if after is not None:
            bound = [bindparam(f"after_{i}", type_=c.type) for i, c in enumerate(columns)]
            stmt = stmt.where(after_key(columns, bound, descending=descending))
        keys = tuple(c.desc() for c in columns) if descending else columns
    return stmt.order_by(*keys).limit(bindparam("limit", type_=Integer))


def list_values(
    f: ArticleFilters, owner: uuid.UUID | None, after: tuple | None, limit: int
) -> dict[str, Any]:
    values = {**filter_values(f, owner), "limit": limit + 1}
    if after is not None:
        values.update({f"after_{i}": v for i, v in enumerate(after) if v is not None})
    return values


def list_cursor(order_by: str) -> Callable[[Any], tuple[Any, ...]]:
    """The cursor of a List row in `order_by`."""
    if order_by == "title":
        return lambda a: (a.title, a.id)
    if order_by == "publish_time desc":
        return lambda a: (a.publish_time, a.id)
    return lambda a: (a.create_time, a.id)


def _snippet_window(tree: str) -> Any:
    """HEADLINE_CHARS of content around the first occurrence of the query's first term.

    `tree` is querytree()'s text ('seo' & 'tip'); the term is a stem, found as a substring.
    """
    term = next((m[2].replace("''", "'") for m in _QUERY_TERM.finditer(tree) if not m[1]), "")
    if not term:
        return func.left(Article.content_markdown, HEADLINE_CHARS)
    found = func.strpos(func.lower(Article.content_markdown), term)
    start = func.greatest(literal(1), found - HEADLINE_LEAD)
    return func.substr(Article.content_markdown, start, HEADLINE_CHARS)


def _after_publish_time(after_null: bool) -> Any:
    """Keyset condition for ORDER BY publish_time DESC NULLS LAST, id DESC."""
    after_time = bindparam("after_0", type_=Article.publish_time.type)
    after_id = bindparam("after_1", type_=Article.id.type)
    if after_null:
        return and_(Article.publish_time.is_(None), Article.id < after_id)
    return or_(
        Article.publish_time < after_time,
        and_(Article.publish_time == after_time, Article.id < after_id),
        Article.publish_time.is_(None),
    )
