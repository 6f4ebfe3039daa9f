"""Row-level security (migration 0012): a query that forgets its owner filter returns nothing
of another tenant's, and every user-owned table, old or new, is covered."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Integer, bindparam, create_engine, delete, func, insert, select, text, update
from sqlalchemy import exc as sa_exc

from server.config import Settings
from storage import embeddings, rls
from storage.actors import ANONYMOUS, SYSTEM, Actor, ActorKind, Caller
from storage.engine import make_engine, normalize_url
from storage.lifecycle.backup import take_backup
from storage.lifecycle.restore import restore
from storage.models import Article, ArticleRevision, Competitor, CompetitorArticle, User
from storage.queries import _prepare
from storage.uow import Database
from tests import support

_MIGRATION = (
    Path(__file__).resolve().parent.parent / "migrations/versions/0012_row_level_security.py"
)
# Tables with no owner: bookkeeping, and state keyed by something else than a user.
NOT_USER_OWNED = {"alembic_version", "schema_compatibility", "login_throttles"}
# User-owned tables of later migrations, with the same two policies (each names its own).
LATER_OWNED = {"user_settings", "user_secrets", "usage_request_ids"}  # 0014, 0020
READ_ONLY = {"alembic_version", "schema_compatibility"}


def _migration(path: Path = _MIGRATION):
    spec = importlib.util.spec_from_file_location(f"migration_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _owned_rows() -> set[str]:
    """The tables 0012 and later migrations (each declaring OWNED_ROWS) put under RLS."""
    later = sorted(_MIGRATION.parent.glob("*.py"))
    return {t for p in later if p.name >= _MIGRATION.name for t in _migration(p).__dict__.get(
        "OWNED_ROWS", {})}  # fmt: skip


@dataclass
class Tenant:
    user_id: uuid.UUID
    articles: set[str]
    revisions: set[str]
    competitor_articles: set[str]

    @property
    def caller(self) -> Caller:
        return Caller(Actor(ActorKind.USER, self.user_id))


def _tenant(connection, name: str) -> Tenant:
    user_id = connection.scalar(
        text(
            "INSERT INTO users (email, username, password_hash) "
            "VALUES (:email, :name, 'x') RETURNING id"
        ),
        {"email": f"{name}@example.com", "name": name},
    )
    articles, revisions = set(), set()
    for i in range(3):
        article = connection.scalar(
            text(
                "INSERT INTO articles (user_id, title, slug, content_markdown, content_html, "
                "word_count, reading_time_minutes, internal_links, external_links, content_hash) "
                "VALUES (:u, :t, :s, 'x', 'x', 1, 1, 0, 0, 'x') RETURNING id"
            ),
            {"u": user_id, "t": f"{name} {i}", "s": f"{name}-{i}"},
        )
        articles.add(str(article))
        revisions.add(
            str(
                connection.scalar(
                    text(
                        "INSERT INTO article_revisions (article_id, article_version, snapshot) "
                        "VALUES (:a, 1, '{}') RETURNING id"
                    ),
                    {"a": article},
                )
            )
        )
    competitor = connection.scalar(
        text("INSERT INTO competitors (user_id, domain) VALUES (:u, :d) RETURNING id"),
        {"u": user_id, "d": f"{name}.example.com"},
    )
    page = connection.scalar(
        text("INSERT INTO competitor_articles (competitor_id, url) VALUES (:c, :u) RETURNING id"),
        {"c": competitor, "u": f"https://{name}.example.com/1"},
    )
    return Tenant(user_id, articles, revisions, {str(page)})


@pytest.fixture(scope="module")
def tenants(owner_engine) -> tuple[Tenant, Tenant]:
    suffix = uuid.uuid4().hex[:8]
    with owner_engine.begin() as connection:  # as the tables' owner: RLS does not apply
        return _tenant(connection, f"rls-a-{suffix}"), _tenant(connection, f"rls-b-{suffix}")


@pytest.fixture(scope="module")
def db(database_url: str) -> Iterator[Database]:
    """The storage layer as the server builds it: every transaction switches role."""
    database = Database(make_engine(database_url, pool_size=2), role=Settings().db_role)
    yield database
    database.dispose()


def ids(db: Database, caller: Caller, statement) -> set[str]:
    return {str(i) for i in db.run(caller, lambda tx: tx.session.scalars(statement).all())}


def test_unscoped_reads_as_a_user_return_only_its_own_rows(db, tenants):
    a, b = tenants
    assert ids(db, a.caller, select(Article.id)) == a.articles  # no owner filter: RLS's
    assert ids(db, b.caller, select(Article.id)) == b.articles
    assert ids(db, a.caller, select(ArticleRevision.id)) == a.revisions  # through the parent
    assert ids(db, a.caller, select(CompetitorArticle.id)) == a.competitor_articles
    assert ids(db, a.caller, select(User.id)) == {str(a.user_id)}
    # The one-round-trip path (Database.query) too.
    everything = _prepare(
        "rls_test_article_ids", select(Article.id).limit(bindparam("n", type_=Integer))
    )
    assert {str(r.id) for r in db.query(a.caller, everything, {"n": 1000})} == a.articles


def test_unscoped_writes_as_a_user_touch_only_its_own_rows(db, owner_engine, tenants):
    a, b = tenants

    def rename_all(tx):
        return tx.session.execute(update(Competitor).values(name="renamed by a")).rowcount

    assert db.run(a.caller, rename_all) == 1
    doomed = select(ArticleRevision.id).where(ArticleRevision.article_id.in_(a.articles))
    deleted = db.run(a.caller, lambda tx: tx.session.execute(delete(ArticleRevision)).rowcount)
    assert deleted == len(a.revisions)
    with owner_engine.connect() as connection:
        names = dict(connection.execute(select(Competitor.user_id, Competitor.name)).all())
        assert names[a.user_id] == "renamed by a"
        assert names[b.user_id] == ""
        assert not connection.scalars(doomed).all()
        kept = select(func.count()).where(ArticleRevision.article_id.in_(b.articles))
        assert connection.scalar(kept) == len(b.revisions)


def test_a_user_cannot_write_a_row_for_another_user(db, tenants):
    a, b = tenants
    steal = insert(Competitor).values(user_id=b.user_id, domain="stolen.example.com")
    with pytest.raises(sa_exc.ProgrammingError, match="row-level security"):
        db.run(a.caller, lambda tx: tx.session.execute(steal))
    give_away = update(Competitor).values(user_id=b.user_id)
    with pytest.raises(sa_exc.ProgrammingError, match="row-level security"):
        db.run(a.caller, lambda tx: tx.session.execute(give_away))


@pytest.mark.parametrize("kind", [ActorKind.ADMIN, ActorKind.SERVICE, ActorKind.SYSTEM])
def test_admin_service_and_system_see_every_tenant(db, tenants, kind):
    caller = Caller(SYSTEM if kind is ActorKind.SYSTEM else Actor(kind, name="x"))
    a, b = tenants
    assert a.articles | b.articles <= ids(db, caller, select(Article.id))
    assert b.revisions <= ids(db, caller, select(ArticleRevision.id))  # (a's: see above)
    role = db.run(caller, lambda tx: tx.session.scalar(text("SELECT current_user")))
    assert role == rls.privileged_role(rls.APP_ROLE)


def test_anonymous_reaches_only_what_login_and_registration_need(db, tenants):
    a, b = tenants
    anonymous = Caller(ANONYMOUS)
    assert not ids(db, anonymous, select(Article.id))
    assert not ids(db, anonymous, select(CompetitorArticle.id))
    assert {str(a.user_id), str(b.user_id)} <= ids(db, anonymous, select(User.id))
    role = db.run(anonymous, lambda tx: tx.session.scalar(text("SELECT current_user")))
    assert role == rls.APP_ROLE


def test_every_user_owned_table_has_row_level_security(owner_engine):
    """Every table with a user_id column, or a foreign key to such a table (owned through its
    parent), or users itself: RLS on, and a policy for the user scope and for the 'all' role.
    A new table that misses them fails here. The ledgers' monthly partitions (migration 0020)
    are checked as their parent, and must carry its policies too."""
    with owner_engine.connect() as connection:
        partitions = set(
            connection.scalars(
                text("SELECT relname FROM pg_class WHERE relispartition AND relkind = 'r'")
            )
        )
        tables = set(
            connection.scalars(
                text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            )
        )
        with_user_id = set(
            connection.scalars(
                text(
                    "SELECT table_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND column_name = 'user_id'"
                )
            )
        )
        parents = connection.execute(
            text(
                "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
                "WHERE contype = 'f' AND connamespace = current_schema()::regnamespace"
            )
        ).all()
        rls_on = set(connection.scalars(text("SELECT relname FROM pg_class WHERE relrowsecurity")))
        policies = set(
            connection.execute(
                text(
                    "SELECT tablename, policyname FROM pg_policies "
                    "WHERE schemaname = current_schema()"
                )
            ).all()
        )
    for partition in partitions:
        assert partition in rls_on, f"{partition}: a partition without RLS"
        assert (partition, "blogstore_owner") in policies, f"{partition}: no blogstore_owner"
        assert (partition, "blogstore_all") in policies, f"{partition}: no blogstore_all"
    tables -= partitions
    owned = {"users"} | (with_user_id - partitions)
    while grown := {child for child, parent in parents if parent in owned} - owned - partitions:
        owned |= grown
    # 0012 and later; the embeddings' tables (0018) only where the server has pgvector
    assert owned - NOT_USER_OWNED - set(embeddings.TABLES) == _owned_rows() | LATER_OWNED
    for table in owned:
        assert table in rls_on, f"{table}: ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"
        assert (table, "blogstore_owner") in policies, f"{table}: no blogstore_owner policy"
        assert (table, "blogstore_all") in policies, f"{table}: no blogstore_all policy"
    assert tables - owned <= NOT_USER_OWNED | READ_ONLY, "a new table: owned by a user or not?"


def missing_grants(connection) -> list[str]:
    """Tables, sequences and functions of the schema the service's role cannot use."""
    missing = connection.scalars(
        text(
            "SELECT c.relname FROM pg_class c "
            "WHERE c.relnamespace = current_schema()::regnamespace AND CASE c.relkind "
            "WHEN 'r' THEN NOT has_table_privilege(:app, c.oid, "
            "CASE WHEN c.relname = ANY(:read_only) THEN 'SELECT' "
            "ELSE 'SELECT, INSERT, UPDATE, DELETE' END) "
            "WHEN 'S' THEN NOT has_sequence_privilege(:app, c.oid, 'USAGE') "
            "ELSE false END"
        ),
        {"app": rls.APP_ROLE, "read_only": sorted(READ_ONLY)},
    ).all()
    functions = connection.scalars(
        text(
            "SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace "
            "AND NOT has_function_privilege(:app, oid, 'EXECUTE')"
        ),
        {"app": rls.APP_ROLE},
    ).all()
    return [*missing, *functions]


