"""`python -m bench.partitions`: the partitioned usage ledger against the plain one, side by side.

Builds two databases with the same generated usage events spread over the last 12 months:
`partitions_plain` at migration 0019 (one table, the unique (user_id, request_id) index) and
`partitions_part`, loaded at 0019 and then migrated in place by 0020 (timed: what an operator
waits for). Then, alternating between the two in rounds (the machine is shared and noisy):

- blogstore_record_usage() calls/s: the RecordUsage statement (28 arguments, as the server
  sends it) from THREADS connections, each call a new request_id in the current month;
- a month's cost report: the SQL of GetCostReport (storage/repositories/usage.py
  cost_report: sums and p50/p95 duration per group, and the total) for last month, for every
  user (an admin's report, grouped by model) and for one user (grouped by day).

    uv run python -m bench.partitions                  # 10,000,000 events
    uv run python -m bench.partitions --rows 1000000 --keep-db
    uv run python -m bench.partitions --direct       # the partitioned one loaded at head
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import threading
import time
import uuid

import psycopg2
from sqlalchemy import text

from storage import migrate
from storage.engine import make_engine
from storage.lifecycle import partitions

ADMIN_URL = os.environ.get(
    "BLOGSTORE_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PLAIN, PART = "partitions_plain", "partitions_part"
USERS = 1000
THREADS = 4
ANCHOR = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
MODELS = ("gpt-4o", "gpt-4o-mini", "claude", "gemini", "llama")

_USERS = f"""
INSERT INTO users (email, username, password_hash)
SELECT 'bench-' || g || '@bench.example', 'bench-' || g, 'x' FROM generate_series(1, {USERS}) g
"""
# event_time: spread evenly over the 365 days before ANCHOR (the same rows in both);
# users by g % USERS (a hash join).
_EVENTS = """
INSERT INTO usage_events (user_id, request_id, service, model, operation, input_tokens,
    output_tokens, cost_micros, api_calls, event_time, month, duration_ms, status)
SELECT u.id, gen_random_uuid(), 'openai', (ARRAY{models})[1 + g % 5], 'draft',
       100 + g % 900, 50 + g % 400, 1000 + g % 9000, 1, t,
       (date_trunc('month', t, 'UTC') AT TIME ZONE 'UTC')::date,
       100 + g % 2000, CASE WHEN g % 20 = 0 THEN 'error' ELSE 'ok' END
FROM generate_series({first}, {last}) g
JOIN (SELECT id, row_number() OVER (ORDER BY email) - 1 AS n FROM users) u ON u.n = g % {users},
LATERAL (SELECT '{anchor}'::timestamptz - interval '365 days' * (g::float8 / {rows}) AS t) AS at
"""
_RECORD = (
    "SELECT created FROM blogstore_record_usage(%s, %s, NULL, NULL, 'openai', 'gpt-4o', "
    "'draft', 100, 50, 1234, 0, 1, now(), date_trunc('month', now(), 'UTC')::date, "
    "1000000000000000, 1000000000, 'system', NULL, 'bench', '', 500, 'ok', '', '', '', NULL, "
    "NULL, NULL)"
)
_REPORT = """
SELECT {key} AS key, coalesce(sum(cost_micros), 0), coalesce(sum(input_tokens), 0),
       coalesce(sum(output_tokens), 0), count(*),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms)
