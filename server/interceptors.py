"""The request pipeline around every blogstore RPC: request id, auth, error mapping, access log.

One interceptor does the steps in a fixed order, so that no RPC can skip authentication and
every failure leaves through the one error table (server/errors.py). Every method is served
as a request stream of raw bytes (server/decoding.py), so the principal is resolved from the
metadata alone (`_serving`) before the body is read; then the body is decoded and checked
(server/validation.check_request). Health and reflection are open and uncounted; their bodies
are only decoded safely.

Every call answers with its request id in the `x-request-id` trailing metadata, errors and
streams included, and is counted and logged once, when it ends: a stream when its last message
or its cancellation arrives, not when its handler returns.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import grpc
from blogstore.client import CONSISTENCY_KEY

from server import decoding
from server.auth import Authenticator, bearer_token
from server.context import set_caller, set_method
from server.errors import STATUS_TABLE, lookup, to_status
from server.fairness import FairShare
from server.memory import LARGE_REQUEST_BYTES, Trimmer
from server.telemetry import Telemetry
from server.validation import check_request
from storage.actors import ANONYMOUS, Actor, Caller
from storage.errors import DomainError, InvalidArgument, Unauthenticated
from storage.replicas import committed, forget_commits, format_lsn, parse_lsn

# A method's admission (RequestInterceptor.admit): a context manager entered before the read.
Admission = Callable[[Caller], AbstractContextManager[Any]]

log = logging.getLogger("blogstore.access")
error_log = logging.getLogger("blogstore.errors")

OPEN_SERVICE_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
PUBLIC_METHODS = frozenset({"/blogstore.v1.UsersService/Authenticate"})
REGISTRATION_METHOD = "/blogstore.v1.UsersService/CreateUser"
REQUEST_ID_KEY = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,100}$")
_OK = grpc.StatusCode.OK
_GRPC_TYPES = {  # the metrics' grpc_type label: what the method is, not how it is served
    "unary_unary": "unary",
    "unary_stream": "server_stream",
    "stream_unary": "client_stream",
    "stream_stream": "bidi_stream",
}


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


class _Call:
    """One call's bookkeeping, from its start to its access-log line."""

    __slots__ = (
        "method", "rpc", "caller", "code", "started", "trace_id", "ended", "request_bytes",
    )  # fmt: skip

    def __init__(self, method: str, rpc: Any, caller: Caller) -> None:
        self.method, self.rpc, self.caller = method, rpc, caller
        self.code = _OK
        self.started = time.perf_counter()
        self.trace_id: str | None = None
        self.ended = False  # a non-blocking stream sent its end
        self.request_bytes = 0


