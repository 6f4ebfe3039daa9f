"""Hot-path statements that skip the ORM and run as one round trip each (Database.query).

Each is a SQLAlchemy construct compiled once (at import, or per shape for List) with $n
placeholders, and PREPAREd once per pooled connection; only the EXECUTE arguments change per
call. Rows come back as attribute records of driver values; article rows, which go straight
to protobuf, carry their UUIDs as text.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.dialects import postgresql

from storage.actors import Caller
from storage.models import AccessToken, ApiKey, Article, User
from storage.models.articles import ARTICLE_COLUMNS
from storage.repositories.article_reads import (
    MAY_BE_BOUNDED,
    ArticleFilters,
    filter_values,
    list_cursor,
    list_statement,
    list_values,
    phrase_scope_statement,
    search_page_statement,
    search_rank_statement,
    search_values,
    shape_flags,
    snippet_term,
)
from storage.repositories.base import OWNER, owned_by
from storage.repositories.paging import Page, to_page
from storage.uow import Database, Prepared

_DIALECT = postgresql.psycopg2.dialect(paramstyle="numeric_dollar")  # type: ignore[attr-defined]


def _prepare(
    name: str, statement: Any, *, options: dict[str, Any] | None = None, **types: str
) -> Prepared:
    """`statement` with $n placeholders; parameter types from `types`, else from their binds.

    Literals in the statement (bound parameters with a value) become parameters too, whose
    values the Prepared carries. `options`: Prepared fields (uuids_as_text, durable, ...).
    """
    compiled = statement.compile(dialect=_DIALECT)
    params = tuple(dict.fromkeys(compiled.positiontup))  # $n order, each name once
    constants = {p: compiled.binds[p].value for p in params if compiled.binds[p].value is not None}
    return Prepared(
        name=f"blogstore_{name}", body=compiled.string, params=params,
        types=tuple(types.get(p) or _sql_type(compiled.binds[p].type) for p in params),
        constants=constants, **(options or {}),
    )  # fmt: skip


def _sql_type(type_: Any) -> str:
    """A bind's type for PREPARE; varchar(n) as text, so a long filter value cannot fail."""
    return re.sub(r"VARCHAR(\(\d+\))?", "TEXT", type_.compile(dialect=_DIALECT))


_GET_ARTICLE = _prepare(
    "get_article",
    select(*ARTICLE_COLUMNS).where(
        Article.id == bindparam("id"),
        or_(OWNER.is_(None), owned_by(Article.user_id, OWNER)),  # a null owner: unscoped
    ),
    options={"uuids_as_text": True, "replica_ok": True},
    id="uuid",
    owner="uuid",
)


def _resolve(model: type[ApiKey] | type[AccessToken]) -> Prepared:
    """A live credential of an active user, read only: its use is counted apart, in batches
    (server/credential_cache.py UsageCounts). Always on the primary: a revocation or a new
    key counts at once, whatever a replica has replayed."""
    return _prepare(
        f"resolve_{model.__tablename__}",
        select(
            model.id, model.secret_hash, model.expire_time, User.id.label("user_id"),
            User.is_admin,
        )
        .join(User, User.id == model.user_id)
        .where(
            model.secret_hash == bindparam("secret_hash"),
            model.revoke_time.is_(None),
            (model.expire_time.is_(None)) | (model.expire_time > func.now()),
            User.is_active,
        ),
        secret_hash="bytea",  # noqa: S106 - a SQL type name, not a secret
    )  # fmt: skip


_RESOLVE = {ApiKey: _resolve(ApiKey), AccessToken: _resolve(AccessToken)}


# One user's RecordUsage calls for one month by one principal, as one statement (migrations
# 0023 and 0025, storage/usage_batch.py): the events go as one JSON array; a group of fresh
# request_ids is written without 0023's per-event loop. Named as the one-call statement was,
# so slow-statement logs and metrics keep their name.
_RECORD_USAGE = Prepared(
    name="blogstore_record_usage",
    body="SELECT blogstore_record_usage_fresh($1, $2, $3, $4, $5, $6, $7, $8) AS result",
    params=("user_id", "month", "default_cost_limit", "default_article_limit", "actor_kind",
            "actor_id", "actor_name", "events"),
    types=("uuid", "date", "bigint", "bigint", "text", "uuid", "text", "jsonb"),
    writes=True,
)  # fmt: skip
# The same arguments, event by event (0023): what a call alone goes to after its group failed.
_RECORD_USAGE_BY_EVENT = replace(
    _RECORD_USAGE,
    name="blogstore_record_usage_by_event",
    body=_RECORD_USAGE.body.replace("_fresh(", "_batch("),
)


