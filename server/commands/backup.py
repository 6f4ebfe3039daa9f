"""`blogstore backup [--prune] | backup verify | backup list | backup prune | restore`."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from server.commands import add_data_dir_option, database_url

if TYPE_CHECKING:  # imported when a command runs: `blogstore serve` starts without them
    from server.config import Settings
    from storage.lifecycle.rotation import Policy

BACKUP_DIR_HELP = "where backups are kept (env BLOGSTORE_BACKUP_DIR, default <data-dir>/backups)"


def register(commands: argparse._SubParsersAction) -> None:
    backup = commands.add_parser(
        "backup",
        help="write a pg_dump backup with its manifest; verify, list or prune backups",
        description="Without an action: take a backup (pg_dump -Fc and a JSON manifest).",
    )
    _options(backup)
    backup.add_argument(
        "--prune",
        action="store_true",
        help="after the backup, remove those the rotation policy does not keep "
        "(BLOGSTORE_BACKUP_KEEP_HOURLY/_DAILY/_WEEKLY)",
    )
    backup.set_defaults(command=_run("backup", backup_command))
    actions = backup.add_subparsers(metavar="ACTION", help="verify, list or prune")

    verify = actions.add_parser(
        "verify", help="restore a backup into a scratch database and check it"
    )
    _options(verify)
    which = verify.add_mutually_exclusive_group(required=True)
    which.add_argument("file", nargs="?", type=Path, help="the backup's .dump (or .json) file")
    which.add_argument("--latest", action="store_true", help="the newest backup in the backup dir")
    verify.set_defaults(command=_run("backup verify", verify_command))

    listing = actions.add_parser("list", help="list the backups and which the policy keeps")
    _options(listing)
    listing.set_defaults(command=_run("backup list", list_command))

    prune = actions.add_parser("prune", help="apply the rotation policy without a new backup")
    _options(prune)
    prune.set_defaults(command=_run("backup prune", prune_command))

    restore = commands.add_parser(
        "restore", help="restore a backup into an empty database and migrate it to head"
    )
    add_data_dir_option(restore)
    restore.add_argument("file", type=Path, help="the backup's .dump (or .json) file")
    restore.add_argument(
        "--force",
        action="store_true",
        help="drop everything in a non-empty database first (it lists what is dropped)",
    )
    restore.set_defaults(command=_run("restore", restore_command))


def _options(parser: argparse.ArgumentParser) -> None:
    add_data_dir_option(parser)
    parser.add_argument("--backup-dir", type=Path, help=BACKUP_DIR_HELP)


Command = Callable[[argparse.Namespace, "Settings"], int]


def _run(name: str, command: Command) -> Command:
    """Apply --backup-dir; print a failure as one line (exit 1), never a traceback."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        import psycopg2
        from sqlalchemy import exc

        from storage.lifecycle.pgtools import BackupError

        settings = settings.replace(backup_dir=getattr(args, "backup_dir", None))
        try:
            return command(args, settings)
        except BackupError as error:
            message = str(error)
        except (psycopg2.Error, exc.DBAPIError) as error:  # unreachable, not allowed, ...
            cause = getattr(error, "orig", None) or error
            message = f"database error: {str(cause).strip().splitlines()[0]}"
        print(f"blogstore {name}: FAILED: {message}", file=sys.stderr)
        return 1

    return run


def _target(settings: Settings) -> tuple[str, bool]:
    """(database URL, embedded?) by the same rules as `serve`, without migrating."""
    return database_url(
        settings, migrate_embedded=False, direct=True
    ), settings.database_url is None


def _policy(settings: Settings) -> Policy:
    from storage.lifecycle.rotation import Policy

    return Policy(
        hourly=settings.backup_keep_hourly,
        daily=settings.backup_keep_daily,
        weekly=settings.backup_keep_weekly,
    )


