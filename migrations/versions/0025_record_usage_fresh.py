"""record usage, fresh request_ids: blogstore_record_usage_fresh(), claims checked by their index

0024's plain group first looked for its request_ids among the user's claims
(`request_id = ANY (...)`). Planned while the claims table was small, that lookup kept a plan
that reads all of the user's claims and filters them (an index condition on `user_id` alone),
and a cached plan is not costed again until the table is analyzed: with autovacuum off, one
busy user's RecordUsage slowed as their claims grew, by a third within a minute at 8 in
flight on a new database (BENCHMARKS.md, "Issue 17: RecordUsage, round 7").

This function does not look: it claims each request_id by the unique index
(`INSERT ... ON CONFLICT DO NOTHING`), which answers from the index whatever the statistics.
A request_id claimed already (a client's retry, or another process's call with it) makes it
raise 40001, writing nothing; the caller (storage/usage_batch.py) then records each call of
the group alone with blogstore_record_usage_batch() (0023), which answers a retry with its
first event. Otherwise as blogstore_record_usage_plain(): a group that is not plain, or past
a limit, goes to blogstore_record_usage_batch() before anything is written.

Same arguments and result as blogstore_record_usage_batch() (see 0023). The old functions
stay (code at 0024 calls blogstore_record_usage_plain()).

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Adds a function only: code from 0012 on runs beside it with the functions it knows.
compatible_since: str = "0012"

# 0024's function with its look-up taken out: (old, new) text replacements, each applied once.
_CHANGES = (
    ("FUNCTION blogstore_record_usage_plain(", "FUNCTION blogstore_record_usage_fresh("),
    ("    v_request_ids uuid[];\n", ""),
    (", array_agg(x.request_id),\n", ",\n"),
    ("v_count, v_cost, v_articles, v_request_ids, v_plain", "v_count, v_cost, v_articles, v_plain"),
    ("AS x(request_id uuid, article_id uuid,", "AS x(article_id uuid,"),
    (
        """    IF v_plain AND NOT EXISTS (
        SELECT 1 FROM usage_request_ids AS r
         WHERE r.user_id = p_user_id AND r.request_id = ANY (v_request_ids)
    ) THEN""",
        "    IF v_plain THEN",
    ),
    ("'a request_id was claimed meanwhile'", "'a request_id is claimed already'"),
)


def _fresh() -> str:
    spec = importlib.util.spec_from_file_location(
        "record_usage_plain", Path(__file__).with_name("0024_record_usage_plain.py")
    )
    assert spec and spec.loader
    plain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plain)
    body: str = plain.RECORD_USAGE_PLAIN
    for old, new in _CHANGES:
        assert body.count(old) == 1, old
        body = body.replace(old, new)
    return body


SIGNATURE = "blogstore_record_usage_fresh(uuid, date, bigint, bigint, text, uuid, text, jsonb)"


def upgrade() -> None:
    op.execute(_fresh())


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
