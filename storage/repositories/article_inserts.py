"""Article inserts off the ORM (issue 17): statements built once, rows as tuples.

- `insert_one`: CreateArticle's common case in one round trip. One statement checks the owner
  (and the pipeline's owner), inserts the article with ON CONFLICT DO NOTHING and writes its
  `article.create` audit event in a CTE from the row it returned. No row back means that
  something needs the general path (storage/repositories/articles.py create_many: an unknown
  owner or pipeline, a request_id seen before, a taken slug or wp_post_id), which the caller
  then runs in the same transaction: nothing was written, so its answers and errors are
  exactly the general path's.
- `copy_insert`: a batch's rows streamed by COPY into a temporary table (COPY FROM cannot
  write a table under row-level security; a temporary table has none), then one INSERT ...
  SELECT ... ON CONFLICT DO NOTHING RETURNING. The COPY text is made a row at a time from the
  items (nothing holds the whole batch as SQL text), and the staging columns are stored
  without compression: the real insert compresses once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from storage.actors import Caller
from storage.models import Article
from storage.models.articles import BASIC_COLUMNS
from storage.provenance import PipelineStep, made_by

# What a create writes; the database fills in the rest (times, version, vectors).
INSERT_COLUMNS = (
    "id", "user_id", "pipeline_id", "title", "slug", "content_markdown", "content_html",
    "excerpt", "meta_title", "meta_description", "primary_keyword", "secondary_keywords",
    "tags", "seo_score", "wp_post_id", "wp_url", "wp_status", "status", "word_count",
    "reading_time_minutes", "internal_links", "external_links", "content_hash",
    "publish_time", "create_request_id", "made_by_kind", "made_by_id", "made_by_name",
    "made_request_id", "made_pipeline_id", "made_pipeline_stage",
)  # fmt: skip
_GIVEN = frozenset(INSERT_COLUMNS) - {"id", "create_request_id", "publish_time"}
RETURNED = tuple(c.name for c in BASIC_COLUMNS)
# Below this many rows a batch round goes by multi-row INSERT (articles.py): a temporary
# table costs a few catalog writes, worth it only for a batch.
COPY_MIN_ROWS = 50
_COPY_CHUNK = 256 * 1024  # characters COPY pulls per read


def _sql_type(name: str) -> str:
    """The column's type for a cast; varchar as text, so that a cast never truncates (too
    long a value fails on the insert, as it would without the cast)."""
    kind = Article.__table__.c[name].type
    compiled = kind.compile(dialect=postgresql.dialect())
    return "text" if compiled.startswith("VARCHAR") else compiled.lower()


COLUMN_TYPES = {name: _sql_type(name) for name in INSERT_COLUMNS}
_VALUES = ", ".join(
    "CASE WHEN %(status)s = 'published' THEN now() END" if name == "publish_time"
    else f"CAST(%({name})s AS {COLUMN_TYPES[name]})"
    for name in INSERT_COLUMNS
)  # fmt: skip
_COLUMNS = ", ".join(INSERT_COLUMNS)
_RETURNED = ", ".join(RETURNED)
# Built once. `owner` is empty unless the user is visible to the transaction and the
# pipeline (if any) is the same user's: then nothing is inserted and no event written.
INSERT_ONE = f"""
WITH owner AS (
  SELECT users.id FROM users WHERE users.id = CAST(%(user_id)s AS uuid)
    AND (CAST(%(pipeline_id)s AS uuid) IS NULL OR EXISTS (
      SELECT 1 FROM pipelines WHERE pipelines.id = CAST(%(pipeline_id)s AS uuid)
        AND pipelines.user_id = users.id))
), article AS (
  INSERT INTO articles ({_COLUMNS}) SELECT {_VALUES} FROM owner
  ON CONFLICT DO NOTHING RETURNING {_RETURNED}
), event AS (
  INSERT INTO audit_events (actor_kind, actor_id, actor_name, action, resource_type,
    resource_id, request_id, details, user_id)
  SELECT %(actor_kind)s, CAST(%(actor_id)s AS uuid), %(actor_name)s, 'article.create',
    'article', CAST(article.id AS text), %(audit_request_id)s,
    jsonb_build_object('slug', article.slug), article.user_id
  FROM article
)
SELECT {_RETURNED} FROM article
"""
_STAGE = "blogstore_article_stage"
_LONG = ("content_markdown", "content_html")
CREATE_STAGE = (
    f"DROP TABLE IF EXISTS pg_temp.{_STAGE}; "
    f"CREATE TEMPORARY TABLE {_STAGE} ("
    + ", ".join(f"{name} {COLUMN_TYPES[name]}" for name in INSERT_COLUMNS)
    + ") ON COMMIT DROP; "
    + "".join(f"ALTER TABLE {_STAGE} ALTER COLUMN {n} SET STORAGE EXTERNAL; " for n in _LONG)
)
COPY_STAGE = f"COPY {_STAGE} ({_COLUMNS}) FROM STDIN"
INSERT_STAGED = (
    f"INSERT INTO articles ({_COLUMNS}) SELECT {_COLUMNS} FROM {_STAGE} "
    f"ON CONFLICT DO NOTHING RETURNING {_RETURNED}"
)


def row_values(caller: Caller, item: Any, publish_time: Any) -> dict[str, Any]:
    """An item's column values (NewArticle): its own, provenance, id and request id."""
    values = item.row()
    pipeline_id = values.get("pipeline_id")
    step = PipelineStep(pipeline_id, item.pipeline_stage) if pipeline_id else None
    return {
        **values,
        **made_by(caller, step),
        "id": item.id,
        "create_request_id": item.request_id,
        # Imports bring their own (storage/lifecycle/legacy_import.py).
        "publish_time": values.get(
            "publish_time", publish_time if values.get("status") == "published" else None
        ),
    }


