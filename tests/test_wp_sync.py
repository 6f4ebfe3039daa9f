"""WordPress sync state through the real server: wp_post_id unique per user among live
articles, the push PublishArticle records (wp_synced_version, wp_modified_time), the
needs_sync list and its index, and migration 0015's refusal of existing duplicates."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import grpc
import pytest
from alembic.script import ScriptDirectory
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from sqlalchemy import create_engine, text

from storage import migrate
from storage.engine import make_engine, normalize_url
from storage.lifecycle.legacy_import import import_legacy
from storage.repositories.article_reads import ArticleFilters, list_statement, list_values
from storage.uow import Database
from tests import support
from tests.support import SERVICE_KEY, details_of, unique
from tests.test_rls_plans import plan_as_user

Code = grpc.StatusCode
MIGRATION = "0015"


@pytest.fixture
def fresh(new_account, connect):
    account = new_account()
    return account, articles_pb2_grpc.ArticlesServiceStub(connect(account.token))


def create(stub, **fields) -> pb.Article:
    article = pb.Article(title=f"Post {unique()}", content_markdown="Words.", **fields)
    return stub.CreateArticle(pb.CreateArticleRequest(article=article)).article


def publish(stub, article: pb.Article, post: int = 0, **kwargs) -> pb.Article:
    request = pb.PublishArticleRequest(id=article.id, etag=article.etag, wp_post_id=post,
                                       wp_url="https://blog.example.com/p", **kwargs)  # fmt: skip
    return stub.PublishArticle(request).article


def update(stub, article: pb.Article, **fields) -> pb.Article:
    changed = pb.Article(id=article.id, etag=article.etag, **fields)
    mask = field_mask_pb2.FieldMask(paths=list(fields))
    return stub.UpdateArticle(pb.UpdateArticleRequest(article=changed, update_mask=mask)).article


def version(article: pb.Article) -> int:
    return int(article.etag.strip('"'))


def needing_sync(stub, **kwargs) -> list[str]:
    request = pb.ListArticlesRequest(needs_sync=True, page_size=1000, **kwargs)
    return [a.id for a in stub.ListArticles(request).articles]


class TestPostIds:
    def test_publishing_a_second_article_to_the_same_post_is_already_exists(self, fresh):
        _, stub = fresh
        first = publish(stub, create(stub), post=7)
        error = details_of(lambda: publish(stub, create(stub), post=7))
        assert error.code is Code.ALREADY_EXISTS and "wp_post_id" in error.message
        assert publish(stub, first, post=7).wp_post_id == 7  # a re-push of the same article

    def test_updating_to_a_taken_post_is_already_exists(self, fresh):
        _, stub = fresh
        publish(stub, create(stub), post=8)
        other = create(stub)
        error = details_of(lambda: update(stub, other, wp_post_id=8))
        assert error.code is Code.ALREADY_EXISTS and "wp_post_id" in error.message
        assert update(stub, other, wp_post_id=9).wp_post_id == 9

    def test_creating_with_a_taken_post_is_already_exists(self, fresh):
        _, stub = fresh
        create(stub, wp_post_id=10)
        error = details_of(lambda: create(stub, wp_post_id=10))
        assert error.code is Code.ALREADY_EXISTS and "wp_post_id" in error.message
        articles = [pb.Article(title="A", content_markdown="a", wp_post_id=10)]
        error = details_of(
            lambda: stub.BatchCreateArticles(pb.BatchCreateArticlesRequest(articles=articles))
        )
        assert error.code is Code.ALREADY_EXISTS and "wp_post_id" in error.message

    def test_a_batch_repeating_a_post_is_invalid_argument(self, fresh):
        _, stub = fresh
        articles = [pb.Article(title=t, content_markdown=t, wp_post_id=11) for t in "ab"]
        error = details_of(
            lambda: stub.BatchCreateArticles(pb.BatchCreateArticlesRequest(articles=articles))
        )
        assert error.code is Code.INVALID_ARGUMENT
        assert "articles[1].wp_post_id" in error.field_violations

    def test_zero_means_none_and_never_clashes(self, fresh):
        _, stub = fresh
        assert publish(stub, create(stub)).wp_post_id == 0
        assert publish(stub, create(stub)).wp_post_id == 0

    def test_deleting_frees_the_post_and_undeleting_into_a_clash_fails(self, fresh):
        _, stub = fresh
        first = publish(stub, create(stub), post=12)
        stub.DeleteArticle(pb.DeleteArticleRequest(id=first.id))
        second = publish(stub, create(stub), post=12)
        assert second.wp_post_id == 12
        error = details_of(lambda: stub.UndeleteArticle(pb.UndeleteArticleRequest(id=first.id)))
        assert error.code is Code.ALREADY_EXISTS and "wp_post_id" in error.message

    def test_users_have_their_own_posts(self, fresh, new_account, connect):
        _, stub = fresh
        other = articles_pb2_grpc.ArticlesServiceStub(connect(new_account().token))
        publish(stub, create(stub), post=13)
        assert publish(other, create(other), post=13).wp_post_id == 13


class TestPush:
    def test_publish_records_the_pushed_version_and_the_remote_time(self, fresh):
        _, stub = fresh
        draft = create(stub)
        assert draft.wp_synced_version == 0 and not draft.HasField("wp_modified_time")
        remote = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=123_000)
        published = publish(stub, draft, post=20, wp_modified_time=remote)
        assert published.wp_synced_version == version(published) == version(draft) + 1
        assert published.wp_modified_time == remote
        again = publish(stub, published, post=20)  # no remote time given: the server's clock
        assert again.wp_synced_version == version(again)
        moment = again.wp_modified_time.ToDatetime(tzinfo=dt.UTC)
        assert abs(moment - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)

    def test_sync_fields_are_output_only_on_update(self, fresh):
        _, stub = fresh
        article = create(stub)
        for path in ("wp_synced_version", "wp_modified_time"):
            paths = field_mask_pb2.FieldMask(paths=[path])
            request = pb.UpdateArticleRequest(article=pb.Article(id=article.id), update_mask=paths)
            error = details_of(lambda r=request: stub.UpdateArticle(r))
            assert error.code is Code.INVALID_ARGUMENT, path

    def test_revisions_keep_the_sync_state(self, fresh):
        _, stub = fresh
        published = publish(stub, create(stub), post=21)
        update(stub, published, title="Changed")
        (latest, *_) = stub.ListArticleRevisions(
            pb.ListArticleRevisionsRequest(article_id=published.id)
        ).revisions
        assert latest.article.wp_synced_version == published.wp_synced_version


class TestNeedsSync:
    def test_an_update_after_the_push_needs_a_sync_until_the_next_push(self, fresh):
        _, stub = fresh
        published = publish(stub, create(stub), post=30)
        create(stub)  # a draft never needs a sync
        assert needing_sync(stub) == []
        changed = update(stub, published, title="Edited after the push")
        assert needing_sync(stub) == [changed.id]
        pushed = publish(stub, changed, post=30)
        assert needing_sync(stub) == [] and pushed.wp_synced_version == version(pushed)

    def test_deleted_articles_never_need_a_sync_and_delete_keeps_the_state(self, fresh):
        _, stub = fresh
        in_sync = publish(stub, create(stub), post=31)
        stub.DeleteArticle(pb.DeleteArticleRequest(id=in_sync.id))
        back = stub.UndeleteArticle(pb.UndeleteArticleRequest(id=in_sync.id)).article
        assert back.wp_synced_version == version(back)  # no content changed
        stale = update(stub, publish(stub, create(stub), post=32), title="Edited")
        assert needing_sync(stub) == [stale.id]
        stub.DeleteArticle(pb.DeleteArticleRequest(id=stale.id))
        assert needing_sync(stub) == [] and needing_sync(stub, show_deleted=True) == []

    def test_other_filters_and_orders_combine(self, fresh):
        _, stub = fresh
        stale = [
            update(stub, publish(stub, create(stub), post=40 + i), title=f"T{i}") for i in range(3)
        ]
        ids = {a.id for a in stale}
        assert set(needing_sync(stub, order_by="title")) == ids
        assert set(needing_sync(stub, order_by="publish_time desc")) == ids
        assert needing_sync(stub, status=pb.ARTICLE_STATUS_DRAFT) == []
        assert needing_sync(stub, content_hash=stale[0].content_hash, order_by="title") == [
            a.id for a in sorted(stale, key=lambda a: a.title)
        ]

    def test_pages_are_bound_to_the_filter(self, fresh):
        _, stub = fresh
        stale = {update(stub, publish(stub, create(stub), post=50 + i), title=f"E{i}").id
                 for i in range(3)}  # fmt: skip
        seen, token = [], ""
        while True:
            page = stub.ListArticles(
                pb.ListArticlesRequest(needs_sync=True, page_size=1, page_token=token)
            )
            seen += [a.id for a in page.articles]
            if not (token := page.next_page_token):
                break
            other = pb.ListArticlesRequest(page_size=1, page_token=token)
            assert details_of(lambda r=other: stub.ListArticles(r)).code is Code.INVALID_ARGUMENT
        assert sorted(seen) == sorted(stale)

    def test_users_see_their_own_and_services_see_everyones(self, fresh, new_account, connect):
        ann, stub = fresh
        bob = new_account()
        bob_stub = articles_pb2_grpc.ArticlesServiceStub(connect(bob.token))
        anns = update(stub, publish(stub, create(stub), post=60), title="Ann's edit")
        bobs = update(bob_stub, publish(bob_stub, create(bob_stub), post=60), title="Bob's")
        assert needing_sync(stub) == [anns.id] and needing_sync(bob_stub) == [bobs.id]
        service = articles_pb2_grpc.ArticlesServiceStub(connect(SERVICE_KEY))
        assert {anns.id, bobs.id} <= set(needing_sync(service))
        assert needing_sync(service, user_id=bob.id) == [bobs.id]
        error = details_of(lambda: needing_sync(stub, user_id=bob.id))
        assert error.code is Code.NOT_FOUND


def test_the_needs_sync_list_uses_its_index_under_rls(database_url, owner_engine):
    """500 published articles, 3 changed since their push: the list reads the partial
    ix_articles_needs_sync rather than the owner's create_time index."""
    with owner_engine.begin() as connection:
        user_id = connection.scalar(
            text(
                "INSERT INTO users (email, username, password_hash) "
                "VALUES (:e, :n, 'x') RETURNING id"
            ),
            {"e": f"{unique()}@example.com", "n": unique()},
        )
        connection.execute(
            text(
                "INSERT INTO articles (user_id, title, slug, content_markdown, content_html, "
                "word_count, reading_time_minutes, internal_links, external_links, content_hash, "
                "status, publish_time, version, wp_synced_version) "
                "SELECT :u, 'title ' || i, 'sync-' || i, 'body', 'body', 1, 1, 0, 0, 'x', "
                "'published', now(), 2, CASE WHEN i % 170 = 0 THEN 1 ELSE 2 END "
                "FROM generate_series(1, 500) i"
            ),
            {"u": user_id},
        )
        connection.execute(text("ANALYZE articles"))
    filters = ArticleFilters(needs_sync=True)
    for order_by in ("create_time desc", "title", "publish_time desc"):
        plan = plan_as_user(
            database_url,
            user_id,
            list_statement(filters, user_id, order_by=order_by, after=None, full=False),
            list_values(filters, user_id, None, 50),
        )
        assert "ix_articles_needs_sync" in plan, plan


