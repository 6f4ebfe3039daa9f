"""`pg_dump -Fc` plus a manifest, both taken from one exported snapshot.

The row counts in the manifest are counted inside the REPEATABLE READ transaction whose
snapshot pg_dump imports (`--snapshot`), so they describe exactly the rows in the dump; verify
and restore compare against them. Files appear under their final names only when complete
(temp name in the same directory, fsync, rename, fsync of the directory), and the manifest is
written last: a dump without a manifest is an incomplete backup.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from storage.lifecycle import pgtools
from storage.lifecycle.pgtools import BackupError

MANIFEST_FORMAT = 1
PARTIAL_SUFFIX = ".partial"
_CHUNK = 1 << 20

# Ordinary tables (partitions included, their parents hold no rows) outside the system schemas.
_TABLES = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1
"""


@dataclass
class Manifest:
    file: str  # the dump's name, in the manifest's directory
    sha256: str
    size: int
    started_at: str  # ISO 8601, UTC
    finished_at: str
    database: str
    server_version: str
    pg_dump_version: str
    alembic_revision: str | None
    snapshot: str  # pg_current_snapshot() of the dump: xmin:xmax:xip,...
    snapshot_time: str  # commits up to about this moment are in the dump
    row_counts: dict[str, int] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT

    @property
    def started(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.started_at)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError) as error:
            raise BackupError(f"{path}: not a readable backup manifest ({error})") from None


@dataclass(frozen=True)
class Backup:
    dump: Path
    manifest: Manifest

    @property
    def manifest_path(self) -> Path:
        return manifest_path(self.dump)


def manifest_path(dump: Path) -> Path:
    return dump.with_suffix(".json")


def locate(path: Path) -> Backup:
    """The backup a path names: its dump or its manifest. No manifest: incomplete."""
    dump = path.with_suffix(".dump") if path.suffix == ".json" else path
    manifest = manifest_path(dump)
    if not manifest.is_file():
        if dump.is_file():
            raise BackupError(f"{dump}: no manifest beside it ({manifest.name}): incomplete backup")
        raise BackupError(f"{path}: no such backup")
    loaded = Manifest.load(manifest)
    if not loaded.file or Path(loaded.file).name != loaded.file:
        raise BackupError(f"{manifest}: names no dump file in its own directory")
    return Backup(manifest.with_name(loaded.file), loaded)


def list_backups(directory: Path) -> list[Backup]:
    """Complete backups in a directory, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for manifest in directory.glob("*.json"):
        with contextlib.suppress(BackupError):
            backup = locate(manifest)
            if backup.dump.is_file():
                found.append(backup)
    return sorted(found, key=lambda b: (b.manifest.started, b.dump.name))


def row_counts(cursor: Any) -> dict[str, int]:
    """Exact row counts of every user table, in the cursor's transaction."""
    cursor.execute(_TABLES)
    tables = [name for (name,) in cursor.fetchall()]
    counts = {}
    for table in tables:
        cursor.execute(f"SELECT count(*) FROM {table}")  # names quoted by quote_ident
        counts[table] = cursor.fetchone()[0]
    return counts


def alembic_revision(cursor: Any) -> str | None:
    cursor.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
    if not cursor.fetchone()[0]:
        return None
    cursor.execute("SELECT string_agg(version_num, ',' ORDER BY version_num) FROM alembic_version")
    return cursor.fetchone()[0]


def take_backup(
    url: str,
    directory: Path,
    *,
    embedded: bool,
    compression: int,
    now: Callable[[], dt.datetime] | None = None,
) -> Backup:
    """Dump the database at `url` into `directory`; returns the finished backup.

    `compression` is pg_dump's gzip level (0-9): text compresses well at level 1 already, at
    a quarter of the CPU time of pg_dump's default (see BENCHMARKS.md).
    """
    clock = now or (lambda: dt.datetime.now(dt.UTC))
    tool = pgtools.find_tool("pg_dump", url, embedded=embedded)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    started = clock()
    database = make_url(url).database or "postgres"
    dump = _free_name(directory, f"{database}-{started:%Y%m%dT%H%M%SZ}")
    partial = dump.with_name(f".{dump.name}{PARTIAL_SUFFIX}")
    # The dump holds password hashes and key digests: readable by the owner only.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        with _exported_snapshot(url) as (snapshot_id, facts):
            pgtools.run(
                tool,
                [
                    "--format=custom",
                    f"--compress={compression}",
                    f"--snapshot={snapshot_id}",
                    f"--file={partial}",
                    "--lock-wait-timeout=60000",
                    "--no-password",
                    f"--dbname={pgtools.Connection.from_url(url).dsn}",
                ],
                pgtools.Connection.from_url(url),
            )
        digest, size = _fsync_and_hash(partial)
        os.replace(partial, dump)
        _fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    manifest = Manifest(
        file=dump.name,
        sha256=digest,
        size=size,
        started_at=started.isoformat(),
        finished_at=clock().isoformat(),
        database=database,
        pg_dump_version=tool.version_text,
        **facts,
    )
    write_atomically(manifest_path(dump), manifest.to_json().encode())
    return Backup(dump, manifest)


@contextlib.contextmanager
def _exported_snapshot(url: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Open a REPEATABLE READ transaction, export its snapshot and count rows in it.

    The transaction stays open while the caller runs pg_dump with that snapshot.
    """
    conn = pgtools.connect(url)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_export_snapshot(), pg_current_snapshot()::text, "
                "current_setting('server_version'), now()"
            )
            snapshot_id, snapshot, version, moment = pgtools.one_row(cur)
            facts = {
                "server_version": version,
                "snapshot": snapshot,
                "snapshot_time": moment.astimezone(dt.UTC).isoformat(),
                "alembic_revision": alembic_revision(cur),
                "row_counts": row_counts(cur),
            }
        yield snapshot_id, facts
    finally:
        conn.close()  # ends the transaction; pg_dump has imported the snapshot by then


def _free_name(directory: Path, stem: str) -> Path:
    for n in range(1000):
        candidate = directory / (f"{stem}.dump" if n == 0 else f"{stem}-{n}.dump")
        if not candidate.exists() and not manifest_path(candidate).exists():
            return candidate
    raise BackupError(f"{directory}: too many backups named {stem}*")


def file_digest(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, size) of a file."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _fsync_and_hash(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        os.fsync(f.fileno())
    return file_digest(path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write, fsync, rename, fsync the directory: the file is whole or absent."""
    partial = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)
    _fsync_dir(path.parent)


def remove(backup: Backup) -> None:
    """Manifest first: an interrupted removal leaves an incomplete backup, never a lie."""
    backup.manifest_path.unlink(missing_ok=True)
    backup.dump.unlink(missing_ok=True)
    _fsync_dir(backup.dump.parent)


def stale_leftovers(directory: Path, *, older_than: float = 3600.0) -> list[Path]:
    """Partial files and manifest-less dumps not written to for `older_than` seconds.

    pg_dump keeps writing its partial file, so an old modification time means a dead run.
    """
    if not directory.is_dir():
        return []
    cutoff = time.time() - older_than
    found = [p for p in directory.glob(f".*{PARTIAL_SUFFIX}") if p.stat().st_mtime < cutoff]
    found += [
        dump
        for dump in directory.glob("*.dump")
        if not manifest_path(dump).exists() and dump.stat().st_mtime < cutoff
    ]
    return sorted(found)
