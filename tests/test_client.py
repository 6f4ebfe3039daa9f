"""blogstore.client, sync and asyncio, against a real in-process gRPC server (no database)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from blogstore import client
from blogstore.client import aio as client_aio
from blogstore.v1 import users_pb2, users_pb2_grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tests.tls_support import Pki, make_pki

TOKEN = "secret-token"
DETAILS_KEY = "grpc-status-details-bin"
DEFAULT_TIMEOUT = 5.0
# grpc-timeout is sent rounded up, so the server may see slightly more than was set.
SLACK = 0.5


class FakeUsers(users_pb2_grpc.UsersServiceServicer):
    """Records what arrives and fails in scripted ways."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.seen: list[dict[str, Any]] = []

    def _record(self, name: str, context: grpc.ServicerContext) -> int:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            self.seen.append(
                {
                    "method": name,
                    "metadata": dict(context.invocation_metadata()),
                    "time_remaining": context.time_remaining(),
                }
            )
            return self.calls[name]

    def GetUser(self, request, context):  # noqa: N802
        if self._record("GetUser", context) <= 2:
            context.abort(grpc.StatusCode.UNAVAILABLE, "database unreachable")
        return users_pb2.GetUserResponse(user=users_pb2.User(id=request.id))

    def CreateUser(self, request, context):  # noqa: N802
        self._record("CreateUser", context)
        context.abort(grpc.StatusCode.UNAVAILABLE, "database unreachable")

    def ListUsers(self, request, context):  # noqa: N802
        self._record("ListUsers", context)
        status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="bad page_size")
        info = error_details_pb2.ErrorInfo(
            reason="INVALID_ARGUMENT", domain="blogstore", metadata={"request_id": "r1"}
        )
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="page_size", description="must be at most 1000"
                )
            ]
        )
        status.details.add().Pack(info)
        status.details.add().Pack(bad)
        context.abort_with_status(rpc_status.to_status(status))

    def CreateApiKey(self, request, context):  # noqa: N802
        self._record("CreateApiKey", context)
        status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="quota")
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject="user:u1", description="api keys per month"
                )
            ]
        )
        status.details.add().Pack(quota)
        context.abort_with_status(rpc_status.to_status(status))

    def GetCurrentUser(self, request, context):  # noqa: N802
        self._record("GetCurrentUser", context)
        return users_pb2.GetCurrentUserResponse()

    def UpdateUserSettings(self, request, context):  # noqa: N802
        """A write: answers with the next of `tokens` as its consistency token."""
        self._record("UpdateUserSettings", context)
        context.set_trailing_metadata([(client.CONSISTENCY_KEY, self.tokens.pop(0))])
        return users_pb2.UpdateUserSettingsResponse()

    tokens: list[str]

    # Errors that did not come from blogstore: a proxy's, or another service's.

    def UpdateUser(self, request, context):  # noqa: N802
        self._record("UpdateUser", context)
        context.set_trailing_metadata([(DETAILS_KEY, b"\xff\x00 not a Status")])
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "garbage details")

    def DeleteUser(self, request, context):  # noqa: N802
        self._record("DeleteUser", context)
        stale = status_pb2.Status(code=code_pb2.NOT_FOUND, message="another status")
        context.set_trailing_metadata([(DETAILS_KEY, stale.SerializeToString())])
        context.abort(grpc.StatusCode.INTERNAL, "rewritten by a proxy")

    def ChangePassword(self, request, context):  # noqa: N802
        self._record("ChangePassword", context)
        status = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message="mixed")
        broken = any_pb2.Any(
            type_url="type.googleapis.com/google.rpc.ErrorInfo", value=b"\xff\xff\xff"
        )
        status.details.append(broken)
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason="THEIRS", domain="other"))
        status.details.add().Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field="f", description="bad")
                ]
            )
        )
        context.abort_with_status(rpc_status.to_status(status))


@pytest.fixture
def servicer() -> FakeUsers:
    return FakeUsers()


def _serve(
    servicer: FakeUsers, credentials: grpc.ServerCredentials | None
) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    users_pb2_grpc.add_UsersServiceServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


