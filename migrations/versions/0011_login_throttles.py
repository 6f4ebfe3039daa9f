"""login_throttles: failed-login back-off shared by every process and replica

- login_throttles: one row per throttled key (a SHA-256 digest of a normalized login, or of
  a forwarded end-user address): failures since the last success, and the back-off end.
- blogstore_login_attempt(keys, thresholds, backoff, max): one statement per Authenticate.
  Refused (the seconds left) while any key backs off; else counts the attempt as a failure
  up front, so parallel guesses cannot slip past the count, and starts or doubles the
  back-off at a key's threshold. A success resets the login's row afterwards. A row whose
  last failure is older than the longest back-off is forgotten: its count starts again, and
  each call deletes up to two such rows of other keys (expiry on use, no retention job).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand only: a new table and function that code at 0010 never touches.
compatible_since: str = "0010"

LOGIN_ATTEMPT = """\
CREATE FUNCTION blogstore_login_attempt(
    p_keys bytea[], p_thresholds integer[], p_backoff_seconds double precision,
    p_max_seconds double precision
) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    v_wait double precision;
    v_stale timestamptz := now() - make_interval(secs => p_max_seconds);
BEGIN
    INSERT INTO login_throttles (key)
    SELECT k FROM unnest(p_keys) AS k ORDER BY k
    ON CONFLICT (key) DO NOTHING;
    -- Locked in key order (no deadlocks); the newest committed state, not the snapshot's.
    SELECT max(extract(epoch FROM l.blocked_until - now())) INTO v_wait
    FROM (SELECT t.blocked_until FROM login_throttles AS t
          WHERE t.key = ANY (p_keys) ORDER BY t.key FOR UPDATE) AS l;
    IF v_wait > 0 THEN
        RETURN v_wait;
    END IF;
    UPDATE login_throttles AS t
    SET failures = f.failures,
        blocked_until = CASE WHEN f.failures >= f.threshold THEN now() + make_interval(
            secs => least(p_max_seconds,
                          p_backoff_seconds * power(2, least(f.failures - f.threshold, 60))))
        END,
        updated = now()
    FROM (SELECT k.key, k.threshold,
                 CASE WHEN c.updated < v_stale THEN 1 ELSE c.failures + 1 END AS failures
          FROM unnest(p_keys, p_thresholds) AS k (key, threshold)
          JOIN login_throttles AS c ON c.key = k.key) AS f
    WHERE t.key = f.key;
    -- Last, so this never waits while holding its own rows (SKIP LOCKED).
    DELETE FROM login_throttles WHERE key IN (
        SELECT s.key FROM login_throttles AS s
        WHERE s.updated < v_stale AND s.key <> ALL (p_keys)
        ORDER BY s.updated LIMIT 2 FOR UPDATE SKIP LOCKED);
    RETURN 0;
END $$"""


def upgrade() -> None:
    op.create_table(
        "login_throttles",
        sa.Column("key", sa.LargeBinary(), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
        ),
    )
    op.create_index("ix_login_throttles_updated", "login_throttles", ["updated"])
    op.execute(LOGIN_ATTEMPT)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION blogstore_login_attempt(bytea[], integer[], double precision, "
        "double precision)"
    )
    op.drop_table("login_throttles")
