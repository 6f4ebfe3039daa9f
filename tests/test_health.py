"""Liveness and readiness, Check/List/Watch, bounded watchers, and answers while every worker
is busy or the database hangs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from blogstore.v1 import users_pb2, users_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text

from server.admin import create_admin
from server.app import create_server
from server.health import (
    LIVENESS,
    MIN_INTERVAL_SECONDS,
    SERVICE_UNKNOWN,
    WATCHERS_PER_PEER,
    HealthMonitor,
    HealthServicer,
)
from storage.engine import normalize_url
from storage.migrate import CodeSchema
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


def test_serving_for_the_server_and_each_service(target):
    assert check(target) == SERVING
    assert check(target, "blogstore.v1.UsersService") == SERVING
    with pytest.raises(grpc.RpcError) as caught:
        check(target, "no.such.Service")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_not_serving_until_the_schema_is_at_head(pg_admin_url, started):
    empty = support.create_database(pg_admin_url)  # never migrated
    try:
        app = support.start_app(started, empty)
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
    app = support.start_app(started, proxy.url_for(database_url))
    target = f"127.0.0.1:{app.port}"
    assert wait_for(lambda: check(target) == SERVING)
    proxy.cut()
    assert wait_for(lambda: check(target) == NOT_SERVING)
    assert check(target, "blogstore.v1.UsersService") == NOT_SERVING
    proxy.restore()
    assert wait_for(lambda: check(target) == SERVING)


def test_database_outage_is_unavailable_not_internal(database_url, started):
    proxy = support.TcpProxy(database_url)
    app = support.start_app(started, proxy.url_for(database_url), db_connect_timeout_seconds=2)
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
    # The production bcrypt cost: the logins below hold the workers with CPU, not the database.
    app = support.start_app(started, database_url, threads=2, bcrypt_rounds=12)
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


def list_statuses(target: str) -> dict[str, int]:
    with grpc.insecure_channel(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).List(
            health_pb2.HealthListRequest(), timeout=5
        )
        return {name: status.status for name, status in response.statuses.items()}


def test_liveness_stays_serving_while_the_database_is_down(database_url, started):
    proxy = support.TcpProxy(database_url)
    app = support.start_app(started, proxy.url_for(database_url))
    target = f"127.0.0.1:{app.port}"
    assert check(target, LIVENESS) == SERVING
    proxy.cut()
    assert wait_for(lambda: check(target) == NOT_SERVING)
    assert check(target, LIVENESS) == SERVING
    proxy.restore()
    assert wait_for(lambda: check(target) == SERVING)


def test_list_reports_liveness_the_server_and_each_service(target):
    statuses = list_statuses(target)
    assert statuses[""] == statuses[LIVENESS] == SERVING
    assert statuses["blogstore.v1.ArticlesService"] == SERVING
    assert len(statuses) == 7


class Watch:
    """A Health/Watch stream whose statuses are collected by a thread."""

    def __init__(self, channel: grpc.Channel, service: str = "") -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        self.stream = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=60)
        self.statuses: list[int] = []
        self.code: grpc.StatusCode | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for response in self.stream:
                self.statuses.append(response.status)
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            self.code = error.code()


def test_watch_sends_only_on_change_and_ends_at_shutdown(database_url):
    app = create_server(make_settings(database_url, health_interval_seconds=3600))
    app.start()
    servicer = app.health.servicer
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        watch = Watch(channel)
        unknown = Watch(channel, "no.such.Service")
        assert wait_for(lambda: watch.statuses == [SERVING])
        assert wait_for(lambda: unknown.statuses == [SERVICE_UNKNOWN])
        servicer.set("", NOT_SERVING)
        servicer.set("", NOT_SERVING)  # the same again: nothing sent
        assert wait_for(lambda: watch.statuses == [SERVING, NOT_SERVING])
        servicer.set("", SERVING)
        assert wait_for(lambda: watch.statuses == [SERVING, NOT_SERVING, SERVING])
        time.sleep(0.3)
        assert watch.statuses == [SERVING, NOT_SERVING, SERVING]
        app.health.stop()  # what App.stop does first: graceful shutdown
        assert wait_for(lambda: watch.code is grpc.StatusCode.UNAVAILABLE)
        assert watch.statuses == [SERVING, NOT_SERVING, SERVING, NOT_SERVING]
        assert wait_for(lambda: unknown.code is grpc.StatusCode.UNAVAILABLE)
        assert check(f"127.0.0.1:{app.port}", LIVENESS) == NOT_SERVING
        servicer.set("", SERVING)  # ignored from now on
        assert check(f"127.0.0.1:{app.port}") == NOT_SERVING
        assert wait_for(lambda: servicer.open_watchers == 0)
    app.stop(grace=0)


def test_watchers_are_bounded_per_client(target, app):
    channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        watches = [Watch(channel) for _ in range(WATCHERS_PER_PEER)]
        assert wait_for(lambda: all(w.statuses == [SERVING] for w in watches))
        refused = Watch(channel)
        assert wait_for(lambda: refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED)
        # Another client on the same host is the same peer: refused too.
        with grpc.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as other:
            also_refused = Watch(other)
            assert wait_for(lambda: also_refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert check(target) == SERVING  # Check is not a watcher
        watches[0].stream.cancel()
        assert wait_for(lambda: app.health.servicer.open_watchers == WATCHERS_PER_PEER - 1)
        again = Watch(channel)
        assert wait_for(lambda: again.statuses == [SERVING])
        for watch in [*watches, again]:
            watch.stream.cancel()
        assert wait_for(lambda: app.health.servicer.open_watchers == 0)
    finally:
        channel.close()


def test_watchers_are_bounded_per_server():
    servicer = HealthServicer(max_watchers=3)
    servicer.set("", SERVING)
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            watches = [Watch(channel) for _ in range(3)]
            assert wait_for(lambda: all(w.statuses == [SERVING] for w in watches))
            refused = Watch(channel)
            assert wait_for(lambda: refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED)
            # Two request workers, both busy would not matter: Check has its own pool.
            assert check(f"127.0.0.1:{port}") == SERVING
            for watch in watches:
                watch.stream.cancel()
            assert wait_for(lambda: servicer.open_watchers == 0)
    finally:
        server.stop(0).wait()


def test_a_hung_database_check_cannot_freeze_health(database_url, started, pg_admin_url):
    app = support.start_app(started, database_url)
    target = f"127.0.0.1:{app.port}"
    assert check(target) == SERVING
    blocker = create_engine(normalize_url(database_url))
    with blocker.begin() as connection:  # the monitor's SELECT now waits on this lock
        connection.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
        assert wait_for(lambda: check(target) == NOT_SERVING)
        started_at = time.perf_counter()
        assert check(target, LIVENESS) == SERVING
        assert time.perf_counter() - started_at < 0.1
    blocker.dispose()
    assert wait_for(lambda: check(target) == SERVING)


def test_the_monitor_never_spins(database_url):
    checks = 0

    class Counting(CodeSchema):
        def verdict(self, connection):
            nonlocal checks
            checks += 1
            return super().verdict(connection)

    monitor = HealthMonitor(HealthServicer(), database_url, [], 0, code_schema=Counting())
    monitor.start()
    time.sleep(1.0)
    monitor.stop()
    assert monitor.interval == MIN_INTERVAL_SECONDS
    assert 3 <= checks <= 1.0 / MIN_INTERVAL_SECONDS + 1


def test_a_check_past_its_wall_clock_limit_counts_as_not_ready(database_url, monkeypatch, caplog):
    monkeypatch.setattr("server.health.CHECK_TIMEOUT_SECONDS", 0.3)
    release, calls = threading.Event(), []

    class Hanging(CodeSchema):
        def verdict(self, connection):
            calls.append(1)
            release.wait(30)
            return super().verdict(connection)

    monitor = HealthMonitor(HealthServicer(), database_url, [], 3600, code_schema=Hanging())
    try:
        started_at = time.perf_counter()
        assert monitor.check_now() is False
        assert time.perf_counter() - started_at < 1.0
        assert "the database did not answer within 0.3 s" in caplog.text
        assert monitor.check_now() is False  # still hung: no second check piles up
        assert len(calls) == 1
        release.set()
        assert monitor.check_now() is True
        assert monitor.servicer.status("") == SERVING
    finally:
        release.set()
        monitor.stop()