FROM usage_events WHERE event_time >= %(start)s AND event_time < %(end)s {owner}
GROUP BY 1 ORDER BY 2 DESC, 1
"""
_TOTAL = (
    "SELECT coalesce(sum(cost_micros), 0) FROM usage_events "
    "WHERE event_time >= %(start)s AND event_time < %(end)s {owner}"
)


def url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def admin(sql: str) -> None:
    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _months_back(name: str) -> None:
    """At head: the partitions of the 13 months the generated events span."""
    engine = make_engine(url(name), pool_size=1)
    now = dt.datetime.now(dt.UTC)
    with engine.connect() as c:
        for back in range(13, 0, -1):
            month = partitions.month_start(now, -back)
            name = partitions.partition_name("usage_events", month)
            with c.begin():
                if not c.scalar(text("SELECT to_regclass(:n)"), {"n": name}):
                    partitions.create_month(c, "usage_events", month)
    engine.dispose()


def _name_indexes(name: str) -> None:
    engine = make_engine(url(name), pool_size=1)
    with engine.begin() as c:
        for p in partitions.partitions(c, "usage_events"):
            partitions.name_indexes(c, "usage_events", p.name)
    engine.dispose()


def load(name: str, rows: int, revision: str = "0019", chunk: int = 1_000_000) -> float:
    """Create `name` at `revision` and fill it; indexes and foreign keys are built after the
    rows (as a restore would), so the load is generate_series-fast. Returns seconds."""
    started = time.perf_counter()
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{name}"')
    migrate.upgrade(url(name), revision)
    if revision == "head":
        _months_back(name)
    conn = psycopg2.connect(url(name))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(_USERS)
        cur.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'usage_events' "
            "AND indexname <> 'pk_usage_events'"
        )
        indexes = cur.fetchall()
        cur.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'usage_events'::regclass AND contype IN ('f', 'p')"
        )
        constraints = cur.fetchall()
        for index, _ in indexes:
            cur.execute(f"DROP INDEX {index}")
        for constraint, _ in constraints:
            cur.execute(f"ALTER TABLE usage_events DROP CONSTRAINT {constraint}")
        models = "[" + ", ".join(f"'{m}'" for m in MODELS) + "]"
        for first in range(1, rows + 1, chunk):
            last = min(rows, first + chunk - 1)
            cur.execute(_EVENTS.format(models=models, first=first, last=last, users=USERS,
                                       anchor=ANCHOR.isoformat(),
                                       rows=rows))  # fmt: skip
            print(f"  {name}: {last:,} rows, {time.perf_counter() - started:.0f} s", flush=True)
        cur.execute("SET maintenance_work_mem = '256MB'")
        for constraint, definition in sorted(constraints, key=lambda c: "FOREIGN" in c[1]):
            cur.execute(f"ALTER TABLE usage_events ADD CONSTRAINT {constraint} {definition}")
        for _, definition in indexes:
            cur.execute(definition.replace(" ON ONLY ", " ON "))
        if revision == "head":  # the idempotency keys, as migration 0020 fills them
            cur.execute("ALTER TABLE usage_request_ids DROP CONSTRAINT pk_usage_request_ids")
            cur.execute(
                "INSERT INTO usage_request_ids (user_id, request_id, event_id, event_time) "
                "SELECT user_id, request_id, id, event_time FROM usage_events"
            )
            cur.execute(
                "ALTER TABLE usage_request_ids ADD CONSTRAINT pk_usage_request_ids "
                "PRIMARY KEY (user_id, request_id)"
            )
        cur.execute(
            "INSERT INTO usage_monthly (user_id, month, cost_micros, input_tokens, "
            "output_tokens, api_calls, event_count) SELECT user_id, month, sum(cost_micros), "
            "sum(input_tokens), sum(output_tokens), sum(api_calls), count(*) FROM usage_events "
            "GROUP BY 1, 2"
        )
        cur.execute("VACUUM ANALYZE")
    conn.close()
    if revision == "head":
        _name_indexes(name)
    return time.perf_counter() - started


def record_rate(name: str, seconds: float) -> float:
    """blogstore_record_usage() calls per second from THREADS connections."""
    conn = psycopg2.connect(url(name))
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM users")
        users = [r[0] for r in cur.fetchall()]
    conn.close()
    counts = [0] * THREADS
    stop = threading.Event()

    def work(i: int) -> None:
        c = psycopg2.connect(url(name))
        c.autocommit = True
        with c.cursor() as cur:
            while not stop.is_set():
                cur.execute(
                    _RECORD, (users[(i * 7919 + counts[i]) % len(users)], str(uuid.uuid4()))
                )
                assert cur.fetchone() == (True,)
                counts[i] += 1
        c.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def report_ms(name: str, owner: bool) -> tuple[float, list]:
    """One month's cost report (rows and total, as GetCostReport runs them): ms and rows."""
    now = dt.datetime.now(dt.UTC)
    params: dict[str, object] = {
        "start": partitions.month_start(now, -1),
        "end": partitions.month_start(now),
    }
    conn = psycopg2.connect(url(name))
    with conn.cursor() as cur:
        where = ""
        if owner:
            cur.execute("SELECT id FROM users ORDER BY email LIMIT 1")
            (params["user"],) = cur.fetchone() or (None,)
            where = "AND user_id = %(user)s"
        key = "to_char(timezone('UTC', event_time), 'YYYY-MM-DD')" if owner else "model"
        cur.execute(_TOTAL.format(owner=where), params)  # a warm connection, as a pool's
        started = time.perf_counter()
        cur.execute(_REPORT.format(key=key, owner=where), params)
        rows = cur.fetchall()
        cur.execute(_TOTAL.format(owner=where), params)
        rows.append(cur.fetchone() or ())
        elapsed = (time.perf_counter() - started) * 1000
    conn.close()
    return elapsed, rows


