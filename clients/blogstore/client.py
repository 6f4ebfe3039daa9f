"""Channel helper for blogstore clients: auth metadata, default deadline, retries, rich errors."""

from __future__ import annotations

import copy
import importlib
import json
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import blogstore.v1

__all__ = [
    "ERROR_DOMAIN",
    "IDEMPOTENT_METHODS",
    "IDEMPOTENT_PREFIXES",
    "ErrorDetails",
    "connect",
    "error_details",
    "retry_service_config",
]

ERROR_DOMAIN = "blogstore"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The ``domain`` of the google.rpc.ErrorInfo detail blogstore attaches to its errors."""

IDEMPOTENT_PREFIXES: tuple[str, ...] = ("Get", "List", "Search")
"""Unary methods whose name starts with one of these (at a CamelCase boundary) are retried."""

IDEMPOTENT_METHODS: frozenset[str] = frozenset({"CheckQuota"})
"""Further unary methods, by exact name, that are safe to retry."""

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


class _DefaultsInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the bearer token and a default timeout to every call, of every arity."""

    def __init__(self, token: str | None, default_timeout: float | None) -> None:
        self._auth = ("authorization", f"Bearer {token}") if token else None
        self._default_timeout = default_timeout

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or ())
        # A caller-supplied authorization header wins over the channel's token.
        if self._auth and not any(key.lower() == "authorization" for key, _ in metadata):
            metadata.append(self._auth)
        timeout = details.timeout if details.timeout is not None else self._default_timeout
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
        return continuation(self._details(details), request)

    # The request argument is a message or, for client streams, an iterator: same code.
    intercept_unary_unary = intercept_unary_stream = _intercept
    intercept_stream_unary = intercept_stream_stream = _intercept


def connect(
    target: str,
    token: str | None = None,
    *,
    secure: bool = False,
    root_certificates: bytes | None = None,
    default_timeout: float | None = 10.0,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """Opens a channel to blogstore; ``options`` override the built-in channel options."""
    own = {key for key, _ in options}
    defaults = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(retry_service_config())),
        # Articles may hold 2 MiB of markdown plus HTML: allow what the server accepts.
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    channel_options = [o for o in defaults if o[0] not in own] + list(options)
    if secure or root_certificates is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        channel = grpc.secure_channel(target, credentials, options=channel_options)
    else:
        channel = grpc.insecure_channel(target, options=channel_options)
    return grpc.intercept_channel(channel, _DefaultsInterceptor(token, default_timeout))


@dataclass(frozen=True)
class ErrorDetails:
    """What a blogstore error says, decoded from its google.rpc.Status details."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: dict[str, str] = field(default_factory=dict)
    quota_violations: list[tuple[str, str]] = field(default_factory=list)


def error_details(error: grpc.RpcError) -> ErrorDetails:
    """Decodes ErrorInfo, BadRequest and QuotaFailure details; never raises."""
    code_fn = getattr(error, "code", None)
    code = code_fn() if callable(code_fn) else None
    details_fn = getattr(error, "details", None)
    message = (details_fn() if callable(details_fn) else None) or ""
    try:
        status = rpc_status.from_call(error)
    except (AttributeError, TypeError, ValueError, DecodeError):
        status = None
    reason, metadata = "", {}
    fields: dict[str, str] = {}
    quotas: list[tuple[str, str]] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN and not reason:
                reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            for v in bad.field_violations:
                prior = fields.get(v.field)
                fields[v.field] = f"{prior}; {v.description}" if prior else v.description
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            quotas.extend((v.subject, v.description) for v in quota.violations)
    return ErrorDetails(
        code=code or grpc.StatusCode.UNKNOWN,
        message=message,
        reason=reason,
        metadata=metadata,
        field_violations=fields,
        quota_violations=quotas,
    )
