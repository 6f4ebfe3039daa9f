"""The asyncio twin of ``blogstore.client.connect``: same token, deadline, retries and TLS."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc import aio

from blogstore.client import ConsistencyTokens, _channel_setup, _with_auth

__all__ = ["connect"]


class _Defaults:
    """Adds the bearer token and a default timeout; grpc.aio wants one object per arity."""

    def __init__(
        self,
        token: str | None,
        default_timeout: float | None,
        tokens: ConsistencyTokens | None = None,
    ) -> None:
        self._auth = ("authorization", f"Bearer {token}") if token else None
        self._default_timeout = default_timeout
        self._tokens = tokens
        self._learning: set[asyncio.Future[None]] = set()  # (kept until done: not collected)

    def _details(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        metadata = _with_auth(details.metadata, self._auth)
        if self._tokens is not None:
            metadata = self._tokens.add_to(metadata)
        return aio.ClientCallDetails(
            method=details.method,
            timeout=details.timeout if details.timeout is not None else self._default_timeout,
            metadata=aio.Metadata(*metadata) if metadata else None,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )

    async def _intercept(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Awaitable[Any]],
        details: aio.ClientCallDetails,
        request: Any,  # a message, or an iterator of them for client streams
    ) -> Any:
        call = await continuation(self._details(details), request)
        if self._tokens is not None:
            tokens = self._tokens

            async def learn() -> None:
                try:
                    tokens.offer(await call.trailing_metadata())
                except (grpc.RpcError, asyncio.CancelledError):
                    return

            self._learning.add(task := asyncio.ensure_future(learn()))
            task.add_done_callback(self._learning.discard)
        return call

    async def _intercept_unary_response(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Awaitable[Any]],
        details: aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        """One response: the call is awaited here, so its token is learned before the
        caller's next call starts (a read right after a write carries it)."""
        call = await continuation(self._details(details), request)
        if self._tokens is not None:
            await call.code()  # done: the status and trailers are in (errors raise later)
            self._tokens.offer(await call.trailing_metadata())
        return call


class _UnaryUnary(_Defaults, aio.UnaryUnaryClientInterceptor):
    intercept_unary_unary = _Defaults._intercept_unary_response  # pyright: ignore[reportAssignmentType]  # one body, as in the sync client


class _UnaryStream(_Defaults, aio.UnaryStreamClientInterceptor):
    intercept_unary_stream = _Defaults._intercept  # pyright: ignore[reportAssignmentType]  # one body, as in the sync client


class _StreamUnary(_Defaults, aio.StreamUnaryClientInterceptor):
    intercept_stream_unary = _Defaults._intercept_unary_response  # pyright: ignore[reportAssignmentType]  # one body, as in the sync client


class _StreamStream(_Defaults, aio.StreamStreamClientInterceptor):
    intercept_stream_stream = _Defaults._intercept  # pyright: ignore[reportAssignmentType]  # one body, as in the sync client


def connect(
    target: str,
    token: str | None = None,
    *,
    secure: bool = False,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
    default_timeout: float | None = 10.0,
    options: Sequence[tuple[str, Any]] = (),
    read_your_writes: bool = True,
) -> aio.Channel:
    """Opens a ``grpc.aio`` channel to blogstore; arguments as for ``blogstore.client.connect``.

    Call it inside the event loop that will use the channel; ``await channel.close()`` (or
    ``async with``) when done.
    """
    credentials, channel_options = _channel_setup(
        secure=secure,
        root_certificates=root_certificates,
        certificate_chain=certificate_chain,
        private_key=private_key,
        credentials=credentials,
        server_name=server_name,
        options=options,
    )
    tokens = ConsistencyTokens() if read_your_writes else None
    interceptors = [
        kind(token, default_timeout, tokens)
        for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)
    ]
    if credentials is None:
        return aio.insecure_channel(target, options=channel_options, interceptors=interceptors)
    return aio.secure_channel(
        target, credentials, options=channel_options, interceptors=interceptors
    )
