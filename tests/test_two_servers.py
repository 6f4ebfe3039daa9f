"""Two `blogstore serve` processes on one database, as service replicas behind a load balancer:
a client's calls may land on either, and must behave as if there were one server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
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

from tests.support import SERVICE_KEY
from tests.test_process import admin_key, serving

Code = grpc.StatusCode


@pytest.fixture(scope="module")
def ports(database_url: str, tmp_path_factory) -> Iterator[list[int]]:
    secret = "shared-by-both-replicas"  # as the README asks of several copies
    with serving(
        database_url, tmp_path_factory.mktemp("servers"),
        BLOGSTORE_SERVICE_KEYS=f"crawler:{SERVICE_KEY}", BLOGSTORE_PAGE_TOKEN_SECRET=secret,
    ) as ports:  # fmt: skip
        yield ports


@pytest.fixture(scope="module")
def channels(ports: list[int]) -> Iterator[list[grpc.Channel]]:
    made = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in ports]
    yield made
    for channel in made:
        channel.close()


@pytest.fixture(scope="module")
def admin(database_url: str, channels) -> tuple[list[tuple[str, str]], str]:
    """The admin's metadata and user id: admins act on their own data like any user."""
    metadata = [("authorization", f"Bearer {admin_key(database_url)}")]
    me = users_pb2_grpc.UsersServiceStub(channels[0]).GetCurrentUser(
        users_pb2.GetCurrentUserRequest(), metadata=metadata, timeout=10
    )
    return metadata, me.user.id


def test_a_page_token_from_one_replica_pages_on_the_other(channels, admin):
    metadata, _ = admin
    a, b = (articles_pb2_grpc.ArticlesServiceStub(channel) for channel in channels)
    made = {
        a.CreateArticle(
            articles_pb2.CreateArticleRequest(
                article=articles_pb2.Article(title=f"Paged {i}", content_markdown=f"Body {i}.")
            ),
            metadata=metadata,
            timeout=10,
        ).article.id
        for i in range(5)
    }
    seen: list[str] = []
    token, stubs = "", [a, b]
    for turn in range(10):
        page = stubs[turn % 2].ListArticles(
            articles_pb2.ListArticlesRequest(page_size=2, page_token=token),
            metadata=metadata,
            timeout=10,
        )
        seen += [article.id for article in page.articles]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) and made <= set(seen)


def test_a_retry_on_the_other_replica_returns_the_first_result(channels, admin):
    metadata, user_id = admin
    request_id = str(uuid.uuid4())
    created = [
        articles_pb2_grpc.ArticlesServiceStub(channel).CreateArticle(
            articles_pb2.CreateArticleRequest(
                article=articles_pb2.Article(title="Once", content_markdown="Only once."),
                request_id=request_id,
            ),
            metadata=metadata,
            timeout=10,
        )
        for channel in channels
    ]
    assert created[0].article.id == created[1].article.id
    usage = usage_pb2.RecordUsageRequest(
        user_id=user_id, request_id=str(uuid.uuid4()), service="openai", cost_micros=7
    )
    events = [
        usage_pb2_grpc.UsageServiceStub(channel).RecordUsage(usage, metadata=metadata, timeout=10)
        for channel in channels
    ]
    assert events[0].event.id == events[1].event.id
    assert events[1].usage.event_count == events[0].usage.event_count


def test_a_watcher_on_one_replica_sees_a_change_made_on_the_other(channels, admin):
    metadata, _ = admin
    a, b = (pipelines_pb2_grpc.PipelinesServiceStub(channel) for channel in channels)
    pipeline = a.CreatePipeline(
        pipelines_pb2.CreatePipelineRequest(), metadata=metadata, timeout=10
    ).pipeline
    stream = b.WatchPipeline(
        pipelines_pb2.WatchPipelineRequest(id=pipeline.id), metadata=metadata, timeout=30
    )
    first = next(stream).pipeline
    assert first.state == pipelines_pb2.PIPELINE_STATE_PENDING
    a.StartPipeline(pipelines_pb2.StartPipelineRequest(id=pipeline.id), metadata=metadata)
    states = []
    for message in stream:
        states.append(message.pipeline.state)
        if message.pipeline.state == pipelines_pb2.PIPELINE_STATE_RUNNING:
            break
    stream.cancel()
    assert states[-1] == pipelines_pb2.PIPELINE_STATE_RUNNING


def test_a_limit_of_k_admits_exactly_k_across_both_replicas(channels, admin):
    metadata, _ = admin
    a = users_pb2_grpc.UsersServiceStub(channels[0])
    name = f"k{uuid.uuid4().hex[:10]}"
    user = a.CreateUser(
        users_pb2.CreateUserRequest(
            email=f"{name}@example.com", username=name, password="correct horse battery"
        ),
        metadata=metadata,
        timeout=30,
    ).user
    cost, k, calls = 1_000_003, 9, 24  # 12 per replica: within a service's call share
    usage = [usage_pb2_grpc.UsageServiceStub(channel) for channel in channels]
    usage[1].SetUsageLimits(
        usage_pb2.SetUsageLimitsRequest(
            limits=usage_pb2.UsageLimits(user_id=user.id, cost_limit_micros=cost * k)
        ),
        metadata=metadata,
        timeout=10,
    )
    service = [("authorization", f"Bearer {SERVICE_KEY}")]
    start = threading.Barrier(calls)

    def attempt(i: int) -> Code:
        request = usage_pb2.RecordUsageRequest(
            user_id=user.id, request_id=str(uuid.uuid4()), service="openai", cost_micros=cost
        )
        start.wait()
        try:
            usage[i % 2].RecordUsage(request, metadata=service, timeout=30)
            return Code.OK
        except grpc.RpcError as error:
            return error.code()

    with ThreadPoolExecutor(calls) as pool:
        codes = list(pool.map(attempt, range(calls)))
    assert codes.count(Code.OK) == k
    assert codes.count(Code.RESOURCE_EXHAUSTED) == calls - k
    month = (
        usage[0]
        .GetMonthlyUsage(
            usage_pb2.GetMonthlyUsageRequest(user_id=user.id), metadata=service, timeout=10
        )
        .usage
    )
    assert (month.cost_micros, month.event_count) == (cost * k, k)