def test_the_migration_refuses_duplicate_posts_and_names_them(pg_admin_url):
    """Two live articles of one user on one WordPress post: the migration stops, lists them
    and changes nothing; once one lets go of the post it goes through."""
    parent = ScriptDirectory.from_config(migrate.alembic_config()).get_revision(MIGRATION)
    assert parent is not None and isinstance(parent.down_revision, str)
    url = support.create_database(pg_admin_url)
    engine = create_engine(normalize_url(url))
    try:
        migrate.upgrade(url, parent.down_revision)
        with engine.begin() as connection:
            user_id = connection.scalar(text(
                "INSERT INTO users (email, username, password_hash) "
                "VALUES ('dup@example.com', 'dup', 'x') RETURNING id"))  # fmt: skip
            insert = text(
                "INSERT INTO articles (user_id, title, slug, content_markdown, content_html, "
                "word_count, reading_time_minutes, internal_links, external_links, "
                "content_hash, wp_post_id, delete_time) "
                "VALUES (:u, 't', :s, 'b', 'b', 1, 1, 0, 0, 'x', 77, :d) RETURNING id"
            )
            ids = [
                str(connection.scalar(insert, {"u": user_id, "s": slug, "d": deleted}))
                for slug, deleted in (("a", None), ("b", None), ("c", dt.datetime.now(dt.UTC)))
            ]
        with pytest.raises(RuntimeError) as refused:
            migrate.upgrade(url)
        message = str(refused.value)
        (line,) = [x for x in message.splitlines() if f"user {user_id}, wp_post_id 77:" in x]
        assert ids[0] in line and ids[1] in line  # (same create_time: in id order)
        assert ids[2] not in message  # a deleted article holds no post
        with engine.connect() as connection:
            assert migrate.current_revisions(connection) == {parent.down_revision}
            columns = connection.scalars(text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'articles' AND column_name LIKE 'wp_sync%'")).all()  # fmt: skip
            assert columns == []
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE articles SET wp_post_id = NULL WHERE id = :id"), {"id": ids[1]}
            )
        migrate.upgrade(url)
        with engine.connect() as connection:
            assert migrate.current_revisions(connection) == migrate.head_revisions()
    finally:
        engine.dispose()
        support.drop_database(pg_admin_url, url)


