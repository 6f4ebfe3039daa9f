"""The bench dataset: users, pipelines, articles, usage events and (if served) competitors.

Articles go in through BatchCreateArticles (1000 per call; the articles/s rate is measured on
the RPC time alone) or, with `bulk`, straight into the table with COPY (derived fields from
`storage.content.derive`; PostgreSQL computes `search_vector`). Users, pipelines and usage
events always go in with COPY: users share one bcrypt hash of BENCH_PASSWORD (hashing one per
user would cost 0.25 s each), and the monthly and pipeline usage totals are rolled up in SQL,
so the ledger stays consistent with what RecordUsage would have written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg2

from bench.bulk import copy_rows as _copy
from bench.bulk import load_articles_bulk
from bench.corpus import Corpus
from storage.lifecycle.pgtools import one_row

# Where bench databases are created and dropped (any database of that server will do).
ADMIN_URL = os.environ.get(
    "BLOGSTORE_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BENCH_PASSWORD = "bench password 12345"
USERNAME = "bench-user-{:06d}"
SITE = "https://blog.example.com"
COPY_CHUNK = 2000
SERVICES = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude"),
    ("serpapi", ""),
    ("dataforseo", ""),
]


def url_for(database: str, admin_url: str = ADMIN_URL) -> str:
    """The URL of `database` on the server of `admin_url`."""
    from sqlalchemy import make_url

    return make_url(admin_url).set(database=database).render_as_string(hide_password=False)


def database_name(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).database or ""


def create_database(url: str, *, replace: bool = False, admin_url: str = ADMIN_URL) -> None:
    """Create the database of `url` (its name must start with bench_); migrate it to head."""
    name = _bench_name(url, "create")
    with _admin_cursor(admin_url) as cur:
        if replace:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if not cur.fetchone():
            cur.execute(f'CREATE DATABASE "{name}"')
    from bench.servers import REPO, server_command

    argv, cwd = server_command("migrate")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLOGSTORE_", "DATABASE_"))}
    env.update(DATABASE_URL=url, BLOGSTORE_LOG_LEVEL="WARNING")
    if cwd != REPO:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)  # noqa: S603


def drop_database(url: str, admin_url: str = ADMIN_URL) -> None:
    name = _bench_name(url, "drop")
    with _admin_cursor(admin_url) as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _bench_name(url: str, verb: str) -> str:
    """The database name of `url`; only bench_* (or <owner>_bench_*, for a shared server)
    databases are ever created or dropped."""
    name = database_name(url)
    if not (name.startswith("bench_") or "_bench_" in name):
        raise SystemExit(
            f"refusing to {verb} {name!r}: bench databases are named bench_* or <owner>_bench_*"
        )
    return name


@contextlib.contextmanager
def _admin_cursor(admin_url: str) -> Iterator[Any]:
    """A cursor on an autocommit connection to the admin database (for CREATE/DROP DATABASE)."""
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


@dataclass
class Plan:
    """Who owns each article to be loaded, and which pipeline (if any) produced it."""

    users: list[uuid.UUID]
    owners: list[uuid.UUID] = field(default_factory=list)
    pipelines: list[uuid.UUID | None] = field(default_factory=list)


def insert_users(conn: Any, count: int, start: int = 0) -> list[uuid.UUID]:
    import bcrypt

    password_hash = bcrypt.hashpw(BENCH_PASSWORD.encode(), bcrypt.gensalt(12)).decode()
    now = dt.datetime.now(dt.UTC)
    rows = []
    for i in range(start, start + count):
        name = USERNAME.format(i)
        rows.append(
            (
                uuid.uuid4(),
                f"{name}@bench.example",
                name,
                password_hash,
                now - dt.timedelta(days=400 - i % 365),
            )
        )
    with conn.cursor() as cur:
        _copy(cur, "users", ("id", "email", "username", "password_hash", "create_time"), rows)
    conn.commit()
    return [r[0] for r in rows]


def plan_articles(users: list[uuid.UUID], count: int, rng: random.Random) -> Plan:
    """Skewed ownership (a few prolific users); one article in five comes from a pipeline."""
    weights = [1 / (i + 1) ** 0.8 for i in range(len(users))]
    plan = Plan(users, owners=rng.choices(users, weights, k=count))
    plan.pipelines = [uuid.uuid4() if rng.random() < 0.2 else None for _ in range(count)]
    return plan


def insert_pipelines(conn: Any, plan: Plan, rng: random.Random) -> int:
    """One succeeded pipeline per planned link, plus ~5% pending/running/failed/cancelled."""
    now = dt.datetime.now(dt.UTC)
    rows = []
    extra = [
        (
            rng.choice(plan.users),
            uuid.uuid4(),
            rng.choice(("pending", "running", "failed", "cancelled")),
        )
        for _ in range(len(plan.owners) // 20)
    ]
    linked = [(o, p, "succeeded") for o, p in zip(plan.owners, plan.pipelines, strict=True) if p]
    for owner, pipeline_id, state in linked + extra:
        created = now - dt.timedelta(seconds=rng.randint(3600, 365 * 86400))
        started = created + dt.timedelta(seconds=rng.randint(1, 60)) if state != "pending" else None
        ended = (
            started + dt.timedelta(seconds=rng.randint(60, 900))
            if started and state in ("succeeded", "failed")
            else None
        )
        results = (
            {
                "outline": {"sections": rng.randint(4, 12)},
                "seo_optimization": {"score": rng.randint(40, 99)},
            }
            if state == "succeeded"
            else {}
        )
        rows.append(
            (
                pipeline_id,
                owner,
                state,
                {"topic": f"topic {rng.randint(1, 10**6)}"},
                results,
                json.dumps(["stage timed out"] if state == "failed" else []),
                "[]",
                started,
                ended,
                int((ended - started).total_seconds() * 1000) if ended and started else None,
                created,
                created,
            )
        )
    columns = (
        "id",
        "user_id",
        "state",
        "input_config",
        "stage_results",
        "errors",
        "warnings",
        "start_time",
        "end_time",
        "execution_time_ms",
        "create_time",
        "update_time",
    )
    with conn.cursor() as cur:
        for i in range(0, len(rows), COPY_CHUNK):
            _copy(cur, "pipelines", columns, rows[i : i + COPY_CHUNK])
    conn.commit()
    return len(rows)


def load_articles_grpc(
    target: str, key: str, corpus: Corpus, plan: Plan, rng: random.Random, batch: int = 1000
) -> dict:
    """BatchCreateArticles, `batch` per call; the rate counts RPC time only."""
    import grpc
    from blogstore.v1 import articles_pb2, articles_pb2_grpc

    from bench.scenarios import CHANNEL_OPTIONS

    status = {"published": 2, "draft": 1, "archived": 3}
    channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    stub = articles_pb2_grpc.ArticlesServiceStub(channel)
    rpc_seconds, started, calls = 0.0, time.perf_counter(), 0
    for first in range(0, len(plan.owners), batch):
        items = []
        for i in range(first, min(first + batch, len(plan.owners))):
            values = corpus.article(rng)
            values["status"] = status[values["status"]]
            pipeline = str(plan.pipelines[i] or "")
            items.append(
                articles_pb2.Article(user_id=str(plan.owners[i]), pipeline_id=pipeline, **values)
            )
        request = articles_pb2.BatchCreateArticlesRequest(articles=items)
        t0 = time.perf_counter()
        stub.BatchCreateArticles(
            request, metadata=(("authorization", f"Bearer {key}"),), timeout=300
        )
        rpc_seconds += time.perf_counter() - t0
        calls += 1
    channel.close()
    count = len(plan.owners)
    return {
        "path": "BatchCreateArticles",
        "articles": count,
        "calls": calls,
        "rpc_seconds": round(rpc_seconds, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "articles_per_s": round(count / rpc_seconds, 1),
    }


def insert_usage(conn: Any, plan: Plan, count: int, rng: random.Random) -> int:
    """Usage events over the last six months, rolled up into months and pipeline totals."""
    now = dt.datetime.now(dt.UTC)
    linked = [(o, p) for o, p in zip(plan.owners, plan.pipelines, strict=True) if p]
    rows = []
    for _ in range(count):
        if linked and rng.random() < 0.6:
            user, pipeline = rng.choice(linked)
        else:
            user, pipeline = rng.choice(plan.users), None
        service, model = rng.choice(SERVICES)
        tin, tout = (rng.randint(300, 6000), rng.randint(100, 3000)) if model else (0, 0)
        when = now - dt.timedelta(seconds=rng.randint(60, 180 * 86400))
        rows.append(
            (
                uuid.uuid4(),
                user,
                pipeline,
                service,
                model,
                "generate" if model else "query",
                tin,
                tout,
                tin * 2 + tout * 8 + 500,
                1 if rng.random() < 0.1 else 0,
                1,
                uuid.uuid4(),
                when,
                when.date().replace(day=1),
            )
        )
    columns = (
        "id",
        "user_id",
        "pipeline_id",
        "service",
        "model",
        "operation",
        "input_tokens",
        "output_tokens",
        "cost_micros",
        "articles_generated",
        "api_calls",
        "request_id",
        "event_time",
        "month",
    )
    totals = "cost_micros, articles_generated, input_tokens, output_tokens, api_calls"
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE bench_events (LIKE usage_events INCLUDING DEFAULTS) ON COMMIT DROP"
        )
        for i in range(0, len(rows), COPY_CHUNK):
            _copy(cur, "bench_events", columns, rows[i : i + COPY_CHUNK])
        cur.execute(
            f"INSERT INTO usage_events ({', '.join(columns)}) "
            f"SELECT {', '.join(columns)} FROM bench_events"
        )
        # Each event's request_id claim, as RecordUsage writes it. Without them the claims
        # table was analyzed empty, and with autovacuum off (this machine) a plan made while
        # it was small stayed while it grew (BENCHMARKS.md, RecordUsage round 7).
        cur.execute(
            "INSERT INTO usage_request_ids (user_id, request_id, event_id, event_time) "
            "SELECT user_id, request_id, id, event_time FROM bench_events"
        )
        sums = ", ".join(f"sum({c})" for c in totals.split(", "))
        updates = ", ".join(
            f"{c} = usage_monthly.{c} + excluded.{c}" for c in (*totals.split(", "), "event_count")
        )
        cur.execute(
            f"INSERT INTO usage_monthly (user_id, month, {totals}, event_count) "
            f"SELECT user_id, month, {sums}, count(*) FROM bench_events GROUP BY 1, 2 "
            f"ON CONFLICT (user_id, month) DO UPDATE SET {updates}"
        )
        cur.execute(
            "UPDATE pipelines p SET total_cost_micros = p.total_cost_micros + s.cost, "
            "llm_tokens_used = p.llm_tokens_used + s.tokens, "
            "api_calls_made = p.api_calls_made + s.calls FROM (SELECT pipeline_id, "
            "sum(cost_micros) cost, sum(input_tokens + output_tokens) tokens, sum(api_calls) calls "
            "FROM bench_events WHERE pipeline_id IS NOT NULL GROUP BY 1) s "
            "WHERE p.id = s.pipeline_id"
        )
    conn.commit()
    return count


def competitors_served() -> bool:
    """Whether the measured checkout serves CompetitorsService and our stubs know it."""
    import importlib.util

    from bench.servers import CHECKOUT

    app = CHECKOUT["dir"] / "server" / "app.py"
    stubs = importlib.util.find_spec("blogstore.v1.competitors_pb2") is not None
    return "CompetitorsService" in app.read_text() and stubs


def load_competitors(
    target: str, key: str, corpus: Corpus, plan: Plan, count: int, rng: random.Random
) -> int:
    import grpc
    from blogstore.v1 import competitors_pb2, competitors_pb2_grpc  # type: ignore[attr-defined]

    channel = grpc.insecure_channel(target)
    stub = competitors_pb2_grpc.CompetitorsServiceStub(channel)
    metadata = (("authorization", f"Bearer {key}"),)
    for i in range(count):
        word = corpus.words[rng.randrange(100, 20_000)]
        competitor = competitors_pb2.Competitor(
            user_id=str(rng.choice(plan.users)),
            domain=f"{word}-{i}.example.com",
            name=word.capitalize(),
            check_frequency_hours=rng.choice((6, 12, 24, 72)),
        )
        stub.CreateCompetitor(
            competitors_pb2.CreateCompetitorRequest(competitor=competitor), metadata=metadata
        )
    channel.close()
    return count


def finish(conn: Any) -> None:
    """Link succeeded pipelines to their articles; VACUUM ANALYZE for realistic plans."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE pipelines p SET article_id = a.id FROM articles a "
            "WHERE a.pipeline_id = p.id AND p.article_id IS NULL"
        )
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    conn.autocommit = False