def fits_one(item: Any) -> bool:
    """Whether `insert_one` can write the item: its values are create's columns, no more."""
    return item.values.keys() <= _GIVEN


def _dbapi(session: Session) -> Any:
    return session.connection().connection.dbapi_connection


def insert_params(caller: Caller, item: Any) -> dict[str, Any]:
    """INSERT_ONE's parameters for `item` (NewArticle) written by `caller`."""
    params = row_values(caller, item, None)
    for name in ("pipeline_id", "made_by_id", "made_pipeline_id", "id", "create_request_id"):
        value = params.get(name)
        params[name] = None if value is None else str(value)
    params["user_id"] = str(params["user_id"])
    actor = caller.actor
    params.update(
        actor_kind=actor.kind.value, actor_id=None if actor.user_id is None else str(actor.user_id),
        actor_name=actor.name, audit_request_id=caller.request_id,
    )  # fmt: skip
    return params


def insert_one(session: Session, caller: Caller, item: Any) -> Any | None:
    """The article written now with its audit event, or None: then nothing was written."""
    params = insert_params(caller, item)
    # Through the session's connection (not its raw cursor): the engine's statement events
    # (slow-query log, spans, metrics) see it like every other statement.
    row = session.connection().exec_driver_sql(INSERT_ONE, params).fetchone()
    if row is None:
        return None
    return Row(RETURNED, row, item)


class Row:
    """A returned article row (BASIC columns); its content is the item's (NewArticle), read
    only when asked for (a FULL answer): a batch's rows hold no HTML of their own."""

    __slots__ = (*RETURNED, "_item")

    def __init__(self, names: Sequence[str], row: Sequence[Any], item: Any) -> None:
        for name, value in zip(names, row, strict=True):
            setattr(self, name, value)
        self._item = item

    @property
    def content_markdown(self) -> str:
        return self._item.content_markdown()

    @property
    def content_html(self) -> str:
        return self._item.row()["content_html"]


def copy_insert(
    session: Session, caller: Caller, items: Sequence[Any], publish_time: Any
) -> dict[uuid.UUID, Any]:
    """Insert `items` (in their order) through a COPY-filled temporary table, ON CONFLICT DO
    NOTHING; the inserted articles by id."""
    by_id = {item.id: item for item in items}
    connection = session.connection()
    connection.exec_driver_sql(CREATE_STAGE)
    with _dbapi(session).cursor() as cursor:  # COPY has no SQLAlchemy API
        cursor.copy_expert(
            COPY_STAGE, _CopyText(_lines(caller, items, publish_time)), size=_COPY_CHUNK
        )
    inserted: dict[uuid.UUID, Any] = {}
    for row in connection.exec_driver_sql(INSERT_STAGED):
        item = by_id[row[0]]
        inserted[item.id] = Row(RETURNED, row, item)
    return inserted


def _lines(caller: Caller, items: Sequence[Any], publish_time: Any) -> Iterator[str]:
    for item in items:
        values = row_values(caller, item, publish_time)
        yield "\t".join(_copy_text(values.get(name)) for name in INSERT_COLUMNS) + "\n"


def _copy_text(value: Any) -> str:
    """A value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, list):
        quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value)
        value = "{" + ",".join(quoted) + "}"
    elif isinstance(value, float):
        value = repr(value)
    elif not isinstance(value, str):
        value = value.isoformat() if hasattr(value, "isoformat") else str(value)
    # Four str.replace passes (C speed) rather than str.translate with a mapping, which goes
    # through a dict per character: 2x the server CPU of a 1000-article batch.
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


class _CopyText:
    """A file-like reader over lines made on demand: COPY pulls a chunk at a time."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._buffer = ""

    def read(self, size: int = -1) -> str:
        parts, length = [self._buffer], len(self._buffer)
        for line in self._lines:
            parts.append(line)
            length += len(line)
            if 0 <= size <= length:
                break
        text = "".join(parts)
        if size < 0 or len(text) <= size:
            self._buffer = ""
            return text
        self._buffer = text[size:]
        return text[:size]