class RequestInterceptor(grpc.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        *,
        allow_registration: bool,
        telemetry: Telemetry | None = None,
        calls: FairShare,
    ) -> None:
        self.authenticator = authenticator
        self.calls = calls  # each principal's share of the request threads (server/fairness.py)
        self.allow_registration = allow_registration
        self.telemetry = telemetry or Telemetry()
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        self._trimmer = Trimmer()
        self._admissions: dict[str, Admission] = {}

    def admit(self, method: str, admission: Admission) -> None:
        """Run `method`'s calls inside `admission(caller)`, entered BEFORE the body is read:
        a call waiting there (for a batch slot) holds no request, only the transport's
        flow-control window. Its errors leave through the error table like the handler's."""
        self._admissions[method] = admission

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: Any
    ) -> grpc.RpcMethodHandler | None:
        method: str = details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = continuation(details)
        if handler is None:
            return None
        if method.startswith(OPEN_SERVICE_PREFIXES):
            self._handlers[method] = decoding.open_method(handler)
            return self._handlers[method]
        kind = decoding.kind_of(handler)
        behavior, rpc = getattr(handler, kind), self.telemetry.rpc(method, _GRPC_TYPES[kind])
        read = self._reader(handler)
        deferred = kind == "unary_unary" and getattr(behavior, "deferred_reply", False)
        if deferred or (
            kind == "unary_stream" and getattr(behavior, "experimental_non_blocking", False)
        ):
            # Not traced by OpenTelemetry's interceptor: its span would end when the handler
            # returns, at once; _wrap_non_blocking keeps its own span open to the call's end.
            wrapped = self._wrap_non_blocking(method, rpc, behavior, read, unary=deferred)
            self._handlers[method] = decoding.as_raw_stream(handler, wrapped, deferred=deferred)
            return self._handlers[method]
        if handler.response_streaming:
            wrapped = self._wrap_stream(method, rpc, behavior, read)
        else:
            wrapped = self._wrap_unary(method, rpc, behavior, read)
        raw = decoding.as_raw_stream(handler, wrapped)
        self._handlers[method] = self.telemetry.traced(details, raw)
        return self._handlers[method]

    @staticmethod
    def _reader(handler: grpc.RpcMethodHandler) -> Callable[[Any, _Call], Any]:
        """Raw request bytes -> the checked request (or stream of them), after the principal."""
        decode = handler.request_deserializer or (lambda raw: raw)
        if handler.request_streaming:
            return lambda requests, _call: decoding.decoded_stream(requests, decode)

        def read(requests: Iterator[bytes], call: _Call) -> Any:
            try:
                raw = decoding.read_raw(requests)
            except grpc.RpcError:  # gone mid-body, perhaps over the limit: buffers were taken
                call.request_bytes = LARGE_REQUEST_BYTES
                raise
            call.request_bytes = len(raw)
            request = decoding.decode_body(raw, decode)
            check_request(request)
            return request

        return read

    def _wrap_unary(
        self, method: str, rpc: Any, behavior: Callable[..., Any], read: Callable[[Any, _Call], Any]
    ) -> Callable[..., Any]:
        def unary(requests: Any, context: grpc.ServicerContext) -> Any:
            call = self._begin(method, rpc, context)
            admission = self._admissions.get(method)
            try:
                with self._serving(call, context):
                    if admission is None:
                        response = behavior(read(requests, call), context)
                    else:
                        with admission(call.caller):
                            response = behavior(read(requests, call), context)
                    _send_consistency_token(context)
                    return response
            finally:
                self._end(call)

        return unary

    def _wrap_stream(
        self, method: str, rpc: Any, behavior: Callable[..., Any], read: Callable[[Any, _Call], Any]
    ) -> Callable[..., Any]:
        def stream(requests: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = self._begin(method, rpc, context)
            try:
                with self._serving(call, context):
                    yield from behavior(read(requests, call), context)
                    _send_consistency_token(context)
            finally:
                self._end(call)

        return stream

    def _wrap_non_blocking(
        self,
        method: str,
        rpc: Any,
        behavior: Callable[..., Any],
        read: Callable[[Any, _Call], Any],
        *,
        unary: bool = False,
    ) -> Callable[..., Any]:
        """A call whose handler returns at once and answers later (no worker held).

        A stream's handler gets `send` (a message; None ends the stream, with the code set on
        the context). A deferred unary method's (`deferred_reply`, served as a stream) gets
        `reply`: its one answer, or the exception the call ends with, mapped by the error
        table like any handler's. The call ends when its end is sent or its client goes away;
        grpcio then runs the context's callbacks, where the call is counted and logged.
        """
        tracing = self.telemetry.tracing

        @functools.wraps(behavior)
        def non_blocking(
            requests: Any, context: grpc.ServicerContext, send_response_callback: Any = None
        ) -> None:
            call = self._begin(method, rpc, context)
            span = token = None
            if tracing is not None:
                span, token = tracing.start_rpc_span(method, context.invocation_metadata())
                call.trace_id = tracing.trace_id()

            def send(response: Any) -> None:
                if response is None:
                    call.ended = True
                    _keep_request_id(context, call.caller.request_id)
                send_response_callback(response)

            def reply(answer: Any) -> None:
                if isinstance(answer, BaseException):
                    status = self._failure_status(method, call.caller.request_id, answer)
                    context.set_code(status.code)
                    context.set_details(status.details)
                    context.set_trailing_metadata(status.trailing_metadata)
                    send(None)
                else:
                    _send_consistency_token(context)
                    call.ended = True
                    decoding.send_unary(context, send_response_callback, answer)

            def finished() -> None:
                code = context.code()  # pyright: ignore[reportAttributeAccessIssue]  # grpc 1.38+
                if code is None:
                    code = _OK if call.ended else _gone(context)
                call.code = code
                if span is not None and tracing is not None:
                    tracing.end_rpc_span(span, code)
                self._end(call, traced=False)

            if not context.add_callback(finished):
                finished()  # already over (cancelled before it started)
            try:
                with self._serving(call, context):
                    behavior(read(requests, call), context, reply if unary else send)
            finally:
                if token is not None and tracing is not None:
                    tracing.detach(token)

        non_blocking.experimental_non_blocking = True  # type: ignore[attr-defined]
        return non_blocking

    def _begin(self, method: str, rpc: Any, context: grpc.ServicerContext) -> _Call:
        call = _Call(method, rpc, Caller(ANONYMOUS, _request_id(context.invocation_metadata())))
        set_method(method)
        forget_commits()
        rpc.started()
        context.set_trailing_metadata(((REQUEST_ID_KEY, call.caller.request_id),))
        return call

    @contextlib.contextmanager
    def _serving(self, call: _Call, context: grpc.ServicerContext) -> Iterator[None]:
        """The principal, from metadata alone, before the body is read (the block reads it);
        every failure leaves through the error table."""
        request_id = call.caller.request_id
        try:
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            metadata = context.invocation_metadata()
            principal = self._principal(call.method, metadata, request_id, deadline)
            call.caller = Caller(principal, request_id, deadline, _read_after(metadata))
            set_caller(call.caller)
            self.calls.take(principal, deadline)  # its share of the request threads
            try:
                yield
            finally:
                self.calls.release(principal)
        except GeneratorExit:  # a blocking stream whose client went away
            call.code = grpc.StatusCode.CANCELLED
            raise
        except grpc.RpcError:  # the call ended while its body was read: nothing to answer
            call.code = _gone(context)
            raise  # grpcio knows this one and logs nothing
        except Exception as error:  # noqa: BLE001 - every failure leaves through the table
            status = self._failure_status(call.method, request_id, error)
            call.code = status.code
            context.abort_with_status(status)

    def _end(self, call: _Call, *, traced: bool = True) -> None:
        elapsed = time.perf_counter() - call.started
        call.rpc.handled(call.code, elapsed)
        tracing = self.telemetry.tracing
        if traced and tracing is not None:
            tracing.current_status(call.code)
            call.trace_id = tracing.trace_id()
        _log_access(call, elapsed)
        self._trimmer.after(call.request_bytes)

    def _principal(
        self, method: str, metadata: Any, request_id: str, deadline: float | None
    ) -> Actor:
        if method in PUBLIC_METHODS:  # a service key is recognised (its own share, its XFF)
            return self.authenticator.service_or_anonymous(metadata)
        token = bearer_token(metadata)
        if token is not None:
            return self.authenticator.resolve(token, request_id, deadline)
        if method == REGISTRATION_METHOD and self.allow_registration:
            return ANONYMOUS
        raise Unauthenticated(
            "this call needs 'authorization: Bearer <token>' metadata", reason="missing"
        )

    def _failure_status(self, method: str, request_id: str, error: BaseException) -> grpc.Status:
        if not isinstance(error, DomainError) or lookup(STATUS_TABLE, type(error)) is None:
            error_log.error(
                "unexpected error in %s (request id %s)", method, request_id, exc_info=error
            )
        self.telemetry.failed(error)
        status = to_status(error, request_id)
        return _Status(
            status.code,
            status.details,
            (*status.trailing_metadata, (REQUEST_ID_KEY, request_id)),
        )


def _keep_request_id(context: grpc.ServicerContext, request_id: str) -> None:
    """Add the request id to trailing metadata set since the call began (an error's details)."""
    metadata = tuple(context.trailing_metadata() or ())
    if not any(key == REQUEST_ID_KEY for key, _ in metadata):
        context.set_trailing_metadata((*metadata, (REQUEST_ID_KEY, request_id)))


def _read_after(metadata: Any) -> int | None:
    """The consistency token a client sent (its newest write's WAL position), if any."""
    for key, value in metadata or ():
        if key == CONSISTENCY_KEY:
            try:
                return parse_lsn(value)
            except ValueError:
                raise InvalidArgument(
                    {CONSISTENCY_KEY: "must be a token from a write's response metadata"}
                ) from None
    return None


def _send_consistency_token(context: grpc.ServicerContext) -> None:
    """After a call that committed a write (with replicas): its WAL position, for the
    client's next reads (README "Read replicas")."""
    lsn = committed()
    if lsn is not None:
        metadata = tuple(context.trailing_metadata() or ())
        context.set_trailing_metadata((*metadata, (CONSISTENCY_KEY, format_lsn(lsn))))


def _gone(context: grpc.ServicerContext) -> grpc.StatusCode:
    """Why a stream ended that the server did not end: its deadline, or its client left."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _request_id(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and _REQUEST_ID.match(value):
            return value
    return secrets.token_hex(16)


def _log_access(call: _Call, elapsed: float) -> None:
    if log.isEnabledFor(logging.INFO):
        elapsed_ms = elapsed * 1000
        actor = call.caller.actor
        principal = f"{actor.kind.value}:{actor.user_id or actor.name}"
        extra = {
            "rpc_method": call.method,
            "code": call.code.name,
            "duration_ms": round(elapsed_ms, 2),
            "request_id": call.caller.request_id,
            "principal": principal,
        }
        trace = ""
        if call.trace_id is not None:
            extra["trace_id"] = call.trace_id
            trace = f" trace_id={call.trace_id}"
        log.info(
            "%s %s %.1fms request_id=%s principal=%s%s",
            call.method,
            call.code.name,
            elapsed_ms,
            call.caller.request_id,
            principal,
            trace,
            extra=extra,
        )
