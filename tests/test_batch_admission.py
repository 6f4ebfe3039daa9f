"""A BatchCreateArticles call waits for its batch slot before its body is read (issue 17).

Waiting after the read, each of 8 calls in flight held its ~10 MB request while 2 ran; now a
waiting call holds only what the transport buffered. Observable from outside: while the slot is
taken, a body that does not decode is not refused as INVALID_ARGUMENT (it was not read); it
waits like any batch. Once the slot frees, the same body is read and refused, and a valid
batch writes its rows and its one audit event.
"""

from __future__ import annotations

import time

import grpc
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc
from sqlalchemy import create_engine, text

from server.app import create_server
from server.services.articles import BATCH_METHOD
from tests.support import details_of, make_settings, unique

Code = grpc.StatusCode

UNDECODABLE = b"\x0a\xff\xff\xff\xff\x0f"  # field 1 (articles), a length past the end


def test_a_waiting_batch_is_read_only_once_it_has_its_slot(database_url, new_account):
    account = new_account()
    app = create_server(make_settings(database_url, max_concurrent_batches=1))
    app.start()
    blocker = create_engine(database_url).connect()
    channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        stub = articles_pb2_grpc.ArticlesServiceStub(channel)
        raw = channel.unary_unary(BATCH_METHOD)  # bytes in, bytes out
        metadata = [("authorization", f"Bearer {account.token}")]

        def batch(n: int) -> pb.BatchCreateArticlesRequest:
            tag = unique()
            return pb.BatchCreateArticlesRequest(
                articles=[
                    pb.Article(title=f"Admitted {tag} {i}", content_markdown="word " * 50)
                    for i in range(n)
                ]
            )

        # The first batch takes the only slot, then waits on this lock until it is released.
        blocker.execute(text("LOCK TABLE articles IN SHARE MODE"))
        first = stub.BatchCreateArticles.future(batch(30), metadata=metadata, timeout=120)
        time.sleep(0.5)
        started = time.monotonic()
        waiting = details_of(lambda: raw(UNDECODABLE, metadata=metadata, timeout=1.0))
        # Not INVALID_ARGUMENT: the body was never read; the call waited for the slot.
        assert waiting.code in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED), waiting
        assert time.monotonic() - started >= 0.9
        blocker.rollback()
        assert len(first.result().articles) == 30
        # With the slot free, the same body is read, and refused for what it is.
        refused = details_of(lambda: raw(UNDECODABLE, metadata=metadata, timeout=30))
        assert refused.code == Code.INVALID_ARGUMENT
        written = stub.BatchCreateArticles(batch(7), metadata=metadata, timeout=30).articles
        assert len(written) == 7
        ids = [a.id for a in written]
        with blocker.begin():
            rows = blocker.execute(
                text("SELECT count(*) FROM articles WHERE id = ANY(CAST(:ids AS uuid[]))"),
                {"ids": ids},
            ).scalar()
            events = blocker.execute(
                text(
                    "SELECT details->>'count' FROM audit_events "
                    "WHERE action = 'article.batch_create' AND resource_id = ANY(:ids)"
                ),
                {"ids": ids},
            ).all()
        assert rows == 7
        assert [e[0] for e in events] == ["7"]
    finally:
        channel.close()
        blocker.close()
        app.stop(grace=0)
