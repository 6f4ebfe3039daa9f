"""One module per CLI command group; each parses arguments and calls storage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.config import Settings


def add_data_dir_option(command: argparse.ArgumentParser) -> None:
    """--data-dir: where the embedded PostgreSQL lives when DATABASE_URL is unset."""
    command.add_argument(
        "--data-dir",
        type=Path,
        help="embedded PostgreSQL data directory when DATABASE_URL is unset "
        "(env BLOGSTORE_DATA_DIR, default $XDG_DATA_HOME/blogstore)",
    )


def database_url(settings: Settings, *, migrate_embedded: bool, direct: bool = False) -> str:
    """DATABASE_URL as given, or the embedded server's URL (migrated to head on request).

    `direct`: for session-bound work (migrations' advisory lock, pg_dump and pg_restore),
    BLOGSTORE_DIRECT_DATABASE_URL when set: past a pooler in transaction mode.
    """
    if settings.database_url:
        if direct and settings.direct_url:
            return settings.direct_url
        return settings.database_url.get_secret_value()
    from storage import migrate
    from storage.engine import start_embedded

    url = start_embedded(settings.data_dir)
    if migrate_embedded:
        migrate.upgrade(url)
    return url
