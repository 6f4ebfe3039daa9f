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
from server.convert.articles import MUTABLE, article_fields
from server.validation import Violations
from storage.actors import SYSTEM, Caller
from storage.engine import libpq_dsn, make_engine
from storage.repositories import article_create
from storage.repositories.article_inserts import COPY_MIN_ROWS
from storage.repositories.articles import NewArticle, with_derived
from storage.uow import Database
from tests.support import details_of, status_of, unique

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


def test_a_basic_batch_derives_each_row_as_it_is_written(new_account, connect):
    """A BASIC answer: rows rendered as COPY pulls them (no HTML held), the same derived
    columns as CreateArticle's, taken derived slugs retried in a later (re-derived) round,
    replayed and existing-content items answered per item."""
    account = new_account()
    stub = articles_pb2_grpc.ArticlesServiceStub(connect(account.token))
    one = stub.CreateArticle(pb.CreateArticleRequest(article=pb.Article(
        title="Taken", content_markdown="# Same\n\nSee [a](/in) and [b](https://e.org)."
    ))).article  # fmt: skip
    articles = [
        pb.Article(
            title="Taken" if i % 10 == 0 else f"Row {i}",
            content_markdown=one.content_markdown if i == 7 else f"# {ODD} {i}\n\n[x](/in/{i})",
            content_html="<p>mine</p>" if i == 3 else "",
        )
        for i in range(COPY_MIN_ROWS + 20)
    ]  # fmt: skip
    request = pb.BatchCreateArticlesRequest(
        articles=articles, request_id=str(uuid.uuid4()),
        if_content_exists=pb.IF_CONTENT_EXISTS_RETURN_EXISTING,
    )  # fmt: skip
    created = stub.BatchCreateArticles(request).articles
    assert created[7].id == one.id  # the owner's existing content, answered in its place
    assert not created[0].content_html and not created[0].content_markdown  # BASIC
    assert len({a.slug for a in created}) == len(created) and one.slug not in {
        a.slug for i, a in enumerate(created) if i != 7
    }
    for i, (sent, got) in enumerate(zip(articles, created, strict=True)):
        if i == 7:
            continue
        full = stub.GetArticle(pb.GetArticleRequest(id=got.id)).article
        alone = stub.CreateArticle(pb.CreateArticleRequest(article=pb.Article(
            title=f"Alone {i}", content_markdown=sent.content_markdown,
            content_html=sent.content_html))).article  # fmt: skip
        for name in ("word_count", "reading_time_minutes", "internal_links", "external_links",
                     "content_hash"):  # fmt: skip
            assert getattr(full, name) == getattr(alone, name) == getattr(got, name), (i, name)
        assert full.content_html == alone.content_html and full.internal_links == 1
        assert full.content_markdown == sent.content_markdown
    mine = stub.GetArticle(pb.GetArticleRequest(id=created[3].id)).article
    assert mine.content_html == "<p>mine</p>"  # given HTML is kept, not rendered over
    again = stub.BatchCreateArticles(request).articles  # a retry replays, writes nothing
    assert [a.id for a in again] == [a.id for a in created]
    assert [a.word_count for a in again] == [a.word_count for a in created]


def test_a_copy_sized_batch_with_invalid_items_names_each_and_writes_nothing(new_account, connect):
    account = new_account()
    stub = articles_pb2_grpc.ArticlesServiceStub(connect(account.token))
    articles = [pb.Article(title=f"Fine {i}", content_markdown="ok") for i in range(COPY_MIN_ROWS)]
    articles[5] = pb.Article(title="", content_markdown="no title")
    articles[40] = pb.Article(title="Bad slug", slug="Not A Slug", content_markdown="x")
    error = details_of(
        lambda: stub.BatchCreateArticles(pb.BatchCreateArticlesRequest(articles=articles))
    )
    assert error.code is Code.INVALID_ARGUMENT
    assert {"articles[5].title", "articles[40].slug"} <= set(error.field_violations)
    assert not any(f.startswith("articles[6]") for f in error.field_violations)
    assert list(stub.ListArticles(pb.ListArticlesRequest(page_size=10)).articles) == []


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


@pytest.mark.parametrize("prepare", ["on", "off"])
def test_create_now_writes_the_article_and_its_event_or_nothing(database_url, new_account, prepare):
    """CreateArticle's one round trip (storage/repositories/article_create.py), PREPAREd and
    as sent behind a pooler: the row and its audit event, or None with nothing written."""
    account = new_account()
    db = Database(make_engine(database_url, pool_size=1), prepare=prepare)
    caller = Caller(SYSTEM, request_id=f"create-now-{prepare}")

    def item(title: str, **extra) -> NewArticle:
        v = Violations()
        values = article_fields(
            v, "", pb.Article(title=title, content_markdown="# Hi\n\nx y"), set(MUTABLE)
        )
        v.raise_if_any()
        return NewArticle(
            with_derived({**values, "user_id": uuid.UUID(account.id), "status": "draft", **extra})
        )

    try:
        title = f"Now {unique()}"
        first = item(title)
        row = article_create.create_now(db, caller, first)
        assert (
            row is not None and row.id == first.id and row.word_count == first.values["word_count"]
        )
        assert row.slug == first.values["slug"] and row.slug
        again = item(title)  # the same derived slug: taken, so the general path's to answer
        assert article_create.create_now(db, caller, again) is None
        with psycopg2.connect(libpq_dsn(database_url)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT action, request_id, details->>'slug', user_id::text FROM audit_events "
                "WHERE resource_id IN (%s, %s)",
                (str(first.id), str(again.id)),
            )
            assert cur.fetchall() == [("article.create", caller.request_id, row.slug, account.id)]
            cur.execute("SELECT count(*) FROM articles WHERE id = %s", (str(again.id),))
            assert cur.fetchone() == (0,)
        conn.close()
    finally:
        db.dispose()
