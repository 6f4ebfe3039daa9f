"""article_provenance: who made each article version, in which call, by which pipeline stage

articles and article_revisions gain the same nullable columns (storage/provenance.py):
made_by_kind / made_by_id / made_by_name (the principal), made_request_id (the call's
x-request-id), made_pipeline_id / made_pipeline_stage (when a pipeline made it). An article
row holds its current version's provenance; a revision holds the provenance of the version
it keeps. Rows from before this migration keep NULLs: their provenance is unknown. No
pipeline foreign key: provenance is history and outlives the pipeline row.

Adding nullable columns without defaults only touches the catalog (no table rewrite).

Revision ID: 0016
Revises: 0012
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand only: code at 0012 names its columns and never reads these; its writes leave them
# NULL (provenance unknown).
compatible_since: str = "0012"

TABLES = ("articles", "article_revisions")
KIND_VALID = "made_by_kind IN ('user', 'admin', 'service', 'anonymous', 'system')"


def _columns() -> list[sa.Column]:
    return [
        sa.Column("made_by_kind", sa.String(16), nullable=True),
        sa.Column("made_by_id", sa.Uuid(), nullable=True),
        sa.Column("made_by_name", sa.String(100), nullable=True),
        sa.Column("made_request_id", sa.String(100), nullable=True),
        sa.Column("made_pipeline_id", sa.Uuid(), nullable=True),
        sa.Column("made_pipeline_stage", sa.String(50), nullable=True),
    ]


def upgrade() -> None:
    for table in TABLES:
        for column in _columns():
            op.add_column(table, column)
        op.create_check_constraint(op.f(f"ck_{table}_made_by_kind_valid"), table, KIND_VALID)


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_constraint(op.f(f"ck_{table}_made_by_kind_valid"), table, type_="check")
        for column in reversed(_columns()):
            op.drop_column(table, column.name)
