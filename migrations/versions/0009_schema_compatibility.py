"""schema_compatibility: which code revisions can run against the database's schema

Expand/contract for rolling deploys. A migration module may declare `compatible_since`, the
oldest code revision that still runs against the schema it leaves; migrations/env.py writes
that declaration into this table in the migration's own transaction (storage.migrate.
record_compatibility). Pods still running older code do not have the newer migration's file,
so they read the declaration here: readiness stays SERVING when their head is at or after it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# A new table nothing at 0008 reads: the 0008 schema's users are unaffected. (Code at 0008
# predates this mechanism and still wants its exact head; only code from 0009 on reads this.)
compatible_since: str = "0008"


def upgrade() -> None:
    op.create_table(
        "schema_compatibility",
        sa.Column("revision", sa.String(32), nullable=False),
        sa.Column("compatible_since", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("revision", name=op.f("pk_schema_compatibility")),
    )


def downgrade() -> None:
    op.drop_table("schema_compatibility")
