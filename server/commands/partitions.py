"""`blogstore partitions`: create the ledgers' monthly partitions ahead, and list them.

The server does this itself (server/partitions.py); this is for a login that may not create
tables (run it as the tables' owner, e.g. from cron) and for a look at what exists.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import TYPE_CHECKING

from server.commands import add_data_dir_option, database_url

if TYPE_CHECKING:
    from server.config import Settings


def register(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "partitions",
        help="create the usage and audit ledgers' monthly partitions ahead, and list them",
        description="Creates the current month and BLOGSTORE_PARTITIONS_AHEAD more (and any "
        "month with rows in a default partition, moving them), then lists each ledger's "
        "partitions and the rows in its default partition (README: Operations, Partitions).",
    )
    add_data_dir_option(command)
    command.set_defaults(command=partitions_command)


_SIZE = (
    "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) "
    "FROM pg_inherits WHERE inhparent = to_regclass(:t)"
)


def partitions_command(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import text

    from storage.engine import make_engine
    from storage.lifecycle import partitions

    engine = make_engine(database_url(settings, migrate_embedded=True), pool_size=1)
    try:
        with engine.connect() as c:
            done = partitions.ensure(c, dt.datetime.now(dt.UTC), settings.partitions_ahead)
            print(f"created: {', '.join(done.created) or 'none'}; rows moved: {done.moved}")
            with c.begin():
                for table, rows in partitions.default_rows(c).items():
                    months = [p for p in partitions.partitions(c, table) if p.start]
                    span = f"{months[0].start:%Y-%m} .. {months[-1].start:%Y-%m}" if months else "-"
                    size = c.scalar(text(_SIZE), {"t": table})
                    print(f"{table}: {len(months)} monthly partitions {span}, {size}; "
                          f"{rows} rows in {table}_{partitions.DEFAULT_SUFFIX}")  # fmt: skip
    finally:
        engine.dispose()
    return 0
