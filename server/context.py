"""The current call's caller (principal, request id, deadline), set by the interceptors.

grpcio runs every RPC in its own copy of the contextvars context, so this never leaks between
calls.
"""

from __future__ import annotations

from contextvars import ContextVar

from storage.actors import ANONYMOUS, Caller

_current: ContextVar[Caller] = ContextVar("blogstore_caller", default=Caller(ANONYMOUS))  # noqa: B039 - frozen


def current_caller() -> Caller:
    return _current.get()


def set_caller(caller: Caller) -> None:
    _current.set(caller)
