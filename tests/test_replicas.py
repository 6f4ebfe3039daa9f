"""Read replicas with read-your-writes, on a real streaming replica (tests/replica_support.py).

Reads without a consistency token go to the replica; a write's token sent back makes a read
wait for nothing: the replica serves it once it has replayed the write, else the primary does.
A stopped replica or one lagging past BLOGSTORE_REPLICA_MAX_LAG_MS costs no failed call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from blogstore import client
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc, pipelines_pb2, pipelines_pb2_grpc
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from server.app import App, create_server
from server.config import Settings
from server.telemetry import Telemetry
from tests.replica_support import ReplicatedClusters, replicated_clusters
from tests.support import make_settings, unique

TOKEN = client.CONSISTENCY_KEY
MAX_LAG_MS = 1000


@pytest.fixture(scope="module")
def clusters() -> Iterator[ReplicatedClusters]:
    with replicated_clusters() as pair:
        yield pair


@pytest.fixture(scope="module")
def database_url(clusters: ReplicatedClusters) -> str:
    return clusters.primary_url


@pytest.fixture(scope="module")
def settings(clusters: ReplicatedClusters) -> Settings:
    # Health's check limit follows its interval: 0.2 s fails on a loaded machine, whatever
    # the replica does, and health is about the primary here.
    return make_settings(
        clusters.primary_url, replica_urls=clusters.replica_url, replica_max_lag_ms=MAX_LAG_MS,
        health_interval_seconds=2,
        article_cache_entries=0,  # GetArticle by id would answer from memory: routing is tested
    )  # fmt: skip


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[App]:
    app = create_server(settings, telemetry=Telemetry(metrics=True))
    app.start()
    yield app
    app.stop(grace=0)


@pytest.fixture(scope="module")
def writer(new_account, target: str) -> Iterator[tuple]:
    """An account and its ArticlesService stub on a channel that sends no token by itself."""
    account = new_account()
    channel = client.connect(target, account.token, default_timeout=30, read_your_writes=False)
    yield account, articles_pb2_grpc.ArticlesServiceStub(channel)
    channel.close()


def replica_label(app: App) -> str:
    assert app.db.replicas is not None
    return app.db.replicas.replicas[0].name


def reads(app: App) -> tuple[float, float]:
    """(replica, primary): the blogstore_replica_reads_total series, sampled now."""
    app.telemetry._sampler.sample()  # pyright: ignore[reportOptionalMemberAccess] # (no 1 s wait)
    value = REGISTRY.get_sample_value
    replica = value("blogstore_replica_reads_total", {"replica": replica_label(app)}) or 0
    return replica, value("blogstore_replica_reads_total", {"replica": "primary"}) or 0


def wait_until(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def replica_fresh(app: App) -> bool:
    assert app.db.replicas is not None
    replica = app.db.replicas.replicas[0]
    return replica.up and replica.lag_seconds <= MAX_LAG_MS / 1000


def retitle(stub, article: pb.Article, title: str) -> tuple[pb.Article, str | None]:
    """UpdateArticle; the new article and the consistency token of the response."""
    response, call = stub.UpdateArticle.with_call(
        pb.UpdateArticleRequest(
            article=pb.Article(id=article.id, title=title), update_mask=FieldMask(paths=["title"])
        )
    )
    return response.article, dict(call.trailing_metadata()).get(TOKEN)


def test_reads_without_a_token_are_served_by_the_replica(app, writer, clusters):
    _, stub = writer
    article = stub.CreateArticle(
        pb.CreateArticleRequest(article=pb.Article(title=unique("t"), content_markdown="x"))
    ).article
    clusters.wait_caught_up()
    wait_until(lambda: replica_fresh(app))
    before = reads(app)
    for _ in range(50):
        got = stub.GetArticle(pb.GetArticleRequest(id=article.id))
        assert got.article.id == article.id
        listed = stub.ListArticles(pb.ListArticlesRequest(page_size=5))
        assert article.id in [a.id for a in listed.articles]
    after = reads(app)
    assert after[0] - before[0] == 100  # every Get and List on the replica
    assert after[1] - before[1] == 0


def test_a_write_answers_with_its_wal_position(app, writer, clusters):
    _, stub = writer
    response, call = stub.CreateArticle.with_call(
        pb.CreateArticleRequest(article=pb.Article(title=unique("t"), content_markdown="x"))
    )
    token = dict(call.trailing_metadata())[TOKEN]
    high, low = token.split("/")
    primary_now = clusters.primary.sql("SELECT pg_current_wal_insert_lsn()::text")[0][0]
    now_high, now_low = primary_now.split("/")
    assert (int(high, 16), int(low, 16)) <= (int(now_high, 16), int(now_low, 16))
    assert response.article.id


def test_a_read_with_the_token_always_sees_the_write(app, writer, connect):
    """1,000 writes, each read back at once through the client helper, which carries the
    newest token of its channel: no read is stale, wherever it was served."""
    account, _ = writer
    stub = articles_pb2_grpc.ArticlesServiceStub(connect(account.token))  # read_your_writes
    article = stub.CreateArticle(
        pb.CreateArticleRequest(article=pb.Article(title=unique("t"), content_markdown="x"))
    ).article
    before = reads(app)
    stale = 0
    for i in range(1000):
        title = f"version {i}"
        stub.UpdateArticle(
            pb.UpdateArticleRequest(
                article=pb.Article(id=article.id, title=title),
                update_mask=FieldMask(paths=["title"]),
            )
        )
        if stub.GetArticle(pb.GetArticleRequest(id=article.id)).article.title != title:
            stale += 1
    after = reads(app)
    on_replica, on_primary = after[0] - before[0], after[1] - before[1]
    print(f"read-after-write: {on_replica:.0f} on the replica, {on_primary:.0f} on the primary")
    assert stale == 0
    assert on_replica + on_primary == 1000


def test_the_token_keeps_reads_fresh_while_the_replica_lags(app, writer, clusters):
    """Replay paused: a read without a token is served stale by the replica until its lag
    passes the limit, then by the primary; a read with the token never is."""
    _, stub = writer
    article = stub.CreateArticle(
        pb.CreateArticleRequest(article=pb.Article(title="before", content_markdown="x"))
    ).article
    clusters.wait_caught_up()
    wait_until(lambda: replica_fresh(app))
    clusters.pause_replay()
    try:
        _, token = retitle(stub, article, "after")
        assert token is not None
        with_token = stub.GetArticle(pb.GetArticleRequest(id=article.id), metadata=[(TOKEN, token)])
        assert with_token.article.title == "after"  # the primary served it
        without = stub.GetArticle(pb.GetArticleRequest(id=article.id))
        assert without.article.title == "before"  # the replica, within the lag limit: stale
        wait_until(lambda: not replica_fresh(app), timeout=10)  # the lag passed the limit
        before = reads(app)
        without = stub.GetArticle(pb.GetArticleRequest(id=article.id))
        assert without.article.title == "after"  # the primary, now
        assert reads(app)[1] - before[1] == 1
        lag = REGISTRY.get_sample_value(
            "blogstore_replica_lag_seconds", {"replica": replica_label(app)}
        )
        assert lag is not None and lag > MAX_LAG_MS / 1000
    finally:
        clusters.resume_replay()
    wait_until(lambda: replica_fresh(app))


def test_a_stopped_replica_costs_no_failed_call(app, writer, clusters, new_account, connect):
    _, stub = writer
    article = stub.CreateArticle(
        pb.CreateArticleRequest(article=pb.Article(title=unique("t"), content_markdown="x"))
    ).article
    pipelines = pipelines_pb2_grpc.PipelinesServiceStub(connect(writer[0].token))
    clusters.wait_caught_up()
    wait_until(lambda: replica_fresh(app))
    stub.GetArticle(pb.GetArticleRequest(id=article.id))  # the replica's pool: live connections
    clusters.replica.stop()
    try:
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{app.port}"))
        for _ in range(100):  # the first ones meet the pool's dead connections
            got = stub.GetArticle(pb.GetArticleRequest(id=article.id), timeout=10)
            assert got.article.id == article.id
            stub.ListArticles(pb.ListArticlesRequest(page_size=3), timeout=10)
            pipelines.ListPipelines(pipelines_pb2.ListPipelinesRequest(), timeout=10)
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status  # pyright: ignore[reportAttributeAccessIssue]  # typeshed's grpc_health stubs lag grpc
            assert status == health_pb2.HealthCheckResponse.SERVING
        assert app.db.replicas is not None and not app.db.replicas.replicas[0].up
        before = reads(app)
        stub.GetArticle(pb.GetArticleRequest(id=article.id))
        assert reads(app)[1] - before[1] == 1  # on the primary
        assert (
            REGISTRY.get_sample_value("blogstore_replica_up", {"replica": replica_label(app)}) == 0
        )
    finally:
        clusters.replica.start()
    wait_until(lambda: replica_fresh(app), timeout=30)
    before = reads(app)

    def on_the_replica_again() -> bool:
        """A read may still meet a connection the stop killed (it then goes to the primary,
        and the replica counts as down until the poller sees it answer again)."""
        stub.GetArticle(pb.GetArticleRequest(id=article.id))
        return reads(app)[0] > before[0]

    wait_until(on_the_replica_again, timeout=30)


def test_a_token_that_is_not_one_is_invalid_argument(writer):
    _, stub = writer
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetArticle(pb.GetArticleRequest(id=unique()), metadata=[(TOKEN, "yesterday")])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert TOKEN in str(caught.value.details())
