"""Fixtures: one PostgreSQL per run, a migrated template database, a real server per module."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from blogstore import client
from blogstore.v1 import users_pb2, users_pb2_grpc
from sqlalchemy import Engine, create_engine, make_url

from bench.pgbouncer import PgBouncer, running
from server.admin import create_admin
from server.app import App, create_server
from server.config import Settings
from storage import migrate
from storage.engine import normalize_url
from tests import support
from tests.support import PASSWORD, Account, make_settings, unique


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    with support.postgres_server() as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def pgbouncer(request: pytest.FixtureRequest) -> Iterator[PgBouncer | None]:
    """With BLOGSTORE_TEST_PGBOUNCER=1, one PgBouncer (transaction mode) per run in front of
    the test PostgreSQL: every server the tests start (support.make_settings, server_env)
    goes through it; admin work and the tests' own connections go straight to PostgreSQL."""
    if os.environ.get("BLOGSTORE_TEST_PGBOUNCER") != "1":
        yield None
        return
    with running(request.getfixturevalue("pg_admin_url")) as bouncer:
        support.PGBOUNCER.append(bouncer)
        try:
            yield bouncer
        finally:
            support.PGBOUNCER.remove(bouncer)


@pytest.fixture(scope="session")
def template_database(pg_admin_url: str) -> Iterator[str]:
    """A database migrated to head once per run; tests clone it (CREATE DATABASE ... TEMPLATE)."""
    url = support.create_database(pg_admin_url)
    migrate.upgrade(url)
    yield make_url(url).database
    support.drop_database(pg_admin_url, url)


@pytest.fixture(scope="module")
def database_url(pg_admin_url: str, template_database: str) -> Iterator[str]:
    url = support.create_database(pg_admin_url, template=template_database)
    yield url
    support.drop_database(pg_admin_url, url)


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[App]:
    app = create_server(settings)
    app.start()
    yield app
    app.stop(grace=0)


@pytest.fixture(scope="module")
def target(app: App) -> str:
    return f"127.0.0.1:{app.port}"


@pytest.fixture(scope="module")
def connect(target: str) -> Iterator[Callable[[str | None], grpc.Channel]]:
    channels: list[grpc.Channel] = []

    def make(token: str | None = None) -> grpc.Channel:
        channel = client.connect(target, token, default_timeout=30)
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        channel.close()


@pytest.fixture(scope="module")
def admin_key(app: App, settings: Settings) -> str:
    _, key = create_admin(
        settings.database_url.get_secret_value(),
        settings,
        email=f"admin-{uuid.uuid4().hex[:8]}@example.com",
        username=f"admin-{uuid.uuid4().hex[:8]}",
        password=PASSWORD,
    )
    return key


@pytest.fixture(scope="module")
def admin_users(connect, admin_key: str) -> users_pb2_grpc.UsersServiceStub:
    return users_pb2_grpc.UsersServiceStub(connect(admin_key))


@pytest.fixture(scope="module")
def new_account(admin_users, connect) -> Callable[[], Account]:
    def make() -> Account:
        name = unique()
        user = admin_users.CreateUser(
            users_pb2.CreateUserRequest(
                email=f"{name}@example.com", username=name, password=PASSWORD
            )
        ).user
        token = (
            users_pb2_grpc.UsersServiceStub(connect())
            .Authenticate(users_pb2.AuthenticateRequest(login=name, password=PASSWORD))
            .access_token
        )
        return Account(user, token, users_pb2_grpc.UsersServiceStub(connect(token)))

    return make


@pytest.fixture
def started() -> Iterator[list[App]]:
    """Apps a test starts with support.start_app; stopped when it ends."""
    apps: list[App] = []
    yield apps
    for app in apps:
        app.stop(grace=0)


@pytest.fixture(scope="module")
def owner_engine(database_url: str) -> Iterator[Engine]:
    """The connecting user, the tables' owner: row-level security does not apply to it."""
    engine = create_engine(normalize_url(database_url))
    yield engine
    engine.dispose()