def load(
    url: str,
    *,
    articles: int,
    users: int | None,
    bulk: bool,
    seed: int,
    server: Any = None,
    streams: int = 2,
    time_limit: float = 0,
) -> dict:
    """Load a dataset into a migrated database; `server` is a running bench server (or None
    with bulk and no competitors). Returns the figures of each step."""
    rng = random.Random(seed)
    corpus = Corpus(seed)
    users = users or max(10, articles // 100)
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM users WHERE username LIKE 'bench-user-%%'")
        existing = one_row(cur)[0]
    stats: dict[str, Any] = {"articles": articles, "seed": seed}
    t0 = time.perf_counter()
    user_ids = insert_users(conn, users, start=existing)
    plan = plan_articles(user_ids, articles, rng)
    stats["users"] = users
    stats["pipelines"] = insert_pipelines(conn, plan, rng)
    stats["setup_seconds"] = round(time.perf_counter() - t0, 2)
    if bulk:
        stats["load"] = load_articles_bulk(
            conn, plan, seed, url=url, streams=streams, time_limit=time_limit
        )
    else:
        stats["load"] = load_articles_grpc(server.target, server.key, corpus, plan, rng)
    t0 = time.perf_counter()
    stats["usage_events"] = insert_usage(conn, plan, articles // 2, rng)
    if competitors_served() and server is not None:
        stats["competitors"] = load_competitors(
            server.target, server.key, corpus, plan, min(10_000, max(1000, articles // 10)), rng
        )
    finish(conn)
    conn.close()
    stats["finish_seconds"] = round(time.perf_counter() - t0, 2)
    return stats
