"""The request pipeline around every blogstore RPC: request id, auth, error mapping, access log.

One interceptor does the steps in a fixed order, so that no RPC can skip authentication and
every failure leaves through the one error table (server/errors.py). Health and reflection
are open and pass through untouched (and uncounted).

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
from dataclasses import dataclass
from typing import Any

import grpc

from server.auth import Authenticator, bearer_token
from server.context import set_caller, set_method
from server.errors import to_status
from server.telemetry import Telemetry
from server.validation import reject_nul_characters
from storage.actors import ANONYMOUS, Actor, Caller
from storage.errors import DomainError, Unauthenticated

log = logging.getLogger("blogstore.access")
error_log = logging.getLogger("blogstore.errors")

OPEN_SERVICE_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
PUBLIC_METHODS = frozenset({"/blogstore.v1.UsersService/Authenticate"})
REGISTRATION_METHOD = "/blogstore.v1.UsersService/CreateUser"
REQUEST_ID_KEY = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,100}$")
_OK = grpc.StatusCode.OK


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


class _Call:
    """One call's bookkeeping, from its start to its access-log line."""

    __slots__ = ("method", "rpc", "caller", "code", "started", "trace_id", "ended")

    def __init__(self, method: str, rpc: Any, caller: Caller) -> None:
        self.method, self.rpc, self.caller = method, rpc, caller
        self.code = _OK
        self.started = time.perf_counter()
        self.trace_id: str | None = None
        self.ended = False  # a non-blocking stream sent its end


class RequestInterceptor(grpc.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        *,
        allow_registration: bool,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.allow_registration = allow_registration
        self.telemetry = telemetry or Telemetry()
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: Any
    ) -> grpc.RpcMethodHandler | None:
        method: str = details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = continuation(details)
        if handler is None or method.startswith(OPEN_SERVICE_PREFIXES):
            return handler
        rpc = self.telemetry.rpc
        if handler.unary_unary:
            wrapped = handler._replace(
                unary_unary=self._wrap_unary(method, rpc(method, "unary"), handler.unary_unary)
            )
        elif handler.unary_stream and getattr(handler.unary_stream, "experimental_non_blocking", 0):
            behavior = self._wrap_non_blocking(
                method, rpc(method, "server_stream"), handler.unary_stream
            )
            # Not traced by OpenTelemetry's interceptor: its span would end when the handler
            # returns, at once; _wrap_non_blocking keeps its own span open to the stream's end.
            self._handlers[method] = handler._replace(unary_stream=behavior)
            return self._handlers[method]
        elif handler.unary_stream:
            behavior = self._wrap_stream(method, rpc(method, "server_stream"), handler.unary_stream)
            wrapped = handler._replace(unary_stream=behavior)
        elif handler.stream_unary:
            behavior = self._wrap_unary(method, rpc(method, "client_stream"), handler.stream_unary)
            wrapped = handler._replace(stream_unary=behavior)
        else:
            behavior = self._wrap_stream(method, rpc(method, "bidi_stream"), handler.stream_stream)
            wrapped = handler._replace(stream_stream=behavior)
        self._handlers[method] = self.telemetry.traced(details, wrapped)
        return self._handlers[method]

    def _wrap_unary(
        self, method: str, rpc: Any, behavior: Callable[..., Any]
    ) -> Callable[..., Any]:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            call = self._begin(method, rpc, context)
            try:
                with self._serving(call, context, request):
                    return behavior(request, context)
            finally:
                self._end(call)

        return unary

    def _wrap_stream(
        self, method: str, rpc: Any, behavior: Callable[..., Any]
    ) -> Callable[..., Any]:
        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = self._begin(method, rpc, context)
            try:
                with self._serving(call, context, request):
                    yield from behavior(request, context)
            finally:
                self._end(call)

        return stream

    def _wrap_non_blocking(
        self, method: str, rpc: Any, behavior: Callable[..., Any]
    ) -> Callable[..., Any]:
        """A stream whose handler returns at once and sends later (no worker held).

        It ends when the server sends its end (send(None), with the code set on the context)
        or when the client goes away; grpcio then runs the context's callbacks, where the call
        is counted and logged.
        """
        tracing = self.telemetry.tracing

        @functools.wraps(behavior)  # keeps experimental_non_blocking for grpcio
        def non_blocking(
            request: Any, context: grpc.ServicerContext, send_response_callback: Any = None
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

            def finished() -> None:
                code = context.code()
                if code is None:
                    code = _OK if call.ended else _gone(context)
                call.code = code
                if span is not None:
                    tracing.end_rpc_span(span, code)
                self._end(call, traced=False)

            if not context.add_callback(finished):
                finished()  # already over (cancelled before it started)
            try:
                with self._serving(call, context, request):
                    behavior(request, context, send)
            finally:
                if token is not None:
                    tracing.detach(token)

        return non_blocking

    def _begin(self, method: str, rpc: Any, context: grpc.ServicerContext) -> _Call:
        call = _Call(method, rpc, Caller(ANONYMOUS, _request_id(context.invocation_metadata())))
        set_method(method)
        rpc.started()
        context.set_trailing_metadata(((REQUEST_ID_KEY, call.caller.request_id),))
        return call

    @contextlib.contextmanager
    def _serving(self, call: _Call, context: grpc.ServicerContext, request: Any) -> Iterator[None]:
        """Principal, input check; every failure leaves through the error table."""
        request_id = call.caller.request_id
        try:
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            metadata = context.invocation_metadata()
            principal = self._principal(call.method, metadata, request_id, deadline)
            call.caller = Caller(principal, request_id, deadline)
            set_caller(call.caller)
            reject_nul_characters(request)
            yield
        except GeneratorExit:  # a blocking stream whose client went away
            call.code = grpc.StatusCode.CANCELLED
            raise
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

    def _principal(
        self, method: str, metadata: Any, request_id: str, deadline: float | None
    ) -> Actor:
        if method in PUBLIC_METHODS:
            return ANONYMOUS
        token = bearer_token(metadata)
        if token is not None:
            return self.authenticator.resolve(token, request_id, deadline)
        if method == REGISTRATION_METHOD and self.allow_registration:
            return ANONYMOUS
        raise Unauthenticated(
            "this call needs 'authorization: Bearer <token>' metadata", reason="missing"
        )

    def _failure_status(self, method: str, request_id: str, error: Exception) -> grpc.Status:
        if not isinstance(error, DomainError):
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
