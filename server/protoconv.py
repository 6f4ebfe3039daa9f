"""Small conversions between protobuf well-known types and Python values."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from storage.errors import InvalidArgument

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def timestamp(value: dt.datetime | None) -> Timestamp | None:
    """An aware datetime as a Timestamp (plain arithmetic: FromDatetime is slower)."""
    if value is None:
        return None
    delta = value - _EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


def datetime_or_none(message: object, field: str) -> dt.datetime | None:
    """The Timestamp field `field` of `message` as an aware datetime, or None when unset.

    Requests reach servicers with every Timestamp in range (validation.check_request)."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    return getattr(message, field).ToDatetime(tzinfo=dt.UTC)


def etag(version: int) -> str:
    return f'"{version}"'


def etag_version(field: str, value: str) -> int | None:
    """The version inside an etag; empty means "no precondition"."""
    if not value:
        return None
    try:
        return int(value.strip().strip('"'))
    except ValueError:
        raise InvalidArgument({field: "is not an etag this server issued"}) from None
