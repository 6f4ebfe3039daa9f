"""The request pipeline around every blogstore RPC: request id, auth, error mapping, access log.

One interceptor does the four steps in a fixed order, so that no RPC can skip authentication
and every failure leaves through the one error table (server/errors.py). Health and reflection
are open and pass through untouched.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from server.auth import Authenticator, bearer_token
from server.context import set_caller
from server.errors import to_status
from server.validation import reject_nul_characters
from storage.actors import ANONYMOUS, Actor, Caller
from storage.errors import DomainError, Unauthenticated

log = logging.getLogger("blogstore.access")
error_log = logging.getLogger("blogstore.errors")

OPEN_SERVICE_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
PUBLIC_METHODS = frozenset({"/blogstore.v1.UsersService/Authenticate"})
REGISTRATION_METHOD = "/blogstore.v1.UsersService/CreateUser"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,100}$")


class RequestInterceptor(grpc.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, *, allow_registration: bool) -> None:
        self.authenticator = authenticator
        self.allow_registration = allow_registration
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
        if handler.unary_unary:
            wrapped = handler._replace(unary_unary=self._wrap_unary(method, handler.unary_unary))
        elif handler.unary_stream and getattr(handler.unary_stream, "experimental_non_blocking", 0):
            wrapped = handler._replace(
                unary_stream=self._wrap_non_blocking(method, handler.unary_stream)
            )
        elif handler.unary_stream:
            wrapped = handler._replace(unary_stream=self._wrap_stream(method, handler.unary_stream))
        elif handler.stream_unary:
            wrapped = handler._replace(stream_unary=self._wrap_unary(method, handler.stream_unary))
        else:
            wrapped = handler._replace(
                stream_stream=self._wrap_stream(method, handler.stream_stream)
            )
        self._handlers[method] = wrapped
        return wrapped

    def _wrap_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            with self._serving(method, context, request):
                return behavior(request, context)

        return unary

    def _wrap_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._serving(method, context, request):
                yield from behavior(request, context)

        return stream

    def _wrap_non_blocking(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        """A stream whose handler returns at once and sends later (no worker held)."""

        @functools.wraps(behavior)  # keeps experimental_non_blocking for grpcio
        def non_blocking(
            request: Any, context: grpc.ServicerContext, send_response_callback: Any = None
        ) -> None:
            with self._serving(method, context, request):
                behavior(request, context, send_response_callback)

        return non_blocking

    @contextlib.contextmanager
    def _serving(self, method: str, context: grpc.ServicerContext, request: Any) -> Iterator[None]:
        """Request id, principal, input check; every failure leaves through the error table."""
        started = time.perf_counter()
        metadata = context.invocation_metadata()
        caller = Caller(ANONYMOUS, _request_id(metadata))
        code = grpc.StatusCode.OK
        try:
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            principal = self._principal(method, metadata, caller.request_id, deadline)
            caller = Caller(principal, caller.request_id, deadline)
            set_caller(caller)
            reject_nul_characters(request)
            yield
        except Exception as error:  # noqa: BLE001 - every failure leaves through the table
            status = _failure_status(method, caller.request_id, error)
            code = status.code
            context.abort_with_status(status)
        finally:
            _log_access(method, caller, code, started)

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
        raise Unauthenticated("this call needs 'authorization: Bearer <token>' metadata")


def _failure_status(method: str, request_id: str, error: Exception) -> grpc.Status:
    if not isinstance(error, DomainError):
        error_log.error(
            "unexpected error in %s (request id %s)", method, request_id, exc_info=error
        )
    return to_status(error, request_id)


def _request_id(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "x-request-id" and _REQUEST_ID.match(value):
            return value
    return secrets.token_hex(16)


def _log_access(method: str, caller: Caller, code: grpc.StatusCode, started: float) -> None:
    if log.isEnabledFor(logging.INFO):
        elapsed_ms = (time.perf_counter() - started) * 1000
        actor = caller.actor
        log.info(
            "%s %s %.1fms request_id=%s principal=%s:%s",
            method,
            code.name,
            elapsed_ms,
            caller.request_id,
            actor.kind.value,
            actor.user_id or actor.name,
            extra={
                "rpc_method": method,
                "code": code.name,
                "duration_ms": round(elapsed_ms, 2),
                "request_id": caller.request_id,
                "principal": f"{actor.kind.value}:{actor.user_id or actor.name}",
            },
        )
