"""partitioned ledgers: usage_events and audit_events range-partitioned by UTC month

Both ledgers only grow (every LLM call, every mutation). Partitioned by month on their time
column (usage_events.event_time, audit_events.create_time), retention drops a whole old
month (DETACH + DROP: no dead rows, no vacuum debt, no index bloat) instead of deleting it
row by row, and a month's reads (a cost report) touch only that month's partition.

- Partitions `<table>_YYYY_MM` for every month from the oldest row's to the current one and
  storage.lifecycle.partitions.DEFAULT_AHEAD more; the server creates further months ahead
  (server/partitions.py). Plus a DEFAULT partition `<table>_default`: RecordUsage accepts
  an event_time in any past month, and a month the server has not created yet must not make
  a write fail; on-demand CREATE in the write path would take locks on the parent (and DDL
  rights the service's role does not have). The server moves any rows it finds there into
  the month's partition when it creates that month, and retention deletes old ones by row.
- A primary key or unique index of a partitioned table must contain the partition key, so
  the keys become (id, event_time) and (id, create_time): ids still come from the same
  generators (gen_random_uuid(), the identity sequence, carried on), so they stay unique.
- Idempotency: `(user_id, request_id)` of usage events must be unique across all months. A
  unique index on the partitioned table would have to include event_time, and then a retry
  with another event_time (RecordUsage defaults it to the server's clock: a retry a second
  later, or across midnight at the month's end) would record the event twice. So a small
  table `usage_request_ids` (PRIMARY KEY (user_id, request_id), with the event's id and
  event_time to find it in its partition) is written by blogstore_record_usage() in the same
  transaction, before the event: a concurrent retry waits on its key for the first call, as
  it did on the old unique index. Retention deletes its rows with their events' partitions.
  A request_id whose event is gone (retention) is free again, as it was before.
- Indexes, foreign keys, check constraints, row-level security policies, grants and
  triggers are carried over from the old tables as the catalog holds them (the old tables'
  `uq_usage_events_user_id_request_id` and primary keys excepted). Rows are copied within
  this migration's transaction: the tables are locked while it runs.

Reversible: the downgrade copies the rows back into plain tables with the old keys.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import op

from storage.lifecycle import partitions

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Code from 0012 calls blogstore_record_usage() (28 arguments from 0013, 20 before), both
# replaced with the same signatures and results, and reads and writes the ledgers through
# their unchanged names and columns; without creating partitions, its writes of a month
# not yet created land in the default partition. Its retention deletes events by row and
# leaves their usage_request_ids behind, which the function then treats as free again.
compatible_since: str = "0012"

IDEMPOTENCY = "usage_request_ids"
_PK = {"usage_events": "pk_usage_events", "audit_events": "pk_audit_events"}
_UNIQUE = "uq_usage_events_user_id_request_id"
_IDENTITY = {"audit_events": "id"}  # identity columns, whose sequence carries on

_OLD_INSERT_START = "    INSERT INTO usage_events AS e (\n        user_id, request_id,"
_OLD_RETRY_START = """    IF NOT FOUND THEN  -- a retry: return the first event and write nothing
        SELECT e.* INTO ev FROM usage_events AS e
         WHERE e.user_id = p_user_id AND e.request_id = p_request_id;
