"""`blogstore enable-phrase-index`: the opt-in GIN index over (search_vector, create_time)
that bounds a phrase search's index work to its scope (storage/phrase_index.py)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from server.commands import add_data_dir_option, database_url

if TYPE_CHECKING:  # imported when the command runs: `blogstore serve` starts without them
    from server.config import Settings


def register(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "enable-phrase-index",
        help="index search_vector with create_time (needs the btree_gin extension)",
        description="Creates the `btree_gin` extension (a PostgreSQL contrib module; CREATE "
        "EXTENSION may need a superuser) and a GIN index over (search_vector, create_time) "
        "that replaces the one over search_vector: phrase searches at a million articles "
        "then read only their scope's index entries. Writes to articles wait while it is "
        "built (minutes at a million articles). Safe to run again.",
    )
    add_data_dir_option(command)
    command.set_defaults(command=enable_phrase_index_command)


def enable_phrase_index_command(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import create_engine

    from storage import phrase_index
    from storage.engine import normalize_url

    engine = create_engine(normalize_url(database_url(settings, migrate_embedded=True)))
    try:
        with engine.begin() as connection:
            done = phrase_index.ensure(connection)
    except RuntimeError as error:
        print(f"enable-phrase-index failed: {error}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"enable-phrase-index: {done}")
    return 0
