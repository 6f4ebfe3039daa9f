"""Row-level security keeps the plans and fails clearly: a user's Search and tag filter use
their GIN indexes under RLS (the operators are marked LEAKPROOF, the tests run as a
superuser), and a BLOGSTORE_DB_ROLE the login cannot switch to is a readiness failure."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import grpc
import pytest
from blogstore.v1 import users_pb2, users_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.dialects import postgresql

from server.app import create_server
from storage import rls
from storage.actors import Actor, ActorKind, Caller
from storage.engine import make_engine, normalize_url
from storage.migrate import CodeSchema
from storage.repositories.article_reads import (
    ArticleFilters,
    list_statement,
    list_values,
    search_rank_statement,
    search_values,
)
from storage.uow import Database
from tests.support import PASSWORD, SERVICE_KEY, make_settings, unique

RARE_WORD, RARE_TAG = "zyzzogeton", "rare-tag"


@pytest.fixture(scope="module")
def writer(owner_engine) -> uuid.UUID:
    """A user with 500 articles: the word and the tag in one of them."""
    with owner_engine.begin() as connection:
        user_id = connection.scalar(
            text(
                "INSERT INTO users (email, username, password_hash) "
                "VALUES ('rls-plans@example.com', 'rls-plans', 'x') RETURNING id"
            )
        )
        connection.execute(
            text(
                "INSERT INTO articles (user_id, title, slug, content_markdown, content_html, "
                "word_count, reading_time_minutes, internal_links, external_links, "
                "content_hash, tags) "
                "SELECT :u, 'title ' || i, 'slug-' || i, body, body, 3, 1, 0, 0, 'x', "
                "CASE WHEN i = 7 THEN ARRAY[:tag, 'common'] ELSE ARRAY['common'] END "
                "FROM generate_series(1, 500) i, "
                "LATERAL (SELECT CASE WHEN i = 7 THEN 'about the ' || :word "
                "ELSE 'ordinary words ' || i END AS body) b"
            ),
            {"u": user_id, "word": RARE_WORD, "tag": RARE_TAG},
        )
        connection.execute(text("ANALYZE articles"))
    return user_id


def plan_as_user(database_url: str, user_id: uuid.UUID, statement, values) -> str:
    """EXPLAIN of `statement` with its values, as the server runs it for the user (with no
    sequential scans: the table is small; the choice is between the owner's and the GIN index)."""
    compiled = statement.compile(dialect=postgresql.dialect())
    params = {**compiled.params, **values}

    def explain(tx):
        connection = tx.session.connection()
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        return connection.exec_driver_sql(f"EXPLAIN {compiled}", params).all()

    database = Database(make_engine(database_url, pool_size=1), role=rls.APP_ROLE)
    try:
        rows = database.run(Caller(Actor(ActorKind.USER, user_id)), explain)
        return "\n".join(r[0] for r in rows)
    finally:
        database.dispose()


def test_the_migration_marked_the_index_operators_leakproof(owner_engine):
    with owner_engine.connect() as connection:
        assert rls.missing_leakproof(connection) == []


def test_a_users_search_and_tag_filter_use_their_gin_indexes_under_rls(database_url, writer):
    search = plan_as_user(
        database_url,
        writer,
        search_rank_statement(ArticleFilters(), writer, after=False, phrase_since=False),
        search_values(RARE_WORD, ArticleFilters(), writer, None, 20, None),
    )
    assert "ix_articles_search_vector" in search, search
    tagged = ArticleFilters(tag=RARE_TAG)
    listing = plan_as_user(
        database_url,
        writer,
        list_statement(tagged, writer, order_by="create_time desc", after=None, full=False),
        list_values(tagged, writer, None, 50),
    )
    assert "ix_articles_tags" in listing, listing


@pytest.fixture
def stranger(pg_admin_url, database_url) -> Iterator[str]:
    """The URL of a login that may read the schema's bookkeeping but is no member of the
    service's roles."""
    name = f"rls_stranger_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalize_url(database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE ROLE {name} LOGIN"))
        connection.execute(text(f"GRANT SELECT ON alembic_version, schema_compatibility TO {name}"))
    try:
        yield make_url(database_url).set(username=name, password=None).render_as_string(False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP OWNED BY {name}"))
            connection.execute(text(f"DROP ROLE {name}"))
        admin.dispose()


def test_a_role_the_login_cannot_switch_to_is_not_ready(owner_engine, stranger):
    with owner_engine.connect() as connection:
        assert CodeSchema(role=rls.APP_ROLE).verdict(connection).ready
        missing = CodeSchema(role="rls_no_such_role").verdict(connection)
    assert not missing.ready
    assert "BLOGSTORE_DB_ROLE=rls_no_such_role" in missing.reason
    assert "does not exist" in missing.reason
    engine = create_engine(normalize_url(stranger))
    try:
        with engine.connect() as connection:
            assert CodeSchema(role=rls.NO_ROLE).verdict(connection).ready
            foreign = CodeSchema(role=rls.APP_ROLE).verdict(connection)
    finally:
        engine.dispose()
    assert not foreign.ready
    assert f"BLOGSTORE_DB_ROLE={rls.APP_ROLE}" in foreign.reason
    assert "cannot switch" in foreign.reason


def _readiness(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def test_a_server_with_a_missing_role_is_not_serving_and_says_why_once(database_url, caplog):
    app = create_server(make_settings(database_url, db_role="rls_no_such_role"))
    with caplog.at_level(logging.WARNING):
        app.start()
        try:
            assert _readiness(app.port) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert app.health.check_now() is False  # polled again: no second warning
            with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                register = users_pb2_grpc.UsersServiceStub(channel).CreateUser
                name = unique()
                request = users_pb2.CreateUserRequest(
                    email=f"{name}@example.com", username=name, password=PASSWORD
                )
                with pytest.raises(grpc.RpcError) as refused:  # calls that still arrive
                    register(request, metadata=[("authorization", f"Bearer {SERVICE_KEY}")],
                             timeout=10)  # fmt: skip
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        finally:
            app.stop(grace=0)
    said = [r.getMessage() for r in caplog.records if "BLOGSTORE_DB_ROLE" in r.getMessage()]
    assert len(said) == 1, said
    assert "rls_no_such_role does not exist" in said[0]


def test_the_server_warns_at_start_up_without_the_leakproof_marks(
    database_url, owner_engine, caplog
):
    def execute(sql: str) -> None:
        with owner_engine.begin() as connection:
            connection.exec_driver_sql(sql)

    execute(rls.UNMARK_LEAKPROOF)
    try:
        app = create_server(make_settings(database_url))
        with caplog.at_level(logging.WARNING):
            app.start()
            app.stop(grace=0)
    finally:
        execute(rls.MARK_LEAKPROOF)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    said = [w for w in warnings if "LEAKPROOF" in w]
    assert len(said) == 1, warnings
    assert all(statement in said[0] for statement in rls.LEAKPROOF_STATEMENTS)
    with owner_engine.connect() as connection:
        assert rls.missing_leakproof(connection) == []
