"""Alembic environment: URL from the caller or DATABASE_URL, NullPool, one advisory lock."""

from __future__ import annotations

import os
import time

from alembic import context
from sqlalchemy import create_engine, pool, text

from storage import embeddings, phrase_index
from storage.engine import normalize_url
from storage.lifecycle import partitions
from storage.migrate import MIGRATION_LOCK_ID, record_compatibility, schema_compatibility
from storage.models import Base

config = context.config
target_metadata = Base.metadata


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Autogenerate and `alembic check` skip migration bookkeeping, as with alembic_version,
    the embedding tables, which exist only where pgvector does (storage/embeddings.py), and the
    ledgers' monthly partitions (storage/lifecycle/partitions.py)."""
    skipped = (schema_compatibility.name, *embeddings.TABLES)
    return not (type_ == "table" and (name in skipped or partitions.is_partition_name(name)))


def include_object(_object: object, name: str | None, type_: str, *_: object) -> bool:
    """The search_vector GIN index is one of two, whether `blogstore enable-phrase-index` ran
    or not (storage/phrase_index.py): neither side of the comparison holds it."""
    return not (type_ == "index" and name in (phrase_index.INDEX, phrase_index.FALLBACK_INDEX))


# Every run keeps schema_compatibility in step (see storage/migrate.py).
OPTIONS = {
    "target_metadata": target_metadata,
    "compare_type": True,
    "include_name": include_name,
    "include_object": include_object,
    "on_version_apply": record_compatibility,
}


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("no database URL: set DATABASE_URL or use `blogstore migrate`")
    return url


def run_migrations_offline() -> None:
    context.configure(
        url=normalize_url(database_url()).render_as_string(hide_password=False),
        literal_binds=True,
        **OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(normalize_url(database_url()), poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Two replicas migrating at once queue here instead of colliding. A waiter polls
        # with pg_try_advisory_lock between commits rather than waiting in pg_advisory_lock:
        # CREATE INDEX CONCURRENTLY (0008) waits for every open transaction, so a waiter
        # parked inside a transaction would deadlock with the migration it waits for.
        lock = text("SELECT pg_try_advisory_lock(:id)")
        while not connection.execute(lock, {"id": MIGRATION_LOCK_ID}).scalar():
            connection.commit()
            time.sleep(0.2)
        connection.commit()
        try:
            context.configure(connection=connection, **OPTIONS)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