@pytest.fixture
def target(servicer: FakeUsers) -> Iterator[str]:
    server, port = _serve(servicer, None)
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=[False, True], ids=["tls", "mtls"])
def tls_target(request: pytest.FixtureRequest, servicer: FakeUsers, pki: Pki) -> Iterator[str]:
    """A TLS port on 127.0.0.1 (the certificate names localhost and 127.0.0.1)."""
    credentials = grpc.ssl_server_credentials(
        [(pki.read("server_key"), pki.read("server_cert"))],
        root_certificates=pki.read("ca") if request.param else None,
        require_client_auth=request.param,
    )
    server, port = _serve(servicer, credentials)
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def _client_pem(pki: Pki) -> dict[str, bytes]:
    return {"certificate_chain": pki.read("client_cert"), "private_key": pki.read("client_key")}


@pytest.fixture
def stub(target: str) -> Iterator[users_pb2_grpc.UsersServiceStub]:
    with client.connect(target, TOKEN, default_timeout=DEFAULT_TIMEOUT) as channel:
        yield users_pb2_grpc.UsersServiceStub(channel)


def test_idempotent_call_is_retried_on_unavailable(stub, servicer: FakeUsers) -> None:
    response = stub.GetUser(users_pb2.GetUserRequest(id="u1"))
    assert response.user.id == "u1"
    assert servicer.calls["GetUser"] == 3


def test_non_idempotent_call_is_not_retried(stub, servicer: FakeUsers) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.CreateUser(users_pb2.CreateUserRequest(email="a@example.com"))
    assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls["CreateUser"] == 1


def test_bearer_token_is_sent_and_caller_metadata_kept(stub, servicer: FakeUsers) -> None:
    stub.GetCurrentUser(users_pb2.GetCurrentUserRequest(), metadata=[("x-trace-id", "t1")])
    seen = servicer.seen[-1]["metadata"]
    assert seen["authorization"] == f"Bearer {TOKEN}"
    assert seen["x-trace-id"] == "t1"


def test_caller_authorization_wins(stub, servicer: FakeUsers) -> None:
    stub.GetCurrentUser(
        users_pb2.GetCurrentUserRequest(), metadata=[("authorization", "Bearer other")]
    )
    assert servicer.seen[-1]["metadata"]["authorization"] == "Bearer other"


def test_no_token_no_authorization(target: str, servicer: FakeUsers) -> None:
    with client.connect(target) as channel:
        users_pb2_grpc.UsersServiceStub(channel).GetCurrentUser(users_pb2.GetCurrentUserRequest())
    assert "authorization" not in servicer.seen[-1]["metadata"]


def test_default_deadline_applies_and_explicit_timeout_wins(stub, servicer: FakeUsers) -> None:
    stub.GetCurrentUser(users_pb2.GetCurrentUserRequest())
    remaining = servicer.seen[-1]["time_remaining"]
    assert remaining is not None and 0 < remaining <= DEFAULT_TIMEOUT + SLACK
    stub.GetCurrentUser(users_pb2.GetCurrentUserRequest(), timeout=60)
    assert servicer.seen[-1]["time_remaining"] > DEFAULT_TIMEOUT + SLACK


@pytest.mark.parametrize("arity", ["unary_unary", "unary_stream", "stream_unary", "stream_stream"])
def test_interceptor_covers_every_arity(target: str, servicer: FakeUsers, arity: str) -> None:
    request = users_pb2.GetCurrentUserRequest()
    with client.connect(target, TOKEN, default_timeout=DEFAULT_TIMEOUT) as channel:
        call = getattr(channel, arity)(
            "/blogstore.v1.UsersService/GetCurrentUser",
            request_serializer=users_pb2.GetCurrentUserRequest.SerializeToString,
            response_deserializer=users_pb2.GetCurrentUserResponse.FromString,
        )
        result = call(iter([request]) if arity.startswith("stream") else request)
        if arity.endswith("_stream"):
            assert len(list(result)) == 1
    seen = servicer.seen[-1]
    assert seen["metadata"]["authorization"] == f"Bearer {TOKEN}"
    assert seen["time_remaining"] is not None
    assert seen["time_remaining"] <= DEFAULT_TIMEOUT + SLACK


