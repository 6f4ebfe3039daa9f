"""Faults on a throwaway PostgreSQL cluster: a hung database, a lost one, a full pool, kill -9.

Each test is bounded in time. The cluster is this module's own (tests/support.Cluster): it is
frozen through a TcpProxy and killed outright, which the shared test server must never see.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from blogstore.v1 import (
    articles_pb2,
    articles_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from server.admin import create_admin
from storage import errors, migrate
from storage.actors import SYSTEM, Caller
from storage.deadlines import WATCHDOG
from storage.engine import PING_AFTER_IDLE_SECONDS, make_engine
from storage.uow import Database, Prepared
from tests import support
from tests.support import PASSWORD, SERVICE_KEY, make_settings, unique

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED
MISSING = str(uuid.UUID(int=1))
_SELECT_1 = Prepared(
    name="faults_select_1",
    body="SELECT $1::int AS one",
    params=("one",),
    types=("int",),
    constants={"one": 1},
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[support.Cluster]:
    root = Path(tempfile.mkdtemp(prefix="blogstore-faults-"))
    cluster = None
    try:
        cluster = support.Cluster(root)
        cluster.start()
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def fault_url(cluster: support.Cluster) -> str:
    url = support.create_database(cluster.url)
    migrate.upgrade(url)
    return url


def admin_key(database_url: str) -> str:
    name = unique("admin")
    settings = make_settings(database_url)
    return create_admin(
        database_url, settings, email=f"{name}@example.com", username=name, password=PASSWORD
    )[1]


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def readiness(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest()
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=1).status


def seconds_until(predicate: Callable[[], bool], timeout: float) -> float:
    """How long until `predicate` holds (polled every 20 ms); fails past `timeout`."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"not within {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - started


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return OK


def db_paths(channel: grpc.Channel, key: str) -> list[Callable[[float], object]]:
    """One call per database path, each taking its deadline: the credential check alone, the
    hot path (Database.query) and the ORM path (Database.run)."""
    users = users_pb2_grpc.UsersServiceStub(channel)
    articles = articles_pb2_grpc.ArticlesServiceStub(channel)
    return [
        lambda t: users.GetCurrentUser(
            users_pb2.GetCurrentUserRequest(), metadata=auth(key), timeout=t
        ),
        lambda t: articles.GetArticle(
            articles_pb2.GetArticleRequest(id=MISSING), metadata=auth(SERVICE_KEY), timeout=t
        ),
        lambda t: users.GetUser(
            users_pb2.GetUserRequest(id=MISSING), metadata=auth(SERVICE_KEY), timeout=t
        ),
    ]


def request_threads_are_free(port: int, threads: int) -> bool:
    """`threads` anonymous calls at once, each answered at once: no request thread is pinned
    (they are refused by the auth interceptor, on a request thread, without the database)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = articles_pb2_grpc.ArticlesServiceStub(channel)
        probe = articles_pb2.GetArticleRequest(id=MISSING)
        with ThreadPoolExecutor(threads) as pool:
            codes = list(pool.map(lambda _: code_of(lambda: stub.GetArticle(probe, timeout=0.5)),
                                  range(threads)))  # fmt: skip
    return codes == [grpc.StatusCode.UNAUTHENTICATED] * threads


def access_durations(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, float]]:
    return [
        (r.rpc_method, r.code, r.duration_ms / 1000)
        for r in caplog.records
        if r.name == "blogstore.access" and hasattr(r, "duration_ms")
    ]


def assert_no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_a_hung_database_frees_request_threads_and_health_within_bounds(fault_url, started, caplog):
    """The proxy stops forwarding and keeps every socket open: the database accepts bytes and
    never answers. Calls with a 2 s deadline end, server side, within 1 s of it; readiness is
    NOT_SERVING within two health intervals; both recover once the database answers again."""
    caplog.set_level(logging.INFO, logger="blogstore.access")
    interval, deadline, threads = 0.5, 2.0, 3
    proxy = support.TcpProxy(fault_url)
    app = support.start_app(
        started, proxy.url_for(fault_url), threads=threads, health_interval_seconds=interval
    )
    key = admin_key(fault_url)
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        paths = db_paths(channel, key)
        assert [code_of(lambda p=p: p(deadline)) for p in paths] == [
            OK, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND
        ]  # fmt: skip
        assert readiness(app.port) == SERVING
        fired = WATCHDOG.fired
        proxy.hang()
        try:
            took = seconds_until(lambda: readiness(app.port) == NOT_SERVING, 10)
            assert took <= 2 * interval + 0.25, took

            caplog.clear()
            hung_at = time.monotonic()
            with ThreadPoolExecutor(threads) as pool:  # one call per request thread
                codes = list(pool.map(lambda p: code_of(lambda: p(deadline)), paths))
            assert set(codes) <= {DEADLINE_EXCEEDED, UNAVAILABLE}, codes
            # At the deadline + 1 s, the database still hung, every request thread is free.
            time.sleep(max(0.0, hung_at + deadline + 1.0 - time.monotonic()))
            assert request_threads_are_free(app.port, threads)
            durations = access_durations(caplog)
            hung_calls = [d for d in durations if d[1] != "UNAUTHENTICATED"]
            assert len(hung_calls) == threads, durations
            assert all(seconds <= deadline + 1.0 for _, _, seconds in hung_calls), durations
            assert WATCHDOG.fired > fired  # the statements were cut, not answered
        finally:
            proxy.resume()
        took = seconds_until(lambda: readiness(app.port) == SERVING, 10)
        assert took <= 2 * interval + 1.5, took
        assert [code_of(lambda p=p: p(deadline)) for p in paths] == [
            OK, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND
        ]  # fmt: skip
    assert_no_error_logged(caplog)


@pytest.mark.parametrize("fault", ["cut", "hang"])
def test_a_call_that_finds_the_database_gone_rechecks_health_at_once(
    fault, fault_url, started, caplog
):
    """With a 30 s health interval, readiness follows the database within about a second of
    a call that saw the failure (refused, or cut by its deadline), down and back up."""
    proxy = support.TcpProxy(fault_url)
    app = support.start_app(started, proxy.url_for(fault_url), health_interval_seconds=30)
    key = admin_key(fault_url)
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        current_user = db_paths(channel, key)[0]
        assert code_of(lambda: current_user(5)) == OK
        assert readiness(app.port) == SERVING
        if fault == "cut":
            proxy.cut()
        else:
            proxy.hang()
        try:
            assert code_of(lambda: current_user(1.0)) in (UNAVAILABLE, DEADLINE_EXCEEDED)
            failed_at = time.monotonic()
            # A hung call ends (cut by the watchdog) about 0.6 s after its deadline.
            slack = 0.0 if fault == "cut" else 0.6
            took = seconds_until(lambda: readiness(app.port) == NOT_SERVING, 10)
            assert took <= slack + 1.5, took
        finally:
            proxy.restore()
            proxy.resume()
        took = seconds_until(lambda: readiness(app.port) == SERVING, 10)
        assert took <= 2.0, took
        assert time.monotonic() - failed_at < 15  # not the 30 s interval
        assert code_of(lambda: current_user(5)) == OK
    assert_no_error_logged(caplog)


def test_a_full_pool_waits_no_longer_than_the_call_and_is_not_an_outage(fault_url, started, caplog):
    """Pool timeout 5 s, calls with a 1 s deadline: the pool wait ends at the call's deadline
    (not 5 s later, holding the thread), and a full pool does not take readiness down."""
    caplog.set_level(logging.INFO, logger="blogstore.access")
    threads = 2
    app = support.start_app(
        started, fault_url, threads=threads, db_pool_size=1, db_pool_timeout_seconds=5,
        health_interval_seconds=0.2,
    )  # fmt: skip
    key = admin_key(fault_url)
    held = app.db.engine.raw_connection()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            paths = db_paths(channel, key)
            caplog.clear()
            started_at = time.monotonic()
            with ThreadPoolExecutor(threads) as pool:
                codes = list(pool.map(lambda p: code_of(lambda: p(1.0)), paths[1:]))
            assert set(codes) <= {DEADLINE_EXCEEDED, UNAVAILABLE}, codes
            time.sleep(max(0.0, started_at + 1.5 - time.monotonic()))
            assert request_threads_are_free(app.port, threads)
            durations = [d for d in access_durations(caplog) if d[1] != "UNAUTHENTICATED"]
            assert len(durations) == threads and all(d[2] <= 1.5 for d in durations), durations
            assert readiness(app.port) == SERVING
    finally:
        held.close()
    assert_no_error_logged(caplog)


class Writers:
    """Client threads writing CreateArticle and RecordUsage with request ids; a write that
    gets UNAVAILABLE is sent again with the same request id until it is acknowledged."""

    def __init__(self, port: int, user_id: str, count: int) -> None:
        self.port, self.user_id, self.count = port, user_id, count
        self.articles: dict[str, str] = {}  # acknowledged: request id -> article id
        self.usage: dict[str, str] = {}  # acknowledged: request id -> event id
        self.codes: Counter[str] = Counter()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._write, args=(i,)) for i in range(count)]

    def __enter__(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _write(self, index: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            articles = articles_pb2_grpc.ArticlesServiceStub(channel)
            usage = usage_pb2_grpc.UsageServiceStub(channel)
            n = 0
            while not self.stopping.is_set():
                n += 1
                request_id = str(uuid.uuid4())
                if n % 2:
                    request = articles_pb2.CreateArticleRequest(
                        request_id=request_id,
                        article=articles_pb2.Article(
                            user_id=self.user_id, title=f"Fault {index} {n}", content_markdown="x"
                        ),
                    )
                    answer = self._until_acknowledged(articles.CreateArticle, request)
                    if answer is not None:
                        with self._lock:
                            self.articles[request_id] = answer.article.id
                else:
                    request = usage_pb2.RecordUsageRequest(
                        request_id=request_id, user_id=self.user_id, service="openai",
                        model="m", operation="op", cost_micros=1,
                    )  # fmt: skip
                    answer = self._until_acknowledged(usage.RecordUsage, request)
                    if answer is not None:
                        with self._lock:
                            self.usage[request_id] = answer.event.id

    def _until_acknowledged(self, method: Callable[..., object], request: object) -> object:
        for _ in range(400):  # about a minute: the restart takes seconds
            try:
                return method(request, metadata=auth(SERVICE_KEY), timeout=5)
            except grpc.RpcError as error:
                with self._lock:
                    self.codes[error.code().name] += 1
                if error.code() not in (UNAVAILABLE, DEADLINE_EXCEEDED):
                    return None
                time.sleep(0.15)
        return None


def test_kill_9_of_the_postmaster_under_write_load_loses_no_acknowledged_write(
    cluster, fault_url, started, caplog
):
    app = support.start_app(
        started, fault_url, health_interval_seconds=0.5,
        default_monthly_article_limit=10**9, default_monthly_cost_limit=10**6,
    )  # fmt: skip
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        name = unique()
        user = (
            users_pb2_grpc.UsersServiceStub(channel)
            .CreateUser(
                users_pb2.CreateUserRequest(
                    email=f"{name}@example.com", username=name, password=PASSWORD
                ),
                metadata=auth(SERVICE_KEY),
                timeout=30,
            )
            .user
        )
    with Writers(app.port, user.id, count=4) as writers:
        time.sleep(2.0)
        before = len(writers.articles) + len(writers.usage)
        cluster.kill_postmaster()
        time.sleep(1.0)
        cluster.start()
        seconds_until(lambda: readiness(app.port) == SERVING, 30)
        time.sleep(2.0)
        writers.stopping.set()
    assert before > 0 and len(writers.articles) + len(writers.usage) > before
    assert writers.codes["UNAVAILABLE"] > 0  # the kill was seen
    # Only UNAVAILABLE while the database was away. DEADLINE_EXCEEDED would be a call whose
    # 5 s ran out during the restart; none is expected (a dead server refuses at once).
    assert set(writers.codes) <= {"UNAVAILABLE"}, writers.codes
    engine = support.admin_engine(fault_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT create_request_id::text, id::text FROM articles WHERE user_id = :u"),
            {"u": user.id},
        ).all()
        usage = Counter(
            row[0]
            for row in connection.execute(
                text("SELECT request_id::text FROM usage_events WHERE user_id = :u"),
                {"u": user.id},
            )
        )
    engine.dispose()
    stored = dict(rows)
    missing = {r for r, article_id in writers.articles.items() if stored.get(r) != article_id}
    assert not missing, f"{len(missing)} acknowledged articles missing"
    assert not set(writers.usage) - set(usage), "acknowledged usage events missing"
    # A retry with the same request id wrote nothing twice.
    assert max(usage.values()) == 1
    assert max(Counter(request_id for request_id, _ in rows).values()) == 1
    assert_no_error_logged(caplog)


@pytest.mark.parametrize("where", ["statement", "idle pre-ping", "connect"])
@pytest.mark.parametrize("path", ["query", "run"])
def test_storage_returns_within_a_second_of_the_deadline_on_a_hung_database(where, path, fault_url):
    """Both unit-of-work paths, hung in a statement, in the pre-ping of a connection that
    idled, or while opening a connection: back within 1 s of the deadline, DEADLINE_EXCEEDED
    or UNAVAILABLE, and the connection is not pooled again."""
    proxy = support.TcpProxy(fault_url)
    failures: list[float] = []
    db = Database(
        make_engine(proxy.url_for(fault_url), pool_size=1, connect_timeout=5),
        on_connection_failure=lambda: failures.append(time.monotonic()),
    )

    def one(deadline: float) -> object:
        caller = Caller(SYSTEM, "faults", time.monotonic() + deadline)
        if path == "query":
            return db.query(caller, _SELECT_1, {})[0].one
        return db.run(caller, lambda tx: tx.session.execute(text("SELECT 1")).scalar())

    try:
        if where != "connect":
            assert one(5) == 1  # a pooled connection
        if where == "idle pre-ping":
            time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
        proxy.hang()
        started_at = time.monotonic()
        with pytest.raises((errors.DeadlineExceeded, errors.Unavailable)):
            one(1.5)
        assert time.monotonic() - started_at <= 1.5 + 1.0
        assert failures, "health was not asked to re-check"
        proxy.resume()
        assert one(5) == 1
    finally:
        proxy.resume()
        db.dispose()


def test_a_far_deadline_leaves_the_watchdog_running(database_url):
    """A client may send a deadline years away; waiting for it must not kill the watchdog
    (Condition.wait overflows past threading.TIMEOUT_MAX), or no later call is ever cut."""
    db = Database(make_engine(database_url, pool_size=1))
    try:
        far = Caller(SYSTEM, "faults", time.monotonic() + 10**12)
        assert db.query(far, _SELECT_1, {})[0].one == 1
        assert db.run(far, lambda tx: tx.session.execute(text("SELECT 1")).scalar()) == 1
        time.sleep(0.2)  # the watchdog has computed its next wake-up
        assert WATCHDOG._thread is not None and WATCHDOG._thread.is_alive()
    finally:
        db.dispose()
