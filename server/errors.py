"""The one table from domain errors to gRPC status codes, with google.rpc details."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import grpc
from blogstore.client import ERROR_DOMAIN
from blogstore.v1 import common_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from storage import errors as domain

log = logging.getLogger(__name__)
V = TypeVar("V")


def reason_name(value: int) -> str:
    """The wire form of an ErrorReason: its name without the prefix (common.proto promises it)."""
    return common_pb2.ErrorReason.Name(value).removeprefix("ERROR_REASON_")


_C, _R = grpc.StatusCode, common_pb2.ErrorReason
# domain error -> (status code, ErrorInfo reason). Looked up along the error's class
# hierarchy, so a subclass of a domain error leaves as its nearest mapped ancestor.
STATUS_TABLE: dict[type[domain.DomainError], tuple[grpc.StatusCode, str]] = {
    error: (code, reason_name(reason))
    for error, code, reason in (
        (domain.InvalidArgument, _C.INVALID_ARGUMENT, _R.ERROR_REASON_INVALID_ARGUMENT),
        (domain.NotFound, _C.NOT_FOUND, _R.ERROR_REASON_NOT_FOUND),
        (domain.AlreadyExists, _C.ALREADY_EXISTS, _R.ERROR_REASON_ALREADY_EXISTS),
        (domain.Conflict, _C.ABORTED, _R.ERROR_REASON_CONFLICT),
        (domain.Retryable, _C.ABORTED, _R.ERROR_REASON_CONFLICT),
        (domain.FailedPrecondition, _C.FAILED_PRECONDITION, _R.ERROR_REASON_FAILED_PRECONDITION),
        # ShareExceeded inherits this row
        (domain.QuotaExceeded, _C.RESOURCE_EXHAUSTED, _R.ERROR_REASON_QUOTA_EXCEEDED),
        (domain.TooManyAttempts, _C.RESOURCE_EXHAUSTED, _R.ERROR_REASON_QUOTA_EXCEEDED),
        (domain.Unauthenticated, _C.UNAUTHENTICATED, _R.ERROR_REASON_UNAUTHENTICATED),
        (domain.PermissionDenied, _C.PERMISSION_DENIED, _R.ERROR_REASON_PERMISSION_DENIED),
        (domain.Unavailable, _C.UNAVAILABLE, _R.ERROR_REASON_UNAVAILABLE),
        (domain.SchemaNotReady, _C.UNAVAILABLE, _R.ERROR_REASON_SCHEMA_NOT_READY),
        (domain.DeadlineExceeded, _C.DEADLINE_EXCEEDED, _R.ERROR_REASON_DEADLINE_EXCEEDED),
    )
}
# Anything else (a bug): a generic message and a request id to quote.
INTERNAL = (_C.INTERNAL, reason_name(_R.ERROR_REASON_INTERNAL))

# Errors worth sending again unchanged, and how long to wait first (google.rpc.RetryInfo):
# seconds, or a function of the error for delays only the error knows. Looked up like
# STATUS_TABLE, so SchemaNotReady's row wins over Unavailable's.
RETRY_DELAY_SECONDS: dict[type[domain.DomainError], float | Callable[[Any], float]] = {
    domain.Unavailable: 1.0,  # a restart, failover or full pool passes within seconds
    domain.SchemaNotReady: 5.0,  # until the deploy's migration has run
    domain.Retryable: 0.1,  # serialization failures that outlasted the server's own retries
    domain.TooManyAttempts: lambda error: error.retry_after,  # the login back-off left
}


def lookup(table: Mapping[type, V], error_class: type) -> V | None:
    """The row of the nearest class in `error_class`'s hierarchy that `table` names."""
    for cls in error_class.__mro__:
        if cls in table:
            return table[cls]
    return None


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: BaseException, request_id: str) -> grpc.Status:
    """The status for any exception; unexpected ones become a generic INTERNAL."""
    code, reason = lookup(STATUS_TABLE, type(error)) or INTERNAL
    if isinstance(error, domain.DomainError) and code is not grpc.StatusCode.INTERNAL:
        message = error.message
    else:
        message = f"internal error; quote request id {request_id}"
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain=ERROR_DOMAIN, metadata={"request_id": request_id}
    )
    details = [_packed(info)]
    if isinstance(error, domain.InvalidArgument):
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in error.violations.items()
        ]
        details.append(_packed(error_details_pb2.BadRequest(field_violations=violations)))
    elif isinstance(error, domain.AlreadyExists) and error.existing is not None:
        existing = error.existing
        resource = error_details_pb2.ResourceInfo(
            resource_type=error.resource, resource_name=existing.name,
            owner=existing.owner, description=existing.description,
        )  # fmt: skip
        details.append(_packed(resource))
    elif isinstance(error, domain.QuotaExceeded):
        quota = [
            error_details_pb2.QuotaFailure.Violation(subject=s, description=d)
            for s, d in error.violations.items()
        ]
        details.append(_packed(error_details_pb2.QuotaFailure(violations=quota)))
    delay = lookup(RETRY_DELAY_SECONDS, type(error))
    if callable(delay):
        delay = delay(error)
    if delay is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(delay * 1e9))
        details.append(_packed(retry))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return rpc_status.to_status(status)
