"""Property-based fuzzing of every method of the five blogstore services (Hypothesis).

Requests are generated from the methods' descriptors: scalars with their extremes (NaN and
infinities too), strings with NUL and huge ones, bytes, enums with unknown numbers, nested and
repeated messages, maps, and the Timestamp, Struct and FieldMask well-known types. Each is sent
with an admin credential, a user credential and none; undecodable bodies (random bytes, valid
encodings cut short) are sent raw. Any INTERNAL or UNKNOWN answer, or any ERROR logged by the
server, fails. One run with a fixed seed (every method), one with a random seed (printed by
Hypothesis on failure; replay with --hypothesis-seed).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from blogstore.v1 import articles_pb2, articles_pb2_grpc, pipelines_pb2, pipelines_pb2_grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.request_types import Method, all_methods

METHODS = all_methods()
FAILURES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
TIMEOUT = 10.0
# No shrinking: a failure reports the example as generated, within the run's bounded time
# (shrinking calls the server hundreds of times more).
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    max_examples=int(os.environ.get("BLOGSTORE_FUZZ_EXAMPLES", "6")),  # per method; more locally
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
F = FieldDescriptor
INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1), F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1), F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1), F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1), F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1), F.TYPE_FIXED64: (0, 2**64 - 1),
}  # fmt: skip


class ErrorRecords(logging.Handler):
    """Every ERROR the server logs while the fuzz runs (grpcio's own loggers too)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def errors() -> Iterator[ErrorRecords]:
    handler = ErrorRecords()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="module")
def world(connect, admin_key, new_account) -> dict[str, Any]:
    """Channels for each credential, and real ids for the generated strings to hit."""
    account = new_account()
    user = connect(account.token)
    article = (
        articles_pb2_grpc.ArticlesServiceStub(user)
        .CreateArticle(
            articles_pb2.CreateArticleRequest(article=articles_pb2.Article(title="Fuzz target"))
        )
        .article
    )
    pipeline = (
        pipelines_pb2_grpc.PipelinesServiceStub(user)
        .CreatePipeline(pipelines_pb2.CreatePipelineRequest())
        .pipeline
    )
    return {
        "channels": {"admin": connect(admin_key), "user": user, "none": connect()},
        "ids": [account.id, article.id, pipeline.id, article.slug, article.etag],
    }


def strings(ids: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(["", "\x00", "a\x00b", " ", "-1", "2024-13", "x" * 70_000, *ids]),
        st.builds(lambda: str(uuid.uuid4())),
        st.sampled_from(["x" * (2 * 1024 * 1024 + 1), "\U0001f600" * 600]),
    )


def timestamps() -> st.SearchStrategy[dict]:
    seconds = st.one_of(
        st.sampled_from([0, -1, 253_402_300_799, 253_402_300_800, -62_135_596_800,
                         -62_135_596_801, 2**63 - 1, -(2**63), 1_700_000_000]),
        st.integers(-(2**63), 2**63 - 1),
    )  # fmt: skip
    nanos = st.one_of(
        st.sampled_from([0, -1, 999_999_999, 1_000_000_000]), st.integers(-(2**31), 2**31 - 1)
    )
    return st.fixed_dictionaries({"seconds": seconds, "nanos": nanos})


def json_values(ids: list[str]) -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(), st.booleans(), st.floats(), st.sampled_from([float("nan"), float("inf")]),
        st.integers(-(2**53), 2**53), strings(ids),
    )  # fmt: skip
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(strings(ids), inner, max_size=3)
        ),
        max_leaves=12,
    )


def nested_struct(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


def structs(ids: list[str]) -> st.SearchStrategy[dict]:
    return st.one_of(
        st.dictionaries(strings(ids), json_values(ids), max_size=4),
        st.integers(1, 31).map(nested_struct),
    )


def scalar(field: FieldDescriptor, ids: list[str]) -> st.SearchStrategy[Any]:
    if field.type in INT_RANGES:
        low, high = INT_RANGES[field.type]
        return st.one_of(
            st.sampled_from([0, 1, -1 if low else 2, low, high]), st.integers(low, high)
        )
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(width=32 if field.type == F.TYPE_FLOAT else 64)
    if field.type == F.TYPE_STRING:
        return strings(ids)
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == F.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))
    raise AssertionError(field.type)


