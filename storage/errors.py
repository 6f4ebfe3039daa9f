"""Domain errors: the only exceptions that cross from storage (and validation) to transport.

`server/errors.py` maps each class to one gRPC status; SQLSTATE codes are translated here, so
nothing above storage ever sees a driver exception.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg2
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import exc as orm_exc

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Existing:
    """The resource an AlreadyExists is about, for its google.rpc.ResourceInfo detail.

    `name`: its id (or, within a batch, the earlier item's position); `owner`: its user id.
    """

    name: str
    owner: str = ""
    description: str = ""


class AlreadyExists(DomainError):
    """`item` (e.g. "articles[3]") prefixes the message: which item of a batch clashed."""

    def __init__(
        self, resource: str, field: str, *, existing: Existing | None = None, item: str = ""
    ) -> None:
        self.resource, self.field, self.existing = resource, field, existing
        article = "an" if resource[:1] in "aeiou" else "a"
        message = f"{article} {resource} with this {field} already exists"
        if existing is not None:
            message += f": {existing.name}"
        super().__init__(f"{item}: {message}" if item else message)


class Conflict(DomainError):
    """Stale etag, or a write that kept losing to concurrent writers (ABORTED)."""


class FailedPrecondition(DomainError):
    pass


class SecretsNotConfigured(FailedPrecondition):
    """The server was started without BLOGSTORE_SECRET_KEYS: it can neither write nor read
    user secrets (settings and everything else keep working)."""

    def __init__(self) -> None:
        super().__init__(
            "user secrets are not available: the server was started without "
            "BLOGSTORE_SECRET_KEYS (see the README, Users and credentials)"
        )


class SecretUnreadable(FailedPrecondition):
    """A stored secret does not decrypt: its key is not configured (`cause` "unknown_key"),
    or the ciphertext does not authenticate ("tampered"). No retry helps; FAILED_PRECONDITION
    rather than INTERNAL: the message says what to fix (the keys, or set the secret again)."""

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class QuotaExceeded(DomainError):
    def __init__(self, message: str, violations: Mapping[str, str]) -> None:
        self.violations = dict(violations)
        super().__init__(message)


class ShareExceeded(QuotaExceeded):
    """One principal holds its whole fair share of a per-process resource (watch streams,
    batch slots, request threads); other principals keep theirs. `violations` names the
    setting (its environment variable)."""


class TooManyAttempts(DomainError):
    """Login back-off: refused without checking the password; retry after `retry_after` s."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many failed logins; retry in {max(1, round(retry_after))} s")


class Unauthenticated(DomainError):
    """`reason` (missing, malformed, unknown, expired, ...) is for metrics, never shown."""

    def __init__(
        self, message: str = "missing or invalid credentials", *, reason: str = "unknown"
    ) -> None:
        super().__init__(message)
        self.reason = reason


class PermissionDenied(DomainError):
    pass


class Unavailable(DomainError):
    """Database unreachable, refusing connections, read-only or shutting down, or the pool
    exhausted: not the caller's fault, and a retry may succeed."""


class SchemaNotReady(Unavailable):
    """The database schema is behind this code (a table, column or function is missing):
    `blogstore migrate` has not run yet. Retry after the migration."""

    def __init__(self) -> None:
        super().__init__(
            "the database schema is not ready for this server; retry after `blogstore migrate`"
        )


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
    "uq_articles_user_id_wp_post_id_live": ("article", "wp_post_id"),
    "uq_pipelines_user_id_create_request_id": ("pipeline", "request_id"),
    "uq_competitors_user_id_domain": ("competitor", "domain"),
    "uq_competitors_user_id_create_request_id": ("competitor", "request_id"),
    "uq_competitor_articles_competitor_id_url": ("competitor article", "url"),
}

# Connection exceptions, insufficient resources (53300 too many connections), operator
# intervention (57P01 admin shutdown .. 57P03 cannot connect now), read-only transaction
# (25006: a replica, or a primary being demoted).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P0", "25006")
# Undefined table, function, column: the schema is older than the code.
_SCHEMA_SQLSTATES = frozenset({"42P01", "42883", "42703"})
# set_config('role', ...) for a role that is missing (22023) or not the login's (42501).
_ROLE_SWITCH = re.compile(r'^(role "[^"]*" does not exist|permission denied to set role )')
SCHEMA_HINT = "the database schema is behind this code: run `blogstore migrate`"
# SQLSTATEs raised by blogstore's SQL functions: (message, JSON detail) -> domain error.
_OWN_SQLSTATES = {
    "BS400": lambda message, detail: InvalidArgument(json.loads(detail)),
    "BS404": lambda message, detail: NotFound(message),
    "BS429": lambda message, detail: QuotaExceeded(message, json.loads(detail)),
}


