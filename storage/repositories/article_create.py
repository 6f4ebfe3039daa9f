"""CreateArticle's common case in one round trip through Database.query (issue 17).

The statement is article_inserts.INSERT_ONE (owner check, INSERT ... ON CONFLICT DO NOTHING,
the `article.create` audit event in a CTE), PREPAREd once per connection and sent with the
transaction's settings in one simple-query string: no session, no BEGIN and no COMMIT round
trips (the string runs as one implicit transaction). In a unit of work (Database.run) the
same statement cost three round trips and about a third of the call's server CPU in the
session's machinery.

No row back (unknown owner or pipeline, a request_id seen before, a taken slug or
wp_post_id), or a deadlock, means nothing was written: the caller then runs the general path
(Database.run), whose answers and errors are then exactly its own.
"""

from __future__ import annotations

from typing import Any

from storage.actors import Caller
from storage.errors import Retryable
from storage.repositories.article_inserts import (
    COLUMN_TYPES,
    INSERT_ONE,
    RETURNED,
    Row,
    insert_params,
)
from storage.repositories.articles import NewArticle, first_slug
from storage.uow import Database, Prepared

# The audit event's and the owner check's parameters (the article's are its columns').
_OTHER_TYPES = {
    "actor_kind": "text", "actor_id": "uuid", "actor_name": "text", "audit_request_id": "text",
}  # fmt: skip


INSERT_NOW = Prepared.from_pyformat(
    "blogstore_create_article",
    INSERT_ONE,
    {**COLUMN_TYPES, **_OTHER_TYPES},
    writes=True,
    label="INSERT articles",  # as the slow-query log named it on the session
)


def create_now(db: Database, caller: Caller, item: NewArticle) -> Any | None:
    """The article written now with its audit event (committed), or None: nothing written.
    `item` must fit article_inserts.fits_one; a derived slug is tried bare (first_slug)."""
    first_slug(item)
    try:
        rows = db.query(caller, INSERT_NOW, insert_params(caller, item))
    except Retryable:  # a deadlock (tag counts): the general path runs it again
        return None
    if not rows:
        return None
    return Row(RETURNED, tuple(vars(rows[0]).values()), item)
