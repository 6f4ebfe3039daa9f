"""UpdateArticle's read and write off the ORM: rows as driver tuples, two statements.

The ORM path built an entity, tracked its changes, flushed an UPDATE, an INSERT of the revision
and, at commit, one of the audit event: most of the call's server CPU. Here the article is
read by one SELECT, and one statement writes the rest: the versioned UPDATE ... RETURNING, with
the revision and the audit event INSERTed in CTEs from its row (none when the version moved:
then nothing is written and the caller gets Conflict). What is written is what
ArticleRepository.update writes (articles.planned_update, audit.event_values); the SQL of each
shape of change is built once and kept.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from types import SimpleNamespace
from typing import Any

from psycopg2.extras import Json
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement

from storage.actors import Actor, Caller
from storage.errors import Conflict, NotFound
from storage.models import Article, ArticleRevision, AuditEvent
from storage.models.articles import ARTICLE_COLUMNS
from storage.provenance import PipelineStep
from storage.repositories.articles import DERIVED_INPUTS, planned_update
from storage.uow import Database, Prepared

_DIALECT = postgresql.dialect()  # type: ignore[attr-defined]
_COLUMNS = ", ".join(c.name for c in ARTICLE_COLUMNS)
_CONTENT = ("content_markdown", "content_html")
# The content (tens of KB) is read only when the change derives from it: the revision's
# snapshot takes it from the old row inside the statement, the reply from RETURNING.
_LOAD = {
    content: "SELECT "
    + ", ".join(c.name for c in ARTICLE_COLUMNS if content or c.name not in _CONTENT)
    + " FROM articles WHERE id = %(id)s"
    for content in (False, True)
}
_OLD_CONTENT = (
    "(SELECT jsonb_build_object('content_markdown', content_markdown, 'content_html', "
    "content_html) FROM articles WHERE id = %(id)s)"
)
_REVISION_COLUMNS = (
    "article_id", "article_version", "snapshot", "actor_id", "made_by_kind", "made_by_id",
    "made_by_name", "made_request_id", "made_pipeline_id", "made_pipeline_stage",
)  # fmt: skip
_AUDIT_COLUMNS = (
    "actor_kind", "actor_id", "actor_name", "action", "resource_type", "resource_id",
    "request_id", "details", "user_id",
)  # fmt: skip


def _load_sql(actor: Actor, content: bool) -> str:
    owner = "" if actor.owner_scope() is None else " AND user_id = %(owner)s"
    return _LOAD[content] + owner


def load(session: Session, actor: Actor, article_id: uuid.UUID, *, content: bool) -> Any:
    """The article (a row of ARTICLE_COLUMNS, without the content unless `content`);
    another user's is NotFound, as with get()."""
    params = {"id": article_id, "owner": actor.owner_scope()}
    row = session.connection().exec_driver_sql(_load_sql(actor, content), params).first()
    if row is None:
        raise NotFound("article", article_id)
    return row


def update(
    session: Session, caller: Caller, article: Any, version: int | None,
    changes: dict[str, Any], *, step: PipelineStep | None, audit: dict[str, Any],
) -> Any:  # fmt: skip
    """ArticleRepository.update (with a revision) and the audit event `audit` (event_values)
    in one statement; returns the updated row."""
    sql, params = _planned(caller, article, version, changes, step, audit)
    row = session.connection().exec_driver_sql(sql, params).first()
    if row is None:  # a concurrent change moved the version after the read
        raise Conflict("the article changed meanwhile (stale etag)")
    return row


def load_now(db: Database, caller: Caller, article_id: uuid.UUID, *, content: bool) -> Any:
    """load() in a statement of its own (Database.query: prepared, autocommit). The update
    after it checks the version it read, as in one unit of work (neither locks the row)."""
    params = {"id": article_id, "owner": caller.actor.owner_scope()}
    statement = _prepared(_load_sql(caller.actor, content), "SELECT articles", writes=False)
    rows = db.query(caller, statement, params)
    if not rows:
        raise NotFound("article", article_id)
    return rows[0]


def update_now(
    db: Database, caller: Caller, article: Any, version: int | None,
    changes: dict[str, Any], *, step: PipelineStep | None, audit: dict[str, Any],
) -> Any:  # fmt: skip
    """update() in one round trip of its own, committed (Database.query)."""
    sql, params = _planned(caller, article, version, changes, step, audit)
    rows = db.query(caller, _prepared(sql, "UPDATE articles", writes=True), params)
    if not rows:  # a concurrent change moved the version after the read
        raise Conflict("the article changed meanwhile (stale etag)")
    return rows[0]


