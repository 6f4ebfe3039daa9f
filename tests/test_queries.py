"""Database.query: one round trip per hot statement, prepared once per pooled connection."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from storage.actors import SYSTEM, Caller
from storage.engine import make_engine
from storage.errors import DeadlineExceeded
from storage.queries import get_article
from storage.uow import Database


@pytest.fixture
def db(database_url):
    """One pooled connection, so every call below reuses (and may confuse) the same one."""
    database = Database(make_engine(database_url, pool_size=1))
    yield database
    database.dispose()


def prepared_names(db: Database) -> set[str]:
    with db.engine.connect() as connection:
        return set(connection.scalars(text("SELECT name FROM pg_prepared_statements")))


def test_statement_is_prepared_once_and_reused(db):
    caller = Caller(SYSTEM)
    assert get_article(db, caller, uuid.uuid4()) is None
    assert get_article(db, caller, uuid.uuid4()) is None
    assert prepared_names(db) == {"blogstore_get_article"}


def test_recovers_when_the_connection_lost_its_statements(db):
    caller = Caller(SYSTEM)
    get_article(db, caller, uuid.uuid4())
    with db.engine.connect() as connection:  # e.g. a pooler or DISCARD ALL dropped them
        connection.execute(text("DEALLOCATE ALL"))
        connection.commit()
    assert get_article(db, caller, uuid.uuid4()) is None  # 26000, re-prepared, retried
    assert prepared_names(db) == {"blogstore_get_article"}


def test_recovers_when_bookkeeping_forgot_a_statement(db):
    caller = Caller(SYSTEM)
    get_article(db, caller, uuid.uuid4())
    connection = db.engine.raw_connection()
    connection.info["prepared_statements"].clear()  # the server still has it
    connection.close()
    assert get_article(db, caller, uuid.uuid4()) is None  # 42P05, then EXECUTE


def test_an_expired_deadline_never_reaches_the_database(db):
    caller = Caller(SYSTEM, deadline=0.0)  # long past on the monotonic clock
    with pytest.raises(DeadlineExceeded):
        get_article(db, caller, uuid.uuid4())


def test_credential_bookkeeping_skips_the_flush_only_for_itself(db):
    """The batched usage counts (server/credential_cache.UsageCounts) commit without waiting
    for the WAL flush; the setting is the transaction's own, so the pooled connection keeps
    synchronous_commit on. The credential check itself only reads."""
    import datetime as dt

    from storage.models import ApiKey
    from storage.queries import _RESOLVE, resolve_credential

    assert "UPDATE" not in _RESOLVE[ApiKey].sql(prepare=False).upper()
    assert resolve_credential(db, Caller(SYSTEM), ApiKey, b"\0" * 32) is None
    uses = [("api_keys", uuid.uuid4(), 1, dt.datetime.now(dt.UTC))]
    db.run(Caller(SYSTEM), lambda tx: tx.credentials.record_uses(uses))
    with db.engine.connect() as connection:  # the same (only) pooled connection
        assert connection.scalar(text("SHOW synchronous_commit")) == "on"
