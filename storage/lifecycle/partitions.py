"""Monthly partitions of the ledgers (usage_events, audit_events; migration 0020).

Each ledger is range-partitioned on its time column by UTC month: `<table>_YYYY_MM` holds
[month start, next month start), and `<table>_default` takes any row no monthly partition
covers (an event recorded for a month long past, or a write before the server created the
month). So a write never fails for want of a partition, and no DDL runs on the write path.

`ensure` creates the current month and AHEAD more (the server at start and daily,
server/partitions.py; `blogstore partitions`), each as a plain table then ATTACHed: ATTACH
takes SHARE UPDATE EXCLUSIVE on the parent, so reads and writes go on (CREATE TABLE ...
PARTITION OF would take ACCESS EXCLUSIVE). If the default partition holds rows of the month,
they move into the new partition in the same transaction. `drop` is retention's: DETACH (a
short ACCESS EXCLUSIVE on the parent, bounded by the caller's lock_timeout; CONCURRENTLY is
not allowed beside a default partition) and DROP. Every statement here runs as the tables'
owner (the login, not the service's role), with lock_timeout: it waits for nobody long.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import Connection, text

# The ledgers and the column each is partitioned on (declared once: migration 0020 too).
LEDGERS = {"usage_events": "event_time", "audit_events": "create_time"}
DEFAULT_SUFFIX = "default"
_NAME = re.compile(r"^(?P<table>{})_(?:(?P<y>\d{{4}})_(?P<m>\d{{2}})|{})$".format(
    "|".join(LEDGERS), DEFAULT_SUFFIX))  # fmt: skip
LOCK_TIMEOUT_MS = 2000
ENSURE_LOCK_ID = 0x626C6F6770617274  # "blogpart": pg_advisory_xact_lock key of ensure()
DEFAULT_AHEAD = 3  # months created ahead of the current one (BLOGSTORE_PARTITIONS_AHEAD)


@dataclass(frozen=True)
class Partition:
    name: str
    start: dt.datetime | None  # None: the default partition
    end: dt.datetime | None


def is_partition_name(name: str | None) -> bool:
    """A ledger partition's name (Alembic's comparison leaves them out: not in the models)."""
    return bool(name and _NAME.match(name))


def month_start(moment: dt.datetime | dt.date, plus: int = 0) -> dt.datetime:
    """The start (UTC) of `moment`'s month, `plus` months on."""
    if isinstance(moment, dt.datetime):
        moment = moment.astimezone(dt.UTC)
    index = moment.year * 12 + moment.month - 1 + plus
    return dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.UTC)


def partition_name(table: str, month: dt.datetime) -> str:
    return f"{table}_{month:%Y_%m}"


def bounds_sql(month: dt.datetime) -> str:
    """FOR VALUES of one month: UTC instants, whatever the session's TimeZone."""
    return f"FROM ({_instant(month)}) TO ({_instant(month_start(month, 1))})"


def _instant(month: dt.datetime) -> str:
    return f"'{month:%Y-%m-%d} 00:00:00+00'"


def is_partitioned(c: Connection, table: str) -> bool:
    kind = c.scalar(text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table})
    return kind == "p"


def partitions(c: Connection, table: str) -> list[Partition]:
    """The table's partitions, oldest first, the default last."""
    rows = c.execute(
        text(
            "SELECT p.relname, b[1]::timestamptz, b[2]::timestamptz FROM pg_inherits i "
            "JOIN pg_class p ON p.oid = i.inhrelid, "
            "LATERAL (SELECT regexp_match(pg_get_expr(p.relpartbound, p.oid), "
            "$$FROM \\('([^']+)'\\) TO \\('([^']+)'\\)$$)) AS m(b) "
            "WHERE i.inhparent = to_regclass(:t) ORDER BY 2 NULLS LAST"
        ),
        {"t": table},
    ).all()
    return [Partition(name, start, end) for name, start, end in rows]


def _lock_timeout(c: Connection, ms: int) -> None:
    c.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": str(ms)})