def _planned(
    caller: Caller, article: Any, version: int | None, changes: dict[str, Any],
    step: PipelineStep | None, audit: dict[str, Any],
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """The UPDATE of `article` (a row as read) and its parameters."""
    if not hasattr(article, "content_markdown"):  # loaded without: the statement adds it
        fields = article._mapping if hasattr(article, "_mapping") else vars(article)
        article = SimpleNamespace(**fields, **dict.fromkeys(_CONTENT))
    values, kept = planned_update(
        article, version, changes, caller=caller, actor=caller.actor, revision=True,
        publish_now=False, step=step,
    )  # fmt: skip
    assert kept is not None
    given = {name: v for name, v in values.items() if not isinstance(v, ClauseElement)}
    computed = tuple(
        (name, str(v.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True})))
        for name, v in values.items()
        if isinstance(v, ClauseElement)
    )
    params: dict[str, Any] = {f"v_{name}": v for name, v in given.items()}
    params.update({f"r_{name}": kept[name] for name in _REVISION_COLUMNS})
    params["r_snapshot"] = Json(kept["snapshot"])
    params.update({f"a_{name}": audit[name] for name in _AUDIT_COLUMNS})
    params["a_details"] = Json(audit["details"])
    params["id"], params["old_version"] = article.id, article.version
    return _statement(tuple(given), computed), params


_CAST = re.compile(r"CAST\(%\((\w+)\)s AS ([^)]+)\)")
_BARE_TYPES = {"id": "uuid", "owner": "uuid", "old_version": "integer"}


@functools.lru_cache(maxsize=256)
def _prepared(sql: str, label: str, *, writes: bool) -> Prepared:
    """`sql` (every parameter but id, owner and old_version in a CAST) as a Prepared named
    after its text, so each shape is PREPAREd once per connection."""
    types = {**_BARE_TYPES, **dict(_CAST.findall(sql))}
    digest = hashlib.sha256(sql.encode()).hexdigest()[:16]
    return Prepared.from_pyformat(
        f"blogstore_article_{digest}", sql, types, writes=writes, label=label
    )


@functools.lru_cache(maxsize=256)
def _statement(given: tuple[str, ...], computed: tuple[tuple[str, str], ...]) -> str:
    """The UPDATE of these columns, with the revision and audit INSERTs, for one shape."""
    sets = [f"{name} = {_cast(Article, name, 'v_' + name)}" for name in given]
    sets += [f"{name} = {sql}" for name, sql in computed]
    sets.append("version = version + 1")  # the ORM's version_id_col, as its flush does
    revision = ", ".join(
        f"{_cast(ArticleRevision, n, 'r_' + n)} || {_OLD_CONTENT}"
        if n == "snapshot"
        else _cast(ArticleRevision, n, "r_" + n)
        for n in _REVISION_COLUMNS
    )
    audit = ", ".join(_cast(AuditEvent, n, "a_" + n) for n in _AUDIT_COLUMNS)
    return (
        f"WITH u AS (UPDATE articles SET {', '.join(sets)} "
        f"WHERE id = %(id)s AND version = %(old_version)s RETURNING {_COLUMNS}), "
        f"r AS (INSERT INTO article_revisions ({', '.join(_REVISION_COLUMNS)}) "
        f"SELECT {revision} FROM u), "
        f"a AS (INSERT INTO audit_events ({', '.join(_AUDIT_COLUMNS)}) SELECT {audit} FROM u) "
        "SELECT * FROM u"
    )


def needs_content(changes: dict[str, Any]) -> bool:
    """Whether load() must read the content: the change derives fields from it, or there is
    no change (the reply is then the row as read)."""
    return not changes or bool(DERIVED_INPUTS & changes.keys())


def _cast(model: Any, column: str, param: str) -> str:
    """A parameter typed as the column it goes into (a NULL or an empty array needs it)."""
    sql_type = model.__table__.c[column].type.compile(dialect=_DIALECT)
    sql_type = re.sub(r"VARCHAR\(\d+\)", "VARCHAR", sql_type)  # a cast to varchar(n) truncates
    return f"CAST(%({param})s AS {sql_type})"
