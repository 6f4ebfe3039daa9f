"""Row-level security context: which rows PostgreSQL lets a unit of work see.

Migration 0012 enables RLS on every user-owned table, with a policy over two settings, and
creates two roles (NOLOGIN, NOBYPASSRLS): APP_ROLE, for user principals and anonymous calls,
and its member `<APP_ROLE>_all`, whose own policy lets admin, service and system principals
see every row at no planning cost. storage/uow.py switches every transaction of the service
to its role and sets the settings, in the round trip that already sets its statement_timeout
(all transaction-local, so pooled connections and PgBouncer in transaction mode carry nothing
over). A query that forgets its owner filter then still returns only the caller's rows. The
repositories' own owner predicates stay: they pick the indexes.
"""

from __future__ import annotations

from typing import Any

from storage.actors import Actor, ActorKind

APP_ROLE = "blogstore_app"  # created by migration 0012
NO_ROLE = "none"  # SET ROLE NONE: stay the connecting user (PostgreSQL reserves the name)

# Scopes (the blogstore.scope setting) the policies honour.
ALL = "all"  # admin, service and system principals: every row
USER = "user"  # a user principal: rows owned by blogstore.user_id
LOGIN = "login"  # anonymous registration and Authenticate: users, sessions, audit_events

# One SELECT list, in Database.run (SQLAlchemy binds) and Database.query (pyformat) alike.
_SETTINGS = (
    "set_config('role', {role}, true), "
    "set_config('blogstore.user_id', {user_id}, true), "
    "set_config('blogstore.scope', {scope}, true)"
)
BIND_SQL = _SETTINGS.format(role=":role", user_id=":user_id", scope=":scope")
PYFORMAT_SQL = _SETTINGS.format(role="%(role)s", user_id="%(user_id)s", scope="%(scope)s")


def privileged_role(role: str) -> str:
    """The role of admin, service and system principals' transactions."""
    return role if role == NO_ROLE else f"{role}_all"


def context(actor: Actor, role: str) -> dict[str, Any]:
    """The settings' values for one transaction of `actor` (`role` NO_ROLE: no switch)."""
    if actor.is_privileged:
        role, scope, user_id = privileged_role(role), ALL, ""
    elif actor.kind is ActorKind.ANONYMOUS:
        scope, user_id = LOGIN, ""
    else:  # a user principal (without an id it would own nothing)
        scope, user_id = USER, "" if actor.user_id is None else str(actor.user_id)
    return {"role": role, "user_id": user_id, "scope": scope}
