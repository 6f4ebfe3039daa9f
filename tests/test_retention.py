"""Retention: every policy's plan matches what apply removes; rollups stay; runs resume."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import insert, select, text

from storage.actors import SYSTEM
from storage.engine import make_engine
from storage.lifecycle import retention
from storage.lifecycle.retention import Policies, month_cutoff
from storage.models import (
    Article,
    ArticleRevision,
    AuditEvent,
    Competitor,
    CompetitorArticle,
    Pipeline,
    User,
)
from storage.uow import Database
from tests import support

POLICIES = Policies(
    deleted_article_days=30,
    revisions_per_article=50,
    revision_days=365,
    pipeline_days=180,
    usage_event_months=24,
    audit_event_days=730,
    competitor_article_days=180,
    usage_text_days=30,
)
# What the dataset below holds beyond each policy's limit (see populate()).
EXPECTED = {
    "deleted_articles": 2,
    "deleted_articles.article_revisions": 6,
    "revisions": 29,
    "pipelines": 4,
    "usage_texts": 6,
    "usage_events": 5,
    "audit_events": 5,
    "competitor_articles": 3,
}
NOTHING = dict.fromkeys(EXPECTED, 0)
RECORD_USAGE = text(
    "SELECT * FROM blogstore_record_usage(:user, :request_id, :pipeline, NULL, 'openai', 'gpt',"
    " 'draft', 10, 5, :cost, 0, 1, :time, :month, 1000000000000, 1000000, 'system', NULL, 'test',"
    " '')"
)


@pytest.fixture
def database_url(pg_admin_url, template_database) -> Iterator[str]:
    """A database of its own per test: retention acts on whole tables."""
    url = support.create_database(pg_admin_url, template=template_database)
    yield url
    support.drop_database(pg_admin_url, url)


@pytest.fixture
def db(database_url) -> Iterator[Database]:
    database = Database(make_engine(database_url, pool_size=3), statement_timeout_ms=30_000)
    yield database
    database.dispose()


def months_ago(now: dt.datetime, n: int) -> dt.datetime:
    """The 15th of the month n months before now's (UTC)."""
    start = month_cutoff(now, n)
    assert start is not None
    return start + dt.timedelta(days=14)


def populate(db: Database) -> dt.datetime:
    """A dataset with a known number of rows beyond each policy; returns the database's now."""
    now = retention.database_now(db)
    days = lambda n: now - dt.timedelta(days=n)  # noqa: E731
    with db.engine.begin() as c:
        users = [
            c.scalar(insert(User).values(email=f"u{i}-{uuid.uuid4().hex[:6]}@example.com",
                                         username=f"user-{uuid.uuid4().hex[:8]}",
                                         password_hash="x").returning(User.id))
            for i in range(2)
        ]  # fmt: skip

        def article(slug: str, user=users[0], **values) -> uuid.UUID:
            return c.scalar(
                insert(Article).values(
                    user_id=user, title=slug, slug=slug, content_markdown="x", content_html="x",
                    word_count=1, reading_time_minutes=1, internal_links=0, external_links=0,
                    content_hash="h", **values,
                ).returning(Article.id)
            )  # fmt: skip

        def revisions(article_id: uuid.UUID, ages: list[dt.timedelta]) -> None:
            c.execute(insert(ArticleRevision), [
                {"article_id": article_id, "article_version": i, "snapshot": {},
                 "create_time": now - age} for i, age in enumerate(ages)
            ])  # fmt: skip

        # Policy 1: two articles deleted 40 days ago (3 old revisions each) go; one deleted
        # 5 days ago and the live ones stay.
        for n in range(2):
            revisions(article(f"gone-{n}", delete_time=days(40)), [dt.timedelta(days=400)] * 3)
        revisions(article("recently-deleted", delete_time=days(5)), [dt.timedelta(days=1)])
        # Policy 2: 60 revisions 10..600 days old: 24 older than 365 days (these include
        # the 10 beyond the newest 50); 55 recent ones on another article: 5 beyond 50.
        revisions(article("long-history"), [dt.timedelta(days=10 * i) for i in range(1, 61)])
        revisions(article("busy", user=users[1]), [dt.timedelta(hours=i) for i in range(1, 56)])
        # Policy 3: four finished pipelines from 200 days ago go; an old running one and a
        # recent finished one stay.
        old_pipelines = [
            c.scalar(insert(Pipeline).values(user_id=users[0], state=state,
                                             create_time=days(200)).returning(Pipeline.id))
            for state in ("succeeded", "succeeded", "failed", "cancelled")
        ]  # fmt: skip
        c.execute(insert(Pipeline).values(user_id=users[0], state="running", create_time=days(200)))
        c.execute(
            insert(Pipeline).values(user_id=users[0], state="succeeded", create_time=days(10))
        )
        # Policy 4: usage events 30 and 25 months ago go (5), 23 months ago and now stay; the
        # first of each month is charged to a pipeline that policy 3 removes.
        for ago, count in ((30, 3), (25, 2), (23, 1), (0, 1)):
            for i in range(count):
                moment = months_ago(now, ago) if ago else now
                c.execute(RECORD_USAGE, {
                    "user": users[i % 2], "request_id": uuid.uuid4(),
                    "pipeline": old_pipelines[0] if i == 0 else None,
                    "cost": 1_000 * (ago + 1) + i, "time": moment,
                    "month": moment.astimezone(dt.UTC).date().replace(day=1),
                })  # fmt: skip
        # Policy 4a (run before 4): every event has a logged text; those older than 30 days
        # (all but the current one) lose it.
        c.execute(text("UPDATE usage_events SET input_text = 'prompt', output_text = NULL"))
        # Policy 5: five audit events 800 days old go.
        c.execute(insert(AuditEvent), [
            {"actor_kind": "system", "action": "test.old", "resource_type": "test",
             "resource_id": str(i), "create_time": days(800)} for i in range(5)
        ])  # fmt: skip
        # Policy 6: three competitor articles last seen 200 days ago go, one seen today stays.
        competitor = c.scalar(
            insert(Competitor)
            .values(user_id=users[0], domain="rival.example.com")
            .returning(Competitor.id)
        )
        c.execute(insert(CompetitorArticle), [
            {"competitor_id": competitor, "url": f"https://rival.example.com/{i}",
             "last_seen_time": days(200) if i < 3 else now} for i in range(4)
        ])  # fmt: skip
    return now


