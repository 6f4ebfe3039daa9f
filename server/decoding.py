"""Requests read as raw bytes, after the credential is checked, and decoded without INTERNAL.

grpcio decodes a unary request before any handler runs: a body that does not parse answers
INTERNAL "Exception deserializing request!" with an ERROR traceback, and a large body is parsed
before anyone looks at the credential. So the request interceptor serves every method as a
request stream of raw bytes (the wire is the same for unary and client-streaming calls: one
message, then the half-close, so clients still call them as unary). grpcio starts a
request-streaming handler as soon as the metadata arrives, before the body is read; the handler
checks the credential first, then reads the one message and decodes it here. A body that does
not decode is INVALID_ARGUMENT, naming the field where the wire format lets us find it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc._server
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from storage.errors import InvalidArgument

BODY = "(request body)"  # the field violation's name when no one field is to blame
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
_AS_STREAM = {"unary_unary": "stream_unary", "unary_stream": "stream_stream"}
_STATUS = getattr(grpc._server, "_status", None)  # send_unary's one batch, while grpcio has it


def kind_of(handler: grpc.RpcMethodHandler) -> str:
    return next(kind for kind in _KINDS if getattr(handler, kind) is not None)


def as_raw_stream(
    handler: grpc.RpcMethodHandler, behavior: Callable[..., Any], *, deferred: bool = False
) -> grpc.RpcMethodHandler:
    """`handler` with `behavior` as a request stream of raw bytes (no deserializer), whose
    answers may also be bytes already encoded (GetArticle's cache keeps its replies so).

    `deferred`: a unary method answered later by another thread (send_unary), served as a
    non-blocking response stream; on the wire a unary answer and a stream of one message are
    the same."""
    kind = kind_of(handler)
    new_kind = "stream_stream" if deferred else _AS_STREAM.get(kind, kind)
    return handler._replace(  # type: ignore[attr-defined]
        request_streaming=True,
        response_streaming=deferred or handler.response_streaming,
        request_deserializer=None,
        response_serializer=_bytes_or(handler.response_serializer),
        **{kind: None, new_kind: behavior},
    )


def _bytes_or(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """`serialize`, except for an answer that is bytes already: sent as it is."""
    if serialize is None:
        return None

    def encode(response: Any) -> bytes:
        return response if response.__class__ is bytes else serialize(response)

    return encode


def send_unary(context: grpc.ServicerContext, send: Callable[[Any], None], response: Any) -> None:
    """Answer a deferred unary call (as_raw_stream) with `response` and OK.

    As grpcio answers a unary call: the message and the status in one batch, not waited for.
    That needs grpcio's internals (grpc._server._status, the context's call and state); should
    they change, through the stream's public callback instead: the message, waited for until
    it is sent, then the status."""
    state = getattr(context, "_state", None)
    if _STATUS is None or state is None or not hasattr(state, "condition"):
        send(response)
        send(None)
        return
    payload = response if response.__class__ is bytes else response.SerializeToString()
    _STATUS(context._rpc_event, state, payload)  # type: ignore[attr-defined]


def read_raw(requests: Iterator[bytes]) -> bytes:
    """The one message of a unary-request call, undecoded.

    grpc.RpcError passes through: the call ended while its body was read (cancelled, past its
    deadline, or over the receive limit); grpcio logs nothing for it.
    """
    try:
        return next(requests)
    except StopIteration:
        raise InvalidArgument({BODY: "the call carried no request message"}) from None


def decoded_stream(requests: Iterator[bytes], decode: Callable[[bytes], Any]) -> Iterator[Any]:
    """A request stream's messages, each decoded as it is read."""
    for raw in requests:
        yield decode_body(raw, decode)


def decode_body(raw: bytes, decode: Callable[[bytes], Any]) -> Any:
    try:
        return decode(raw)
    except (DecodeError, RecursionError, ValueError, UnicodeDecodeError) as error:
        message_type = getattr(decode, "__self__", None)
        descriptor = getattr(message_type, "DESCRIPTOR", None)
        field = _bad_utf8_field(raw, descriptor) if descriptor is not None else None
        reason = str(error).rpartition(": ")[2] or type(error).__name__
        if field is not None:
            raise InvalidArgument({field: "is not valid UTF-8"}) from None
        raise InvalidArgument({BODY: f"the request could not be decoded: {reason}"}) from None


def open_method(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """An open (health, reflection) method whose bad bodies answer INVALID_ARGUMENT too."""
    kind, decode = kind_of(handler), handler.request_deserializer
    behavior = getattr(handler, kind)
    if decode is None:
        return handler

    if handler.request_streaming:

        @functools.wraps(behavior)  # keeps experimental_thread_pool and the like
        def streaming(requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            try:
                answer = behavior(decoded_stream(requests, decode), context)
            except InvalidArgument as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
            return _guarded(answer, context) if handler.response_streaming else answer

        # grpc's handlers are namedtuples; its stubs type them as an abstract class
        return handler._replace(request_deserializer=None, **{kind: streaming})  # pyright: ignore[reportAttributeAccessIssue]

    @functools.wraps(behavior)
    def unary(requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
        try:
            request = decode_body(read_raw(requests), decode)
        except InvalidArgument as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
        return behavior(request, context)

    return as_raw_stream(handler, unary)


def _guarded(responses: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    """A response stream whose handler reads requests as it goes (reflection)."""
    try:
        yield from responses
    except InvalidArgument as error:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)


def _bad_utf8_field(raw: bytes, descriptor: Descriptor, prefix: str = "", depth: int = 0) -> Any:
    """The path of the first string field in `raw` that is not UTF-8, if any (failures only)."""
    if depth > 100:
        return None
    at, end = 0, len(raw)
    try:
        while at < end:
            key, at = _varint(raw, at)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, at = _varint(raw, at)
            elif wire_type == 1:
                at += 8
            elif wire_type == 5:
                at += 4
            elif wire_type == 2:
                length, at = _varint(raw, at)
                chunk, at = raw[at : at + length], at + length
                field = descriptor.fields_by_number.get(number)
                if field is None:
                    continue
                path = prefix + field.name
                if field.type == FieldDescriptor.TYPE_STRING:
                    try:
                        chunk.decode()
                    except UnicodeDecodeError:
                        return path
                elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
                    found = _bad_utf8_field(chunk, field.message_type, path + ".", depth + 1)
                    if found is not None:
                        return found
            else:
                return None
    except IndexError:
        return None
    return None


def _varint(raw: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")
