"""Every bad input is INVALID_ARGUMENT naming the field, never INTERNAL, and logs no ERROR:
out-of-range Timestamps, non-finite or too deeply nested Struct values, undecodable bodies
(UNAUTHENTICATED first without credentials), and Health/List answers anonymous callers."""

from __future__ import annotations

import logging
import math

import grpc
import pytest
from blogstore import client
from google.protobuf.struct_pb2 import Struct
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.decoding import BODY
from server.validation import MAX_STRUCT_DEPTH, MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS
from tests.request_types import Method, all_methods, fields_of_type, set_at

METHODS = all_methods()
ANONYMOUS_OK = {"Authenticate"}  # open to anonymous callers (registration is off in tests)
BAD_TIMESTAMPS = [
    {"seconds": 253_402_300_800},  # 10000-01-01
    {"seconds": -62_135_596_801},  # before 0001-01-01
    {"nanos": -1},
    {"nanos": 1_000_000_000},
]
TIMESTAMP_FIELDS = [
    (method, path)
    for method in METHODS
    for path, _ in fields_of_type(method.descriptor.input_type, "google.protobuf.Timestamp")
]
STRUCT_FIELDS = [
    (method, path)
    for method in METHODS
    for path, _ in fields_of_type(method.descriptor.input_type, "google.protobuf.Struct")
]


@pytest.fixture(autouse=True)
def no_error_logged(caplog):
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture(scope="module")
def admin_channel(connect, admin_key) -> grpc.Channel:
    return connect(admin_key)


