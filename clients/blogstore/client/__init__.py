"""Channel helper for blogstore clients: auth metadata, default deadline, retries, TLS, rich errors.

`connect` opens a blocking channel; `blogstore.client.aio.connect` an asyncio one with the same
behaviour.
"""

from __future__ import annotations

import copy
import importlib
import json
import pkgutil
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

import blogstore.v1

__all__ = [
    "CONSISTENCY_KEY",
    "ERROR_DOMAIN",
    "ConsistencyTokens",
    "IDEMPOTENT_METHODS",
    "IDEMPOTENT_PREFIXES",
    "ErrorDetails",
    "aio",
    "channel_credentials",
    "connect",
    "error_details",
    "retry_service_config",
]

ERROR_DOMAIN = "blogstore"
"""The ``domain`` of the google.rpc.ErrorInfo detail blogstore attaches to its errors."""

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The largest message this client sends or accepts, and the server sends. The server accepts
requests only up to its receive limit (``server/limits.py``, derived from the field limits:
32 MiB, the largest legitimate request; README "Limits and protections"); a larger one is
RESOURCE_EXHAUSTED."""

IDEMPOTENT_PREFIXES: tuple[str, ...] = ("Get", "List", "Search")
"""Unary methods whose name starts with one of these (at a CamelCase boundary) are retried."""

IDEMPOTENT_METHODS: frozenset[str] = frozenset({"CheckQuota"})
"""Further unary methods, by exact name, that are safe to retry."""

CONSISTENCY_KEY = "x-blogstore-consistency"
"""Metadata of a write's response (trailing): the WAL position its commit reached. Sent back on
a read, it lets a read replica serve that read only once the replica has replayed that far,
else the primary serves it (read-your-writes). ``connect`` carries it for you."""

_M = TypeVar("_M", bound=Message)


class ConsistencyTokens:
    """The newest consistency token seen on one channel: learned from every response's
    trailing metadata, sent on every call (the server uses it for reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.newest: str | None = None
        self._order = -1

    def offer(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        for key, value in metadata or ():
            if key == CONSISTENCY_KEY and isinstance(value, str):
                order = _wal_order(value)
                with self._lock:
                    if order > self._order:
                        self.newest, self._order = value, order

    def learn_from(self, call: Any) -> None:
        """A done callback: the token in a finished call's trailing metadata, if any."""
        trailing: Any = getattr(call, "trailing_metadata", None)
        if trailing is not None:
            try:
                self.offer(trailing())
            except Exception:  # noqa: BLE001 - a call without metadata teaches nothing
                return

    def add_to(self, metadata: list[tuple[str, str | bytes]]) -> list[tuple[str, str | bytes]]:
        """The call's metadata plus the newest token; a caller's own token wins."""
        newest = self.newest
        if newest is not None and not any(key == CONSISTENCY_KEY for key, _ in metadata):
            metadata.append((CONSISTENCY_KEY, newest))
        return metadata


def _wal_order(token: str) -> int:
    """A token (a WAL position, 'hi/lo' in hex) as a number that orders like the WAL."""
    high, _, low = token.partition("/")
    try:
        return int(high, 16) << 32 | int(low, 16)
    except ValueError:
        return -1


_RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def _is_idempotent(name: str) -> bool:
    if name in IDEMPOTENT_METHODS:
        return True
    # "List" matches "ListUsers" but not "Listen".
    return any(
        name.startswith(p) and (len(name) == len(p) or not name[len(p)].islower())
        for p in IDEMPOTENT_PREFIXES
    )


def _discover_idempotent_methods() -> list[dict[str, str]]:
    """Walks every generated ``blogstore.v1.*_pb2`` module for idempotent unary methods."""
    names: list[dict[str, str]] = []
    for info in sorted(pkgutil.iter_modules(blogstore.v1.__path__), key=lambda i: i.name):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"blogstore.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                streaming = method.client_streaming or method.server_streaming
                if not streaming and _is_idempotent(method.name):
                    names.append({"service": service.full_name, "method": method.name})
    return names


_IDEMPOTENT_NAMES = _discover_idempotent_methods()


def retry_service_config() -> dict[str, Any]:
    """The gRPC service config (as a dict) that retries idempotent methods on UNAVAILABLE."""
    if not _IDEMPOTENT_NAMES:
        return {"methodConfig": []}
    return copy.deepcopy(
        {"methodConfig": [{"name": _IDEMPOTENT_NAMES, "retryPolicy": _RETRY_POLICY}]}
    )


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


def _with_auth(
    metadata: Iterable[tuple[str, str | bytes]] | None, auth: tuple[str, str] | None
) -> list[tuple[str, str | bytes]]:
    """The call's metadata plus the channel's token; a caller's own authorization wins."""
    merged = list(metadata or ())
    if auth and not any(key.lower() == "authorization" for key, _ in merged):
        merged.append(auth)
    return merged


class _DefaultsInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the bearer token and a default timeout to every call, of every arity."""

    def __init__(
        self,
        token: str | None,
        default_timeout: float | None,
        tokens: ConsistencyTokens | None = None,
    ) -> None:
        self._auth = ("authorization", f"Bearer {token}") if token else None
        self._default_timeout = default_timeout
        self._tokens = tokens

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        timeout = details.timeout if details.timeout is not None else self._default_timeout
        metadata = _with_auth(details.metadata, self._auth)
        if self._tokens is not None:
            metadata = self._tokens.add_to(metadata)
        return _CallDetails(
            method=details.method,
            timeout=timeout,
            metadata=metadata or None,
            credentials=details.credentials,
            wait_for_ready=getattr(details, "wait_for_ready", None),
            compression=getattr(details, "compression", None),
        )

    def _intercept(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        call = continuation(self._details(details), request)
        if self._tokens is not None:
            call.add_done_callback(self._tokens.learn_from)  # at once when already done
        return call

    # The request argument is a message or, for client streams, an iterator: same code
    # (grpc passes the arguments by position, so the stubs' names and types do not matter).
    intercept_unary_unary = intercept_unary_stream = _intercept  # pyright: ignore[reportAssignmentType]
    intercept_stream_unary = intercept_stream_stream = _intercept  # pyright: ignore[reportAssignmentType]


def channel_credentials(
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials: the CA to trust (None: the system's), and a client certificate for mTLS."""
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("a client certificate needs both certificate_chain and private_key")
    return grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)


def _channel_setup(
    *,
    secure: bool,
    root_certificates: bytes | None,
    certificate_chain: bytes | None,
    private_key: bytes | None,
    credentials: grpc.ChannelCredentials | None,
    server_name: str | None,
    options: Sequence[tuple[str, Any]],
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, Any]]]:
    """The credentials (None: plaintext) and channel options shared by both connect()s."""
    pem = (root_certificates, certificate_chain, private_key)
    if credentials is not None and any(p is not None for p in pem):
        raise ValueError("pass either credentials or PEM bytes, not both")
    if credentials is None and (secure or any(p is not None for p in pem)):
        credentials = channel_credentials(*pem)
    if server_name is not None and credentials is None:
        raise ValueError("server_name applies to TLS channels only")
    own = {key for key, _ in options}
    defaults = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(retry_service_config())),
        # Articles may hold 2 MiB of markdown plus HTML: receive what the server sends; the
        # server refuses requests over its own, smaller receive limit.
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if server_name is not None:
        defaults.append(("grpc.ssl_target_name_override", server_name))
    return credentials, [o for o in defaults if o[0] not in own] + list(options)


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
) -> grpc.Channel:
    """Opens a channel to blogstore, plaintext unless TLS is asked for.

    TLS: ``secure=True`` (system CAs), ``root_certificates`` (PEM of the CA to trust), plus
    ``certificate_chain`` and ``private_key`` (PEM) for mutual TLS; or ready ``credentials``.
    ``server_name`` checks the certificate against that name instead of the target's host.
    The token travels as ``authorization: Bearer`` metadata, over TLS or plaintext alike.
    ``options`` override the built-in channel options. ``read_your_writes``: carry the newest
    consistency token (``CONSISTENCY_KEY``) of this channel's writes on its later calls, so a
    read never misses this channel's own writes, whichever replica serves it.
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
    if credentials is None:
        channel = grpc.insecure_channel(target, options=channel_options)
    else:
        channel = grpc.secure_channel(target, credentials, options=channel_options)
    tokens = ConsistencyTokens() if read_your_writes else None
    return grpc.intercept_channel(channel, _DefaultsInterceptor(token, default_timeout, tokens))


@dataclass(frozen=True)
class ErrorDetails:
    """What a blogstore error says, decoded from its google.rpc.Status details."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: dict[str, str] = field(default_factory=dict)
    quota_violations: list[tuple[str, str]] = field(default_factory=list)


