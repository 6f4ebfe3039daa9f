"""Domain errors: the only exceptions that cross from storage (and validation) to transport.

`server/errors.py` maps each class to one gRPC status; SQLSTATE codes are translated here, so
nothing above storage ever sees a driver exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import psycopg2
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import exc as orm_exc


class DomainError(Exception):
    """Base class. `message` is safe to show to callers: never put secrets or SQL in it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    def __init__(self, violations: Mapping[str, str]) -> None:
        self.violations = dict(violations)
        super().__init__("; ".join(f"{f}: {d}" for f, d in self.violations.items()))


class NotFound(DomainError):
    def __init__(self, resource: str, key: object = "") -> None:
        self.resource = resource
        super().__init__(f"{resource} {key} not found".replace("  ", " "))


class AlreadyExists(DomainError):
    def __init__(self, resource: str, field: str) -> None:
        self.resource, self.field = resource, field
        article = "an" if resource[:1] in "aeiou" else "a"
        super().__init__(f"{article} {resource} with this {field} already exists")


class Conflict(DomainError):
    """Stale etag, or a write that kept losing to concurrent writers (ABORTED)."""


class FailedPrecondition(DomainError):
    pass


class QuotaExceeded(DomainError):
    def __init__(self, message: str, violations: Mapping[str, str]) -> None:
        self.violations = dict(violations)
        super().__init__(message)


class Unauthenticated(DomainError):
    def __init__(self, message: str = "missing or invalid credentials") -> None:
        super().__init__(message)


class PermissionDenied(DomainError):
    pass


class Unavailable(DomainError):
    """Database unreachable or pool exhausted: the caller may retry."""


class DeadlineExceeded(DomainError):
    pass


class Retryable(DomainError):
    """Serialization failure or deadlock: the unit of work runs the transaction again."""


# Unique constraints and indexes -> (resource, field) for AlreadyExists.
UNIQUE_FIELDS: dict[str, tuple[str, str]] = {
    "uq_users_email_lower": ("user", "email"),
    "uq_users_username_lower": ("user", "username"),
    "uq_users_create_request_id": ("user", "request_id"),
    "uq_articles_user_id_slug_live": ("article", "slug"),
    "uq_articles_user_id_create_request_id": ("article", "request_id"),
    "uq_pipelines_user_id_create_request_id": ("pipeline", "request_id"),
    "uq_competitors_user_id_domain": ("competitor", "domain"),
    "uq_competitors_user_id_create_request_id": ("competitor", "request_id"),
    "uq_competitor_articles_competitor_id_url": ("competitor article", "url"),
}

_CONNECTION_SQLSTATE_CLASSES = ("08", "53", "57P0")  # connection, resources, admin shutdown
# SQLSTATEs raised by blogstore's SQL functions: (message, JSON detail) -> domain error.
_OWN_SQLSTATES = {
    "BS400": lambda message, detail: InvalidArgument(json.loads(detail)),
    "BS404": lambda message, detail: NotFound(message),
    "BS429": lambda message, detail: QuotaExceeded(message, json.loads(detail)),
}


def translate(error: sa_exc.SQLAlchemyError) -> DomainError | None:
    """Map a SQLAlchemy error to a domain error; None means unexpected (a bug)."""
    if isinstance(error, orm_exc.StaleDataError):  # version_id_col mismatch
        return Conflict("the resource changed meanwhile (stale etag)")
    if isinstance(error, sa_exc.TimeoutError):  # QueuePool exhausted
        return Unavailable("database connection pool exhausted")
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return Unavailable("database unavailable")
    orig = getattr(error, "orig", None)
    if orig is not None:
        return translate_driver_error(orig)
    return (
        Unavailable("database unavailable") if isinstance(error, sa_exc.OperationalError) else None
    )


def translate_driver_error(orig: BaseException) -> DomainError | None:
    """Map a psycopg2 error by its SQLSTATE; None means unexpected (a bug)."""
    code = getattr(orig, "pgcode", None) or ""
    diag = getattr(orig, "diag", None)
    if code in _OWN_SQLSTATES:  # raised by blogstore's own SQL functions
        return _OWN_SQLSTATES[code](diag.message_primary or "", diag.message_detail or "{}")
    if code in ("40001", "40P01"):
        return Retryable("concurrent update, try again")
    if code == "23505":
        constraint = getattr(getattr(orig, "diag", None), "constraint_name", None) or ""
        resource, field = UNIQUE_FIELDS.get(constraint, ("resource", "value"))
        return AlreadyExists(resource, field)
    if code == "23503":  # a reference to a row that is not there (or was just deleted)
        return NotFound("referenced resource")
    if code == "57014":
        return DeadlineExceeded("the statement ran out of time")
    if code in ("22001", "22003", "23514", "22P02"):
        return InvalidArgument({"request": "a value is out of range for its field"})
    if code.startswith(_CONNECTION_SQLSTATE_CLASSES):
        return Unavailable("database unavailable")
    if isinstance(orig, psycopg2.OperationalError | psycopg2.InterfaceError) and not code:
        return Unavailable("database unavailable")  # connection refused, reset or closed
    return None
