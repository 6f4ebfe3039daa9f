"""Row-level security context: which rows PostgreSQL lets a unit of work see.

Migration 0012 enables RLS on every user-owned table, with policies over two settings, and
creates two roles (NOLOGIN, NOBYPASSRLS): APP_ROLE, for user principals and anonymous calls,
and its member `<APP_ROLE>_all`, whose own policy lets admin, service and system principals
see every row at no planning cost. storage/uow.py switches every transaction of the service
to its role and sets the settings, in the round trip that already sets its statement_timeout
(all transaction-local, so pooled connections and PgBouncer in transaction mode carry nothing
over). A query that forgets its owner filter then still returns only the caller's rows. The
repositories' own owner predicates stay: they pick the indexes. Declared here once, for the
migration, restore and the server: the roles and their grants, the two operators that must be
LEAKPROOF for Search and the tag filter to keep their indexes, and the role readiness checks.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from storage.actors import Actor, ActorKind

APP_ROLE = "blogstore_app"  # created by migration 0012
NO_ROLE = "none"  # SET ROLE NONE: stay the connecting user (PostgreSQL reserves the name)

# Scopes (the blogstore.scope setting). The policies read 'login'; 'all' is the privileged
# role's, whose policy passes every row; 'user' reads only the rows of blogstore.user_id.
ALL = "all"  # admin, service and system principals
USER = "user"  # a user principal
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


def role_problem(connection: Any, role: str) -> str:
    """Why the login (of the SQLAlchemy `connection`) cannot switch to `role` and its
    privileged role, or "" if it can: without them every call would fail."""
    if role == NO_ROLE:
        return ""
    for name in (role, privileged_role(role)):
        member = connection.execute(
            text(
                "SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = :r"
            ),
            {"r": name},
        ).scalar()
        if member is None:
            return (
                f"BLOGSTORE_DB_ROLE={role}: role {name} does not exist (`blogstore migrate` "
                f"creates {APP_ROLE}; or BLOGSTORE_DB_ROLE={NO_ROLE}: no row-level security)"
            )
        if not member:
            return (
                f"BLOGSTORE_DB_ROLE={role}: the login cannot switch to role {name} "
                f"(GRANT {name} TO <the login>)"
            )
    return ""


# -- The roles and their grants (migration 0012; restore re-applies them) --------------------
ALL_ROLE = privileged_role(APP_ROLE)
# Bookkeeping the service reads (health, schema compatibility) but never writes.
READ_ONLY_TABLES = ("alembic_version", "schema_compatibility")

_CREATE_ROLE = """
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
        BEGIN
            CREATE ROLE {role} NOLOGIN NOBYPASSRLS{member_of};
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile, for another database of this cluster
        END;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}' AND (rolsuper OR rolbypassrls))
    THEN
        RAISE EXCEPTION 'role {role} bypasses row-level security'
            USING HINT = 'ALTER ROLE {role} NOSUPERUSER NOBYPASSRLS';
    END IF;
    -- The service switches to the role (SET LOCAL ROLE): its login must be a member.
    IF NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN
        GRANT {role} TO CURRENT_USER;
    END IF;
"""
_ALL_INHERITS = f"""
    IF NOT pg_has_role('{ALL_ROLE}', '{APP_ROLE}', 'MEMBER') THEN
        GRANT {APP_ROLE} TO {ALL_ROLE};  -- its grants
    END IF;
"""
# Roles are cluster-wide: created if missing (needs CREATEROLE, or a DBA who ran this first).
CREATE_ROLES = "DO $$\nBEGIN{}{}{}END $$".format(
    _CREATE_ROLE.format(role=APP_ROLE, member_of=""),
    _CREATE_ROLE.format(role=ALL_ROLE, member_of=f" IN ROLE {APP_ROLE}"),
    _ALL_INHERITS,
)


def grants(schema: str) -> list[str]:
    """What APP_ROLE (and so ALL_ROLE) may do in `schema` (quoted): data, never DDL."""
    role = APP_ROLE
    return [
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        f"REVOKE INSERT, UPDATE, DELETE ON {', '.join(READ_ONLY_TABLES)} FROM {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {role}",
        # Tables and sequences that later migrations create (as this same user) are granted
        # too; policies they must add themselves (tests/test_rls.py checks every table).
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}",
    ]


# -- Leakproof index operators (migration 0012 and restore, as a superuser) ------------------
# Under RLS PostgreSQL keeps a condition out of an index scan unless its operator's function
# is LEAKPROOF (it could otherwise reveal, by an error, a row the policy hides), and these two
# built-ins are not marked: a user's Search read every article of the user through the owner
# index and tested each (15.8 ms instead of 0.56 ms for a rare word among 1,249; it grows with
# the user's articles); the tag filter likewise (2.5 ms instead of 0.18). Every other operator
# that user-scoped reads put in index conditions (=, <, > on uuid, text, timestamptz, and
# IS NULL) is leakproof already. Safe to mark, each: it raises no error that depends on the
# values it is given (so an error reveals nothing of a hidden row), and has no side effect:
LEAKPROOF_FUNCTIONS = (
    # @@: walks the query tree against the vector's sorted lexemes and answers true/false;
    # its only errors are the query's (stack depth: the caller's own input) and out of memory.
    "pg_catalog.ts_match_vq(tsvector, tsquery)",
    # @>: compares elements with the element type's equality (texteq, itself leakproof, for
    # articles.tags); its errors are about types (no equality operator, mixed element types),
    # never values; nulls compare unequal, without error.
    "pg_catalog.arraycontains(anyarray, anyarray)",
)
LEAKPROOF_STATEMENTS = tuple(f"ALTER FUNCTION {f} LEAKPROOF" for f in LEAKPROOF_FUNCTIONS)
# Besides, only the service's own statements run as these roles: RLS here guards against a
# repository bug, not a client's SQL. PostgreSQL lets only superusers mark a function, per
# database (pg_catalog is), and pg_dump does not carry it: migration 0012 and restore run
# MARK_LEAKPROOF, which does nothing for anyone else (the server then warns at start-up).
_IF_SUPERUSER = """DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
{}    END IF;
END $$"""
MARK_LEAKPROOF = _IF_SUPERUSER.format("".join(f"        {s};\n" for s in LEAKPROOF_STATEMENTS))
# Migration 0012's downgrade: pg_catalog as PostgreSQL ships it.
UNMARK_LEAKPROOF = MARK_LEAKPROOF.replace(" LEAKPROOF;", " NOT LEAKPROOF;")


def missing_leakproof(connection: Any) -> list[str]:
    """The statements of LEAKPROOF_STATEMENTS a superuser has yet to run in this database."""
    marked = connection.execute(
        text("SELECT f, proleakproof FROM unnest(:f) f JOIN pg_proc ON oid = f::regprocedure"),
        {"f": list(LEAKPROOF_FUNCTIONS)},
    ).all()
    done = {f for f, leakproof in marked if leakproof}
    return [
        s for f, s in zip(LEAKPROOF_FUNCTIONS, LEAKPROOF_STATEMENTS, strict=True) if f not in done
    ]


def revokes(schema: str) -> list[str]:
    role = APP_ROLE
    return [
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE ALL ON SEQUENCES FROM {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE ALL ON TABLES FROM {role}",
        f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {schema} FROM {role}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}",
        f"REVOKE USAGE ON SCHEMA {schema} FROM {role}",
    ]