def test_the_roles_have_what_the_service_needs_and_do_not_bypass(owner_engine):
    migration = _migration()
    assert rls.APP_ROLE == migration.ROLE == Settings().db_role
    assert rls.privileged_role(rls.APP_ROLE) == migration.ALL_ROLE
    with owner_engine.connect() as connection:
        roles = connection.execute(
            text(
                "SELECT rolname, rolsuper, rolbypassrls, rolcanlogin, "
                "pg_has_role(rolname, :app, 'MEMBER'), pg_has_role(current_user, oid, 'MEMBER') "
                "FROM pg_roles WHERE rolname IN (:app, :all) ORDER BY rolname"
            ),
            {"app": migration.ROLE, "all": migration.ALL_ROLE},
        ).all()
        assert [tuple(r) for r in roles] == [
            (migration.ROLE, False, False, False, True, True),
            (migration.ALL_ROLE, False, False, False, True, True),
        ]
        assert not missing_grants(connection), f"GRANT ... TO {migration.ROLE} missing"


def test_a_restored_backup_keeps_the_grants_and_the_isolation(
    database_url, pg_admin_url, tenants, tmp_path
):
    """pg_restore --no-acl drops every GRANT, and pg_dump leaves pg_catalog's LEAKPROOF marks
    out: restore puts both back."""
    a, _ = tenants
    backup = take_backup(database_url, tmp_path, embedded=False, compression=1)
    target = support.create_database(pg_admin_url)
    try:
        restore(backup.dump, target, embedded=False)
        engine = create_engine(normalize_url(target))
        with engine.connect() as connection:
            assert not missing_grants(connection)
            assert rls.missing_leakproof(connection) == []
        engine.dispose()
        restored = Database(make_engine(target, pool_size=1), role=rls.APP_ROLE)
        try:
            assert ids(restored, a.caller, select(Article.id)) == a.articles
        finally:
            restored.dispose()
    finally:
        support.drop_database(pg_admin_url, target)
