"""Database size and per-table live-row estimates, for the metrics endpoint.

Both come from PostgreSQL's statistics (no table is scanned): `pg_database_size` and
`pg_stat_user_tables.n_live_tup`, which autovacuum and ANALYZE keep roughly current.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

_TIMEOUT = text("SELECT set_config('statement_timeout', '5000', true)")
_SIZE = text("SELECT pg_database_size(current_database())")
_LIVE_ROWS = text(
    "SELECT relname, n_live_tup FROM pg_stat_user_tables "
    "WHERE schemaname = current_schema() ORDER BY relname"
)


@dataclass(frozen=True)
class DatabaseStats:
    size_bytes: int
    live_rows: dict[str, int]  # table -> estimated live rows


def database_stats(connection: Connection) -> DatabaseStats:
    connection.execute(_TIMEOUT)  # this transaction only
    size = connection.scalar(_SIZE) or 0
    rows = {name: int(count) for name, count in connection.execute(_LIVE_ROWS)}
    return DatabaseStats(size_bytes=int(size), live_rows=rows)
