"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}
# The oldest code revision that still runs against the schema this migration leaves (rolling
# deploys keep those pods ready). Expand steps (a new table, a nullable column, an index) may
# name the parent, ${repr(down_revision)}; a step that breaks older code (drop, rename, NOT NULL
# without default) names itself. Never older than the parent's own declaration (tests check).
compatible_since: str = ${repr(up_revision)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
