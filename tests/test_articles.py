"""ArticlesService through the real server: CRUD, slugs, etags, revisions, batch, isolation."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc
from google.protobuf import field_mask_pb2

from tests.support import SERVICE_KEY, details_of, status_of, unique

Code = grpc.StatusCode


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def draft(title: str | None = None, **fields) -> pb.Article:
    return pb.Article(
        title=title or f"Article {unique()}", content_markdown=fields.pop("md", "Some text."),
        **fields,
    )  # fmt: skip


@pytest.fixture(scope="module")
def writer(new_account, connect):
    account = new_account()
    return account, articles_pb2_grpc.ArticlesServiceStub(connect(account.token))


@pytest.fixture
def fresh(new_account, connect):
    """A new user with an empty library, and their ArticlesService stub."""
    account = new_account()
    return account, articles_pb2_grpc.ArticlesServiceStub(connect(account.token))


def create(stub, article: pb.Article, **kwargs) -> pb.Article:
    return stub.CreateArticle(pb.CreateArticleRequest(article=article, **kwargs)).article


class TestCreate:
    def test_derives_fields_and_slug(self, writer):
        account, stub = writer
        article = create(
            stub,
            draft(
                "Les Misérables: A Review", md="# Review\n\nRead [this](https://x.org) now.",
                tags=["books"], seo_score=72.5,
            ),
        )  # fmt: skip
        assert article.slug.startswith("les-miserables-a-review")
        assert article.user_id == account.id
        assert article.status == pb.ARTICLE_STATUS_DRAFT
        assert (article.word_count, article.external_links, article.reading_time_minutes) == (
            4, 1, 1,
        )  # fmt: skip
        assert "<h1>Review</h1>" in article.content_html and len(article.content_hash) == 64
        assert article.etag and not article.HasField("publish_time")

    def test_derived_slug_gets_a_suffix_on_collision(self, fresh):
        _, stub = fresh
        slugs = [create(stub, draft("Same Title")).slug for _ in range(3)]
        assert slugs == ["same-title", "same-title-2", "same-title-3"]

    def test_given_slug_collision_is_already_exists(self, fresh):
        _, stub = fresh
        create(stub, draft(slug="taken"))
        error = details_of(lambda: create(stub, draft(slug="taken")))
        assert error.code is Code.ALREADY_EXISTS and "slug" in error.message

    def test_concurrent_creates_of_one_slug_one_wins(self, fresh):
        _, stub = fresh

        def attempt(_):
            try:
                create(stub, draft(slug="race"))
                return Code.OK
            except grpc.RpcError as error:
                return error.code()

        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(attempt, range(4)))
        assert codes.count(Code.OK) == 1 and codes.count(Code.ALREADY_EXISTS) == 3

    def test_concurrent_derived_slugs_all_succeed_distinctly(self, fresh):
        _, stub = fresh
        with ThreadPoolExecutor(4) as pool:
            slugs = list(pool.map(lambda _: create(stub, draft("Busy Title")).slug, range(8)))
        assert len(set(slugs)) == 8 and "busy-title" in slugs

    def test_concurrent_batches_with_crossing_slugs_both_succeed(self, fresh):
        """Two imports for one user whose derived slugs collide in opposite orders: rows go in
        sorted by slug, so the two never wait on each other in a cycle (a deadlock)."""
        _, stub = fresh
        titles = [f"Shared title {i}" for i in range(150)]

        def batch(order):
            articles = [draft(t) for t in order]
            return stub.BatchCreateArticles(pb.BatchCreateArticlesRequest(articles=articles))

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(batch, [titles, titles[::-1]] * 2))
        slugs = [a.slug for r in results for a in r.articles]
        assert len(slugs) == len(set(slugs)) == 600

    def test_request_id_makes_create_idempotent(self, fresh):
        _, stub = fresh
        request_id = str(uuid.uuid4())
        first = create(stub, draft("Once"), request_id=request_id)
        with ThreadPoolExecutor(4) as pool:
            again = list(
                pool.map(lambda _: create(stub, draft("Once"), request_id=request_id), range(4))
            )
        assert {a.id for a in again} == {first.id}
        listed = stub.ListArticles(pb.ListArticlesRequest()).articles
        assert [a.id for a in listed] == [first.id]

    def test_request_id_reused_for_another_article_is_invalid(self, fresh):
        _, stub = fresh
        request_id = str(uuid.uuid4())
        first = create(stub, draft("Once", md="First text."), request_id=request_id)
        for other in (draft("Twice", md="First text."), draft("Once", md="Other text.")):
            error = details_of(lambda o=other: create(stub, o, request_id=request_id))
            assert error.code is Code.INVALID_ARGUMENT and "request_id" in error.field_violations
        listed = stub.ListArticles(pb.ListArticlesRequest()).articles
        assert [a.id for a in listed] == [first.id]

    def test_batch_request_id_reused_for_other_articles_is_invalid(self, fresh):
        _, stub = fresh
        request_id = str(uuid.uuid4())
        titles = ["Kept 1", "Kept 2"]
        batch = pb.BatchCreateArticlesRequest(
            articles=[draft(t) for t in titles], request_id=request_id
        )
        created = stub.BatchCreateArticles(batch).articles
        assert [a.id for a in stub.BatchCreateArticles(batch).articles] == [a.id for a in created]
        changed = pb.BatchCreateArticlesRequest(
            articles=[draft("Kept 1"), draft("Changed 2")], request_id=request_id
        )
        error = details_of(lambda: stub.BatchCreateArticles(changed))
        assert error.code is Code.INVALID_ARGUMENT and "request_id" in error.field_violations
        listed = stub.ListArticles(pb.ListArticlesRequest()).articles
        assert sorted(a.title for a in listed) == titles

    @pytest.mark.parametrize(
        ("fields", "bad"),
        [
            ({"title": ""}, "article.title"),
            ({"title": "x" * 501}, "article.title"),
            ({"slug": "Not A Slug"}, "article.slug"),
            ({"slug": "double--dash"}, "article.slug"),
            ({"meta_title": "m" * 161}, "article.meta_title"),
            ({"meta_description": "m" * 321}, "article.meta_description"),
            ({"primary_keyword": "k" * 101}, "article.primary_keyword"),
            ({"seo_score": 101}, "article.seo_score"),
            ({"seo_score": float("nan")}, "article.seo_score"),
            ({"tags": [""]}, "article.tags"),
            ({"wp_url": "ftp://x"}, "article.wp_url"),
            ({"pipeline_id": "nope"}, "article.pipeline_id"),
            ({"status": 99}, "article.status"),
            ({"tags": ["ok", "nul\x00"]}, "article.tags[1]"),
            ({"content_markdown": "x" * (2 * 1024 * 1024 + 1)}, "article.content_markdown"),
        ],
    )
    def test_field_limits(self, writer, fields, bad):
        _, stub = writer
        article = pb.Article(title=fields.pop("title", "Valid title"), **fields)
        error = details_of(lambda: create(stub, article))
        assert error.code is Code.INVALID_ARGUMENT and bad in error.field_violations

    def test_one_megabyte_markdown_round_trips_byte_for_byte(self, writer):
        _, stub = writer
        line = 'Ünïcödé ✓ `code` <tag> & "quotes" \t tabs \r\n'
        markdown = (line * (1024 * 1024 // len(line.encode()) + 1))[: 1024 * 1024]
        created = create(stub, draft(md=markdown))
        got = stub.GetArticle(pb.GetArticleRequest(id=created.id)).article
        assert got.content_markdown == markdown
        assert got.content_markdown.encode() == markdown.encode()

    def test_service_must_name_an_existing_user(self, connect, writer):
        account, _ = writer
        service = articles_pb2_grpc.ArticlesServiceStub(connect(SERVICE_KEY))
        assert status_of(lambda: create(service, draft())) is Code.INVALID_ARGUMENT
        ghost = draft(user_id=str(uuid.uuid4()))
        assert status_of(lambda: create(service, ghost)) is Code.NOT_FOUND
        assert create(service, draft(user_id=account.id)).user_id == account.id


class TestGetAndList:
    def test_get_by_id_and_by_slug(self, writer):
        _, stub = writer
        article = create(stub, draft())
        assert stub.GetArticle(pb.GetArticleRequest(id=article.id)).article.slug == article.slug
        by_slug = stub.GetArticle(pb.GetArticleRequest(slug=article.slug)).article
        assert by_slug.id == article.id and by_slug.content_markdown
        basic = stub.GetArticle(pb.GetArticleRequest(id=article.id, view=pb.ARTICLE_VIEW_BASIC))
        assert not basic.article.content_markdown and basic.article.title == article.title

    def test_get_failures(self, writer):
        _, stub = writer
        missing = pb.GetArticleRequest(id=str(uuid.uuid4()))
        assert status_of(lambda: stub.GetArticle(missing)) is Code.NOT_FOUND
        assert status_of(lambda: stub.GetArticle(pb.GetArticleRequest())) is Code.INVALID_ARGUMENT
        nope = pb.GetArticleRequest(slug="no-such-slug")
        assert status_of(lambda: stub.GetArticle(nope)) is Code.NOT_FOUND

    def test_filters_views_and_orders(self, fresh):
        _, stub = fresh
        a = create(stub, draft("Bravo", tags=["x", "y"], primary_keyword="seo"))
        b = create(stub, draft("Alpha", tags=["y"]))
        c = create(stub, draft("Charlie", primary_keyword="seo"))
        stub.PublishArticle(pb.PublishArticleRequest(id=c.id, wp_post_id=1))
        listed = stub.ListArticles(pb.ListArticlesRequest())
        assert [x.id for x in listed.articles] == [c.id, b.id, a.id]
        assert all(not x.content_markdown for x in listed.articles)  # BASIC by default
        full = stub.ListArticles(pb.ListArticlesRequest(view=pb.ARTICLE_VIEW_FULL))
        assert all(x.content_markdown for x in full.articles)

        def ids(**filters):
            return [x.id for x in stub.ListArticles(pb.ListArticlesRequest(**filters)).articles]

        assert ids(tag="y") == [b.id, a.id]
        assert ids(primary_keyword="seo") == [c.id, a.id]
        assert ids(status=pb.ARTICLE_STATUS_PUBLISHED) == [c.id]
        assert ids(order_by="title") == [b.id, a.id, c.id]
        assert ids(order_by="publish_time desc")[0] == c.id
        assert ids(start_create_time=b.create_time) == [c.id, b.id]
        assert ids(end_create_time=b.create_time) == [a.id]
        published = stub.GetArticle(pb.GetArticleRequest(id=c.id)).article.publish_time
        assert ids(start_publish_time=published) == [c.id]
        assert ids(end_publish_time=published) == []
        assert ids(primary_keyword="k" * 300) == []  # longer than the column: no match, no error
        stub.DeleteArticle(pb.DeleteArticleRequest(id=a.id))
        assert ids() == [c.id, b.id]
        assert ids(show_deleted=True, tag="x") == [a.id]
        bad = pb.ListArticlesRequest(order_by="user_id; drop table articles")
        assert status_of(lambda: stub.ListArticles(bad)) is Code.INVALID_ARGUMENT

    @pytest.mark.parametrize("order_by", ["create_time desc", "publish_time desc", "title"])
    def test_every_order_pages_without_gaps(self, fresh, order_by):
        _, stub = fresh
        created = stub.BatchCreateArticles(
            pb.BatchCreateArticlesRequest(articles=[draft(f"T{i % 3}") for i in range(7)])
        ).articles
        for article in created[:3]:
            stub.PublishArticle(pb.PublishArticleRequest(id=article.id))
        seen, token = [], ""
        while True:
            page = stub.ListArticles(
                pb.ListArticlesRequest(order_by=order_by, page_size=2, page_token=token)
            )
            seen += [a.id for a in page.articles]
            if not (token := page.next_page_token):
                break
        assert sorted(seen) == sorted(a.id for a in created) and len(seen) == 7

    def test_token_is_bound_to_filters(self, fresh):
        _, stub = fresh
        for _ in range(3):
            create(stub, draft())
        token = stub.ListArticles(pb.ListArticlesRequest(page_size=1)).next_page_token
        other = pb.ListArticlesRequest(page_size=1, page_token=token, order_by="title")
        assert status_of(lambda: stub.ListArticles(other)) is Code.INVALID_ARGUMENT

    def test_paging_2500_while_inserting_sees_each_existing_article_once(self, fresh):
        _, stub = fresh
        existing: set[str] = set()
        for start in range(0, 2500, 500):
            batch = [draft(f"Bulk {start + i}", md="x") for i in range(500)]
            articles = stub.BatchCreateArticles(pb.BatchCreateArticlesRequest(articles=batch))
            existing |= {a.id for a in articles.articles}
        stop = threading.Event()
        inserted = []

        def insert_meanwhile():
            while not stop.is_set():
                inserted.append(create(stub, draft("Meanwhile", md="y")).id)

        inserter = threading.Thread(target=insert_meanwhile)
        inserter.start()
        seen: list[str] = []
        token = ""
        try:
            while True:
                page = stub.ListArticles(pb.ListArticlesRequest(page_size=100, page_token=token))
                seen += [a.id for a in page.articles]
                if not (token := page.next_page_token):
                    break
        finally:
            stop.set()
            inserter.join()
        assert inserted  # the writer really ran during the scan
        pre_existing = [i for i in seen if i in existing]
        assert len(pre_existing) == len(set(pre_existing)) == 2500


class TestUpdate:
    def test_update_recomputes_and_keeps_a_revision(self, writer):
        _, stub = writer
        article = create(stub, draft(md="one two"))
        updated = stub.UpdateArticle(
            pb.UpdateArticleRequest(
                article=pb.Article(id=article.id, content_markdown="one two three [l](/x)",
                                   etag=article.etag),
                update_mask=mask("content_markdown"),
            )
        ).article  # fmt: skip
        assert (updated.word_count, updated.internal_links) == (4, 1)
        assert updated.content_hash != article.content_hash and updated.etag != article.etag
        assert "three" in updated.content_html
        revisions = stub.ListArticleRevisions(
            pb.ListArticleRevisionsRequest(article_id=article.id)
        ).revisions
        assert [r.article.content_markdown for r in revisions] == ["one two"]

    def test_concurrent_updates_with_one_etag_one_wins(self, writer):
        _, stub = writer
        article = create(stub, draft())

        def attempt(i):
            try:
                stub.UpdateArticle(
                    pb.UpdateArticleRequest(
                        article=pb.Article(id=article.id, title=f"T{i}", etag=article.etag),
                        update_mask=mask("title"),
                    )
                )
                return Code.OK
            except grpc.RpcError as error:
                return error.code()

        with ThreadPoolExecutor(2) as pool:
            codes = list(pool.map(attempt, range(2)))
        assert sorted(codes, key=str) == sorted([Code.OK, Code.ABORTED], key=str)

    @pytest.mark.parametrize("path", ["word_count", "content_hash", "create_time", "user_id"])
    def test_output_only_paths_are_invalid(self, writer, path):
        _, stub = writer
        article = create(stub, draft())
        request = pb.UpdateArticleRequest(article=pb.Article(id=article.id), update_mask=mask(path))
        assert status_of(lambda: stub.UpdateArticle(request)) is Code.INVALID_ARGUMENT

    def test_publish_sets_status_time_and_wordpress_fields(self, writer):
        _, stub = writer
        article = create(stub, draft())
        published = stub.PublishArticle(
            pb.PublishArticleRequest(
                id=article.id, etag=article.etag, wp_post_id=42, wp_url="https://blog.x/p"
            )
        ).article
        assert published.status == pb.ARTICLE_STATUS_PUBLISHED
        assert published.HasField("publish_time") and published.wp_post_id == 42
        assert (published.wp_url, published.wp_status) == ("https://blog.x/p", "publish")
        stale = pb.PublishArticleRequest(id=article.id, etag=article.etag)
        assert status_of(lambda: stub.PublishArticle(stale)) is Code.ABORTED

    def test_restore_round_trip(self, writer):
        _, stub = writer
        article = create(stub, draft("Original", md="first version"))
        stub.UpdateArticle(
            pb.UpdateArticleRequest(
                article=pb.Article(id=article.id, title="Changed", content_markdown="second"),
                update_mask=mask("title", "content_markdown"),
            )
        )
        (revision,) = stub.ListArticleRevisions(
            pb.ListArticleRevisionsRequest(article_id=article.id)
        ).revisions
        assert revision.article.title == "Original"
        restored = stub.RestoreArticleRevision(
            pb.RestoreArticleRevisionRequest(article_id=article.id, revision_id=revision.id)
        ).article
        assert (restored.title, restored.content_markdown) == ("Original", "first version")
        assert restored.content_hash == article.content_hash
        revisions = stub.ListArticleRevisions(
            pb.ListArticleRevisionsRequest(article_id=article.id)
        ).revisions
        assert [r.article.title for r in revisions] == ["Changed", "Original"]  # newest first
        unknown = pb.RestoreArticleRevisionRequest(
            article_id=article.id, revision_id=str(uuid.uuid4())
        )
        assert status_of(lambda: stub.RestoreArticleRevision(unknown)) is Code.NOT_FOUND


class TestDelete:
    def test_soft_delete_hides_and_undelete_restores(self, fresh):
        _, stub = fresh
        article = create(stub, draft("Vanishing act", md="unique zebra words"))
        deleted = stub.DeleteArticle(pb.DeleteArticleRequest(id=article.id)).article
        assert deleted.HasField("delete_time")
        assert list(stub.ListArticles(pb.ListArticlesRequest()).articles) == []
        shown = stub.ListArticles(pb.ListArticlesRequest(show_deleted=True)).articles
        assert [a.id for a in shown] == [article.id]
        search = pb.SearchArticlesRequest(query="zebra")
        assert list(stub.SearchArticles(search).results) == []
        assert stub.GetArticle(pb.GetArticleRequest(id=article.id)).article.HasField("delete_time")
        restored = stub.UndeleteArticle(pb.UndeleteArticleRequest(id=article.id)).article
        assert not restored.HasField("delete_time")
        assert [r.article.id for r in stub.SearchArticles(search).results] == [article.id]
        live = pb.UndeleteArticleRequest(id=article.id)
        assert status_of(lambda: stub.UndeleteArticle(live)) is Code.FAILED_PRECONDITION

    def test_undelete_when_slug_was_taken_meanwhile(self, fresh):
        _, stub = fresh
        article = create(stub, draft(slug="reused"))
        stub.DeleteArticle(pb.DeleteArticleRequest(id=article.id))
        create(stub, draft(slug="reused"))
        request = pb.UndeleteArticleRequest(id=article.id)
        assert status_of(lambda: stub.UndeleteArticle(request)) is Code.ALREADY_EXISTS

    def test_delete_with_stale_etag(self, fresh):
        _, stub = fresh
        article = create(stub, draft())
        stub.UpdateArticle(
            pb.UpdateArticleRequest(
                article=pb.Article(id=article.id, title="new"), update_mask=mask("title")
            )
        )
        request = pb.DeleteArticleRequest(id=article.id, etag=article.etag)
        assert status_of(lambda: stub.DeleteArticle(request)) is Code.ABORTED


class TestBatch:
    def test_all_or_nothing_on_an_invalid_item(self, fresh):
        _, stub = fresh
        articles = [draft(), draft(), pb.Article(title=""), draft()]
        error = details_of(
            lambda: stub.BatchCreateArticles(pb.BatchCreateArticlesRequest(articles=articles))
        )
        assert error.code is Code.INVALID_ARGUMENT and "articles[2].title" in error.field_violations
        assert list(stub.ListArticles(pb.ListArticlesRequest()).articles) == []

    def test_all_or_nothing_on_a_taken_slug(self, fresh):
        _, stub = fresh
        create(stub, draft(slug="mine"))
        articles = [draft(), draft(slug="mine")]
        request = pb.BatchCreateArticlesRequest(articles=articles)
        assert status_of(lambda: stub.BatchCreateArticles(request)) is Code.ALREADY_EXISTS
        assert len(stub.ListArticles(pb.ListArticlesRequest()).articles) == 1

    def test_duplicate_slugs_inside_a_batch_are_named(self, fresh):
        _, stub = fresh
        request = pb.BatchCreateArticlesRequest(articles=[draft(slug="twin"), draft(slug="twin")])
        error = details_of(lambda: stub.BatchCreateArticles(request))
        assert error.code is Code.INVALID_ARGUMENT and "articles[1].slug" in error.field_violations

    def test_batch_order_slugs_limits_and_idempotency(self, fresh):
        _, stub = fresh
        titles = [f"Batch {i % 2}" for i in range(6)]
        request_id = str(uuid.uuid4())
        request = pb.BatchCreateArticlesRequest(
            articles=[draft(t) for t in titles], request_id=request_id
        )
        created = stub.BatchCreateArticles(request).articles
        assert [a.title for a in created] == titles
        assert len({a.slug for a in created}) == 6
        again = stub.BatchCreateArticles(request).articles
        assert [a.id for a in again] == [a.id for a in created]
        too_many = pb.BatchCreateArticlesRequest(articles=[draft() for _ in range(1001)])
        assert status_of(lambda: stub.BatchCreateArticles(too_many)) is Code.INVALID_ARGUMENT
        empty = pb.BatchCreateArticlesRequest()
        assert status_of(lambda: stub.BatchCreateArticles(empty)) is Code.INVALID_ARGUMENT


class TestIsolation:
    def test_a_user_cannot_see_change_search_or_delete_anothers_articles(
        self, new_account, connect
    ):
        a, b = new_account(), new_account()
        stub_a = articles_pb2_grpc.ArticlesServiceStub(connect(a.token))
        stub_b = articles_pb2_grpc.ArticlesServiceStub(connect(b.token))
        secret = create(stub_b, draft("Secret platypus plans", md="platypus"))
        calls = {
            "Get": lambda: stub_a.GetArticle(pb.GetArticleRequest(id=secret.id)),
            "GetBySlug": lambda: stub_a.GetArticle(
                pb.GetArticleRequest(user_id=b.id, slug=secret.slug)
            ),
            "List": lambda: stub_a.ListArticles(pb.ListArticlesRequest(user_id=b.id)),
            "Search": lambda: stub_a.SearchArticles(
                pb.SearchArticlesRequest(query="platypus", user_id=b.id)
            ),
            "Update": lambda: stub_a.UpdateArticle(
                pb.UpdateArticleRequest(
                    article=pb.Article(id=secret.id, title="pwned"), update_mask=mask("title")
                )
            ),
            "Publish": lambda: stub_a.PublishArticle(pb.PublishArticleRequest(id=secret.id)),
            "Delete": lambda: stub_a.DeleteArticle(pb.DeleteArticleRequest(id=secret.id)),
            "Revisions": lambda: stub_a.ListArticleRevisions(
                pb.ListArticleRevisionsRequest(article_id=secret.id)
            ),
            "CreateFor": lambda: stub_a.CreateArticle(
                pb.CreateArticleRequest(article=draft(user_id=b.id))
            ),
        }
        for name, call in calls.items():
            assert status_of(call) is Code.NOT_FOUND, name
        assert list(stub_a.SearchArticles(pb.SearchArticlesRequest(query="platypus")).results) == []
        untouched = stub_b.GetArticle(pb.GetArticleRequest(id=secret.id)).article
        assert untouched.title == secret.title and not untouched.HasField("delete_time")


def test_publishing_keeps_the_callers_html(writer):
    _, stub = writer
    article = create(stub, draft(md="[a](https://blog.x/one) text", content_html="<p>custom</p>"))
    assert article.external_links == 1
    published = stub.PublishArticle(
        pb.PublishArticleRequest(id=article.id, wp_url="https://blog.x/p")
    )
    assert published.article.internal_links == 1 and published.article.external_links == 0
    got = stub.GetArticle(pb.GetArticleRequest(id=article.id)).article
    assert got.content_html == "<p>custom</p>"


def test_batch_returns_basic_view_unless_full_is_asked(fresh):
    _, stub = fresh
    big = "word " * 200_000  # ~1 MB each: a FULL echo of five would pass the default 4 MB
    request = pb.BatchCreateArticlesRequest(articles=[draft(md=big) for _ in range(5)])
    basic = stub.BatchCreateArticles(request).articles
    assert all(not a.content_markdown and a.word_count == 200_000 for a in basic)
    request = pb.BatchCreateArticlesRequest(articles=[draft(md="small")], view=pb.ARTICLE_VIEW_FULL)
    assert stub.BatchCreateArticles(request).articles[0].content_markdown == "small"


def test_batch_imports_beyond_the_bound_wait_then_give_up(database_url, new_account):
    """With one slot, a second concurrent batch waits; past its deadline it is UNAVAILABLE."""
    import grpc as grpc_module
    from sqlalchemy import create_engine, text

    from server.app import create_server
    from tests.support import make_settings

    account = new_account()
    app = create_server(make_settings(database_url, max_concurrent_batches=1))
    app.start()
    blocker = create_engine(database_url).connect()
    try:
        channel = grpc_module.insecure_channel(f"127.0.0.1:{app.port}")
        stub = articles_pb2_grpc.ArticlesServiceStub(channel)
        metadata = [("authorization", f"Bearer {account.token}")]
        # The first batch takes the only slot, then waits on this lock until we release it.
        blocker.execute(text("LOCK TABLE articles IN SHARE MODE"))
        big = pb.BatchCreateArticlesRequest(articles=[draft(md="word " * 100) for _ in range(30)])
        first = stub.BatchCreateArticles.future(big, metadata=metadata, timeout=120)
        time.sleep(0.3)
        small = pb.BatchCreateArticlesRequest(articles=[draft()])
        error = details_of(lambda: stub.BatchCreateArticles(small, metadata=metadata, timeout=0.5))
        assert error.code in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED)
        blocker.rollback()
        assert len(first.result().articles) == 30
        assert len(stub.BatchCreateArticles(small, metadata=metadata, timeout=30).articles) == 1
        channel.close()
    finally:
        blocker.close()
        app.stop(grace=0)
