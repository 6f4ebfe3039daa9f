"""Restore a checked backup into an empty database, then migrate it to the code's head."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from storage import migrate
from storage.lifecycle import pgtools
from storage.lifecycle.backup import Backup, row_counts
from storage.lifecycle.pgtools import BackupError
from storage.lifecycle.verify import check_file, compare_contents, restore_into, revision_state

# Schemas a restore may replace: everything but the system's own.
_USER_SCHEMAS = """
SELECT quote_ident(nspname) FROM pg_namespace
WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\\_%'
"""


@dataclass
class RestoreReport:
    backup: Backup
    replaced: dict[str, int] = field(default_factory=dict)  # what --force dropped
    rows: int = 0
    migrated_from: str | None = None
    unknown_revision: bool = False  # the backup is newer than this code: left as it is
    seconds: float = 0.0


def contents(url: str) -> dict[str, int]:
    """Tables in the database and their row counts (empty: nothing would be lost)."""
    with contextlib.closing(pgtools.connect(url)) as conn, conn.cursor() as cur:
        return row_counts(cur)


def _empty_out(url: str) -> None:
    """Drop every user schema (with its tables, types, functions) and recreate public."""
    with contextlib.closing(pgtools.connect(url)) as conn:
        with conn.cursor() as cur:
            cur.execute(_USER_SCHEMAS)
            for (quoted,) in cur.fetchall():
                cur.execute(f"DROP SCHEMA {quoted} CASCADE")  # quoted by quote_ident
            cur.execute("CREATE SCHEMA public")
            cur.execute("SELECT current_setting('server_version_num')::int >= 140000")
            if pgtools.one_row(cur)[0]:  # PostgreSQL 14+: public as initdb makes it
                cur.execute("ALTER SCHEMA public OWNER TO pg_database_owner")
            cur.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
        conn.commit()


def restore(
    path: Path,
    url: str,
    *,
    embedded: bool,
    force: bool = False,
    before_drop: Callable[[dict[str, int]], None] | None = None,
) -> RestoreReport:
    """Restore into the database at `url`; refuse one holding tables unless `force`.

    With `force`, `before_drop` hears what is about to be dropped (tables and row counts).
    """
    start = time.monotonic()
    report = RestoreReport(check_file(path))
    backup = report.backup
    existing = contents(url)
    if existing and not force:
        raise BackupError(
            f"the database is not empty ({describe(existing)}): restore into an empty "
            "database, or pass --force to drop all of it first"
        )
    if existing:
        if before_drop is not None:
            before_drop(existing)
        _empty_out(url)
        report.replaced = existing
    restore_into(backup, url, embedded=embedded)
    report.rows = compare_contents(backup, url)
    state = revision_state(backup.manifest.alembic_revision)
    if state == "older":
        migrate.upgrade(url)
        report.migrated_from = backup.manifest.alembic_revision or "<base>"
    report.unknown_revision = state == "unknown"
    report.seconds = time.monotonic() - start
    return report


def describe(counts: dict[str, int]) -> str:
    """`3 tables, 1,204 rows: public.articles 1,200, public.users 4, ...`"""
    listed = ", ".join(f"{t} {n:,}" for t, n in sorted(counts.items(), key=lambda i: -i[1]))
    return f"{len(counts)} tables, {sum(counts.values()):,} rows: {listed}"
