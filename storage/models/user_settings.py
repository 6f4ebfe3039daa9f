"""A user's settings (one row, absent until first changed) and write-only secrets.

Field limits are declared here once; the API checks them first and CHECK constraints keep
them. Secret values are stored only as AES-256-GCM ciphertext (storage/secrets.py).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    ARRAY,
    CheckConstraint,
    ForeignKey,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy import text as sql
from sqlalchemy.orm import Mapped, mapped_column

from storage.models.base import Base, created_at, updated_at

# WordPress's post_status values a pipeline may give new posts; the first is the default.
PUBLISH_STATUSES = ("draft", "publish", "pending", "private", "future")
MAX_SITE_URL_LENGTH = 2000
MAX_WORDPRESS_USERNAME_LENGTH = 60  # WordPress's user_login column
SETTINGS_LIST_LIMITS = {"default_tags": 50, "preferred_models": 20}
MAX_SETTINGS_ITEM_CHARS = 100

SECRET_NAME_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
MAX_SECRET_NAME_LENGTH = 64
MAX_SECRET_VALUE_BYTES = 8 * 1024
MAX_SECRETS_PER_USER = 50
PREVIEW_CHARS = 4
MIN_PREVIEW_VALUE_CHARS = 16  # shorter values show no preview: 4 characters would be too much


class UserSettings(Base):
    __tablename__ = "user_settings"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    wordpress_site_url: Mapped[str] = mapped_column(String(MAX_SITE_URL_LENGTH), server_default="")
    wordpress_username: Mapped[str] = mapped_column(
        String(MAX_WORDPRESS_USERNAME_LENGTH), server_default=""
    )
    default_publish_status: Mapped[str] = mapped_column(String(20), server_default="draft")
    default_tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    preferred_models: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    usage_alert_percent: Mapped[int] = mapped_column(SmallInteger, server_default=sql("0"))
    # 0 only for the moment between the row's creation and its first update (etag "0" is
    # what never-saved settings carry); every committed row has 1 or more.
    version: Mapped[int] = mapped_column(server_default=sql("1"))
    create_time: Mapped[dt.datetime] = created_at()
    update_time: Mapped[dt.datetime] = updated_at()

    __mapper_args__ = {"version_id_col": version, "eager_defaults": True}
    __table_args__ = (
        CheckConstraint(
            "default_publish_status IN ({})".format(", ".join(f"'{s}'" for s in PUBLISH_STATUSES)),
            name="default_publish_status_known",
        ),
        CheckConstraint("usage_alert_percent BETWEEN 0 AND 100", name="usage_alert_percent_range"),
    )


class UserSecret(Base):
    """One named secret: ciphertext (with its GCM tag), nonce and key id; never the value."""

    __tablename__ = "user_secrets"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(MAX_SECRET_NAME_LENGTH), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    preview: Mapped[str] = mapped_column(String(PREVIEW_CHARS), server_default="")
    create_time: Mapped[dt.datetime] = created_at()
    update_time: Mapped[dt.datetime] = mapped_column(server_default=func.now())  # set, not rotated

    __table_args__ = (
        CheckConstraint("octet_length(nonce) = 12", name="nonce_96_bits"),
        CheckConstraint(f"name ~ '{SECRET_NAME_PATTERN}'", name="name_pattern"),
    )
