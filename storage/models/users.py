"""Users and their credentials: access tokens (sessions) and API keys."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from storage.models.base import Base, created_at, updated_at, uuid_pk

# Character limits of an API key's text columns (the service checks them first).
API_KEY_TEXT_LIMITS = {"name": 100, "service": 100}
MAX_EMAIL_LENGTH = 254  # RFC 5321's path limit less the angle brackets
MIN_USERNAME_LENGTH, MAX_USERNAME_LENGTH = 3, 100


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = uuid_pk()
    email: Mapped[str] = mapped_column(String(MAX_EMAIL_LENGTH))
    username: Mapped[str] = mapped_column(String(MAX_USERNAME_LENGTH))
    password_hash: Mapped[str] = mapped_column(String(100))
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    is_admin: Mapped[bool] = mapped_column(server_default=text("false"))
    create_request_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    version: Mapped[int] = mapped_column(server_default=text("1"))
    create_time: Mapped[dt.datetime] = created_at()
    update_time: Mapped[dt.datetime] = updated_at()
    last_login_time: Mapped[dt.datetime | None]

    # eager_defaults: read update_time back with RETURNING, so detached objects stay complete.
    __mapper_args__ = {"version_id_col": version, "eager_defaults": True}
    __table_args__ = (
        Index("uq_users_email_lower", func.lower(email), unique=True),
        Index("uq_users_username_lower", func.lower(username), unique=True),
        Index("ix_users_create_time_id", "create_time", "id"),
        CheckConstraint("position('@' in email) > 1", name="email_has_at"),
        CheckConstraint(f"length(username) >= {MIN_USERNAME_LENGTH}", name="username_length"),
    )


class AccessToken(Base):
    """A session created by Authenticate; the bearer token is stored only as its SHA-256."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    create_time: Mapped[dt.datetime] = created_at()
    expire_time: Mapped[dt.datetime]
    revoke_time: Mapped[dt.datetime | None]
    last_used_time: Mapped[dt.datetime | None]
    usage_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class ApiKey(Base):
    """A long-lived key; only its SHA-256 and a short display prefix are stored."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(API_KEY_TEXT_LIMITS["name"]))
    service: Mapped[str] = mapped_column(String(API_KEY_TEXT_LIMITS["service"]), server_default="")
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    create_time: Mapped[dt.datetime] = created_at()
    expire_time: Mapped[dt.datetime | None]
    revoke_time: Mapped[dt.datetime | None]
    last_used_time: Mapped[dt.datetime | None]
    usage_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    __table_args__ = (Index("ix_api_keys_user_id_create_time", "user_id", "create_time", "id"),)