def _answer(error: object, method: str) -> Any:
    """``error.method()``, or None if there is no such method or it fails."""
    function = getattr(error, method, None)
    try:
        return function() if callable(function) else None
    except Exception:  # noqa: BLE001 - an answer is optional: none rather than a crash
        return None


def _rich_status(error: object) -> status_pb2.Status | None:
    try:
        return rpc_status.from_call(error)  # pyright: ignore[reportArgumentType]  # duck-typed: aio errors too
    except Exception:  # noqa: BLE001 - no call, or trailers not from blogstore: no details
        return None


def _unpack(detail: Any, message_type: type[_M]) -> _M | None:
    message = message_type()
    try:
        return message if detail.Is(message_type.DESCRIPTOR) and detail.Unpack(message) else None
    except DecodeError:
        return None


def error_details(error: BaseException) -> ErrorDetails:
    """Decodes blogstore's ErrorInfo, BadRequest and QuotaFailure details, sync or asyncio.

    Never raises: for an error that did not come from blogstore (a proxy's status, trailers
    that do not decode, not an RpcError at all) the fields it cannot fill stay empty, the code
    is UNKNOWN unless the error has one, and a non-gRPC error's message is its text.
    """
    code = _answer(error, "code")
    message = _answer(error, "details")
    if not isinstance(message, str):
        message = "" if isinstance(error, grpc.RpcError) else str(error)
    status = _rich_status(error)
    reason, metadata = "", {}
    fields: dict[str, str] = {}
    quotas: list[tuple[str, str]] = []
    for detail in status.details if status is not None else ():
        if (info := _unpack(detail, error_details_pb2.ErrorInfo)) is not None:
            if info.domain == ERROR_DOMAIN and not reason:
                reason, metadata = info.reason, dict(info.metadata)
        elif (bad := _unpack(detail, error_details_pb2.BadRequest)) is not None:
            for v in bad.field_violations:
                prior = fields.get(v.field)
                fields[v.field] = f"{prior}; {v.description}" if prior else v.description
        elif (quota := _unpack(detail, error_details_pb2.QuotaFailure)) is not None:
            quotas.extend((v.subject, v.description) for v in quota.violations)
    return ErrorDetails(
        code=code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN,
        message=message,
        reason=reason,
        metadata=metadata,
        field_violations=fields,
        quota_violations=quotas,
    )


from blogstore.client import aio  # noqa: E402  (after the names aio imports from here)
