"""Access tokens and API keys: stored as SHA-256 digests (resolved in storage/queries.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import cast

from sqlalchemy import CursorResult, func, select, text, update
from sqlalchemy.orm import Session

from storage.actors import Actor
from storage.errors import NotFound
from storage.models import AccessToken, ApiKey, User
from storage.repositories.base import scope
from storage.repositories.paging import Cursor, Page, newest_first, to_page

# One statement for every credential used since the last flush, both tables at once.
_RECORD_USES = text("""
WITH uses AS (
    SELECT * FROM unnest(CAST(:tables AS text[]), CAST(:ids AS uuid[]),
                         CAST(:counts AS bigint[]), CAST(:times AS timestamptz[]))
        AS u(tbl, id, n, at)
), keys AS (
    UPDATE api_keys SET usage_count = usage_count + uses.n,
        last_used_time = GREATEST(last_used_time, uses.at)
    FROM uses WHERE uses.tbl = 'api_keys' AND api_keys.id = uses.id
)
UPDATE sessions SET usage_count = usage_count + uses.n,
    last_used_time = GREATEST(last_used_time, uses.at)
FROM uses WHERE uses.tbl = 'sessions' AND sessions.id = uses.id
""")


class CredentialRepository:
    def __init__(self, session: Session, actor: Actor) -> None:
        self.session = session
        self.actor = actor

    def create_access_token(
        self, user_id: uuid.UUID, token_hash: bytes, expire_time: dt.datetime
    ) -> AccessToken:
        token = AccessToken(user_id=user_id, secret_hash=token_hash, expire_time=expire_time)
        self.session.add(token)
        self.session.flush()
        return token

    def revoke_access_tokens(self, user_id: uuid.UUID) -> int:
        result = self.session.execute(
            update(AccessToken)
            .where(AccessToken.user_id == user_id, AccessToken.revoke_time.is_(None))
            .values(revoke_time=func.now())
        )
        return cast(CursorResult, result).rowcount  # an UPDATE answers with a CursorResult

    def record_uses(self, uses: list[tuple[str, uuid.UUID, int, dt.datetime]]) -> None:
        """Add (table, id, count, last used) to usage_count / last_used_time, in one UPDATE."""
        tables, ids, counts, times = (list(column) for column in zip(*uses, strict=True))
        self.session.execute(text("SET LOCAL synchronous_commit = off"))  # counts, not money
        self.session.execute(
            _RECORD_USES, {"tables": tables, "ids": ids, "counts": counts, "times": times}
        )

    def create_api_key(
        self,
        *,
        user_id: uuid.UUID,
        name: str,
        service: str,
        prefix: str,
        key_hash: bytes,
        expire_time: dt.datetime | None,
    ) -> ApiKey:
        key = ApiKey(
            user_id=user_id,
            name=name,
            service=service,
            prefix=prefix,
            secret_hash=key_hash,
            expire_time=expire_time,
        )
        self.session.add(key)
        self.session.flush()
        return key

    def get_api_key(self, key_id: uuid.UUID) -> ApiKey:
        stmt = scope(
            select(ApiKey).where(ApiKey.id == key_id), ApiKey.user_id, self.actor.owner_scope()
        )
        key = self.session.scalars(stmt).one_or_none()
        if key is None:
            raise NotFound("api key", key_id)
        return key

    def list_api_keys(
        self, user_id: uuid.UUID, *, after: Cursor | None, limit: int, show_revoked: bool
    ) -> Page[ApiKey]:
        stmt = select(ApiKey).where(ApiKey.user_id == user_id)
        if not show_revoked:
            stmt = stmt.where(ApiKey.revoke_time.is_(None))
        return to_page(self.session.scalars(newest_first(stmt, ApiKey, after, limit)).all(), limit)

    def revoke_api_key(self, key: ApiKey) -> ApiKey:
        if key.revoke_time is None:
            key.revoke_time = dt.datetime.now(dt.UTC)
            self.session.flush()
        return key

    def failure_reason(self, model: type[ApiKey] | type[AccessToken], secret_hash: bytes) -> str:
        """Why a credential did not resolve: unknown, revoked, expired or inactive_user."""
        row = self.session.execute(
            select(
                model.revoke_time.is_not(None),
                func.coalesce(model.expire_time <= func.now(), False),
                User.is_active,
            )
            .join(User, User.id == model.user_id)
            .where(model.secret_hash == secret_hash)
        ).one_or_none()
        if row is None:
            return "unknown"
        revoked, expired, active = row
        if revoked:
            return "revoked"
        if expired:
            return "expired"
        return "unknown" if active else "inactive_user"
