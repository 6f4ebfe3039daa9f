"""Fair shares: one principal filling its share of watchers, batch slots or request threads
is refused (RESOURCE_EXHAUSTED + QuotaFailure naming the setting) while others keep theirs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import pytest
from blogstore.v1 import articles_pb2, articles_pb2_grpc, pipelines_pb2_grpc, users_pb2
from blogstore.v1 import pipelines_pb2 as pb
from sqlalchemy import create_engine, text

from server.config import Settings
from storage.engine import normalize_url
from tests.support import SERVICE_KEY, details_of, make_settings, unique

Code = grpc.StatusCode


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url,
        threads=4,
        max_calls_per_principal=2,
        max_calls_per_service=3,
        max_watchers=10,
        max_watchers_per_principal=2,
        max_concurrent_batches=2,
        max_batches_per_principal=1,
    )


@contextlib.contextmanager
def user_row_locked(database_url: str, user_id: str) -> Iterator[Callable[[], None]]:
    """The user's row locked FOR UPDATE: its inserts (their foreign-key check) wait, holding
    their calls open, until the returned release() (or the block's end)."""
    engine = create_engine(normalize_url(database_url))
    with engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(text("SELECT 1 FROM users WHERE id = :id FOR UPDATE"), {"id": user_id})
        try:
            yield transaction.rollback
        finally:
            if transaction.is_active:
                transaction.rollback()
    engine.dispose()


def wait_for_lock_waiters(database_url: str, n: int) -> None:
    engine = create_engine(normalize_url(database_url))
    deadline = time.monotonic() + 10
    try:
        with engine.connect() as connection:
            while time.monotonic() < deadline:
                waiting = connection.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
                if waiting >= n:
                    return
                time.sleep(0.02)
    finally:
        engine.dispose()
    raise AssertionError(f"{n} statements never waited on the test's lock")


def quota_subjects(error) -> set[str]:
    assert error.code is Code.RESOURCE_EXHAUSTED and error.reason == "QUOTA_EXCEEDED"
    return {subject for subject, _ in error.quota_violations}


def draft() -> articles_pb2.Article:
    return articles_pb2.Article(title=f"Article {unique()}", content_markdown="Some text.")


def test_default_shares_follow_the_process_limits():
    base = make_settings(
        "postgresql://x/y", max_calls_per_principal=0, max_calls_per_service=0, bcrypt_rounds=12
    )  # validated again by replace(): the production cost
    assert base.replace(threads=16).calls_per_principal == 8
    assert base.replace(threads=16).calls_per_service == 12
    assert base.replace(threads=1).calls_per_principal == 1
    assert base.replace(max_watchers=100).watchers_per_principal == 10
    assert base.replace(max_watchers=20).watchers_per_principal == 5


def test_one_user_filling_its_watcher_share_leaves_others_theirs(new_account, connect):
    a, b = new_account(), new_account()
    a_stub = pipelines_pb2_grpc.PipelinesServiceStub(connect(a.token))
    b_stub = pipelines_pb2_grpc.PipelinesServiceStub(connect(b.token))
    a_pipeline = a_stub.CreatePipeline(pb.CreatePipelineRequest()).pipeline
    b_pipeline = b_stub.CreatePipeline(pb.CreatePipelineRequest()).pipeline
    watch = pb.WatchPipelineRequest(id=a_pipeline.id)
    streams = [a_stub.WatchPipeline(watch, timeout=30) for _ in range(2)]
    for stream in streams:
        assert next(stream).pipeline.id == a_pipeline.id
    third = a_stub.WatchPipeline(watch, timeout=10)
    error = details_of(lambda: next(third))
    assert quota_subjects(error) == {"BLOGSTORE_MAX_WATCHERS_PER_PRINCIPAL"}
    other = b_stub.WatchPipeline(pb.WatchPipelineRequest(id=b_pipeline.id), timeout=30)
    assert next(other).pipeline.id == b_pipeline.id  # 3 of 10 open: B still watches
    streams[0].cancel()  # a cancellation gives the share back
    deadline = time.monotonic() + 5
    while True:
        again = a_stub.WatchPipeline(watch, timeout=30)
        try:
            assert next(again).pipeline.id == a_pipeline.id
            break
        except grpc.RpcError as refused:
            assert refused.code() is Code.RESOURCE_EXHAUSTED and time.monotonic() < deadline
            time.sleep(0.05)
    for stream in (streams[1], other, again):
        stream.cancel()


def test_one_user_filling_its_batch_share_leaves_others_theirs(new_account, connect, database_url):
    a, b = new_account(), new_account()
    a_articles = articles_pb2_grpc.ArticlesServiceStub(connect(a.token))
    b_articles = articles_pb2_grpc.ArticlesServiceStub(connect(b.token))

    def batch() -> articles_pb2.BatchCreateArticlesRequest:
        return articles_pb2.BatchCreateArticlesRequest(articles=[draft(), draft()])

    with user_row_locked(database_url, a.id) as release, ThreadPoolExecutor(1) as pool:
        held: Future = pool.submit(a_articles.BatchCreateArticles, batch(), timeout=20)
        wait_for_lock_waiters(database_url, 1)
        error = details_of(lambda: a_articles.BatchCreateArticles(batch(), timeout=10))
        assert quota_subjects(error) == {"BLOGSTORE_MAX_BATCHES_PER_PRINCIPAL"}
        assert len(b_articles.BatchCreateArticles(batch(), timeout=10).articles) == 2
        assert not held.done()
        release()
        assert len(held.result(timeout=20).articles) == 2
    # The share came back with the batch's end.
    assert len(a_articles.BatchCreateArticles(batch(), timeout=10).articles) == 2


def test_one_user_filling_its_call_share_leaves_others_theirs(new_account, connect, database_url):
    a, b = new_account(), new_account()
    a_articles = articles_pb2_grpc.ArticlesServiceStub(connect(a.token))
    create = articles_pb2.CreateArticleRequest
    from server.fairness import WAIT_SECONDS

    current = users_pb2.GetCurrentUserRequest()
    with user_row_locked(database_url, a.id) as release, ThreadPoolExecutor(3) as pool:
        held = [
            pool.submit(a_articles.CreateArticle, create(article=draft()), timeout=20)
            for _ in range(2)
        ]
        wait_for_lock_waiters(database_url, 2)
        # Both of A's calls hold a request thread: A's share (2 of 4) is full. A third waits
        # (WAIT_SECONDS) for one of them to end, then is refused.
        started = time.monotonic()
        error = details_of(lambda: a.stub.GetCurrentUser(current))
        assert quota_subjects(error) == {"BLOGSTORE_MAX_CALLS_PER_PRINCIPAL"}
        assert time.monotonic() - started >= WAIT_SECONDS * 0.9
        assert b.stub.GetCurrentUser(current).user.id == b.id
        waiting = pool.submit(a.stub.GetCurrentUser, current, timeout=10)
        time.sleep(WAIT_SECONDS / 4)
        release()  # A's calls end: the waiting one takes a freed place
        assert waiting.result(timeout=10).user.id == a.id
        assert all(f.result(timeout=20).article.id for f in held)
    # Released on the way out: A calls again.
    assert a.stub.GetCurrentUser(users_pb2.GetCurrentUserRequest()).user.id == a.id


def test_services_get_a_larger_share_of_their_own(new_account, connect, database_url):
    """A service's calls count apart from every user's, against its own, larger share."""
    a = new_account()
    service = articles_pb2_grpc.ArticlesServiceStub(connect(SERVICE_KEY))

    def create() -> articles_pb2.CreateArticleRequest:
        request = articles_pb2.CreateArticleRequest(article=draft())
        request.article.user_id = a.id
        return request

    with user_row_locked(database_url, a.id) as release, ThreadPoolExecutor(3) as pool:
        held = [pool.submit(service.CreateArticle, create(), timeout=20) for _ in range(3)]
        wait_for_lock_waiters(database_url, 3)  # 3: more than a user's share of 2
        error = details_of(lambda: service.CreateArticle(create(), timeout=10))
        assert quota_subjects(error) == {"BLOGSTORE_MAX_CALLS_PER_SERVICE"}
        release()
        assert all(f.result(timeout=20).article.id for f in held)