def uptime() -> str:
    return subprocess.run(["/usr/bin/uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.partitions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per RecordUsage round")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="load the partitioned database at head (months created first) instead of "
        "converting it with migration 0020: faster, and the migration is not timed",
    )
    parser.add_argument("--keep-plain", action="store_true", help="reuse a kept plain one")
    parser.add_argument("--reuse", action="store_true", help="measure the kept databases")
    args = parser.parse_args(argv)
    try:
        if not args.reuse:
            print(f"loading {args.rows:,} usage events into each database; {uptime()}")
            if not args.keep_plain:
                print(f"{PLAIN}: loaded in {load(PLAIN, args.rows):.0f} s")
            if args.direct:
                print(f"{PART}: loaded at head in {load(PART, args.rows, 'head'):.0f} s")
            else:
                print(f"{PART}: loaded in {load(PART, args.rows):.0f} s")
                started = time.perf_counter()
                migrate.upgrade(url(PART))
                print(f"{PART}: migration 0020 (in place) {time.perf_counter() - started:.0f} s")
                conn = psycopg2.connect(url(PART))
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("VACUUM ANALYZE")
                conn.close()
        rates: dict[str, list[float]] = {PLAIN: [], PART: []}
        reports: dict[tuple[str, bool], list[float]] = {}
        answers: dict[tuple[str, bool], list] = {}
        for round_ in range(args.rounds):
            order = (PLAIN, PART) if round_ % 2 == 0 else (PART, PLAIN)
            for name in order:
                for owner in (False, True):
                    ms, rows = report_ms(name, owner)
                    reports.setdefault((name, owner), []).append(ms)
                    answers[(name, owner)] = rows
                rates[name].append(record_rate(name, args.seconds))
            done = ", ".join(f"{n} {rates[n][-1]:.0f} calls/s" for n in (PLAIN, PART))
            print(f"round {round_ + 1}: {done}; {uptime()}", flush=True)
        for owner in (False, True):
            assert answers[(PLAIN, owner)] == answers[(PART, owner)], "the reports differ"
        print(f"\n{args.rows:,} events, {THREADS} connections, {uptime()}")
        print("| measure | plain | partitioned | partitioned / plain |\n|---|---|---|---|")
        plain, part = statistics.median(rates[PLAIN]), statistics.median(rates[PART])
        print(f"| blogstore_record_usage() calls/s (median of {args.rounds}) | {plain:.0f} | "
              f"{part:.0f} | {part / plain:.2f} |")  # fmt: skip
        for owner, label in ((False, "all users, by model"), (True, "one user, by day")):
            a = statistics.median(reports[(PLAIN, owner)])
            b = statistics.median(reports[(PART, owner)])
            print(f"| last month's cost report, {label} (ms, median) | {a:.0f} | {b:.0f} | "
                  f"{b / a:.2f} |")  # fmt: skip
    finally:
        if not args.keep_db:
            for name in (PLAIN, PART):
                admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
