"""UsersService.ListAuditEvents: scope per principal, filters, keyset paging; what events hold."""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
import pytest
from blogstore.v1 import (
    articles_pb2,
    articles_pb2_grpc,
    common_pb2,
    usage_pb2,
    usage_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from google.protobuf import field_mask_pb2, timestamp_pb2
from sqlalchemy import create_engine, text

from storage import migrate
from storage.engine import normalize_url
from tests import support
from tests.support import SERVICE_KEY, status_of

Code = grpc.StatusCode


@pytest.fixture(scope="module")
def service_users(connect) -> users_pb2_grpc.UsersServiceStub:
    return users_pb2_grpc.UsersServiceStub(connect(SERVICE_KEY))


@pytest.fixture(scope="module")
def admin_articles(connect, admin_key) -> articles_pb2_grpc.ArticlesServiceStub:
    return articles_pb2_grpc.ArticlesServiceStub(connect(admin_key))


@pytest.fixture
def ann(new_account, connect):
    account = new_account()
    account.articles = articles_pb2_grpc.ArticlesServiceStub(connect(account.token))
    return account


@pytest.fixture
def bob(new_account, connect):
    account = new_account()
    account.articles = articles_pb2_grpc.ArticlesServiceStub(connect(account.token))
    return account


def events(stub, **filters) -> list[users_pb2.AuditEvent]:
    """Every page of ListAuditEvents with these filters."""
    found: list[users_pb2.AuditEvent] = []
    token = ""
    while True:
        page = stub.ListAuditEvents(
            users_pb2.ListAuditEventsRequest(page_token=token, **filters), timeout=30
        )
        found.extend(page.events)
        if not page.next_page_token:
            return found
        token = page.next_page_token


def new_article(stub, title: str, user_id: str = "") -> articles_pb2.Article:
    article = articles_pb2.Article(
        title=title, content_markdown=f"# {title}\n\nBody.", user_id=user_id
    )
    return stub.CreateArticle(articles_pb2.CreateArticleRequest(article=article)).article


def test_a_user_sees_its_own_events_and_those_about_its_resources(
    ann, bob, admin_articles, admin_users
):
    mine = new_article(ann.articles, "Ann writes")
    theirs = new_article(bob.articles, "Bob writes")
    # An admin changes Ann's article: the event's actor is the admin, its owner is Ann.
    updated = admin_articles.UpdateArticle(
        articles_pb2.UpdateArticleRequest(
            article=articles_pb2.Article(id=mine.id, title="Ann, edited", etag=mine.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        )
    ).article
    seen = events(ann.stub)
    resources = {e.resource_id for e in seen}
    assert mine.id in resources and theirs.id not in resources
    assert all(e.user_id == ann.id or e.actor_id == ann.id for e in seen)
    update = next(e for e in seen if e.action == "article.update")
    assert update.actor_kind == common_pb2.PRINCIPAL_KIND_ADMIN and update.actor_id != ann.id
    assert update.user_id == ann.id and list(update.details["fields"]) == ["title"]
    assert update.create_time.seconds > 0 and update.request_id
    # The admin sees both users' events.
    everyone = {e.resource_id for e in events(admin_users, resource_type="article")}
    assert {mine.id, theirs.id, updated.id} <= everyone


def test_a_user_naming_another_user_gets_not_found(ann, bob):
    request = users_pb2.ListAuditEventsRequest(user_id=bob.id)
    assert status_of(lambda: ann.stub.ListAuditEvents(request)) == Code.NOT_FOUND
    own = ann.stub.ListAuditEvents(users_pb2.ListAuditEventsRequest(user_id=ann.id)).events
    assert own and all(e.user_id == ann.id for e in own)


def test_publish_records_the_wordpress_ids(ann):
    article = new_article(ann.articles, "To publish")
    ann.articles.PublishArticle(
        articles_pb2.PublishArticleRequest(
            id=article.id, etag=article.etag, wp_post_id=4711, wp_url="https://blog.example.com/p"
        )
    )
    (event,) = events(ann.stub, resource_type="article", resource_id=article.id,
                      action="article.publish")  # fmt: skip
    assert event.details["wp_post_id"] == 4711
    assert event.details["wp_url"] == "https://blog.example.com/p"
    assert event.details["wp_status"] == "publish"


def test_usage_recorded_by_a_service_is_visible_to_its_user(ann, connect, service_users):
    usage = usage_pb2_grpc.UsageServiceStub(connect(SERVICE_KEY))
    event = usage.RecordUsage(
        usage_pb2.RecordUsageRequest(
            user_id=ann.id, request_id=str(uuid.uuid4()), service="openai", cost_micros=1500
        )
    ).event
    (seen,) = events(ann.stub, action="usage.record")
    assert seen.resource_id == event.id and seen.user_id == ann.id
    assert seen.actor_kind == common_pb2.PRINCIPAL_KIND_SERVICE and seen.actor_name == "crawler"
    assert seen.details["cost_micros"] == 1500
    assert [
        e.resource_id for e in events(service_users, user_id=ann.id, action="usage.record")
    ] == [event.id]


def test_filters(ann, admin_users):
    first = new_article(ann.articles, "Filter one")
    middle = dt.datetime.now(dt.UTC)
    second = new_article(ann.articles, "Filter two")
    by_resource = events(admin_users, resource_type="article", resource_id=second.id)
    assert [e.action for e in by_resource] == ["article.create"]
    by_actor = events(admin_users, actor_id=ann.id, action="article.create")
    assert [e.resource_id for e in by_actor] == [second.id, first.id]  # newest first
    after = timestamp_pb2.Timestamp()
    after.FromDatetime(middle)
    since = events(admin_users, actor_id=ann.id, start_time=after)
    assert second.id in {e.resource_id for e in since} and first.id not in {
        e.resource_id for e in since
    }
    before = events(admin_users, actor_id=ann.id, end_time=after, action="article.create")
    assert [e.resource_id for e in before] == [first.id]


@pytest.mark.parametrize(
    "request_fields",
    [{"resource_id": "x"}, {"actor_id": "not-a-uuid"}, {"page_size": -1}, {"action": "a" * 101}],
)
def test_bad_requests(admin_users, request_fields):
    request = users_pb2.ListAuditEventsRequest(**request_fields)
    assert status_of(lambda: admin_users.ListAuditEvents(request)) == Code.INVALID_ARGUMENT


def test_paging_walks_every_event_once_and_tokens_are_bound_to_filters(ann, admin_users):
    for i in range(7):
        new_article(ann.articles, f"Paged {i}")
    everything = events(ann.stub)
    paged = []
    token = ""
    while True:
        page = ann.stub.ListAuditEvents(
            users_pb2.ListAuditEventsRequest(page_size=2, page_token=token)
        )
        assert len(page.events) <= 2
        paged += page.events
        token = page.next_page_token
        if not token:
            break
    assert [e.id for e in paged] == [e.id for e in everything]
    assert len({e.id for e in paged}) == len(paged) >= 8
    keys = [(e.create_time.ToDatetime(), int(e.id)) for e in paged]
    assert keys == sorted(keys, reverse=True)
    first = ann.stub.ListAuditEvents(users_pb2.ListAuditEventsRequest(page_size=2))
    other = users_pb2.ListAuditEventsRequest(page_token=first.next_page_token, action="x")
    assert status_of(lambda: ann.stub.ListAuditEvents(other)) == Code.INVALID_ARGUMENT


def test_a_user_scope_is_served_by_two_index_scans(database_url, ann):
    """The OR of "caused by me" and "about my resources" must not read a whole table."""
    engine = create_engine(normalize_url(database_url))
    with engine.connect() as connection:
        connection.execute(text("SET enable_seqscan = off"))  # the table is tiny here
        plan = "\n".join(
            connection.scalars(
                text(
                    "EXPLAIN SELECT * FROM audit_events JOIN ("
                    " (SELECT create_time, id FROM audit_events WHERE actor_id = :me"
                    "  ORDER BY create_time DESC, id DESC LIMIT 51) UNION"
                    " (SELECT create_time, id FROM audit_events WHERE user_id = :me"
                    "  ORDER BY create_time DESC, id DESC LIMIT 51)) AS page USING (id)"
                ),
                {"me": ann.id},
            )
        )
    engine.dispose()
    assert "ix_audit_events_user_id_create_time_id" in plan
    assert "ix_audit_events_actor_id_create_time" in plan


def test_migration_0010_backfills_owners(pg_admin_url):
    url = support.create_database(pg_admin_url)
    engine = create_engine(normalize_url(url))
    try:
        migrate.upgrade(url, "0008")
        owner, admin = uuid.uuid4(), uuid.uuid4()
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (id, email, username, password_hash) VALUES "
                    "(:owner, 'o@example.com', 'owner', 'x')"
                ),
                {"owner": owner},
            )
            article = connection.scalar(
                text(
                    "INSERT INTO articles (user_id, title, slug, content_markdown, content_html,"
                    " word_count, reading_time_minutes, internal_links, external_links,"
                    " content_hash) VALUES (:owner, 't', 't', '', '', 0, 0, 0, 0, '') RETURNING id"
                ),
                {"owner": owner},
            )
            rows = [
                ("admin", admin, "article.update", "article", str(article), "{}"),
                ("admin", admin, "user.update", "user", str(owner), "{}"),
                ("anonymous", None, "user.authenticate", "session", str(uuid.uuid4()),
                 f'{{"user_id": "{owner}"}}'),
                ("user", owner, "article.delete", "article", str(uuid.uuid4()), "{}"),
                ("system", None, "user.create", "user_x", "gone", "{}"),
            ]  # fmt: skip
            for kind, actor, action, resource_type, resource_id, details in rows:
                connection.execute(
                    text(
                        "INSERT INTO audit_events (actor_kind, actor_id, action, resource_type,"
                        " resource_id, details) VALUES (:k, :a, :action, :t, :r, "
                        "CAST(:d AS jsonb))"
                    ),
                    dict(k=kind, a=actor, action=action, t=resource_type, r=resource_id, d=details),
                )
        migrate.upgrade(url)
        with engine.connect() as connection:
            owners = connection.execute(
                text("SELECT action, user_id FROM audit_events ORDER BY id")
            ).all()
        assert owners == [
            ("article.update", owner),
            ("user.update", owner),
            ("user.authenticate", owner),
            ("article.delete", owner),  # the article is gone: the acting user owned it
            ("user.create", None),
        ]
        migrate.downgrade(url, "0008")  # reversible, with data in place
    finally:
        engine.dispose()
        support.drop_database(pg_admin_url, url)
