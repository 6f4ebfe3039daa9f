"""competitors: an index that finds due, unleased competitors without visiting leased ones

ClaimDueCompetitors walked ix_competitors_next_check_time_active (next_check_time WHERE
is_active) and fetched every due row from the heap to test its lease: with many competitors
leased (a busy crawler fleet), each claim visited every leased row, and their dead versions,
to find the few free ones. ix_competitors_due keys (next_check_time, lease end) for active
competitors, the lease end of an unleased row being -infinity: the claim's two conditions
are both index conditions, so a leased row is passed over inside the index, in
next_check_time order (the LIMIT still stops early on a large backlog). It replaces
ix_competitors_next_check_time_active: same leading column, same predicate, so whatever
used that one can use this one, and a write maintains one index fewer.

The lease then is an indexed column, so a lease update is never HOT; none was before either
in the bench (0 of 7,000 lease updates on main: the pages are full).

Built CONCURRENTLY, so claims and edits go on while it builds; a rerun after a failed build
drops the INVALID index it left and starts over.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Only an index: code from 0012 on runs beside it (older claims just do not use it).
compatible_since: str = "0012"

NAME = "ix_competitors_due"
REPLACED = "ix_competitors_next_check_time_active"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NAME}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {NAME} ON competitors "
            "(next_check_time, (coalesce(lease_expire_time, '-infinity'))) WHERE is_active"
        )
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {REPLACED}")
        op.execute("ANALYZE competitors")  # the expression's statistics, for the planner


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {REPLACED}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {REPLACED} ON competitors (next_check_time) WHERE is_active"
        )
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NAME}")
