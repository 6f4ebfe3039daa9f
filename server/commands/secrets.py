"""`blogstore rotate-secrets`: re-encrypt user secrets under the first BLOGSTORE_SECRET_KEYS key."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from server.commands import add_data_dir_option, database_url

if TYPE_CHECKING:  # imported when the command runs: `blogstore serve` starts without them
    from server.config import Settings
    from storage.lifecycle.secret_rotation import Report


def register(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "rotate-secrets",
        help="re-encrypt every user secret under the first key of BLOGSTORE_SECRET_KEYS",
        description="Rotation (README: Users and credentials): put a new key first in "
        "BLOGSTORE_SECRET_KEYS, keep the old ones after it, restart the servers, run this, "
        "then drop the old keys. Short batches beside live traffic; safe to run again.",
    )
    add_data_dir_option(command)
    command.add_argument(
        "--batch-size",
        type=int,
        default=500,
        metavar="N",
        help="secrets per transaction (default 500)",
    )
    command.set_defaults(command=rotate_secrets_command)


def rotate_secrets_command(args: argparse.Namespace, settings: Settings) -> int:
    from storage.engine import make_engine
    from storage.lifecycle import secret_rotation
    from storage.uow import Database

    if args.batch_size < 1:
        print("rotate-secrets: --batch-size must be at least 1", file=sys.stderr)
        return 2
    keyring = settings.secret_keyring
    if keyring is None:
        print("rotate-secrets: BLOGSTORE_SECRET_KEYS is not set", file=sys.stderr)
        return 2
    url = database_url(settings, migrate_embedded=True)
    db = Database(
        make_engine(url, pool_size=1, application_name="blogstore-rotate-secrets"),
        statement_timeout_ms=settings.statement_timeout_ms,
    )
    try:
        report = secret_rotation.rotate(db, keyring, batch_size=args.batch_size)
    finally:
        db.dispose()
    print(describe(report))
    for user_id, name, cause in report.unreadable:
        print(f"unreadable: user {user_id} secret {name!r} ({cause})", file=sys.stderr)
    return 0 if report.complete else 1


def describe(report: Report) -> str:
    batches = f"{report.batches} batch" + ("es" if report.batches != 1 else "")
    lines = [
        f"rotate-secrets: re-encrypted {report.rotated} secrets under key "
        f"{report.key_id!r} in {batches}; {len(report.unreadable)} unreadable"
    ]
    counts = ", ".join(f"{key!r}: {n}" for key, n in sorted(report.by_key.items()))
    lines.append(f"secrets per key now: {counts or 'none'}")
    if report.unreadable:
        lines.append(
            "unreadable secrets stay under their old key: restore that key in "
            "BLOGSTORE_SECRET_KEYS, or have the users set them again"
        )
    return "\n".join(lines)