def test_the_service_may_read_sync_state_of_a_user(connect, fresh):
    account, stub = fresh
    published = publish(stub, create(stub), post=90)
    service = articles_pb2_grpc.ArticlesServiceStub(connect(SERVICE_KEY))
    seen = service.GetArticle(pb.GetArticleRequest(id=published.id)).article
    assert seen.wp_synced_version == published.wp_synced_version == version(published)
    assert seen.user_id == account.id and uuid.UUID(seen.id)


def test_the_legacy_import_reports_a_post_another_article_holds(database_url, fresh, tmp_path):
    """One live article per WordPress post holds for imports too: a file naming a taken
    post, or one an earlier file took, is reported invalid; the others go in."""
    account, stub = fresh
    publish(stub, create(stub), post=500)
    files = {"taken.json": 500, "first.json": 501, "second.json": 501, "free.json": 502}
    for name, post in files.items():
        (tmp_path / name).write_text(json.dumps({"title": name, "wp_post_id": post}))
    db = Database(make_engine(database_url, pool_size=1))
    try:
        report = import_legacy(db, tmp_path, account.id)
    finally:
        db.dispose()
    problems = {(p.source, p.field) for p in report.invalid}
    assert problems == {("taken.json", "wp_post_id"), ("second.json", "wp_post_id")}
    assert report.imported["article"] == 2
    listed = stub.ListArticles(pb.ListArticlesRequest(page_size=100)).articles
    assert sorted(a.wp_post_id for a in listed) == [500, 501, 502]
