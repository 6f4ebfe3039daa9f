"""Partitioned ledgers (migration 0020): the conversion and back, months created ahead, a
month without a partition, idempotency across partitions, retention dropping whole months."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from blogstore.v1 import usage_pb2, usage_pb2_grpc
from google.protobuf import timestamp_pb2
from sqlalchemy import Engine, create_engine, text

from server.partitions import PartitionMaintainer
from storage import migrate
from storage.engine import make_engine, normalize_url
from storage.lifecycle import partitions, retention
from storage.uow import Database
from tests import support
from tests.support import SERVICE_KEY
from tests.test_retention import EXPECTED, POLICIES, RECORD_USAGE, months_ago, populate

NOW = dt.datetime.now(dt.UTC)


def where(c, table: str, key: str, value) -> str:
    """The partition holding the row."""
    return c.scalar(text(f"SELECT tableoid::regclass::text FROM {table} WHERE {key} = :v"),
                    {"v": value})  # fmt: skip


def record_sql(c, user, request_id, time, cost=10):
    month = partitions.month_start(time).date()
    values = {"user": user, "request_id": request_id, "pipeline": None, "cost": cost,
              "time": time, "month": month}  # fmt: skip
    return c.execute(RECORD_USAGE, values).mappings().one()


@pytest.fixture
def fresh_url(pg_admin_url) -> Iterator[str]:
    url = support.create_database(pg_admin_url)
    yield url
    support.drop_database(pg_admin_url, url)


def _engine(url: str) -> Engine:
    return create_engine(normalize_url(url))


def test_the_migration_converts_rows_in_place_and_back(fresh_url):
    migrate.upgrade(fresh_url, "0019")
    engine = _engine(fresh_url)
    old = NOW - dt.timedelta(days=400)
    requests = [uuid.uuid4() for _ in range(3)]
    with engine.begin() as c:
        user = c.scalar(text(
            "INSERT INTO users (email, username, password_hash) "
            "VALUES ('p@example.com', 'partitions', 'x') RETURNING id"
        ))  # fmt: skip
        first = [record_sql(c, user, r, t) for r, t in zip(requests, (old, old, NOW), strict=True)]
        audit_max = c.scalar(text("SELECT max(id) FROM audit_events"))
    migrate.upgrade(fresh_url)
    with engine.begin() as c:
        assert c.scalar(text("SELECT relkind FROM pg_class WHERE relname = 'usage_events'")) == "p"
        assert where(c, "usage_events", "id", first[0]["id"]) == partitions.partition_name(
            "usage_events", partitions.month_start(old)
        )
        assert where(c, "usage_events", "id", first[2]["id"]) == partitions.partition_name(
            "usage_events", partitions.month_start(NOW)
        )
        names = {p.name for p in partitions.partitions(c, "audit_events")}
        assert "audit_events_default" in names
        assert (
            partitions.partition_name(
                "audit_events", partitions.month_start(NOW, partitions.DEFAULT_AHEAD)
            )
            in names
        )
        assert c.scalar(text("SELECT count(*) FROM usage_request_ids")) == 3
        # A retry of an event recorded before the migration returns it; a new one is new.
        again = record_sql(c, user, requests[0], NOW)
        assert again["id"] == first[0]["id"] and again["created"] is False
        fresh = record_sql(c, user, uuid.uuid4(), NOW)
        assert fresh["created"] is True
        assert c.scalar(text("SELECT max(id) FROM audit_events")) > audit_max  # ids carry on
    migrate.downgrade(fresh_url, "0019")
    with engine.begin() as c:
        assert c.scalar(text("SELECT relkind FROM pg_class WHERE relname = 'usage_events'")) == "r"
        assert c.scalar(text("SELECT count(*) FROM usage_events")) == 4
        assert c.scalar(text("SELECT to_regclass('uq_usage_events_user_id_request_id')"))
        assert c.scalar(text("SELECT to_regclass('usage_events_default')")) is None
        again = record_sql(c, user, requests[1], NOW)
        assert again["id"] == first[1]["id"] and again["created"] is False
    migrate.upgrade(fresh_url)
    with engine.connect() as c:
        assert c.scalar(text("SELECT count(*) FROM usage_events")) == 4
    engine.dispose()


def ts(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


def test_a_month_without_a_partition_lands_in_default_until_the_server_creates_it(
    app, connect, new_account, database_url
):
    """RecordUsage for a month long past: no partition, yet the write succeeds (default
    partition); the server's next check creates the month and moves the row; a retry with
    the same request_id returns the first event, before and after."""
    stub = usage_pb2_grpc.UsageServiceStub(connect(SERVICE_KEY))
    account = new_account()
    when = NOW.replace(microsecond=0) - dt.timedelta(days=5 * 365)
    request = usage_pb2.RecordUsageRequest(
        user_id=account.id, request_id=str(uuid.uuid4()), service="openai", model="gpt",
        cost_micros=42, event_time=ts(when),
    )  # fmt: skip
    first = stub.RecordUsage(request).event
    engine = _engine(database_url)
    with engine.connect() as c:
        assert where(c, "usage_events", "id", first.id) == "usage_events_default"
    assert stub.RecordUsage(request).event.id == first.id
    done = app.partitions.run_once()
    assert done is not None
    name = partitions.partition_name("usage_events", partitions.month_start(when))
    assert name in done.created and done.moved >= 1
    with engine.connect() as c:
        assert where(c, "usage_events", "id", first.id) == name
        assert c.scalar(text("SELECT count(*) FROM usage_events_default")) == 0
        assert c.scalar(text(f"SELECT relrowsecurity FROM pg_class WHERE relname = '{name}'"))
        indexes = set(
            c.scalars(text(f"SELECT indexname FROM pg_indexes WHERE tablename = '{name}'"))
        )
    assert f"ix_usage_events_user_id_event_time_{name[-7:]}" in indexes
    again = stub.RecordUsage(request)
    assert again.event.id == first.id and again.event.cost_micros == 42
    listed = stub.ListUsageEvents(usage_pb2.ListUsageEventsRequest(user_id=account.id)).events
    assert [e.id for e in listed] == [first.id]
    engine.dispose()


def test_two_servers_create_months_ahead_at_once_without_a_failure(app, database_url):
    """Each process checks at start and hourly; two at the same moment: one creates each
    month, the other finds it (neither fails)."""
    later = partitions.month_start(NOW, 7)
    other = PartitionMaintainer(make_engine(database_url, pool_size=1), ahead=2)
    with ThreadPoolExecutor(2) as pool:
        ours, theirs = pool.map(lambda m: m.run_once(now=later), (app.partitions, other))
    other.engine.dispose()
    assert ours is not None and theirs is not None
    assert not set(ours.created) & set(theirs.created)
    assert set(ours.created) | set(theirs.created) == {
        partitions.partition_name(t, partitions.month_start(later, n))
        for t in partitions.LEDGERS for n in range(app.settings.partitions_ahead + 1)
    }  # fmt: skip
    assert app.partitions.run_once(now=later) == partitions.Ensured([], 0)


@pytest.fixture
def db(pg_admin_url, template_database) -> Iterator[Database]:
    url = support.create_database(pg_admin_url, template=template_database)
    database = Database(make_engine(url, pool_size=3), statement_timeout_ms=30_000)
    yield database
    database.dispose()
    support.drop_database(pg_admin_url, url)


def test_retention_drops_whole_months_and_deletes_only_the_boundary_by_row(db):
    now = populate(db)
    with db.engine.connect() as c:  # the old months get partitions (their rows move in)
        partitions.ensure(c, now, 1)
        old_keys = c.execute(text(
            "SELECT user_id, request_id, id FROM usage_events WHERE event_time < :cut"
        ), {"cut": retention.month_cutoff(now, POLICIES.usage_event_months)}).all()  # fmt: skip
    assert len(old_keys) == EXPECTED["usage_events"]
    plan = retention.plan(db, POLICIES, now=now)
    usage = next(p for p in plan.policies if p.name == "usage_events")
    doomed = {partitions.partition_name("usage_events", partitions.month_start(months_ago(now, n)))
              for n in (30, 25)}  # fmt: skip
    assert set(usage.partitions) == doomed
    report = retention.apply(db, POLICIES, batch_size=2, lock_timeout_ms=500, now=now)
    assert report.complete and report.counts() == plan.counts()
    assert {k: v for k, v in report.counts().items() if k in EXPECTED} == EXPECTED
    usage = next(p for p in report.policies if p.name == "usage_events")
    assert set(usage.partitions) == doomed
    with db.engine.begin() as c:
        for name in doomed:
            assert c.scalar(text("SELECT to_regclass(:n)"), {"n": name}) is None
        assert not partitions.detached(c, "usage_events")
        left = c.scalar(
            text("SELECT count(*) FROM usage_request_ids WHERE event_id = ANY(:ids)"),
            {"ids": [k[2] for k in old_keys]},
        )
        assert left == 0
        # The request_id of a dropped event is free again (as after a row delete).
        user, request_id, event_id = old_keys[0]
        again = record_sql(c, user, request_id, now)
        assert again["created"] is True and again["id"] != event_id
    audit = next(p for p in report.policies if p.name == "audit_events")
    assert audit.rows == EXPECTED["audit_events"]