class _Throttle:
    """True at most once per `seconds`: a condition hit by every call logs one line, not one
    per call."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._last is not None and now - self._last < self.seconds:
                return False
            self._last = now
            return True

    def reset(self) -> None:
        with self._lock:
            self._last = None


schema_warning = _Throttle(60.0)


def translate(error: BaseException) -> DomainError | None:
    """Map a SQLAlchemy or psycopg2 error to a domain error; None means unexpected (a bug)."""
    if isinstance(error, orm_exc.StaleDataError):  # version_id_col mismatch
        return Conflict("the resource changed meanwhile (stale etag)")
    if isinstance(error, sa_exc.TimeoutError):  # QueuePool exhausted
        return Unavailable("database connection pool exhausted")
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return Unavailable("database unavailable")
    orig = getattr(error, "orig", None) if isinstance(error, sa_exc.SQLAlchemyError) else error
    if isinstance(orig, psycopg2.Error):
        return translate_driver_error(orig)
    return (
        Unavailable("database unavailable") if isinstance(error, sa_exc.OperationalError) else None
    )


def own_error(code: str, message: str, detail: str) -> DomainError:
    """The domain error for one of blogstore's own SQLSTATEs (BS400, BS404, BS429), as a
    function that reports it instead of raising it (blogstore_record_usage_batch)."""
    return _OWN_SQLSTATES[code](message, detail)


def translate_driver_error(orig: psycopg2.Error) -> DomainError | None:
    """Map a psycopg2 error by its SQLSTATE; None means unexpected (a bug)."""
    code = orig.pgcode or ""
    diag = orig.diag
    if code in _OWN_SQLSTATES:  # raised by blogstore's own SQL functions
        return _OWN_SQLSTATES[code](diag.message_primary or "", diag.message_detail or "{}")
    if code in ("40001", "40P01"):
        return Retryable("concurrent update, try again")
    if code == "23505":
        resource, field = UNIQUE_FIELDS.get(diag.constraint_name or "", ("resource", "value"))
        return AlreadyExists(resource, field)
    if code == "23503":  # a reference to a row that is not there (or was just deleted)
        return NotFound("referenced resource")
    if code == "57014":
        return DeadlineExceeded("the statement ran out of time")
    if code in ("22001", "22003", "23514", "22P02"):
        return InvalidArgument({"request": "a value is out of range for its field"})
    if code in ("22023", "42501") and _ROLE_SWITCH.match(diag.message_primary or ""):
        # The configured role is missing or not granted to the login: readiness says so too.
        return Unavailable("the database role this server switches to cannot be used")
    if code in _SCHEMA_SQLSTATES:
        if schema_warning():
            # The server's own message names only the missing object, never a value.
            log.warning("%s (%s)", SCHEMA_HINT, diag.message_primary or code)
        return SchemaNotReady()
    if code.startswith(_UNAVAILABLE_SQLSTATES):
        return Unavailable("database unavailable")
    if isinstance(orig, psycopg2.OperationalError | psycopg2.InterfaceError) and not code:
        return Unavailable("database unavailable")  # refused, reset, timed out or closed
    return None


def is_connection_failure(error: BaseException) -> bool:
    """The connection broke or could not be opened: not a full pool, not an answer (such as
    read-only) from a live server. Health re-checks readiness on these."""
    if isinstance(error, sa_exc.TimeoutError):
        return False
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    orig = getattr(error, "orig", None) if isinstance(error, sa_exc.SQLAlchemyError) else error
    if isinstance(orig, psycopg2.Error):
        code = orig.pgcode or ""
        if code:
            return code.startswith(("08", "57P"))
        return isinstance(orig, psycopg2.OperationalError | psycopg2.InterfaceError)
    return isinstance(error, sa_exc.OperationalError)
