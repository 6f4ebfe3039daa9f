"""`blogstore enable-embeddings`: create (or re-type) the pgvector tables once the extension
is installed. Migration 0018 creates them where `CREATE EXTENSION vector` works; where it did
not (no pgvector on the server then), this is the step to run after installing it."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from server.commands import add_data_dir_option, database_url

if TYPE_CHECKING:  # imported when the command runs: `blogstore serve` starts without them
    from server.config import Settings


def register(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "enable-embeddings",
        help="create the embedding tables and HNSW indexes (needs the pgvector extension)",
        description="Creates the `vector` extension (pgvector must be installed on the "
        "PostgreSQL server; CREATE EXTENSION may need a superuser), the embedding tables "
        "for BLOGSTORE_EMBEDDING_DIMENSIONS, their HNSW indexes and row-level security. "
        "Tables of another dimension are re-typed while empty. Safe to run again. Running "
        "servers notice within seconds, without a restart.",
    )
    add_data_dir_option(command)
    command.set_defaults(command=enable_embeddings_command)


def enable_embeddings_command(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import create_engine

    from storage import embeddings
    from storage.engine import normalize_url

    engine = create_engine(normalize_url(database_url(settings, migrate_embedded=True)))
    try:
        with engine.begin() as connection:
            done = embeddings.ensure_schema(connection, settings.embedding_dimensions)
    except RuntimeError as error:
        print(f"enable-embeddings failed: {error}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"enable-embeddings: {done}")
    return 0
