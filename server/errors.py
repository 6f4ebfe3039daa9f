"""The one table from domain errors to gRPC status codes, with google.rpc details."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from blogstore.client import ERROR_DOMAIN
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from storage import errors as domain

log = logging.getLogger(__name__)

# domain error -> (status code, ErrorInfo reason: an ErrorReason name without its prefix)
STATUS_TABLE: dict[type[domain.DomainError], tuple[grpc.StatusCode, str]] = {
    domain.InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    domain.NotFound: (grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    domain.AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"),
    domain.Conflict: (grpc.StatusCode.ABORTED, "CONFLICT"),
    domain.Retryable: (grpc.StatusCode.ABORTED, "CONFLICT"),
    domain.FailedPrecondition: (grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    domain.QuotaExceeded: (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED"),
    domain.ShareExceeded: (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED"),
    domain.TooManyAttempts: (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED"),
    domain.Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    domain.PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    domain.Unavailable: (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
    domain.SchemaNotReady: (grpc.StatusCode.UNAVAILABLE, "SCHEMA_NOT_READY"),
    domain.DeadlineExceeded: (grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
}

# Errors worth sending again unchanged, and how long to wait first (google.rpc.RetryInfo):
# seconds, or a function of the error for delays only the error knows.
RETRY_DELAY_SECONDS: dict[type[domain.DomainError], float | Callable[[Any], float]] = {
    domain.Unavailable: 1.0,  # a restart, failover or full pool passes within seconds
    domain.SchemaNotReady: 5.0,  # until the deploy's migration has run
    domain.Retryable: 0.1,  # serialization failures that outlasted the server's own retries
    domain.TooManyAttempts: lambda error: error.retry_after,  # the login back-off left
}


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: Exception, request_id: str) -> grpc.Status:
    """The status for any exception; unexpected ones become a generic INTERNAL."""
    code, reason = STATUS_TABLE.get(type(error), (grpc.StatusCode.INTERNAL, "INTERNAL"))
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
    elif isinstance(error, domain.QuotaExceeded):
        quota = [
            error_details_pb2.QuotaFailure.Violation(subject=s, description=d)
            for s, d in error.violations.items()
        ]
        details.append(_packed(error_details_pb2.QuotaFailure(violations=quota)))
    delay = RETRY_DELAY_SECONDS.get(type(error))
    if callable(delay):
        delay = delay(error)
    if delay is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(delay * 1e9))
        details.append(_packed(retry))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return rpc_status.to_status(status)