def fill(message: Any, data: st.DataObject, ids: list[str], depth: int = 0) -> Any:
    """Set a random subset of `message`'s fields to generated values."""
    descriptor: Descriptor = message.DESCRIPTOR
    name = descriptor.full_name
    if name == "google.protobuf.Timestamp":
        value = data.draw(timestamps())
        message.seconds, message.nanos = value["seconds"], value["nanos"]
        return message
    if name == "google.protobuf.Struct":
        message.update(data.draw(structs(ids)))
        return message
    if name == "google.protobuf.FieldMask":
        message.paths.extend(data.draw(st.lists(st.one_of(st.text(max_size=12), st.sampled_from(
            ["title", "content_markdown", "id", "etag", "name", "metadata", "is_active", "email",
             "username", "is_admin", "status", "user.email", "*", ""])), max_size=4)))  # fmt: skip
        return message
    for field in descriptor.fields:
        if depth > 3 or not data.draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field, value_field = field.message_type.fields
            target = getattr(message, field.name)
            for _ in range(data.draw(st.integers(0, 2))):
                key = data.draw(scalar(key_field, ids))
                if value_field.message_type is None:
                    target[key] = data.draw(scalar(value_field, ids))
                else:
                    fill(target[key], data, ids, depth + 1)
        elif field.is_repeated:
            target = getattr(message, field.name)
            for _ in range(data.draw(st.integers(0, 3))):
                if field.message_type is None:
                    target.append(data.draw(scalar(field, ids)))
                else:
                    fill(target.add(), data, ids, depth + 1)
        elif field.message_type is not None:
            fill(getattr(message, field.name), data, ids, depth + 1)
            getattr(message, field.name).SetInParent()
        else:
            setattr(message, field.name, data.draw(scalar(field, ids)))
    return message


def send(method: Method, channel: grpc.Channel, body: Any) -> grpc.StatusCode:
    """Call the method (bytes go raw) and return its status; a stream is read to one message."""
    call = method.raw(channel) if isinstance(body, bytes) else None
    try:
        if method.descriptor.server_streaming:
            stream_call = channel.unary_stream(
                method.path,
                None if isinstance(body, bytes) else method.request_class.SerializeToString,
                method.response_class.FromString,
            )
            stream = stream_call(body, timeout=1.0)
            next(iter(stream), None)
            stream.cancel()
        elif call is not None:
            call(body, timeout=TIMEOUT)
        else:
            method.callable(channel)(body, timeout=TIMEOUT)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def bodies(method: Method, data: st.DataObject, ids: list[str]) -> list[Any]:
    request = fill(method.request_class(), data, ids)
    encoded = request.SerializeToString()
    cut = data.draw(st.integers(0, max(len(encoded) - 1, 0)))
    return [
        request,
        encoded[:cut] + data.draw(st.binary(max_size=8)),
        data.draw(st.binary(max_size=64)),
    ]


def check(method: Method, data: st.DataObject, world: dict, errors: ErrorRecords) -> None:
    errors.records.clear()
    for body in bodies(method, data, world["ids"]):
        for who, channel in world["channels"].items():
            code = send(method, channel, body)
            shown = body if len(repr(body)) < 2000 else f"{repr(body)[:2000]}..."
            assert code not in FAILURES, f"{method} as {who}: {code.name} for {shown}"
            assert not errors.records, [r.getMessage() for r in errors.records]


@pytest.mark.parametrize("method", METHODS, ids=str)
@settings(FUZZ, derandomize=True)
@given(data=st.data())
def test_every_method_with_a_fixed_seed(method: Method, world, errors, data) -> None:
    check(method, data, world, errors)


@settings(FUZZ, max_examples=FUZZ.max_examples * 10)
@given(method=st.sampled_from(METHODS), data=st.data())
def test_any_method_with_a_random_seed(method: Method, world, errors, data) -> None:
    check(method, data, world, errors)
