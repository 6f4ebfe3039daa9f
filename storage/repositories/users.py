"""Users: scoped reads, idempotent create, versioned updates."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, or_, select, update

from storage.errors import Conflict, NotFound
from storage.models import User
from storage.repositories.base import ScopedRepository
from storage.repositories.changes import apply_changes
from storage.repositories.paging import Cursor, Page, newest_first, to_page


def like_prefix(value: str) -> str:
    """A LIKE pattern matching `value` literally as a prefix."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class UserRepository(ScopedRepository[User]):
    model = User
    resource = "user"
    owner_column = "id"
    request_key = ("create_request_id",)

    def create(
        self,
        *,
        email: str,
        username: str,
        password_hash: str,
        is_admin: bool,
        request_id: uuid.UUID | None,
    ) -> tuple[User, bool]:
        """Insert a user; if `request_id` was used before (for this email), return that user
        and False."""
        values = {
            "email": email, "username": username, "password_hash": password_hash,
            "is_admin": is_admin,
        }  # fmt: skip
        return self.create_once(
            values, request_id, same=lambda user: user.email.lower() == email.lower()
        )

    def require_visible(self, user_ids: set[uuid.UUID]) -> None:
        """NotFound unless every id is an existing user the actor may act for."""
        owner = self.actor.owner_scope()
        if owner is not None and user_ids - {owner}:
            raise NotFound("user", next(iter(user_ids - {owner})))
        found = set(self.session.scalars(select(User.id).where(User.id.in_(user_ids))))
        if missing := user_ids - found:
            raise NotFound("user", next(iter(missing)))

    def find_by_login(self, login: str) -> User | None:
        """Unscoped: only Authenticate uses it, before there is an actor."""
        column = User.email if "@" in login else User.username
        return self.session.scalars(
            select(User).where(func.lower(column) == login.lower())
        ).one_or_none()

    def list(
        self, *, after: Cursor | None, limit: int, is_active: bool | None, query: str
    ) -> Page[User]:
        stmt = select(User)
        if is_active is not None:
            stmt = stmt.where(User.is_active == is_active)
        if query:
            pattern = like_prefix(query.lower())
            stmt = stmt.where(
                or_(func.lower(User.email).like(pattern), func.lower(User.username).like(pattern))
            )
        rows = self.session.scalars(newest_first(stmt, User, after, limit)).all()
        return to_page(rows, limit)

    def update(self, user: User, etag_version: int | None, changes: dict[str, Any]) -> User:
        """Apply changes if the caller's etag (version) is current; the flush re-checks it."""
        if etag_version is not None and etag_version != user.version:
            raise Conflict("the user changed meanwhile (stale etag)")
        return apply_changes(self.session, user, changes)

    def record_login(self, user_id: uuid.UUID, new_password_hash: str | None) -> User:
        """Stamp last_login_time (unscoped: runs for Authenticate, before any principal)."""
        values: dict[str, Any] = {"last_login_time": func.now()}
        if new_password_hash is not None:  # the configured bcrypt cost went up: upgrade the hash
            values["password_hash"] = new_password_hash
        stmt = update(User).where(User.id == user_id).values(**values).returning(User)
        return self.session.scalars(stmt.execution_options(synchronize_session=False)).one()

    def purge(self, user: User) -> None:
        """Delete the user; foreign keys cascade to everything the user owns."""
        self.session.execute(delete(User).where(User.id == user.id))
