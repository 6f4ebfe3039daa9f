"""UsersService between protobuf and storage: users, API keys, settings and secrets, with
their field checks. Kept apart from the servicer so handlers stay thin."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from blogstore.v1 import users_pb2

from server.protoconv import etag, timestamp
from server.validation import Violations, text_field
from storage import credentials
from storage.errors import InvalidArgument
from storage.models import ApiKey, User, UserSecret, UserSettings
from storage.models import user_settings as limits
from storage.models.users import (
    API_KEY_TEXT_LIMITS,
    MAX_EMAIL_LENGTH,
    MAX_USERNAME_LENGTH,
    MIN_USERNAME_LENGTH,
)

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")
_USERNAME = re.compile(rf"^[A-Za-z0-9._\-]{{{MIN_USERNAME_LENGTH},{MAX_USERNAME_LENGTH}}}$")
MIN_PASSWORD_LENGTH = 8


def user_to_proto(user: User) -> users_pb2.User:
    return users_pb2.User(
        id=str(user.id),
        email=user.email,
        username=user.username,
        is_active=user.is_active,
        is_admin=user.is_admin,
        create_time=timestamp(user.create_time),
        update_time=timestamp(user.update_time),
        last_login_time=timestamp(user.last_login_time),
        etag=etag(user.version),
    )


def api_key_to_proto(key: ApiKey) -> users_pb2.ApiKey:
    return users_pb2.ApiKey(
        id=str(key.id),
        user_id=str(key.user_id),
        name=key.name,
        service=key.service,
        prefix=key.prefix,
        create_time=timestamp(key.create_time),
        last_used_time=timestamp(key.last_used_time),
        usage_count=key.usage_count,
        expire_time=timestamp(key.expire_time),
        revoked=key.revoke_time is not None,
    )


def check_email(violations: Violations, field: str, email: str) -> str:
    email = email.strip()
    violations.check(
        len(email) <= MAX_EMAIL_LENGTH and bool(_EMAIL.match(email)), field, "is not a valid email"
    )
    return email


def check_username(violations: Violations, field: str, username: str) -> str:
    violations.check(
        bool(_USERNAME.match(username)),
        field,
        f"must be {MIN_USERNAME_LENGTH}-{MAX_USERNAME_LENGTH} letters, digits, '.', '_' or '-'",
    )
    return username


def check_password(violations: Violations, field: str, password: str) -> str:
    size = len(password.encode())
    if len(password) < MIN_PASSWORD_LENGTH:
        violations.add(field, f"must be at least {MIN_PASSWORD_LENGTH} characters")
    elif size > credentials.MAX_PASSWORD_BYTES:
        violations.add(field, f"must be at most {credentials.MAX_PASSWORD_BYTES} bytes of UTF-8")
    return password


def api_key_fields(name: str, service: str, expire_time: dt.datetime | None) -> tuple[str, str]:
    """A new API key's name and service, checked (with its expiry)."""
    v = Violations()
    name = text_field(v, "name", name, max_length=API_KEY_TEXT_LIMITS["name"])
    service = text_field(
        v, "service", service, max_length=API_KEY_TEXT_LIMITS["service"], required=False
    )
    v.check(
        expire_time is None or expire_time > dt.datetime.now(dt.UTC),
        "expire_time",
        "must lie in the future",
    )
    v.raise_if_any()
    return name, service


# -- settings ------------------------------------------------------------------------------
SETTINGS_MUTABLE = (
    "wordpress_site_url", "wordpress_username", "default_publish_status", "default_tags",
    "preferred_models", "usage_alert_percent",
)  # fmt: skip
SETTINGS_OUTPUT_ONLY = ("user_id", "update_time", "etag")
_STATUS = users_pb2.WordpressPostStatus
STATUS_TO_PROTO = {
    "draft": _STATUS.WORDPRESS_POST_STATUS_DRAFT,
    "publish": _STATUS.WORDPRESS_POST_STATUS_PUBLISH,
    "pending": _STATUS.WORDPRESS_POST_STATUS_PENDING,
    "private": _STATUS.WORDPRESS_POST_STATUS_PRIVATE,
    "future": _STATUS.WORDPRESS_POST_STATUS_FUTURE,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}
DEFAULT_STATUS = limits.PUBLISH_STATUSES[0]


