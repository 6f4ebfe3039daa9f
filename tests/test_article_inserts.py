"""Article inserts off the ORM (issue 17): a batch round of COPY_MIN_ROWS or more goes through
COPY and a temporary table, CreateArticle through one statement; the bench's COPY limit."""

from __future__ import annotations

import uuid

import grpc
import psycopg2
import pytest
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc, users_pb2, users_pb2_grpc

from bench import copylimit
from storage.engine import libpq_dsn
from storage.repositories.article_inserts import COPY_MIN_ROWS
from tests.support import status_of, unique

Code = grpc.StatusCode
ODD = 'Tab\there, "quotes", back\\slash,\nnewline and {braces}'


def _tags(stub) -> dict[str, int]:
    page = stub.ListTags(pb.ListTagsRequest(page_size=100))
    return {t.name: t.article_count for t in page.tags}


def test_a_copied_batch_keeps_every_semantic(new_account, connect):
    account = new_account()
    stub = articles_pb2_grpc.ArticlesServiceStub(connect(account.token))
    taken = stub.CreateArticle(pb.CreateArticleRequest(article=pb.Article(
        title="Repeated Title", content_markdown="first"))).article  # fmt: skip
    count = COPY_MIN_ROWS + 30
    articles = [
        pb.Article(
            title="Repeated Title" if i % 3 == 0 else f"{ODD} {i}",
            content_markdown=f"# {ODD}\n\nBody {i} [x](https://e.org/{i})",
            tags=["Odd\ttag", 'q"t', "Shared"] if i % 2 else ["shared"],
            secondary_keywords=["back\\slash", "{}"], seo_score=i / 3,
            status=pb.ARTICLE_STATUS_PUBLISHED if i % 4 == 0 else pb.ARTICLE_STATUS_DRAFT,
            wp_post_id=1000 + i if i % 5 == 0 else 0,
        )
        for i in range(count)
    ]  # fmt: skip
    request = pb.BatchCreateArticlesRequest(
        articles=articles, request_id=str(uuid.uuid4()), view=pb.ARTICLE_VIEW_FULL
    )
    created = stub.BatchCreateArticles(request).articles
    assert [a.title for a in created] == [a.title for a in articles]
    slugs = [a.slug for a in created]
    assert len(set(slugs) | {taken.slug}) == count + 1  # derived slugs got free suffixes
    for sent, got in zip(articles, created, strict=True):
        full = stub.GetArticle(pb.GetArticleRequest(id=got.id)).article
        assert full.content_markdown == sent.content_markdown == got.content_markdown
        assert list(full.tags) == list(sent.tags)
        assert list(full.secondary_keywords) == list(sent.secondary_keywords)
        assert full.seo_score == pytest.approx(sent.seo_score) and full.etag == got.etag
        assert full.wp_post_id == sent.wp_post_id and full.external_links == 1
        assert full.HasField("publish_time") == (sent.status == pb.ARTICLE_STATUS_PUBLISHED)
        assert full.provenance.request_id and full.create_time == got.create_time
    assert _tags(stub)["Odd\ttag"] == count // 2 and _tags(stub)["Shared"] == count
    again = stub.BatchCreateArticles(request).articles  # a retry replays, writes nothing
    assert [a.id for a in again] == [a.id for a in created]
    assert _tags(stub)["Shared"] == count


def test_a_copied_batch_is_all_or_nothing(new_account, connect):
    account = new_account()
    stub = articles_pb2_grpc.ArticlesServiceStub(connect(account.token))
    title = f"Given {unique()}"
    first = stub.CreateArticle(pb.CreateArticleRequest(article=pb.Article(
        title=title, content_markdown="x", wp_post_id=77))).article  # fmt: skip
    batch = [pb.Article(title=f"{title} {i}", content_markdown="y") for i in range(COPY_MIN_ROWS)]
    with_slug = [*batch, pb.Article(title="Other", slug=first.slug, content_markdown="z")]
    call = stub.BatchCreateArticles
    assert status_of(lambda: call(pb.BatchCreateArticlesRequest(articles=with_slug))) is (
        Code.ALREADY_EXISTS
    )
    with_post = [*batch, pb.Article(title="Post", content_markdown="z", wp_post_id=77)]
    assert status_of(lambda: call(pb.BatchCreateArticlesRequest(articles=with_post))) is (
        Code.ALREADY_EXISTS
    )
    listed = stub.ListArticles(pb.ListArticlesRequest(page_size=100)).articles
    assert [a.id for a in listed] == [first.id]


def test_create_article_writes_its_audit_event_in_the_same_statement(new_account, connect):
    account = new_account()
    stub = articles_pb2_grpc.ArticlesServiceStub(connect(account.token))
    article = stub.CreateArticle(pb.CreateArticleRequest(article=pb.Article(
        title=f"Audited {unique()}", content_markdown="x"))).article  # fmt: skip
    events = (
        users_pb2_grpc.UsersServiceStub(connect(account.token))
        .ListAuditEvents(
            users_pb2.ListAuditEventsRequest(resource_type="article", resource_id=article.id)
        )
        .events
    )
    assert [e.action for e in events] == ["article.create"]
    assert events[0].details["slug"] == article.slug


def test_the_copy_limit_writes_only_its_own_tables(database_url, new_account):
    """bench/copylimit.py, BatchCreateArticles' limit in `bench run`, on a few rows."""
    database_url = libpq_dsn(database_url)
    account = new_account()
    params = {"user_ids": [account.id], "templates": [pb.Article(
        title="Limit template", content_markdown="# A\n\nbody", tags=["Limit"],
    ).SerializeToString()]}  # fmt: skip
    copylimit.create(database_url)
    try:
        rows = copylimit.Rows(params, 0, 20)
        db = copylimit.connect(database_url)
        with db.cursor() as cur:
            copylimit.copy_batch(cur, rows.batch())
            cur.execute("SELECT count(*), count(search_vector), count(rank_vector) FROM articles")
            assert cur.fetchone() == (20, 20, 20)
            cur.execute("SELECT article_count FROM article_tag_counts WHERE tag = 'Limit'")
            assert cur.fetchone() == (20,)
            cur.execute("SELECT count(*) FROM public.article_tag_counts WHERE tag = 'Limit'")
            assert cur.fetchone() == (0,)
        db.close()
    finally:
        copylimit.drop(database_url)
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT to_regnamespace('{copylimit.SCHEMA}')")
        assert cur.fetchone() == (None,)
    conn.close()
