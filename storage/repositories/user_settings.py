"""User settings (one row per user, absent until first changed) and write-only secrets.

Callers check the owner first (server/validation.owner_id, UserRepository.require_visible);
both repositories also apply the owner predicate (ScopedRepository), and row-level security
keeps a user principal's transactions to its own rows besides. Secret rows
hold ciphertext only: sealing and opening is storage/secrets.py's, in the caller.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, delete, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert

from storage.errors import Conflict, NotFound, QuotaExceeded
from storage.models import User, UserSecret, UserSettings
from storage.repositories.base import ScopedRepository
from storage.repositories.changes import apply_changes
from storage.repositories.paging import Page, to_page
from storage.secrets import Sealed

_RESEAL = text(
    "UPDATE user_secrets AS s SET key_id = v.key_id, nonce = v.nonce, ciphertext = v.ciphertext "
    "FROM unnest(CAST(:user_ids AS uuid[]), CAST(:names AS text[]), CAST(:key_ids AS text[]), "
    "CAST(:nonces AS bytea[]), CAST(:ciphertexts AS bytea[])) "
    "AS v (user_id, name, key_id, nonce, ciphertext) "
    "WHERE s.user_id = v.user_id AND s.name = v.name"
)


class UserSettingsRepository(ScopedRepository[UserSettings]):
    model = UserSettings
    resource = "settings"

    def get_stored(self, user_id: uuid.UUID) -> UserSettings | None:
        """The stored settings, or None: the user never changed the defaults."""
        stmt = self.scoped(select(UserSettings).where(UserSettings.user_id == user_id))
        return self.session.scalars(stmt).one_or_none()

    def update(
        self, user_id: uuid.UUID, etag_version: int | None, changes: dict[str, Any]
    ) -> UserSettings:
        """Apply `changes` if `etag_version` is current (0: never saved), creating the row.

        The row is created at version 0 if missing (two first writers: the second waits for
        the first's commit), then locked and compared, so a stale etag is Conflict.
        """
        self.session.execute(
            insert(UserSettings)
            .values(user_id=user_id, version=0)
            .on_conflict_do_nothing(index_elements=["user_id"])
        )
        row = self.session.scalars(
            self.scoped(select(UserSettings).where(UserSettings.user_id == user_id))
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one_or_none()
        if row is None:
            raise NotFound("user", user_id)
        if etag_version is not None and etag_version != row.version:
            raise Conflict("the settings changed meanwhile (stale etag)")
        # Always an UPDATE (even when nothing differs): the version moves past 0.
        return apply_changes(self.session, row, {**changes, "update_time": func.now()})


class UserSecretRepository(ScopedRepository[UserSecret]):
    model = UserSecret
    resource = "secret"

    def _named(self, user_id: uuid.UUID, name: str) -> Select:
        """`user_id`'s secret `name`, within the actor's scope."""
        return self.scoped(select(UserSecret)).where(
            UserSecret.user_id == user_id, UserSecret.name == name
        )

    def list(self, user_id: uuid.UUID, *, after: str | None, limit: int) -> Page[UserSecret]:
        stmt = self.scoped(select(UserSecret)).where(UserSecret.user_id == user_id)
        if after is not None:
            stmt = stmt.where(UserSecret.name > after)
        rows = self.session.scalars(stmt.order_by(UserSecret.name).limit(limit + 1)).all()
        return to_page(rows, limit, key=lambda secret: (secret.name,))

    def get_named(self, user_id: uuid.UUID, name: str) -> UserSecret:
        row = self.session.scalars(self._named(user_id, name)).one_or_none()
        if row is None:
            raise NotFound("secret", repr(name))
        return row

    def put(
        self, user_id: uuid.UUID, name: str, sealed: Sealed, preview: str, *, max_per_user: int
    ) -> tuple[UserSecret, bool]:
        """Store or replace `name`'s value; (the row, True if it is new).

        A new name counts against `max_per_user` (QuotaExceeded). The user's row is locked
        (FOR NO KEY UPDATE: inserts elsewhere referencing the user go on) so that concurrent
        new names cannot pass the cap together.
        """
        self.session.execute(
            select(User.id).where(User.id == user_id).with_for_update(key_share=True)
        )
        existing = self.session.scalars(
            self._named(user_id, name).with_for_update().execution_options(populate_existing=True)
        ).one_or_none()
        values = {
            "key_id": sealed.key_id, "nonce": sealed.nonce, "ciphertext": sealed.ciphertext,
            "preview": preview, "update_time": func.now(),
        }  # fmt: skip
        if existing is not None:
            return apply_changes(self.session, existing, values), False
        count = self.session.scalar(
            self.scoped(select(func.count()).select_from(UserSecret)).where(
                UserSecret.user_id == user_id
            )
        )
        if (count or 0) >= max_per_user:
            raise QuotaExceeded(
                f"a user may keep at most {max_per_user} secrets; delete one first",
                {"secrets": f"at most {max_per_user} secrets per user"},
            )
        row = self.session.scalars(
            insert(UserSecret).values(user_id=user_id, name=name, **values).returning(UserSecret)
        ).one()
        return row, True

    def delete(self, user_id: uuid.UUID, name: str) -> UserSecret:
        row = self.session.scalars(
            self.scoped(delete(UserSecret))
            .where(UserSecret.user_id == user_id, UserSecret.name == name)
            .returning(UserSecret)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if row is None:
            raise NotFound("secret", repr(name))
        return row

    # -- rotation (`blogstore rotate-secrets`, as the tables' owner) ------------------------
    def not_under(
        self, key_id: str, *, after: tuple[uuid.UUID, str] | None, limit: int
    ) -> Sequence[UserSecret]:
        """Up to `limit` secrets under another key than `key_id`, after `after`, locked."""
        stmt = select(UserSecret).where(UserSecret.key_id != key_id)
        if after is not None:
            stmt = stmt.where(tuple_(UserSecret.user_id, UserSecret.name) > tuple_(*after))
        stmt = stmt.order_by(UserSecret.user_id, UserSecret.name).limit(limit)
        return self.session.scalars(stmt.with_for_update()).all()

    def reseal(self, resealed: Sequence[tuple[UserSecret, Sealed]]) -> None:
        """Replace ciphertexts (same values, another key) in one statement; update_time
        stays. The rows were locked by not_under()."""
        if not resealed:
            return
        self.session.execute(
            _RESEAL,
            {
                "user_ids": [str(row.user_id) for row, _ in resealed],
                "names": [row.name for row, _ in resealed],
                "key_ids": [sealed.key_id for _, sealed in resealed],
                "nonces": [sealed.nonce for _, sealed in resealed],
                "ciphertexts": [sealed.ciphertext for _, sealed in resealed],
            },
        )

    def count_by_key(self) -> dict[str, int]:
        stmt = select(UserSecret.key_id, func.count()).group_by(UserSecret.key_id)
        return {key_id: int(n) for key_id, n in self.session.execute(stmt)}
