"""The error table follows the contract: every domain error and every ErrorReason is mapped,
and a subclass of a domain error leaves as its ancestor, never as INTERNAL."""

from __future__ import annotations

import grpc
import pytest
from blogstore.v1 import common_pb2
from google.rpc import error_details_pb2, status_pb2

from server.errors import INTERNAL, STATUS_TABLE, lookup, to_status
from storage import errors


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        if sub.__module__ == errors.__name__:  # not the test's own subclasses below
            found |= {sub} | _all_subclasses(sub)
    return found


DOMAIN_ERRORS = sorted(_all_subclasses(errors.DomainError), key=lambda c: c.__name__)


def _reason(status: grpc.Status) -> str:
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    for detail in status_pb2.Status.FromString(details).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo detail")


@pytest.mark.parametrize("error_class", DOMAIN_ERRORS, ids=lambda c: c.__name__)
def test_every_domain_error_is_mapped(error_class):
    row = lookup(STATUS_TABLE, error_class)
    assert row is not None, error_class
    assert row[0] is not grpc.StatusCode.INTERNAL


def test_every_error_reason_is_produced():
    produced = {reason for _code, reason in STATUS_TABLE.values()} | {INTERNAL[1]}
    names = {
        name.removeprefix("ERROR_REASON_")
        for name in set(common_pb2.ErrorReason.keys())
        if name != "ERROR_REASON_UNSPECIFIED"
    }
    assert produced == names


class _NewNotFound(errors.NotFound):
    """A subclass a later change might add without touching the table."""


class _NewUnavailable(errors.Unavailable):
    pass


def test_a_subclass_leaves_as_its_ancestor():
    status = to_status(_NewNotFound("article", "x"), "request-id")
    assert status.code is grpc.StatusCode.NOT_FOUND
    assert _reason(status) == "NOT_FOUND"
    assert status.details == "article x not found"
    status = to_status(_NewUnavailable("database unavailable"), "request-id")
    assert status.code is grpc.StatusCode.UNAVAILABLE
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert any(
        d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)
        for d in status_pb2.Status.FromString(details).details
    )


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (errors.InvalidArgument({"title": "required"}), "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        (errors.ShareExceeded("busy", {"X": "y"}), "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
        (errors.Retryable("again"), "ABORTED", "CONFLICT"),
        (errors.SchemaNotReady(), "UNAVAILABLE", "SCHEMA_NOT_READY"),
        (errors.TooManyAttempts(3.0), "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
        (errors.DomainError("unmapped base"), "INTERNAL", "INTERNAL"),
        (ValueError("a bug"), "INTERNAL", "INTERNAL"),
    ],
)
def test_wire_reason_is_the_enum_name_without_prefix(error, code, reason):
    status = to_status(error, "request-id")
    assert status.code.name == code
    assert _reason(status) == reason
    assert f"ERROR_REASON_{reason}" in set(common_pb2.ErrorReason.keys())