def violation(call) -> tuple[grpc.StatusCode, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    details = client.error_details(caught.value)
    fields = details.field_violations
    return caught.value.code(), fields


def test_every_method_with_a_timestamp_is_covered() -> None:
    assert len({m.path for m, _ in TIMESTAMP_FIELDS}) >= 11
    assert len({m.path for m, _ in STRUCT_FIELDS}) == 5  # + RecordUsage.parameters (issue 16)


@pytest.mark.parametrize(("method", "path"), TIMESTAMP_FIELDS, ids=lambda x: str(x))
def test_out_of_range_timestamps_name_the_field(admin_channel, method: Method, path: str):
    call = method.callable(admin_channel)
    for bad in BAD_TIMESTAMPS:
        request = method.request_class()
        timestamp, named = set_at(request, path)
        timestamp.seconds, timestamp.nanos = bad.get("seconds", 0), bad.get("nanos", 0)
        code, fields = violation(lambda r=request: call(r, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert named in fields, (bad, fields)


@pytest.mark.parametrize(("method", "path"), STRUCT_FIELDS, ids=lambda x: str(x))
def test_non_finite_numbers_in_structs_name_the_field(admin_channel, method: Method, path: str):
    call = method.callable(admin_channel)
    for number in (math.nan, math.inf, -math.inf):
        request = method.request_class()
        struct, named = set_at(request, path)
        struct.update({"ok": 1, "deep": {"list": [1, "two", number]}})
        code, fields = violation(lambda r=request: call(r, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert list(fields) == [f"{named}.deep.list[2]"]
        assert "finite" in fields[f"{named}.deep.list[2]"]


def nested(depth: int) -> Struct:
    """A Struct with `depth` objects inside one another."""
    inner = Struct()
    for _ in range(depth - 1):
        outer = Struct()
        outer.fields["x"].struct_value.CopyFrom(inner)
        inner = outer
    return inner


@pytest.mark.parametrize(("method", "path"), STRUCT_FIELDS, ids=lambda x: str(x))
def test_structs_nested_past_the_limit_are_invalid(admin_channel, method: Method, path: str):
    call = method.callable(admin_channel)
    request = method.request_class()
    struct, named = set_at(request, path)
    struct.CopyFrom(nested(MAX_STRUCT_DEPTH + 1))
    code, fields = violation(lambda: call(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    (field,) = fields
    assert field.startswith(named + ".x") and "deep" in fields[field]

    # Deeper than protobuf itself will parse: still INVALID_ARGUMENT, not INTERNAL.
    body = method.request_class().SerializeToString()
    tag = method.request_class.DESCRIPTOR.fields_by_name[path.split(".")[0]].number
    deep = nested(60).SerializeToString() if "." not in path else None
    if deep is not None:
        body += bytes([tag << 3 | 2]) + _varint(len(deep)) + deep
        code, fields = violation(lambda: method.raw(admin_channel)(body, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert BODY in fields


def test_structs_at_the_limit_are_accepted(admin_channel) -> None:
    from blogstore.v1 import pipelines_pb2, pipelines_pb2_grpc

    stub = pipelines_pb2_grpc.PipelinesServiceStub(admin_channel)
    user_id = client_user(admin_channel)
    request = pipelines_pb2.CreatePipelineRequest(user_id=user_id)
    request.input_config.CopyFrom(nested(MAX_STRUCT_DEPTH))
    assert stub.CreatePipeline(request, timeout=10).pipeline.id


def client_user(channel: grpc.Channel) -> str:
    from blogstore.v1 import users_pb2, users_pb2_grpc

    stub = users_pb2_grpc.UsersServiceStub(channel)
    return stub.GetCurrentUser(users_pb2.GetCurrentUserRequest(), timeout=10).user.id


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def first_string_field(method: Method) -> int | None:
    for field in method.request_class.DESCRIPTOR.fields:
        if field.type == field.TYPE_STRING and not field.is_repeated:
            return field.number
    return None


UNDECODABLE = {
    "truncated": b"\x0a\x10ab",
    "garbage": b"\xff\xff\xff\xff",
    "bad wire type": b"\x0f",
}


@pytest.mark.parametrize("method", METHODS, ids=str)
def test_undecodable_bodies_are_unauthenticated_first_then_invalid(
    connect, admin_channel, method: Method
):
    bodies = dict(UNDECODABLE)
    number = first_string_field(method)
    if number is not None and number < 16:
        bodies["bad UTF-8"] = bytes([number << 3 | 2, 2]) + b"\xff\xfe"
    for name, body in bodies.items():
        if method.descriptor.name not in ANONYMOUS_OK:
            code, _ = violation(lambda b=body: method.raw(connect())(b, timeout=10))
            assert code == grpc.StatusCode.UNAUTHENTICATED, name
        code, fields = violation(lambda b=body: method.raw(admin_channel)(b, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, name
        if name == "bad UTF-8":
            field = method.request_class.DESCRIPTOR.fields_by_number[number].name
            assert fields == {field: "is not valid UTF-8"}
        else:
            assert "could not be decoded" in fields[BODY]


def test_health_list_answers_anonymous_callers(target) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        statuses = stub.List(health_pb2.HealthListRequest(), timeout=5).statuses
        assert statuses["liveness"].status == health_pb2.HealthCheckResponse.SERVING
        assert "blogstore.v1.ArticlesService" in statuses
        # A body that does not decode (what logged a traceback per call): INVALID_ARGUMENT.
        for method, body in (("List", b"\xff"), ("Check", b"\x0a\x02\xff\xfe")):
            bad = channel.unary_unary(f"/grpc.health.v1.Health/{method}")
            with pytest.raises(grpc.RpcError) as caught:
                bad(body, timeout=5)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method


@pytest.mark.parametrize(("method", "path"), TIMESTAMP_FIELDS, ids=lambda x: str(x))
def test_timestamps_at_the_ends_of_the_range_are_no_internal_error(
    admin_channel, method: Method, path: str
):
    call = method.callable(admin_channel)
    for seconds in (MIN_TIMESTAMP_SECONDS, MAX_TIMESTAMP_SECONDS):
        request = method.request_class()
        timestamp, _ = set_at(request, path)
        timestamp.seconds, timestamp.nanos = seconds, 999_999_999
        try:
            call(request, timeout=10)
        except grpc.RpcError as error:
            assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_refuses_undecodable_requests_without_a_traceback(target, version) -> None:
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
        )
        with pytest.raises(grpc.RpcError) as caught:
            list(call(iter([b"\xff\xff"]), timeout=5))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
