"""Behind PgBouncer in transaction mode: no PREPARE, no session state, LISTEN past it.

The module's server goes through a PgBouncer of its own with ONE server connection per
database: every client (the request pool, the health check, the usage flush) takes turns on
it, so whatever session state one transaction left behind would meet the next one.
(The whole suite also runs through PgBouncer with BLOGSTORE_TEST_PGBOUNCER=1, .ci/run.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
from blogstore.v1 import articles_pb2, articles_pb2_grpc, pipelines_pb2, pipelines_pb2_grpc

from bench.pgbouncer import binary, running
from server.config import Settings
from storage.actors import SYSTEM, Caller
from storage.engine import behind_pooler, libpq_dsn, make_engine
from storage.migrate import PROJECT_ROOT
from storage.queries import get_article
from storage.uow import Database, Prepared
from tests.support import make_settings

pytestmark = pytest.mark.skipif(
    binary() is None, reason="needs Debian's pgbouncer (apt-get install pgbouncer)"
)


@pytest.fixture(scope="module")
def bouncer(pg_admin_url):
    with running(pg_admin_url, pool_size=1) as started:
        yield started


@pytest.fixture(scope="module")
def settings(database_url, bouncer) -> Settings:
    """The module's server: through the one-connection PgBouncer, LISTEN straight."""
    return make_settings(bouncer.url_for(database_url), direct_database_url=database_url)


def server_state(bouncer, database_url: str) -> tuple:
    """What the one server connection holds, asked through PgBouncer in a new transaction."""
    connection = psycopg2.connect(libpq_dsn(bouncer.url_for(database_url)))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_user, current_setting('statement_timeout'),"
                " coalesce(current_setting('blogstore.user_id', true), ''),"
                " coalesce(current_setting('blogstore.scope', true), ''),"
                " (SELECT count(*) FROM pg_prepared_statements),"
                " (SELECT count(*) FROM pg_class WHERE relpersistence = 't'),"
                " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                "  AND pid = pg_backend_pid())"
            )
            return cursor.fetchone()
    finally:
        connection.close()


def test_calls_leave_no_session_state_on_the_shared_server_connection(
    new_account, connect, bouncer, database_url
):
    account = new_account()
    articles = articles_pb2_grpc.ArticlesServiceStub(connect(account.token))
    created = [
        articles.CreateArticle(
            articles_pb2.CreateArticleRequest(
                article=articles_pb2.Article(title=f"t{i}", content_markdown=f"body words {i}")
            )
        ).article
        for i in range(3)
    ]
    # A batch large enough to go by COPY through the temporary stage table.
    batch = articles_pb2.BatchCreateArticlesRequest(
        articles=[
            articles_pb2.Article(title=f"b{i}", content_markdown=f"batch body {i}")
            for i in range(120)
        ]
    )
    assert len(articles.BatchCreateArticles(batch).articles) == 120
    for article in created:  # GetArticle: the hot statement, unprepared here
        got = articles.GetArticle(articles_pb2.GetArticleRequest(id=article.id)).article
        assert got.title == article.title
    listed = articles.ListArticles(articles_pb2.ListArticlesRequest(page_size=200)).articles
    assert len(listed) == 123
    assert server_state(bouncer, database_url) == ("postgres", "0", "", "", 0, 0, 0)


def test_watch_pipeline_hears_changes_through_the_direct_listen_connection(
    new_account, connect, app
):
    account = new_account()
    stub = pipelines_pb2_grpc.PipelinesServiceStub(connect(account.token))
    pipeline = stub.CreatePipeline(pipelines_pb2.CreatePipelineRequest()).pipeline
    assert app.listener.connected.wait(10)
    stream = stub.WatchPipeline(pipelines_pb2.WatchPipelineRequest(id=pipeline.id), timeout=30)
    received: list = []
    reader = threading.Thread(target=lambda: received.extend(r.pipeline for r in stream))
    reader.start()
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    stub.StartPipeline(pipelines_pb2.StartPipelineRequest(id=pipeline.id))
    stub.CancelPipeline(pipelines_pb2.CancelPipelineRequest(id=pipeline.id))
    reader.join(timeout=10)
    assert not reader.is_alive(), "the stream did not end at CANCELLED"
    assert [r.etag for r in received] == ['"1"', '"2"', '"3"']


