"""row-level security: every user-owned table answers only for the transaction's principal

Defence in depth for tenant isolation. Each user-owned table gets RLS and a policy,
`blogstore_owner`, for every command (USING and WITH CHECK alike), over two settings every
unit of work sets for its own transaction (storage/rls.py, storage/uow.py):

- `blogstore.user_id`: the user principal's id;
- `blogstore.scope`: 'user' for a user principal; 'login' for anonymous calls (registration
  and Authenticate, which look up or create a user before there is one: they reach users,
  sessions and audit_events only); 'all' for admin, service and system principals.

Two roles, NOLOGIN and NOBYPASSRLS, which transactions switch to (SET LOCAL ROLE): ROLE holds
the grants, for user principals and anonymous calls; ALL_ROLE, a member of it, for admin,
service and system principals, has a second policy, `blogstore_all`, that is simply true.
PostgreSQL folds `true OR ...` away, so their statements plan exactly as without RLS: with the
'all' scope tested inside the policy instead, the planner cannot tell that the policy passes
every row, estimated a List page at 0.5% of the table and chose a sequential scan and sort
(21 ms instead of 0.1 ms), and could use no index whose operator is not leakproof (full-text
@@, array @>). The 'all' arm of `blogstore_owner` serves a login that does not switch roles.

The connecting owner (migrations, lifecycle commands, `create-admin`) owns the tables, and
RLS leaves the owner alone (no FORCE). Roles are cluster-wide: they are created if missing and
kept by the downgrade, since other databases of the cluster (test clones, a staging copy) may
still be granted to them; `DROP ROLE blogstore_app_all, blogstore_app` once none is.

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Older code connects as the tables' owner and never switches role: RLS does not apply to it.
compatible_since: str = "0010"

ROLE = "blogstore_app"  # storage/rls.py APP_ROLE (tests check they agree)
ALL_ROLE = f"{ROLE}_all"  # storage/rls.py privileged_role()
POLICY, ALL_POLICY = "blogstore_owner", "blogstore_all"
_SCOPE = "current_setting('blogstore.scope', true)"
_ME = "NULLIF(current_setting('blogstore.user_id', true), '')::uuid"
_LOGIN = f"{_SCOPE} = 'login'"

# Table -> which of its rows a user principal owns (besides the 'all' scope, which sees all).
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
# Bookkeeping the service reads (health, schema compatibility) but never writes.
READ_ONLY = ("alembic_version", "schema_compatibility")

_CREATE_ROLE = """
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
        BEGIN
            CREATE ROLE {role} NOLOGIN NOBYPASSRLS{member_of};
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- a migration of another database of this cluster created it meanwhile
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
    IF NOT pg_has_role('{ALL_ROLE}', '{ROLE}', 'MEMBER') THEN
        GRANT {ROLE} TO {ALL_ROLE};  -- its grants
    END IF;
"""
CREATE_ROLES = "DO $$\nBEGIN{}{}{}END $$".format(
    _CREATE_ROLE.format(role=ROLE, member_of=""),
    _CREATE_ROLE.format(role=ALL_ROLE, member_of=f" IN ROLE {ROLE}"),
    _ALL_INHERITS,
)


def _schema() -> str:
    return str(op.get_bind().exec_driver_sql("SELECT quote_ident(current_schema())").scalar())


def upgrade() -> None:
    schema = _schema()
    op.execute(CREATE_ROLES)
    op.execute(f"GRANT USAGE ON SCHEMA {schema} TO {ROLE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {ROLE}")
    op.execute(f"REVOKE INSERT, UPDATE, DELETE ON {', '.join(READ_ONLY)} FROM {ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {ROLE}")
    op.execute(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {ROLE}")
    # Tables and sequences later migrations create (as this same user) are granted too;
    # their policies they must add themselves (tests/test_rls.py checks every table).
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ROLE}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {ROLE}"
    )
    for table, owned in OWNED_ROWS.items():
        rule = f"{_SCOPE} = 'all' OR {owned}"
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {POLICY} ON {table} USING ({rule}) WITH CHECK ({rule})")
        op.execute(f"CREATE POLICY {ALL_POLICY} ON {table} TO {ALL_ROLE} USING (true)")


def downgrade() -> None:
    schema = _schema()
    for table in reversed(OWNED_ROWS):
        op.execute(f"DROP POLICY {ALL_POLICY} ON {table}")
        op.execute(f"DROP POLICY {POLICY} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE ALL ON SEQUENCES FROM {ROLE}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE ALL ON TABLES FROM {ROLE}")
    op.execute(f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {schema} FROM {ROLE}")
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {ROLE}")
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA {schema} FROM {ROLE}")
    # The roles stay: see the module docstring.