def test_error_details_decodes_rich_status(stub) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.ListUsers(users_pb2.ListUsersRequest(page_size=5000))
    details = client.error_details(excinfo.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.message == "bad page_size"
    assert details.reason == "INVALID_ARGUMENT"
    assert details.metadata == {"request_id": "r1"}
    assert details.field_violations == {"page_size": "must be at most 1000"}
    assert details.quota_violations == []


def test_error_details_decodes_quota_failure(stub) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.CreateApiKey(users_pb2.CreateApiKeyRequest(name="k"))
    details = client.error_details(excinfo.value)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.quota_violations == [("user:u1", "api keys per month")]


def test_error_details_without_details(stub) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.CreateUser(users_pb2.CreateUserRequest())
    details = client.error_details(excinfo.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert details.message == "database unreachable"
    assert (details.reason, details.metadata) == ("", {})
    assert (details.field_violations, details.quota_violations) == ({}, [])


def test_error_details_on_bare_rpc_error() -> None:
    details = client.error_details(grpc.RpcError())
    assert details.code == grpc.StatusCode.UNKNOWN
    assert details.reason == ""


def test_retry_service_config_lists_only_idempotent_methods() -> None:
    config = client.retry_service_config()
    (method_config,) = config["methodConfig"]
    names = {(n["service"], n["method"]) for n in method_config["name"]}
    assert ("blogstore.v1.UsersService", "GetUser") in names
    assert ("blogstore.v1.UsersService", "ListUsers") in names
    assert ("blogstore.v1.UsersService", "CreateUser") not in names
    assert ("blogstore.v1.UsersService", "Authenticate") not in names
    policy = method_config["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert policy["maxAttempts"] == 5
    assert "Get" in client.IDEMPOTENT_PREFIXES


def test_error_details_on_garbage_status_details(stub) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.UpdateUser(users_pb2.UpdateUserRequest())
    details = client.error_details(excinfo.value)
    assert (details.code, details.message) == (grpc.StatusCode.INVALID_ARGUMENT, "garbage details")
    assert (details.reason, details.field_violations) == ("", {})


def test_error_details_ignores_a_status_for_another_code(stub) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.DeleteUser(users_pb2.DeleteUserRequest())
    details = client.error_details(excinfo.value)
    assert (details.code, details.message) == (grpc.StatusCode.INTERNAL, "rewritten by a proxy")
    assert details.reason == ""


def test_error_details_skips_undecodable_and_foreign_details(stub) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.ChangePassword(users_pb2.ChangePasswordRequest())
    details = client.error_details(excinfo.value)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == ""  # ErrorInfo of another domain
    assert details.field_violations == {"f": "bad"}


class _HalfCall(grpc.RpcError):
    """An RpcError with a code but no trailing metadata, as test doubles and wrappers make."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self) -> str:
        return "too slow"


class _Broken(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        raise RuntimeError("not finished")

    def trailing_metadata(self) -> object:
        raise RuntimeError("not finished")


def test_error_details_on_errors_not_from_blogstore() -> None:
    half = client.error_details(_HalfCall())
    assert (half.code, half.message, half.reason) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "too slow",
        "",
    )
    broken = client.error_details(_Broken())
    assert (broken.code, broken.message) == (grpc.StatusCode.UNKNOWN, "")
    other = client.error_details(ValueError("boom"))
    assert (other.code, other.message) == (grpc.StatusCode.UNKNOWN, "boom")
    aio_error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((DETAILS_KEY, b"\x0a\xff garbage")),
        details="connection reset",
    )
    details = client.error_details(aio_error)
    assert (details.code, details.message) == (grpc.StatusCode.UNAVAILABLE, "connection reset")
    assert (details.reason, details.field_violations, details.quota_violations) == ("", {}, [])


# TLS options of connect().


def test_tls_with_token(tls_target: str, servicer: FakeUsers, pki: Pki, request) -> None:
    mutual = request.node.callspec.id == "mtls"
    pem = _client_pem(pki) if mutual else {}
    with client.connect(tls_target, TOKEN, root_certificates=pki.read("ca"), **pem) as channel:
        users_pb2_grpc.UsersServiceStub(channel).GetCurrentUser(users_pb2.GetCurrentUserRequest())
    assert servicer.seen[-1]["metadata"]["authorization"] == f"Bearer {TOKEN}"


def test_ready_credentials_and_server_name(tls_target: str, pki: Pki) -> None:
    credentials = client.channel_credentials(pki.read("ca"), **_client_pem(pki))
    with client.connect(tls_target, credentials=credentials, server_name="localhost") as channel:
        users_pb2_grpc.UsersServiceStub(channel).GetCurrentUser(users_pb2.GetCurrentUserRequest())
    with (
        client.connect(
            tls_target, credentials=credentials, server_name="elsewhere.example"
        ) as channel,
        pytest.raises(grpc.RpcError) as excinfo,
    ):
        users_pb2_grpc.UsersServiceStub(channel).GetCurrentUser(
            users_pb2.GetCurrentUserRequest(), timeout=5
        )
    assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE  # certificate not for that name


def test_plaintext_client_is_refused_by_a_tls_port(tls_target: str) -> None:
    with client.connect(tls_target) as channel, pytest.raises(grpc.RpcError) as excinfo:
        users_pb2_grpc.UsersServiceStub(channel).GetCurrentUser(
            users_pb2.GetCurrentUserRequest(), timeout=5
        )
    assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"certificate_chain": b"x"}, "needs both"),
        ({"credentials": grpc.ssl_channel_credentials(), "root_certificates": b"x"}, "either"),
        ({"server_name": "localhost"}, "TLS channels only"),
    ],
)
def test_contradictory_tls_options(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        client.connect("127.0.0.1:1", **kwargs)
    with pytest.raises(ValueError, match=message):
        client_aio.connect("127.0.0.1:1", **kwargs)


def test_the_newest_consistency_token_travels_with_later_calls(target, servicer) -> None:
    servicer.tokens = ["0/10", "0/9", "1/0"]  # the second is older than the first
    sent = []
    with client.connect(target, TOKEN) as channel:
        stub = users_pb2_grpc.UsersServiceStub(channel)
        stub.GetCurrentUser(users_pb2.GetCurrentUserRequest())  # before any write: none
        for _ in range(3):
            stub.UpdateUserSettings(users_pb2.UpdateUserSettingsRequest())
            stub.GetCurrentUser(users_pb2.GetCurrentUserRequest())
    for seen in servicer.seen:
        if seen["method"] == "GetCurrentUser":
            sent.append(seen["metadata"].get(client.CONSISTENCY_KEY))
    assert sent == [None, "0/10", "0/10", "1/0"]


def test_read_your_writes_off_sends_no_token(target, servicer) -> None:
    servicer.tokens = ["0/10"]
    with client.connect(target, TOKEN, read_your_writes=False) as channel:
        stub = users_pb2_grpc.UsersServiceStub(channel)
        stub.UpdateUserSettings(users_pb2.UpdateUserSettingsRequest())
        stub.GetCurrentUser(users_pb2.GetCurrentUserRequest())
    assert client.CONSISTENCY_KEY not in servicer.seen[-1]["metadata"]


# The asyncio helper.


def _run(coroutine_function: Any, *args: Any) -> Any:
    return asyncio.run(coroutine_function(*args))


def test_aio_token_deadline_and_retry(target: str, servicer: FakeUsers) -> None:
    async def calls() -> users_pb2.GetUserResponse:
        async with client_aio.connect(target, TOKEN, default_timeout=DEFAULT_TIMEOUT) as channel:
            stub = users_pb2_grpc.UsersServiceStub(channel)
            await stub.GetCurrentUser(
                users_pb2.GetCurrentUserRequest(), metadata=(("x-trace-id", "t1"),)
            )
            return await stub.GetUser(users_pb2.GetUserRequest(id="u1"))

    assert _run(calls).user.id == "u1"
    assert servicer.calls["GetUser"] == 3  # UNAVAILABLE twice, retried
    first = servicer.seen[0]
    assert first["metadata"]["authorization"] == f"Bearer {TOKEN}"
    assert first["metadata"]["x-trace-id"] == "t1"
    assert 0 < first["time_remaining"] <= DEFAULT_TIMEOUT + SLACK


def test_aio_carries_the_newest_consistency_token(target: str, servicer: FakeUsers) -> None:
    servicer.tokens = ["0/10", "0/9"]

    async def calls() -> None:
        async with client_aio.connect(target, TOKEN) as channel:
            stub = users_pb2_grpc.UsersServiceStub(channel)
            for _ in range(2):
                await stub.UpdateUserSettings(users_pb2.UpdateUserSettingsRequest())
                await stub.GetCurrentUser(users_pb2.GetCurrentUserRequest())

    _run(calls)
    sent = [s["metadata"].get(client.CONSISTENCY_KEY) for s in servicer.seen
            if s["method"] == "GetCurrentUser"]  # fmt: skip
    assert sent == ["0/10", "0/10"]


def test_aio_errors_are_not_retried_and_decode(target: str, servicer: FakeUsers) -> None:
    async def calls() -> list[client.ErrorDetails]:
        found = []
        async with client_aio.connect(target, TOKEN) as channel:
            stub = users_pb2_grpc.UsersServiceStub(channel)
            for call, request in (
                (stub.CreateUser, users_pb2.CreateUserRequest()),
                (stub.ListUsers, users_pb2.ListUsersRequest(page_size=5000)),
                (stub.UpdateUser, users_pb2.UpdateUserRequest()),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                    await call(request)
                found.append(client.error_details(excinfo.value))
        return found

    created, listed, garbage = _run(calls)
    assert created.code == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls["CreateUser"] == 1
    assert (listed.reason, listed.field_violations) == (
        "INVALID_ARGUMENT",
        {"page_size": "must be at most 1000"},
    )
    assert (garbage.code, garbage.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "")


@pytest.mark.parametrize("arity", ["unary_unary", "unary_stream", "stream_unary", "stream_stream"])
def test_aio_interceptor_covers_every_arity(target: str, servicer: FakeUsers, arity: str) -> None:
    request = users_pb2.GetCurrentUserRequest()

    async def call() -> None:
        async with client_aio.connect(target, TOKEN, default_timeout=DEFAULT_TIMEOUT) as channel:
            method = getattr(channel, arity)(
                "/blogstore.v1.UsersService/GetCurrentUser",
                request_serializer=users_pb2.GetCurrentUserRequest.SerializeToString,
                response_deserializer=users_pb2.GetCurrentUserResponse.FromString,
            )
            result = method(iter([request]) if arity.startswith("stream") else request)
            if arity.endswith("_stream"):
                assert len([r async for r in result]) == 1
            else:
                await result

    _run(call)
    seen = servicer.seen[-1]
    assert seen["metadata"]["authorization"] == f"Bearer {TOKEN}"
    assert 0 < seen["time_remaining"] <= DEFAULT_TIMEOUT + SLACK


def test_aio_over_tls(tls_target: str, servicer: FakeUsers, pki: Pki) -> None:
    async def call() -> None:
        async with client_aio.connect(
            tls_target, TOKEN, root_certificates=pki.read("ca"), **_client_pem(pki)
        ) as channel:
            await users_pb2_grpc.UsersServiceStub(channel).GetCurrentUser(
                users_pb2.GetCurrentUserRequest()
            )

    _run(call)
    assert servicer.seen[-1]["metadata"]["authorization"] == f"Bearer {TOKEN}"


def test_client_distribution_is_typed() -> None:
    package = Path(client.__file__).resolve().parent.parent
    assert (package / "py.typed").is_file()
    assert list((package / "v1").glob("*_pb2.pyi"))
