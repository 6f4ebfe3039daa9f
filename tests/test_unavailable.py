"""Every database failure is UNAVAILABLE, on every method of every service, never INTERNAL.

The database is cut with a TcpProxy (refused, reset), taken out by a pool that is all checked
out, made read-only, or left unmigrated (SCHEMA_NOT_READY). Every method is enumerated from the
generated descriptors, so a new method cannot be forgotten: it needs a minimally valid request
in REQUESTS (one that passes validation and reaches the database) or the test fails.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from blogstore import client
from blogstore.v1 import (
    articles_pb2,
    common_pb2,
    competitors_pb2,
    pipelines_pb2,
    pipelines_pb2_grpc,
    usage_pb2,
    users_pb2,
    users_pb2_grpc,
)
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy import make_url, text

from server.admin import create_admin
from server.app import App, create_server
from server.errors import STATUS_TABLE, to_status
from storage import errors
from storage.actors import SYSTEM, Caller
from storage.engine import PING_AFTER_IDLE_SECONDS, make_engine
from storage.uow import Database, Prepared
from tests import support
from tests.support import PASSWORD, SERVICE_KEY, make_settings, unique

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
SERVICE_MODULES = (users_pb2, articles_pb2, pipelines_pb2, usage_pb2, competitors_pb2)

ID = str(uuid.UUID(int=1))
USER = str(uuid.UUID(int=2))
STAMP = "2025-01-01T00:00:00Z"

# A minimally valid request per method, as JSON (AIP field names): validation passes, so a
# service principal's call reaches the database. Methods absent here are called empty.
REQUESTS: dict[str, dict[str, Any]] = {
    "UsersService.CreateUser": {"email": "a@example.com", "username": "ann", "password": PASSWORD},
    "UsersService.GetUser": {"id": ID},
    "UsersService.UpdateUser": {
        "user": {"id": ID, "username": "ann", "etag": "1"},
        "updateMask": "username",
    },
    "UsersService.DeleteUser": {"id": ID},
    "UsersService.ChangePassword": {"userId": ID, "newPassword": PASSWORD},
    "UsersService.Authenticate": {"login": "ann", "password": PASSWORD},
    "UsersService.CreateApiKey": {"userId": ID, "name": "key"},
    "UsersService.ListApiKeys": {"userId": ID},
    "UsersService.RevokeApiKey": {"id": ID},
    "UsersService.GetUserSettings": {"userId": USER},
    "UsersService.UpdateUserSettings": {
        "settings": {"userId": USER, "usageAlertPercent": 5},
        "updateMask": "usageAlertPercent",
    },
    "UsersService.SetUserSecret": {"userId": USER, "name": "token", "value": "v"},
    "UsersService.ListUserSecrets": {"userId": USER},
    "UsersService.DeleteUserSecret": {"userId": USER, "name": "token"},
    "UsersService.RevealUserSecret": {"userId": USER, "name": "token"},
    "ArticlesService.CreateArticle": {
        "article": {"userId": USER, "title": "T", "slug": "t", "contentMarkdown": "x"}
    },
    "ArticlesService.GetArticle": {"id": ID},
    "ArticlesService.UpdateArticle": {
        "article": {"id": ID, "title": "T", "etag": "1"},
        "updateMask": "title",
    },
    "ArticlesService.PublishArticle": {"id": ID, "wpUrl": "https://example.com/t"},
    "ArticlesService.DeleteArticle": {"id": ID},
    "ArticlesService.UndeleteArticle": {"id": ID},
    "ArticlesService.SearchArticles": {"query": "word"},
    "ArticlesService.ListArticleRevisions": {"articleId": ID},
    "ArticlesService.ListTags": {"userId": USER},
    "ArticlesService.RestoreArticleRevision": {"articleId": ID, "revisionId": ID},
    "ArticlesService.GetArticleRevision": {"articleId": ID, "revisionId": ID},
    "ArticlesService.DiffArticleRevision": {"articleId": ID, "revisionId": ID},
    "ArticlesService.BatchCreateArticles": {
        "articles": [{"userId": USER, "title": "T", "slug": "t", "contentMarkdown": "x"}]
    },
    "ArticlesService.SetEmbeddings": {
        "items": [{"articleId": ID, "embedding": {"model": "m", "values": [1.0] * 1536}}]
    },
    "ArticlesService.FindSimilarArticles": {"articleId": ID},
    "PipelinesService.CreatePipeline": {"userId": USER},
    "PipelinesService.GetPipeline": {"id": ID},
    "PipelinesService.StartPipeline": {"id": ID},
    "PipelinesService.CompletePipeline": {"id": ID, "articleId": ID},
    "PipelinesService.FailPipeline": {"id": ID, "errors": ["boom"]},
    "PipelinesService.CancelPipeline": {"id": ID},
    "PipelinesService.RetryPipeline": {"id": ID},
    "PipelinesService.RecordStageResult": {"pipelineId": ID, "stage": "outline", "result": {}},
    "PipelinesService.WatchPipeline": {"id": ID},
    "UsageService.RecordUsage": {
        "requestId": ID,
        "userId": USER,
        "service": "openai",
        "model": "m",
        "operation": "op",
        "costMicros": "1",
    },
    "UsageService.CheckQuota": {"userId": USER},
    "UsageService.GetMonthlyUsage": {"userId": USER},
    "UsageService.ListMonthlyUsage": {"userId": USER},
    "UsageService.GetCostReport": {
        "startTime": STAMP,
        "endTime": "2025-02-01T00:00:00Z",
        "groupBy": "COST_REPORT_GROUP_BY_DAY",
    },
    "UsageService.GetUsageLimits": {"userId": USER},
    "UsageService.SetUsageLimits": {"limits": {"userId": USER, "articleLimit": "5"}},
    "CompetitorsService.CreateCompetitor": {
        "competitor": {"userId": USER, "domain": "example.com", "name": "Example"}
    },
    "CompetitorsService.GetCompetitor": {"id": ID},
    "CompetitorsService.UpdateCompetitor": {
        "competitor": {"id": ID, "name": "Example", "etag": "1"},
        "updateMask": "name",
    },
    "CompetitorsService.DeleteCompetitor": {"id": ID},
    "CompetitorsService.ClaimDueCompetitors": {"limit": 1, "leaseSeconds": 60},
    "CompetitorsService.RecordCompetitorCheck": {"competitorId": ID, "checkTime": STAMP},
    "CompetitorsService.UpsertCompetitorArticles": {
        "competitorId": ID,
        "articles": [{"url": "https://example.com/a", "title": "A"}],
    },
    "CompetitorsService.ListCompetitorArticles": {"competitorId": ID},
}
# Calls a service principal completes without the database.
NO_DATABASE = {"UsersService.GetCurrentUser"}


@dataclass(frozen=True)
class Method:
    key: str  # "Service.Method"
    path: str  # "/package.Service/Method"
    request: Any
    response_type: Any
    streaming: bool


def every_method() -> list[Method]:
    methods = []
    for module in SERVICE_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert not method.client_streaming, "client streams need a request iterator"
                key = f"{service.name}.{method.name}"
                request = getattr(module, method.input_type.name)()
                json_format.ParseDict(REQUESTS.get(key, {}), request)
                methods.append(
                    Method(
                        key=key,
                        path=f"/{service.full_name}/{method.name}",
                        request=request,
                        response_type=getattr(module, method.output_type.name),
                        streaming=method.server_streaming,
                    )
                )
    return methods


METHODS = every_method()
BY_KEY = {method.key: method for method in METHODS}


def call(channel: grpc.Channel, method: Method, token: str | None) -> grpc.RpcError | None:
    """Invoke `method` once (a plain channel: no client retries); its error, or None."""
    metadata = [("authorization", f"Bearer {token}")] if token else None
    serialize, parse = method.request.SerializeToString, method.response_type.FromString
    try:
        if method.streaming:
            stream = channel.unary_stream(method.path, serialize, parse)
            for _ in stream(method.request, timeout=20, metadata=metadata):
                pass
        else:
            unary = channel.unary_unary(method.path, serialize, parse)
            unary(method.request, timeout=20, metadata=metadata)
    except grpc.RpcError as error:
        return error
    return None


def retry_delay(error: grpc.RpcError) -> float | None:
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


def assert_unavailable(error: grpc.RpcError | None, where: str, reason: str = "UNAVAILABLE"):
    assert error is not None, f"{where}: succeeded without its database"
    assert error.code() is UNAVAILABLE, f"{where}: {error.code().name} {error.details()}"
    details = client.error_details(error)
    assert details.reason == reason, f"{where}: reason {details.reason}"
    delay = retry_delay(error)
    assert delay is not None and delay > 0, f"{where}: no RetryInfo"


def assert_quiet_log(caplog: pytest.LogCaptureFixture) -> None:
    """No tracebacks, no 'unexpected error' lines: these failures are not bugs."""
    noisy = [r for r in caplog.records if r.exc_info or r.name == "blogstore.errors"]
    assert not noisy, [f"{r.name}: {r.getMessage()}" for r in noisy]
    assert "Traceback" not in caplog.text


@pytest.fixture(scope="module")
def proxy(database_url: str) -> support.TcpProxy:
    return support.TcpProxy(database_url)


@pytest.fixture(scope="module")
def cut_app(proxy: support.TcpProxy, database_url: str) -> Iterator[App]:
    app = create_server(make_settings(proxy.url_for(database_url)))
    app.start()
    yield app
    app.stop(grace=0)


@pytest.fixture(scope="module")
def tokens(cut_app: App, database_url: str) -> dict[str, str]:
    """A valid token of each kind: user access token, admin API key, service key."""
    settings = cut_app.settings
    email, name = f"{unique('admin')}@example.com", unique("admin")
    _, admin_key = create_admin(
        database_url, settings, email=email, username=name, password=PASSWORD
    )
    name = unique()
    with client.connect(f"127.0.0.1:{cut_app.port}", admin_key) as channel:
        users = users_pb2_grpc.UsersServiceStub(channel)
        users.CreateUser(
            users_pb2.CreateUserRequest(
                email=f"{name}@example.com", username=name, password=PASSWORD
            )
        )
        token = users.Authenticate(
            users_pb2.AuthenticateRequest(login=name, password=PASSWORD)
        ).access_token
    return {"user": token, "admin": admin_key, "service": SERVICE_KEY}


@pytest.fixture
def cut(proxy: support.TcpProxy) -> Iterator[support.TcpProxy]:
    yield proxy
    proxy.restore()


def sweep(app: App, tokens: dict[str, str | None]) -> dict[tuple[str, str], grpc.RpcError | None]:
    """Call every method with every principal; (method, principal) -> its error (None: OK)."""
    outcomes = {}
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        for method in METHODS:
            for principal, token in tokens.items():
                outcomes[method.key, principal] = call(channel, method, token)
    return outcomes


def assert_every_method_unavailable(
    outcomes: dict[tuple[str, str], grpc.RpcError | None], reason: str = "UNAVAILABLE"
) -> None:
    for (key, principal), error in outcomes.items():
        where = f"{key} as {principal}"
        if principal == "anonymous" and key != "UsersService.Authenticate":
            assert error is not None and error.code() is UNAUTHENTICATED, where
        elif principal == "service" and key in NO_DATABASE:
            assert error is None, f"{where}: {error}"
        else:
            assert_unavailable(error, where, reason)


def test_every_method_is_unavailable_while_the_database_is_cut(cut_app, tokens, cut, caplog):
    caplog.set_level(logging.INFO)
    cut.cut()
    outcomes = sweep(cut_app, {**tokens, "anonymous": None})
    assert_every_method_unavailable(outcomes)
    assert_quiet_log(caplog)
    access = [r for r in caplog.records if r.name == "blogstore.access"]
    assert {r.code for r in access} == {"UNAVAILABLE", "UNAUTHENTICATED", "OK"}


def test_pooled_connections_that_idled_are_unavailable_too(cut_app, tokens, cut, caplog):
    """The idle pre-ping fails, the pool reconnects, the reconnect is refused: UNAVAILABLE."""
    with grpc.insecure_channel(f"127.0.0.1:{cut_app.port}") as channel:
        hot = [BY_KEY["ArticlesService.GetArticle"], BY_KEY["UsageService.RecordUsage"]]
        for method in hot:
            assert call(channel, method, tokens["service"]).code() is grpc.StatusCode.NOT_FOUND
        time.sleep(PING_AFTER_IDLE_SECONDS + 0.5)
        cut.cut()
        for method in hot:
            for principal, token in tokens.items():
                assert_unavailable(call(channel, method, token), f"{method.key} as {principal}")
    assert_quiet_log(caplog)


def test_calls_succeed_again_once_the_database_is_back(cut_app, tokens, cut):
    get_user = BY_KEY["UsersService.GetCurrentUser"]
    with grpc.insecure_channel(f"127.0.0.1:{cut_app.port}") as channel:
        cut.cut()
        assert_unavailable(call(channel, get_user, tokens["user"]), "while cut")
        cut.restore()
        assert call(channel, get_user, tokens["user"]) is None
        assert call(channel, get_user, tokens["admin"]) is None


def test_an_exhausted_pool_is_unavailable_on_every_path(database_url, caplog):
    """pool_size 1, its connection held: the hot path, the ORM path and the credential check."""
    app = create_server(make_settings(database_url, db_pool_size=1, db_pool_timeout=0.5))
    app.start()
    try:
        settings = app.settings
        email, name = f"{unique('admin')}@example.com", unique("admin")
        _, admin_key = create_admin(
            database_url, settings, email=email, username=name, password=PASSWORD
        )
        paths = {
            ("ArticlesService.GetArticle", SERVICE_KEY),  # Database.query
            ("UsersService.GetUser", SERVICE_KEY),  # Database.run
            ("UsersService.GetCurrentUser", admin_key),  # the credential check
        }
        held = app.db.engine.raw_connection()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                for key, token in paths:
                    error = call(channel, BY_KEY[key], token)
                    assert_unavailable(error, key)
                    assert "pool exhausted" in error.details()
        finally:
            held.close()
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            assert call(channel, BY_KEY["UsersService.GetCurrentUser"], admin_key) is None
    finally:
        app.stop(grace=0)
    assert_quiet_log(caplog)


# A real driver error for any SQLSTATE, raised by the server on either path.
_RAISE_FUNCTION = """
CREATE FUNCTION raise_sqlstate(code text) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION USING ERRCODE = code, MESSAGE = 'raised by a test'; END $$
"""
_RAISE = Prepared(name="raise_sqlstate", body="SELECT raise_sqlstate($1)", params=("code",),
                  types=("text",))  # fmt: skip
CALLER = Caller(SYSTEM, "test")


@pytest.fixture(scope="module")
def raising_db(database_url: str) -> Iterator[Database]:
    db = Database(make_engine(database_url, pool_size=2))
    with db.engine.begin() as connection:
        connection.execute(text(_RAISE_FUNCTION))
    yield db
    db.dispose()


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        ("08006", errors.Unavailable),  # connection failure
        ("25006", errors.Unavailable),  # read-only transaction: a replica
        ("53300", errors.Unavailable),  # too many connections
        ("57P01", errors.Unavailable),  # admin shutdown
        ("57P02", errors.Unavailable),  # crash shutdown
        ("57P03", errors.Unavailable),  # cannot connect now (starting up)
        ("42P01", errors.SchemaNotReady),  # undefined table
        ("42883", errors.SchemaNotReady),  # undefined function
        ("42703", errors.SchemaNotReady),  # undefined column
    ],
)
def test_sqlstates_become_domain_errors_on_both_paths(raising_db, sqlstate, expected):
    with pytest.raises(errors.Unavailable) as hot:
        raising_db.query(CALLER, _RAISE, {"code": sqlstate})
    with pytest.raises(errors.Unavailable) as orm:
        raising_db.run(
            CALLER,
            lambda tx: tx.session.execute(text("SELECT raise_sqlstate(:c)"), {"c": sqlstate}),
        )
    assert type(hot.value) is expected and type(orm.value) is expected
    # The connection is still usable afterwards: nothing leaked from the failed statement.
    assert raising_db.run(CALLER, lambda tx: tx.session.execute(text("SELECT 1")).scalar()) == 1


def test_a_database_that_never_answers_is_unavailable_after_the_connect_timeout():
    """A black hole: the TCP handshake completes, no byte ever comes back."""
    with socket.create_server(("127.0.0.1", 0)) as hole:
        url = f"postgresql://postgres@127.0.0.1:{hole.getsockname()[1]}/blogstore"
        db = Database(make_engine(url, pool_size=1, connect_timeout=2))
        started = time.monotonic()
        with pytest.raises(errors.Unavailable):
            db.query(CALLER, _RAISE, {"code": "00000"})
        with pytest.raises(errors.Unavailable):
            db.run(CALLER, lambda tx: tx.session.execute(text("SELECT 1")))
        elapsed = time.monotonic() - started
        db.dispose()
    assert elapsed < 10, elapsed


def test_a_read_only_database_refuses_writes_with_unavailable(pg_admin_url, template_database):
    """What a failover to a replica looks like: reads work, every write is UNAVAILABLE. The
    credential check only reads (its usage counts are written later, in batches), so a user's
    reads keep working."""
    url = support.create_database(pg_admin_url, template=template_database)
    try:
        settings = make_settings(url)
        email, name = f"{unique('admin')}@example.com", unique("admin")
        _, admin_key = create_admin(url, settings, email=email, username=name, password=PASSWORD)
        engine = support.admin_engine(pg_admin_url)
        with engine.connect() as connection:
            database = make_url(url).database  # the embedded server's URL has ?host=...
            connection.execute(
                text(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
            )
        engine.dispose()
        app = create_server(settings)
        app.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                read = call(channel, BY_KEY["ArticlesService.GetArticle"], SERVICE_KEY)
                assert read.code() is grpc.StatusCode.NOT_FOUND
                for key in ("UsersService.CreateUser", "UsageService.RecordUsage"):
                    assert_unavailable(call(channel, BY_KEY[key], SERVICE_KEY), key)
                assert call(channel, BY_KEY["UsersService.GetCurrentUser"], admin_key) is None
        finally:
            app.stop(grace=0)
    finally:
        support.drop_database(pg_admin_url, url)


def test_terminated_connections_are_unavailable_or_reconnected(cut_app, tokens, database_url):
    """pg_terminate_backend (57P01) on every pooled connection: never INTERNAL, and the next
    calls get fresh connections."""
    methods = [BY_KEY["ArticlesService.GetArticle"], BY_KEY["UsersService.GetUser"]]
    with grpc.insecure_channel(f"127.0.0.1:{cut_app.port}") as channel:
        for method in methods:
            call(channel, method, tokens["service"])
        engine = support.admin_engine(database_url)
        with engine.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        engine.dispose()
        codes = set()
        for _ in range(3):
            for method in methods:
                for token in tokens.values():
                    error = call(channel, method, token)
                    codes.add(error.code() if error else grpc.StatusCode.OK)
        assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND, UNAVAILABLE}, codes
        for method in methods:
            assert call(channel, method, tokens["service"]).code() is grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def unmigrated_url(pg_admin_url: str) -> Iterator[str]:
    url = support.create_database(pg_admin_url)  # never migrated: no tables at all
    yield url
    support.drop_database(pg_admin_url, url)


def test_a_never_migrated_database_is_schema_not_ready_everywhere(unmigrated_url, caplog):
    errors.schema_warning.reset()
    caplog.set_level(logging.INFO)
    app = create_server(make_settings(unmigrated_url))
    app.start()
    try:
        # Tokens of the right shape: the credential check looks them up, in a missing table.
        tokens = {"user": "bst_" + "u" * 43, "admin": "bsk_" + "a" * 43}
        outcomes = sweep(app, {**tokens, "service": SERVICE_KEY, "anonymous": None})
    finally:
        app.stop(grace=0)
    assert_every_method_unavailable(outcomes, reason="SCHEMA_NOT_READY")
    assert_quiet_log(caplog)
    hints = [r for r in caplog.records if errors.SCHEMA_HINT in r.getMessage()]
    assert len(hints) == 1, [r.getMessage() for r in hints]  # not one per call
    assert hints[0].levelno == logging.WARNING
    assert "does not exist" in hints[0].getMessage()


def run_cli(*args: str, database_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "BLOGSTORE_LOG_FORMAT": "text"}
    return subprocess.run(
        [sys.executable, "-m", "server", *args], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def test_create_admin_says_what_is_wrong_without_a_traceback(unmigrated_url, proxy, database_url):
    args = ("create-admin", "--email", "root@example.com", "--username", "root")
    unmigrated = run_cli(*args, database_url=unmigrated_url)
    assert unmigrated.returncode == 1, unmigrated.stderr
    assert "blogstore migrate" in unmigrated.stderr
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    down = run_cli(*args, database_url=f"postgresql://postgres@127.0.0.1:{port}/blogstore")
    assert down.returncode == 1, down.stderr
    assert "create-admin failed: database unavailable" in down.stderr
    for result in (unmigrated, down):
        assert "Traceback" not in result.stderr + result.stdout, result.stderr


def test_a_watch_needs_the_listen_connection(database_url, tokens, caplog):
    """Without LISTEN a watcher would never hear of a change: UNAVAILABLE, not a silent stream."""
    app = create_server(make_settings(database_url))
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            pipelines = pipelines_pb2_grpc.PipelinesServiceStub(channel)
            auth = [("authorization", f"Bearer {tokens['user']}")]
            pipeline = pipelines.CreatePipeline(
                pipelines_pb2.CreatePipelineRequest(), metadata=auth, timeout=10
            ).pipeline
            app.watch_hub._listener.stop()  # fault injection: the LISTEN connection is gone
            watch = pipelines.WatchPipeline(
                pipelines_pb2.WatchPipelineRequest(id=pipeline.id), metadata=auth, timeout=10
            )
            with pytest.raises(grpc.RpcError) as caught:
                next(watch)
            assert_unavailable(caught.value, "WatchPipeline")
    finally:
        app.stop(grace=0)
    assert_quiet_log(caplog)


def test_every_reason_in_the_table_is_an_error_reason():
    names = set(common_pb2.ErrorReason.keys())
    for _code, reason in STATUS_TABLE.values():
        assert f"ERROR_REASON_{reason}" in names, reason


@pytest.mark.parametrize(
    ("error", "delay"),
    [
        (errors.Unavailable("database unavailable"), 1.0),
        (errors.SchemaNotReady(), 5.0),
        (errors.Retryable("concurrent update, try again"), 0.1),
        (errors.Conflict("stale etag"), None),  # read again before retrying
        (errors.NotFound("article"), None),
    ],
)
def test_retry_info_only_where_a_retry_makes_sense(error, delay):
    status = to_status(error, "request-id")
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    retry = [
        d for d in status_pb2.Status.FromString(details).details
        if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)
    ]  # fmt: skip
    if delay is None:
        assert not retry
    else:
        info = error_details_pb2.RetryInfo()
        retry[0].Unpack(info)
        assert info.retry_delay.ToTimedelta().total_seconds() == delay