def state(db: Database) -> dict[str, object]:
    """What retention must never change: rollups, pipeline totals, the cost of kept events."""
    with db.engine.connect() as c:
        return {
            "rollups": c.execute(text("SELECT * FROM usage_monthly ORDER BY user_id, month")).all(),
            "pipelines": c.execute(
                text(
                    "SELECT id, total_cost_micros FROM pipelines WHERE create_time > now() - "
                    "interval '30 days' ORDER BY id"
                )
            ).all(),  # fmt: skip
        }


def counts(report: retention.Report) -> dict[str, int]:
    every = report.counts()
    return {k: every.get(k, 0) for k in EXPECTED}


def test_plan_counts_what_apply_removes_and_rollups_stay(db):
    now = populate(db)
    before = state(db)
    with db.engine.connect() as c:
        kept_event_cost = c.scalar(
            text("SELECT sum(cost_micros) FROM usage_events WHERE event_time >= :cutoff"),
            {"cutoff": month_cutoff(now, POLICIES.usage_event_months)},
        )
    planned = retention.plan(db, POLICIES, now=now)
    assert counts(planned) == EXPECTED
    applied = retention.apply(db, POLICIES, batch_size=7, lock_timeout_ms=200, now=now)
    assert applied.complete and counts(applied) == EXPECTED
    assert all(p.batches >= 1 and not p.error for p in applied.policies)
    assert state(db) == before  # monthly rollups and kept pipelines' totals: untouched
    with db.engine.connect() as c:
        # The purged pipeline's recent usage event is still there, with its cost.
        assert c.scalar(text("SELECT sum(cost_micros) FROM usage_events")) == kept_event_cost
        assert c.scalar(text("SELECT count(*) FROM usage_events WHERE pipeline_id IS NULL")) == 2
        live = c.scalars(text("SELECT slug FROM articles ORDER BY slug")).all()
        assert live == ["busy", "long-history", "recently-deleted"]
        per_article = dict(c.execute(text(
            "SELECT a.slug, count(*) FROM article_revisions AS r"
            " JOIN articles AS a ON a.id = r.article_id GROUP BY a.slug")).all())  # fmt: skip
        assert per_article == {"busy": 50, "long-history": 36, "recently-deleted": 1}
        states = c.scalars(text("SELECT state FROM pipelines ORDER BY state")).all()
        assert states == ["running", "succeeded"]
        audit = c.execute(
            select(AuditEvent.details, AuditEvent.actor_kind).where(
                AuditEvent.action == "retention.apply"
            )
        ).one()
    assert audit.actor_kind == "system" and audit.details["complete"] is True
    assert {k: audit.details["removed"][k] for k in EXPECTED} == EXPECTED
    assert counts(retention.plan(db, POLICIES, now=now)) == NOTHING  # nothing left


def test_an_interrupted_run_is_resumed_by_the_next(db):
    now = populate(db)
    planned = counts(retention.plan(db, POLICIES, now=now))
    first = retention.apply(db, POLICIES, batch_size=1, lock_timeout_ms=200, max_batches=9, now=now)
    assert not first.complete
    assert sum(p.batches for p in first.policies) == 9
    assert 0 < sum(counts(first).values()) < sum(planned.values())
    second = retention.apply(db, POLICIES, batch_size=2, lock_timeout_ms=200, now=now)
    assert second.complete
    total = {k: counts(first)[k] + counts(second)[k] for k in EXPECTED}
    assert total == planned == EXPECTED
    with db.engine.connect() as c:
        runs = c.scalars(
            select(AuditEvent.details["complete"].as_boolean())
            .where(AuditEvent.action == "retention.apply")
            .order_by(AuditEvent.id)
        ).all()
    assert runs == [False, True]  # each run leaves its own audit event


