"""What every repository of owned rows shares: the owner predicate, scoped reads, and one
idempotent create by request_id.

The owner predicate is the application's first line of defence; row-level security
(storage/rls.py, migration 0012) is the second.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Literal, TypeVar

from sqlalchemy import ColumnElement, Delete, Select, Update, bindparam, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from storage.actors import Actor
from storage.errors import InvalidArgument, NotFound

M = TypeVar("M")
Statement = TypeVar("Statement", Select, Update, Delete)
Lock = Literal["update", "key_share"]

# The owner as a parameter of a prepared statement (storage/queries.py).
OWNER = bindparam("owner")


def owned_by(column: Any, owner: uuid.UUID | Any) -> ColumnElement[bool]:
    """The owner predicate: rows whose `column` (a user id) is `owner` (a value or OWNER)."""
    return column == owner


def scope(stmt: Statement, column: Any, owner: uuid.UUID | None) -> Statement:
    """`stmt` limited to `owner`'s rows; None (an admin or service actor) sees every user's."""
    return stmt if owner is None else stmt.where(owned_by(column, owner))


def check_replay(resource: str, same: bool) -> None:
    """A request_id seen before must come with the same content: else the client reused it
    for something else, which is its bug (INVALID_ARGUMENT), not a retry."""
    if not same:
        raise InvalidArgument({"request_id": f"was already used for another {resource}"})


class ScopedRepository(Generic[M]):
    """A repository of `model` rows owned through `owner_column`, read within the actor's scope.

    `request_key`: the columns of the unique key a create's request_id is part of.
    """

    model: ClassVar[type[Any]]
    resource: ClassVar[str]
    owner_column: ClassVar[str] = "user_id"
    request_key: ClassVar[tuple[str, ...]] = ("user_id", "create_request_id")

    def __init__(self, session: Session, actor: Actor) -> None:
        self.session = session
        self.actor = actor

    def scoped(self, stmt: Statement) -> Statement:
        return scope(stmt, getattr(self.model, self.owner_column), self.actor.owner_scope())

    def get(self, row_id: uuid.UUID, *, lock: Lock | None = None) -> M:
        """A row visible to the actor; another user's id is NotFound, never PermissionDenied.

        lock="update" locks the row and re-reads it (the identity map must not keep a copy
        from before the lock); lock="key_share" only keeps it from being deleted.
        """
        stmt = self.scoped(select(self.model).where(self.model.id == row_id))
        if lock == "update":
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        elif lock == "key_share":
            stmt = stmt.with_for_update(read=True, key_share=True)
        row = self.session.scalars(stmt).one_or_none()
        if row is None:
            raise NotFound(self.resource, row_id)
        return row

    def create_once(
        self, values: dict[str, Any], request_id: uuid.UUID | None, same: Callable[[M], bool]
    ) -> tuple[M, bool]:
        """Insert a row; if `request_id` was used before, return that row and False.

        One INSERT ... ON CONFLICT (request key) DO NOTHING: no savepoint, one round trip for
        a new row. A concurrent twin waits for the first insert's commit, then finds its row.
        A row found whose content is not `same` refuses the request (check_replay).
        """
        values = {**values, "create_request_id": request_id}
        stmt = insert(self.model).values(**values)
        if request_id is not None:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(self.request_key))
        row = self.session.scalars(stmt.returning(self.model)).one_or_none()
        if row is not None:
            return row, True
        existing = self.session.scalars(
            select(self.model).where(
                *(getattr(self.model, name) == values[name] for name in self.request_key)
            )
        ).one()
        check_replay(self.resource, same(existing))
        return existing, False
