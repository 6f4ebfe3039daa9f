"""The optional phrase accelerator: one GIN index over (search_vector, create_time).

A phrase search over frequent words is bounded to the newest PHRASE_SCOPE articles by a
create_time range (storage/repositories/article_reads.py). With GIN on search_vector alone,
PostgreSQL lists every article holding all the words (123,530 of 1M for "rax preat": 25-45 ms)
and only then ANDs that bitmap with the range. With create_time in the same GIN index (the
`btree_gin` extension gives GIN the timestamp operators), the index scan advances every
word's posting list only to the articles of the range, so its cost follows the scope, not
the table. The same SQL picks it when it exists; the planner also uses it for the word-only
queries the single-column index served, so it replaces that index (one index to keep up on
writes, not two). Where `btree_gin` is missing (the embedded PostgreSQL ships no contrib
modules) the single-column index stays and searches are bounded as before.

It is opt-in (`blogstore enable-phrase-index`), not a migration: building it reads every
article's search_vector (minutes at a million articles, writes to articles waiting), and on
a small table just written the planner may prefer another index for a user's word search
until VACUUM has filled the GIN statistics (it holds one more entry per article).
The RUM extension was measured as the alternative and lost (BENCHMARKS.md, issue 17).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from storage.engine import create_extension

EXTENSION = "btree_gin"
INDEX = "ix_articles_search_vector_create_time"
FALLBACK_INDEX = "ix_articles_search_vector"
_CREATE = f"CREATE INDEX IF NOT EXISTS {INDEX} ON articles USING gin (search_vector, create_time)"
_CREATE_FALLBACK = (
    f"CREATE INDEX IF NOT EXISTS {FALLBACK_INDEX} ON articles USING gin (search_vector)"
)


def _exists(connection: Any, name: str) -> bool:
    return connection.scalar(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name})


def enabled(connection: Any) -> bool:
    return _exists(connection, INDEX)


def ensure(connection: Any) -> str:
    """Create the extension and the index, then drop the single-column one. Returns what it
    did, or raises RuntimeError saying why not (the caller's transaction stays usable)."""
    if enabled(connection):
        return f"{INDEX} already exists"
    if not connection.scalar(
        text("SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = :n)"),
        {"n": EXTENSION},
    ):
        raise RuntimeError(
            f'PostgreSQL has no "{EXTENSION}" extension (a contrib module; the embedded '
            "PostgreSQL has none): phrase searches keep the single-column index"
        )
    create_extension(connection, EXTENSION, "enable-phrase-index again")
    connection.execute(text(_CREATE))
    connection.execute(text(f"DROP INDEX IF EXISTS {FALLBACK_INDEX}"))
    return f"created {INDEX} (replaces {FALLBACK_INDEX})"


def drop(connection: Any) -> None:
    """Back to the single-column index (tests); the extension stays."""
    connection.execute(text(_CREATE_FALLBACK))
    connection.execute(text(f"DROP INDEX IF EXISTS {INDEX}"))
