"""ListTags: per-user tag counts kept by triggers (migration 0017), through the real server."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import grpc
import pytest
from blogstore import client
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc, users_pb2
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from storage import migrate
from storage.actors import Actor, ActorKind
from storage.engine import normalize_url
from storage.repositories.tags import TagRepository
from tests import support
from tests.support import SERVICE_KEY, details_of, status_of

Code = grpc.StatusCode


def articles(connect, token: str) -> articles_pb2_grpc.ArticlesServiceStub:
    return articles_pb2_grpc.ArticlesServiceStub(connect(token))


def create(stub, title: str, tags: list[str], **fields) -> pb.Article:
    article = pb.Article(title=title, content_markdown="Body.", tags=tags, **fields)
    return stub.CreateArticle(pb.CreateArticleRequest(article=article)).article


def counts(stub, **request) -> dict[str, int]:
    """Every tag of a ListTags walk (all pages) as {name: count}, in the order returned."""
    out, token = {}, ""
    while True:
        page = stub.ListTags(pb.ListTagsRequest(page_token=token, **request))
        for tag in page.tags:
            assert tag.name not in out
            out[tag.name] = tag.article_count
        if not (token := page.next_page_token):
            return out


def recount(owner_engine, user_id: str) -> dict[str, int]:
    """The counts computed from articles themselves, by lower-cased tag."""
    with owner_engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT lower(t), count(DISTINCT a.id) FROM articles a, unnest(a.tags) t "
                "WHERE a.user_id = :u AND a.delete_time IS NULL GROUP BY 1"
            ),
            {"u": user_id},
        ).all()
    return dict(rows)


def deadlocks(owner_engine) -> int:
    with owner_engine.connect() as connection:
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        return connection.scalar(
            text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        )


def stored(owner_engine, user_id: str) -> dict[str, int]:
    with owner_engine.connect() as connection:
        rows = connection.execute(
            text("SELECT tag_key, article_count FROM article_tag_counts WHERE user_id = :u"),
            {"u": user_id},
        ).all()
        staged = connection.scalar(text("SELECT count(*) FROM article_tag_count_changes"))
    assert staged == 0  # staging never outlives a transaction
    return dict(rows)


def test_counts_follow_create_update_delete_undelete(new_account, connect, owner_engine):
    account = new_account()
    stub = articles(connect, account.token)
    assert counts(stub) == {}
    a = create(stub, "One", ["SEO", "go"])
    b = create(stub, "Two", ["seo", "Rust", "SEO"])  # one article counts once per tag
    create(stub, "Three", ["seo"])
    assert counts(stub) == {"SEO": 3, "go": 1, "Rust": 1}
    update = pb.UpdateArticleRequest(
        article=pb.Article(id=b.id, tags=["go", "python"], etag=b.etag),
        update_mask=FieldMask(paths=["tags"]),
    )
    b = stub.UpdateArticle(update).article
    assert counts(stub) == {"SEO": 2, "go": 2, "python": 1}
    title_only = pb.UpdateArticleRequest(
        article=pb.Article(id=b.id, title="Two again"), update_mask=FieldMask(paths=["title"])
    )
    stub.UpdateArticle(title_only)
    assert counts(stub) == {"SEO": 2, "go": 2, "python": 1}
    stub.DeleteArticle(pb.DeleteArticleRequest(id=a.id))
    assert counts(stub) == {"SEO": 1, "go": 1, "python": 1}
    stub.UndeleteArticle(pb.UndeleteArticleRequest(id=a.id))
    assert counts(stub) == {"SEO": 2, "go": 2, "python": 1}
    assert stored(owner_engine, account.id) == recount(owner_engine, account.id)


def test_the_first_spelling_is_shown_until_the_tag_is_gone(new_account, connect):
    stub = articles(connect, new_account().token)
    first = create(stub, "One", ["Seo"])
    create(stub, "Two", ["SEO"])
    assert counts(stub) == {"Seo": 2}
    stub.DeleteArticle(pb.DeleteArticleRequest(id=first.id))
    assert counts(stub) == {"Seo": 1}  # the spelling stays while the tag is counted
    (rest,) = stub.ListArticles(pb.ListArticlesRequest()).articles
    stub.DeleteArticle(pb.DeleteArticleRequest(id=rest.id))
    assert counts(stub) == {}  # zero counts are dropped
    create(stub, "Three", ["seo"])
    assert counts(stub) == {"seo": 1}


def test_order_paging_and_prefix(new_account, connect):
    stub = articles(connect, new_account().token)
    batch = [pb.Article(title=f"A{i}", content_markdown="x", tags=tags) for i, tags in enumerate(
        [["b", "a", "c"], ["b", "c"], ["c"], ["d"], ["Ab"], ["abc", "AB"]]
    )]  # fmt: skip
    stub.BatchCreateArticles(pb.BatchCreateArticlesRequest(articles=batch))
    # One transaction brought "Ab" and "AB": the smaller in byte order is shown.
    expected = {"c": 3, "AB": 2, "b": 2, "a": 1, "abc": 1, "d": 1}
    assert list(counts(stub).items()) == list(expected.items())  # count desc, then name
    assert list(counts(stub, page_size=1).items()) == list(expected.items())
    assert list(counts(stub, order_by="name", page_size=2)) == ["a", "AB", "abc", "b", "c", "d"]
    assert list(counts(stub, order_by=" NAME ")) == ["a", "AB", "abc", "b", "c", "d"]
    assert counts(stub, prefix="AB") == {"AB": 2, "abc": 1}
    assert list(counts(stub, prefix="a", order_by="name", page_size=1)) == ["a", "AB", "abc"]
    assert counts(stub, prefix="zz") == {}
    first = stub.ListTags(pb.ListTagsRequest(page_size=2))
    other = pb.ListTagsRequest(order_by="name", page_token=first.next_page_token)
    assert status_of(lambda: stub.ListTags(other)) is Code.INVALID_ARGUMENT


def test_bad_arguments_name_the_field(new_account, connect):
    stub = articles(connect, new_account().token)
    for request, field in (
        (pb.ListTagsRequest(order_by="popularity"), "order_by"),
        (pb.ListTagsRequest(page_size=-1), "page_size"),
        (pb.ListTagsRequest(prefix="x" * 101), "prefix"),
        (pb.ListTagsRequest(user_id="not-a-uuid"), "user_id"),
    ):
        error = details_of(lambda r=request: stub.ListTags(r))
        assert error.code is Code.INVALID_ARGUMENT and field in error.field_violations, field
    service = articles(connect, SERVICE_KEY)
    error = details_of(lambda: service.ListTags(pb.ListTagsRequest()))
    assert error.code is Code.INVALID_ARGUMENT and "user_id" in error.field_violations


def test_isolation_users_see_their_own_admins_and_services_name_one(
    new_account, connect, admin_key
):
    alice, bob = new_account(), new_account()
    create(articles(connect, alice.token), "A", ["secret-plan"])
    create(articles(connect, bob.token), "B", ["bobs"])
    bob_stub = articles(connect, bob.token)
    assert counts(bob_stub) == {"bobs": 1}
    spy = pb.ListTagsRequest(user_id=alice.id)
    assert status_of(lambda: bob_stub.ListTags(spy)) is Code.NOT_FOUND
    for key in (admin_key, SERVICE_KEY):
        assert counts(articles(connect, key), user_id=alice.id) == {"secret-plan": 1}


def test_a_purged_user_takes_its_counts_along(new_account, connect, admin_users, owner_engine):
    account = new_account()
    stub = articles(connect, account.token)
    create(stub, "A", ["gone"])
    assert stored(owner_engine, account.id) == {"gone": 1}
    admin_users.DeleteUser(users_pb2.DeleteUserRequest(id=account.id, purge=True))
    assert stored(owner_engine, account.id) == {}


def test_concurrent_batches_with_overlapping_tags_count_exactly(
    new_account, database_url, started, owner_engine
):
    """Four imports of 1,000 articles at once (a server that runs four at once), every
    article carrying common tags in shuffled order and case, each insert statement of a
    batch other tags than the last: none deadlocks (applying the counts at each statement
    did, caught by PostgreSQL and retried) or fails, and the counts match a recount."""
    account = new_account()
    app = support.start_app(
        started, database_url, max_concurrent_batches=4, max_batches_per_principal=4
    )
    channel = client.connect(f"127.0.0.1:{app.port}", account.token, default_timeout=120)
    stub = articles_pb2_grpc.ArticlesServiceStub(channel)
    common = ["seo", "Marketing", "go", "rust", "python", "java", "news", "howto"]
    errors: list[BaseException] = []
    start = threading.Barrier(4)
    deadlocks_before = deadlocks(owner_engine)

    def batch(n: int) -> None:
        items = []
        for i in range(1000):
            # Rows go in by slug, 100 per statement: statement k of batch n carries tags
            # k+n and k+n+3 (and one more), so locking per statement would cross batches.
            step = i // 100 + n
            tags = [common[(step + k) % len(common)] for k in (0, 3, 5 + i % 2)]
            tags = [t.upper() if (i + n) % 3 == 0 else t for t in reversed(tags)]
            title = f"Batch {n} item {i:04d}"
            items.append(pb.Article(title=title, content_markdown="x", tags=tags))
        start.wait()
        try:
            stub.BatchCreateArticles(pb.BatchCreateArticlesRequest(articles=items), timeout=120)
        except grpc.RpcError as error:  # pragma: no cover - the failure being tested
            errors.append(error)

    threads = [threading.Thread(target=batch, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    time.sleep(1.5)  # statistics reach shared memory within a second
    assert deadlocks(owner_engine) == deadlocks_before  # none, not even retried ones
    expected = recount(owner_engine, account.id)
    assert sum(expected.values()) == 4 * 1000 * 3
    assert stored(owner_engine, account.id) == expected
    listed = counts(stub)
    channel.close()
    assert Counter({k.lower(): v for k, v in listed.items()}) == Counter(expected)


def test_concurrent_creates_and_deletes_keep_counts_exact(new_account, connect, owner_engine):
    account = new_account()
    stub = articles(connect, account.token)
    doomed = [create(stub, f"Old {i}", ["shared", f"own-{i % 3}"]) for i in range(12)]

    def work(i: int) -> None:
        create(stub, f"New {i}", ["Shared", f"OWN-{(i + 1) % 3}"])
        stub.DeleteArticle(pb.DeleteArticleRequest(id=doomed[i].id))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stored(owner_engine, account.id) == recount(owner_engine, account.id)
    assert counts(stub)["shared"] == 12


@pytest.mark.parametrize("order_by", ["count desc", "name"])
def test_list_tags_reads_the_counts_index_not_articles(owner_engine, order_by):
    """The plan of ListTags' statement: an index range of article_tag_counts, no articles."""
    captured = []
    with Session(owner_engine) as session:
        repo = TagRepository(session, Actor(ActorKind.SERVICE, None, name="t"))
        real_execute = session.execute

        def capture(stmt, *args, **kwargs):
            captured.append(stmt)
            return real_execute(stmt, *args, **kwargs)

        session.execute = capture  # type: ignore[method-assign]
        repo.list(uuid.uuid4(), order_by=order_by, prefix="se", after=None, limit=50)
        compiled = captured[0].compile(owner_engine, compile_kwargs={"literal_binds": True})
        with owner_engine.connect() as connection:
            connection.execute(text("SET enable_seqscan = off"))  # the tiny table must not hide it
            plan = "\n".join(r[0] for r in connection.execute(text(f"EXPLAIN {compiled}")))
    assert "article_tag_counts" in plan and " articles" not in plan
    assert "Index" in plan