def create_month(c: Connection, table: str, month: dt.datetime) -> int:
    """Create and attach `table`'s partition for `month` (inside the caller's transaction);
    rows of that month in the default partition move into it. Returns the rows moved."""
    column = LEDGERS[table]
    name, end = partition_name(table, month), month_start(month, 1)
    start_sql, end_sql = _instant(month), _instant(end)
    # The CHECK lets ATTACH skip its scan; the partition's indexes, foreign keys and grants
    # come from the parent (ATTACH builds the indexes, on an empty table at once).
    c.execute(text(
        f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
        f"CONSTRAINT {name}_range CHECK ({column} >= {start_sql} AND {column} < {end_sql}))"
    ))  # fmt: skip
    moved = 0
    default = f"{table}_{DEFAULT_SUFFIX}"
    if c.scalar(text("SELECT to_regclass(:d)"), {"d": default}) is not None:
        moved = c.execute(text(
            f"WITH moved AS (DELETE FROM {default} WHERE {column} >= {start_sql} "
            f"AND {column} < {end_sql} RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        )).rowcount  # fmt: skip
    c.execute(text(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES {bounds_sql(month)}"))
    c.execute(text(f"ALTER TABLE {name} DROP CONSTRAINT {name}_range"))
    name_indexes(c, table, name)
    copy_security(c, table, name)
    return moved


def name_indexes(c: Connection, table: str, partition: str) -> None:
    """Name the partition's indexes after the parent's (`ix_..._2026_12`, not PostgreSQL's
    `usage_events_2026_12_user_id_event_time_id_idx`), so a plan names the index it uses."""
    suffix = partition.removeprefix(f"{table}_")
    rows = c.execute(
        text(
            "SELECT child.relname, parent.relname FROM pg_index i "
            "JOIN pg_class child ON child.oid = i.indexrelid "
            "JOIN pg_inherits h ON h.inhrelid = i.indexrelid "
            "JOIN pg_class parent ON parent.oid = h.inhparent "
            "WHERE i.indrelid = to_regclass(:p)"
        ),
        {"p": partition},
    ).all()
    for child, parent in rows:
        if child != f"{parent}_{suffix}":
            c.execute(text(f'ALTER INDEX "{child}" RENAME TO "{parent}_{suffix}"'))


def copy_security(c: Connection, table: str, target: str) -> None:
    """`table`'s row-level security, policies and grants on `target` too (a partition: the
    service reads only through the parent, whose policies apply; this guards a statement
    that names a partition)."""
    oid = {"t": table}
    if c.scalar(text("SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass(:t)"), oid):
        c.execute(text(f"ALTER TABLE {target} ENABLE ROW LEVEL SECURITY"))
    policies = c.execute(
        text(
            "SELECT policyname, permissive, roles, cmd, qual, with_check FROM pg_policies "
            "WHERE schemaname = current_schema() AND tablename = :t"
        ),
        oid,
    ).all()
    for name, permissive, roles, cmd, qual, check in policies:
        to = ", ".join("PUBLIC" if r == "public" else f'"{r}"' for r in roles)
        c.execute(text(
            f"CREATE POLICY {name} ON {target} AS {permissive} FOR {cmd} TO {to}"
            + (f" USING ({qual})" if qual else "") + (f" WITH CHECK ({check})" if check else "")
        ))  # fmt: skip
    grants = c.execute(
        text(
            "SELECT string_agg(a.privilege_type, ', '), g.rolname FROM pg_class t, "
            "aclexplode(t.relacl) a JOIN pg_roles g ON g.oid = a.grantee "
            "WHERE t.oid = to_regclass(:t) AND a.grantee <> t.relowner GROUP BY 2 ORDER BY 2"
        ),
        oid,
    ).all()
    for privileges, grantee in grants:
        c.execute(text(f'GRANT {privileges} ON {target} TO "{grantee}"'))


@dataclass
class Ensured:
    created: list[str]
    moved: int  # rows moved out of default partitions


def ensure(c: Connection, now: dt.datetime, ahead: int) -> Ensured:
    """Partitions for now's month and `ahead` more, and for every month that has rows in the
    default partition (moving them), for every partitioned ledger; each in a transaction of
    its own (`c` must not be in one). Existing ones are left alone."""
    result = Ensured([], 0)
    for table in LEDGERS:
        with c.begin():
            if not is_partitioned(c, table):
                continue
            have = {p.start for p in partitions(c, table)}
            months = {month_start(now, plus) for plus in range(ahead + 1)}
            months |= set(c.scalars(text(
                f"SELECT DISTINCT date_trunc('month', {LEDGERS[table]}, 'UTC') "
                f"FROM {table}_{DEFAULT_SUFFIX}"
            )))  # fmt: skip
        for month in sorted(months):
            if month in have:
                continue
            with c.begin():  # one process at a time; another may have made it meanwhile
                _lock_timeout(c, LOCK_TIMEOUT_MS)
                c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ENSURE_LOCK_ID})
                if c.scalar(text("SELECT to_regclass(:n)"), {"n": partition_name(table, month)}):
                    continue
                result.moved += create_month(c, table, month)
            result.created.append(partition_name(table, month))
    return result


def default_rows(c: Connection) -> dict[str, int]:
    """Rows in each ledger's default partition (normally none: see the module docstring)."""
    counts = {}
    for table in LEDGERS:
        default = f"{table}_{DEFAULT_SUFFIX}"
        if c.scalar(text("SELECT to_regclass(:d)"), {"d": default}) is not None:
            counts[table] = int(c.scalar(text(f"SELECT count(*) FROM {default}")) or 0)
    return counts


def droppable(c: Connection, table: str, cutoff: dt.datetime) -> list[Partition]:
    """Monthly partitions wholly before `cutoff` (retention drops them instead of deleting)."""
    if not is_partitioned(c, table):
        return []
    return [p for p in partitions(c, table) if p.end is not None and p.end <= cutoff]


def detached(c: Connection, table: str) -> list[Partition]:
    """Monthly tables of `table` attached to nothing: detached by a retention run that
    stopped before its DROP."""
    names = c.scalars(
        text(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND NOT relispartition "
            "AND relnamespace = current_schema()::regnamespace AND relname LIKE :pattern"
        ),
        {"pattern": f"{table}\\_%"},
    ).all()
    months = [m for m in (_NAME.match(n) for n in names) if m and m["y"]]
    return [
        Partition(m.string, start := dt.datetime(int(m["y"]), int(m["m"]), 1, tzinfo=dt.UTC),
                  month_start(start, 1))
        for m in sorted(months, key=lambda m: m.string)
    ]  # fmt: skip


def detach(c: Connection, table: str, partition: Partition) -> None:
    """Retention's first step, in the caller's transaction (lock_timeout: its): a short
    ACCESS EXCLUSIVE lock on the parent (CONCURRENTLY is refused beside a default partition).
    The table then stands alone; nothing writes to it."""
    c.execute(text(f"ALTER TABLE {table} DETACH PARTITION {partition.name}"))


def drop_detached(c: Connection, partition: Partition) -> int:
    """The last step: the detached month goes. Returns 1 (a partition dropped)."""
    c.execute(text(f"DROP TABLE {partition.name}"))
    return 1
