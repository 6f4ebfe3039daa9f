"""The receive limit is the largest legitimate request, and large calls cannot grow the server:
the credential is checked before the body is read, and memory of large refused calls is
given back (server/limits.py, server/decoding.py, server/memory.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from blogstore import client
from blogstore.v1 import articles_pb2, articles_pb2_grpc

from server.limits import MAX_BATCH_BYTES, largest_article_request_bytes, max_request_bytes
from storage import rules
from tests.support import server_env
from tests.test_process import admin_key, blogstore, free_port, stop, wait_serving

pytestmark = pytest.mark.serial  # timing-sensitive: CI runs it alone

CREATE_ARTICLE = "/blogstore.v1.ArticlesService/CreateArticle"
MIB = 1024 * 1024
RSS_SLACK_MIB = 50
PARALLEL = 16
BIG = 200 * MIB  # the test clients' own send limit: they must be able to send past the server's


def batch_of_exactly(size: int) -> articles_pb2.BatchCreateArticlesRequest:
    """A valid BatchCreateArticles whose encoding is `size` bytes (contents near their limit)."""
    per_article = rules.MAX_CONTENT_BYTES - 64 * 1024
    count = size // per_article + 1
    request = articles_pb2.BatchCreateArticlesRequest()
    for i in range(count):
        # Mostly blank lines: cheap to render and index, yet every byte is received and parsed.
        request.articles.add(title=f"Large {i}", content_markdown="# Big\n" + "\n" * per_article)
    last = request.articles[-1]
    for _ in range(5):  # length prefixes are varints: converge on the exact size
        excess = request.ByteSize() - size
        if not excess:
            return request
        last.content_markdown = last.content_markdown[: len(last.content_markdown) - excess]
    raise AssertionError(f"could not build a batch of {size} bytes")


def test_the_limit_is_derived_from_the_field_limits() -> None:
    single = largest_article_request_bytes()
    assert 2 * rules.MAX_CONTENT_BYTES < single < 2 * rules.MAX_CONTENT_BYTES + 100_000
    assert max_request_bytes() == max(MAX_BATCH_BYTES, single) == MAX_BATCH_BYTES
    assert max_request_bytes() < client.MAX_MESSAGE_BYTES  # no longer the blanket 64 MiB


def test_the_largest_legitimate_request_passes_and_one_byte_more_is_resource_exhausted(
    target, admin_key
) -> None:
    limit = max_request_bytes()
    batch = batch_of_exactly(limit)
    options = [("grpc.max_send_message_length", BIG), ("grpc.max_receive_message_length", BIG)]
    with grpc.insecure_channel(target, options=options) as channel:
        metadata = [("authorization", f"Bearer {admin_key}")]
        stub = articles_pb2_grpc.ArticlesServiceStub(channel)
        created = stub.BatchCreateArticles(batch, metadata=metadata, timeout=120)
        assert len(created.articles) == len(batch.articles)

        raw = channel.unary_unary("/blogstore.v1.ArticlesService/BatchCreateArticles")
        over = batch.SerializeToString() + b"\x00"  # a varint field 0: one byte more
        assert len(over) == limit + 1
        with pytest.raises(grpc.RpcError) as caught:
            raw(over, metadata=metadata, timeout=60)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture(scope="module")
def served(database_url: str) -> Iterator[tuple[int, int, str]]:
    """`blogstore serve` as a process of its own: (port, pid, an admin key)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOGSTORE_")}
    # All 16 parallel calls of one admin read their body (the default share is 8 at once).
    env.update(
        **server_env(database_url),
        BLOGSTORE_METRICS_PORT="0",
        BLOGSTORE_MAX_CALLS_PER_PRINCIPAL="16",
    )
    port = free_port()
    process = blogstore("serve", "--port", str(port), "--host", "127.0.0.1", env=env)
    try:
        wait_serving(port, process)
        # Warm: 16 request threads and their buffers exist before any baseline is read (the
        # first test otherwise counted the threads' first allocations as growth).
        parallel_calls(port, article_body(1024), [])
        yield port, process.pid, admin_key(database_url)
    finally:
        code, output = stop(process)
        assert "Traceback" not in output, output[-4000:]
        assert code == 0, output[-4000:]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def parallel_calls(port: int, body: bytes, metadata: list) -> set[grpc.StatusCode]:
    options = [("grpc.max_send_message_length", BIG)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call = channel.unary_unary(CREATE_ARTICLE)

        def one(_: int) -> grpc.StatusCode:
            try:
                call(body, metadata=metadata, timeout=120)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        with ThreadPoolExecutor(PARALLEL) as pool:
            return set(pool.map(one, range(PARALLEL)))


def settled_rss(pid: int, ceiling: float, timeout: float = 10.0) -> float:
    """The RSS once it is back under `ceiling` (or what it is after `timeout`)."""
    deadline = time.monotonic() + timeout
    while (rss := rss_mib(pid)) > ceiling and time.monotonic() < deadline:
        time.sleep(0.2)
    return rss


def article_body(size: int) -> bytes:
    article = articles_pb2.Article(title="big", content_markdown="x" * size)
    return articles_pb2.CreateArticleRequest(article=article).SerializeToString()


@pytest.mark.parametrize(
    ("size_mib", "credential", "expected"),
    [
        (60, False, grpc.StatusCode.UNAUTHENTICATED),  # over the limit, but no credential first
        (30, False, grpc.StatusCode.UNAUTHENTICATED),  # under the limit: the body is never read
        (60, True, grpc.StatusCode.RESOURCE_EXHAUSTED),  # over the limit
        (30, True, grpc.StatusCode.INVALID_ARGUMENT),  # read and parsed, then refused
    ],
)
def test_sixteen_parallel_large_calls_leave_rss_within_50_mib(
    served, size_mib: int, credential: bool, expected: grpc.StatusCode
) -> None:
    port, pid, key = served
    metadata = [("authorization", f"Bearer {key}")] if credential else []
    body = article_body(size_mib * MIB)
    before = rss_mib(pid)
    assert parallel_calls(port, body, metadata) == {expected}
    after = settled_rss(pid, before + RSS_SLACK_MIB)
    assert after <= before + RSS_SLACK_MIB, f"RSS {before:.0f} -> {after:.0f} MiB"
