"""Metrics, tracing, the slow-query log and request correlation, through real servers.

In-process: a server whose telemetry records metrics (prometheus_client's in-memory registry)
and traces into the SDK's in-memory exporter. As a process: `blogstore serve --workers 2`,
scraped over HTTP, as Prometheus would.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import psutil
import pytest
from blogstore.v1 import (
    articles_pb2,
    articles_pb2_grpc,
    pipelines_pb2,
    pipelines_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from server.app import create_server
from server.telemetry import Telemetry
from storage.credentials import digest
from tests.support import PASSWORD, SERVICE_KEY, admin_engine, server_env, unique
from tests.test_process import admin_key as make_admin_key
from tests.test_process import blogstore, free_port, wait_serving

Code = grpc.StatusCode
SLOW_MS = 100


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def app(settings, spans):
    """The module's server: metrics on, traces to `spans`, slow statements from 100 ms."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(metrics=True, slow_query_ms=SLOW_MS, tracer_provider=provider)
    app = create_server(settings, telemetry)
    app.start()
    yield app
    app.stop(grace=0)
    provider.shutdown()


@pytest.fixture(scope="module")
def account(new_account):
    return new_account()


def bearer(token: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}"), *extra]


def new_article(target: str, token: str) -> articles_pb2.Article:
    with grpc.insecure_channel(target) as channel:
        stub = articles_pb2_grpc.ArticlesServiceStub(channel)
        return stub.CreateArticle(
            articles_pb2.CreateArticleRequest(article=articles_pb2.Article(title=unique("t"))),
            metadata=bearer(token),
        ).article


def header(metadata, key: str = "x-request-id") -> list[str]:
    return [value for k, value in metadata or () if k == key]


# -- request ids -------------------------------------------------------------------------------
def test_the_request_id_comes_back_on_success_and_on_error(target, account):
    with grpc.insecure_channel(target) as channel:
        stub = users_pb2_grpc.UsersServiceStub(channel)
        _, call = stub.GetCurrentUser.with_call(
            users_pb2.GetCurrentUserRequest(),
            metadata=bearer(account.token, ("x-request-id", "ok-1")),
        )
        assert header(call.trailing_metadata()) == ["ok-1"]
        _, call = stub.GetCurrentUser.with_call(
            users_pb2.GetCurrentUserRequest(), metadata=bearer(account.token)
        )
        (generated,) = header(call.trailing_metadata())
        assert len(generated) == 32
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetUser(users_pb2.GetUserRequest(id="nope"), metadata=bearer(account.token))
        assert caught.value.code() is Code.INVALID_ARGUMENT
        (request_id,) = header(caught.value.trailing_metadata())
        assert request_id in caught.value.trailing_metadata()[0].value.decode(errors="replace")
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetCurrentUser(
                users_pb2.GetCurrentUserRequest(), metadata=[("x-request-id", "e-2")]
            )
        assert caught.value.code() is Code.UNAUTHENTICATED
        assert header(caught.value.trailing_metadata()) == ["e-2"]


def test_a_stream_is_logged_when_it_ends_with_its_request_id(target, account, caplog):
    caplog.set_level(logging.INFO, logger="blogstore.access")
    with grpc.insecure_channel(target) as channel:
        stub = pipelines_pb2_grpc.PipelinesServiceStub(channel)
        pipeline = stub.CreatePipeline(
            pipelines_pb2.CreatePipelineRequest(), metadata=bearer(account.token)
        ).pipeline
        watched = bearer(account.token, ("x-request-id", "watch-ends"))
        stream = stub.WatchPipeline(
            pipelines_pb2.WatchPipelineRequest(id=pipeline.id), metadata=watched, timeout=30
        )
        next(stream)
        time.sleep(0.4)
        assert not _access(caplog, "watch-ends"), "logged before the stream ended"
        stub.CancelPipeline(
            pipelines_pb2.CancelPipelineRequest(id=pipeline.id), metadata=bearer(account.token)
        )
        assert [r.pipeline.state for r in stream] == [pipelines_pb2.PIPELINE_STATE_CANCELLED]
        assert header(stream.trailing_metadata()) == ["watch-ends"]
        (line,) = _wait_for_access(caplog, "watch-ends")
        assert line.code == "OK" and line.duration_ms >= 400

        # The client goes away: CANCELLED, when it happens.
        other = stub.CreatePipeline(
            pipelines_pb2.CreatePipelineRequest(), metadata=bearer(account.token)
        ).pipeline
        stream = stub.WatchPipeline(
            pipelines_pb2.WatchPipelineRequest(id=other.id),
            metadata=bearer(account.token, ("x-request-id", "watch-left")),
            timeout=30,
        )
        next(stream)
        time.sleep(0.2)
        stream.cancel()
        (line,) = _wait_for_access(caplog, "watch-left")
        assert line.code == "CANCELLED" and line.duration_ms >= 200

        # Refused before it starts: the error carries the id too.
        stream = stub.WatchPipeline(
            pipelines_pb2.WatchPipelineRequest(id=str(uuid.uuid4())),
            metadata=bearer(account.token, ("x-request-id", "watch-nf")),
            timeout=30,
        )
        with pytest.raises(grpc.RpcError) as caught:
            next(stream)
        assert caught.value.code() is Code.NOT_FOUND
        assert header(caught.value.trailing_metadata()) == ["watch-nf"]
        (line,) = _wait_for_access(caplog, "watch-nf")
        assert line.code == "NOT_FOUND"


