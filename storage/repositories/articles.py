"""Articles: scoped reads by id or slug, slug allocation, multi-row inserts, revisions.

Every version this repository writes records its provenance (storage/provenance.py): the
caller, its request id and the pipeline step the servicer names.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    and_,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from storage import content
from storage.actors import Actor, Caller
from storage.errors import AlreadyExists, Conflict, FailedPrecondition, NotFound
from storage.models import Article, ArticleRevision
from storage.models.articles import BASIC_COLUMNS
from storage.provenance import PipelineStep, made_by, provenance_of
from storage.repositories import article_dedupe, article_inserts
from storage.repositories.article_dedupe import IfContentExists
from storage.repositories.base import ScopedRepository, check_replay
from storage.repositories.changes import apply_changes
from storage.repositories.paging import Page, newest_first, to_page

# The fields a revision restores; status, publishing and ownership stay as they are.
CONTENT_FIELDS = (
    "title", "slug", "content_markdown", "content_html", "excerpt", "meta_title",
    "meta_description", "primary_keyword", "secondary_keywords", "tags", "seo_score",
)  # fmt: skip
SNAPSHOT_FIELDS = (
    "id", "user_id", "pipeline_id", *CONTENT_FIELDS, "wp_post_id", "wp_url", "wp_status",
    "status", "word_count", "reading_time_minutes", "internal_links", "external_links",
    "content_hash", "publish_time", "create_time", "update_time", "delete_time", "version",
    "wp_modified_time", "wp_synced_version",
)  # fmt: skip
DERIVED_INPUTS = {"content_markdown", "content_html", "wp_url"}
_INSERT_CHUNK = 100
_SLUG_ROUNDS = 20


@dataclass
class NewArticle:
    """Column values for one article; `slug` empty means derive it from the title."""

    values: dict[str, Any]
    request_id: uuid.UUID | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    # The pipeline stage creating it (provenance; the pipeline is values["pipeline_id"]).
    pipeline_stage: str = ""
    # Derived as its row is written (`row`), not before: `values` holds the content_hash
    # from the start (with_hash), the counts once written and the rendered HTML never, so a
    # batch does not hold every item's HTML (issue 17).
    derive_late: bool = False
    # Derived late, the markdown may stay only where it came from (the request): `values`
    # then has no content_markdown and this reads it when the row is written, so a batch
    # does not hold a second copy of every item's markdown (issue 17).
    markdown: Callable[[], str] | None = None
    # Fixed at construction: create_many fills values["slug"] in, and a transaction retried
    # after a deadlock must still treat that slug as derived, not as given.
    slug_given: bool = field(init=False)

    def __post_init__(self) -> None:
        self.slug_given = bool(self.values.get("slug"))

    def row(self) -> dict[str, Any]:
        """The values its row is written with: `values`, or, derived late, rendered now."""
        if not self.derive_late:
            return self.values
        values = self.values
        markdown = self.content_markdown()
        derived = content.derive(markdown, values.get("content_html", ""), values.get("wp_url", ""))
        values.update(
            word_count=derived.word_count, reading_time_minutes=derived.reading_time_minutes,
            internal_links=derived.internal_links, external_links=derived.external_links,
        )  # fmt: skip
        return {**values, "content_markdown": markdown, "content_html": derived.content_html}

    def content_markdown(self) -> str:
        markdown = self.values.get("content_markdown")
        if markdown is None and self.markdown is not None:
            return self.markdown()
        return markdown if markdown is not None else ""


def with_derived(values: dict[str, Any]) -> dict[str, Any]:
    """`values` plus the fields the server computes from the markdown."""
    derived = content.derive(
        values["content_markdown"], values.get("content_html", ""), values.get("wp_url", "")
    )
    # Field by field: dataclasses.asdict deep-copies, 4x the cost on CreateArticle's path.
    return {**values, **{name: getattr(derived, name) for name in content.Derived.__slots__}}


def first_slug(item: NewArticle) -> None:
    """A derived slug as create_many's first round tries it (the bare base), for the single
    article paths; a given slug stays."""
    if not item.slug_given:
        base = content.slug_from_title(item.values["title"])
        item.values["slug"] = content.next_free_slug(base, set())


def with_hash(values: dict[str, Any]) -> dict[str, Any]:
    """`values` plus its content_hash: what a late-derived NewArticle needs before its row."""
    return {**values, "content_hash": content.markdown_hash(values["content_markdown"])}


class ArticleRepository(ScopedRepository[Article]):
    model = Article
    resource = "article"

    def __init__(self, session: Session, actor: Actor, caller: Caller | None = None) -> None:
        super().__init__(session, actor)
        self.caller = caller or Caller(actor)  # whose request id the versions record

    # -- reads ---------------------------------------------------------------------------
    def get_by_slug(self, user_id: uuid.UUID, slug: str) -> Article:
        """The live article with this slug, else the most recently deleted one."""
        stmt = (
            self.scoped(select(Article))
            .where(Article.user_id == user_id, Article.slug == slug)
            .order_by(Article.delete_time.desc().nulls_first())
            .limit(1)
        )
        article = self.session.scalars(stmt).one_or_none()
        if article is None:
            raise NotFound("article", slug)
        return article

    # -- writes --------------------------------------------------------------------------
    def create_many(
        self, items: Sequence[NewArticle], *,
        if_content_exists: IfContentExists = IfContentExists.CREATE, batch: bool = False,
    ) -> list[Any]:  # fmt: skip
        """Insert all items (multi-row INSERTs) or raise; returns them in input order.

        An item whose request_id was seen returns that earlier article (a retry), before
        anything else. Then, unless `if_content_exists` is CREATE, an item whose markdown the
        owner already has in a live article, or an earlier item has, returns that article
        or fails (article_dedupe; `batch` names items "articles[i]" in errors).
        Rows go in with ON CONFLICT DO NOTHING; an item that did not land either met its own
        request_id (a concurrent retry), or its wp_post_id was taken (ALREADY_EXISTS), or its
        derived slug was taken (it gets the next free suffix and another round), or its
        given slug was taken (ALREADY_EXISTS, and the transaction rolls back).
        """
        results: dict[uuid.UUID, Any] = {}
        pending = list(items)
        self._replay(pending, results)
        pending = [i for i in pending if i.id not in results]
        repeats: dict[uuid.UUID, uuid.UUID] = {}
        if if_content_exists is not IfContentExists.CREATE and pending:
            position = {item.id: n for n, item in enumerate(items)}
            pending, found, repeats = article_dedupe.resolve(
                self.session, self.scoped, pending, if_content_exists,
                lambda item: f"articles[{position[item.id]}]" if batch else "",
            )  # fmt: skip
            results.update(found)
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
            self._replay(pending, results)
            pending = [i for i in pending if i.id not in results]
            self._refuse_taken_posts(pending)
            for item in pending:
                if item.id not in derived:
                    raise AlreadyExists("article", "slug")
            self._assign_slugs(pending, derived, first_round=False)
        if pending:
            raise AlreadyExists("article", "slug")
        for later, earlier in repeats.items():
            results[later] = results[earlier]
        return [results[item.id] for item in items]

    def create_one(self, item: NewArticle) -> Any | None:
        """CreateArticle's common case in one round trip (article_inserts.insert_one): the
        article written now, with its `article.create` audit event, or None when the item
        needs create_many (which then runs as if this had not been tried: nothing was
        written). A derived slug is tried as create_many's first round would (the bare base)."""
        if not article_inserts.fits_one(item):
            return None
        first_slug(item)
        return article_inserts.insert_one(self.session, self.caller, item)

    def _refuse_taken_posts(self, items: Sequence[NewArticle]) -> None:
        """ALREADY_EXISTS when an item's wp_post_id is on a live article of its owner (ON
        CONFLICT DO NOTHING skipped it as it would a taken slug)."""
        posts = {
            (i.values["user_id"], i.values["wp_post_id"])
            for i in items
            if i.values.get("wp_post_id")
        }
        if not posts:
            return
        stmt = select(Article.id).where(
            Article.delete_time.is_(None),
            or_(*(and_(Article.user_id == u, Article.wp_post_id == p) for u, p in posts)),
        )
        if self.session.execute(stmt.limit(1)).first() is not None:
            raise AlreadyExists("article", "wp_post_id")

    def _insert(self, items: Sequence[NewArticle]) -> dict[uuid.UUID, Any]:
        """INSERT ... ON CONFLICT DO NOTHING; the inserted articles by id.

        A round of at least COPY_MIN_ROWS rows is streamed by COPY through a temporary table
        (article_inserts.copy_insert: PostgreSQL's own speed, no batch-sized SQL text).
        Smaller ones: one statement compiled once and executed with many parameter sets
        (SQLAlchemy's insertmanyvalues sends each chunk as one multi-row INSERT): compiling a
        fresh 100-row VALUES statement per chunk was 60% of a batch's server CPU. RETURNING
        leaves out the content, which the caller already holds and which is taken from the
        item.
        """
        now = self.session.scalar(select(func.now()))  # the transaction's clock: publish_time
        # Sorted by (user, slug): concurrent imports then take the unique index's row locks in
        # one order, so two batches with colliding slugs queue instead of deadlocking.
        items = sorted(items, key=lambda i: (str(i.values["user_id"]), i.values["slug"]))
        if len(items) >= article_inserts.COPY_MIN_ROWS:
            return article_inserts.copy_insert(self.session, self.caller, items, now)
        stmt = insert(Article).on_conflict_do_nothing().returning(*BASIC_COLUMNS)
        by_id = {i.id: i for i in items}
        inserted: dict[uuid.UUID, Any] = {}
        for start in range(0, len(items), _INSERT_CHUNK):
            rows = [
                article_inserts.row_values(self.caller, i, now)
                for i in items[start : start + _INSERT_CHUNK]
            ]
            for row in self.session.execute(stmt, rows):
                inserted[row.id] = article_inserts.Row(row._fields, row, by_id[row.id])
        return inserted

    def _replay(self, items: Sequence[NewArticle], results: dict[uuid.UUID, Any]) -> None:
        """Put into `results` the articles that items' request_ids created before (a retry),
        refusing a request_id reused for another article (check_replay)."""
        keys = [(i.values["user_id"], i.request_id) for i in items if i.request_id]
        if not keys:
            return
        stmt = select(Article).where(
            or_(*(and_(Article.user_id == u, Article.create_request_id == r) for u, r in keys))
        )
        replayed = {a.create_request_id: a for a in self.session.scalars(stmt)}
        for item in items:
            article = replayed.get(item.request_id)
            if article is not None:
                check_replay(
                    "article",
                    article.title == item.values["title"]
                    and article.content_hash == item.values["content_hash"],
                )
                results[item.id] = article

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
        revision: bool = True, publish_now: bool = False, step: PipelineStep | None = None,
    ) -> Article:  # fmt: skip
        """Apply changes if `version` is current; keep the previous version as a revision.

        With a revision, the new version records its provenance (the caller, `step`) and the
        revision keeps the replaced version's. Without one (soft delete, undelete: no
        content changes) the provenance stays.
        Becoming PUBLISHED stamps publish_time once; `publish_now` (PublishArticle) restamps it.
        """
        changes, kept = planned_update(
            article, version, changes, caller=self.caller, actor=self.actor, revision=revision,
            publish_now=publish_now, step=step,
        )  # fmt: skip
        if kept is not None:
            self.session.add(ArticleRevision(**kept))
        return apply_changes(self.session, article, changes)

    def publish(
        self, article: Article, version: int | None, changes: dict[str, Any],
        modified_time: dt.datetime | None,
    ) -> Article:  # fmt: skip
        """PublishArticle: PUBLISHED now, and the push recorded: wp_synced_version is the
        version this update makes (the version column counts up by one per flush, and a
        concurrent change fails the flush), wp_modified_time the remote post's (else now)."""
        pushed = {
            "wp_synced_version": article.version + 1,
            "wp_modified_time": modified_time or func.now(),
        }
        return self.update(article, version, {**changes, **pushed}, publish_now=True)

    def soft_delete(self, article: Article, version: int | None) -> Article:
        if article.delete_time is not None:
            return article
        changes = {"delete_time": func.now(), **_still_synced(article)}
        return self.update(article, version, changes, revision=False)

    def undelete(self, article: Article) -> Article:
        if article.delete_time is None:
            raise FailedPrecondition("the article is not deleted")
        return self.update(
            article, None, {"delete_time": None, **_still_synced(article)}, revision=False
        )

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


