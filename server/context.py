"""The current call: its caller (principal, request id, deadline) and its RPC method.

Set by the request interceptor; grpcio runs every RPC in its own copy of the contextvars
context, so neither leaks between calls.
"""

from __future__ import annotations

from contextvars import ContextVar

from storage.actors import ANONYMOUS, Caller

_current: ContextVar[Caller] = ContextVar("blogstore_caller", default=Caller(ANONYMOUS))  # noqa: B039 - frozen
_method: ContextVar[str] = ContextVar("blogstore_method", default="")


def current_caller() -> Caller:
    return _current.get()


def set_caller(caller: Caller) -> None:
    _current.set(caller)


def current_method() -> str:
    """The RPC being served ('' outside one), for log lines written below the servicers."""
    return _method.get()


def set_method(method: str) -> None:
    _method.set(method)
