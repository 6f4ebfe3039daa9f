"""Readiness follows the database and the schema, and answers while every worker is busy."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from blogstore.v1 import users_pb2, users_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.admin import create_admin
from server.app import App, create_server
from tests import support
from tests.support import PASSWORD, make_settings, unique

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def check(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def started() -> Iterator[list[App]]:
    apps: list[App] = []
    yield apps
    for app in apps:
        app.stop(grace=0)


def start(apps: list[App], database_url: str, **overrides) -> App:
    app = create_server(make_settings(database_url, **overrides))
    app.start()
    apps.append(app)
    return app


def test_serving_for_the_server_and_each_service(target):
    assert check(target) == SERVING
    assert check(target, "blogstore.v1.UsersService") == SERVING
    with pytest.raises(grpc.RpcError) as caught:
        check(target, "no.such.Service")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_not_serving_until_the_schema_is_at_head(pg_admin_url, started):
    empty = support.create_database(pg_admin_url)  # never migrated
    try:
        app = start(started, empty)
        assert check(f"127.0.0.1:{app.port}") == NOT_SERVING
        from storage import migrate

        migrate.upgrade(empty)
        assert wait_for(lambda: check(f"127.0.0.1:{app.port}") == SERVING)
    finally:
        for app in started:
            app.stop(grace=0)
        started.clear()
        support.drop_database(pg_admin_url, empty)


def test_follows_the_database_down_and_back(database_url, started):
    proxy = support.TcpProxy(database_url)
    app = start(started, proxy.url_for(database_url))
    target = f"127.0.0.1:{app.port}"
    assert wait_for(lambda: check(target) == SERVING)
    proxy.cut()
    assert wait_for(lambda: check(target) == NOT_SERVING)
    assert check(target, "blogstore.v1.UsersService") == NOT_SERVING
    proxy.restore()
    assert wait_for(lambda: check(target) == SERVING)


def test_database_outage_is_unavailable_not_internal(database_url, started):
    proxy = support.TcpProxy(database_url)
    app = start(started, proxy.url_for(database_url), db_connect_timeout_seconds=2)
    _, key = create_admin(
        database_url,
        app.settings,
        email=f"{unique()}@example.com",
        username=unique(),
        password=PASSWORD,
    )
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = users_pb2_grpc.UsersServiceStub(channel)
        metadata = [("authorization", f"Bearer {key}")]
        request = users_pb2.GetCurrentUserRequest()
        assert stub.GetCurrentUser(request, metadata=metadata, timeout=10).user.is_admin
        proxy.cut()
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetCurrentUser(request, metadata=metadata, timeout=10)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        proxy.restore()
        assert wait_for(
            lambda: _succeeds(lambda: stub.GetCurrentUser(request, metadata=metadata, timeout=10))
        )


def _succeeds(call) -> bool:
    try:
        call()
    except grpc.RpcError:
        return False
    return True


def test_answers_within_100ms_while_every_worker_is_busy(database_url, started, admin_users):
    app = start(started, database_url, threads=2)
    target = f"127.0.0.1:{app.port}"
    name = unique()
    admin_users.CreateUser(
        users_pb2.CreateUserRequest(email=f"{name}@example.com", username=name, password=PASSWORD)
    )
    stop = threading.Event()

    def keep_busy() -> None:  # bcrypt-bound logins: each holds a worker for ~0.3-0.5 s
        with grpc.insecure_channel(target) as channel:
            stub = users_pb2_grpc.UsersServiceStub(channel)
            while not stop.is_set():
                stub.Authenticate(
                    users_pb2.AuthenticateRequest(login=name, password=PASSWORD), timeout=30
                )

    loaders = [threading.Thread(target=keep_busy) for _ in range(6)]
    for thread in loaders:
        thread.start()
    try:
        time.sleep(1.0)
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)  # connect first
            latencies = []
            for _ in range(10):
                started_at = time.perf_counter()
                assert stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == SERVING
                latencies.append(time.perf_counter() - started_at)
                time.sleep(0.05)
    finally:
        stop.set()
        for thread in loaders:
            thread.join()
    assert max(latencies) < 0.1, latencies