def test_migration_0017_backfills_live_articles_and_reverses(pg_admin_url):
    url = support.create_database(pg_admin_url)
    engine = create_engine(normalize_url(url))
    try:
        migrate.upgrade(url, "0012")
        with engine.begin() as connection:
            user_id = connection.scalar(
                text(
                    "INSERT INTO users (email, username, password_hash) "
                    "VALUES ('t@example.com', 'tagger', 'x') RETURNING id"
                )
            )
            for i, (tags, deleted) in enumerate(
                [(["SEO", "go"], False), (["seo", "seo"], False), (["Go"], True), ([], False)]
            ):
                connection.execute(
                    text(
                        "INSERT INTO articles (user_id, title, slug, content_markdown, "
                        "content_html, word_count, reading_time_minutes, internal_links, "
                        "external_links, content_hash, tags, delete_time) VALUES (:u, 't', "
                        ":s, 'x', 'x', 1, 1, 0, 0, 'x', :tags, "
                        "CASE WHEN :deleted THEN now() END)"
                    ),
                    {"u": user_id, "s": f"a-{i}", "tags": tags, "deleted": deleted},
                )
        migrate.upgrade(url)
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT tag_key, tag, article_count FROM article_tag_counts ORDER BY 1")
            ).all()
        assert [tuple(r) for r in rows] == [("go", "go", 1), ("seo", "SEO", 2)]
        migrate.downgrade(url, "0012")
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT to_regclass('article_tag_counts')")) is None
            connection.execute(text("UPDATE articles SET tags = '{x}'"))  # no trigger left
        migrate.upgrade(url)
    finally:
        engine.dispose()
        support.drop_database(pg_admin_url, url)


def test_a_hard_delete_of_a_live_article_is_counted(new_account, connect, owner_engine):
    account = new_account()
    stub = articles(connect, account.token)
    gone = create(stub, "A", ["kept", "dropped"])
    create(stub, "B", ["kept"])
    with owner_engine.begin() as connection:
        connection.execute(text("DELETE FROM articles WHERE id = :id"), {"id": gone.id})
    assert counts(stub) == {"kept": 1}
    assert stored(owner_engine, account.id) == recount(owner_engine, account.id)