def test_policies_set_to_zero_are_off(db):
    now = populate(db)
    off = Policies(*([0] * len(dataclasses.fields(Policies))))
    assert counts(retention.plan(db, off, now=now)) == NOTHING
    report = retention.apply(db, off, batch_size=10, lock_timeout_ms=200, now=now)
    assert counts(report) == NOTHING and not any(p.enabled for p in report.policies)
    only_count = dataclasses.replace(off, revisions_per_article=50)
    assert retention.plan(db, only_count, now=now).counts()["revisions"] == 15  # 10 + 5


def test_rows_a_writer_holds_are_skipped_not_waited_for(db):
    now = populate(db)
    with db.engine.connect() as writer:
        writer.begin()
        held = writer.scalar(text(
            "SELECT id FROM competitor_articles WHERE last_seen_time < now() - interval '100 days' "
            "LIMIT 1 FOR UPDATE"))  # fmt: skip
        started = time.monotonic()
        report = retention.apply(db, POLICIES, batch_size=100, lock_timeout_ms=200, now=now)
        assert time.monotonic() - started < 10
        assert report.counts()["competitor_articles"] == 2  # the held row is left for later
        writer.rollback()
    with db.engine.connect() as c:
        assert (
            c.scalar(text("SELECT count(*) FROM competitor_articles WHERE id = :id"), {"id": held})
            == 1
        )
    later = retention.apply(db, POLICIES, batch_size=100, lock_timeout_ms=200, now=now)
    assert later.counts()["competitor_articles"] == 1


def test_a_lock_that_outlasts_the_retries_stops_one_policy_not_the_run(db):
    """Deleting a pipeline sets its usage events' pipeline_id NULL: a writer holding one of
    them makes that batch wait, but never longer than lock_timeout, and the run goes on."""
    now = populate(db)
    with db.engine.connect() as writer:
        writer.begin()
        writer.execute(text("SELECT 1 FROM usage_events WHERE pipeline_id IS NOT NULL FOR UPDATE"))
        started = time.monotonic()
        report = retention.apply(db, POLICIES, batch_size=100, lock_timeout_ms=50, now=now)
        elapsed = time.monotonic() - started
        writer.rollback()
    by_name = {p.name: p for p in report.policies}
    assert "LockNotAvailable" in by_name["pipelines"].error and not report.complete
    assert by_name["pipelines"].rows == 0 and elapsed < 10
    assert report.counts()["competitor_articles"] == 3  # later policies still ran
    again = retention.apply(db, POLICIES, batch_size=100, lock_timeout_ms=50, now=now)
    assert again.complete and again.counts()["pipelines"] == 4


def test_writers_wait_at_most_about_one_batch(db):
    """A writer updating rows beside the ones being purged is never held up for long."""
    now = populate(db)
    with db.engine.begin() as c:  # many more old audit events, and a live one to update
        c.execute(text(
            "INSERT INTO audit_events (actor_kind, action, resource_type, resource_id, create_time)"
            " SELECT 'system', 'bulk', 't', g::text, now() - interval '800 days'"
            " FROM generate_series(1, 20000) AS g"))  # fmt: skip
    stop = threading.Event()
    waits: list[float] = []

    def write() -> None:
        engine = make_engine(db.engine.url.render_as_string(hide_password=False), pool_size=1)
        with engine.connect() as c:
            while not stop.is_set():
                started = time.perf_counter()
                with c.begin():
                    c.execute(text(
                        "INSERT INTO audit_events (actor_kind, action, resource_type, resource_id)"
                        " VALUES ('system', 'live', 't', 'x')"))  # fmt: skip
                waits.append(time.perf_counter() - started)
        engine.dispose()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        report = retention.apply(db, POLICIES, batch_size=1000, lock_timeout_ms=200, now=now)
    finally:
        stop.set()
        thread.join()
    assert report.complete and report.counts()["audit_events"] == 20005
    assert len(waits) > 10 and max(waits) < 1.0


def test_cli_plan_and_apply(database_url, db):
    populate(db)
    env = {
        **os.environ,
        **support.server_env(database_url),
        "BLOGSTORE_RETENTION_AUDIT_EVENT_DAYS": "0",
    }
    plan = subprocess.run([sys.executable, "-m", "server", "retention"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert "retention plan" in plan.stdout and "nothing was deleted" in plan.stdout
    lines = {line.split()[0]: line for line in plan.stdout.splitlines()[2:-1]}
    assert "off" in lines["audit_events"]
    assert lines["competitor_articles"].rstrip().endswith(" 3")
    applied = subprocess.run([sys.executable, "-m", "server", "retention", "apply"], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert "deleted" in applied.stdout and "batches" in applied.stdout
    with db.engine.connect() as c:
        assert c.scalar(text("SELECT count(*) FROM audit_events WHERE action = 'test.old'")) == 5
        actor = c.scalar(
            text("SELECT actor_name FROM audit_events WHERE action = 'retention.apply'")
        )
    assert actor == SYSTEM.name