def settings_to_proto(user_id: uuid.UUID, row: UserSettings | None) -> users_pb2.UserSettings:
    """Stored settings, or the defaults (etag "0", no update_time) when there are none."""
    if row is None:
        return users_pb2.UserSettings(
            user_id=str(user_id), default_publish_status=STATUS_TO_PROTO[DEFAULT_STATUS],
            etag=etag(0),
        )  # fmt: skip
    return users_pb2.UserSettings(
        user_id=str(row.user_id),
        wordpress_site_url=row.wordpress_site_url,
        wordpress_username=row.wordpress_username,
        default_publish_status=STATUS_TO_PROTO[row.default_publish_status],
        default_tags=row.default_tags,
        preferred_models=row.preferred_models,
        usage_alert_percent=row.usage_alert_percent,
        update_time=timestamp(row.update_time),
        etag=etag(row.version),
    )


def settings_changes(settings: users_pb2.UserSettings, paths: set[str]) -> dict[str, Any]:
    """The masked fields as column values; an empty field returns to its default."""
    v, prefix, values = Violations(), "settings.", {}
    if "wordpress_site_url" in paths:
        url = values["wordpress_site_url"] = settings.wordpress_site_url.strip()
        if len(url) > limits.MAX_SITE_URL_LENGTH:
            v.add(prefix + "wordpress_site_url",
                  f"must be at most {limits.MAX_SITE_URL_LENGTH} characters")  # fmt: skip
        elif url and not _is_http_url(url):
            v.add(prefix + "wordpress_site_url", "must be an http(s) URL with a host")
    if "wordpress_username" in paths:
        name = values["wordpress_username"] = settings.wordpress_username.strip()
        v.check(
            len(name) <= limits.MAX_WORDPRESS_USERNAME_LENGTH,
            prefix + "wordpress_username",
            f"must be at most {limits.MAX_WORDPRESS_USERNAME_LENGTH} characters",
        )
    if "default_publish_status" in paths:
        status = settings.default_publish_status
        if status == _STATUS.WORDPRESS_POST_STATUS_UNSPECIFIED:
            values["default_publish_status"] = DEFAULT_STATUS
        elif status in STATUS_FROM_PROTO:
            values["default_publish_status"] = STATUS_FROM_PROTO[status]
        else:
            v.add(prefix + "default_publish_status", "is not a known status")
    for name, most in limits.SETTINGS_LIST_LIMITS.items():
        if name in paths:
            items = values[name] = [item.strip() for item in getattr(settings, name)]
            chars = limits.MAX_SETTINGS_ITEM_CHARS
            v.check(
                len(items) <= most and all(0 < len(i) <= chars for i in items),
                prefix + name,
                f"at most {most} non-empty items of {chars} characters",
            )
    if "usage_alert_percent" in paths:
        percent = values["usage_alert_percent"] = settings.usage_alert_percent
        v.check(0 <= percent <= 100, prefix + "usage_alert_percent",
                "must be between 1 and 100, or 0 (off)")  # fmt: skip
    v.raise_if_any()
    return values


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not any(c.isspace() for c in url)
    )


# -- secrets -------------------------------------------------------------------------------
_SECRET_NAME = re.compile(limits.SECRET_NAME_PATTERN)


def secret_name(field: str, name: str) -> str:
    if not name:
        raise InvalidArgument({field: "is required"})
    if not _SECRET_NAME.match(name):
        raise InvalidArgument({field: "must be 1-64 lower-case letters, digits, '_', '.' or "
                               "'-', starting with a letter"})  # fmt: skip
    return name


def secret_value(field: str, value: str) -> str:
    """Checked without ever echoing it: only its size is described."""
    if not value:
        raise InvalidArgument({field: "is required"})
    if len(value.encode()) > limits.MAX_SECRET_VALUE_BYTES:
        raise InvalidArgument(
            {field: f"must be at most {limits.MAX_SECRET_VALUE_BYTES} bytes of UTF-8"}
        )
    return value


def preview(value: str) -> str:
    """The last 4 characters, only of values long enough that they give little away."""
    if len(value) < limits.MIN_PREVIEW_VALUE_CHARS:
        return ""
    return value[-limits.PREVIEW_CHARS :]


def secret_to_proto(row: UserSecret) -> users_pb2.UserSecret:
    return users_pb2.UserSecret(
        user_id=str(row.user_id),
        name=row.name,
        preview=row.preview,
        key_id=row.key_id,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )
