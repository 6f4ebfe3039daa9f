"""Tests of blogstore.client against a real in-process gRPC server (no database)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from blogstore import client
from blogstore.v1 import users_pb2, users_pb2_grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

TOKEN = "secret-token"
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


@pytest.fixture
def servicer() -> FakeUsers:
    return FakeUsers()


@pytest.fixture
def target(servicer: FakeUsers) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    users_pb2_grpc.add_UsersServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


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
