"""The write paths off the ORM (issue 17) write what the ORM path wrote: the same article
version, revision and audit event for UpdateArticle, and the same lease, check and audit
events for ClaimDueCompetitors and RecordCompetitorCheck. Checked row by row in the database.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from types import SimpleNamespace

import grpc
import pytest
from blogstore.v1 import articles_pb2 as pb
from blogstore.v1 import articles_pb2_grpc
from blogstore.v1 import competitors_pb2 as cpb
from google.protobuf import field_mask_pb2
from sqlalchemy import text

from storage.actors import SYSTEM, Caller
from storage.engine import make_engine
from storage.errors import Conflict
from storage.models.articles import ARTICLE_COLUMNS
from storage.provenance import COLUMNS as PROVENANCE
from storage.repositories import article_updates
from storage.repositories.articles import snapshot
from storage.repositories.audit import event_values
from storage.uow import Database
from tests.competitor_support import create as create_competitor
from tests.competitor_support import now, stub, ts
from tests.support import SERVICE_KEY, status_of, unique

Code = grpc.StatusCode
AUDIT = "actor_kind, actor_id, actor_name, action, resource_type, resource_id, request_id, details"


def row(engine, sql: str, **params) -> SimpleNamespace | None:
    with engine.connect() as connection:
        found = connection.execute(text(sql), params).mappings().first()
    return None if found is None else SimpleNamespace(**found)


def article_row(engine, article_id: str) -> SimpleNamespace:
    columns = ", ".join(c.name for c in ARTICLE_COLUMNS)
    found = row(engine, f"SELECT {columns} FROM articles WHERE id = :id", id=article_id)
    assert found is not None
    return found


def audit_rows(engine, resource_id: str, action: str) -> list[dict]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                f"SELECT {AUDIT}, user_id FROM audit_events WHERE resource_id = :r "
                "AND action = :a ORDER BY id"
            ),
            {"r": resource_id, "a": action},
        ).mappings()
        return [dict(r) for r in rows]


@pytest.fixture(scope="module")
def alice(new_account, connect):
    account = new_account()
    return account, articles_pb2_grpc.ArticlesServiceStub(connect(account.token))


def test_update_writes_the_version_revision_and_audit_event_of_the_orm_path(alice, owner_engine):
    account, articles = alice
    made = articles.CreateArticle(
        pb.CreateArticleRequest(
            article=pb.Article(title=f"A {unique()}", content_markdown="one two", tags=["x"])
        )
    ).article
    before = article_row(owner_engine, made.id)
    request_id = f"upd-{uuid.uuid4().hex[:12]}"
    request = pb.UpdateArticleRequest(
        article=pb.Article(
            id=made.id, etag=made.etag, title="New title", seo_score=42.0, tags=["y", "z"],
            status=pb.ARTICLE_STATUS_PUBLISHED,
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["title", "seo_score", "tags", "status"]),
    )  # fmt: skip
    updated, call = articles.UpdateArticle.with_call(
        request, metadata=[("x-request-id", request_id)]
    )
    after = article_row(owner_engine, made.id)
    assert (after.title, after.seo_score, after.tags) == ("New title", 42.0, ["y", "z"])
    assert after.version == before.version + 1 and after.update_time > before.update_time
    assert after.publish_time is not None  # first publication stamps it
    assert after.content_markdown == before.content_markdown
    assert (after.made_by_kind, str(after.made_by_id), after.made_request_id) == (
        "user", account.id, request_id,
    )  # fmt: skip
    assert updated.article.etag != made.etag and updated.article.title == "New title"

    revision = row(
        owner_engine,
        "SELECT * FROM article_revisions WHERE article_id = :id ORDER BY create_time DESC",
        id=made.id,
    )
    assert revision is not None
    # The snapshot is storage's snapshot() of the replaced version, as the ORM path kept it.
    assert revision.snapshot == json.loads(json.dumps(snapshot(before)))
    assert revision.article_version == before.version
    assert str(revision.actor_id) == account.id
    assert {n: getattr(revision, n) for n in PROVENANCE} == {
        n: getattr(before, n) for n in PROVENANCE
    }

    (event,) = audit_rows(owner_engine, made.id, "article.update")
    assert event == {
        "actor_kind": "user", "actor_id": uuid.UUID(account.id), "actor_name": event["actor_name"],
        "action": "article.update", "resource_type": "article", "resource_id": made.id,
        "request_id": request_id, "details": {"fields": ["seo_score", "status", "tags", "title"]},
        "user_id": uuid.UUID(account.id),
    }  # fmt: skip

    # A stale etag writes nothing: no version, no revision, no event.
    assert status_of(lambda: articles.UpdateArticle(request)) is Code.ABORTED
    assert article_row(owner_engine, made.id).version == after.version
    assert len(audit_rows(owner_engine, made.id, "article.update")) == 1
    count = row(
        owner_engine,
        "SELECT count(*) AS n FROM article_revisions WHERE article_id = :id",
        id=made.id,
    )
    assert count is not None and count.n == 1


def test_claim_and_record_write_the_lease_check_and_audit_events(
    connect, new_account, owner_engine
):
    service = stub(connect(SERVICE_KEY))
    owner = new_account().id
    made = create_competitor(
        service, user_id=owner, next_check_time=ts(now() - dt.timedelta(hours=1)),
        check_frequency_hours=6,
    )  # fmt: skip
    before = row(owner_engine, "SELECT * FROM competitors WHERE id = :id", id=made.id)
    claimed = service.ClaimDueCompetitors(
        cpb.ClaimDueCompetitorsRequest(limit=5, lease_seconds=300)
    ).competitors
    assert [c.id for c in claimed] == [made.id]
    leased = row(owner_engine, "SELECT * FROM competitors WHERE id = :id", id=made.id)
    assert before is not None and leased is not None
    assert leased.lease_expire_time > before.next_check_time
    # Bookkeeping, not an edit: the etag and update_time stay.
    assert (leased.version, leased.update_time) == (before.version, before.update_time)
    assert claimed[0].etag == made.etag
    (event,) = audit_rows(owner_engine, made.id, "competitor.claim")
    assert (event["actor_kind"], event["resource_type"], event["details"]) == (
        "service", "competitor", {"lease_seconds": 300},
    )  # fmt: skip
    assert event["user_id"] == uuid.UUID(owner) and event["actor_id"] is None

    recorded = service.RecordCompetitorCheck(
        cpb.RecordCompetitorCheckRequest(competitor_id=made.id, error=" timed out ")
    ).competitor
    checked = row(owner_engine, "SELECT * FROM competitors WHERE id = :id", id=made.id)
    assert checked is not None
    assert checked.lease_expire_time is None and checked.last_error == "timed out"
    assert checked.next_check_time - checked.last_check_time == dt.timedelta(hours=6)
    assert checked.version == before.version + 1 and checked.update_time > before.update_time
    assert recorded.etag != made.etag and recorded.total_articles_found == 0
    (event,) = audit_rows(owner_engine, made.id, "competitor.record_check")
    assert event["details"] == {"failed": True} and event["user_id"] == uuid.UUID(owner)

    stranger = stub(connect(new_account().token))
    missing = cpb.RecordCompetitorCheckRequest(competitor_id=made.id)
    assert status_of(lambda: stranger.RecordCompetitorCheck(missing)) is Code.NOT_FOUND
    assert len(audit_rows(owner_engine, made.id, "competitor.record_check")) == 1


@pytest.mark.parametrize("prepare", ["on", "off"])
def test_an_update_in_two_round_trips_checks_the_version_it_read(
    database_url, alice, owner_engine, prepare
):
    """UpdateArticle's common case (article_updates.load_now, update_now: two statements of
    their own, PREPAREd or as sent behind a pooler): a change committed between the read and
    the write makes the write a Conflict that writes nothing, as in one unit of work."""
    account, articles = alice
    made = articles.CreateArticle(
        pb.CreateArticleRequest(article=pb.Article(title=f"T {unique()}", content_markdown="a b"))
    ).article
    db = Database(make_engine(database_url, pool_size=1), prepare=prepare)
    caller = Caller(SYSTEM, request_id=f"update-now-{prepare}")
    try:
        article = article_updates.load_now(db, caller, uuid.UUID(made.id), content=False)
        changes = {"title": "Read, then changed by another"}
        audit = event_values(caller, "article.update", "article", article.id, details={})
        with owner_engine.begin() as connection:  # another writer, after the read
            connection.execute(
                text("UPDATE articles SET version = version + 1 WHERE id = :id"), {"id": made.id}
            )
        with pytest.raises(Conflict):
            article_updates.update_now(db, caller, article, None, changes, step=None, audit=audit)
        assert article_row(owner_engine, made.id).title == made.title
        assert audit_rows(owner_engine, made.id, "article.update") == []

        article = article_updates.load_now(db, caller, uuid.UUID(made.id), content=False)
        done = article_updates.update_now(
            db, caller, article, article.version, changes, step=None, audit=audit
        )
        assert (done.title, done.version) == (changes["title"], article.version + 1)
        assert len(audit_rows(owner_engine, made.id, "article.update")) == 1
    finally:
        db.dispose()