def planned_update(
    article: Any, version: int | None, changes: dict[str, Any], *, caller: Caller, actor: Actor,
    revision: bool, publish_now: bool, step: PipelineStep | None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:  # fmt: skip
    """What ArticleRepository.update and the path off the ORM (article_updates.py) write: the
    column values (SQL expressions for the database's clock) and the revision row, if any."""
    if version is not None and version != article.version:
        raise Conflict("the article changed meanwhile (stale etag)")
    if DERIVED_INPUTS & changes.keys():
        merged = {
            "content_markdown": article.content_markdown,
            "wp_url": article.wp_url,
            # New markdown without new HTML is re-rendered; otherwise the HTML stays.
            "content_html": "" if "content_markdown" in changes else article.content_html,
            **changes,
        }
        changes = with_derived(merged)
    kept = None
    if revision:
        kept = {
            "article_id": article.id,
            "article_version": article.version,
            "snapshot": snapshot(article),
            "actor_id": actor.user_id,
            **provenance_of(article),
        }
        changes = {**changes, **made_by(caller, step)}
    if publish_now or (changes.get("status") == "published" and not article.publish_time):
        changes = {**changes, "publish_time": func.now()}
    return changes, kept


def revision_article(revision: ArticleRevision) -> Article:
    """The article a revision keeps, with that version's provenance."""
    article = from_snapshot(revision.snapshot)
    for name, value in provenance_of(revision).items():
        setattr(article, name, value)
    return article


def _still_synced(article: Article) -> dict[str, Any]:
    """Deleting or undeleting changes no content: an article in sync stays in sync."""
    if article.wp_synced_version != article.version:
        return {}
    return {"wp_synced_version": article.version + 1}


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