"""
_KEY = "r.user_id = p_user_id AND r.request_id = p_request_id"
_NEW_CLAIM = f"""    INSERT INTO {IDEMPOTENCY} AS r (user_id, request_id, event_id, event_time)
    VALUES (p_user_id, p_request_id, gen_random_uuid(), p_event_time)
    ON CONFLICT (user_id, request_id) DO NOTHING
    RETURNING r.event_id INTO v_event_id;
    IF NOT FOUND THEN
        SELECT e.* INTO ev FROM {IDEMPOTENCY} AS r JOIN usage_events AS e
            ON e.id = r.event_id AND e.event_time = r.event_time
         WHERE {_KEY};
        IF NOT FOUND THEN  -- its event is gone (retention): the request_id is free again
            v_event_id := gen_random_uuid();
            UPDATE {IDEMPOTENCY} AS r SET event_id = v_event_id, event_time = p_event_time
             WHERE {_KEY};
        END IF;
    END IF;
    IF v_event_id IS NOT NULL THEN
    INSERT INTO usage_events AS e (
        id, user_id, request_id,"""
_NEW_RETRY_START = """    END IF;

    IF v_event_id IS NULL THEN  -- a retry: return the first event and write nothing
"""


def _migration(filename: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        filename.removesuffix(".py"), Path(__file__).with_name(filename)
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record_usage_0013() -> str:
    body: str = _migration("0013_usage_call_log.py").RECORD_USAGE
    return body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def _record_usage_partitioned() -> str:
    """0013's function, claiming the request_id in usage_request_ids before the insert."""
    body = _record_usage_0013()
    start = body.index(_OLD_INSERT_START)
    conflict = "    ON CONFLICT (user_id, request_id) DO NOTHING\n    RETURNING e.* INTO ev;\n\n"
    end = body.index(conflict, start)
    assert _OLD_RETRY_START in body and "    ev usage_events;\n" in body, "0013 changed"
    insert = (
        body[start:end]
        .replace(_OLD_INSERT_START, "", 1)
        .replace(
            "    VALUES (\n        p_user_id,", "    VALUES (\n        v_event_id, p_user_id,", 1
        )
    )
    declare = "    ev usage_events;\n"
    return (
        body[:start].replace(declare, declare + "    v_event_id uuid;\n")
        + _NEW_CLAIM + insert + "    RETURNING e.* INTO ev;\n"
        + _NEW_RETRY_START + body[end + len(conflict):].replace(_OLD_RETRY_START, "", 1)
    )  # fmt: skip


def _record_usage_20_arguments() -> str:
    """0006's signature (code at 0012, older scripts) as a wrapper of the 28-argument
    function: one implementation of the rules, the call log's fields at their defaults."""
    body: str = _migration("0006_record_usage_function.py").RECORD_USAGE
    header = body[: body.index("LANGUAGE plpgsql")].replace(
        "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1
    )
    columns = header[header.index("RETURNS TABLE (") + len("RETURNS TABLE (") : header.rindex(")")]
    names = ", ".join(f"r.{c.split()[0]}" for c in columns.split(","))
    return (
        f"{header}LANGUAGE sql AS $$\n    SELECT {names}\n    FROM blogstore_record_usage("
        "p_user_id, p_request_id, p_pipeline_id, p_article_id, p_service, p_model, "
        "p_operation, p_input_tokens, p_output_tokens, p_cost_micros, p_articles_generated, "
        "p_api_calls, p_event_time, p_month, p_default_cost_limit, p_default_article_limit, "
        "p_actor_kind, p_actor_id, p_actor_name, p_audit_request_id, NULL, 'ok', '', '', '', "
        "NULL, NULL, NULL) AS r\n$$"
    )


def _scalar(sql: str) -> Any:
    return op.get_bind().exec_driver_sql(sql).scalar()


def _rows(sql: str) -> list[Any]:
    return list(op.get_bind().exec_driver_sql(sql).all())


def _carried_over(table: str, skip: set[str]) -> list[str]:
    """Statements that give a new `table` the current one's indexes (but `skip`), foreign
    keys and user triggers (its security is copied by partitions.copy_security)."""
    oid = f"'{table}'::regclass"
    statements = [
        definition.replace(" ON ONLY ", " ON ", 1)
        for name, definition in _rows(
            f"SELECT c.relname, pg_get_indexdef(c.oid) FROM pg_index i "
            f"JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = {oid} ORDER BY 1"
        )
        if name not in skip
    ]
    statements += [
        f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"
        for name, definition in _rows(
            f"SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            f"WHERE conrelid = {oid} AND contype = 'f' ORDER BY 1"
        )
    ]
    statements += [
        definition
        for (definition,) in _rows(
            f"SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = {oid} "
            f"AND NOT tgisinternal ORDER BY tgname"
        )
    ]
    referenced = _scalar(f"SELECT count(*) FROM pg_constraint WHERE confrelid = {oid}")
    assert not referenced, f"a foreign key references {table}: carry it over in 0020"
    return statements


def _swap(table: str, new: str, key: str, skip: set[str]) -> None:
    """Copy the rows of `table` into `new`, drop `table`, give `new` its name, `key` as its
    primary key, and the old table's indexes (but `skip`), constraints and security."""
    statements = _carried_over(table, skip)
    partitions.copy_security(op.get_bind(), table, new)
    sequence = None
    if column := _IDENTITY.get(table):
        old = _scalar(f"SELECT pg_get_serial_sequence('{table}', '{column}')")
        sequence = _rows(f"SELECT last_value, is_called FROM {old}")[0]
    op.execute(f"INSERT INTO {new} SELECT * FROM {table}")
    op.execute(f"DROP TABLE {table}")
    op.execute(f"ALTER TABLE {new} RENAME TO {table}")
    if column and sequence:  # ids carry on where they were
        name = _scalar(f"SELECT pg_get_serial_sequence('{table}', '{column}')")
        op.execute(f"ALTER SEQUENCE {name} RENAME TO {table}_{column}_seq")
        op.execute(f"SELECT setval('{table}_{column}_seq', {sequence[0]}, {sequence[1]})")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {_PK[table]} PRIMARY KEY ({key})")
    for statement in statements:
        op.execute(statement)


_LIKE = "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY INCLUDING STORAGE"


def upgrade() -> None:
    op.execute(f"""
        CREATE TABLE {IDEMPOTENCY} (
            user_id uuid NOT NULL,
            request_id uuid NOT NULL,
            event_id uuid NOT NULL,
            event_time timestamptz NOT NULL,
            CONSTRAINT pk_{IDEMPOTENCY} PRIMARY KEY (user_id, request_id),
            CONSTRAINT fk_{IDEMPOTENCY}_user_id_users FOREIGN KEY (user_id)
                REFERENCES users (id) ON DELETE CASCADE)""")
    partitions.copy_security(op.get_bind(), "usage_events", IDEMPOTENCY)
    op.execute(
        f"INSERT INTO {IDEMPOTENCY} (user_id, request_id, event_id, event_time) "
        "SELECT user_id, request_id, id, event_time FROM usage_events"
    )
    now = _scalar("SELECT now()")
    for table, column in partitions.LEDGERS.items():
        new = f"{table}_partitioned"
        op.execute(f"CREATE TABLE {new} (LIKE {table} {_LIKE}) PARTITION BY RANGE ({column})")
        oldest, newest = _rows(f"SELECT min({column}), max({column}) FROM {table}")[0]
        month = partitions.month_start(oldest or now)
        last = max(partitions.month_start(now, partitions.DEFAULT_AHEAD),
                   partitions.month_start(newest or now))  # fmt: skip
        while month <= last:
            op.execute(
                f"CREATE TABLE {partitions.partition_name(table, month)} PARTITION OF {new} "
                f"FOR VALUES {partitions.bounds_sql(month)}"
            )
            month = partitions.month_start(month, 1)
        op.execute(f"CREATE TABLE {table}_{partitions.DEFAULT_SUFFIX} PARTITION OF {new} DEFAULT")
        _swap(table, new, f"id, {column}", {_PK[table], _UNIQUE})
        for partition in partitions.partitions(op.get_bind(), table):
            partitions.name_indexes(op.get_bind(), table, partition.name)
            partitions.copy_security(op.get_bind(), table, partition.name)
    op.execute(_record_usage_partitioned())
    # The 20-argument one (0010's) wrote usage_events with ON CONFLICT on the unique index
    # that went: it now calls the 28-argument function.
    op.execute(_record_usage_20_arguments())


def downgrade() -> None:
    module_0010 = _migration("0010_lifecycle_audit_owner_retention_indexes.py")
    op.execute(
        module_0010._record_usage_0006().replace(
            module_0010._OLD_AUDIT_INSERT, module_0010._NEW_AUDIT_INSERT
        )
    )
    op.execute(_record_usage_0013())
    for table in partitions.LEDGERS:
        new = f"{table}_plain"
        op.execute(f"CREATE TABLE {new} (LIKE {table} {_LIKE})")
        _swap(table, new, "id", {_PK[table]})
    op.execute(f"DROP TABLE {IDEMPOTENCY}")
    op.execute(f"CREATE UNIQUE INDEX {_UNIQUE} ON usage_events (user_id, request_id)")