def test_auto_prepares_only_where_no_pooler_stands_between(bouncer, database_url):
    caller = Caller(SYSTEM)
    direct = Database(make_engine(database_url, pool_size=1))
    pooled = Database(make_engine(bouncer.url_for(database_url), pool_size=1))
    forced_off = Database(make_engine(database_url, pool_size=1), prepare="off")
    try:
        for db in (direct, pooled, forced_off):
            for _ in range(3):
                assert get_article(db, caller, uuid.uuid4()) is None
        states = []
        for db in (direct, pooled, forced_off):
            connection = db.engine.raw_connection()
            states.append(connection.info["prepared_statements"])
            assert behind_pooler(connection.dbapi_connection) is (db is pooled)
            connection.close()
        assert states == [{"blogstore_get_article"}, None, None]
    finally:
        for db in (direct, pooled, forced_off):
            db.dispose()


def test_many_clients_share_few_server_connections_without_prepared_statement_errors(
    new_account, connect
):
    """Eight request threads on one server connection, GetArticle in a tight loop: with
    PREPARE a statement would meet a connection that lacks it (or has it twice)."""
    account = new_account()
    articles = articles_pb2_grpc.ArticlesServiceStub(connect(account.token))
    article = articles.CreateArticle(
        articles_pb2.CreateArticleRequest(article=articles_pb2.Article(title="hot"))
    ).article
    request = articles_pb2.GetArticleRequest(id=article.id)
    with ThreadPoolExecutor(8) as pool:
        titles = list(pool.map(lambda _: articles.GetArticle(request).article.title, range(400)))
    assert titles == ["hot"] * 400


def test_migrate_command_takes_the_direct_url(bouncer, database_url):
    """`blogstore migrate` holds a session advisory lock: past PgBouncer, to the direct URL."""
    env = {
        **os.environ,
        "DATABASE_URL": bouncer.url_for("postgresql://nobody@127.0.0.1:5432/nowhere"),
        "BLOGSTORE_DIRECT_DATABASE_URL": database_url,
    }
    result = subprocess.run(
        [sys.executable, "-m", "server", "migrate", "upgrade"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(at head)" in result.stdout


def test_settings_direct_url_defaults_to_database_url():
    assert Settings(database_url="postgresql://a@h/db").direct_url == "postgresql://a@h/db"
    both = Settings(database_url="postgresql://a@p/db", direct_database_url="postgresql://a@d/db")
    assert both.direct_url == "postgresql://a@d/db"
    assert Settings.from_env({"BLOGSTORE_DB_PREPARE": "OFF"}).db_prepare == "off"
    assert Settings().db_prepare == "auto"


def hot_statements() -> dict[str, Prepared]:
    """Every Prepared the storage modules hold (List/Search shapes: those built so far)."""
    from storage import queries, throttle
    from storage.repositories import competitor_jobs

    found: dict[str, Prepared] = {}
    for module in (queries, throttle, competitor_jobs):
        for value in vars(module).values():
            for item in value.values() if isinstance(value, dict) else [value]:
                if isinstance(item, Prepared):
                    found[item.name] = item
    return found


def test_every_hot_statement_plans_unprepared_with_its_declared_types(owner_engine):
    """EXPLAIN of each statement's unprepared form (values NULL, cast to the declared types)."""
    statements = hot_statements()
    assert {"blogstore_get_article", "blogstore_record_usage"} <= set(statements)
    connection = owner_engine.raw_connection()
    try:
        for statement in statements.values():
            sql = statement.unprepared_sql
            assert "$" not in sql.replace("$$", ""), statement.name
            body = sql.split("; ", 1)[1]  # after the SELECT set_config(...) prefix
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN " + body, dict.fromkeys(
                    [f"p{i}" for i in range(len(statement.params))]))  # fmt: skip
        connection.rollback()
    finally:
        connection.close()