def backup_command(args: argparse.Namespace, settings: Settings) -> int:
    from storage.lifecycle.backup import take_backup

    url, embedded = _target(settings)
    backup = take_backup(
        url, settings.backup_directory, embedded=embedded, compression=settings.backup_compression
    )
    m = backup.manifest
    seconds = (dt.datetime.fromisoformat(m.finished_at) - m.started).total_seconds()
    print(f"backup: {backup.dump}")
    print(
        f"  {_size(m.size)} in {seconds:.1f} s, PostgreSQL {m.server_version} "
        f"(pg_dump {m.pg_dump_version}), schema {m.alembic_revision or '<none>'}, "
        f"{len(m.row_counts)} tables, {sum(m.row_counts.values()):,} rows, "
        f"sha256 {m.sha256[:16]}..."
    )
    if args.prune:
        _prune(settings)
    return 0


def prune_command(args: argparse.Namespace, settings: Settings) -> int:
    _prune(settings)
    return 0


def _prune(settings: Settings) -> None:
    from storage.lifecycle.rotation import prune

    policy = _policy(settings)
    removed, leftovers = prune(settings.backup_directory, policy)
    print(
        f"prune (keep hourly {policy.hourly}, daily {policy.daily}, weekly {policy.weekly}): "
        f"removed {len(removed)} backup(s)"
        + (f" and {len(leftovers)} leftover file(s)" if leftovers else "")
    )
    for backup in removed:
        print(f"  removed {backup.dump.name} (taken {backup.manifest.started_at})")
    for path in leftovers:
        print(f"  removed {path.name} (an interrupted backup)")


def list_command(args: argparse.Namespace, settings: Settings) -> int:
    from storage.lifecycle.backup import list_backups
    from storage.lifecycle.rotation import keep

    backups = list_backups(settings.backup_directory)
    kept = keep(
        {b.dump.name: b.manifest.started for b in backups},
        _policy(settings),
        dt.datetime.now(dt.UTC),
    )
    print(f"{len(backups)} backup(s) in {settings.backup_directory}")
    for b in reversed(backups):
        m = b.manifest
        print(
            f"  {b.dump.name}  {_size(m.size):>9}  schema {m.alembic_revision or '-'}  "
            f"{sum(m.row_counts.values()):>12,} rows  {'' if b.dump.name in kept else 'prunable'}"
        )
    return 0


def verify_command(args: argparse.Namespace, settings: Settings) -> int:
    from storage.lifecycle.backup import list_backups
    from storage.lifecycle.pgtools import BackupError
    from storage.lifecycle.verify import verify

    path = args.file
    if args.latest:
        backups = list_backups(settings.backup_directory)
        if not backups:
            raise BackupError(f"no complete backup in {settings.backup_directory}")
        path = backups[-1].dump
    url, embedded = _target(settings)
    report = verify(path, url, embedded=embedded)
    m = report.backup.manifest
    print(f"verified: {report.backup.dump}")
    print(f"  checksum and size match ({_size(m.size)}, sha256 {m.sha256[:16]}...)")
    print(
        f"  restored {report.tables} tables, {report.rows:,} rows: each count matches the "
        f"manifest; schema {m.alembic_revision or '<none>'}"
        + (f", migrated to head from {report.migrated_from}" if report.migrated_from else "")
    )
    print("  read through the models: " + ", ".join(f"{t} {n}" for t, n in report.read.items()))
    print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))
    return 0


def restore_command(args: argparse.Namespace, settings: Settings) -> int:
    from storage.lifecycle.restore import describe, restore

    def announce(existing: dict[str, int]) -> None:
        print(f"--force: dropping everything in the database: {describe(existing)}")

    url, embedded = _target(settings)
    report = restore(args.file, url, embedded=embedded, force=args.force, before_drop=announce)
    m = report.backup.manifest
    print(f"restored: {report.backup.dump} (taken {m.started_at})")
    print(f"  {len(m.row_counts)} tables, {report.rows:,} rows: each count matches the manifest")
    if report.migrated_from:
        print(f"  migrated to head from schema {report.migrated_from}")
    elif report.unknown_revision:
        print(
            f"  WARNING: schema {m.alembic_revision} is newer than this blogstore: "
            "serve it with the release that wrote it (or newer)"
        )
    print(f"  in {report.seconds:.1f} s")
    return 0


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"
