"""Prove a backup restores: checksum, restore into a scratch database, compare, read, drop.

The cheap checks run first (size, then SHA-256), so a truncated or corrupted file fails in
seconds without touching the server. The scratch database is always dropped.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, exc, inspect, select
from sqlalchemy.orm import Session

from storage import migrate, rls
from storage.engine import normalize_url
from storage.lifecycle import pgtools
from storage.lifecycle.backup import Backup, alembic_revision, file_digest, locate, row_counts
from storage.lifecycle.pgtools import BackupError
from storage.models import Article, Competitor, Pipeline, UsageEvent, User

# Each service's main table, read back through the models the server uses.
MAIN_MODELS = (User, Article, Pipeline, UsageEvent, Competitor)
READ_ROWS = 5


@dataclass
class VerifyReport:
    backup: Backup
    tables: int = 0
    rows: int = 0
    migrated_from: str | None = None  # the backup's revision when it was older than head
    read: dict[str, int] = field(default_factory=dict)  # table -> rows read through its model
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> duration


def check_file(path: Path) -> Backup:
    """The backup at `path`, after its size and SHA-256 match its manifest."""
    backup = locate(path)
    expected = backup.manifest
    if not backup.dump.is_file():
        raise BackupError(f"{backup.dump}: missing (its manifest is {backup.manifest_path.name})")
    size = backup.dump.stat().st_size
    if size != expected.size:
        raise BackupError(
            f"{backup.dump.name}: size {size:,} bytes, the manifest says {expected.size:,}: "
            f"{'truncated' if size < expected.size else 'grown'} since it was written"
        )
    digest, _ = file_digest(backup.dump)
    if digest != expected.sha256:
        raise BackupError(
            f"{backup.dump.name}: SHA-256 {digest} does not match the manifest's "
            f"{expected.sha256}: the file is corrupt"
        )
    return backup


def revision_state(revision: str | None) -> str:
    """'head', 'older' (migratable), or 'unknown' (newer than this code, or foreign)."""
    if revision is None:
        return "older"
    script = ScriptDirectory.from_config(migrate.alembic_config())
    if set(revision.split(",")) == set(script.get_heads()):
        return "head"
    try:
        known = all(script.get_revision(r) is not None for r in revision.split(","))
    except CommandError:
        known = False
    return "older" if known else "unknown"


def restore_into(backup: Backup, url: str, *, embedded: bool) -> None:
    """pg_restore a checked backup into the (empty) database at `url`, all or nothing.

    The dump's policies name the row-level security roles, which a new cluster may lack; and
    their grants are ACLs, which --no-acl leaves out, and the leakproof marks live in
    pg_catalog, which the dump leaves out: all are put back (storage/rls.py).
    """
    _run_sql(url, [rls.CREATE_ROLES])
    tool = pgtools.find_tool("pg_restore", url, embedded=embedded)
    connection = pgtools.Connection.from_url(url)
    pgtools.run(
        tool,
        [
            "--exit-on-error",
            "--single-transaction",
            "--no-owner",
            "--no-acl",
            "--no-password",
            f"--dbname={connection.dsn}",
            str(backup.dump),
        ],
        connection,
    )
    _run_sql(
        url,
        [*rls.grants("public"), rls.MARK_LEAKPROOF],
        unless="NOT EXISTS (SELECT FROM pg_policies)",
    )


def _run_sql(url: str, statements: list[str], unless: str = "false") -> None:
    """Run `statements` in one transaction, unless the SQL condition `unless` holds (a dump
    from before migration 0012: the migration that follows the restore grants)."""
    with contextlib.closing(pgtools.connect(url)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {unless}")
        if not pgtools.one_row(cur)[0]:
            for statement in statements:
                cur.execute(statement)
        conn.commit()


def compare_contents(backup: Backup, url: str) -> int:
    """Raise at the first table, row count or revision differing from the manifest."""
    manifest = backup.manifest
    with contextlib.closing(pgtools.connect(url)) as conn, conn.cursor() as cur:
        counts = row_counts(cur)
        revision = alembic_revision(cur)
    for table in sorted(set(manifest.row_counts) | set(counts)):
        if table not in counts:
            raise BackupError(f"table {table} is in the manifest but was not restored")
        if table not in manifest.row_counts:
            raise BackupError(f"table {table} was restored but is not in the manifest")
        if counts[table] != manifest.row_counts[table]:
            raise BackupError(
                f"table {table}: {counts[table]:,} rows restored, "
                f"the manifest says {manifest.row_counts[table]:,}"
            )
    if revision != manifest.alembic_revision:
        raise BackupError(
            f"schema revision {revision} restored, the manifest says {manifest.alembic_revision}"
        )
    return sum(counts.values())


def read_main_tables(url: str) -> dict[str, int]:
    """SELECT a few rows of each main table through its model, loading every column."""
    engine = create_engine(normalize_url(url))
    read = {}
    try:
        with Session(engine) as session:
            for model in MAIN_MODELS:
                rows = session.scalars(select(model).limit(READ_ROWS)).all()
                columns = [c.key for c in inspect(model).column_attrs]
                for row in rows:
                    for column in columns:
                        getattr(row, column)
                read[model.__tablename__] = len(rows)
    except Exception as error:  # any failure to read is the finding
        raise BackupError(f"reading the restored tables failed: {error}") from error
    finally:
        engine.dispose()
    return read


@contextlib.contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """CREATE DATABASE blogstore_verify_<random> on the server of `url`; dropped on exit."""
    name = f"blogstore_verify_{uuid.uuid4().hex[:12]}"
    engine = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    try:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        except exc.DBAPIError as error:
            first = str(error.orig).strip().splitlines()[0]
            raise BackupError(
                f"cannot create the scratch database {name} ({first}): verify restores into "
                "one on the same server, so the database user needs CREATEDB"
            ) from None
        try:
            yield normalize_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()


def verify(path: Path, url: str, *, embedded: bool) -> VerifyReport:
    """Check, restore into a scratch database on the server of `url`, compare and read."""
    clock = time.monotonic()
    report = VerifyReport(check_file(path))
    backup = report.backup
    state = revision_state(backup.manifest.alembic_revision)
    if state == "unknown":
        raise BackupError(
            f"schema revision {backup.manifest.alembic_revision} is unknown to this blogstore "
            f"(head {', '.join(sorted(migrate.head_revisions()))}): verify it with the "
            "release that wrote it, or a newer one"
        )
    report.seconds["checksum"] = time.monotonic() - clock
    with scratch_database(url) as scratch:
        clock = time.monotonic()
        restore_into(backup, scratch, embedded=embedded)
        report.seconds["restore"] = time.monotonic() - clock
        clock = time.monotonic()
        report.rows = compare_contents(backup, scratch)
        report.tables = len(backup.manifest.row_counts)
        report.seconds["compare"] = time.monotonic() - clock
        if state == "older":
            clock = time.monotonic()
            migrate.upgrade(scratch)
            report.migrated_from = backup.manifest.alembic_revision or "<base>"
            report.seconds["migrate"] = time.monotonic() - clock
        clock = time.monotonic()
        report.read = read_main_tables(scratch)
        report.seconds["read"] = time.monotonic() - clock
    return report