def record_usage_group(
    db: Database, caller: Caller, user_id: uuid.UUID, month: Any,
    default_limits: tuple[int, int], events: str, *, by_event: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Append `events` (a JSON array, in order) for one user and month in one round trip and
    one transaction; the result is described in migration 0023 (0025 returns the same).
    Raises Retryable when a request_id of the group is claimed already (unless `by_event`:
    then that event's result answers it)."""
    actor = caller.actor
    params = {
        "user_id": user_id, "month": month, "default_cost_limit": default_limits[0],
        "default_article_limit": default_limits[1], "actor_kind": actor.kind.value,
        "actor_id": actor.user_id, "actor_name": actor.name, "events": events,
    }  # fmt: skip
    statement = _RECORD_USAGE_BY_EVENT if by_event else _RECORD_USAGE
    return db.query(caller, statement, params)[0].result


# The same statement, never sent to a replica (same name: one PREPARE per connection serves both).
_GET_ARTICLE_ON_PRIMARY = replace(_GET_ARTICLE, replica_ok=False)


def get_article(
    db: Database, caller: Caller, article_id: uuid.UUID, *, on_primary: bool = False
) -> Any | None:
    """The article, if it exists and the caller may see it. `on_primary`: for a row that will
    be cached, since a lagging replica's row could be cached after its change's NOTIFY."""
    owner = caller.actor.owner_scope()
    statement = _GET_ARTICLE_ON_PRIMARY if on_primary else _GET_ARTICLE
    rows = db.query(caller, statement, {"id": article_id, "owner": owner})
    return rows[0] if rows else None


# List and Search statements by shape; see storage/repositories/article_reads.py.
_BY_SHAPE: dict[tuple[Any, ...], Prepared] = {}


def list_articles(
    db: Database, caller: Caller, filters: ArticleFilters, *, order_by: str,
    after: tuple | None, limit: int, full: bool,
) -> Page[Any]:  # fmt: skip
    """A List page in one round trip: one prepared statement per shape (which filters are
    set, order, cursor, view), so the SQL is built and planned once per shape."""
    owner = caller.actor.owner_scope()
    values = list_values(filters, owner, after, limit)
    shape = ("list", order_by, full, *shape_flags(filters), after is not None, *sorted(values))
    prepared = _prepared_shape(
        shape, lambda: list_statement(filters, owner, order_by=order_by, after=after, full=full)
    )
    rows = db.query(caller, prepared, values)
    return to_page(rows, limit, key=list_cursor(order_by))


@dataclass(frozen=True)
class SearchHit:
    article: Any  # a row with the article's columns
    rank: float
    snippet: str


def search_articles(
    db: Database, caller: Caller, query: str, filters: ArticleFilters, *,
    after: tuple | None, limit: int, full: bool,
) -> Page[SearchHit]:  # fmt: skip
    """A ranked Search page in two round trips: rank (ids, ranks, the query's tree), then
    the page's articles with their snippets. Each statement is prepared once per shape.

    The two run in separate snapshots: an article deleted in between drops out of the page.
    """
    owner = caller.actor.owner_scope()
    since = _phrase_since(db, caller, filters, owner) if MAY_BE_BOUNDED.search(query) else None
    values = search_values(query, filters, owner, after, limit, since)
    shape = ("search", *shape_flags(filters), *sorted(values))
    rank = _prepared_shape(
        shape,
        lambda: search_rank_statement(
            filters, owner, after=after is not None, phrase_since=since is not None
        ),
    )
    rows = db.query(caller, rank, values)
    more = len(rows) > limit
    rows = rows[:limit]
    if not rows:
        return Page([], None)
    term = snippet_term(rows[0].tree)
    page_values = {"query": query, "ids": [r.id for r in rows], "term": term}
    shape = ("search_page", full, bool(term))
    page = _prepared_shape(shape, lambda: search_page_statement(full=full, windowed=bool(term)))
    by_id = {a.id: a for a in db.query(caller, page, page_values)}
    hits = [SearchHit(by_id[r.id], r.rank, by_id[r.id].snippet) for r in rows if r.id in by_id]
    last = rows[-1]
    return Page(hits, (last.rank, last.create_time, last.id) if more else None)


def _phrase_since(
    db: Database, caller: Caller, filters: ArticleFilters, owner: uuid.UUID | None
) -> Any:
    """Where a phrase search starts: None when it covers at most PHRASE_SCOPE articles."""
    values = filter_values(filters, owner)
    shape = ("phrase_scope", *shape_flags(filters), *sorted(values))
    prepared = _prepared_shape(shape, lambda: phrase_scope_statement(filters, owner))
    rows = db.query(caller, prepared, values)
    return rows[0].create_time if rows else None


def _prepared_shape(shape: tuple[Any, ...], build: Callable[[], Any]) -> Prepared:
    """The statement of this shape (its first item names it), built by `build` once."""
    prepared = _BY_SHAPE.get(shape)
    if prepared is None:
        key = hashlib.sha256(repr(shape).encode()).hexdigest()[:16]
        prepared = _BY_SHAPE.setdefault(
            shape,
            _prepare(
                f"{shape[0]}_articles_{key}",
                build(),
                options={"uuids_as_text": True, "custom_plans": True, "replica_ok": True},
            ),
        )
    return prepared


def resolve_credential(
    db: Database, caller: Caller, model: type[ApiKey] | type[AccessToken], secret_hash: bytes
) -> Any | None:
    """The (id, secret_hash, expire_time, user_id, is_admin) of a live credential of an active
    user."""
    rows = db.query(caller, _RESOLVE[model], {"secret_hash": secret_hash})
    return rows[0] if rows else None
