"""`python -m bench.retention`: retention apply at 1M rows, beside a writer on the same table.

For each scenario it creates a bench_* database, fills it with INSERT ... SELECT
generate_series (rows past the policy, and live rows a writer keeps changing), measures the
writer alone, then runs `retention apply` while the writer goes on, and reports the
writer's latency (its longest wait is the longest any lock of the run made it wait).

    uv run python -m bench.retention                      # every scenario at 1,000,000 rows
    uv run python -m bench.retention --rows 100000 --scenario audit_events
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2

from bench import dataset
from storage.engine import make_engine
from storage.lifecycle import retention
from storage.uow import Database

POLICIES = retention.Policies(
    deleted_article_days=30,
    revisions_per_article=50,
    revision_days=365,
    pipeline_days=180,
    usage_event_months=24,
    audit_event_days=730,
    competitor_article_days=180,
)
LIVE_ROWS = 10_000  # rows the writer updates, beside the ones retention deletes
USERS = 100

_USERS = f"""
INSERT INTO users (id, email, username, password_hash)
SELECT gen_random_uuid(), 'bench-' || g || '@bench.example', 'bench-' || g, 'x'
FROM generate_series(1, {USERS}) AS g
"""
# Users numbered 0..USERS-1, to join generated rows to by g % USERS (a hash join).
_NUMBERED = "(SELECT id, row_number() OVER (ORDER BY email) - 1 AS n FROM users) AS u"


@dataclass(frozen=True)
class Scenario:
    name: str
    fill: Callable[[int], list[str]]  # SQL that makes `rows` purgeable rows (and live ones)
    write: list[str]  # one writer operation: small statements in one transaction
    expected: Callable[[int], int]  # rows the policy should delete


def _audit_fill(rows: int) -> list[str]:
    return [
        "INSERT INTO audit_events (create_time, actor_kind, action, resource_type, resource_id,"
        " details) SELECT now() - interval '800 days' + g * interval '1 second', 'user',"
        " 'article.update', 'article', g::text, '{\"fields\": [\"title\"]}'"
        f" FROM generate_series(1, {rows}) AS g",
        "INSERT INTO audit_events (actor_kind, action, resource_type, resource_id)"
        f" SELECT 'user', 'article.create', 'article', g::text FROM generate_series(1, {LIVE_ROWS})"
        " AS g",
    ]


def _usage_fill(rows: int) -> list[str]:
    # Old events spread over 12 closed months, 25 to 36 months ago; then their rollups.
    return [
        _USERS,
        "INSERT INTO usage_events (user_id, service, model, cost_micros, input_tokens,"
        " output_tokens, api_calls, request_id, event_time, month)"
        " SELECT u.id, 'openai', 'gpt-4o', 1000 + g % 5000, 500, 200, 1, gen_random_uuid(), t,"
        " date_trunc('month', t AT TIME ZONE 'UTC')::date"
        f" FROM generate_series(1, {rows}) AS g"
        " CROSS JOIN LATERAL (SELECT date_trunc('month', now()) - interval '25 months'"
        " - (g % 12) * interval '1 month' + (g % 600) * interval '1 hour' AS t) AS tt"
        f" JOIN {_NUMBERED} ON u.n = g % {USERS}",
        "INSERT INTO usage_events (user_id, service, cost_micros, request_id, event_time, month)"
        " SELECT u.id, 'openai', 10, gen_random_uuid(), now(), date_trunc('month', now())::date"
        f" FROM generate_series(1, {LIVE_ROWS}) AS g JOIN {_NUMBERED} ON u.n = g % {USERS}",
        "INSERT INTO usage_monthly (user_id, month, cost_micros, input_tokens, output_tokens,"
        " api_calls, event_count) SELECT user_id, month, sum(cost_micros), sum(input_tokens),"
        " sum(output_tokens), sum(api_calls), count(*) FROM usage_events GROUP BY 1, 2",
    ]


def _articles_fill(rows: int) -> list[str]:
    # rows/10 soft-deleted articles with 10 revisions each (rows revisions in all), and
    # LIVE_ROWS live articles.
    articles = rows // 10
    insert = (
        "INSERT INTO articles (user_id, title, slug, content_markdown, content_html, word_count,"
        " reading_time_minutes, internal_links, external_links, content_hash, delete_time)"
        " SELECT u.id, '{kind} ' || g, '{kind}-' || g, 'Some words ' || g,"
        " '<p>Some words</p>', 3, 1, 0, 0, md5(g::text), {deleted}"
        " FROM generate_series(1, {n}) AS g"
        f" JOIN {_NUMBERED} ON u.n = g % {USERS}"
    )
    return [
        _USERS,
        insert.format(kind="gone", deleted="now() - interval '40 days'", n=articles),
        insert.format(kind="live", deleted="NULL", n=LIVE_ROWS),
        "INSERT INTO article_revisions (article_id, article_version, snapshot, create_time)"
        " SELECT a.id, r, jsonb_build_object('title', a.title), now() - interval '60 days'"
        " FROM articles AS a CROSS JOIN generate_series(1, 10) AS r"
        " WHERE a.delete_time IS NOT NULL",
    ]


SCENARIOS = {
    "audit_events": Scenario(
        "audit_events",
        _audit_fill,
        [
            "INSERT INTO audit_events (actor_kind, action, resource_type, resource_id)"
            " VALUES ('user', 'article.update', 'article', 'x')",
            "UPDATE audit_events SET request_id = md5(random()::text) WHERE id = (SELECT max(id)"
            " - (random() * 5000)::int FROM audit_events)",
        ],
        lambda rows: rows,
    ),
    "usage_events": Scenario(
        "usage_events",
        _usage_fill,
        [
            "SELECT * FROM blogstore_record_usage((SELECT id FROM users ORDER BY random() LIMIT"
            " 1), gen_random_uuid(), NULL, NULL, 'openai', 'gpt-4o', 'draft', 10, 5, 100, 0, 1,"
            " now(), date_trunc('month', now())::date, 1000000000000, 1000000, 'service', NULL,"
            " 'bench', '')",
            "UPDATE usage_events SET operation = 'edited' WHERE id = (SELECT id FROM usage_events"
            " WHERE event_time > now() - interval '1 day' ORDER BY random() LIMIT 1)",
        ],
        lambda rows: rows,
    ),
    "deleted_articles": Scenario(
        "deleted_articles",
        _articles_fill,
        [  # UpdateArticle's writes: the row (by an indexed title), and a revision
            "WITH a AS (UPDATE articles SET wp_status = md5(random()::text),"
            " version = version + 1 WHERE title = 'live ' || %(n)s RETURNING id, version)"
            " INSERT INTO article_revisions (article_id, article_version, snapshot)"
            " SELECT id, version, '{}' FROM a",
        ],
        lambda rows: rows // 10,
    ),
}


class Writer(threading.Thread):
    """Runs the scenario's writes back to back on a connection of its own, timing each;
    a watcher polls pg_stat_activity every 5 ms for the writer waiting on a lock."""

    def __init__(self, url: str, statements: list[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.statements = url, statements
        self.latencies: list[float] = []
        self.lock_waits: list[float] = []
        self.stop_event = threading.Event()
        self.pid = 0
        self.watcher = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        waiting_since: float | None = None
        with conn.cursor() as cur:
            while not self.stop_event.is_set():
                cur.execute(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                    (self.pid,),
                )
                row = cur.fetchone()
                now = time.perf_counter()
                if row and row[0] and waiting_since is None:
                    waiting_since = now
                elif not (row and row[0]) and waiting_since is not None:
                    self.lock_waits.append(now - waiting_since)
                    waiting_since = None
                time.sleep(0.005)
        conn.close()

    def run(self) -> None:
        conn = psycopg2.connect(self.url)
        self.pid = conn.get_backend_pid()
        self.watcher.start()
        try:
            with conn.cursor() as cur:
                while not self.stop_event.is_set():
                    started = time.perf_counter()
                    # A random live row, drawn here: random() in a WHERE clause is
                    # evaluated per row and keeps PostgreSQL from using an index.
                    n = random.randint(1, LIVE_ROWS)
                    for statement in self.statements:
                        cur.execute(statement, {"n": n})
                    conn.commit()
                    self.latencies.append(time.perf_counter() - started)
        finally:
            conn.close()

    def measure(self, seconds: float | None = None, until: Callable[[], None] | None = None):
        self.start()
        if until is not None:
            until()
        else:
            time.sleep(seconds or 0)
        self.stop_event.set()
        self.join()
        self.watcher.join()
        return self.latencies


def summary(writer: Writer) -> str:
    ms = sorted(x * 1000 for x in writer.latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    waits = writer.lock_waits
    return (
        f"{len(ms)} writes, p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms,"
        f" max {ms[-1]:.1f} ms; lock waits seen: {len(waits)}"
        + (f", longest {max(waits) * 1000:.0f} ms" if waits else "")
    )


def run(scenario: Scenario, rows: int, batch_size: int, keep: bool) -> None:
    url = dataset.url_for(f"bench_retention_{scenario.name}")
    dataset.create_database(url, replace=True)
    try:
        started = time.perf_counter()
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            for statement in scenario.fill(rows):
                cur.execute(statement)
            cur.execute("VACUUM ANALYZE")
        conn.close()
        print(
            f"\n## {scenario.name}: filled {rows:,} rows in {time.perf_counter() - started:.0f} s"
        )
        baseline = Writer(url, scenario.write)
        baseline.measure(seconds=10)
        print(f"writer alone (10 s): {summary(baseline)}")
        db = Database(make_engine(url, pool_size=2), statement_timeout_ms=60_000)
        report: list[retention.Report] = []

        def apply() -> None:
            report.append(retention.apply(db, POLICIES, batch_size=batch_size,
                                          lock_timeout_ms=200))  # fmt: skip

        started = time.perf_counter()
        during = Writer(url, scenario.write)
        during.measure(until=apply)
        elapsed = time.perf_counter() - started
        db.dispose()
        (result,) = [p for p in report[0].policies if p.name == scenario.name]
        print(
            f"retention apply: {result.rows:,} rows (+{sum(result.related.values()):,} related)"
            f" in {elapsed:.1f} s ({result.rows / elapsed:,.0f} rows/s), {result.batches} batches"
            f" of {batch_size}, longest batch {result.longest_batch_ms:.0f} ms,"
            f" errors: {result.error or 'none'}"
        )
        print(f"writer during apply: {summary(during)}")
        assert result.rows == scenario.expected(rows), (result.rows, scenario.expected(rows))
    finally:
        if not keep:
            dataset.drop_database(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.retention",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args(argv)
    for name in args.scenario or list(SCENARIOS):
        run(SCENARIOS[name], args.rows, args.batch_size, args.keep_db)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