def test_a_stream_ended_by_the_server_with_an_error_keeps_its_request_id(settings, account):
    app = create_server(settings)  # telemetry off: the request id does not depend on it
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pipelines_pb2_grpc.PipelinesServiceStub(channel)
            pipeline = stub.CreatePipeline(
                pipelines_pb2.CreatePipelineRequest(), metadata=bearer(account.token)
            ).pipeline
            stream = stub.WatchPipeline(
                pipelines_pb2.WatchPipelineRequest(id=pipeline.id),
                metadata=bearer(account.token, ("x-request-id", "watch-shutdown")),
                timeout=30,
            )
            next(stream)
            threading.Thread(target=app.stop, kwargs={"grace": 5}).start()
            with pytest.raises(grpc.RpcError) as caught:
                next(stream)
            assert caught.value.code() is Code.UNAVAILABLE
            metadata = caught.value.trailing_metadata()
            assert header(metadata) == ["watch-shutdown"]
            assert header(metadata, "grpc-status-details-bin")  # the error's details stay
    finally:
        app.stop(grace=0)


def _access(caplog, request_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "blogstore.access" and getattr(r, "request_id", None) == request_id
    ]


def _wait_for_access(caplog, request_id: str) -> list[logging.LogRecord]:
    deadline = time.monotonic() + 5
    while not _access(caplog, request_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    return _access(caplog, request_id)


# -- the slow-query log ----------------------------------------------------------------------------
def _slow_while_locked(database_url: str, table: str, call) -> None:
    """Run `call` while `table` refuses writes for longer than the slow-query threshold."""
    engine = admin_engine(database_url)
    with engine.connect() as connection:
        connection.execute(text("BEGIN"))
        connection.execute(text(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))
        worker = threading.Thread(target=call)
        worker.start()
        time.sleep(3 * SLOW_MS / 1000)
        connection.execute(text("ROLLBACK"))
        worker.join(timeout=10)
    engine.dispose()


def _slow_count(statement: str) -> float:
    return REGISTRY.get_sample_value("blogstore_slow_queries_total", {"statement": statement}) or 0


def test_slow_statements_are_logged_by_name_with_request_id_and_counted(
    app, target, account, database_url, caplog
):
    caplog.set_level(logging.WARNING, logger="blogstore.slow_query")
    marker = f"secret-{secrets.token_hex(4)}"
    with grpc.insecure_channel(target) as channel:
        usage = usage_pb2_grpc.UsageServiceStub(channel)
        articles = articles_pb2_grpc.ArticlesServiceStub(channel)
        before = _slow_count("blogstore_record_usage"), _slow_count("INSERT articles")
        # The hot path (Database.query): a prepared statement, named by its Prepared.name.
        _slow_while_locked(
            database_url,
            "usage_events",
            lambda: usage.RecordUsage(
                usage_pb2.RecordUsageRequest(
                    user_id=account.id,
                    request_id=str(uuid.uuid4()),
                    service=marker,
                    model=marker,
                    cost_micros=7,
                ),  # fmt: skip
                metadata=bearer(account.token, ("x-request-id", "slow-raw")),
            ),
        )
        # The ORM path: named by its verb and table.
        _slow_while_locked(
            database_url,
            "articles",
            lambda: articles.CreateArticle(
                articles_pb2.CreateArticleRequest(article=articles_pb2.Article(title=marker)),
                metadata=bearer(account.token, ("x-request-id", "slow-orm")),
            ),
        )
    records = {r.request_id: r for r in caplog.records if r.name == "blogstore.slow_query"}
    raw, orm = records["slow-raw"], records["slow-orm"]
    assert raw.statement == "blogstore_record_usage"
    assert raw.rpc_method == "/blogstore.v1.UsageService/RecordUsage"
    assert raw.duration_ms >= SLOW_MS
    assert orm.statement == "INSERT articles"
    assert orm.rpc_method == "/blogstore.v1.ArticlesService/CreateArticle"
    for record in (raw, orm):
        assert record.request_id in record.getMessage() and record.statement in record.getMessage()
        assert marker not in record.getMessage() and marker not in str(vars(record))
    after = _slow_count("blogstore_record_usage"), _slow_count("INSERT articles")
    assert after[0] >= before[0] + 1 and after[1] >= before[1] + 1


def test_slow_orm_statements_are_named_by_verb_and_table(
    app, target, account, database_url, caplog
):
    """CreateArticle's common case left the session (a Prepared labelled "INSERT articles"):
    a small batch still inserts through it, named from its SQL."""
    caplog.set_level(logging.WARNING, logger="blogstore.slow_query")
    marker = f"secret-{secrets.token_hex(4)}"
    with grpc.insecure_channel(target) as channel:
        articles = articles_pb2_grpc.ArticlesServiceStub(channel)
        _slow_while_locked(
            database_url,
            "articles",
            lambda: articles.BatchCreateArticles(
                articles_pb2.BatchCreateArticlesRequest(
                    articles=[articles_pb2.Article(title=f"{marker} {i}") for i in range(2)]
                ),
                metadata=bearer(account.token, ("x-request-id", "slow-batch")),
            ),
        )
    records = [r for r in caplog.records if r.name == "blogstore.slow_query"]
    batch = [r for r in records if r.request_id == "slow-batch"]
    assert [r.statement for r in batch] == ["INSERT articles"]
    assert batch[0].rpc_method == "/blogstore.v1.ArticlesService/BatchCreateArticles"
    assert marker not in batch[0].getMessage() and marker not in str(vars(batch[0]))


# -- tracing -----------------------------------------------------------------------------------
def _traceparent() -> tuple[int, int, tuple[str, str]]:
    trace_id, span_id = secrets.randbits(128) | 1, secrets.randbits(64) | 1
    return trace_id, span_id, ("traceparent", f"00-{trace_id:032x}-{span_id:016x}-01")


def _trace(spans: InMemorySpanExporter, trace_id: int, method: str) -> tuple:
    """The trace's one server span for `method`, and the spans under it."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ours = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
        servers = [s for s in ours if s.kind is SpanKind.SERVER]
        if servers:
            break
        time.sleep(0.02)
    (server,) = servers
    assert server.name == method
    below = [s for s in ours if s is not server]
    return server, below


def test_one_span_per_rpc_with_its_sql_spans_under_it_in_the_callers_trace(
    target, account, spans, caplog
):
    caplog.set_level(logging.INFO, logger="blogstore.access")
    article = new_article(target, account.token)
    with grpc.insecure_channel(target) as channel:
        stub = articles_pb2_grpc.ArticlesServiceStub(channel)
        # The hot path: credential and article, two prepared statements (a key never used
        # before: the credential cache has not seen it yet).
        fresh_key = account.stub.CreateApiKey(users_pb2.CreateApiKeyRequest(name="traced")).api_key
        trace_id, parent_id, traceparent = _traceparent()
        stub.GetArticle(
            articles_pb2.GetArticleRequest(id=article.id),
            metadata=bearer(fresh_key, traceparent, ("x-request-id", "traced-get")),
        )
        server, below = _trace(spans, trace_id, "/blogstore.v1.ArticlesService/GetArticle")
        assert server.parent.span_id == parent_id  # the caller's trace, continued
        assert {s.name for s in below} == {
            "blogstore_resolve_api_keys",
            "blogstore_get_article",
        }
        assert all(s.parent.span_id == server.context.span_id for s in below)
        assert all(s.kind is SpanKind.CLIENT for s in below)
        assert all("$1" in s.attributes["db.statement"] for s in below)
        (line,) = _wait_for_access(caplog, "traced-get")
        assert (
            line.trace_id == f"{trace_id:032x}" and f"trace_id={trace_id:032x}" in line.getMessage()
        )

        # The ORM path (a unit of work): SQLAlchemy's instrumentation. (UpdateArticle left it
        # in issue 17; PublishArticle is still a unit of work of ORM statements.)
        trace_id, _, traceparent = _traceparent()
        stub.PublishArticle(
            articles_pb2.PublishArticleRequest(id=article.id, etag=article.etag, wp_post_id=7),
            metadata=bearer(account.token, traceparent),
        )
        server, below = _trace(spans, trace_id, "/blogstore.v1.ArticlesService/PublishArticle")
        statements = [s for s in below if s.attributes.get("db.system") == "postgresql"]
        assert any(s.name.startswith("UPDATE") for s in statements)
        assert any(s.name.startswith("SELECT") for s in statements)
        assert all(s.parent.span_id == server.context.span_id for s in statements)

        # An error: the code on the span.
        trace_id, _, traceparent = _traceparent()
        with pytest.raises(grpc.RpcError):
            stub.GetArticle(
                articles_pb2.GetArticleRequest(id=str(uuid.uuid4())),
                metadata=bearer(account.token, traceparent),
            )
        server, _ = _trace(spans, trace_id, "/blogstore.v1.ArticlesService/GetArticle")
        assert server.attributes["rpc.grpc.status_code"] == Code.NOT_FOUND.value[0]


def test_a_watch_span_lasts_as_long_as_the_stream(target, account, spans):
    trace_id, parent_id, traceparent = _traceparent()
    with grpc.insecure_channel(target) as channel:
        stub = pipelines_pb2_grpc.PipelinesServiceStub(channel)
        pipeline = stub.CreatePipeline(
            pipelines_pb2.CreatePipelineRequest(), metadata=bearer(account.token)
        ).pipeline
        stream = stub.WatchPipeline(
            pipelines_pb2.WatchPipelineRequest(id=pipeline.id),
            metadata=bearer(account.token, traceparent),
            timeout=30,
        )
        next(stream)
        time.sleep(0.3)
        stream.cancel()
    server, below = _trace(spans, trace_id, "/blogstore.v1.PipelinesService/WatchPipeline")
    assert server.parent.span_id == parent_id
    assert (server.end_time - server.start_time) / 1e9 >= 0.3
    assert server.attributes["rpc.grpc.status_code"] == Code.CANCELLED.value[0]
    assert below and all(s.parent.span_id == server.context.span_id for s in below)


# -- metrics from `blogstore serve --workers 2` ------------------------------------------------
def scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(body)}


def value(metrics: dict, name: str, **labels: str) -> float:
    return sum(
        s.value
        for samples in metrics.values()
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_two_workers_are_scraped_as_one_server(database_url, tmp_path: Path):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_4242.db").write_bytes(b"left by an earlier run")
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLOGSTORE_", "OTEL_"))}
    env |= {
        **server_env(database_url),
        "BLOGSTORE_HOST": "127.0.0.1",
        "BLOGSTORE_METRICS_PORT": str(metrics_port),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "BLOGSTORE_DEFAULT_MONTHLY_ARTICLE_LIMIT": "1",
        "BLOGSTORE_SERVICE_KEYS": f"crawler:{SERVICE_KEY}",
        "BLOGSTORE_SHUTDOWN_GRACE_SECONDS": "5",
    }
    process = blogstore("serve", "--port", str(port), "--workers", "2", env=env)
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(line.decode() for line in process.stdout), daemon=True
    )
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while sum("blogstore listening" in line for line in lines) < 2:
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        wait_serving(port, process)
        assert not (metrics_dir / "counter_4242.db").exists()
        key = make_admin_key(database_url)
        target = f"127.0.0.1:{port}"
        calls = 40
        for _ in range(calls):  # fresh connections: SO_REUSEPORT spreads them over both workers
            with grpc.insecure_channel(target) as channel:
                users_pb2_grpc.UsersServiceStub(channel).GetCurrentUser(
                    users_pb2.GetCurrentUserRequest(), metadata=bearer(key), timeout=10
                )
        refusals = _refuse_in_every_way(target, key, database_url)
        time.sleep(1.5)  # the samplers' next round
        metrics = scrape(metrics_port)

        workers = {
            child.pid
            for child in psutil.Process(process.pid).children()
            if "spawn_main" in " ".join(child.cmdline())  # not multiprocessing's resource tracker
        }
        rpc = {"grpc_service": "blogstore.v1.UsersService", "grpc_method": "GetCurrentUser"}
        ok, refused = calls + refusals["ok"], refusals["refused"]
        assert value(metrics, "grpc_server_started_total", **rpc) == ok + refused
        assert value(metrics, "grpc_server_handled_total", grpc_code="OK", **rpc) == ok
        assert (
            value(metrics, "grpc_server_handled_total", grpc_code="Unauthenticated", **rpc)
            == refused
        )
        assert value(metrics, "grpc_server_handling_seconds_count", grpc_type="unary", **rpc) == (
            ok + refused
        )
        # Both workers served (each opened pool connections), and the sums span both.
        pools = {int(s.labels["pid"]): s.value for s in metrics["blogstore_db_pool_connections"]}
        assert set(pools) == workers and all(v > 0 for v in pools.values()), (pools, workers)
        assert {int(s.labels["pid"]) for s in metrics["blogstore_db_pool_size"]} == workers
        assert value(metrics, "blogstore_db_pool_wait_seconds_count") >= calls
        assert "blogstore_db_pool_timeouts" in metrics
        assert value(metrics, "blogstore_health_serving", service="") == 1
        assert value(metrics, "blogstore_health_serving", service="liveness") == 1
        assert value(metrics, "blogstore_health_serving", service="blogstore.v1.UsersService") == 1
        assert value(metrics, "blogstore_watchers_open") == 0
        assert value(metrics, "blogstore_batch_slots") == 2 * 2  # per worker, summed
        assert value(metrics, "blogstore_batch_slots_in_use") == 0
        assert value(metrics, "blogstore_database_size_bytes") > 1_000_000
        assert value(metrics, "blogstore_table_live_rows", table="users") >= 0
        for reason in ("missing", "malformed", "unknown", "revoked", "expired", "bad_login"):
            assert value(metrics, "blogstore_auth_failures_total", reason=reason) == 1, reason
        assert value(metrics, "blogstore_usage_limit_refusals_total", limit="articles") == 1

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, "".join(lines)
        assert list(metrics_dir.iterdir()) == [], "the values outlived the server"
    finally:
        if process.poll() is None:  # a failed test: the workers must not outlive it
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()


def _refuse_in_every_way(target: str, key: str, database_url: str) -> dict[str, int]:
    """One auth failure of each reason, and one usage-limit refusal; GetCurrentUser calls made."""
    refused = 0
    with grpc.insecure_channel(target) as channel:
        users = users_pb2_grpc.UsersServiceStub(channel)
        admin = users.GetCurrentUser(users_pb2.GetCurrentUserRequest(), metadata=bearer(key)).user
        revoked = users.CreateApiKey(
            users_pb2.CreateApiKeyRequest(name="gone"), metadata=bearer(key)
        )
        users.RevokeApiKey(users_pb2.RevokeApiKeyRequest(id=revoked.key.id), metadata=bearer(key))
        token = users.Authenticate(
            users_pb2.AuthenticateRequest(login=admin.username, password=PASSWORD)
        ).access_token
        engine = admin_engine(database_url)
        with engine.connect() as connection:
            connection.execute(
                text(
                    "UPDATE sessions SET expire_time = now() - interval '1 second' "
                    "WHERE secret_hash = :hash"
                ),
                {"hash": digest(token)},
            )
        engine.dispose()
        for metadata in (
            [],
            [("authorization", "Basic abc")],
            bearer("bsk_" + "x" * 40),
            bearer(revoked.api_key),
            bearer(token),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                users.GetCurrentUser(users_pb2.GetCurrentUserRequest(), metadata=metadata)
            assert caught.value.code() is Code.UNAUTHENTICATED
            refused += 1
        with pytest.raises(grpc.RpcError):
            users.Authenticate(users_pb2.AuthenticateRequest(login=admin.username, password="no!"))
        with pytest.raises(grpc.RpcError) as caught:
            usage_pb2_grpc.UsageServiceStub(channel).RecordUsage(
                usage_pb2.RecordUsageRequest(
                    user_id=admin.id,
                    request_id=str(uuid.uuid4()),
                    service="openai",
                    model="gpt-4o",
                    articles_generated=2,
                ),  # fmt: skip
                metadata=bearer(key),
            )
        assert caught.value.code() is Code.RESOURCE_EXHAUSTED
    return {"ok": 1, "refused": refused}


def test_queued_observations_add_up_as_observe_would():
    """RpcMetrics adds a second's calls up at once: the same series as one observe() each."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from server.telemetry.metrics import RPC_BUCKETS, _observe_all

    values = [0.0001, 0.0005, 0.0007, 0.003, 0.003, 2.0, 31.0, 0.25]
    one, each = CollectorRegistry(), CollectorRegistry()
    _observe_all(Histogram("h_seconds", "h", buckets=RPC_BUCKETS, registry=one), values)
    per_value = Histogram("h_seconds", "h", buckets=RPC_BUCKETS, registry=each)
    for v in values:
        per_value.observe(v)

    def exposed(registry):
        return [
            line
            for line in generate_latest(registry).decode().splitlines()
            if "created" not in line
        ]

    assert exposed(one) == exposed(each)
