"""row-level security: every user-owned table answers only for the transaction's principal

Defence in depth for tenant isolation. Each user-owned table gets RLS and two policies, for
every command (USING and WITH CHECK alike), read with two settings that every unit of work
sets for its own transaction (storage/rls.py, storage/uow.py):

- `blogstore_owner`, for the role ROLE that user principals and anonymous calls switch to
  (SET LOCAL ROLE): the rows of `blogstore.user_id`; users, sessions and audit_events also
  when `blogstore.scope` is 'login' (anonymous registration and Authenticate look up or create
  a user before there is one);
- `blogstore_all`, simply true, for ALL_ROLE (a member of ROLE, so holding its grants), which
  admin, service and system principals switch to. PostgreSQL folds `true OR ...` away, so
  their statements plan exactly as without RLS. (Testing an 'all' scope inside one policy
  instead, the planner cannot tell that it passes every row: it estimated a List page at
  0.5% of the table and chose a sequential scan and sort, 21 ms instead of 0.1 ms, and used
  no index whose operator is not leakproof, such as full-text @@ and array @>.)

Both roles are NOLOGIN and NOBYPASSRLS. The connecting owner (migrations, lifecycle
commands, `create-admin`) owns the tables, and RLS leaves the owner alone (no FORCE). Roles
are cluster-wide: they are created if missing and kept by the downgrade, since other
databases of the cluster (test clones, a staging copy) may still be granted to them;
`DROP ROLE blogstore_app_all, blogstore_app` once none is.

Under RLS, conditions whose operator is not LEAKPROOF cannot be index conditions: Search's
`@@` and the tag filter's `@>` would lose their GIN indexes. When the migrating user is a
superuser, their functions are marked LEAKPROOF in this database (storage/rls.py says why
that is safe); otherwise the server warns at start-up with the statements to run.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import logging
from collections.abc import Sequence

from alembic import op

from storage import rls

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Older code connects as the tables' owner and never switches role: RLS does not apply to it.
compatible_since: str = "0010"

# The roles and their grants are declared in storage/rls.py: restore needs them too.
ROLE, ALL_ROLE = rls.APP_ROLE, rls.ALL_ROLE
POLICY, ALL_POLICY = "blogstore_owner", "blogstore_all"
_SCOPE = "current_setting('blogstore.scope', true)"
_ME = "NULLIF(current_setting('blogstore.user_id', true), '')::uuid"
_LOGIN = f"{_SCOPE} = 'login'"

# Table -> the rows a user principal owns (and, for three, those anonymous logins reach).
OWNED_ROWS = {
    "users": f"id = {_ME} OR {_LOGIN}",
    "sessions": f"user_id = {_ME} OR {_LOGIN}",
    "api_keys": f"user_id = {_ME}",
    # The events a user caused and those about its resources (ListAuditEvents' rule).
    "audit_events": f"user_id = {_ME} OR actor_id = {_ME} OR {_LOGIN}",
    "articles": f"user_id = {_ME}",
    "article_revisions": (
        f"EXISTS (SELECT FROM articles a WHERE a.id = article_id AND a.user_id = {_ME})"
    ),
    "pipelines": f"user_id = {_ME}",
    "competitors": f"user_id = {_ME}",
    "competitor_articles": (
        f"EXISTS (SELECT FROM competitors c WHERE c.id = competitor_id AND c.user_id = {_ME})"
    ),
    "usage_events": f"user_id = {_ME}",
    "usage_monthly": f"user_id = {_ME}",
    "usage_limits": f"user_id = {_ME}",
}


def _schema() -> str:
    return str(op.get_bind().exec_driver_sql("SELECT quote_ident(current_schema())").scalar())


def upgrade() -> None:
    op.execute(rls.CREATE_ROLES)
    for statement in rls.grants(_schema()):
        op.execute(statement)
    for table, owned in OWNED_ROWS.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {POLICY} ON {table} USING ({owned}) WITH CHECK ({owned})")
        op.execute(f"CREATE POLICY {ALL_POLICY} ON {table} TO {ALL_ROLE} USING (true)")
    # Search and the tag filter keep their GIN indexes under RLS (superusers only: see rls.py).
    op.execute(rls.MARK_LEAKPROOF)
    if missing := rls.missing_leakproof(op.get_bind()):
        logging.getLogger("alembic.runtime.migration").warning(
            "not a superuser: a user's Search and tag filter cannot use their indexes under "
            "row-level security until a superuser runs, in this database: %s",
            "; ".join(missing),
        )


def downgrade() -> None:
    op.execute(rls.UNMARK_LEAKPROOF)
    for table in reversed(OWNED_ROWS):
        op.execute(f"DROP POLICY {ALL_POLICY} ON {table}")
        op.execute(f"DROP POLICY {POLICY} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    for statement in rls.revokes(_schema()):
        op.execute(statement)
    # The roles stay: see the module docstring.
